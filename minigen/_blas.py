"""Scoped limits on the BLAS thread pool (OpenBLAS, MKL, BLIS), through threadpoolctl.

``blas_threads(n)`` runs a block with every BLAS library loaded in the process limited to
``n`` threads and restores the previous counts on exit, like scikit-learn's use of
``threadpoolctl.threadpool_limits``.  threadpoolctl is imported on first use; without it
the block runs as is (NumPy alone stays a complete install).

Why: on a shared 2-core machine a training step with OpenBLAS at 2 threads ran 2-5x slower
than at 1 (MLP, conv net, TinyUNet; 7x for the TransformerLM step), in every round
(benchmarks/README.md, "Threads that cooperate"): OpenBLAS's threads wait for each other, and
a partner descheduled by another job costs a time slice.  ``threadpool_limits`` finds the
loaded libraries again on every entry (216 us per enter and exit measured on that machine);
the controller here is built once per process and reused (30-50 us), so a limit can wrap
each training step.  A BLAS library loaded after the first call (e.g. PyTorch's MKL,
imported later) is not limited.
"""
import contextlib
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

_controller = {}


def _blas_controller():
    """threadpoolctl's controller restricted to the BLAS libraries, or None without it."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    if "blas" not in _controller:
        _controller["blas"] = ThreadpoolController().select(user_api="blas")
    return _controller["blas"]


@contextlib.contextmanager
def blas_threads(n):
    """Limit the BLAS pools to ``n`` threads inside the block (``None``: leave them)."""
    controller = None if n is None else _blas_controller()
    if controller is None:
        yield
        return
    with controller.limit(limits=n):
        yield


# --- matrix products arranged for BLAS -------------------------------------------------------
# NumPy's matmul on stacked operands calls one GEMM per matrix, and OpenBLAS does not split a
# product below a few million multiply-adds over its threads (one core works, the other
# waits).  Measured on the 2-core Xeon at 2 threads (benchmarks/README.md, "Matrix products
# arranged for BLAS"): a TransformerLM's (32, 128, 128) @ (128, 384) as 32 stacked GEMMs 2.8 ms,
# as one (4096, 128) @ (128, 384) GEMM 1.55 ms; the attention's 128 products (128, 32) @ (32,
# 128): 1.13 ms on one thread or two, 0.76 ms split in two halves over two threads; with the
# right operand a transposed view (k^T in q k^T) 2.86 ms, 1.70 ms after copying it to rows.
SPLIT_MAX_WORK = 1 << 22   # m k n of one product below which OpenBLAS leaves a core idle
_cache = {}                # "openblas": its controller; "workers": (threads, pool)
_split_lock = threading.Lock()


def _openblas():
    """threadpoolctl's controller of the OpenBLAS that NumPy loaded, or None (no threadpoolctl,
    or another BLAS: MKL and BLIS thread small products themselves)."""
    if "openblas" not in _cache:
        controller = _blas_controller()
        libs = [] if controller is None else \
            [lib for lib in controller.lib_controllers if lib.internal_api == "openblas"]
        _cache["openblas"] = libs[0] if len(libs) == 1 else None
    return _cache["openblas"]


def _rows_view(a):
    """a (..., m, k) as an (M, k) view, or None when its leading axes do not merge in place."""
    lead = [(n, s) for n, s in zip(a.shape[:-1], a.strides[:-1]) if n != 1]
    for (_, s), (n, s_next) in zip(lead, lead[1:]):
        if s != s_next * n:
            return None
    return a.reshape(-1, a.shape[-1])


def _transposed(a):
    """True when the last two axes of a stacked operand are stored column-major."""
    return a.strides[-2] == a.itemsize and a.strides[-1] != a.itemsize and a.shape[-2] > 1


def _part(errors, a, b, out):
    """One thread's share of a split product (a worker's or the caller's); NumPy's error
    state is per thread."""
    with np.errstate(**errors):
        np.matmul(a, b, out=out)


def matmul(a, b):
    """``a @ b`` for NumPy arrays (ndim >= 2), arranged so that OpenBLAS runs at its rate:

    * (..., m, k) @ (k, n) whose leading axes merge is one (M, k) @ (k, n) GEMM;
    * a stack whose right operand is a transposed view is multiplied after copying that
      operand to rows (NumPy's transposed small products run at half speed);
    * a stack of small products (m k n < ``SPLIT_MAX_WORK``) is split over OpenBLAS's
      threads, each half on one thread with OpenBLAS held at one thread meanwhile.

    The values are NumPy's: each output element is the same dot product.  CuPy arrays and
    everything else go to ``a @ b`` unchanged."""
    if type(a) is not np.ndarray or type(b) is not np.ndarray or a.ndim < 2 or b.ndim < 2:
        return a @ b
    if b.ndim == 2:
        if a.ndim > 2:
            rows = _rows_view(a)
            if rows is not None:
                return (rows @ b).reshape(*a.shape[:-1], b.shape[1])
        return a @ b
    if _transposed(b) and b.size <= a.size:      # the copy costs less than the product saves
        b = np.ascontiguousarray(b)
    stack = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    lib = _openblas() if a.shape[-2] * a.shape[-1] * b.shape[-1] < SPLIT_MAX_WORK else None
    threads = lib.get_num_threads() if lib is not None else 1
    count = math.prod(stack)
    if threads < 2 or count < 2 * threads:
        return a @ b
    a, b = np.broadcast_to(a, stack + a.shape[-2:]), np.broadcast_to(b, stack + b.shape[-2:])
    if stack[0] < threads:      # split the stack's first axis; merge the axes only if it is short
        a, b = a.reshape(count, *a.shape[-2:]), b.reshape(count, *b.shape[-2:])
    out = np.empty(a.shape[:-1] + b.shape[-1:], np.result_type(a, b))
    bounds = [len(a) * i // threads for i in range(threads + 1)]
    with _split_lock:
        size, pool = _cache.get("workers", (0, None))
        if size < threads:
            _cache["workers"] = threads, ThreadPoolExecutor(threads - 1, "minigen-gemm")
            size, pool = _cache["workers"]
        lib.set_num_threads(1)
        try:
            errors = np.geterr()      # the caller's floating-point error handling
            # the calling thread multiplies the first part itself: one thread fewer to wake
            # (TransformerLM step, 2 threads, four alternations: 253-262 against 258-295 ms)
            spans = [(lo, hi) for lo, hi in zip(bounds, bounds[1:]) if hi > lo]
            parts = [pool.submit(_part, errors, a[lo:hi], b[lo:hi], out[lo:hi])
                     for lo, hi in spans[1:]]
            lo, hi = spans[0]
            try:
                _part(errors, a[lo:hi], b[lo:hi], out[lo:hi])
            finally:        # the workers write into out: wait for them whatever happens here
                for part in parts:
                    part.result()
        finally:
            lib.set_num_threads(threads)
    return out.reshape(*stack, *out.shape[-2:])
