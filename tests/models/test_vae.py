"""VAE and HierarchicalVAE: the closed-form KL, reparameterisation, the IWAE bound (ordering,
exactness on a linear-Gaussian model), gradients, learning and errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.autograd import Tensor
from minigen.data import load_digits, make_toy
from minigen.models import VAE, HierarchicalVAE
from minigen import functional as F
from minigen.models.vae import gaussian_log_density, reparameterize
from tests.models.test_ae import assert_loss_fell, gradcheck_loss


@pytest.fixture(scope="module")
def binary_digits():
    return load_digits("train", scale="binary")[0], load_digits("test", scale="binary")[0]


def independent_pixels_log_prob(X, Xt):
    """The baseline: each pixel an independent Bernoulli with its training frequency."""
    p = np.clip(X.mean(0), 1e-3, 1 - 1e-3)
    return (Xt * np.log(p) + (1 - Xt) * np.log1p(-p)).sum(1)


def assert_significantly_above(a, b, z=3.0):
    """mean(a - b) > z standard errors of the paired difference (z < 0: not significantly
    below)."""
    d = np.asarray(a) - np.asarray(b)
    assert d.mean() > z * d.std(ddof=1) / np.sqrt(len(d)), (d.mean(), d.std())


# --- the pieces --------------------------------------------------------------------------
@settings(max_examples=20)
@given(mu=st.lists(st.floats(-2, 2), min_size=1, max_size=4),
       log_sd=st.lists(st.floats(-1.5, 1.0), min_size=4, max_size=4))
def test_closed_form_kl_equals_monte_carlo(mu, log_sd):
    mu = np.array(mu)
    logvar = 2 * np.array(log_sd[:len(mu)])
    kl = F.kl_normal(Tensor(mu[None]), Tensor(logvar[None])).sum().item()
    n = 20000
    z = mu + np.exp(logvar / 2) * np.random.default_rng(0).standard_normal((n, len(mu)))
    terms = gaussian_log_density(z, mu, logvar) - gaussian_log_density(z, 0.0, 0.0)
    se = terms.std() / np.sqrt(n)
    assert abs(terms.mean() - kl) < 4 * se + 1e-12


def test_reparameterised_samples_have_the_right_mean_and_variance():
    n = 40000
    mu = Tensor(np.tile([0.5, -1.0, 2.0], (n, 1)))
    logvar = Tensor(np.tile([0.0, np.log(0.25), np.log(4.0)], (n, 1)))
    z = reparameterize(mu, logvar, rng=0).numpy()
    var = np.array([1.0, 0.25, 4.0])
    assert np.all(np.abs(z.mean(0) - [0.5, -1.0, 2.0]) < 4 * np.sqrt(var / n))
    assert np.all(np.abs(z.var(0) - var) < 4 * var * np.sqrt(2 / (n - 1)))
    # the gradient reaches mu and logvar: dz/dmu = 1, dz/dlogvar = (z - mu) / 2
    m, lv = Tensor(np.zeros((5, 2)), requires_grad=True), Tensor(np.zeros((5, 2)), requires_grad=True)
    zz = reparameterize(m, lv, rng=1)
    zz.sum().backward()
    np.testing.assert_allclose(m.grad.numpy(), 1.0)
    np.testing.assert_allclose(lv.grad.numpy(), zz.numpy() / 2)


def test_iwae_approaches_the_exact_log_likelihood_of_a_linear_gaussian_model():
    """With hidden=() the decoder is x = W z + b + N(0, diag sigma^2), so
    log p(x) = log N(x; b, W W^T + diag sigma^2): every bound lies below it and IWAE_k
    closes the gap as k grows."""
    model = VAE(3, 2, hidden=(), likelihood="gaussian", rng=0).double()
    model.n_features_in_ = 3
    linear = model.decoder.net[0]
    W, b = linear.weight.numpy(), linear.bias.numpy()
    X = np.random.default_rng(1).normal(size=(6, 3)) + b
    cov = W @ W.T + np.eye(3)                      # log_var starts at 0: sigma^2 = 1
    diff = X - b
    exact = -0.5 * (3 * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1]
                    + np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff))
    k = 20000
    elbo = model.score_samples(X, k=1, rng=0)
    iwae = model.score_samples(X, k=k, rng=0)
    with model.inference():   # the same weights, for the standard error of log mean(w)
        w = np.exp(model._log_weights(X, k, np.random.default_rng(0)) - iwae)
    se = w.std(0) / np.sqrt(k)     # delta method: sd(log mean w) = sd(w) / (sqrt(k) mean w)
    assert elbo.mean() < exact.mean()
    assert np.all(np.abs(iwae - exact) < 4 * se), (iwae - exact, se)
    assert se.max() < 0.05   # sharp enough to see a wrong constant (0.92 nats per log 2 pi)


def linear_gaussian_hvae():
    """HierarchicalVAE(3, (2, 1)) with linear networks: p(z2) = N(0, 1), p(z1 | z2) =
    N(A z2 + a, D) (prior1's log-variance rows zeroed: D = diag exp(c)), p(x | z1) =
    N(W z1 + b, I); so z1 ~ N(a, S) with S = A A^T + D and x ~ N(W a + b, W S W^T + I). The
    encoders are set to proposals whose weights have a finite variance: q(z2 | z1) is the exact
    posterior (1-D, so diagonal), q(z1 | x) has the posterior mean and a diagonal variance of
    twice the posterior covariance's top eigenvalue. Returns the model, mean and covariance."""
    model = HierarchicalVAE(3, (2, 1), hidden=(), latent_hidden=(), likelihood="gaussian",
                            rng=0).double()
    model.n_features_in_ = 3
    prior, enc, enc2 = model.prior1.net[0], model.encoder.net[0], model.encoder2.net[0]
    prior.weight.data[2:] = 0.0
    A, a, c = prior.weight.numpy()[:2], prior.bias.numpy()[:2], prior.bias.numpy()[2:]
    W, b = model.decoder.net[0].weight.numpy(), model.decoder.net[0].bias.numpy()
    S = A @ A.T + np.diag(np.exp(c))
    cov = W @ S @ W.T + np.eye(3)
    K = S @ W.T @ np.linalg.inv(cov)                 # posterior of z1: mean a + K (x - W a - b)
    post = S - K @ W @ S
    enc.weight.data[:] = np.vstack([K, np.zeros((2, 3))])
    enc.bias.data[:] = np.concatenate([a - K @ (W @ a + b),
                                       np.full(2, np.log(2 * np.linalg.eigvalsh(post).max()))])
    precision = 1.0 + (A[:, 0] ** 2 * np.exp(-c)).sum()   # posterior of z2 given z1
    gain = A[:, 0] * np.exp(-c) / precision
    enc2.weight.data[:] = np.vstack([gain, np.zeros(2)])
    enc2.bias.data[:] = [-gain @ a, -np.log(precision)]
    return model, W @ a + b, cov


def test_hvae_iwae_approaches_the_exact_log_likelihood_of_a_linear_gaussian_model():
    """E_q[p(x, z1, z2) / q(z1, z2 | x)] = p(x) for any q, so IWAE_k -> log p(x), here in
    closed form; the limit is 4 standard errors of log mean(w) (delta method), as for the VAE."""
    model, mean, cov = linear_gaussian_hvae()
    X = mean + np.random.default_rng(1).normal(size=(6, 3)) @ np.linalg.cholesky(cov).T
    diff = X - mean
    exact = -0.5 * (3 * np.log(2 * np.pi) + np.linalg.slogdet(cov)[1]
                    + np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff))
    k = 20000
    iwae = model.score_samples(X, k=k, rng=0)
    with model.inference():
        w = np.exp(model._log_weights(X, k, np.random.default_rng(0)) - iwae)
    se = w.std(0) / np.sqrt(k)
    assert np.all(np.abs(iwae - exact) < 4 * se), (iwae - exact, se)
    assert se.max() < 0.01   # sharp enough to see a wrong constant (0.92 nats per log 2 pi)


