"""Elementwise arithmetic, unary functions, matmul and selection.

Each backward returns gradients of the output's shape; the engine sums them back to each
input's shape (undoing broadcasting), so no op handles broadcasting itself.

Type promotion follows PyTorch: the result takes the highest category among the tensors
(bool < integer < floating < complex) and, within it, NumPy's promotion of those tensors'
dtypes (float32 with int64 stays float32; float32 with float64 gives float64). A Python
number counts only when its category is higher: then an int gives int64 and a float the
default float dtype (int tensor * 0.5 -> float32). Ops that make floats from ints (division,
exp, log, erf, ...) give the default float dtype.
"""
import math

import numpy as np

from .. import backend
from ..autograd import Function, Tensor, cast, scalar_dtype, tensor
from ..backend import xp

_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}
_NUMBER = (bool, int, float, complex, np.generic)


def result_dtype(*operands):
    """The dtype of an elementwise op on ``operands`` (Tensors and Python/NumPy numbers)."""
    dtypes = [x.dtype for x in operands if isinstance(x, Tensor)]
    numbers = [scalar_dtype(x) for x in operands if not isinstance(x, Tensor)]
    top = max((_CATEGORY[d.kind] for d in dtypes), default=-1)
    higher = [d for d in numbers if _CATEGORY[d.kind] > top]
    if higher:  # numbers' dtypes are one per category: take the highest
        return max(higher, key=lambda d: _CATEGORY[d.kind])
    return np.result_type(*[d for d in dtypes if _CATEGORY[d.kind] == top])


def floating(a):
    """``a`` itself if it is floating (or complex), else cast to the default float dtype."""
    return a if a.dtype.kind in "fc" else cast(a, backend.get_default_dtype())


def _operands(a, b, floats=False):
    """Two Tensors of one dtype kind (PyTorch's promotion, above); ``floats``: at least
    floating. Arrays and lists become Tensors first; numbers take the result dtype."""
    if isinstance(a, Tensor):  # fast paths: same dtypes, or a float tensor and a number
        kind = a.data.dtype.kind
        if isinstance(b, Tensor):
            if b.data.dtype == a.data.dtype and (kind in "fc" or not floats):
                return a, b
        elif kind == "f" and isinstance(b, (int, float)):
            return a, Tensor(xp(a.data).asarray(b, dtype=a.data.dtype))
    elif isinstance(b, Tensor) and b.data.dtype.kind == "f" and isinstance(a, (int, float)):
        return Tensor(xp(b.data).asarray(a, dtype=b.data.dtype)), b
    return _promote([a, b], floats)


def _promote(xs, floats):
    xs = [x if isinstance(x, (Tensor,) + _NUMBER) else tensor(x) for x in xs]
    dtype = result_dtype(*xs)
    if floats and dtype.kind not in "fc":
        dtype = np.dtype(backend.get_default_dtype())
    like = next((x for x in xs if isinstance(x, Tensor)), None)
    mod = xp(like.data) if like is not None else np
    out = []
    for x in xs:
        if not isinstance(x, Tensor):
            x = Tensor(mod.asarray(x, dtype=dtype))
        elif x.dtype.kind != dtype.kind:  # float -> float is left to NumPy (it widens)
            x = cast(x, dtype)
        out.append(x)
    return out


def _binary(cls, name, a, b, floats=False, **kwargs):
    a, b = _operands(a, b, floats=floats)
    try:
        return cls.apply(a, b, **kwargs)
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
        return g, -g if self.inputs[1].requires_grad else None


class Mul(Function):
    """a * b; a gradient is computed only for an input that requires one (a constant
    target, mask or scale costs no pass)."""

    def forward(self, a, b):
        return a * b

    def backward(self, g):
        a, b = self.inputs
        return g * b if a.requires_grad else None, g * a if b.requires_grad else None


class Div(Function):
    def forward(self, a, b):
        return a / b

    def backward(self, g):
        a, b = self.inputs
        ga = g / b
        return ga, -ga * a / b if b.requires_grad else None


