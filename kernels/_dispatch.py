"""Choose, per call, which implementation of a kernel runs.

Every public kernel takes ``impl=None | 'reference' | 'numba' | 'cuda'``:

* ``impl=None`` (the default) picks by array type and by what is installed:
  a CuPy array runs the Numba CUDA kernel when numba-cuda sees a GPU, else the CuPy reference;
  a NumPy array runs the Numba CPU kernel when Numba is installed and the call does at least
  the kernel's ``threshold`` units of work (below it, compile-free NumPy is as fast), else the
  NumPy reference.
* The environment variable ``MINIGEN_KERNELS=reference|numba`` forces a path for every call
  without an explicit ``impl`` ('numba' means the Numba CPU kernel for NumPy arrays and the
  Numba CUDA kernel for CuPy arrays, whatever the size).
* An explicit ``impl`` is obeyed (tests use it; ``'cuda'`` also accepts NumPy arrays under
  ``NUMBA_ENABLE_CUDASIM=1``), and raises a clear error when that path is not installed.

Numba is only imported when a Numba path runs (or ``info()`` is asked), so
``import minigen.kernels`` needs NumPy alone.  Compiled functions are declared with
``lazy_njit`` / ``lazy_cuda_jit`` on module-level Python functions and built on first use by
``materialize``, which swaps them into the module's globals (so kernels can call helpers and
``cache=True`` caches them like any module-level ``@njit`` function).  A per-element formula
is written once as plain Python and compiled for both targets by ``both``; kernels are run by
``launch`` and inputs checked by ``check_float``, one copy each for every kernel file.
``FASTMATH`` is the one set of fast-math flags every kernel compiles with.

Numba's on-disk cache keys a kernel on its own file's timestamp, which misses edits to the
helpers it inlines from other files; ``materialize`` adds a hash of every kernels/*.py source
to the key (``source_hash``), so any edit to any kernel file recompiles.
"""
import hashlib
import importlib.util
import os
import threading
import types
import warnings

import numpy as np

# Numba's SSA pass checks, pedantically, that every variable of an inlined helper with a branch
# (e.g. exp's selects) is in scope, and warns (NumbaIRAssumptionWarning, "please report") that
# it is not; the compiled code is right (the parity tests check it). This filter matches only
# variables named after this package's helpers, so the warning still reaches users for their
# own code. It is installed at import and by message, so Numba need not be imported for it, and
# a test runner that restores the filters after each test keeps it.
INLINED_HELPER_NOTE = (r"variable '[^']*(exp_|lse_|reciprocal|_element|_online_max_sum"
                       r"|_dist_pass|_tile_max|_span|_task_|_stats|_row_)[^']*' is not in scope")
warnings.filterwarnings("ignore", message=INLINED_HELPER_NOTE)

IMPLS = ("reference", "numba", "cuda")
_REGISTRY = {}          # kernel name -> work threshold for the Numba CPU path
_state = {}
_BUILDING = object()
_BUILD_LOCK = threading.RLock()     # one compilation at a time; other threads wait for it
_LAUNCH_LOCK = threading.Lock()     # parallel CPU kernels take turns under 'workqueue'
_THREADSAFE_LAYERS = ("tbb", "omp")
prange = range          # kernels import this; materialize(..., 'cpu') swaps in numba.prange

# Fast-math flags that keep NaN and inf semantics: reassociation (vectorised sums; NaN and inf
# reach a sum in any order), contraction (FMA), reciprocal approximation.  Never nnan/ninf: with
# them LLVM may fold ``x != x`` to False and turn a NaN row finite, and the training loop's NaN
# stop depends on NaN reaching the loss.  Measured on the KDE kernel (d = 2, n = m = 10k): the
# same speed as with nnan and nsz.
FASTMATH = {"reassoc", "contract", "arcp"}

# NumPy's error model for every CPU kernel: a float division by zero gives inf or NaN, as in
# the NumPy reference, where Numba's default (Python's) raises ZeroDivisionError and so puts a
# zero test before every division, which keeps LLVM from vectorising the loop around it.
# Measured (one thread, float32): an Adam step over 1M parameters 2.16 -> 0.62 ms; erf's
# z p / q in bias + GELU 3.0 -> 0.38 ns per element.
ERROR_MODEL = "numpy"


def _xp(array):
    """numpy or cupy, whichever owns ``array`` (kernels sit below minigen.backend)."""
    if _is_cupy(array):
        import cupy
        return cupy
    import numpy
    return numpy