def test_hvae_kl1_estimate_matches_monte_carlo():
    """KL1 = E_{q(z1|x) q(z2|z1)} [log q(z1 | x) - log p(z1 | z2)]: the loss's estimate
    (closed-form entropy, one z1, z2 per row) against a NumPy Monte Carlo of the log
    densities, both averaged over n draws for one x; the limit is 4 standard errors of the
    difference of the two independent means. KL2 is the closed form, checked in
    test_closed_form_kl_equals_monte_carlo."""
    model = HierarchicalVAE(4, (3, 2), hidden=(5,), latent_hidden=(5,), rng=0).double().eval()
    n = 20000
    x = np.tile(np.random.default_rng(0).random(4), (n, 1))
    with model.inference():
        kl1 = model.kl_terms(Tensor(x), np.random.default_rng(1))[1].numpy().sum(1)
        h = model.encoder(Tensor(x)).numpy()
        mu1, lv1 = h[:, :3], h[:, 3:]
        rng = np.random.default_rng(2)
        z1 = mu1 + np.exp(lv1 / 2) * rng.standard_normal(mu1.shape)
        h2 = model.encoder2(Tensor(z1)).numpy()
        z2 = h2[:, :2] + np.exp(h2[:, 2:] / 2) * rng.standard_normal((n, 2))
        hp = model.prior1(Tensor(z2)).numpy()
    mc = gaussian_log_density(z1, mu1, lv1) - gaussian_log_density(z1, hp[:, :3], hp[:, 3:])
    se = np.sqrt(kl1.var() / n + mc.var() / n)
    assert abs(kl1.mean() - mc.mean()) < 4 * se, (kl1.mean(), mc.mean(), se)
    assert se < 0.05
    # with free_bits = 0 (and w = beta = 1 in eval mode) the loss adds exactly KL1 + KL2
    batch = x[:8]
    model._rng = np.random.default_rng(3)
    loss = model.loss(batch).item()
    out, k1, k2 = model.kl_terms(Tensor(batch), np.random.default_rng(3))
    rec = model.nll(Tensor(batch), out).mean().item()
    np.testing.assert_allclose(loss, rec + (k1.sum(1) + k2.sum(1)).numpy().mean(), rtol=1e-12)


