"""Array backends: NumPy on the CPU, CuPy on a GPU; default dtype and generators; per-example
noise that does not depend on how a batch is sharded (``sharded``, ``per_example``).

Every op reaches its array library through ``xp(array)``, so one code path serves both.
CuPy is imported lazily: ``import minigen`` needs NumPy only.
"""
import contextlib
import contextvars

import numpy as np

from . import _checks

try:
    from numpy.exceptions import AxisError
except ImportError:  # NumPy < 1.25
    AxisError = np.AxisError

_DEFAULT_DTYPE = np.float32
_cupy = None
_cupy_checked = False


def cupy():
    """The CuPy module if it is installed and a GPU is visible, else None."""
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy as cp
            if cp.cuda.runtime.getDeviceCount() > 0:
                _cupy = cp
        except Exception:
            _cupy = None
    return _cupy


def xp(array):
    """The array module (numpy or cupy) that owns ``array``."""
    if type(array).__module__.startswith("cupy"):
        return cupy()
    return np


def device_of(array):
    return "cuda" if type(array).__module__.startswith("cupy") else "cpu"


def check_device(device, where="device"):
    """Normalise a device name, raising a clear error for unknown or unavailable ones."""
    name = str(device).split(":")[0]
    if name not in ("cpu", "cuda"):
        raise ValueError(f"{where}: unknown device {device!r}; expected 'cpu' or 'cuda'")
    if name == "cuda" and cupy() is None:
        raise RuntimeError(f"{where}: device 'cuda' needs CuPy and a visible GPU "
                           "(pip install minigen[gpu])")
    return name


def to_device(array, device):
    """Move an array to 'cpu' (NumPy) or 'cuda' (CuPy)."""
    device = check_device(device)
    if device == "cpu":
        return array.get() if device_of(array) == "cuda" else np.asarray(array)
    return cupy().asarray(array)


def check_axis(axis, ndim, where):
    """``axis`` as an index in [0, ndim), or NumPy's AxisError (a ValueError and an IndexError,
    so code written for either catches it) naming the op."""
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"{where}: axis must be an int, got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise AxisError(f"{where}: axis {axis} is out of range for a tensor with {ndim} dims")
    return int(axis) % ndim


def get_default_dtype():
    return _DEFAULT_DTYPE


def set_default_dtype(dtype):
    """Set the dtype of new floating tensors and parameters (float32 or float64)."""
    global _DEFAULT_DTYPE
    dtype = np.dtype(dtype).type
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"set_default_dtype: expected float32 or float64, got {dtype}")
    _DEFAULT_DTYPE = dtype


# --- random numbers: one seeded generator per device ------------------------------------
_rngs = {}


def manual_seed(seed):
    """Seed minigen's default generators (NumPy, and CuPy when present)."""
    seed = _checks.integer(seed, "seed", "manual_seed", low=0, optional=True)
    _rngs["cpu"] = np.random.default_rng(seed)
    if _cupy is not None:
        _rngs["cuda"] = _cupy.random.default_rng(seed)
    else:
        _rngs.pop("cuda", None)
    _rngs["seed"] = seed


def default_rng(device="cpu"):
    """The generator used when a stochastic function gets ``rng=None``."""
    if device not in _rngs:
        if device == "cuda":
            _rngs["cuda"] = cupy().random.default_rng(_rngs.get("seed"))
        else:
            _rngs["cpu"] = np.random.default_rng(_rngs.get("seed"))
    return _rngs[device]


def check_rng(rng, name, where):
    """``rng`` itself if ``as_rng`` takes it, else the error ``as_rng`` gives, naming ``where``.
    For a call that hands its rng on to several parts (an int seed seeds each of them alike,
    so converting it once would change the numbers): a bad one is reported by that call."""
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, (bool, np.bool_)):
        _checks.integer(rng, name, where, low=0)
    elif not (rng is None or isinstance(rng, (np.random.RandomState, np.random.Generator))
              or type(rng).__module__.startswith("cupy")):
        raise TypeError(f"{where}: {name} must be None, an int seed >= 0, a "
                        f"numpy.random.Generator or a numpy.random.RandomState, got "
                        f"{type(rng).__name__} {_checks.excerpt(rng)}")
    return rng


def as_rng(rng, device="cpu", name="rng", where="as_rng"):
    """A random Generator from ``rng``: a Generator (NumPy's, or CuPy's on 'cuda'), an int
    seed >= 0, None (the default generator of ``manual_seed``), or a legacy
    ``np.random.RandomState``, which seeds a new Generator from one draw of 128 bits
    (deterministic: the same state gives the same numbers; the RandomState advances, as after
    any draw). ``name`` is the argument and ``where`` the call named in the error for anything
    else (a constructor passes its class name, so ``VAE(rng=-1)`` says "VAE: rng ...")."""
    check_rng(rng, name, where)
    if rng is None:
        return default_rng(device)
    if isinstance(rng, np.random.RandomState):
        seed = rng.randint(0, 2 ** 32, size=4, dtype=np.uint64).tolist()
    elif isinstance(rng, np.random.Generator) or type(rng).__module__.startswith("cupy"):
        return rng
    else:
        seed = int(rng)
    return np.random.default_rng(seed) if device == "cpu" else cupy().random.default_rng(seed)


def shared_rng(rng, where):
    """The generator a module hands to its parts: None stays None (each part draws from the
    default generator when it needs to), anything else becomes one Generator that the parts
    share, so parts of one shape start different and a stored generator (``Dropout``'s) moves
    on from call to call.  Handed on as an int, a seed would seed every part alike: the two
    hidden layers of ``MLP([4, 8, 8, 8], rng=0)`` would start equal, and a dropout would draw
    the same mask at every step."""
    return None if rng is None else as_rng(rng, where=where)


# --- per-example noise under a shard of a global batch -------------------------------------
_shard = contextvars.ContextVar("minigen_shard", default=None)


@contextlib.contextmanager
def sharded(lo, hi, total):
    """Inside, ``per_example`` draws for rows [lo, hi) of a global batch of ``total`` rows."""
    total = _checks.integer(total, "total", "sharded", low=0)
    hi = _checks.integer(hi, "hi", "sharded", low=0, high=total)
    lo = _checks.integer(lo, "lo", "sharded", low=0, high=hi)
    token = _shard.set((lo, hi, total))
    try:
        yield
    finally:
        _shard.reset(token)


def per_example(draw, shape, *args, **kwargs):
    """``draw(*args, size=shape, **kwargs)`` for a batch of shape[0] examples (``draw`` is a
    Generator method: ``rng.standard_normal``, ``rng.integers``, ``rng.random`` ...).

    Inside ``sharded(lo, hi, B)`` it draws for the whole global batch, size (B,) + shape[1:],
    and keeps rows lo:hi. Every rank's generator then advances exactly as the single process's
    does, and each example gets the noise the single process gives it, whatever the number of
    ranks. The cost is drawing B rows instead of hi - lo."""
    shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
    span = _shard.get()
    if span is None:
        return draw(*args, size=shape, **kwargs)
    lo, hi, total = span
    if not shape or shape[0] != hi - lo:
        raise ValueError(f"per_example: shape must start with this rank's {hi - lo} rows "
                         f"(rows {lo}:{hi} of {total}), got {shape}")
    return draw(*args, size=(total,) + shape[1:], **kwargs)[lo:hi]
