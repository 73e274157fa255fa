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