def _is_cupy(array):
    return type(array).__module__.split(".")[0] == "cupy"


def check_float(where, **arrays):
    """Raise unless every array is a float32/float64 array with at least one axis."""
    for name, a in arrays.items():
        if getattr(a, "dtype", None) not in (np.float32, np.float64):
            raise TypeError(f"{where}: {name} must be a float32 or float64 array, "
                            f"got {getattr(a, 'dtype', type(a).__name__)}")
        if a.ndim == 0:
            raise ValueError(f"{where}: {name} must have at least one axis, got a 0-d array")


def channels_last(a):
    """True when a (N, C, *) lies in memory as C-contiguous (N, *, C) rows (PyTorch's
    channels_last) and not also as C-contiguous NCHW (one channel, or one entry each)."""
    return a.ndim > 2 and not a.flags.c_contiguous and \
        a.transpose(channels_to_last(a.ndim)).flags.c_contiguous


def to_channels_last(a):
    """a (N, C, *) with the same values, its memory laid out channels-last."""
    rows = _xp(a).ascontiguousarray(a.transpose(channels_to_last(a.ndim)))
    return rows.transpose(channels_to_second(a.ndim))


def channels_to_last(ndim):
    """The axes that move axis 1 of ndim axes to the end: (0, 2, .., ndim - 1, 1)."""
    return (0,) + tuple(range(2, ndim)) + (1,)


def channels_to_second(ndim):
    """The inverse of ``channels_to_last``: (0, ndim - 1, 1, .., ndim - 2)."""
    return (0, ndim - 1) + tuple(range(1, ndim - 1))


