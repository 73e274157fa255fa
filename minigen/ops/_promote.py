"""Dtype promotion for elementwise ops, as in PyTorch.

The result takes the highest category among the tensors (bool < integer < floating <
complex) and, within it, NumPy's promotion of those tensors' dtypes (float32 with int64 stays
float32; float32 with float64 gives float64). A Python number counts only when its category
is higher: then an int gives int64 and a float the default float dtype (int tensor * 0.5 ->
float32). Ops that make floats from ints (division, exp, log, erf, ...) give the default float
dtype.
"""
import numpy as np

from .. import backend
from ..autograd import Tensor, cast
from ..backend import xp
from ..creation import scalar_dtype, tensor

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


def operands(a, b, floats=False):
    """Two Tensors of one dtype kind (PyTorch's promotion, above); ``floats``: at least
    floating. Arrays and lists become Tensors first; numbers take the result dtype."""
    if isinstance(a, Tensor):  # fast paths: same dtypes, or a float tensor and a number
        kind = a.data.dtype.kind
        if isinstance(b, Tensor):
            if b.data.dtype == a.data.dtype and (kind in "fc" or not floats):
                return a, b
        elif kind == "f" and isinstance(b, (int, float)):
            return a, _scalar_like(b, a.data)
    elif isinstance(b, Tensor) and b.data.dtype.kind == "f" and isinstance(a, (int, float)):
        return _scalar_like(a, b.data), b
    return _promote([a, b], floats)


def _scalar_like(x, array):
    """The number ``x`` as a 0-d Tensor of ``array``'s dtype, on its device."""
    if type(array) is np.ndarray:
        return Tensor(np.array(x, dtype=array.dtype))
    return Tensor(xp(array).asarray(x, dtype=array.dtype))


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
