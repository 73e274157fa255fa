"""Elementwise arithmetic, unary functions, matmul and selection.

Each backward returns gradients of the output's shape; the engine sums them back to each
input's shape (undoing broadcasting), so no op handles broadcasting itself.
"""
from ..autograd import Function, Tensor, as_tensor
from ..backend import xp


def _pair(a, b):
    """Make both operands Tensors; a Python scalar takes the other operand's dtype."""
    if isinstance(a, Tensor):
        return a, as_tensor(b, like=a)
    return as_tensor(a, like=b), b


def _binary(cls, name, a, b):
    a, b = _pair(a, b)
    try:
        return cls.apply(a, b)
    except ValueError as err:
        if "broadcast" not in str(err):
            raise
        raise ValueError(f"{name}: cannot broadcast shapes {a.shape} and {b.shape}") from None


class Add(Function):
    def forward(self, a, b):
        return a + b

    def backward(self, g):
        return g, g


class Sub(Function):
    def forward(self, a, b):
        return a - b

    def backward(self, g):
        return g, -g


class Mul(Function):
    def forward(self, a, b):
        return a * b

    def backward(self, g):
        a, b = self.inputs
        return g * b, g * a


class Div(Function):
    def forward(self, a, b):
        return a / b

    def backward(self, g):
        a, b = self.inputs
        ga = g / b
        return ga, -ga * a / b


class Pow(Function):
    """a ** b; d/da = b a^(b-1), d/db = a^b log a."""

    def forward(self, a, b):
        return a ** b

    def backward(self, g):
        a, b = self.inputs
        ga = g * b * a ** (b - 1) if a.requires_grad else None
        gb = g * self.output() * log(a) if b.requires_grad else None
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return -g


def add(a, b):
    return _binary(Add, "add", a, b)


def sub(a, b):
    return _binary(Sub, "sub", a, b)


def mul(a, b):
    return _binary(Mul, "mul", a, b)


def div(a, b):
    return _binary(Div, "div", a, b)


def pow(a, b):
    return _binary(Pow, "pow", a, b)


def neg(a):
    return Neg.apply(a)



# --- unary functions ----------------------------------------------------------------------
class Exp(Function):
    def forward(self, a):
        return xp(a).exp(a)

    def backward(self, g):
        return g * self.output()


class Log(Function):
    def forward(self, a):
        return xp(a).log(a)

    def backward(self, g):
        return g / self.inputs[0]


class Sqrt(Function):
    def forward(self, a):
        return xp(a).sqrt(a)

    def backward(self, g):
        return g / (2 * self.output())


class Abs(Function):
    def forward(self, a):
        return xp(a).abs(a)

    def backward(self, g):
        a = self.inputs[0].data
        return g * Tensor(xp(a).sign(a))


class Sin(Function):
    def forward(self, a):
        return xp(a).sin(a)

    def backward(self, g):
        return g * cos(self.inputs[0])


class Cos(Function):
    def forward(self, a):
        return xp(a).cos(a)

    def backward(self, g):
        return -g * sin(self.inputs[0])


class Tanh(Function):
    def forward(self, a):
        return xp(a).tanh(a)

    def backward(self, g):
        y = self.output()
        return g * (1 - y * y)


class Sigmoid(Function):
    """sigmoid(a) = 1 / (1 + exp(-a)), computed without overflow."""

    def forward(self, a):
        m = xp(a)
        e = m.exp(-m.abs(a))
        return m.where(a >= 0, 1 / (1 + e), e / (1 + e)).astype(a.dtype, copy=False)

    def backward(self, g):
        y = self.output()
        return g * y * (1 - y)


class Softplus(Function):
    """softplus(a) = log(1 + exp(a)) = max(a, 0) + log1p(exp(-|a|)); derivative sigmoid(a)."""

    def forward(self, a):
        m = xp(a)
        return m.maximum(a, 0) + m.log1p(m.exp(-m.abs(a)))

    def backward(self, g):
        return g * sigmoid(self.inputs[0])


class Relu(Function):
    def forward(self, a):
        return xp(a).maximum(a, 0)

    def backward(self, g):
        return g * Tensor(self.inputs[0].data > 0)


class LeakyRelu(Function):
    def forward(self, a, slope):
        self.slope = slope
        return xp(a).where(a > 0, a, a * slope)

    def backward(self, g):
        a = self.inputs[0].data
        return g * Tensor(xp(a).where(a > 0, 1, self.slope).astype(a.dtype))


