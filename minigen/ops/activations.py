"""Activations: relu, leaky_relu, sigmoid, softplus, silu, gelu (exact and tanh forms), and
the bias add fused with relu, silu or gelu (``bias_act``, ``linear_act``).

Silu, Gelu and GeluTanh are fused for speed: one forward pass saves what f' needs, and one
``ActivationGrad`` Function computes g f'(a) from it; its own backward uses the hand-derived
f'' in Tensor ops, so every order of derivative stays exact. Each class docstring states f,
f' and f''; the composite reference is the formula written in Tensor ops (``a * sigmoid(a)``
for silu, ``0.5 * a * (1 + erf(a / sqrt 2))`` for gelu), which the tests differentiate twice
against the fused op.

``BiasAct`` runs y = f(x + b) as one kernel call (``minigen.kernels.elementwise``: a Numba
kernel with Numba installed and enough work, else the NumPy reference) and its backward as
one more (``BiasActBackward``: gx = g f'(x + b) and gb = sum gx in one pass); the backward of
``BiasActBackward`` is in Tensor ops (f'' from the classes above, f' by ``BiasActBackward``
itself), so it differentiates to every order.
"""
import math

import numpy as np

from .. import _checks as C
from ..autograd import Function, Tensor, as_tensor
from ..backend import xp
from ..kernels import elementwise as kelementwise
from ._promote import floating
from .math import Linear, erf_array, exp, linear, tanh, unary_op

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


sigmoid, softplus = unary_op(Sigmoid), unary_op(Softplus)


def relu(a):
    """max(a, 0).  A float32/float64 tensor runs as ``BiasAct`` of kind 'relu': a kernel pass
    each way (Numba from ``kernels.elementwise.THRESHOLDS`` on), the backward g (a > 0) in one
    pass where ``Relu``'s makes the mask, then multiplies; other dtypes (ints stay ints) run
    as ``Relu``."""
    a = as_tensor(a)
    if a.dtype in (np.float32, np.float64) and a.ndim:
        return BiasAct.apply(a, kind="relu")
    return Relu.apply(a)


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
        cdf = xp(a).asarray(erf_array(a * _INV_SQRT2), dtype=a.dtype)
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
    approximate = C.choice(approximate, "approximate", "gelu", ("none", "tanh"))
    return (Gelu if approximate == "none" else GeluTanh).apply(floating(a))


def silu(a):
    """SiLU / swish: a * sigmoid(a), one Function (see Silu)."""
    return Silu.apply(floating(a))


# --- bias + activation in one kernel ------------------------------------------------------
KINDS = kelementwise.KINDS        # 'relu', 'silu', 'gelu' (exact), 'gelu_tanh'


def second_derivative(kind, z):
    """f''(z) in Tensor ops, or None for relu (f'' = 0 wherever it exists)."""
    if kind == "relu":
        return None
    return {"silu": Silu, "gelu": Gelu, "gelu_tanh": GeluTanh}[kind].second_derivative(z)


class BiasAct(Function):
    """y = f(x + b) for x (..., C), an optional bias b (C,) and f of ``kind`` (see KINDS), in
    one kernel pass; backward is one ``BiasActBackward``."""

    def forward(self, x, *bias, kind):
        self.kind = kind
        return kelementwise.bias_act(x, bias[0] if bias else None, kind)

    def backward(self, g):
        x, *bias = self.inputs
        return BiasActBackward.apply(x, g, *bias, kind=self.kind)


class BiasActBackward(Function):
    """(x, g[, b]) -> (g f'(z)[, sum over the leading axes of g f'(z)]), z = x + b, in one
    kernel pass.  For cotangents a (of gx) and c (of gb), u = a + c broadcast over the rows:

        d/dg = u f'(z),   d/dx = u g f''(z),   d/db = sum over the leading axes of d/dx,

    d/dg by this Function again, f'' in Tensor ops, so every order of derivative is exact."""

    def forward(self, x, g, *bias, kind):
        self.kind = kind
        gx, gb = kelementwise.bias_act_backward(x, g, bias[0] if bias else None, kind)
        return (gx, gb) if bias else gx

    def backward(self, ggx, *ggb):
        x, g, *bias = self.inputs
        u = ggx
        if ggb and ggb[0] is not None:
            u = ggb[0].expand(x.shape) if u is None else u + ggb[0]
        if u is None:
            return (None,) * len(self.inputs)
        d_g = BiasActBackward.apply(x, u, *bias, kind=self.kind)
        d_g = d_g[0] if bias else d_g
        f2 = second_derivative(self.kind, x + bias[0] if bias else x)
        d_x = None if f2 is None else u * g * f2
        return (d_x, d_g, d_x) if bias else (d_x, d_g)


def bias_act(x, bias=None, kind="gelu"):
    """f(x + bias) in one fused pass: ``kind`` 'relu' (max(a, 0)), 'silu' (a sigmoid(a)),
    'gelu' (a Phi(a), exact) or 'gelu_tanh' (GPT-2's tanh form); bias (C,) over x's last
    axis, or None.  Equals ``relu(x + bias)``, ``silu(x + bias)``, ``gelu(x + bias)`` and
    ``gelu(x + bias, 'tanh')``."""
    kind = C.choice(kind, "kind", "bias_act", KINDS)
    x = floating(x)
    if x.ndim == 0:
        raise ValueError(f"bias_act: x must have at least one axis, got shape {x.shape}")
    if bias is None:
        return BiasAct.apply(x, kind=kind)
    if tuple(bias.shape) != x.shape[-1:]:
        raise ValueError(f"bias_act: bias must have shape {x.shape[-1:]} (x's last axis), "
                         f"got {tuple(bias.shape)}")
    if bias.dtype != x.dtype:
        return _ACTIVATION[kind](x + bias)       # mixed dtypes: the ops' own promotion
    return BiasAct.apply(x, bias, kind=kind)


def linear_act(x, weight, bias=None, kind="gelu"):
    """f(x W^T + b): the matrix product, then the bias add and the activation ``kind`` (see
    ``bias_act``) fused in one pass; equals ``act(linear(x, W, b))``."""
    kind = C.choice(kind, "kind", "linear_act", KINDS)
    if bias is None or weight.dtype != x.dtype or bias.dtype != x.dtype or x.dtype.kind != "f":
        return bias_act(linear(x, weight, bias), None, kind)
    if weight.ndim != 2 or x.ndim < 1 or x.shape[-1] != weight.shape[1] \
            or tuple(bias.shape) != (weight.shape[0],):
        raise ValueError(f"linear_act: expected x (..., in), weight (out, in) and bias (out,), "
                         f"got shapes {x.shape}, {weight.shape} and {tuple(bias.shape)}")
    return BiasAct.apply(Linear.apply(x, weight), bias, kind=kind)


_ACTIVATION = {"relu": relu, "silu": silu, "gelu": gelu,
               "gelu_tanh": lambda a: gelu(a, approximate="tanh")}
