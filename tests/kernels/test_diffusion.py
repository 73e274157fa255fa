"""kernels.diffusion: fused DDPM/DDIM steps against the reference and the paper's formulas."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.kernels import diffusion as df

numba = pytest.importorskip("numba")
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}


def _schedule(T=1000):
    betas = np.linspace(1e-4, 0.02, T)
    alphas = 1 - betas
    abar = np.cumprod(alphas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    return betas, alphas, abar, abar_prev


@settings(max_examples=25)
@given(shape=st.sampled_from([(0,), (1,), (3,), (2, 7), (5, 3, 4, 4), (3, 20000)]),
       dtype=st.sampled_from([np.float32, np.float64]), clip=st.sampled_from([None, 1.0]),
       noisy=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_numba_matches_reference(shape, dtype, clip, noisy, seed):
    _check_numba_matches_reference(shape, dtype, clip, noisy, seed)


def _check_numba_matches_reference(shape, dtype, clip, noisy, seed):
    """q_sample, ddpm_step and ddim_step on the Numba path against the reference."""
    rng = np.random.default_rng(seed)
    n = shape[0]
    x, eps, z = (rng.normal(size=shape).astype(dtype) for _ in range(3))
    c = [rng.uniform(0.1, 2.0, n) for _ in range(4)]
    sigma = rng.uniform(0, 1, n) if noisy else np.zeros(n)
    z = z if noisy else None
    tol = TOL[dtype]
    for name, args in (("q_sample", (x, eps, c[0], c[1])),
                       ("ddpm_step", (x, eps, z, *c, sigma)),
                       ("ddim_step", (x, eps, z, *c, sigma))):
        kwargs = {} if name == "q_sample" else {"clip": clip}
        ref = getattr(df, name)(*args, impl="reference", **kwargs)
        got = getattr(df, name)(*args, impl="numba", **kwargs)
        assert got.dtype == dtype and got.shape == shape
        np.testing.assert_allclose(got, ref, **tol)


@pytest.mark.parametrize("shape", [(10_000, 2), (3 * df.BLOCK // 5 + 7, 5),
                                   (3, 2 * df.BLOCK + 5)])
def test_numba_tasks_cover_every_element(shape):
    """The prange tasks' edges: short rows grouped several to a task (the last task short)
    and long rows cut into BLOCK-long pieces."""
    _check_numba_matches_reference(shape, np.float32, 1.0, True, 0)


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_ddpm_step_equals_ho_eq_11(impl):
    """With the posterior coefficients, the x0-parameterised step is Ho et al.'s eq. 11."""
    betas, alphas, abar, abar_prev = _schedule()
    rng = np.random.default_rng(0)
    t = rng.integers(1, 1000, 6)
    xt, eps, z = (rng.normal(size=(6, 3, 8, 8)) for _ in range(3))
    sigma = np.sqrt(betas[t] * (1 - abar_prev[t]) / (1 - abar[t]))
    got = df.ddpm_step(xt, eps, z, np.sqrt(1 / abar[t]), np.sqrt(1 / abar[t] - 1),
                       betas[t] * np.sqrt(abar_prev[t]) / (1 - abar[t]),
                       np.sqrt(alphas[t]) * (1 - abar_prev[t]) / (1 - abar[t]), sigma,
                       impl=impl)
    col = (lambda a: a[:, None, None, None])
    eq11 = (xt - col(betas[t] / np.sqrt(1 - abar[t])) * eps) / col(np.sqrt(alphas[t])) \
        + col(sigma) * z
    np.testing.assert_allclose(got, eq11, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_q_sample_then_ddim_recovers_x0(impl):
    """Deterministic DDIM with the true noise maps x_t back along the same trajectory:
    predicting x0 from q_sample(x0, eps) with eps gives x0, and abar_prev = 1 returns it."""
    _, _, abar, _ = _schedule()
    rng = np.random.default_rng(1)
    t = rng.integers(0, 1000, 5)
    x0, eps = rng.normal(size=(5, 40)), rng.normal(size=(5, 40))
    xt = df.q_sample(x0, eps, np.sqrt(abar[t]), np.sqrt(1 - abar[t]), impl=impl)
    np.testing.assert_allclose(xt, np.sqrt(abar[t])[:, None] * x0
                               + np.sqrt(1 - abar[t])[:, None] * eps, rtol=1e-14)
    back = df.ddim_step(xt, eps, None, np.sqrt(abar[t]), np.sqrt(1 - abar[t]), np.ones(5),
                        np.zeros(5), np.zeros(5), impl=impl)
    np.testing.assert_allclose(back, x0, rtol=1e-8, atol=1e-8)
    clipped = df.ddim_step(xt, eps, None, np.sqrt(abar[t]), np.sqrt(1 - abar[t]), np.ones(5),
                           np.zeros(5), np.zeros(5), clip=0.5, impl=impl)
    np.testing.assert_allclose(clipped, np.clip(x0, -0.5, 0.5), rtol=1e-8, atol=1e-8)



@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_ddim_clip_rederives_eps_where_it_clips(impl):
    """With clip, x0_hat is clipped and eps re-derived from it where the clip acted, so the
    direction term points at the same x_t: eps' = (x_t - sqrt(abar) x0c) / sqrt(1 - abar)."""
    _, _, abar, _ = _schedule()
    rng = np.random.default_rng(3)
    t, t_prev = rng.integers(500, 1000, 6), rng.integers(0, 400, 6)
    xt, eps = 2 * rng.normal(size=(6, 33)), rng.normal(size=(6, 33))
    sa, s1ma = np.sqrt(abar[t])[:, None], np.sqrt(1 - abar[t])[:, None]
    sap, dc = np.sqrt(abar[t_prev])[:, None], np.sqrt(1 - abar[t_prev])[:, None]
    x0 = (xt - s1ma * eps) / sa
    x0c = np.clip(x0, -1, 1)
    assert 0 < (x0c != x0).mean() < 1                   # some entries clip, some do not
    eps_c = np.where(x0c != x0, (xt - sa * x0c) / s1ma, eps)
    got = df.ddim_step(xt, eps, None, sa[:, 0], s1ma[:, 0], sap[:, 0], dc[:, 0], np.zeros(6),
                       clip=1.0, impl=impl)
    np.testing.assert_allclose(got, sap * x0c + dc * eps_c, rtol=1e-10, atol=1e-12)

def test_bad_inputs_raise():
    x = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r"q_sample: sqrt_abar must have shape \(3,\)"):
        df.q_sample(x, x, np.ones(4), np.ones(3))
    with pytest.raises(ValueError, match="q_sample: noise must have shape"):
        df.q_sample(x, np.zeros((3, 5)), np.ones(3), np.ones(3))
    with pytest.raises(ValueError, match="ddpm_step: z is None but some sigma are nonzero"):
        df.ddpm_step(x, x, None, *[np.ones(3)] * 5)
    with pytest.raises(ValueError, match="ddim_step: clip must be None or positive"):
        df.ddim_step(x, x, x, *[np.ones(3)] * 5, clip=-1.0)
    with pytest.raises(TypeError, match="q_sample: x must be a float32 or float64"):
        df.q_sample(np.zeros((3, 4), int), x, np.ones(3), np.ones(3))


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_out_may_alias_the_input(impl):
    rng = np.random.default_rng(2)
    xt, eps, z = (rng.normal(size=(4, 3000)).astype(np.float32) for _ in range(3))
    c = [rng.uniform(0.1, 2.0, 4) for _ in range(5)]
    expected = df.ddpm_step(xt, eps, z, *c, clip=1.0, impl="reference")
    buf = xt.copy()
    got = df.ddpm_step(buf, eps, z, *c, clip=1.0, impl=impl, out=buf)
    assert got is buf
    np.testing.assert_allclose(buf, expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="ddim_step: out must be a C-contiguous float32"):
        df.ddim_step(xt, eps, z, *c, out=np.empty((4, 3000)))