def _unary(cls):
    def op(a):
        return cls.apply(a)
    op.__name__, op.__doc__ = cls.__name__.lower(), cls.__doc__
    return op


exp, log, sqrt, abs, sin, cos, tanh, sigmoid, softplus, relu = map(
    _unary, (Exp, Log, Sqrt, Abs, Sin, Cos, Tanh, Sigmoid, Softplus, Relu))


def leaky_relu(a, negative_slope=0.01):
    return LeakyRelu.apply(a, slope=negative_slope)


def gelu(a):
    """GELU, tanh form (Hendrycks & Gimpel 2016): 0.5 a (1 + tanh(sqrt(2/pi)(a + 0.044715 a^3)))."""
    return 0.5 * a * (1 + tanh(0.7978845608028654 * (a + 0.044715 * a * a * a)))


def silu(a):
    """SiLU / swish: a * sigmoid(a)."""
    return a * sigmoid(a)


# --- selection ----------------------------------------------------------------------------
class Where(Function):
    def forward(self, a, b, cond):
        self.cond = cond
        return xp(a).where(cond, a, b)

    def backward(self, g):
        zero = Tensor(xp(g.data).zeros((), dtype=g.dtype))
        c = self.cond
        return where(c, g, zero), where(c, zero, g)


def where(cond, a, b):
    """cond ? a : b elementwise; ``cond`` is a boolean array or Tensor (not differentiated)."""
    a, b = _pair(a, b)
    cond = cond.data if isinstance(cond, Tensor) else cond
    return Where.apply(a, b, cond=xp(a.data).asarray(cond, dtype=bool))


def maximum(a, b):
    a, b = _pair(a, b)
    return where(a.data >= b.data, a, b)


def minimum(a, b):
    a, b = _pair(a, b)
    return where(a.data <= b.data, a, b)


class Clip(Function):
    def forward(self, a, lo, hi):
        self.lo, self.hi = lo, hi
        return xp(a).clip(a, lo, hi)

    def backward(self, g):
        a = self.inputs[0].data
        inside = xp(a).ones_like(a, dtype=bool)
        if self.lo is not None:
            inside &= a >= self.lo
        if self.hi is not None:
            inside &= a <= self.hi
        return g * Tensor(inside)


def clip(a, min=None, max=None):
    """Clamp to [min, max]; the gradient is 1 inside (ends included) and 0 outside."""
    if min is None and max is None:
        raise ValueError("clip: give min, max or both")
    return Clip.apply(a, lo=min, hi=max)


# --- matmul -------------------------------------------------------------------------------
class MatMul(Function):
    """Batched a @ b (ndim >= 2); leading dims broadcast like NumPy."""

    def forward(self, a, b):
        return a @ b

    def backward(self, g):
        a, b = self.inputs
        ga = gb = None
        if a.requires_grad:
            ga = (b @ g.swapaxes(-1, -2)).swapaxes(-1, -2) if _transposed(a) \
                else g @ b.swapaxes(-1, -2)
        if b.requires_grad:
            gb = (g.swapaxes(-1, -2) @ a).swapaxes(-1, -2) if _transposed(b) \
                else a.swapaxes(-1, -2) @ g
        return ga, gb


def _transposed(t):
    """A 2-D operand stored transposed (e.g. W.T in x @ W.T): its gradient is computed in the
    same layout, so the gradient that reaches W itself is C-contiguous (cheaper optimiser
    steps). Same product, same cost."""
    d = t.data
    return d.ndim == 2 and d.flags.f_contiguous and not d.flags.c_contiguous


def matmul(a, b):
    """a @ b with NumPy's rules: 1-D operands are promoted to matrices and squeezed back."""
    a, b = _pair(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have ndim >= 1, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: inner dimensions differ: a has shape {a.shape}, b has shape "
                         f"{b.shape} (expected a.shape[-1] == b.shape[-2])")
    if a.ndim > 1 and b.ndim > 1:
        return _binary(MatMul, "matmul", a, b)
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b
    out = _binary(MatMul, "matmul", a2, b2)
    if a.ndim == 1:
        out = out.squeeze(-2)
    if b.ndim == 1:
        out = out.squeeze(-1)
    return out
