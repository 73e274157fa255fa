"""minigen._blas.blas_threads: a scoped limit on the BLAS thread pools."""
import sys

import pytest

from minigen import _blas
from tests.helpers import recording_model


def blas_counts():
    from threadpoolctl import threadpool_info
    return [lib["num_threads"] for lib in threadpool_info() if lib["user_api"] == "blas"]


def test_limit_holds_inside_and_is_restored_after():
    pytest.importorskip("threadpoolctl")
    import numpy  # noqa: F401  (loads the BLAS library)
    from threadpoolctl import threadpool_limits
    with threadpool_limits(2, "blas"):          # a known starting point
        before = blas_counts()
        assert before and all(n == 2 for n in before)
        with _blas.blas_threads(1):
            assert all(n == 1 for n in blas_counts())
            with _blas.blas_threads(None):      # None leaves the pools as they are
                assert all(n == 1 for n in blas_counts())
        assert blas_counts() == before


def test_limit_is_restored_when_the_block_raises():
    pytest.importorskip("threadpoolctl")
    before = blas_counts()
    with pytest.raises(RuntimeError):
        with _blas.blas_threads(1):
            raise RuntimeError("inside")
    assert blas_counts() == before


def test_without_threadpoolctl_the_block_runs_as_is(monkeypatch):
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)     # import raises ImportError
    monkeypatch.setattr(_blas, "_controller", {})
    ran = []
    with _blas.blas_threads(1):
        ran.append(True)
    assert ran == [True]


def test_train_runs_its_steps_under_the_limit_and_restores_it(monkeypatch):
    pytest.importorskip("threadpoolctl")
    import numpy as np
    from threadpoolctl import threadpool_limits

    from minigen.train import train

    # Numba's first compilation (the first kernel a step runs) imports scipy.linalg, which
    # loads SciPy's own OpenBLAS. A library loaded after the controller was built is outside
    # the limit (minigen._blas says so): load it first and build the controller afresh.
    try:
        import numba
        numba.njit(lambda: 0)()
    except ImportError:
        pass
    monkeypatch.setattr(_blas, "_controller", {})
    model = recording_model(blas_counts)
    seen = model.seen
    with threadpool_limits(2, "blas"):
        before = blas_counts()
        train(model, np.ones((8, 3)), steps=3, batch_size=4, blas_threads=1, verbose=False)
        assert len(seen) == 3 and all(n == 1 for counts in seen for n in counts)
        assert blas_counts() == before
        seen.clear()
        train(model, np.ones((8, 3)), steps=2, batch_size=4, verbose=False)
        assert seen and all(counts == before for counts in seen)
