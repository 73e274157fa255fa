"""Reductions over axes: sum, mean, var, max, min, logsumexp."""
import builtins

import numpy as np

from ..autograd import Function, Tensor
from ..backend import check_axis, xp


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


def mean(a, axis=None, keepdims=False):
    axes = _axes(axis, a.ndim, "mean")
    count = 1
    for x in axes:
        count *= a.shape[x]
    return sum(a, axes, keepdims) * (1.0 / builtins.max(count, 1))


def var(a, axis=None, keepdims=False, ddof=0):
    """Variance with NumPy's convention: mean squared deviation, divided by N - ddof."""
    axes = _axes(axis, a.ndim, "var")
    count = 1
    for x in axes:
        count *= a.shape[x]
    d = a - mean(a, axes, keepdims=True)
    return sum(d * d, axes, keepdims) * (1.0 / builtins.max(count - ddof, 1))


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


def max(a, axis=None, keepdims=False):
    return Max.apply(a, axes=_axes(axis, a.ndim, "max"), keepdims=keepdims, fn=xp(a.data).max)


def min(a, axis=None, keepdims=False):
    return Max.apply(a, axes=_axes(axis, a.ndim, "min"), keepdims=keepdims, fn=xp(a.data).min)


def logsumexp(a, axis=None, keepdims=False):
    """log sum exp(a) computed as m + log sum exp(a - m), m = max(a) (held constant)."""
    axes = _axes(axis, a.ndim, "logsumexp")
    m = a.data.max(axis=axes, keepdims=True)
    m = xp(m).where(xp(m).isfinite(m), m, 0)
    out = (a - Tensor(m)).exp().sum(axes, keepdims=True).log() + Tensor(m)
    return out if keepdims else out.reshape([s for i, s in enumerate(out.shape) if i not in axes])
