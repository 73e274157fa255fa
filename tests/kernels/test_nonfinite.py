"""Every kernel against its reference on NaN, +-inf and empty inputs.

The fast paths must not hide NaN: the training loop's NaN stop depends on it reaching the
loss.  ``CASES`` is shared with tests/kernels/test_cuda.py, which runs it on the CUDA kernels
under the simulator; here it runs on the Numba CPU kernels.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from minigen.kernels import conv, diffusion, kde, softmax

numba = pytest.importorskip("numba")
TOL = {np.float64: dict(rtol=1e-9, atol=1e-12), np.float32: dict(rtol=1e-4, atol=1e-5)}


def _poison(a, rng, values=(np.nan, np.inf, -np.inf)):
    """a copy of a with one NaN, one +inf and one -inf at random places (a.size >= 3)."""
    a = a.copy()
    flat = a.reshape(-1)
    for v, i in zip(values, rng.choice(flat.size, len(values), replace=False)):
        flat[i] = v
    return a


def _softmax_cases(rng, dtype, K):
    x = rng.normal(size=(6, K)).astype(dtype) * 3
    x[0, 1], x[1, 0], x[2, 2] = np.nan, np.inf, -np.inf           # one of each in a row
    x[3] = -np.inf                                                 # a whole row of -inf
    x[4] = np.nan
    y = softmax.softmax(x, impl="reference")
    gy = _poison(rng.normal(size=x.shape).astype(dtype), rng)
    t = rng.integers(0, K, 6)
    g = rng.normal(size=6).astype(dtype)
    g[5] = np.nan
    empty = np.zeros((0, K), dtype)
    mask = rng.random(x.shape) < 0.3             # NaN, inf or every entry masked, per row
    mask[0, 1] = mask[2, 2] = True
    mask[5] = True
    return {
        "softmax": lambda impl: softmax.softmax(x, impl=impl),
        "log_softmax": lambda impl: softmax.log_softmax(x, impl=impl),
        "softmax_backward": lambda impl: softmax.softmax_backward(y, gy, impl=impl),
        "log_softmax_backward": lambda impl: softmax.log_softmax_backward(x, gy, impl=impl),
        "cross_entropy": lambda impl: softmax.cross_entropy(x, t, impl=impl),
        "cross_entropy_ignore": lambda impl: softmax.cross_entropy(x, np.where(t > K // 2, -1, t),
                                                                    -1, impl=impl),
        "cross_entropy_backward": lambda impl: softmax.cross_entropy_backward(x, t, g, impl=impl),
        "cross_entropy_backward_ignore": lambda impl: softmax.cross_entropy_backward(
            x, np.where(t > K // 2, -1, t), g, -1, impl=impl),
        "masked_softmax": lambda impl: softmax.masked_softmax(x, mask, impl=impl),
        "masked_softmax_empty": lambda impl: softmax.masked_softmax(empty, mask[0], impl=impl),
        "softmax_empty": lambda impl: softmax.softmax(empty, impl=impl),
        "cross_entropy_empty": lambda impl: softmax.cross_entropy(empty, t[:0], impl=impl),
    }


def _kde_cases(rng, n):
    X, Q = rng.normal(size=(n, 2)), rng.normal(size=(7, 2))
    logw = rng.normal(size=n) - np.log(n)
    Qbad = Q.copy()
    Qbad[0, 0], Qbad[1, 1], Qbad[2, 0] = np.nan, np.inf, -np.inf
    cases = {
        "kde_nan_inf_queries": (Qbad, X, 0.5, logw),
        "kde_nan_data": (Q, _poison(X, rng, (np.nan,)), 0.5, logw),
        "kde_inf_data": (Q, _poison(X, rng, (np.inf,)), 0.5, logw),
        "kde_d0": (Q[:, :0], X[:, :0], None, logw),
        "kde_empty_queries": (Q[:0], X, 0.5, logw),
        "kde_empty_data": (Q, X[:0], 0.5, None),
        "kde_all_minus_inf_weights": (Q, X, 0.5, np.full(n, -np.inf)),
    }
    for name, value in (("nan", np.nan), ("posinf", np.inf), ("neginf", -np.inf)):
        for where, idx in (("first", [0]), ("two", [1, n - 1])):
            lw = logw.copy()
            lw[idx] = value
            cases[f"kde_{name}_weight_{where}"] = (Q, X, 0.5, lw)
    out = {}
    for name, args in cases.items():
        out[name] = (lambda a: lambda impl: kde.log_kernel_sum(*a, impl=impl))(args)
        if args[0].shape[0]:
            out[name + "_grad"] = (lambda a: lambda impl: kde.log_kernel_sum_grad(*a, impl=impl)
                                   )(args)
    Xbad = _poison(X, rng)
    out["kde_leave_one_out"] = lambda impl: kde.log_kernel_sum(Xbad, Xbad, 0.5, exclude_self=True,
                                                                impl=impl)
    return out


def _diffusion_cases(rng, dtype, F):
    shape = (4, F)
    x, eps, z = (_poison(rng.normal(size=shape).astype(dtype), rng) for _ in range(3))
    c = [rng.uniform(0.1, 2, 4) for _ in range(5)]
    c[0][3] = np.nan
    c[1][2] = np.inf
    zero = np.zeros(4)
    return {
        "q_sample": lambda impl: diffusion.q_sample(x, eps, c[0], c[1], impl=impl),
        "ddpm_step": lambda impl: diffusion.ddpm_step(x, eps, z, *c, impl=impl),
        "ddpm_step_clip": lambda impl: diffusion.ddpm_step(x, eps, z, *c, clip=1.0, impl=impl),
        "ddpm_step_no_z": lambda impl: diffusion.ddpm_step(x, eps, None, *c[:4], zero, impl=impl),
        "ddim_step": lambda impl: diffusion.ddim_step(x, eps, None, *c[:4], zero, impl=impl),
        "ddim_step_clip": lambda impl: diffusion.ddim_step(x, eps, z, *c, clip=0.5, impl=impl),
        "q_sample_empty": lambda impl: diffusion.q_sample(x[:0], eps[:0], c[0][:0], c[1][:0],
                                                          impl=impl),
    }


def _conv_cases(rng, dtype):
    x = _poison(rng.normal(size=(2, 2, 5, 6)).astype(dtype), rng)
    w = _poison(rng.normal(size=(3, 2, 3, 3)).astype(dtype), rng, (np.nan,))
    geo = ((2, 1), (1, 1), (1, 1))
    gy = _poison(rng.normal(size=conv.conv2d(x, w, *geo, impl="reference").shape)
                 .astype(dtype), rng)
    return {
        "conv2d": lambda impl: conv.conv2d(x, w, *geo, impl=impl),
        "conv2d_input_grad": lambda impl: conv.conv2d_input_grad(gy, w, x.shape, *geo, impl=impl),
        "conv2d_weight_grad": lambda impl: conv.conv2d_weight_grad(x, gy, w.shape, *geo,
                                                                    impl=impl),
        "conv2d_empty_batch": lambda impl: conv.conv2d(x[:0], w, *geo, impl=impl),
    }


def cases(small):
    """{name: (fn(impl) -> array or tuple of arrays, dtype)}; ``small`` for the simulator."""
    rng = np.random.default_rng(0)
    out = {}
    for dtype in (np.float64, np.float32):
        tag = np.dtype(dtype).name
        groups = [_softmax_cases(rng, dtype, 7 if small else 700),
                  _diffusion_cases(rng, dtype, 5 if small else 20_000),
                  _conv_cases(rng, dtype)]
        if dtype == np.float64:
            groups.append(_kde_cases(rng, 9 if small else 1300))   # KDE computes in float64
        for group in groups:
            out.update({f"{name}[{tag}]": (fn, dtype) for name, fn in group.items()})
    return out


def assert_same(got, ref, dtype):
    """Same NaN and inf positions (and signs), finite values within the dtype's tolerance."""
    got, ref = (got, ref) if isinstance(ref, tuple) else ((got,), (ref,))
    for a, b in zip(got, ref):
        assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(b))
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(b))
        scale = max(1.0, float(np.abs(b[np.isfinite(b)]).max(initial=0)))
        np.testing.assert_allclose(a, b, rtol=TOL[dtype]["rtol"], atol=TOL[dtype]["atol"] * scale)