class Pow(Function):
    """a ** b; d/da = b a^(b-1), d/db = a^b log a.

    As in PyTorch, d/da is 0 where a = b = 0 (not 0 * 0^-1 = 0 * inf) and d/db is 0 where
    a = 0 and b >= 0 (not 0 * log 0). Those entries read a = 1 instead of a, so no branch
    that ``where`` discards is infinite, and higher derivatives stay finite.
    """

    def forward(self, a, b):
        return a ** b

    def backward(self, g):
        a, b = self.inputs
        ga = gb = None
        if a.requires_grad:
            both_zero = (a.data == 0) & (b.data == 0)
            ga = g * b * where(both_zero, 1.0, a) ** (b - 1)
        if b.requires_grad:
            flat = (a.data == 0) & (b.data >= 0)
            gb = g * self.output() * log(where(flat, 1.0, a))
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
    """a / b, always floating (int / int gives the default float dtype, as in PyTorch)."""
    return _binary(Div, "div", a, b, floats=True)


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
    """sigmoid(a) = 1 / (1 + exp(-a)); exp(-a) = inf for a << 0 gives 0, the right limit."""

    def forward(self, a):
        return _sigmoid(a)

    def backward(self, g):
        y = self.output()
        return g * y * (1 - y)


def _sigmoid(a):
    """1 / (1 + exp(-a)) on a raw array, in four in-place passes over one buffer."""
    m = xp(a)
    s = m.negative(a, out=m.empty_like(a))   # an array even for 0-d a (ufuncs give scalars)
    with np.errstate(over="ignore"):
        m.exp(s, out=s)
    s += 1
    return m.reciprocal(s, out=s)


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
        return Masked.apply(g, mask=self.inputs[0].data > 0)


class Masked(Function):
    """g * mask for a constant boolean mask, in one pass; linear in g, so its backward is
    itself (relu's gradient, and every derivative of it)."""

    def forward(self, g, mask):
        self.mask = mask
        return g * mask

    def backward(self, gg):
        return Masked.apply(gg, mask=self.mask)


class LeakyRelu(Function):
    def forward(self, a, slope):
        self.slope = slope
        return xp(a).where(a > 0, a, a * slope)

    def backward(self, g):
        a = self.inputs[0].data
        return g * Tensor(xp(a).where(a > 0, 1, self.slope).astype(a.dtype))


class Erf(Function):
    """erf(a) = 2/sqrt(pi) int_0^a exp(-t^2) dt; d/da = 2/sqrt(pi) exp(-a^2).

    Values from scipy.special.erf (cupyx on a GPU) when SciPy is installed, else from
    math.erf entry by entry (slower; the two agree to an ulp).
    """

    def forward(self, a):
        return _erf(a).astype(a.dtype, copy=False)

    def backward(self, g):
        a = self.inputs[0]
        return g * (2 / math.sqrt(math.pi)) * exp(-(a * a))


def _erf(a):
    if backend.device_of(a) == "cuda":
        from cupyx.scipy.special import erf
        return erf(a)
    try:
        from scipy.special import erf
    except ImportError:
        return np.frompyfunc(math.erf, 1, 1)(a).astype(np.float64)
    return erf(a)


def _unary(cls, make_float=True):
    def op(a):
        return cls.apply(floating(a) if make_float else a)
    op.__name__, op.__doc__ = cls.__name__.lower(), cls.__doc__
    return op


exp, log, sqrt, sin, cos, tanh, sigmoid, softplus, erf = map(
    _unary, (Exp, Log, Sqrt, Sin, Cos, Tanh, Sigmoid, Softplus, Erf))
abs, relu = _unary(Abs, make_float=False), _unary(Relu, make_float=False)


def leaky_relu(a, negative_slope=0.01):
    return LeakyRelu.apply(a, slope=negative_slope)


