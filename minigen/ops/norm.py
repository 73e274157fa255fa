"""Normalisation as single Functions: group_norm (Wu & He 2018) and layer_norm (Ba et al. 2016).

Both view x as (N, G, K, S): G groups of K channels of S entries each (layer_norm: one group
of one "channel" holding the normalized_shape). Over each group g of M = K S entries

    mu = mean_g(x),   r = 1 / sqrt(var_g(x) + eps)   (the biased variance),
    x_hat = (x - mu) r,   y = x_hat w + b,

with w and b per channel (group_norm: shape (C,)) or per entry (layer_norm: normalized_shape).
One forward pass saves x_hat and r; the backward is closed-form. With h = gy w and
P(v) = r (v - mean_g(v) - x_hat mean_g(x_hat v)) (the Jacobian of x_hat, which is symmetric),

    gx = P(h),   gw = sum gy x_hat,   gb = sum gy   (sums over every axis w broadcasts along).

``NormBackward`` computes these on raw arrays; its own backward is written in Tensor ops (see
its docstring), so gradients of gradients (WGAN-GP's penalty) are exact to every order.
layer_norm and group_norm run as ``LayerNorm``/``LayerNormBackward`` and
``GroupNorm``/``GroupNormBackward``: the same maps, each one call of ``minigen.kernels.norm``
(a Numba kernel with Numba installed and enough work, else its NumPy reference), saving mu and
r (no saved x_hat); the second derivative is ``NormBackward``'s.
"""
import math

import numpy as np

from .. import _checks as C
from ..autograd import Function, cast, sum_axes
from ..backend import xp
from ..kernels import norm as knorm
from ._promote import floating, result_dtype
from .activations import KINDS, BiasActBackward, second_derivative

_STATS = (2, 3)  # the axes of a group in the (N, G, K, S) view


class Norm(Function):
    """y = x_hat w + b on the (N, G, K, S) ``view`` of x; w and b (each optional, flagged by
    ``affine``) on the broadcastable ``wview``, of shape ``pshape``."""

    def forward(self, x, *params, view, wview, pshape, affine, eps):
        self.meta = dict(view=view, wview=wview, pshape=pshape, affine=affine, eps=eps)
        x4 = x.reshape(view)
        if x.size == 0:
            self.xhat = self.rstd = x4
            return x.copy()
        xhat = x4 - x4.mean(axis=_STATS, keepdims=True)
        rstd = 1 / xp(x).sqrt(_group_dot(xhat, xhat) / (view[2] * view[3]) + eps)
        xhat *= rstd
        self.xhat, self.rstd = xhat, rstd
        params = iter(params)
        y = xhat * next(params).reshape(wview) if affine[0] else xhat.copy()
        if affine[1]:
            y += next(params).reshape(wview)
        return y.reshape(x.shape)

    def backward(self, gy):
        x, *params = self.inputs
        weight = params[:1] if self.meta["affine"][0] else []
        return NormBackward.apply(x, gy, *weight, xhat=self.xhat, rstd=self.rstd, **self.meta)


class NormBackward(Function):
    """(x, gy[, w]) -> (gx[, gw][, gb]), the vector-Jacobian product of ``Norm``.

    Its backward, for cotangents a (of gx), q (of gw) and p (of gb), broadcast to the view,
    with per-group sums S_a = sum a x_hat, S_h = sum h x_hat and
    C = sum a h - M mean(a) mean(h):

        d/dgy = w P(a) + q x_hat + p,    d/dw = sum gy P(a),
        d/dx  = P(q gy) - (r / M) (S_h P(a) + S_a P(h)) - (r^2 / M) x_hat (C - S_a S_h / M)

    (from dx_hat = P dx, dr = -(r^2 / M) <x_hat, dx> and the symmetry of P), built from x_hat
    and r recomputed in Tensor ops, so it differentiates again.
    """

    def forward(self, x, gy, *weight, xhat, rstd, view, wview, pshape, affine, eps):
        self.meta = dict(view=view, wview=wview, pshape=pshape, affine=affine, eps=eps)
        gy4 = gy.reshape(view)
        axes = tuple(i for i, s in enumerate(wview) if s == 1)
        if x.size == 0:
            grads = [gy.copy()]
        else:
            h = gy4 * weight[0].reshape(wview) if affine[0] else gy4.copy()
            m = view[2] * view[3]
            h_mean, hx_mean = h.mean(axis=_STATS, keepdims=True), _group_dot(h, xhat) / m
            h -= h_mean
            h -= xhat * hx_mean
            h *= rstd
            grads = [h.reshape(x.shape)]
        if affine[0]:
            grads.append(sum_axes(gy4 * xhat, axes).reshape(pshape))
        if affine[1]:
            grads.append(sum_axes(gy4, axes).reshape(pshape))
        return tuple(grads) if len(grads) > 1 else grads[0]

    def backward(self, ggx, *gg_params):
        x, gy, *weight = self.inputs
        affine = self.meta["affine"]
        gg = iter(gg_params)
        ggw = next(gg) if affine[0] else None
        ggb = next(gg) if affine[1] else None
        grads = _norm_vjp(x, gy, weight[0] if weight else None, ggx, ggw, ggb,
                         *(self.meta[k] for k in ("view", "wview", "pshape", "eps")))
        return grads if weight else grads[:2]