def test_hvae_resume_continues_the_warm_up_exactly(tmp_path):
    """10 uninterrupted steps == 5 checkpointed steps + a resume to 10 (float64 losses and
    weights): the warm-up step ``kl_step`` travels in the checkpoint."""
    X = (np.random.default_rng(0).random((40, 4)) > 0.5).astype(np.float64)

    def run(name, steps, resume=None, rng=0):
        model = HierarchicalVAE(4, (3, 2), hidden=(5,), latent_hidden=(5,), warmup_steps=8,
                                rng=rng).double()
        model.fit(X, steps=steps, batch_size=16, lr=1e-2, rng=1, log_every=5,
                  checkpoint=tmp_path / name, resume=resume)
        return model

    whole = run("whole.npz", 10)
    run("half.npz", 5)
    resumed = run("half.npz", 10, resume=tmp_path / "half.npz", rng=123)
    np.testing.assert_array_equal(resumed.history_.losses, whole.history_.losses)
    for key, value in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[key], value)
    assert int(resumed.kl_step) == 10
    assert int(whole.fit(X, steps=2, batch_size=16, rng=1).kl_step) == 2   # a fresh fit restarts


def test_hvae_validation_loss_uses_the_full_kl_weight():
    """In training the KL weight is w_t = beta t / warmup_steps; the validation loss (eval mode)
    uses beta, the objective itself, and does not advance the warm-up."""
    model = HierarchicalVAE(4, (3, 2), hidden=(5,), latent_hidden=(5,), beta=2.0,
                            warmup_steps=100, rng=0).double()
    batch = (np.random.default_rng(0).random((8, 4)) > 0.5).astype(np.float64)
    out, k1, k2 = model.kl_terms(Tensor(batch), np.random.default_rng(3))
    rec = model.nll(Tensor(batch), out).mean().item()
    kl = (k1.mean(0).sum() + k2.mean(0).sum()).item()
    model._rng = np.random.default_rng(3)
    np.testing.assert_allclose(model.loss(batch).item(), rec + 2.0 / 100 * kl, rtol=1e-12)
    model.eval()
    model._rng = np.random.default_rng(3)
    np.testing.assert_allclose(model.loss(batch).item(), rec + 2.0 * kl, rtol=1e-12)
    assert int(model.kl_step) == 1


