"""DDPM(standardize=True): each feature diffused at mean 0 and standard deviation 1, samples
mapped back, and the Jacobian of the map in ``log_prob``."""
import numpy as np
import pytest

import minigen as mg
from minigen.models import DDPM, NoiseSchedule, TimeMLP
from tests.helpers import gaussian_eps, spy_denoiser

Z = 4.0   # tolerance in standard errors
MEAN, SD = np.array([3.0, -1.0, 0.5]), np.array([2.0, 0.25, 1.0])


def data(n=500, rng=0):
    return MEAN + SD * np.random.default_rng(rng).standard_normal((n, 3))


def fitted(X, T=20, **options):
    """A standardizing DDPM fitted on X for one step (enough to set mean_ and scale_)."""
    return DDPM(spy_denoiser(), NoiseSchedule(T=T), standardize=True, rng=0, **options).fit(
        X, steps=1, batch_size=len(X), rng=0)


def test_the_training_data_is_diffused_at_mean_0_and_sd_1_per_feature():
    X = data()
    model = fitted(X)
    np.testing.assert_allclose(model.mean_, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(model.scale_, X.std(0), rtol=1e-12)
    data_seen = model._check_fit_data(X, None, "test")
    np.testing.assert_allclose(data_seen.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(data_seen.std(0), 1, rtol=1e-5)


def test_validation_data_does_not_move_the_statistics():
    X, V = data(rng=0), data(rng=1) * 3
    model = DDPM(spy_denoiser(), NoiseSchedule(T=20), standardize=True, rng=0).fit(
        X, steps=2, batch_size=100, validation=V, val_every=1, rng=0)
    np.testing.assert_allclose(model.mean_, X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(model.scale_, X.std(0), rtol=1e-12)


def test_a_refit_takes_the_new_data_statistics():
    model = fitted(data())
    X = data(rng=2) + 10
    model.fit(X, steps=1, batch_size=len(X), rng=0)
    np.testing.assert_allclose(model.mean_, X.mean(0), rtol=1e-12)


def test_a_constant_feature_keeps_scale_1_and_stays_finite():
    X = data()
    X[:, 1] = 7.0
    model = fitted(X)
    assert model.scale_[1] == 1.0 and model.mean_[1] == 7.0
    S = model.sample(50, rng=0, eps_fn=gaussian_eps(model.schedule, 0.0, 1.0))
    assert np.all(np.isfinite(S))
    assert np.all(np.isfinite(model.log_prob(X[:5], eps_fn=gaussian_eps(model.schedule, 0, 1))))


def test_samples_are_mapped_back_to_the_data_scale():
    """With the exact denoiser of N(0, 0.5^2) in the standardized space, fixed_large ancestral
    samples are N(0, 0.5^2) there (test_ddpm checks the sampler), so N(mean_, (0.5 scale_)^2)
    in the data's units, per feature."""
    model = fitted(data(), T=200)
    n = 20000
    S = model.sample(n, rng=0, eps_fn=gaussian_eps(model.schedule, 0.0, 0.5),
                     variance="fixed_large")
    sd = 0.5 * model.scale_
    assert np.all(np.abs(S.mean(0) - model.mean_) < Z * sd / np.sqrt(n))
    assert np.all(np.abs(S.std(0) - sd) < Z * sd / np.sqrt(2 * n) + 0.01 * sd)


def test_log_prob_adds_the_jacobian_of_the_standardization():
    """log p_x(x) = log p_z(z) - sum_j log scale_j for z = (x - mean_) / scale_."""
    X = data()
    model = fitted(X)
    Zs = (X - model.mean_) / model.scale_
    eps_fn = gaussian_eps(model.schedule, 0.0, 1.0)
    scaled = model.log_prob(X[:5], eps_fn=eps_fn, rng=1)
    plain = DDPM(None, model.schedule, shape=(3,)).log_prob(Zs[:5], eps_fn=eps_fn, rng=1)
    np.testing.assert_allclose(scaled, plain - np.log(model.scale_).sum(), rtol=1e-10)


def test_a_trained_model_round_trips_through_save_model(tmp_path):
    X = data()
    model = DDPM(TimeMLP(3, hidden=8, depth=1), NoiseSchedule(T=20), standardize=True,
                 rng=0).fit(X, steps=3, batch_size=50, rng=0)
    mg.save_model(model, tmp_path / "ddpm.npz")
    loaded = mg.load_model(tmp_path / "ddpm.npz")
    assert loaded.standardize
    np.testing.assert_array_equal(loaded.mean_, model.mean_)
    np.testing.assert_array_equal(loaded.sample(4, rng=0), model.sample(4, rng=0))
    np.testing.assert_allclose(loaded.log_prob(X[:3], rng=0), model.log_prob(X[:3], rng=0))


def test_bad_standardize_is_named():
    with pytest.raises(TypeError, match="DDPM: standardize must be True or False"):
        DDPM(None, standardize="yes")
    with pytest.raises(ValueError, match="DDPM: give data_range or standardize"):
        DDPM(None, standardize=True, data_range=(0, 1))


def test_for_data_standardizes_rows_unless_given_a_range():
    X = data()
    assert DDPM.for_data(X, rng=0).standardize
    assert not DDPM.for_data(X, standardize=False, rng=0).standardize
    ranged = DDPM.for_data(X, data_range=(-5, 5), rng=0)
    assert not ranged.standardize and ranged.data_range == (-5.0, 5.0)
    images = DDPM.for_data(np.linspace(0, 1, 256).reshape(4, 64), image_shape=(1, 8, 8), rng=0)
    assert not images.standardize
