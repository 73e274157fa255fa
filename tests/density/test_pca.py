"""PCA/PPCA and LatentDensity: parity with scikit-learn, round trips, densities, bad input."""
import warnings

import numpy as np
import pytest

from minigen.distribution import NotFittedError
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.data import load_digits
from minigen.density import KDE, PCA, GaussianMixture, LatentDensity


def _correlated(seed, n, d):
    rng = np.random.default_rng(seed)
    scales = np.geomspace(3.0, 0.3, d)                       # distinct variances
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    return (rng.standard_normal((n, d)) * scales) @ Q.T + rng.normal(size=d)


@pytest.mark.parametrize("solver", ["full", "covariance_eigh"])
@pytest.mark.parametrize("data,n_components", [("random", 3), ("random", 6), ("random", 0.8),
                                               ("digits", 10), ("digits", 0.9)])
def test_matches_sklearn(solver, data, n_components):
    decomposition = pytest.importorskip("sklearn.decomposition")
    X = _correlated(0, 200, 6) if data == "random" else load_digits()[0]
    ours = PCA(n_components, svd_solver=solver).fit(X)
    ref = decomposition.PCA(n_components, svd_solver=solver).fit(X)
    assert ours.n_components_ == ref.n_components_
    np.testing.assert_allclose(ours.components_, ref.components_, atol=1e-10)
    for name in ("explained_variance_", "explained_variance_ratio_", "singular_values_", "mean_"):
        np.testing.assert_allclose(getattr(ours, name), getattr(ref, name), rtol=1e-10)
    assert ours.noise_variance_ == pytest.approx(ref.noise_variance_, rel=1e-10, abs=1e-12)
    np.testing.assert_allclose(ours.transform(X), ref.transform(X), rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-10)
    np.testing.assert_allclose(ours.get_covariance(), ref.get_covariance(), rtol=1e-9, atol=1e-10)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 30), d=st.integers(1, 8),
       solver=st.sampled_from(["full", "covariance_eigh"]))
def test_inverse_transform_undoes_transform_at_full_rank(seed, n, d, solver):
    X = np.random.default_rng(seed).normal(size=(n, d)) * 3.0
    pca = PCA(None, svd_solver=solver).fit(X)
    assert pca.n_components_ == min(n, d)
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(X)), X, atol=1e-9 * (1 + np.abs(X).max()))


def test_whitening_gives_unit_variance_and_the_same_density():
    X = _correlated(1, 300, 5)
    plain, white = PCA(3).fit(X), PCA(3, whiten=True).fit(X)
    np.testing.assert_allclose(np.var(white.transform(X), axis=0, ddof=1), 1.0, rtol=1e-10)
    np.testing.assert_allclose(white.score_samples(X), plain.score_samples(X), rtol=1e-12)
    np.testing.assert_allclose(white.inverse_transform(white.transform(X)),
                               plain.inverse_transform(plain.transform(X)), atol=1e-10)


def test_fit_transform_is_fit_then_transform():
    X = _correlated(7, 50, 4)
    for whiten in (False, True):
        Z = PCA(2, whiten=whiten).fit_transform(X)
        np.testing.assert_allclose(Z, PCA(2, whiten=whiten).fit(X).transform(X), rtol=1e-12,
                                   atol=1e-12)
        assert Z.shape == (50, 2)


def test_noise_variance_averages_over_the_rank_when_samples_are_fewer_than_features():
    """sigma^2 is the mean of the min(n, d) - k discarded variances (scikit-learn's convention):
    the data span at most min(n, d) directions, and dividing by d - k would average in d - n
    exact zeros (for data of shape (10, 30), 0.46 instead of scikit-learn's 1.78)."""
    X = np.random.default_rng(0).normal(size=(10, 30))
    variances = np.linalg.svd(X - X.mean(axis=0), compute_uv=False) ** 2 / 9
    for k in (1, 3, 5):
        pca = PCA(k).fit(X)
        assert pca.noise_variance_ == pytest.approx(variances[k:].sum() / (10 - k), rel=1e-10)
    decomposition = pytest.importorskip("sklearn.decomposition")
    ref = decomposition.PCA(3).fit(X)
    ours = PCA(3).fit(X)
    assert ours.noise_variance_ == pytest.approx(ref.noise_variance_, rel=1e-10)
    np.testing.assert_allclose(ours.score_samples(X), ref.score_samples(X), rtol=1e-10)