def _norm_vjp(x, gy, weight, ggx, ggw, ggb, view, wview, pshape, eps):
    """(d/dx, d/dgy, d/dw) of <ggx, gx> + <ggw, gw> + <ggb, gb>, (gx, gw, gb) the
    vector-Jacobian product of ``Norm`` at x for the cotangent gy (``NormBackward``'s
    docstring has the formulas), in Tensor ops; None where nothing flows."""
    axes = tuple(i for i, s in enumerate(wview) if s == 1)
    m = view[2] * view[3]
    x4, gy4 = x.reshape(view), gy.reshape(view)
    w4 = weight.reshape(wview) if weight is not None else None

    def mean_g(v):
        return v.mean(axis=_STATS, keepdims=True)

    def sum_g(v):
        return v.sum(axis=_STATS, keepdims=True)

    d = x4 - mean_g(x4)
    r = 1 / (mean_g(d * d) + eps).sqrt()
    xhat = d * r

    def jac(v):  # P(v), the symmetric Jacobian of x_hat
        return r * (v - mean_g(v) - xhat * mean_g(xhat * v))

    g_x = g_gy = g_w = None
    if ggx is not None:
        a = ggx.reshape(view)
        h = gy4 * w4 if w4 is not None else gy4
        pa = jac(a)
        s_a, s_h = sum_g(a * xhat), sum_g(h * xhat)
        c = sum_g(a * h) - m * mean_g(a) * mean_g(h)
        g_x = -(r / m) * (s_h * pa + s_a * jac(h)) - (r * r / m) * xhat * (c - s_a * s_h / m)
        g_gy = pa * w4 if w4 is not None else pa
        if w4 is not None:
            g_w = (gy4 * pa).sum(axis=axes).reshape(pshape)
    if ggw is not None:
        q = ggw.reshape(wview)
        g_gy = _plus(g_gy, q * xhat)
        g_x = _plus(g_x, jac(q * gy4))
    if ggb is not None:
        g_gy = _plus(g_gy, ggb.reshape(wview).expand(view))
    return (None if g_x is None else g_x.reshape(x.shape),
            None if g_gy is None else g_gy.reshape(gy.shape), g_w)


class GroupNorm(Norm):
    """``Norm`` over groups of channels through ``kernels.norm.group_norm`` (Numba above its
    threshold, else the NumPy reference, whose reshapes and ufuncs keep an NHWC-strided x's
    layout); saves mu and r (N, G) instead of x_hat."""

    def forward(self, x, *params, num_groups, view, wview, pshape, affine, eps):
        self.meta = dict(view=view, wview=wview, pshape=pshape, affine=affine, eps=eps)
        self.num_groups = num_groups
        params = iter(params)
        weight = next(params) if affine[0] else None
        bias = next(params) if affine[1] else None
        y, self.mu, self.rstd = knorm.group_norm(x, num_groups, weight, bias, eps)
        return y

    def backward(self, gy):
        x, *params = self.inputs
        weight = params[:1] if self.meta["affine"][0] else []
        return GroupNormBackward.apply(x, gy, *weight, mu=self.mu, rstd=self.rstd,
                                       num_groups=self.num_groups, **self.meta)


