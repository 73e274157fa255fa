"""Elementwise arithmetic, unary functions, selection and matmul.

Each backward returns gradients of the output's shape; the engine sums them back to each
input's shape (undoing broadcasting), so no op handles broadcasting itself. Operands are
promoted to one dtype first (``ops/_promote.py``, PyTorch's rules).
"""
import math

import numpy as np

from .. import _blas, backend
from ..autograd import Function, Tensor, grad_destination
from ..backend import xp
from ._promote import floating, operands


def binary_op(cls, name, floats=False, doc=None, **fixed):
    """The public op ``name(a, b)`` for a two-input Function: both operands promoted to one
    dtype (``operands``; two Tensors of one dtype, floating where ``floats``, skip it), then
    ``cls.apply(a, b, **fixed)``; a broadcasting failure names both shapes."""
    def op(a, b):
        if not (isinstance(a, Tensor) and isinstance(b, Tensor)
                and a.data.dtype == b.data.dtype and (not floats or a.data.dtype.kind in "fc")):
            a, b = operands(a, b, floats=floats)
        try:
            return cls.apply(a, b, **fixed)
        except ValueError as err:
            if "broadcast" not in str(err):
                raise
            raise ValueError(f"{name}: cannot broadcast shapes {a.shape} and {b.shape}") \
                from None
    op.__name__, op.__doc__ = name, doc or cls.__doc__
    return op


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


add = binary_op(Add, "add", doc="a + b")
sub = binary_op(Sub, "sub", doc="a - b")
mul = binary_op(Mul, "mul", doc="a * b")
div = binary_op(Div, "div", floats=True, doc="a / b, always floating (int / int gives the "
                "default float dtype, as in PyTorch)")
pow = binary_op(Pow, "pow", doc="a ** b")


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


class Erf(Function):
    """erf(a) = 2/sqrt(pi) int_0^a exp(-t^2) dt; d/da = 2/sqrt(pi) exp(-a^2).

    Values from scipy.special.erf (cupyx on a GPU) when SciPy is installed, else from
    math.erf entry by entry (slower; the two agree to an ulp).
    """

    def forward(self, a):
        return erf_array(a).astype(a.dtype, copy=False)

    def backward(self, g):
        a = self.inputs[0]
        return g * (2 / math.sqrt(math.pi)) * exp(-(a * a))


def erf_array(a):
    """erf of a raw array (float64 from the NumPy fallback; callers cast)."""
    if backend.device_of(a) == "cuda":
        from cupyx.scipy.special import erf
        return erf(a)
    try:
        from scipy.special import erf
    except ImportError:
        return np.asarray(np.frompyfunc(math.erf, 1, 1)(a), dtype=np.float64)   # 0-d: a float
    return erf(a)


def unary_op(cls, make_float=True):
    """The public op for a one-input Function; ``make_float``: ints become the default float
    dtype first."""
    def op(a):
        return cls.apply(floating(a) if make_float else a)
    op.__name__, op.__doc__ = cls.__name__.lower(), cls.__doc__
    return op


exp, log, sqrt, sin, cos, tanh, erf = map(unary_op, (Exp, Log, Sqrt, Sin, Cos, Tanh, Erf))
abs = unary_op(Abs, make_float=False)


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
    a, b = operands(a, b)
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


maximum = binary_op(Maximum, "maximum", take_max=True, doc="Elementwise max(a, b).")
minimum = binary_op(Maximum, "minimum", take_max=False, doc="Elementwise min(a, b).")


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
    """Batched a @ b (ndim >= 2); leading dims broadcast like NumPy. NumPy arrays go through
    ``_blas.matmul``, which lays the product out for OpenBLAS (same values)."""

    def forward(self, a, b):
        return _blas.matmul(a, b)

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


_matmul = binary_op(MatMul, "matmul")


class Linear(Function):
    """y = x W^T + b (W of shape (out, in)): one GEMM with the bias added in place. The
    backward is in Tensor ops (gx = g W, gW = g^T x, gb = g summed over rows), so it
    differentiates again."""

    def forward(self, x, w, *bias):
        y = _blas.matmul(x, w.T)
        if bias:
            y += bias[0]
        return y

    def backward(self, g):
        x, w, *bias = self.inputs
        rows = g.reshape(-1, g.shape[-1])
        gx = g @ w if x.requires_grad else None
        gw = gb = None
        if w.requires_grad:
            x_rows = x.reshape(-1, x.shape[-1])
            gw = grad_destination(w, self)
            if gw is None:
                gw = rows.T @ x_rows
            else:       # the one GEMM writes straight into W's slot of the flat gradient
                xp(g.data).matmul(rows.data.T, x_rows.data, out=gw.data)
        if bias and bias[0].requires_grad:
            gb = grad_destination(bias[0], self)
            if gb is None:
                gb = rows.sum(0)
            else:
                rows.data.sum(axis=0, out=gb.data)
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
    a, b = operands(a, b)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul: operands must have ndim >= 1, got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
        raise ValueError(f"matmul: inner dimensions differ: a has shape {a.shape}, b has shape "
                         f"{b.shape} (expected a.shape[-1] == b.shape[-2])")
    if a.ndim > 1 and b.ndim > 1:
        return _matmul(a, b)
    a2 = a.reshape(1, -1) if a.ndim == 1 else a
    b2 = b.reshape(-1, 1) if b.ndim == 1 else b
    out = _matmul(a2, b2)
    if a.ndim == 1:
        out = out.squeeze(-2)
    if b.ndim == 1:
        out = out.squeeze(-1)
    return out