def test_sample_residual_is_isotropic_noise_outside_the_principal_axes():
    pca = PCA(2).fit(_correlated(8, 200, 6))
    R = pca.sample_residual(20_000, rng=0)
    assert R.shape == (20_000, 6)
    np.testing.assert_allclose(R @ pca.components_.T, 0, atol=1e-12)
    # E[r r^T] = sigma^2 (I - W^T W); |r|^2 / sigma^2 ~ chi^2(d - k) per row
    dof = len(R) * (6 - 2)
    ratio = np.sum(R * R) / pca.noise_variance_ / dof
    assert abs(ratio - 1) < 4 * np.sqrt(2 / dof)
    P = np.eye(6) - pca.components_.T @ pca.components_
    se = pca.noise_variance_ * np.sqrt((np.outer(np.diag(P), np.diag(P)) + P ** 2) / len(R))
    assert np.all(np.abs(R.T @ R / len(R) - pca.noise_variance_ * P) < 4 * se)
    np.testing.assert_array_equal(R, pca.sample_residual(20_000, rng=0))


def test_randomized_solver_matches_full_on_low_rank_data():
    rng = np.random.default_rng(2)
    X = rng.standard_normal((400, 5)) @ rng.standard_normal((5, 40)) + 0.01 * rng.standard_normal((400, 40))
    full = PCA(5).fit(X)
    fast = PCA(5, svd_solver="randomized", random_state=0).fit(X)
    # Halko et al. (2011), Thm 10.8: with q = 7 power iterations the subspace error shrinks like
    # (s_6 / s_5)^(2q + 1), here (0.2 / 15)^15 ~ 1e-28, so both solvers agree to rounding (the
    # measured gaps are 1e-15 and 1e-14). The tolerances leave room for rounding only: sigma^2 is
    # total - kept variance, a difference that loses ~log10(total / sigma^2) = 5 of its digits.
    np.testing.assert_allclose(fast.explained_variance_, full.explained_variance_, rtol=1e-8)
    np.testing.assert_allclose(fast.components_, full.components_, atol=1e-6)
    assert fast.noise_variance_ == pytest.approx(full.noise_variance_, rel=1e-6)


def test_ppca_sample_moments_within_standard_errors():
    pca = PCA(2).fit(_correlated(3, 300, 4))
    S = pca.sample(50_000, rng=4)
    C = pca.get_covariance()
    assert np.all(np.abs(S.mean(axis=0) - pca.mean_) < 4 * np.sqrt(np.diag(C) / len(S)))
    # Gaussian: Var(s_i s_j) = C_ii C_jj + C_ij^2
    se = np.sqrt((np.outer(np.diag(C), np.diag(C)) + C ** 2) / len(S))
    assert np.all(np.abs(np.cov(S.T) - C) < 4 * se)


def test_full_rank_digits_density_warns_and_stays_finite():
    X = load_digits()[0]                                    # some pixels never vary
    pca = PCA(None).fit(X)
    with pytest.warns(RuntimeWarning, match="singular"):
        assert np.all(np.isfinite(pca.score_samples(X[:10])))


def test_bad_input_raises_clear_errors():
    X = _correlated(0, 10, 4)
    with pytest.raises(ValueError, match=r"n_components=5 exceeds min\(n_samples, n_features\)=4"):
        PCA(5).fit(X)
    with pytest.raises(ValueError, match="n_components=11 exceeds"):
        PCA(11).fit(_correlated(0, 10, 12))
    for kwargs in ({"n_components": "all"}, {"n_components": 1.5}, {"svd_solver": "arpack"},
                   {"n_components": 0.5, "svd_solver": "randomized"}):
        with pytest.raises(ValueError, match="PCA: "):
            PCA(**kwargs)
    with pytest.raises(ValueError, match="PCA.fit: X contains NaN"):
        PCA(2).fit(np.where(np.eye(10, 4) > 0, np.inf, X))
    pca = PCA(2).fit(X)
    with pytest.raises(ValueError, match="PCA.transform: X has 3 features but the model was fitted with 4"):
        pca.transform(X[:, :3])
    with pytest.raises(ValueError, match="PCA.inverse_transform: X has 3 features"):
        pca.inverse_transform(np.zeros((1, 3)))
    with pytest.raises(NotFittedError, match="not fitted"):
        PCA(2).score_samples(X)


