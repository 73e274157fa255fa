"""The Numba CUDA kernels against their references, run under Numba's CUDA simulator.

The simulator must be switched on before numba.cuda is first imported, so a plain ``pytest``
run executes this file's ``sim_*`` tests in a subprocess with NUMBA_ENABLE_CUDASIM=1
(``test_cuda_kernels_under_simulator``); in that subprocess the simulator tests run and the
launcher skips itself.  Run them directly with
``NUMBA_ENABLE_CUDASIM=1 pytest tests/kernels/test_cuda.py``.  The simulator runs each GPU
thread as a Python thread, so sizes are tiny.
"""
import numpy as np
import pytest

from tests.helpers import run_simulator_cases, sim


def test_cuda_kernels_under_simulator():
    run_simulator_cases(__file__)


@pytest.fixture(params=[0, 1, 2])
def rng(request):
    return np.random.default_rng(request.param)


@sim
def test_sim_kde(rng):
    from minigen.kernels import kde
    n, m, d = rng.integers(1, 40), rng.integers(1, 20), rng.integers(1, 4)
    X, Q = rng.normal(size=(n, d)), 3 * rng.normal(size=(m, d))
    A = rng.normal(size=(d, d))
    chol = np.linalg.cholesky(A @ A.T + np.eye(d))
    logw = rng.normal(size=n)
    logw[0] = -np.inf
    for args in ((Q, X, chol, logw), (X, X, 0.5, logw, True), (Q + 1e4, X, chol)):
        np.testing.assert_allclose(kde.log_kernel_sum(*args, impl="cuda"),
                                   kde.log_kernel_sum(*args, impl="reference"), rtol=1e-10)
    out, grad = kde.log_kernel_sum_grad(Q, X, chol, logw, impl="cuda")
    ref_out, ref_grad = kde.log_kernel_sum_grad(Q, X, chol, logw, impl="reference")
    np.testing.assert_allclose(out, ref_out, rtol=1e-10)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-10)


@sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sim_softmax(rng, dtype):
    from minigen.kernels import softmax as sm
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == np.float64 else dict(rtol=1e-5, atol=1e-5)
    x = (rng.normal(size=(2, rng.integers(1, 4), rng.integers(1, 30))) * 30).astype(dtype)
    gy = rng.normal(size=x.shape).astype(dtype)
    for name in ("softmax", "log_softmax"):
        y = getattr(sm, name)(x, impl="reference")
        np.testing.assert_allclose(getattr(sm, name)(x, impl="cuda"), y, **tol)
        back = name + "_backward"
        np.testing.assert_allclose(getattr(sm, back)(y, gy, impl="cuda"),
                                   getattr(sm, back)(y, gy, impl="reference"), **tol)
    z = (rng.normal(size=(9, 5)) * 1e4).astype(dtype)
    t = rng.integers(0, 5, 9)
    t[::3] = -1
    g = rng.normal(size=9).astype(dtype)
    np.testing.assert_allclose(sm.cross_entropy(z, t, -1, impl="cuda"),
                               sm.cross_entropy(z, t, -1, impl="reference"), **tol)
    np.testing.assert_allclose(sm.cross_entropy_backward(z, t, g, -1, impl="cuda"),
                               sm.cross_entropy_backward(z, t, g, -1, impl="reference"), **tol)


@sim
def test_sim_conv(rng):
    from minigen.kernels import conv
    x = rng.normal(size=(2, 2, rng.integers(3, 7), rng.integers(3, 7)))
    w = rng.normal(size=(3, 2, 3, 2))
    geo = (tuple(rng.integers(1, 3, 2)), tuple(rng.integers(0, 2, 2)), tuple(rng.integers(1, 3, 2)))
    y = conv.conv2d(x, w, *geo, impl="reference")
    np.testing.assert_allclose(conv.conv2d(x, w, *geo, impl="cuda"), y, rtol=1e-12)
    gy = rng.normal(size=y.shape)
    np.testing.assert_allclose(conv.conv2d_input_grad(gy, w, x.shape, *geo, impl="cuda"),
                               conv.conv2d_input_grad(gy, w, x.shape, *geo, impl="reference"),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl="cuda"),
                               conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl="reference"),
                               rtol=1e-12)


@sim
def test_sim_diffusion(rng):
    from minigen.kernels import diffusion as df
    shape = (3, 2, rng.integers(1, 6))
    x, eps, z = (rng.normal(size=shape) for _ in range(3))
    c = [rng.uniform(0.1, 2, 3) for _ in range(5)]
    cases = (("q_sample", (x, eps, c[0], c[1]), {}),
             ("ddpm_step", (x, eps, z, *c), {"clip": 0.5}),
             ("ddim_step", (x, eps, None, *c[:4], np.zeros(3)), {"clip": None}),
             ("ddim_step", (x, eps, z, *c), {"clip": 0.5}))
    for name, args, kwargs in cases:
        np.testing.assert_allclose(getattr(df, name)(*args, impl="cuda", **kwargs),
                                   getattr(df, name)(*args, impl="reference", **kwargs),
                                   rtol=1e-12)


@sim
@pytest.mark.filterwarnings("ignore::RuntimeWarning")          # NumPy's invalid-value notes
def test_sim_nonfinite_and_empty():
    """NaN, +-inf and empty inputs through every CUDA kernel, against the reference (the
    cases of tests/kernels/test_nonfinite.py at simulator sizes)."""
    from tests.kernels.test_nonfinite import assert_same, cases
    failed = []
    for name, (fn, dtype) in sorted(cases(small=True).items()):
        try:
            assert_same(fn("cuda"), fn("reference"), dtype)
        except AssertionError as e:
            failed.append(f"{name}: {e}")
    assert not failed, "\n".join(failed)


@sim
def test_sim_masked_softmax(rng):
    from minigen.kernels import softmax as sm
    t = int(rng.integers(1, 6))
    x = (rng.normal(size=(2, 2, t, t)) * 30)
    x[0, 0, 0, 0] = np.nan
    causal = np.triu(np.ones((t, t), bool), 1)[None, None]
    pad = rng.random((2, 1, 1, t)) < 0.5
    pad[1] = True
    for mask in (causal, pad, causal | pad):
        ref = sm.masked_softmax(x, mask, impl="reference")
        got = sm.masked_softmax(x, mask, impl="cuda")
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-12,
                                   atol=1e-15)


@sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sim_index_add_rows(rng, dtype):
    """Atomic adds in the order the threads run: equal to add.at within the rounding of a
    row's n adds; NaN and inf land where add.at puts them."""
    from minigen.kernels import scatter
    V, n, D = 5, int(rng.integers(2, 12)), int(rng.integers(1, 4))
    out = rng.normal(size=(V, D)).astype(dtype)
    index = rng.integers(0, V, n)
    index[0] = index[-1]
    values = rng.normal(size=(n, D)).astype(dtype)
    values[1, 0], values[-1, -1] = np.nan, np.inf
    expected = out.copy()
    np.add.at(expected, index, values)
    got = out.copy()
    scatter.index_add_rows(got, index, values, impl="cuda")
    scale = np.abs(out).copy()
    np.add.at(scale, index, np.abs(np.where(np.isfinite(values), values, 0)))
    ok = np.isfinite(expected)
    np.testing.assert_array_equal(got[~ok], expected[~ok])       # NaN and inf where add.at's
    assert np.all(np.abs(got[ok] - expected[ok]) <= n * np.finfo(dtype).eps * scale[ok])
    empty = out.copy()
    scatter.index_add_rows(empty, index[:0], values[:0], impl="cuda")
    np.testing.assert_array_equal(empty, out)