class GroupNormBackward(NormBackward):
    """(x, gy[, w]) -> (gx[, gw][, gb]) of ``GroupNorm`` by ``kernels.norm.group_norm_backward``
    (gx = r (h - mean_g(h) - x_hat mean_g(h x_hat)), h = gy w; gw = sum gy x_hat,
    gb = sum gy); its backward is ``NormBackward``'s, in Tensor ops."""

    def forward(self, x, gy, *weight, mu, rstd, num_groups, view, wview, pshape, affine, eps):
        self.meta = dict(view=view, wview=wview, pshape=pshape, affine=affine, eps=eps)
        gx, gw, gb = knorm.group_norm_backward(x, gy, mu, rstd, num_groups,
                                               weight[0] if affine[0] else None)
        grads = [gx] + [g.reshape(pshape) for g, kept in zip((gw, gb), affine) if kept]
        return tuple(grads) if len(grads) > 1 else grads[0]


class GroupNormAct(Function):
    """y = f(x_hat w + b + shift) of x (N, C, *), x_hat the group norm, shift (N, C) or (1, C)
    per sample and channel, f an activation of ``kernels.elementwise.KINDS`` or None, as one
    ``kernels.norm.group_norm_act`` call (one pass per group; mu and r (N, G) saved).
    ``present`` flags which of weight, bias and shift follow x."""

    def forward(self, x, *operands, num_groups, view, pshape, present, eps, activation):
        self.meta = dict(num_groups=num_groups, view=view, pshape=pshape, present=present,
                         eps=eps, activation=activation)
        w, b, shift = _present(operands, present)
        y, self.mu, self.rstd = knorm.group_norm_act(x, num_groups, w, b, shift, eps,
                                                     activation)
        return y

    def backward(self, gy):
        x, *operands = self.inputs
        return GroupNormActBackward.apply(x, gy, *operands, mu=self.mu, rstd=self.rstd,
                                          **self.meta)


class GroupNormActBackward(Function):
    """(x, gy[, w][, b][, shift]) -> (gx[, gw][, gb][, gshift]) of ``GroupNormAct`` by one
    ``kernels.norm.group_norm_act_backward`` call: with a = x_hat w + b + shift and
    ga = gy f'(a), (gx, gw, gb) is the group norm's vector-Jacobian product at ga and
    gshift = ga summed over each channel's entries.

    Its backward, for cotangents (Gx, Gw, Gb, Gs): the group norm's VJP depends on ga
    linearly, so with (Dx, U, Dw) = ``_norm_vjp`` at (Gx, Gw, Gb) and U += Gs (broadcast over
    the entries), d/dgy = U f'(a) and d/da = U gy f''(a), which reaches x, w, b and the shift
    through a (the group norm's VJP again, ``GroupNormBackward``) and adds to Dx, Dw.  a,
    f' (``BiasActBackward``) and f'' are Tensor ops, so it differentiates again."""

    def forward(self, x, gy, *operands, mu, rstd, num_groups, view, pshape, present, eps,
                activation):
        self.meta = dict(mu=mu, rstd=rstd, num_groups=num_groups, view=view, pshape=pshape,
                         present=present, eps=eps, activation=activation)
        w, b, shift = _present(operands, present)
        grads = knorm.group_norm_act_backward(x, gy, mu, rstd, num_groups, w, b, shift,
                                              activation)
        grads = [g.reshape(pshape) if 0 < i < 3 else g
                 for i, g in enumerate(grads) if i == 0 or present[i - 1]]
        return tuple(grads) if len(grads) > 1 else grads[0]

    def backward(self, ggx, *gg_operands):
        x, gy, *operands = self.inputs
        m = self.meta
        present, view, act = m["present"], m["view"], m["activation"]
        w, b, shift = _present(operands, present)
        ggw, ggb, ggs = _present(gg_operands, present)
        norm_meta = dict(view=view, wview=(1,) + view[1:3] + (1,), pshape=m["pshape"],
                         affine=present[:2], eps=m["eps"])
        a = GroupNorm.apply(x, *(p for p in (w, b) if p is not None),
                            num_groups=m["num_groups"], **norm_meta)
        trailing = (1,) * (x.ndim - 2)
        if shift is not None:
            a = a + shift.reshape(shift.shape + trailing)
        ga = gy if act is None else BiasActBackward.apply(a, gy, kind=act)
        d_x, u, d_w = _norm_vjp(x, ga, w, ggx, ggw, ggb, view, norm_meta["wview"],
                                m["pshape"], m["eps"])
        if ggs is not None:
            s = ggs.reshape(ggs.shape + trailing)
            u = s.expand(x.shape) if u is None else u + s
        if u is None:
            return (d_x, None) + (None,) * len(operands)
        d_gy = u if act is None else BiasActBackward.apply(a, u, kind=act)
        f2 = None if act is None else second_derivative(act, a)
        d_b = d_s = None
        if f2 is not None:
            d_a = u * gy * f2
            grads = GroupNormBackward.apply(x, d_a, *(() if w is None else (w,)),
                                            mu=m["mu"], rstd=m["rstd"],
                                            num_groups=m["num_groups"], **norm_meta)
            grads = iter(grads if isinstance(grads, tuple) else (grads,))
            d_x = _plus(d_x, next(grads))
            if w is not None:
                d_w = _plus(d_w, next(grads))
            if b is not None:
                d_b = next(grads)
            if shift is not None:
                d_s = d_a.sum(axis=tuple(range(2, x.ndim)))     # the engine sums (1, C) shifts
        wanted = zip((d_w, d_b, d_s), present)
        return (d_x, d_gy) + tuple(g for g, kept in wanted if kept)