# ------------------------------------------------------------------ LatentDensity
def test_latent_gaussian_code_equals_the_ppca_with_refitted_variances():
    stats = pytest.importorskip("scipy.stats")
    X = _correlated(5, 200, 5)
    code_density = GaussianMixture(1, covariance_type="diag", reg_covar=0.0, random_state=0)
    model = LatentDensity(PCA(2), code_density).fit(X)
    pca, n = model.reducer, len(X)
    # The one-component mixture fits the codes' ML variances lambda (n-1)/n (zero mean).
    lam = pca.explained_variance_ * (n - 1) / n
    W = pca.components_
    C = (W.T * lam) @ W + pca.noise_variance_ * (np.eye(5) - W.T @ W)
    expected = stats.multivariate_normal(pca.mean_, C).logpdf(X)
    np.testing.assert_allclose(model.score_samples(X), expected, rtol=1e-9)


def test_latent_density_is_the_same_over_a_whitened_pca():
    """Whitening scales code i by 1/sqrt(lambda_i); the density of x must not change: the code
    density loses sum_i log sqrt(lambda_i) and the Jacobian of the scaling gives it back. A
    full-covariance Gaussian fitted to the scaled codes is the scaled Gaussian, so both models
    are the same density."""
    X = _correlated(9, 200, 5)
    parts = dict(n_components=1, covariance_type="full", reg_covar=0.0, random_state=0)
    plain = LatentDensity(PCA(2), GaussianMixture(**parts)).fit(X)
    white = LatentDensity(PCA(2, whiten=True), GaussianMixture(**parts)).fit(X)
    Y = _correlated(10, 50, 5)
    np.testing.assert_allclose(white.score_samples(Y), plain.score_samples(Y), rtol=1e-9)


def test_latent_kde_density_integrates_to_one_in_2d():
    X = _correlated(6, 60, 2)
    model = LatentDensity(PCA(1), KDE("silverman")).fit(X)
    axis = np.linspace(-15, 15, 601)
    gx, gy = np.meshgrid(axis, axis, indexing="ij")
    density = np.exp(model.score_samples(np.stack([gx.ravel(), gy.ravel()], axis=1))).reshape(gx.shape)
    # The density is smooth and, with all its derivatives, negligible at the grid's edges (the
    # data lie within 9 of the origin; the widest kernel, sqrt(bandwidth^2 + sigma^2) < 1), so the
    # trapezoid rule's error is far below any power of the spacing (Euler-Maclaurin): measured
    # 2e-9, the same on grids 2 and 4 times finer.
    assert np.trapezoid(np.trapezoid(density, axis, axis=1), axis) == pytest.approx(1.0, abs=1e-6)


def test_latent_samples_lie_in_the_principal_subspace_without_residual():
    X = load_digits("train")[0]
    model = LatentDensity(PCA(12), GaussianMixture(5, random_state=0)).fit(X)
    pca = model.reducer
    plain = model.sample(50, rng=0, residual=False)
    noisy = model.sample(50, rng=0)
    assert plain.shape == noisy.shape == (50, 64)
    np.testing.assert_allclose(pca.inverse_transform(pca.transform(plain)), plain, atol=1e-9)
    # the residual outside the principal subspace is PPCA noise: |r|^2 / sigma^2 ~ chi^2(d - k)
    r = noisy - pca.inverse_transform(pca.transform(noisy))
    dof = 50 * (64 - 12)
    ratio = np.sum(r * r) / pca.noise_variance_ / dof
    assert abs(ratio - 1) < 4 * np.sqrt(2 / dof)
    assert model.score(load_digits("test")[0]) < model.score(X)          # held-out is harder


def test_latent_rejects_unusable_parts():
    with pytest.raises(TypeError, match="reducer must have transform and inverse_transform"):
        LatentDensity(object(), KDE())

    class Identity:
        def transform(self, X):
            return np.asarray(X, dtype=float)

        inverse_transform = transform

    model = LatentDensity(Identity(), KDE(), fit_reducer=False).fit(np.random.default_rng(0).normal(size=(20, 2)))
    assert model.sample(3, rng=0).shape == (3, 2)
    with pytest.raises(TypeError, match="needs a reducer with residual_log_prob"):
        model.score_samples(np.zeros((1, 2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(TypeError, match="fit_reducer=True needs a reducer with fit"):
            LatentDensity(Identity(), KDE())
