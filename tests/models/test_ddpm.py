"""minigen.models.diffusion: the forward process, the posterior and the samplers against
independent derivations (Ho et al. 2020; Song et al. 2021), and a training smoke test."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen import Tensor
from minigen.data import load_digits, make_toy
from minigen.metrics import mmd2
from minigen.models import DDPM, NoiseSchedule, TimeMLP, TinyUNet, timestep_embedding
from minigen.models.diffusion.schedule import reference_ddim_step, reference_p_step
from minigen.nn import Linear, Module, init
from minigen.train import train

Z = 4.0   # tolerance in standard errors for every statistical assertion
betas_st = st.lists(st.floats(1e-4, 0.4), min_size=1, max_size=40).map(NoiseSchedule.from_betas)
kinds = st.sampled_from(["linear", "cosine", "sigmoid"])


# --- schedules ----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
def test_default_schedules_decrease_to_near_zero(kind):
    s = NoiseSchedule(kind=kind)
    assert s.T == 1000 and np.all(np.diff(s.alpha_bars) < 0) and s.alpha_bars[0] < 1
    assert s.alpha_bars[-1] < 1e-3 and np.all(s.betas > 0) and np.all(s.betas <= 0.999)
    np.testing.assert_allclose(s.alpha_bars, np.cumprod(1 - s.betas), rtol=1e-12)


def test_cosine_schedule_follows_nichol_dhariwal():
    s = NoiseSchedule(T=50, kind="cosine")
    f = lambda t: np.cos((t / 50 + 0.008) / 1.008 * np.pi / 2) ** 2
    np.testing.assert_allclose(s.alpha_bars[:40], f(np.arange(1, 41)) / f(0), rtol=1e-10)


@settings(max_examples=25)
@given(s=betas_st)
def test_random_schedules_strictly_decrease(s):
    assert np.all(np.diff(np.append(1.0, s.alpha_bars)) < 0)


# --- forward process ----------------------------------------------------------------------
@settings(max_examples=25)
@given(s=betas_st, data=st.data())
def test_composed_steps_give_the_closed_form_exactly(s, data):
    """q_step and q_sample are affine in (x, noise): push mean coefficient m and variance v
    through t+1 transitions, m <- a m, v <- a^2 v + b^2, and compare with q_sample's."""
    t = data.draw(st.integers(0, s.T - 1))
    one, zero = np.ones((1, 1)), np.zeros((1, 1))
    m, v = 1.0, 0.0
    for k in range(t + 1):
        a, b = s.q_step(one, k, zero)[0, 0], s.q_step(zero, k, one)[0, 0]
        m, v = a * m, a * a * v + b * b
    np.testing.assert_allclose(m, s.q_sample(one, t, zero)[0, 0], rtol=1e-12)
    np.testing.assert_allclose(v, s.q_sample(zero, t, one)[0, 0] ** 2, rtol=1e-12)
    np.testing.assert_allclose([m, v], [np.sqrt(s.alpha_bars[t]), 1 - s.alpha_bars[t]],
                               rtol=1e-12)


@settings(max_examples=10)
@given(kind=kinds, t=st.sampled_from([0, 10, 99, 500, 999]), seed=st.integers(0, 2 ** 16))
def test_sampled_chains_match_the_closed_form(kind, t, seed):
    """x_t from t+1 sampled transitions, standardised by the closed form, is N(0, 1)."""
    s, rng, n = NoiseSchedule(kind=kind), np.random.default_rng(seed), 20000
    x0 = make_toy("mixture_1d", n, rng=rng)
    x = x0
    for k in range(t + 1):
        x = s.q_step(x, k, rng.standard_normal(x.shape))
    r = (x - np.sqrt(s.alpha_bars[t]) * x0) / np.sqrt(1 - s.alpha_bars[t])
    assert abs(r.mean()) < Z / np.sqrt(n)
    assert abs(r.var() - 1) < Z * np.sqrt(2 / n)
    closed = s.q_sample(x0, t, rng.standard_normal(x0.shape))
    assert abs(x.mean() - closed.mean()) < Z * np.sqrt(2 * x.var() / n)