CPU_CASES = cases(small=False)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")          # NumPy's invalid-value notes
@pytest.mark.parametrize("name", sorted(CPU_CASES))
def test_numba_matches_reference_on_nonfinite_and_empty(name):
    fn, dtype = CPU_CASES[name]
    assert_same(fn("numba"), fn("reference"), dtype)


def test_softmax_of_a_large_nan_row_stays_nan():
    """A large input takes the Numba path, whose fast-math max must not skip the NaN."""
    x = np.random.default_rng(1).normal(size=(4, 40_000)).astype(np.float32)
    x[0, 123] = np.nan
    y = softmax.softmax(x)
    assert np.isnan(y[0]).all() and np.isfinite(y[1:]).all()


def test_kde_d0_is_log_n():
    """No dimensions: every kernel value is 1, so out_i = log n (the reference's answer)."""
    Q, X = np.zeros((3, 0)), np.zeros((50, 0))
    np.testing.assert_allclose(kde.log_kernel_sum(Q, X, impl="numba"), np.log(50))


@pytest.mark.parametrize("shift", [1, -1, 7])
def test_outputs_partly_overlapping_inputs(shift):
    """out = x shifted by a few elements: x must be read before it is
    overwritten, so the kernel copies an input that partly overlaps out."""
    rng = np.random.default_rng(2)
    n, F = 3, 30_000
    base = rng.normal(size=n * F + abs(shift))
    lo, hi = (0, shift) if shift > 0 else (-shift, 0)
    noise, eps, z = (rng.normal(size=(n, F)) for _ in range(3))
    c = [rng.uniform(0.1, 1, n) for _ in range(5)]
    for name, rest in (("q_sample", (noise, c[0], c[1])), ("ddpm_step", (eps, z, *c)),
                       ("ddim_step", (eps, z, *c))):
        buf = base.copy()
        x = buf[lo:lo + n * F].reshape(n, F)
        ref = getattr(diffusion, name)(x, *rest, impl="reference")
        out = buf[hi:hi + n * F].reshape(n, F)
        getattr(diffusion, name)(x, *rest, impl="numba", out=out)
        np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12, err_msg=name)