def test_for_data_picks_a_gaussian_likelihood_outside_the_unit_interval(binary_digits):
    moons = make_toy("moons", 100, rng=0)
    for cls in (VAE, HierarchicalVAE):
        assert cls.for_data(moons).likelihood == "gaussian"
        assert cls.for_data(binary_digits[0]).likelihood == "bernoulli"
        assert cls.for_data(moons, likelihood="bernoulli").likelihood == "bernoulli"
    model = HierarchicalVAE.for_data(moons, hidden=(8,), latent_hidden=(4,), rng=0)
    assert np.all(np.isfinite(model.fit(moons, steps=3, rng=0).score_samples(moons[:5])))


@pytest.mark.parametrize("make", [
    lambda: VAE(5, 2, hidden=(3,), activation="tanh", rng=0),
    lambda: VAE(5, 2, hidden=(3,), likelihood="gaussian", beta=0.5, activation="tanh",
                rng=0),
    lambda: VAE(16, 2, image_shape=(1, 4, 4), channels=(2,), activation="tanh", rng=0),
    lambda: HierarchicalVAE(5, (3, 2), hidden=(3,), latent_hidden=(3,), activation="tanh",
                            rng=0),
    lambda: HierarchicalVAE(5, (3, 2), hidden=(3,), latent_hidden=(3,), free_bits=0.01,
                            likelihood="gaussian", activation="tanh", rng=0),
], ids=["vae", "vae-gaussian", "vae-conv", "hvae", "hvae-free-bits"])
def test_loss_gradients(make):
    model = make()
    batch = (np.random.default_rng(1).random((6, model.x_dim)) > 0.5).astype(np.float64)
    assert gradcheck_loss(model, batch)


def test_hvae_warm_up_and_free_bits():
    model = HierarchicalVAE(4, (3, 2), hidden=(5,), latent_hidden=(5,), beta=2.0,
                            warmup_steps=10, rng=0)
    assert [model.kl_weight(t) for t in (1, 5, 10, 50)] == [0.2, 1.0, 2.0, 2.0]
    # free bits above every per-dimension KL: the KL term is exactly lambda per dimension
    batch = (np.random.default_rng(0).random((8, 4)) > 0.5).astype(np.float32)
    model = HierarchicalVAE(4, (3, 2), hidden=(5,), latent_hidden=(5,), free_bits=50.0,
                            rng=0).eval()
    model._rng = np.random.default_rng(3)
    loss = model.loss(batch).item()
    x = Tensor(batch)
    h = model.encoder(x)
    z1 = reparameterize(h[:, :3], h[:, 3:], np.random.default_rng(3))   # the same first draw
    rec = model.nll(x, model.decode(z1)).mean().item()
    np.testing.assert_allclose(loss, rec + 50.0 * (3 + 2), rtol=1e-5)