def launch(path, cpu_kernel, cuda_kernel, size, threads, *args):
    """Run ``cpu_kernel(*args)`` (path 'numba') or ``cuda_kernel`` over ceil(size / threads)
    blocks of ``threads`` (path 'cuda'; nothing when size is 0), compiling it on first use.
    CPU kernels launched from several Python threads take turns until a parallel kernel has
    run under a thread-safe Numba threading layer ('tbb' or 'omp'): 'workqueue', minigen's
    default, aborts the process on a concurrent launch."""
    if path == "numba":
        kernel = _compiled(cpu_kernel)
        if _state["serialise"]:
            with _LAUNCH_LOCK:
                kernel(*args)
                if "layer" not in _state:
                    _note_layer()
        else:
            kernel(*args)
    elif size:
        _compiled(cuda_kernel)[(size + threads - 1) // threads, threads](*args)


def _note_layer():
    """Once a parallel kernel has started Numba's pool, note its threading layer, and let
    launches run concurrently if it is thread-safe."""
    import numba
    try:
        _state["layer"] = numba.threading_layer()
    except ValueError:          # no parallel kernel ran yet
        return
    _state["serialise"] = _state["layer"] not in _THREADSAFE_LAYERS


def _compiled(kernel):
    """The compiled form of a kernel (after ``materialize`` swapped its module's globals)."""
    if not isinstance(kernel, _Lazy):
        return kernel
    materialize(kernel.py_func.__globals__, kernel.target)
    return kernel.build()


def register(name, threshold):
    """Declare a kernel and the work (e.g. pairs, elements) from which Numba pays off."""
    _REGISTRY[name] = threshold


def numba_available():
    if "numba" not in _state:
        try:
            _state["numba"] = importlib.util.find_spec("numba") is not None
        except ValueError:          # sys.modules["numba"] is None: Numba is blocked
            _state["numba"] = False
    return _state["numba"]


def numba_threads():
    """Numba's thread count, 1 without Numba.  Asking Numba starts its threads, which fixes
    the threading layer for the process, so the layer is chosen first (``_prefer_workqueue``)
    as for a kernel's first build."""
    if not numba_available():
        return 1
    import numba
    with _BUILD_LOCK:
        _prefer_workqueue(numba)
    return numba.get_num_threads()


def cuda_available():
    """True when numba-cuda can launch kernels (a GPU, or the simulator)."""
    if "cuda" not in _state:
        try:
            from numba import cuda
            _state["cuda"] = bool(cuda.is_available())
        except Exception:
            _state["cuda"] = False
    return _state["cuda"]


def requested_path():
    """The path the environment variable MINIGEN_KERNELS forces: 'reference', 'numba', or None
    when it is unset or empty.  Any other value raises a ValueError naming the variable and the
    values it accepts (the command line calls this first, to fail before any work)."""
    value = os.environ.get("MINIGEN_KERNELS", "").strip().lower()
    if value not in ("", "reference", "numba"):
        raise ValueError(f"MINIGEN_KERNELS must be 'reference', 'numba' or unset, got {value!r}")
    return value or None




def choose(name, array, work, impl=None):
    """The implementation ('reference', 'numba' or 'cuda') that runs kernel ``name``."""
    if impl is not None:
        if impl not in IMPLS:
            raise ValueError(f"{name}: impl must be one of {IMPLS} or None, got {impl!r}")
        if impl == "numba" and not numba_available():
            raise RuntimeError(f"{name}: impl='numba' needs Numba (pip install minigen[fast])")
        if impl == "cuda" and not cuda_available():
            raise RuntimeError(f"{name}: impl='cuda' needs numba-cuda and a GPU "
                               "(or NUMBA_ENABLE_CUDASIM=1)")
        return impl
    forced = requested_path()
    if forced == "reference":
        return "reference"
    if _is_cupy(array):
        return "cuda" if cuda_available() else "reference"
    if not numba_available():
        return "reference"
    if forced == "numba" or work >= _REGISTRY.get(name, 0):
        return "numba"
    return "reference"


def materialize(namespace, target):
    """Build the lazily declared ``target`` ('cpu' or 'cuda') functions of a module namespace.

    Also binds the names kernels use: ``prange`` (numba.prange) for 'cpu', ``cuda``
    (numba.cuda) for 'cuda'.  Idempotent and cheap once built.
    """
    with _BUILD_LOCK:
        _materialize(namespace, target)


def _materialize(namespace, target):
    if target == "cpu":
        import numba
        _prefer_workqueue(numba)
        _key_cache_on_sources()
        namespace["prange"] = numba.prange
    else:
        from numba import cuda
        namespace["cuda"] = cuda
    for key, value in list(namespace.items()):
        if isinstance(value, _Lazy) and value.target == target and value.built is not _BUILDING:
            namespace[key] = value.build()


def _prefer_workqueue(numba):
    """Use Numba's 'workqueue' threading layer unless the user chose one (the environment
    variable NUMBA_THREADING_LAYER, or ``numba.config.THREADING_LAYER`` set in code).

    The kernels alternate with BLAS calls (conv's matrix products).  Under the 'omp' layer,
    idle OpenMP workers spin after each parallel loop and starve OpenBLAS's threads: on 2 cores
    a conv2d's matmul measured 10-20x slower right after a Numba kernel.  The workqueue layer's
    workers sleep; 'tbb' measured the same as 'workqueue' on the steps (benchmarks/README.md,
    "Threads that cooperate") and is a separate install.  'workqueue' aborts the process when
    kernels are launched from several Python threads at once, so ``launch`` makes them take
    turns until the active layer is known to be thread-safe.  No effect once Numba's threads
    started.
    """
    if "serialise" not in _state:
        _state["serialise"] = True
        if not os.environ.get("NUMBA_THREADING_LAYER") and \
                numba.config.THREADING_LAYER == "default":
            numba.config.THREADING_LAYER = "workqueue"


def source_hash(directory=os.path.dirname(os.path.abspath(__file__))):
    """SHA-256 of every .py file in ``directory`` (the kernels), in name order."""
    digest = hashlib.sha256()
    for name in sorted(os.listdir(directory)):
        if name.endswith(".py"):
            with open(os.path.join(directory, name), "rb") as f:
                digest.update(name.encode() + b"\0" + f.read())
    return digest.hexdigest()


def _key_cache_on_sources():
    """Put ``source_hash()`` into the cache key of every kernel compiled from this directory."""
    if "cache_key" in _state:
        return
    from numba.core.caching import CacheImpl
    _state["cache_key"] = source_hash()
    here = os.path.dirname(os.path.abspath(__file__))
    fallbacks = list(CacheImpl._locator_classes)

    class SourceHashLocator:
        """Numba's own locator for the function, with the sources' hash in its stamp."""

        def __init__(self, inner):
            self._inner = inner

        def __getattr__(self, name):
            return getattr(self._inner, name)

        def get_source_stamp(self):
            return (self._inner.get_source_stamp(), _state["cache_key"])

        @classmethod
        def from_function(cls, py_func, py_file):
            if os.path.dirname(os.path.abspath(py_file)) != here:
                return None
            for fallback in fallbacks:
                inner = fallback.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner)
            return None

    CacheImpl._locator_classes = [SourceHashLocator] + fallbacks