def test_softmax_backward_dtype_follows_the_reference():
    y = np.full((300, 200), 1 / 200, np.float32)
    gy = np.random.default_rng(3).normal(size=y.shape)
    for name in ("softmax_backward", "log_softmax_backward"):
        ref = getattr(softmax, name)(y, gy, impl="reference")
        got = getattr(softmax, name)(y, gy, impl="numba")
        assert got.dtype == ref.dtype == np.float64
        np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-9)


def test_no_numba_ir_warning_reaches_the_user(tmp_path):
    """Compiling the kernels in a fresh cache raises no warning (Numba's
    NumbaIRAssumptionWarning about our inlined helpers, e.g. in cross_entropy_backward, is
    filtered by ``_dispatch``; a user's own code still sees it)."""
    code = ("import numpy as np\n"
            "from minigen.kernels import kde, softmax as sm, diffusion as df\n"
            "x = np.ones((300, 300), np.float32)\n"
            "t, g = np.zeros(300, int), np.ones(300, np.float32)\n"
            "sm.cross_entropy_backward(x, t, g, impl='numba')\n"
            "sm.cross_entropy(x, t, impl='numba')\n"
            "sm.softmax(x, impl='numba'); sm.log_softmax(x, impl='numba')\n"
            "sm.log_softmax_backward(x, x, impl='numba'); sm.softmax_backward(x, x, impl='numba')\n"
            "kde.log_kernel_sum_grad(x[:, :3], x[:, :3], impl='numba')\n"
            "df.ddim_step(x, x, x, *np.ones((5, 300)), clip=1.0, impl='numba')\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    done = subprocess.run([sys.executable, "-W", "error", "-c", code], env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