class ActivationGrad(Function):
    """(a, g) -> g f'(a) for a pointwise activation ``kind`` (Silu, Gelu, GeluTanh): one
    Function, f' from the forward's ``saved`` array on raw arrays. Its backward,
    (gg g f''(a), gg f'(a)), uses f'' in Tensor ops, so every order of derivative is exact."""

    def forward(self, a, g, kind, saved):
        self.kind, self.saved = kind, saved
        out = kind.derivative(a, saved)
        out *= g
        return out

    def backward(self, gg):
        a, g = self.inputs
        return gg * g * self.kind.second_derivative(a), \
            ActivationGrad.apply(a, gg, kind=self.kind, saved=self.saved)


class _Activation(Function):
    """A pointwise f whose forward saves what f' needs (``self.saved``); backward is one
    ``ActivationGrad``."""

    def backward(self, g):
        return ActivationGrad.apply(self.inputs[0], g, kind=type(self), saved=self.saved)


class Silu(_Activation):
    """silu(a) = a s, s = sigmoid(a) (Elfwing et al. 2018); silu' = s (1 + a (1 - s)),
    silu'' = s (1 - s) (2 + a (1 - 2 s))."""

    def forward(self, a):
        self.saved = _sigmoid(a)
        return a * self.saved

    @staticmethod
    def derivative(a, s):
        out = xp(a).subtract(1, s, out=xp(a).empty_like(a))
        out *= a
        out += 1
        out *= s
        return out

    @staticmethod
    def second_derivative(a):
        s = sigmoid(a)
        return s * (1 - s) * (2 + a * (1 - 2 * s))


_INV_SQRT2, _INV_SQRT_2PI = 1 / math.sqrt(2), 1 / math.sqrt(2 * math.pi)
_TANH_C, _TANH_K = math.sqrt(2 / math.pi), 0.044715


class Gelu(_Activation):
    """gelu(a) = a Phi(a) = 0.5 a (1 + erf(a / sqrt 2)) (Hendrycks & Gimpel 2016), exact;
    gelu' = Phi(a) + a phi(a), gelu'' = phi(a) (2 - a^2), phi the standard normal density."""

    def forward(self, a):
        cdf = xp(a).asarray(_erf(a * _INV_SQRT2), dtype=a.dtype)
        cdf += 1
        cdf *= 0.5
        self.saved = cdf
        return a * cdf

    @staticmethod
    def derivative(a, cdf):
        out = xp(a).multiply(a, a, out=xp(a).empty_like(a))
        out *= -0.5
        xp(a).exp(out, out=out)
        out *= _INV_SQRT_2PI
        out *= a
        out += cdf
        return out

    @staticmethod
    def second_derivative(a):
        return exp(-0.5 * a * a) * _INV_SQRT_2PI * (2 - a * a)


class GeluTanh(_Activation):
    """gelu(a) ~ 0.5 a (1 + t), t = tanh(u), u = c (a + k a^3), c = sqrt(2/pi), k = 0.044715
    (GPT-2's form); gelu' = 0.5 (1 + t) + 0.5 a (1 - t^2) u',
    gelu'' = (1 - t^2) (u' - a t u'^2 + 0.5 a u''), u' = c (1 + 3 k a^2), u'' = 6 c k a."""

    def forward(self, a):
        t = xp(a).multiply(a, a, out=xp(a).empty_like(a))
        t *= _TANH_K
        t += 1
        t *= a
        t *= _TANH_C
        self.saved = xp(a).tanh(t, out=t)
        out = t + 1
        out *= a
        out *= 0.5
        return out

    @staticmethod
    def derivative(a, t):
        out = xp(a).multiply(a, a, out=xp(a).empty_like(a))
        out *= 3 * _TANH_K
        out += 1
        out *= _TANH_C
        out *= a
        sech2 = xp(a).multiply(t, t, out=xp(a).empty_like(t))
        xp(a).subtract(1, sech2, out=sech2)
        out *= sech2
        out += 1
        out += t
        out *= 0.5
        return out

    @staticmethod
    def second_derivative(a):
        t = tanh(_TANH_C * (a + _TANH_K * a * a * a))
        du = _TANH_C * (1 + 3 * _TANH_K * a * a)
        return (1 - t * t) * (du - a * t * du * du + 3 * _TANH_C * _TANH_K * a * a)