class _Lazy:
    """A Python function waiting to be compiled by Numba (CPU) or numba-cuda.

    ``builder`` (instead of options) is a function returning the compiled object, for
    things that need Numba to be defined at all (e.g. an ``@intrinsic``).
    """

    def __init__(self, py_func, target, options, builder=None):
        self.py_func, self.target, self.options, self.builder = py_func, target, options, builder
        self.built = None

    def build(self):
        if self.built is None or self.built is _BUILDING:
            with _BUILD_LOCK:       # reentrant: the building thread gets _BUILDING back
                if self.built is None:
                    self._build()
                    self._swap_into_home()
        return self.built

    def _swap_into_home(self):
        """Bind the built object in place of this one in its defining module.  Another module
        may import it and build it first; a ``materialize`` of the home module running inside
        that build skips it (it is being built) while swapping in the home module's kernels,
        which are then launched without another ``materialize`` and would meet it unbuilt."""
        home = self.py_func.__globals__
        for key, value in list(home.items()):
            if value is self:
                home[key] = self.built

    def _build(self):
        self.built = _BUILDING
        if self.builder is not None:
            self.built = self.builder()
            return
        materialize(self.py_func.__globals__, self.target)
        if self.target == "cpu":
            import numba
            self.built = numba.njit(**self.options)(self.py_func)
        else:
            from numba import cuda
            self.built = cuda.jit(**self.options)(self.py_func)


def lazy_njit(**options):
    """``numba.njit(**options)``, applied on first use, with NumPy's error model (see
    ``ERROR_MODEL``)."""
    options.setdefault("error_model", ERROR_MODEL)
    return lambda py_func: _Lazy(py_func, "cpu", options)


def serial_twin(kernel):
    """A ``lazy_njit(parallel=True)`` kernel compiled once more without ``parallel`` (its
    prange runs as range), for calls too small to pay for the thread pool: a parallel launch
    costs ~0.08 ms of CPU time even on one Numba thread (workqueue layer, an empty 32-step
    prange: 0.037 ms CPU, 0.017 ms wall on one thread; 0.09 ms CPU, 0.10 ms wall on two).
    Its own name keeps Numba's on-disk cache of the two apart (the cache key ignores
    ``parallel``)."""
    py = kernel.py_func
    twin = types.FunctionType(py.__code__, py.__globals__, py.__name__ + "_serial",
                              py.__defaults__, py.__closure__)
    twin.__qualname__ = py.__qualname__ + "_serial"
    twin.__doc__ = py.__doc__
    return _Lazy(twin, "cpu", {k: v for k, v in kernel.options.items() if k != "parallel"})


def lazy_cuda_jit(**options):
    """``numba.cuda.jit(**options)``, applied on first use."""
    return lambda py_func: _Lazy(py_func, "cuda", options)


def both(py_func):
    """A per-element formula written once: (CPU version, CUDA version), compiled on first use
    as ``njit(inline='always', fastmath=FASTMATH, error_model=ERROR_MODEL)`` and
    ``cuda.jit(device=True)``.  It may call ``math`` functions but no other helper (a
    helper's name would have to mean the CPU half in one compilation and the CUDA half in the
    other).  Under the CUDA simulator the CUDA half runs as Python: keep division by zero and
    ``math.log(0)`` out of its paths."""
    return (_Lazy(py_func, "cpu", {"inline": "always", "fastmath": FASTMATH,
                                    "error_model": ERROR_MODEL}),
            _Lazy(py_func, "cuda", {"device": True}))


def lazy_built(target):
    """Decorate a zero-argument function that returns a compiled object; call it on first use."""
    return lambda builder: _Lazy(builder, target, {}, builder=builder)


def info():
    """What runs for each kernel, and why: {name: {'numpy': ..., 'cupy': ..., 'reason': ...}}."""
    forced = requested_path()
    has_numba, has_cuda = numba_available(), numba_available() and cuda_available()
    report = {}
    for name, threshold in sorted(_REGISTRY.items()):
        if forced == "reference":
            cpu, gpu, why = "reference", "reference", "MINIGEN_KERNELS=reference"
        else:
            cpu = "numba" if has_numba else "reference"
            gpu = "cuda" if has_cuda else "reference"
            why = ("Numba installed" if has_numba else "Numba not installed") + "; " + \
                  ("numba-cuda sees a GPU" if has_cuda else "no numba-cuda GPU")
            if has_numba and forced != "numba":
                why += f"; NumPy inputs below {threshold} work units use the reference"
            if forced == "numba":
                why += "; MINIGEN_KERNELS=numba"
        report[name] = {"numpy": cpu, "cupy": gpu, "threshold": threshold, "reason": why}
    return report