@settings(max_examples=25)
@given(s=betas_st, data=st.data())
def test_posterior_is_bayes_rule(s, data):
    """q(x_{t-1}|x_t, x0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x0): precisions add, means weight."""
    t = data.draw(st.integers(0, s.T - 1))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    x0, xt = rng.normal(size=(5, 3)), rng.normal(size=(5, 3))
    mean, var = s.q_posterior(x0, xt, t)
    if t == 0:      # x_{-1} is the data itself
        np.testing.assert_allclose(mean, x0, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(var, 0, atol=1e-15)
        return
    ab_prev, alpha, beta = np.prod(1 - s.betas[:t]), 1 - s.betas[t], s.betas[t]
    precision = 1 / (1 - ab_prev) + alpha / beta
    expected = (np.sqrt(ab_prev) * x0 / (1 - ab_prev) + np.sqrt(alpha) * xt / beta) / precision
    np.testing.assert_allclose(mean, expected, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(var, 1 / precision, rtol=1e-9)


@settings(max_examples=25)
@given(s=betas_st, data=st.data(), variance=st.sampled_from(["fixed_small", "fixed_large"]))
def test_p_step_is_equation_11(s, data, variance):
    t = data.draw(st.integers(0, s.T - 1))
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    xt, eps, z = (rng.normal(size=(4, 2)) for _ in range(3))
    beta, ab = s.betas[t], s.alpha_bars[t]
    var = beta * (1 - s.alpha_bars[t - 1]) / (1 - ab) if variance == "fixed_small" else beta
    sigma = np.sqrt(var) if t > 0 else 0.0
    expected = (xt - beta / np.sqrt(1 - ab) * eps) / np.sqrt(1 - beta) + sigma * z
    np.testing.assert_allclose(s.p_step(xt, t, eps, z, variance), expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(reference_p_step(s, xt, np.full(4, t), eps, z, variance), expected,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_fused_p_step_matches_the_numpy_reference(impl, variance, monkeypatch):
    """The fused kernel (forced with MINIGEN_KERNELS) against reference_p_step, eq. 11 in
    NumPy, at mixed timesteps including t = 0 (no noise)."""
    if impl == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("MINIGEN_KERNELS", impl)
    s, rng = NoiseSchedule(T=50, kind="cosine"), np.random.default_rng(5)
    t = np.array([0, 1, 17, 49])
    xt, eps, z = (rng.normal(size=(4, 3, 5)) for _ in range(3))
    np.testing.assert_allclose(s.p_step(xt, t, eps, z, variance),
                               reference_p_step(s, xt, t, eps, z, variance),
                               rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_fused_ddim_step_matches_the_numpy_reference(impl, eta, monkeypatch):
    """The fused kernel against reference_ddim_step (Song et al. eq. 12), t_prev = -1
    included (abar_prev = 1)."""
    if impl == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("MINIGEN_KERNELS", impl)
    s, rng = NoiseSchedule(T=50), np.random.default_rng(6)
    t, t_prev = np.array([3, 10, 30, 49]), np.array([-1, 4, 29, 0])
    xt, eps, z = (rng.normal(size=(4, 7)) for _ in range(3))
    np.testing.assert_allclose(s.ddim_step(xt, t, t_prev, eps, z, eta),
                               reference_ddim_step(s, xt, t, t_prev, eps, z, eta),
                               rtol=1e-10, atol=1e-12)


def test_p_step_clips_the_data_estimate():
    s = NoiseSchedule(T=100)
    xt, eps, t = np.array([[3.0, -0.2]]), np.array([[-2.0, 0.1]]), 40
    x0_hat = np.clip((xt - np.sqrt(1 - s.alpha_bars[t]) * eps) / np.sqrt(s.alpha_bars[t]), -1, 1)
    mean, _ = s.q_posterior(x0_hat, xt, t)
    np.testing.assert_allclose(s.p_step(xt, t, eps, np.zeros_like(xt), clip=1.0), mean,
                               rtol=1e-12)


def test_ddim_step_with_clip_rederives_eps_from_the_clipped_estimate():
    s = NoiseSchedule(T=100)
    xt, eps, t, t_prev = np.array([[3.0, -0.2]]), np.array([[-2.0, 0.1]]), 60, 30
    ab, abp = s.alpha_bars[t], s.alpha_bars[t_prev]
    x0_hat = np.clip((xt - np.sqrt(1 - ab) * eps) / np.sqrt(ab), -1, 1)
    eps_hat = (xt - np.sqrt(ab) * x0_hat) / np.sqrt(1 - ab)
    expected = np.sqrt(abp) * x0_hat + np.sqrt(1 - abp) * eps_hat
    np.testing.assert_allclose(s.ddim_step(xt, t, t_prev, eps, None, clip=1.0), expected,
                               rtol=1e-12)
    np.testing.assert_allclose(s.ddim_step(xt, t, t_prev, eps, None, clip=1e9),
                               s.ddim_step(xt, t, t_prev, eps, None), rtol=1e-12)


# --- the samplers driven by the analytic eps for N(mu, s^2) data ---------------------------
def gaussian_eps(schedule, mu, sd):
    """E[eps | x_t] = sqrt(1 - abar)(x_t - sqrt(abar) mu) / (abar sd^2 + 1 - abar)."""
    def eps_fn(x, t):
        ab = schedule.alpha_bars[t][:, None]
        return np.sqrt(1 - ab) * (x - np.sqrt(ab) * mu) / (ab * sd ** 2 + 1 - ab)
    return eps_fn


def exact_output(s, mu, sd, sampler, steps=None, eta=0.0):
    """Mean and std of the sampler's output, by the exact linear-Gaussian recursion
    m <- A m + B, v <- A^2 v + sigma^2 from x_T ~ N(0, 1), written from eq. 11 (DDPM) and
    eq. 12 (DDIM) independently of the implementation."""
    ab, m, v = s.alpha_bars, 0.0, 1.0
    ts = list(range(s.T)) if sampler != "ddim" else list(s.ddim_timesteps(steps or s.T))
    for i in range(len(ts) - 1, -1, -1):
        t = ts[i]
        k = np.sqrt(1 - ab[t]) / (ab[t] * sd ** 2 + 1 - ab[t])      # eps = k (x - sqrt(ab) mu)
        if sampler == "ddim":
            abp = ab[ts[i - 1]] if i > 0 else 1.0
            var = eta ** 2 * (1 - abp) / (1 - ab[t]) * (1 - ab[t] / abp)
            ce = np.sqrt(1 - abp - var) - np.sqrt(abp * (1 - ab[t]) / ab[t])
            A, B = np.sqrt(abp / ab[t]) + ce * k, -ce * k * np.sqrt(ab[t]) * mu
        else:
            c = s.betas[t] / np.sqrt(1 - ab[t])
            A, B = (1 - c * k) / np.sqrt(s.alphas[t]), c * k * np.sqrt(ab[t]) * mu / np.sqrt(
                s.alphas[t])
            var = 0.0 if t == 0 else s.betas[t] * (
                (1 - ab[t - 1]) / (1 - ab[t]) if sampler == "fixed_small" else 1.0)
        m, v = A * m + B, A * A * v + var
    return m, np.sqrt(v)


SAMPLERS = {"fixed_small": dict(variance="fixed_small"),
            "fixed_large": dict(variance="fixed_large"), "ddim": dict(eta=0.0), "ddim50": dict(steps=50), "ddim50_eta1": dict(steps=50, eta=1.0)}


@settings(max_examples=12)
@given(kind=kinds, mu=st.floats(-2, 2), sd=st.floats(0.25, 2.0),
       name=st.sampled_from(sorted(SAMPLERS)), seed=st.integers(0, 2 ** 16))
def test_samplers_match_the_exact_gaussian_recursion(kind, mu, sd, name, seed):
    s = NoiseSchedule(kind=kind)
    kw = SAMPLERS[name]
    x = DDPM(None, s, shape=(4,)).sample(5000, eps_fn=gaussian_eps(s, mu, sd), rng=seed, **kw)
    m, sdev = exact_output(s, mu, sd, "ddim" if "ddim" in name else name, kw.get("steps"),
                           kw.get("eta", 0.0))
    n = x.size   # the 4 dimensions are independent draws
    assert abs(x.mean() - m) < Z * sdev / np.sqrt(n)
    assert abs(x.std() - sdev) < Z * sdev / np.sqrt(2 * n)


@pytest.mark.parametrize("kind", ["linear", "cosine", "sigmoid"])
@pytest.mark.parametrize("mu,sd", [(0.0, 1.0), (1.5, 0.5), (-2.0, 2.0), (0.5, 0.3)])
def test_sampler_biases_are_the_known_small_ones(kind, mu, sd):
    """fixed_large is unbiased to within one standard error of 20,000 draws. DDIM (eta=0, all
    steps) is a deterministic flow that maps q(x_T) = N(sqrt(abar_T) mu, abar_T sd^2 + 1 - abar_T)
    affinely onto N(mu, sd^2); started from N(0, 1) instead, its mean is off by the prior's
    mismatch carried through that map, -sd sqrt(abar_T) mu / sqrt(abar_T sd^2 + 1 - abar_T)
    (up to 1.3% of sd for the linear schedule), and by less than one standard error besides.
    fixed_small (sigma^2 = beta~ < beta) under-disperses, but by less than 4 standard errors of
    the std of 20,000 draws (1.25% at most here), which is why the recursion, not the data's
    moments, is the reference in the sampler tests."""
    s = NoiseSchedule(kind=kind)
    se_mean, se_std = sd / np.sqrt(20000), sd / np.sqrt(40000)
    m, v = exact_output(s, mu, sd, "fixed_large")
    assert abs(m - mu) < se_mean and abs(v - sd) < se_std
    m, v = exact_output(s, mu, sd, "ddim")
    ab_T = s.alpha_bars[-1]
    prior_shift = -sd * np.sqrt(ab_T) * mu / np.sqrt(ab_T * sd ** 2 + 1 - ab_T)
    assert abs(m - mu - prior_shift) < se_mean and abs(v - sd) < se_std
    m, v = exact_output(s, mu, sd, "fixed_small")
    assert abs(m - mu) < se_mean and -Z * se_std < v - sd < 0


def test_ddim_with_eta_one_over_all_steps_is_ddpm_fixed_small():
    s = NoiseSchedule(T=200)
    model, eps_fn = DDPM(None, s, shape=(3,)), gaussian_eps(s, 0.7, 1.3)
    a = model.sample(50, eps_fn=eps_fn, rng=3, variance="fixed_small")
    b = model.sample(50, eps_fn=eps_fn, rng=3, steps=200, eta=1.0)
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


def test_the_default_sampler_is_algorithm_2_with_the_posterior_variance():
    s = NoiseSchedule(T=50)
    model, eps_fn = DDPM(None, s, shape=(2,)), gaussian_eps(s, 0.3, 0.8)
    x = model.sample(64, rng=3, eps_fn=eps_fn)
    np.testing.assert_array_equal(x, model.sample(64, rng=3, eps_fn=eps_fn,
                                                  variance="fixed_small"))
    large = model.sample(64, rng=3, eps_fn=eps_fn, variance="fixed_large")
    assert not np.allclose(x, large, rtol=1e-6, atol=1e-6)      # same noise, larger sigma_t


def vlb_with_the_exact_denoiser(betas, x0, variance):
    """Ho et al. eq. 5 when eps_hat recovers x0 exactly, so that the means of q(x_{t-1}|x_t, x0)
    and p(x_{t-1}|x_t) coincide and every term is a closed form:
        L_T = KL(N(sqrt(abar_T) x0, (1 - abar_T) I) || N(0, I))
            = 1/2 [abar_T |x0|^2 - d abar_T - d log(1 - abar_T)],
        L_{t-1} = d/2 [log(s_t^2 / beta~_t) + beta~_t / s_t^2 - 1],  s_t^2 = beta_t or beta~_t,
        L_0 = d/2 log(2 pi s_0^2),  s_0^2 = beta_0 ('fixed_large') or beta~_1 ('fixed_small').
    Returns (bound, L_T)."""
    ab = np.cumprod(1 - betas)
    ab_prev = np.append(1.0, ab[:-1])
    tilde = betas * (1 - ab_prev) / (1 - ab)
    d, T = x0.size, len(betas)
    L_T = 0.5 * (ab[-1] * np.sum(x0 ** 2) - d * ab[-1] - d * np.log(1 - ab[-1]))
    var_p = betas if variance == "fixed_large" else tilde
    steps = 0.5 * d * np.sum(np.log(var_p[1:] / tilde[1:]) + tilde[1:] / var_p[1:] - 1)
    L_0 = 0.5 * d * np.log(2 * np.pi * (betas[0] if variance == "fixed_large" else tilde[1]))
    return -(L_T + steps + L_0), L_T


@pytest.mark.parametrize("variance", ["fixed_large", "fixed_small"])
def test_log_prob_is_the_closed_form_bound_with_the_exact_denoiser(variance):
    """A 6-step schedule leaves the prior term L_T large (several nats), and the two variances'
    bounds differ by more than a nat, so a missing term or an ignored ``variance`` shows."""
    betas = np.array([0.02, 0.05, 0.1, 0.15, 0.2, 0.25])
    s = NoiseSchedule.from_betas(betas)
    model = DDPM(None, s, shape=(3,))
    for x0 in ([[1.5, -2.0, 0.5]], [[-1.0, 0.3, 2.5]], [[4.0, 1.0, -3.0]]):
        x0 = np.array(x0)

        def exact_eps(x, t):
            ab = s.alpha_bars[t][:, None]
            return (x - np.sqrt(ab) * x0) / np.sqrt(1 - ab)

        expected, L_T = vlb_with_the_exact_denoiser(betas, x0, variance)
        other, _ = vlb_with_the_exact_denoiser(
            betas, x0, "fixed_small" if variance == "fixed_large" else "fixed_large")
        assert L_T > 1 and abs(expected - other) > 1
        kw = dict(eps_fn=exact_eps, variance=variance, rng=0)
        bound = model.log_prob(x0, **kw)
        np.testing.assert_allclose(bound, [expected], rtol=1e-9)
        np.testing.assert_allclose(model.score_samples(x0, **kw), bound, rtol=1e-12)
        assert model.score(x0, **kw) == pytest.approx(bound.mean(), rel=1e-12)


def test_trajectory_runs_from_noise_to_the_samples():
    s = NoiseSchedule(T=100)
    x, path = DDPM(None, s, shape=(2,)).sample(7, steps=10, eps_fn=gaussian_eps(s, 0, 1),
                                               return_trajectory=True, rng=0)
    assert path.shape == (11, 7, 2) and np.array_equal(path[-1], x)
    np.testing.assert_array_equal(path[0], np.random.default_rng(0).standard_normal((7, 2)))


def test_log_prob_bound_is_tight_for_standard_normal_data():
    """With the exact eps and fixed_large, p equals q's reverse chain for N(0, 1) data, so the
    bound's expectation is log N(x; 0, 1); for other data it stays below the truth."""
    s, rng = NoiseSchedule(T=200), np.random.default_rng(0)
    x = rng.standard_normal((2000, 1))
    bound = DDPM(None, s, shape=(1,)).log_prob(x, eps_fn=gaussian_eps(s, 0, 1), rng=1)
    true = -0.5 * x[:, 0] ** 2 - 0.5 * np.log(2 * np.pi)
    gap = true - bound
    assert abs(gap.mean()) < Z * gap.std() / np.sqrt(len(x))
    y = 1.0 + 0.5 * rng.standard_normal((2000, 1))
    bound = DDPM(None, s).log_prob(y, eps_fn=gaussian_eps(s, 1.0, 0.5), rng=1)
    gap = (-0.5 * ((y[:, 0] - 1) / 0.5) ** 2 - np.log(0.5 * np.sqrt(2 * np.pi))) - bound
    assert gap.mean() > -Z * gap.std() / np.sqrt(len(y))


# --- prediction types, denoisers, training ------------------------------------------------
class Oracle(Module):
    """Returns the exact target for x_t = sqrt(abar) x0 + sqrt(1 - abar) eps, given x0."""

    def __init__(self, schedule, x0, prediction):
        super().__init__()
        self.s, self.x0, self.prediction = schedule, x0, prediction
        self.w = Linear(1, 1, rng=0)     # a parameter, so the model has a dtype

    def forward(self, x, t):
        ab = self.s.alpha_bars[t][:, None]
        eps = (x.data - np.sqrt(ab) * self.x0) / np.sqrt(1 - ab)
        out = {"eps": eps, "x0": self.x0, "v": np.sqrt(ab) * eps - np.sqrt(1 - ab) * self.x0}
        return Tensor(out[self.prediction].astype(x.dtype)) + 0 * self.w.weight.sum()


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_prediction_types_train_and_convert_to_eps(prediction):
    s, rng = NoiseSchedule(T=100), np.random.default_rng(0)
    x0 = rng.normal(size=(64, 3)).astype(np.float32)
    model = DDPM(Oracle(s, x0, prediction), s, prediction=prediction, rng=0)
    assert model.loss(x0).item() < 1e-8
    t, eps = rng.integers(0, 100, 64), rng.normal(size=(64, 3)).astype(np.float32)
    np.testing.assert_allclose(model.predict_eps(s.q_sample(x0, t, eps), t), eps,
                               rtol=1e-3, atol=2e-3)
    zero = DDPM(Oracle(s, 0 * x0, "x0"), s, prediction="eps", rng=0)
    assert zero.loss(x0).item() > 0.5       # predicting eps = 0 costs E[eps^2] = 1


@pytest.mark.parametrize("net,shape", [(lambda: TimeMLP(3, hidden=16, rng=0), (6, 3)),
                                       (lambda: TinyUNet(1, channels=4, rng=0), (6, 1, 8, 8))])
def test_denoisers_embed_equal_and_mixed_timesteps_alike(net, shape):
    f, x = net().double(), np.random.default_rng(0).normal(size=shape)
    for p in f.parameters():     # TinyUNet's zero-initialised output layer would hide t
        init.normal_(p, std=0.3, rng=1)
    mixed = f(Tensor(x), np.array([5, 5, 5, 900, 900, 900])).numpy()
    np.testing.assert_allclose(mixed[:3], f(Tensor(x[:3]), np.full(3, 5)).numpy(), rtol=1e-10)
    np.testing.assert_allclose(mixed[3:], f(Tensor(x[3:]), np.full(3, 900)).numpy(), rtol=1e-10)
    assert mixed.shape == shape and not np.allclose(mixed[:3], f(Tensor(x[:3]),
                                                                 np.full(3, 900)).numpy())


@pytest.mark.parametrize("t", [np.full(7, 40), np.array([0, 3, 3, 99, 40, 7, 1])])
def test_the_sampling_runner_is_the_time_mlp_forward_exactly(t):
    """_TimeMLPRunner (buffers, in-place ReLU, no graph) computes TimeMLP.forward's numbers,
    for a shared and for per-sample timesteps, and again on a second call (reused buffers)."""
    from minigen.models.diffusion.denoisers import _TimeMLPRunner
    net = TimeMLP(3, hidden=16, depth=3, rng=0)
    for p in net.parameters():                      # biases too, so that ReLU clips some
        init.normal_(p, std=0.5, rng=1)
    runner, rng = _TimeMLPRunner(net, 7), np.random.default_rng(0)
    for _ in range(2):
        x = rng.normal(size=(7, 3)).astype(np.float32)
        expected = net(Tensor(x), t).numpy()
        assert np.array_equal(runner(x, t), expected)
    x[2, 1] = np.nan                                # NaN reaches the output as in the graph
    assert np.array_equal(np.isnan(runner(x, t)), np.isnan(net(Tensor(x), t).numpy()))


def test_sampling_and_the_bound_take_the_runner_with_the_same_numbers():
    """sample and log_prob of a ReLU TimeMLP run through _TimeMLPRunner and give what the
    graph path (predict_eps) gives; a SiLU TimeMLP keeps the graph path."""
    X = make_toy("moons", 256, rng=0)
    model = DDPM(TimeMLP(2, hidden=16, rng=0), NoiseSchedule(T=30), rng=0)
    model.fit(X, steps=20, batch_size=64, ema_decay=0.9)
    assert model._eps_predictor(5) is not model.predict_eps
    fast = model.sample(50, rng=3), model.log_prob(X[:20], rng=4)
    model._eps_predictor = lambda n: model.predict_eps
    slow = model.sample(50, rng=3), model.log_prob(X[:20], rng=4)
    for a, b in zip(fast, slow):
        np.testing.assert_array_equal(a, b)
    silu = DDPM(TimeMLP(2, hidden=8, activation="silu", rng=0), NoiseSchedule(T=5), rng=0)
    assert silu._eps_predictor(5) == silu.predict_eps


def mmd2_null_sd(A, B, bandwidth, reps=20, rng=0):
    """The standard deviation of mmd2(A, B) if A and B came from one distribution: the spread
    of mmd2 over random splits of the pooled sample (a permutation null)."""
    rng, pooled = np.random.default_rng(rng), np.concatenate([A, B])
    values = []
    for _ in range(reps):
        order = rng.permutation(len(pooled))
        values.append(mmd2(pooled[order[:len(A)]], pooled[order[len(A):]], bandwidth))
    return np.std(values, ddof=1)


def test_training_on_a_toy_learns_the_data():
    X = make_toy("eight_gaussians", 4000, rng=0)
    model = DDPM(TimeMLP(2, hidden=64, rng=0), NoiseSchedule(), rng=0)
    model.fit(X, steps=600, batch_size=256, lr=3e-3, rng=0)
    first, last = model.losses_[:10], model.losses_[-100:]
    assert first.mean() - last.mean() > Z * np.sqrt(first.var(ddof=1) / 10
                                                     + last.var(ddof=1) / 100)
    # The bar for the samplers: be closer to held-out data than the Gaussian with the data's
    # mean and covariance (the best unimodal fit), by Z standard deviations of the
    # permutation null. (mmd2 0.015 against the Gaussian's 0.081, null sd 0.0007.)
    held_out = make_toy("eight_gaussians", 1000, rng=1)
    gaussian = np.random.default_rng(3).multivariate_normal(X.mean(0), np.cov(X.T), 1000)
    for samples in (model.sample(1000, rng=2), model.sample(1000, rng=2, steps=50)):
        assert mmd2(samples, held_out, 0.5) + Z * mmd2_null_sd(samples, held_out, 0.5) \
            < mmd2(gaussian, held_out, 0.5)
    # held-out points score higher than the same points shrunk off the data (paired)
    on_data = model.log_prob(held_out[:100], rng=0)
    gain = on_data - model.log_prob(held_out[:100] * 0.3, rng=0)
    assert np.all(np.isfinite(on_data)) and gain.mean() > Z * gain.std(ddof=1) / np.sqrt(100)


def test_sampling_uses_the_ema_weights_and_restores_the_trained_ones():
    X = make_toy("moons", 512, rng=0)
    model = DDPM(TimeMLP(2, hidden=16, rng=0), NoiseSchedule(T=50), rng=0)
    model.fit(X, steps=30, batch_size=64, ema_decay=0.9)
    trained = {k: v.copy() for k, v in model.state_dict().items()}
    a = model.sample(20, rng=5)
    ema, model.ema_ = model.ema_, None
    assert not np.allclose(a, model.sample(20, rng=5))
    ema.copy_to(model)
    np.testing.assert_allclose(a, model.sample(20, rng=5), rtol=1e-6)
    model.load_state_dict(trained)
    model.ema_ = ema
    model.sample(2, rng=0)
    assert all(np.array_equal(v, trained[k]) for k, v in model.state_dict().items())


def test_train_warms_the_ema_up():
    X = make_toy("moons", 64, rng=0).astype(np.float32)
    model = DDPM(TimeMLP(2, hidden=8, rng=0), NoiseSchedule(T=10), rng=0)
    before = {k: v.copy() for k, v in model.state_dict().items()}
    ema = train(model, X, steps=1, batch_size=64, ema_decay=0.999, verbose=False).ema
    d = 2 / 11      # min(0.999, (1 + 1) / (10 + 1)) at step 1
    for k, v in model.state_dict().items():
        np.testing.assert_allclose(ema.shadow[k], d * before[k] + (1 - d) * v, rtol=1e-5,
                                   atol=1e-7)


def test_digits_train_and_sample_from_one_call():
    X = load_digits("train")[0][:256].reshape(-1, 1, 8, 8) / 8.0 - 1.0
    model = DDPM(TinyUNet(1, channels=8, rng=0), NoiseSchedule(T=100), rng=0)
    model.fit(X, steps=20, batch_size=32, lr=3e-3, rng=0)
    samples = model.sample(4, rng=0, steps=10, clip=1.0)
    assert samples.shape == (4, 1, 8, 8) and np.all(np.abs(samples) <= 1 + 1e-6)
    # TinyUNet's output layer starts at zero, so the first loss is the mean of 32 x 64 squared
    # standard normals: 1 with standard error sqrt(2 / 2048). An untrained model stays there;
    # after 20 steps the last five losses lie well below (about 0.8).
    se = np.sqrt(2 / (32 * 64))
    losses = model.losses_
    assert np.all(np.isfinite(losses)) and abs(losses[0] - 1) < Z * se
    assert losses[-5:].mean() < 1 - Z * se / np.sqrt(5)


def test_timestep_embedding_is_the_sinusoidal_formula():
    """e(t) = [sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})],
    w_i = max_period^(-i/h), h = dim / 2 (Vaswani et al. 2017, sec. 3.5)."""
    t = np.array([0, 1, 7, 999])
    for dim, max_period in ((6, 10000.0), (8, 100.0), (2, 10000.0)):
        h = dim // 2
        w = max_period ** (-np.arange(h) / h)
        expected = np.concatenate([np.sin(t[:, None] * w), np.cos(t[:, None] * w)], axis=1)
        e = timestep_embedding(t, dim, max_period=max_period, dtype=np.float64)
        assert e.shape == (4, dim) and e.dtype == np.float64
        np.testing.assert_allclose(e, expected, rtol=1e-12, atol=1e-12)
        e32 = timestep_embedding(t, dim, max_period=max_period)
        assert e32.dtype == np.float32
        np.testing.assert_allclose(e32, expected, rtol=1e-6, atol=1e-6)
    for dim in (0, 3):
        with pytest.raises(ValueError, match="timestep_embedding: dim"):
            timestep_embedding(t, dim)


# --- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("call,match", [
    (lambda: NoiseSchedule(kind="quadratic"), "kind"),
    (lambda: NoiseSchedule(T=0), "T must"),
    (lambda: NoiseSchedule.from_betas([0.1, 1.0]), "betas"),
    (lambda: NoiseSchedule(T=10).q_sample(np.zeros((2, 1)), 10, np.zeros((2, 1))), "0..9"),
    (lambda: NoiseSchedule(T=10).q_sample(np.zeros((2, 1)), 1.5, np.zeros((2, 1))), "integers"),
    (lambda: DDPM(None, prediction="score"), "prediction"),
    (lambda: DDPM(None).sample(3), "eps_fn"),
    (lambda: DDPM(None).sample(3, eps_fn=lambda x, t: x), "shape"),
    (lambda: DDPM(None, shape=(2,)).sample(3, steps=0, eps_fn=lambda x, t: x), "steps"),
    (lambda: DDPM(None, shape=(2,)).sample(3, eta=-1, eps_fn=lambda x, t: x), "eta"),
    (lambda: DDPM(TimeMLP(2)).fit(np.zeros((10, 2))), "exactly one of steps= or epochs="),
    (lambda: DDPM(TimeMLP(2), shape=(3,)).fit(np.zeros((10, 2)), batch_size=5), "shape"),
    (lambda: DDPM(None).fit(np.zeros((10, 2))), "denoiser"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises((ValueError, TypeError), match=match):
        call()


def _identity_eps(x, t):
    return x


@pytest.mark.parametrize("steps, length", [(5, 6), (None, 1001)])
def test_sampling_no_samples_keeps_the_trajectory_shape(steps, length):
    model = DDPM(None, shape=(2,))
    x, path = model.sample(0, rng=0, steps=steps, eps_fn=_identity_eps, return_trajectory=True)
    assert x.shape == (0, 2) and path.shape == (length, 0, 2)


@pytest.mark.parametrize("eta", [np.inf, np.nan, -1.0])
def test_sampling_rejects_an_eta_that_is_not_a_finite_number_at_least_zero(eta):
    with pytest.raises(ValueError, match="DDPM.sample: eta must be a finite number >= 0"):
        DDPM(None, shape=(2,)).sample(3, eta=eta, eps_fn=_identity_eps)


def test_a_negative_seed_is_a_clear_error():
    with pytest.raises(ValueError, match="rng must be an int >= 0, got -1"):
        DDPM(None, shape=(2,)).sample(3, rng=-1, eps_fn=_identity_eps)


@pytest.mark.parametrize("value", [1e20, 1e39])
def test_log_prob_beyond_the_float32_range_asks_to_rescale(value):
    """1e39 is finite in float64 but inf in the model's float32; 1e20 is finite in float32 but
    its square is not. Either way the bound cannot be computed: a clear error, never NaN."""
    model = DDPM(TimeMLP(2, rng=0), NoiseSchedule(T=5), rng=0)
    model.fit(np.random.default_rng(0).normal(size=(32, 2)), steps=1, batch_size=16)
    bound = model.log_prob(np.full((2, 2), 1e3), rng=0)
    assert not np.isnan(bound).any()
    with pytest.raises(ValueError, match="DDPM.log_prob: X has entries as large as .*rescale X"):
        model.log_prob(np.full((2, 2), value), rng=0)
