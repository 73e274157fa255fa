"""The VAE family's bound on inputs far outside the training data: the correct value where
float64 holds it, -inf where the bound underflows float64, or an error that says to rescale X;
never NaN. And ``batch_size`` of ``log_prob`` checked before any work."""
import copy

import numpy as np
import pytest

from minigen.data import make_toy
from minigen.models import VAE, HierarchicalVAE
from minigen.models.vae import LOG_2PI


@pytest.fixture(scope="module")
def lightly_trained():
    X = make_toy("moons", 200, rng=0)
    return {
        "vae": VAE(2, 2, hidden=(16,), likelihood="gaussian", rng=0)
        .fit(X, steps=5, lr=1e-2, rng=0),
        "hvae": HierarchicalVAE(2, (2, 2), hidden=(16,), latent_hidden=(8,),
                                likelihood="gaussian", rng=0).fit(X, steps=5, lr=1e-2, rng=0),
    }


def test_float32_overflow_is_scored_exactly_in_float64():
    """A float32 linear VAE (hidden=()) whose q(z | x) has standard deviation e^100 (beyond
    float32, within float64): the bound equals the closed form computed from the same draws,
    log N(x; w z + b, e^s) + log N(z; 0, 1) - log N(z; mu, e^lv) with z = mu + e^(lv/2) eps."""
    model = VAE(2, 1, hidden=(), likelihood="gaussian", rng=0)
    model.n_features_in_ = 2
    encoder, decoder = model.encoder.net[0], model.decoder.net[0]
    encoder.weight.data[...] = 0.0
    encoder.bias.data[...] = [0.5, 200.0]                    # mu = 0.5, logvar = 200
    X = np.array([[1.0, -2.0], [3.0, 0.5], [0.0, 0.0]])
    k = 4
    got = model.log_prob(X, k=k, rng=0)

    eps = np.random.default_rng(0).standard_normal((k, 3, 1))
    z = 0.5 + np.exp(100.0) * eps
    w, b = decoder.weight.numpy().astype(np.float64)[:, 0], decoder.bias.numpy().astype(np.float64)
    s = model.log_var.numpy().astype(np.float64)
    mean = z * w + b                                           # (k, n, 2)
    log_lik = -0.5 * np.sum(LOG_2PI + s + (X - mean) ** 2 * np.exp(-s), axis=-1)
    log_w = log_lik - 0.5 * (LOG_2PI + z[..., 0] ** 2) + 0.5 * (LOG_2PI + 200.0 + eps[..., 0] ** 2)
    top = log_w.max(0)
    expected = top + np.log(np.mean(np.exp(log_w - top), axis=0))
    assert np.all(np.isfinite(expected))
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_lightly_trained_vae_at_1e3_gives_the_float64_value(lightly_trained):
    """At 1e3 the networks' outputs (exp(logvar / 2) ~ 1e50 and beyond) leave float32; the
    bound is the float64 model's, to float32's precision of the weights' inputs."""
    model = lightly_trained["vae"]
    X = np.array([[1.0, 0.0], [0.5, -1.0]]) * 1e3
    got = model.log_prob(X, k=3, rng=0)
    wide = copy.deepcopy(model).double().log_prob(X, k=3, rng=0)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, wide, rtol=1e-4)


@pytest.mark.parametrize("name", ["vae", "hvae"])
@pytest.mark.parametrize("scale", [1e3, 1e30, -1e30])
def test_huge_inputs_are_scored_or_refused_never_nan(lightly_trained, name, scale):
    model = lightly_trained[name]
    X = np.array([[1.0, 0.0], [0.5, -1.0]]) * scale
    try:
        got = model.log_prob(X, k=3, rng=0)
    except ValueError as err:
        assert "rescale X" in str(err) and type(model).__name__ in str(err)
        return
    assert not np.any(np.isnan(got)), got
    assert np.all(np.isfinite(got) | (got == -np.inf))


def test_vae_at_1e30_is_minus_infinity(lightly_trained):
    """There q(z | x)'s standard deviation exp(logvar / 2) overflows float64: every z draw lies
    beyond float64, where log p(z) = -inf, so the bound is -inf (not inf * 0 = NaN)."""
    X = np.array([[1.0, 0.0], [0.5, -1.0]]) * 1e30
    assert np.all(lightly_trained["vae"].log_prob(X, k=3, rng=0) == -np.inf)


@pytest.mark.parametrize("name", ["vae", "hvae"])
@pytest.mark.parametrize("batch_size", [-1, 0, 2.5, True, "4"])
def test_log_prob_batch_size_is_checked(lightly_trained, name, batch_size):
    model = lightly_trained[name]
    with pytest.raises(ValueError, match=r"\.score_samples: batch_size must be a positive int"):
        model.log_prob(np.zeros((3, 2)), batch_size=batch_size)


@pytest.mark.parametrize("name", ["vae", "hvae"])
def test_log_prob_in_blocks_fills_every_row(lightly_trained, name):
    """7 rows in blocks of 3 (the last one short): every row gets its bound."""
    X = make_toy("moons", 7, rng=1)
    got = lightly_trained[name].log_prob(X, k=2, rng=0, batch_size=3)
    assert got.shape == (7,) and np.all(np.isfinite(got)) and np.all(got < 10)
