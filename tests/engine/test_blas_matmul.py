"""minigen._blas.matmul: NumPy's a @ b, laid out for OpenBLAS, with NumPy's values."""
import numpy as np
import pytest

from minigen import _blas

RNG = np.random.default_rng(0)


def rand(*shape, dtype=np.float32):
    return RNG.standard_normal(shape).astype(dtype)


def heads(x, n_head):
    """(B, T, C) -> (B, nh, T, hs) as a strided view, as attention makes it."""
    b, t, c = x.shape
    return x.reshape(b, t, n_head, c // n_head).transpose(0, 2, 1, 3)


def cases():
    qkv = rand(4, 16, 24)
    q, k, v = heads(qkv[..., :8], 2), heads(qkv[..., 8:16], 2), heads(qkv[..., 16:], 2)
    s = rand(4, 2, 16, 16)
    return {
        "rows @ matrix": (rand(3, 5, 7), rand(7, 4)),
        "rows @ transposed matrix": (rand(3, 5, 7), rand(4, 7).T),
        "strided rows @ matrix": (rand(3, 5, 14)[..., ::2], rand(7, 4)),   # no merge: NumPy's
        "q k^T": (q, k.swapaxes(-1, -2)),
        "s v": (s, v),
        "s^T q": (s.swapaxes(-1, -2), q),
        "broadcast stack": (rand(1, 3, 5, 7), rand(6, 1, 7, 2)),
        "short first axis": (rand(1, 9, 5, 7), rand(1, 9, 7, 2)),
        "float64": (rand(6, 5, 7, dtype=np.float64), rand(6, 7, 3, dtype=np.float64)),
        "empty stack": (rand(0, 5, 7), rand(0, 7, 3)),
        "empty rows": (rand(3, 0, 7), rand(7, 2)),
        "matrix @ matrix": (rand(5, 7), rand(7, 3)),
    }


@pytest.mark.parametrize("name", list(cases()))
def test_equals_numpy_matmul(name):
    a, b = cases()[name]
    want = a @ b
    got = _blas.matmul(a, b)
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_nan_and_inf_reach_the_product_as_in_numpy():
    a, b = rand(4, 3, 5), rand(4, 5, 2)
    a[0, 1, 2], b[2, 3, 1], a[3, 0, 0] = np.nan, np.inf, -np.inf
    want = a @ b
    got = _blas.matmul(a, b)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[np.isfinite(want)], want[np.isfinite(want)], rtol=1e-6)


@pytest.fixture
def openblas_threads():
    """Set OpenBLAS's thread count for a test, and restore it."""
    pytest.importorskip("threadpoolctl")
    lib = _blas._openblas()
    if lib is None:
        pytest.skip("NumPy's BLAS is not OpenBLAS")
    before = lib.get_num_threads()
    yield lib
    lib.set_num_threads(before)


def count_parts(monkeypatch):
    """The shapes of the parts a split product is cut into (the workers' and the caller's)."""
    calls = []
    real = _blas._part

    def part(errors, a, b, out):
        calls.append(a.shape)
        return real(errors, a, b, out)
    monkeypatch.setattr(_blas, "_part", part)
    return calls


def test_a_stack_of_small_products_is_split_over_the_blas_threads(openblas_threads,
                                                                   monkeypatch):
    calls = count_parts(monkeypatch)
    openblas_threads.set_num_threads(2)
    a, b = rand(8, 4, 16, 8), rand(8, 4, 8, 16)
    got = _blas.matmul(a, b)
    assert calls == [(4, 4, 16, 8), (4, 4, 16, 8)]      # two halves: a worker's, the caller's
    np.testing.assert_array_equal(got, a @ b)          # each output is the same dot product
    assert openblas_threads.get_num_threads() == 2     # restored after the split


def test_one_blas_thread_or_large_products_are_not_split(openblas_threads, monkeypatch):
    calls = count_parts(monkeypatch)
    openblas_threads.set_num_threads(1)
    _blas.matmul(rand(8, 16, 8), rand(8, 8, 16))
    openblas_threads.set_num_threads(2)
    monkeypatch.setattr(_blas, "SPLIT_MAX_WORK", 16 * 8 * 16)
    _blas.matmul(rand(8, 16, 8), rand(8, 8, 16))
    assert calls == []


def test_the_thread_count_is_restored_when_a_product_fails(openblas_threads, monkeypatch):
    openblas_threads.set_num_threads(2)

    def fails(*args, **kwargs):
        raise MemoryError("inside a worker")
    monkeypatch.setattr(np, "matmul", fails)
    with pytest.raises(MemoryError):
        _blas.matmul(rand(4, 3, 5), rand(4, 5, 2))
    assert openblas_threads.get_num_threads() == 2


def test_the_callers_error_state_holds_in_the_workers(openblas_threads):
    openblas_threads.set_num_threads(2)
    a, b = rand(4, 3, 5), rand(4, 5, 2)
    a[0, 0, 0], b[0, 0, 0] = np.inf, 0.0        # inf * 0: invalid
    with np.errstate(invalid="raise"):
        with pytest.raises(FloatingPointError):
            a @ b
        with pytest.raises(FloatingPointError):
            _blas.matmul(a, b)


def test_without_threadpoolctl_the_product_is_numpys(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "threadpoolctl", None)
    monkeypatch.setattr(_blas, "_controller", {})
    monkeypatch.setattr(_blas, "_cache", {})
    a, b = rand(8, 4, 16, 8), rand(8, 4, 8, 16)
    np.testing.assert_array_equal(_blas.matmul(a, b), a @ b)
    assert _blas._openblas() is None
