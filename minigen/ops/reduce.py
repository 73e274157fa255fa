"""Reductions over axes: sum, mean, var, std, prod, max, min, logsumexp.

Degenerate cases follow NumPy: the mean of nothing is NaN, a variance with N - ddof <= 0 is
NaN (0/0) or inf (positive/0), the product of nothing is 1, logsumexp of nothing is -inf; max
and min of nothing have no value and raise.
"""
import numpy as np

from ..autograd import Function, Tensor
from ..backend import check_axis, xp
from .math import where


def _axes(axis, ndim, name):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    axes = tuple(sorted(check_axis(x, ndim, name) for x in axes))
    if len(set(axes)) != len(axes):
        raise ValueError(f"{name}: repeated axis in {axis}")
    return axes


def _keepdims_shape(shape, axes):
    return tuple(1 if i in axes else s for i, s in enumerate(shape))


class Sum(Function):
    def forward(self, a, axes, keepdims):
        self.in_shape, self.axes = a.shape, axes
        return a.sum(axis=axes, keepdims=keepdims)

    def backward(self, g):
        return g.reshape(_keepdims_shape(self.in_shape, self.axes)).expand(self.in_shape)


def sum(a, axis=None, keepdims=False):
    return Sum.apply(a, axes=_axes(axis, a.ndim, "sum"), keepdims=keepdims)


def _count(a, axes):
    count = 1
    for x in axes:
        count *= a.shape[x]
    return count


def _reciprocal(n):
    """1 / n as a float, inf for n = 0 (so that 0 * inf gives NumPy's NaN)."""
    return 1.0 / n if n > 0 else float("inf")


def mean(a, axis=None, keepdims=False):
    """sum / N over the axes (NaN over an empty axis, as in NumPy)."""
    axes = _axes(axis, a.ndim, "mean")
    return sum(a, axes, keepdims) * _reciprocal(_count(a, axes))


def var(a, axis=None, keepdims=False, ddof=0):
    """Variance with NumPy's convention: sum of squared deviations / max(N - ddof, 0)."""
    axes = _axes(axis, a.ndim, "var")
    d = a - mean(a, axes, keepdims=True)
    return sum(d * d, axes, keepdims) * _reciprocal(_count(a, axes) - ddof)


def std(a, axis=None, keepdims=False, ddof=0):
    """Standard deviation sqrt(var(a, axis, ddof)) (NumPy's ddof; PyTorch's correction)."""
    _axes(axis, a.ndim, "std")
    return var(a, axis, keepdims, ddof).sqrt()


class Prod(Function):
    """prod of the last axis; d/da_i = prod_{j != i} a_j.

    Where no product is 0 that is out / a_i (written in Tensor ops, so it differentiates
    again). Where one is (a zero factor, or underflow) it is the product over an (n, n)
    matrix whose diagonal is 1, which is exact and differentiable again at the cost of n^2
    memory.
    """

    def forward(self, a):
        return a.prod(axis=-1)

    def backward(self, g):
        a, out = self.inputs[0], self.output()
        g = g.unsqueeze(-1)
        if not (out.data == 0).any():
            return g * out.unsqueeze(-1) / a
        n = a.shape[-1]
        eye = xp(a.data).eye(n, dtype=bool)
        others = a.unsqueeze(-2).expand(a.shape[:-1] + (n, n))
        return g * prod(where(eye, 1.0, others), axis=-1)


def prod(a, axis=None, keepdims=False):
    """Product over the axes (1 over an empty axis)."""
    axes = _axes(axis, a.ndim, "prod")
    kept = [i for i in range(a.ndim) if i not in axes]
    moved = a.permute(kept + list(axes)) if a.ndim else a
    out = Prod.apply(moved.reshape(tuple(a.shape[i] for i in kept) + (_count(a, axes),)))
    return out.reshape(_keepdims_shape(a.shape, axes)) if keepdims else out


class Max(Function):
    """max over axes; the gradient is shared equally among tied maxima."""

    def forward(self, a, axes, keepdims, fn):
        self.in_shape, self.axes = a.shape, axes
        out = fn(a, axis=axes, keepdims=True)
        self.mask = a == out
        return out if keepdims else out.reshape([s for i, s in enumerate(out.shape) if i not in axes])

    def backward(self, g):
        m = xp(self.mask).asarray(self.mask, dtype=g.dtype)
        m = m / m.sum(axis=self.axes, keepdims=True)
        return g.reshape(_keepdims_shape(self.in_shape, self.axes)) * Tensor(m)


def _nonempty(a, axes, name):
    if any(a.shape[x] == 0 for x in axes):
        raise ValueError(f"{name}: cannot reduce over an empty axis (shape {a.shape}, axes "
                         f"{axes}): the {name} of no values is undefined")
    return axes


def max(a, axis=None, keepdims=False):
    axes = _nonempty(a, _axes(axis, a.ndim, "max"), "max")
    return Max.apply(a, axes=axes, keepdims=keepdims, fn=xp(a.data).max)


def min(a, axis=None, keepdims=False):
    axes = _nonempty(a, _axes(axis, a.ndim, "min"), "min")
    return Max.apply(a, axes=axes, keepdims=keepdims, fn=xp(a.data).min)


def logsumexp(a, axis=None, keepdims=False):
    """log sum exp(a) computed as m + log sum exp(a - m), m = max(a) (held constant);
    -inf over an empty axis."""
    axes = _axes(axis, a.ndim, "logsumexp")
    if a.size == 0:
        m = xp(a.data).zeros(_keepdims_shape(a.shape, axes), dtype=a.dtype)
    else:
        m = a.data.max(axis=axes, keepdims=True)
    m = xp(m).where(xp(m).isfinite(m), m, 0)
    out = (a - Tensor(m)).exp().sum(axes, keepdims=True).log() + Tensor(m)
    return out if keepdims else out.reshape([s for i, s in enumerate(out.shape) if i not in axes])
