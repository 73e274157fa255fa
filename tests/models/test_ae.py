"""Auto-encoders (AutoEncoder, SupervisedAutoEncoder, SWAE), the shared networks and the
differentiable sliced Wasserstein distance: exactness, gradients, learning and errors."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen import functional as F
from minigen.autograd import Tensor
from minigen.data import load_digits, make_toy
from minigen.density import PCA, GaussianMixture, LatentDensity
from minigen.distribution import NoDensityError, NotFittedError
from minigen.metrics import sliced_wasserstein, sliced_wasserstein_loss, wasserstein_1d
from minigen.models import (SWAE, AutoEncoder, ConvDecoder, ConvEncoder, MLPEncoder,
                            SupervisedAutoEncoder)
from minigen.models import ae as ae_module
from minigen.testing import gradcheck


def gradcheck_loss(model, batch, rng=0):
    """gradcheck of model.loss(batch) with respect to every parameter, in float64, with the
    model's noise (eps, prior draws, projections) redrawn from the same seed ``rng`` on every call."""
    model.double().eval()
    slots = [(module, name) for _, module in model.named_modules() for name in module._parameters]
    originals = [getattr(module, name) for module, name in slots]

    def loss(*params):
        for (module, name), p in zip(slots, params):
            object.__setattr__(module, name, p)     # the forward reads these Tensors
        model._rng = np.random.default_rng(rng)
        try:
            return model.loss(batch)
        finally:
            for (module, name), p in zip(slots, originals):
                object.__setattr__(module, name, p)

    return gradcheck(loss, [p.data for p in originals], rtol=1e-4, atol=1e-7)


def assert_loss_fell(losses, window=20):
    """The mean of the last ``window`` training losses lies below the mean of the first by more
    than 4 standard errors of that difference (two window means of per-batch losses; the first
    window's spread also holds the early drop, which only makes the limit stricter)."""
    first, last = np.asarray(losses[:window]), np.asarray(losses[-window:])
    se = np.sqrt(first.var(ddof=1) / window + last.var(ddof=1) / window)
    assert first.mean() - last.mean() > 4 * se, (first.mean(), last.mean(), se)


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits("train", scale="unit")
    Xt, yt = load_digits("test", scale="unit")
    return X, y, Xt, yt


def test_load_digits_scales():
    raw, y = load_digits("train")
    unit, y_unit = load_digits("train", scale="unit")
    binary = load_digits("train", scale="binary", dtype=np.uint8)[0]
    np.testing.assert_array_equal(y, y_unit)
    np.testing.assert_allclose(unit, raw / 16)
    assert unit.max() == 1.0 and unit.min() == 0.0
    np.testing.assert_array_equal(binary, (raw >= 8).astype(np.uint8))
    with pytest.raises(ValueError, match="scale must be one of None, 'unit', 'binary'"):
        load_digits(scale="standard")
    with pytest.raises(ValueError, match="scale='unit' needs a float dtype"):
        load_digits(scale="unit", dtype=np.uint8)


# --- the sliced Wasserstein distance -----------------------------------------------------
@settings(max_examples=25)
@given(n=st.integers(1, 30), m=st.integers(1, 30), p=st.sampled_from([1, 2, 3]),
       seed=st.integers(0, 2 ** 16))
def test_sliced_wasserstein_loss_is_the_exact_wasserstein_distance_in_1d(n, m, p, seed):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(n, 1)), rng.normal(1.0, 2.0, size=(m, 1))
    got = sliced_wasserstein_loss(x, y, n_projections=3, p=p, rng=seed).item()
    np.testing.assert_allclose(got, wasserstein_1d(x[:, 0], y[:, 0], p) ** p, rtol=1e-10)


def test_sliced_wasserstein_loss_shares_the_projections_of_the_numpy_version():
    rng = np.random.default_rng(1)
    X, Y = rng.normal(size=(40, 3)), rng.normal(size=(25, 3)) + 0.5
    for p in (1, 2):
        got = sliced_wasserstein_loss(X, Y, n_projections=16, p=p, rng=7).item() ** (1 / p)
        np.testing.assert_allclose(got, sliced_wasserstein(X, Y, 16, p, rng=7), rtol=1e-10)


def test_sliced_wasserstein_loss_is_zero_for_identical_sets():
    X = np.random.default_rng(2).normal(size=(30, 4))
    assert sliced_wasserstein_loss(X, X, rng=0).item() == 0.0
    assert sliced_wasserstein_loss(X, X[::-1], rng=0).item() < 1e-24
    assert sliced_wasserstein_loss(X, X + 0.1, rng=0).item() > 1e-4


def test_sort_and_sliced_wasserstein_gradients():
    rng = np.random.default_rng(3)
    gradcheck(lambda a: F.sort(a, axis=0) * Tensor(np.arange(7.0)[:, None]),
              [rng.normal(size=(7, 3))])
    for m in (6, 9):   # equal sizes and merged quantile levels
        gradcheck(lambda a, b: sliced_wasserstein_loss(a, b, n_projections=5, rng=4),
                  [rng.normal(size=(6, 3)), rng.normal(size=(m, 3))])