def _present(operands, present):
    """(weight, bias, shift) from the operands that ``present`` flags, None for the others."""
    operands = iter(operands)
    return tuple(next(operands) if kept else None for kept in present)


class LayerNorm(Norm):
    """``Norm`` on the (rows, 1, 1, D) view of layer_norm, as one ``kernels.norm.layer_norm``
    call: y = (x - mu) r w + b per row; mu and r (shape (rows,)) saved for the backward."""

    def forward(self, x, *params, view, wview, pshape, affine, eps):
        self.meta = dict(view=view, wview=wview, pshape=pshape, affine=affine, eps=eps)
        w, b = _affine_params(params, affine, view[3])
        y, self.mu, self.rstd = knorm.layer_norm(x.reshape(view[0], view[3]), w, b, eps)
        return y.reshape(x.shape)

    def backward(self, gy):
        x, *params = self.inputs
        weight = params[:1] if self.meta["affine"][0] else []
        return LayerNormBackward.apply(x, gy, *weight, mu=self.mu, rstd=self.rstd, **self.meta)


class LayerNormBackward(NormBackward):
    """``NormBackward`` for ``LayerNorm``, as one ``kernels.norm.layer_norm_backward`` call
    from x, gy, w and the saved mu, r: gx = r (h - mean(h) - x_hat mean(h x_hat)), h = gy w,
    gw = sum gy x_hat, gb = sum gy over the rows; its backward is ``NormBackward``'s."""

    def forward(self, x, gy, *weight, mu, rstd, view, wview, pshape, affine, eps):
        self.meta = dict(view=view, wview=wview, pshape=pshape, affine=affine, eps=eps)
        rows = (view[0], view[3])
        gx, gw, gb = knorm.layer_norm_backward(x.reshape(rows), gy.reshape(rows), mu, rstd,
                                               weight[0].reshape(-1) if weight else None)
        grads = [gx.reshape(x.shape)]
        if affine[0]:
            grads.append(gw.reshape(pshape))
        if affine[1]:
            grads.append(gb.reshape(pshape))
        return tuple(grads) if len(grads) > 1 else grads[0]


def _affine_params(params, affine, d):
    """(w, b) flattened to (d,), None where ``affine`` says the parameter is absent."""
    params = iter(params)
    return tuple(next(params).reshape(d) if used else None for used in affine)


def _group_dot(a, b):
    """sum over each group of a * b, shape (N, G, 1, 1), without an (N, G, K, S) temporary."""
    n, g = a.shape[:2]
    return xp(a).einsum("ngm,ngm->ng", a.reshape(n, g, -1), b.reshape(n, g, -1)) \
        .reshape(n, g, 1, 1)


def _plus(a, b):
    return b if a is None else a + b