def gelu(a, approximate="none"):
    """GELU (Hendrycks & Gimpel 2016), as torch.nn.functional.gelu.

    approximate='none' (the default): a Phi(a) = 0.5 a (1 + erf(a / sqrt 2)), exact.
    approximate='tanh': 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3))), GPT-2's form.
    """
    if approximate == "none":
        return Gelu.apply(floating(a))
    if approximate == "tanh":
        return GeluTanh.apply(floating(a))
    raise ValueError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")


def silu(a):
    """SiLU / swish: a * sigmoid(a), one Function (see Silu)."""
    return Silu.apply(floating(a))


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
    """cond ? a : b elementwise; ``cond`` is a boolean array or Tensor (not differentiated).
    ``a`` and ``b`` may be numbers; the three broadcast together."""
    a, b = _operands(a, b)
    cond = cond.data if isinstance(cond, Tensor) else cond
    cond = xp(a.data).asarray(cond, dtype=bool)
    try:
        xp(a.data).broadcast_shapes(cond.shape, a.shape, b.shape)
    except ValueError:
        raise ValueError(f"where: cannot broadcast cond {cond.shape}, a {a.shape} and b "
                         f"{b.shape} together") from None
    return Where.apply(a, b, cond=cond)


class Maximum(Function):
    """Elementwise max (or min) of a and b; tied entries send half the gradient to each, as
    in PyTorch and as the max/min reductions share ties."""

    def forward(self, a, b, take_max):
        m = xp(a)
        out = m.maximum(a, b) if take_max else m.minimum(a, b)
        wins = (a > b) if take_max else (a < b)
        self.share = (wins + 0.5 * (a == b)).astype(out.dtype)
        return out

    def backward(self, g):
        share = Tensor(self.share)
        return g * share, g * (1 - share)


def maximum(a, b):
    return _binary(Maximum, "maximum", a, b, take_max=True)


def minimum(a, b):
    return _binary(Maximum, "minimum", a, b, take_max=False)


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


class Linear(Function):
    """y = x W^T + b (W of shape (out, in)): one GEMM with the bias added in place. The
    backward is in Tensor ops (gx = g W, gW = g^T x, gb = g summed over rows), so it
    differentiates again."""

    def forward(self, x, w, *bias):
        y = x @ w.T
        if bias:
            y += bias[0]
        return y

    def backward(self, g):
        x, w, *bias = self.inputs
        rows = g.reshape(-1, g.shape[-1])
        gx = g @ w if x.requires_grad else None
        gw = rows.T @ x.reshape(-1, x.shape[-1]) if w.requires_grad else None
        gb = rows.sum(0) if bias and bias[0].requires_grad else None
        return gx, gw, gb


def linear(x, weight, bias=None):
    """x W^T + b over the last axis of x, as torch.nn.functional.linear; W (out, in), b (out,)."""
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1] \
            or (bias is not None and tuple(bias.shape) != (weight.shape[0],)):
        raise ValueError(f"linear: expected x (..., in), weight (out, in) and bias (out,), got "
                         f"shapes {x.shape}, {weight.shape} and "
                         f"{None if bias is None else bias.shape}")
    params = (weight,) if bias is None else (weight, bias)
    if any(p.dtype != x.dtype for p in params) or x.dtype.kind != "f":
        out = x @ weight.T          # mixed dtypes: the ops' own type promotion
        return out if bias is None else out + bias
    return Linear.apply(x, *params)


def matmul(a, b):
    """a @ b with NumPy's rules: 1-D operands are promoted to matrices and squeezed back."""
    a, b = _operands(a, b)
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