def test_sliced_wasserstein_loss_errors():
    with pytest.raises(ValueError, match="sliced_wasserstein_loss: X and Y"):
        sliced_wasserstein_loss(np.zeros((3, 2)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="n_projections must be a positive int"):
        sliced_wasserstein_loss(np.zeros((3, 2)), np.zeros((3, 2)), n_projections=0)


# --- networks ----------------------------------------------------------------------------
def test_networks_shapes_params_and_errors():
    x = Tensor(np.random.default_rng(0).random((5, 64)).astype(np.float32))
    enc = ConvEncoder(6, image_shape=(1, 8, 8), channels=(4, 8), rng=0)
    dec = ConvDecoder(6, image_shape=(1, 8, 8), channels=(4, 8), rng=0)
    assert enc(x).shape == (5, 6) and dec(enc(x)).shape == (5, 64)
    assert enc.get_params()["channels"] == (4, 8)
    assert MLPEncoder(64, 3, hidden=(7,))(x).shape == (5, 3)
    with pytest.raises(ValueError, match="MLPEncoder: input must have shape"):
        MLPEncoder(10, 3)(x)
    with pytest.raises(ValueError, match="multiples of 2"):
        ConvEncoder(2, image_shape=(1, 6, 6), channels=(4, 8, 16))
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        MLPEncoder(4, 2, activation="swish")
    with pytest.raises(ValueError, match="AutoEncoder: x_dim=10 but image_shape"):
        AutoEncoder(10, 2, image_shape=(1, 8, 8))
    built = SWAE.for_data(np.zeros((4, 3)), prior="uniform")      # the command line's builder
    assert (built.x_dim, built.z_dim, built.prior) == (3, 2, "uniform")


# --- gradients of every loss -------------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda: AutoEncoder(5, 2, hidden=(3,), activation="tanh", rng=0),
    lambda: AutoEncoder(5, 2, hidden=(3,), reconstruction="bernoulli", activation="tanh",
                        rng=0),
    lambda: SWAE(5, 2, hidden=(3,), prior="ring", n_projections=4, activation="tanh",
                 rng=0),
    lambda: AutoEncoder(16, 2, image_shape=(1, 4, 4), channels=(2,), activation="tanh",
                        rng=0),
], ids=["ae-mse", "ae-bernoulli", "swae", "ae-conv"])
def test_loss_gradients(make):
    model = make()
    batch = np.random.default_rng(1).random((6, model.x_dim))
    assert gradcheck_loss(model, batch)


def test_supervised_loss_gradients():
    model = SupervisedAutoEncoder(5, 2, 3, hidden=(3,), activation="tanh", rng=0)
    rng = np.random.default_rng(2)
    assert gradcheck_loss(model, (rng.random((6, 5)), np.array([0, 1, 2, 0, 1, 2])))


# --- learning ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_ae(digits):
    X = digits[0]
    return AutoEncoder(64, 4, hidden=(128,), rng=0).fit(X, epochs=40, lr=3e-3, rng=0)


def test_autoencoder_learns_and_beats_pca(digits, trained_ae):
    X, _, Xt, _ = digits
    assert_loss_fell(trained_ae.history_.losses)
    pca = PCA(4).fit(X)
    pca_error = np.mean((pca.inverse_transform(pca.transform(Xt)) - Xt) ** 2, axis=1)
    ae_error = trained_ae.reconstruction_error(Xt)
    diff = pca_error - ae_error          # paired over the held-out digits
    assert diff.mean() > 4 * diff.std() / np.sqrt(len(diff))


def test_autoencoder_samples_from_its_latent_density(digits, trained_ae):
    X = digits[0]
    assert isinstance(trained_ae.latent_density_, GaussianMixture)
    codes = trained_ae.transform(X)
    drawn = trained_ae.latent_density_.sample(2000, rng=0)
    # the samples decode from where the codes are: at an EM fixed point the mixture's mean is
    # the codes' mean, so the draws' mean differs from it by their sampling error alone (the
    # limit: 4 standard errors of the mean of 2000 draws, per code dimension)
    se = drawn.std(0, ddof=1) / np.sqrt(len(drawn))
    assert np.all(np.abs(drawn.mean(0) - codes.mean(0)) < 4 * se), (drawn.mean(0) - codes.mean(0), se)
    samples = trained_ae.sample(7, rng=0)
    assert samples.shape == (7, 64) and np.all(np.isfinite(samples))
    np.testing.assert_array_equal(samples, trained_ae.sample(7, rng=0))
    # transform / inverse_transform make it a reducer for LatentDensity
    latent = LatentDensity(trained_ae, GaussianMixture(3, random_state=0), fit_reducer=False)
    assert latent.fit(X[:300]).sample(5, rng=0).shape == (5, 64)
    kde_ae = AutoEncoder(64, 2, hidden=(8,), rng=0).fit(X, steps=3, latent_density="kde")
    assert type(kde_ae.latent_density_).__name__ == "KDE"