# --- trained models ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(binary_digits):
    X = binary_digits[0]
    return {
        "vae": VAE(64, 8, hidden=(128,), rng=0).fit(X, epochs=25, lr=3e-3, rng=0),
        "hvae": HierarchicalVAE(64, (8, 4), hidden=(128,), latent_hidden=(32,),
                                warmup_steps=100, rng=0)
        .fit(X, epochs=25, lr=3e-3, rng=0),
    }


@pytest.mark.parametrize("name", ["vae", "hvae"])
def test_training_lowers_the_loss_and_beats_independent_pixels(name, trained, binary_digits):
    X, Xt = binary_digits
    model = trained[name]
    assert_loss_fell(model.history_.losses)
    assert_significantly_above(model.score_samples(Xt, k=10, rng=0),
                               independent_pixels_log_prob(X, Xt))


@pytest.mark.parametrize("name", ["vae", "hvae"])
def test_elbo_below_iwae10_below_iwae100(name, trained, binary_digits):
    Xt = binary_digits[1]
    model = trained[name]
    elbo, iwae10, iwae100 = (model.score_samples(Xt, k=k, rng=k) for k in (1, 10, 100))
    assert_significantly_above(iwae10, elbo)
    assert_significantly_above(iwae100, elbo)
    # IWAE_100 >= IWAE_10 in expectation: the estimated gap is not significantly negative
    assert_significantly_above(iwae100, iwae10, z=-3.0)
    assert model.score(Xt, k=10, rng=0) == pytest.approx(np.mean(
        model.log_prob(Xt, k=10, rng=0)))


def test_samples(trained):
    vae = trained["vae"]
    draws, means = vae.sample(50, rng=0), vae.sample(50, rng=0, mean=True)
    assert set(np.unique(draws)) <= {0.0, 1.0} and draws.shape == (50, 64)
    assert np.all((means >= 0) & (means <= 1))
    np.testing.assert_array_equal(vae.sample(5, rng=1), vae.sample(5, rng=1))
    assert vae.sample(0).shape == (0, 64)
    assert trained["hvae"].sample(4, rng=0, mean=True).shape == (4, 64)


def test_gaussian_vae_on_a_2d_toy_and_a_conv_vae():
    X = make_toy("moons", 500, rng=0)
    model = VAE(2, 2, hidden=(32,), likelihood="gaussian", rng=0)
    model.fit(X, steps=200, lr=3e-3, rng=0)
    assert np.all(np.isfinite(model.score_samples(X[:20], k=5, rng=0)))
    assert model.sample(10, rng=0).shape == (10, 2)
    digits = load_digits("train", scale="unit")[0][:200]
    conv = VAE(64, 2, image_shape=(1, 8, 8), channels=(4, 8), rng=0)
    conv.fit(digits, steps=5, rng=0)
    assert np.all(np.isfinite(conv.score_samples(digits[:5], rng=0)))


def test_errors(binary_digits):
    raw = load_digits("train")[0]
    with pytest.raises(ValueError, match=r"VAE.fit: likelihood='bernoulli' models values in "
                                         r"\[0, 1\]"):
        VAE(64, 2).fit(raw, steps=1)
    with pytest.raises(ValueError, match="HierarchicalVAE.fit: likelihood='bernoulli'"):
        HierarchicalVAE(64).fit(raw, steps=1)
    with pytest.raises(ValueError, match="likelihood must be one of"):
        VAE(64, 2, likelihood="poisson")
    with pytest.raises(ValueError, match="z_dims must be a 2-tuple of positive ints"):
        HierarchicalVAE(64, z_dims=(4,))
    model = VAE(64, 2, hidden=(8,)).fit(binary_digits[0], steps=1)
    with pytest.raises(ValueError, match="k must be a positive int"):
        model.score_samples(binary_digits[1], k=0)
    with pytest.raises(ValueError, match="X has 3 features"):
        model.score_samples(np.zeros((2, 3)))