def _normalize(where, x, weight, bias, view, wview, pshape, eps, function=Norm, **options):
    """Check the affine parameters' shapes, give x, weight and bias one floating dtype, apply
    ``function`` (``Norm``, ``LayerNorm`` or ``GroupNorm``, with its extra ``options``)."""
    eps = C.real(eps, "eps", where, low=0)
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None and tuple(p.shape) != pshape:
            raise ValueError(f"{where}: {name} must have shape {pshape}, got {tuple(p.shape)}")
    params = [p for p in (weight, bias) if p is not None]
    dtype = result_dtype(floating(x), *params)
    x, *params = (cast(t, dtype) for t in (x, *params))
    return function.apply(x, *params, view=view, wview=wview, pshape=pshape,
                          affine=(weight is not None, bias is not None), eps=eps, **options)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5):
    """Group normalisation of x (N, C, *) over each of ``num_groups`` groups of C / G
    channels (and every trailing entry), then y = x_hat weight_c + bias_c (Wu & He 2018),
    as torch.nn.functional.group_norm."""
    if x.ndim < 2:
        raise ValueError(f"group_norm: expected input (N, C, *) with at least 2 dims, got "
                         f"shape {x.shape}")
    n, c = x.shape[:2]
    g = C.positive_int(num_groups, "num_groups", "group_norm")
    if c % g:
        raise ValueError(f"group_norm: num_groups must divide the {c} channels of input "
                         f"{x.shape}, got {g}")
    view = (n, g, c // g, math.prod(x.shape[2:]))
    return _normalize("group_norm", x, weight, bias, view, (1, g, c // g, 1), (c,), eps,
                      GroupNorm, num_groups=g)


def group_norm_act(x, num_groups, weight=None, bias=None, eps=1e-5, shift=None,
                   activation="silu"):
    """f(group_norm(x, num_groups, weight, bias, eps) + shift) for x (N, C, *), shift (N, C)
    or (1, C) added to every entry of (sample, channel) (or None), f an activation of
    ``KINDS`` ('relu', 'silu', 'gelu', 'gelu_tanh') or None: one fused Function forward and
    one backward (see ``GroupNormAct``), equal to the composite
    ``silu(group_norm(x, G, w, b, eps) + shift.reshape(N, C, 1, ..))`` to rounding."""
    where = "group_norm_act"
    if x.ndim < 2:
        raise ValueError(f"{where}: expected input (N, C, *) with at least 2 dims, got "
                         f"shape {x.shape}")
    if activation is not None:
        activation = C.choice(activation, "activation", where, KINDS)
    n, c = x.shape[:2]
    g = C.positive_int(num_groups, "num_groups", where)
    if c % g:
        raise ValueError(f"{where}: num_groups must divide the {c} channels of input "
                         f"{x.shape}, got {g}")
    eps = C.real(eps, "eps", where, low=0)
    for name, p, shapes in (("weight", weight, [(c,)]), ("bias", bias, [(c,)]),
                            ("shift", shift, [(n, c), (1, c)])):
        if p is not None and tuple(p.shape) not in shapes:
            raise ValueError(f"{where}: {name} must have shape "
                             f"{' or '.join(map(str, shapes))}, got {tuple(p.shape)}")
    operands = [p for p in (weight, bias, shift) if p is not None]
    dtype = result_dtype(floating(x), *operands)
    x, *operands = (cast(t, dtype) for t in (x, *operands))
    return GroupNormAct.apply(x, *operands, num_groups=g,
                              view=(n, g, c // g, math.prod(x.shape[2:])), pshape=(c,),
                              present=tuple(p is not None for p in (weight, bias, shift)),
                              eps=eps, activation=activation)


def layer_norm(x, normalized_shape, weight=None, bias=None, eps=1e-5):
    """Layer normalisation over the trailing ``normalized_shape`` of x (Ba et al. 2016):
    y = (x - mean) / sqrt(var + eps) weight + bias, as torch.nn.functional.layer_norm."""
    shape = (normalized_shape,) if isinstance(normalized_shape, (int, np.integer)) \
        else tuple(normalized_shape)
    k = len(shape)
    if k == 0 or k > x.ndim or tuple(x.shape[x.ndim - k:]) != shape:
        raise ValueError(f"layer_norm: input shape {x.shape} does not end with normalized_shape "
                         f"{shape}")
    d = math.prod(shape)
    view = (math.prod(x.shape[:x.ndim - k]), 1, 1, d)
    return _normalize("layer_norm", x, weight, bias, view, (1, 1, 1, d), shape, eps, LayerNorm)


__all__ = ["group_norm", "group_norm_act", "layer_norm"]