def test_autoencoder_errors(digits):
    X = digits[0]
    with pytest.raises(NoDensityError, match="AutoEncoder defines no density"):
        AutoEncoder(64, 2).log_prob(X)
    with pytest.raises(ValueError, match=r"reconstruction='bernoulli' models values in \[0, 1\]"):
        AutoEncoder(64, 2, reconstruction="bernoulli").fit(X * 16, steps=1)
    with pytest.raises(ValueError, match="latent_density must be"):
        AutoEncoder(64, 2).fit(X, steps=1, latent_density="flow")
    with pytest.raises(ValueError, match="reconstruction must be one of"):
        AutoEncoder(64, 2, reconstruction="l1")
    with pytest.raises(NotFittedError, match="not fitted yet"):
        AutoEncoder(64, 2).transform(X)
    ae = AutoEncoder(64, 2, hidden=(8,)).fit(X, steps=2, latent_density=None)
    with pytest.raises(NotFittedError, match="latent_density=None"):
        ae.sample(3)
    with pytest.raises(ValueError, match="unsupervised; got targets y"):
        ae.fit(X, np.zeros(len(X), int), steps=1)


def test_supervised_autoencoder_checks_n_classes_before_building(monkeypatch):
    def build(*args, **kwargs):
        raise AssertionError("the networks were built before n_classes was checked")

    monkeypatch.setattr(ae_module, "make_encoder", build)
    for bad in (1, 2.0, True, "10"):
        with pytest.raises(ValueError, match="n_classes must be an int >= 2"):
            SupervisedAutoEncoder(64, 2, bad)


def test_supervised_autoencoder_classifies_and_generates_by_class(digits):
    X, y, Xt, yt = digits
    model = SupervisedAutoEncoder(64, 8, 10, hidden=(128,), rng=0)
    model.fit(X, y, epochs=30, lr=3e-3, rng=0)
    assert np.mean(model.predict(Xt) == yt) > 0.9
    proba = model.predict_proba(Xt[:5])
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    # class-conditional samples come from p(z | y): the model's own head recognises them
    for c in (0, 3, 7):
        assert np.mean(model.predict(model.sample(50, rng=c, y=c)) == c) > 0.8
    labels = np.arange(20) % 10
    assert model.sample(20, rng=0, y=labels).shape == (20, 64)
    with pytest.raises(ValueError, match="needs class labels y"):
        model.fit(X, steps=1)
    with pytest.raises(ValueError, match="labels must lie in 0..9"):
        model.fit(X, y + 1, steps=1)
    with pytest.raises(ValueError, match="y must be an int in 0..9"):
        model.sample(3, y=10)


@pytest.mark.parametrize("prior", ["uniform", "ring"])
def test_swae_pulls_codes_to_the_prior(prior):
    """The sliced-Wasserstein term pulls the codes to the prior: against the same network
    trained without it (sw_weight=0), their distance to prior draws is smaller by more than 4
    standard errors of the paired difference over R fresh prior samples and projection sets.
    (After 300 steps the codes are still above the two-sample noise floor, about 0.09 against
    0.03-0.04 +- 0.01 between two prior samples, so the control, not the floor, is the null.)"""
    X = make_toy("moons", 1000, rng=0)
    model = SWAE(2, 2, prior=prior, hidden=(32,), rng=0).fit(X, steps=300, lr=3e-3, rng=0)
    control = SWAE(2, 2, prior=prior, hidden=(32,), sw_weight=0.0, rng=0)
    control.fit(X, steps=300, lr=3e-3, rng=0)
    codes, control_codes = model.transform(X), control.transform(X)
    R = 10
    diff = np.array([sliced_wasserstein(control_codes, model.sample_prior(1000, rng=100 + r),
                                        rng=r)
                     - sliced_wasserstein(codes, model.sample_prior(1000, rng=100 + r), rng=r)
                     for r in range(R)])
    assert diff.mean() > 4 * diff.std(ddof=1) / np.sqrt(R), diff
    if prior == "ring":
        # the codes' median radius is the ring's (1), within 4 standard errors of a sample
        # median, 1.2533 sd / sqrt(n) (asymptotic, normal-shaped radii)
        radius = np.linalg.norm(codes, axis=1)
        se = 1.2533 * radius.std(ddof=1) / np.sqrt(len(radius))
        assert abs(np.median(radius) - 1.0) < 4 * se, (np.median(radius), se)
    assert np.mean(model.reconstruction_error(X)) < 0.1 * X.var(0).sum()
    assert model.sample(5, rng=0).shape == (5, 2)
    with pytest.raises(ValueError, match="prior must be one of"):
        SWAE(2, 2, prior="cauchy")
