"""Tensor factories and the dtype rules they follow (as in PyTorch).

``tensor(data)`` copies numbers into a new leaf; ``zeros``, ``ones``, ``randn``, ``rand`` take
a shape (``zeros(2, 3)`` or ``zeros((2, 3))``); ``full`` and ``arange`` take their dtype from
their values. Floats default to ``backend.get_default_dtype()`` (float32 unless set), Python
ints give int64, bools bool.
"""
import functools

import numpy as np

from . import backend
from .autograd import Tensor, _as_array
from .backend import manual_seed, xp

__all__ = ["tensor", "zeros", "ones", "randn", "rand", "zeros_like", "ones_like", "full",
           "arange", "scalar_dtype", "manual_seed"]


def tensor(data, dtype=None, requires_grad=False, device="cpu"):
    """Make a leaf tensor; floats default to ``backend.get_default_dtype()``."""
    if isinstance(data, Tensor):
        data = data.data
    device = backend.check_device(device, "tensor")
    arr = _as_array(data, "tensor", device, dtype)
    if arr is data:
        arr = arr.copy()
    if requires_grad and arr.dtype.kind != "f":
        raise TypeError(f"tensor: requires_grad needs a floating dtype, got {arr.dtype}")
    return Tensor(arr, requires_grad=requires_grad)


def _wrap_factory(make):
    @functools.wraps(make)
    def factory(*shape, dtype=None, requires_grad=False, device="cpu", **kw):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        device = backend.check_device(device, make.__name__)
        mod = np if device == "cpu" else backend.cupy()
        dtype = dtype or backend.get_default_dtype()
        arr = make(mod, shape, dtype, device=device, **kw)
        return Tensor(arr, requires_grad=requires_grad)
    return factory


@_wrap_factory
def zeros(mod, shape, dtype, device):
    return mod.zeros(shape, dtype=dtype)


@_wrap_factory
def ones(mod, shape, dtype, device):
    return mod.ones(shape, dtype=dtype)


@_wrap_factory
def randn(mod, shape, dtype, device, rng=None):
    """Standard normal samples from ``rng`` (default: the generator of ``manual_seed``)."""
    rng = backend.as_rng(rng, device, where="randn")
    return rng.standard_normal(shape).astype(dtype, copy=False)


@_wrap_factory
def rand(mod, shape, dtype, device, rng=None):
    """Uniform [0, 1) samples from ``rng`` (default: the generator of ``manual_seed``)."""
    return backend.as_rng(rng, device, where="rand").random(shape).astype(dtype, copy=False)


def zeros_like(t, requires_grad=False):
    return Tensor(xp(t.data).zeros_like(t.data), requires_grad=requires_grad)


def ones_like(t, requires_grad=False):
    return Tensor(xp(t.data).ones_like(t.data), requires_grad=requires_grad)


def scalar_dtype(value):
    """PyTorch's dtype for a Python number: bool, int64, or the default float dtype."""
    if isinstance(value, (bool, np.bool_)):
        return np.dtype(bool)
    if isinstance(value, (int, np.integer)):
        return np.dtype(np.int64)
    if isinstance(value, (float, np.floating)):
        return np.dtype(backend.get_default_dtype())
    if isinstance(value, (complex, np.complexfloating)):
        return np.dtype(np.complex64 if backend.get_default_dtype() == np.float32
                        else np.complex128)
    raise TypeError(f"expected a number, got {type(value).__name__}")


def full(shape, value, dtype=None, device="cpu"):
    """A tensor filled with ``value``; the dtype follows the value as in PyTorch (an int
    gives int64, a float the default float dtype, a bool bool)."""
    mod = np if backend.check_device(device, "full") == "cpu" else backend.cupy()
    return Tensor(mod.full(shape, value, dtype=dtype or scalar_dtype(value)))


def arange(*args, dtype=None, device="cpu"):
    """Evenly spaced values in [start, stop); int64 when every argument is an int, else the
    default float dtype (as in PyTorch)."""
    mod = np if backend.check_device(device, "arange") == "cpu" else backend.cupy()
    if dtype is None:
        dtype = np.dtype(np.int64) if all(isinstance(a, (int, np.integer)) for a in args) \
            else backend.get_default_dtype()
    return Tensor(mod.arange(*args, dtype=dtype))

