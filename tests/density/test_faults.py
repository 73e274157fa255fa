"""Classical estimators on bad and degenerate data: a usable model or a clear error, never NaN.

Degenerate data (duplicates, constant columns, rank-deficient data), extreme magnitudes,
non-numeric hyper-parameters, ``sample(0)``, and a property test that feeds arbitrary finite
arrays to every estimator.
"""
import warnings

import numpy as np
import pytest

from minigen.distribution import NotFittedError
from minigen.density import KDE, GaussianMixture, KMeans, LatentDensity, PCA

TYPES = ["full", "tied", "diag", "spherical"]


def _data(seed=0, n=60, d=2):
    return np.random.default_rng(seed).standard_normal((n, d)) @ np.array([[1.0, 0.3], [0.0, 0.5]])[:d, :d]


def _estimators():
    """One of each estimator, fresh, with a fixed seed where it has one."""
    return [KDE(), KDE("silverman"), GaussianMixture(2, random_state=0),
            GaussianMixture(2, covariance_type="diag", random_state=0), PCA(1), PCA(None, whiten=True),
            LatentDensity(PCA(1), KDE())]


# ------------------------------------------------------------------ degenerate data
@pytest.mark.parametrize("covariance_type", TYPES)
def test_mixture_collapsing_onto_duplicates_without_reg_covar_says_increase_reg_covar(covariance_type):
    X = np.r_[np.zeros((10, 2)), np.full((10, 2), 3.0)]          # two exact clusters
    gm = GaussianMixture(2, covariance_type=covariance_type, reg_covar=0.0, random_state=0)
    with pytest.raises(ValueError, match="component . has collapsed.*increase reg_covar"):
        gm.fit(X)
    with pytest.raises(NotFittedError):                          # no half-fitted state is left
        gm.score_samples(X)
    gm = GaussianMixture(2, covariance_type=covariance_type, random_state=0).fit(X)
    assert np.all(np.isfinite(gm.score_samples(X))) and np.all(np.isfinite(gm.sample(5, rng=0)))


def test_mixture_on_identical_points_is_an_error_without_reg_covar_and_usable_with_it():
    X = np.ones((20, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                           # k-means: 1 distinct point
        with pytest.raises(ValueError, match="collapsed onto a single point.*increase reg_covar"):
            GaussianMixture(2, reg_covar=0.0, random_state=0).fit(X)
        gm = GaussianMixture(2, random_state=0).fit(X)            # reg_covar=1e-6
    used = np.argmax(gm.weights_)                                 # the other one is empty
    assert gm.weights_[used] == pytest.approx(1.0)
    np.testing.assert_allclose(gm.means_[used], 1.0)
    np.testing.assert_allclose(gm.covariances_, np.stack([1e-6 * np.eye(2)] * 2), rtol=1e-9, atol=1e-20)
    assert np.all(np.isfinite(gm.score_samples(X))) and np.all(np.isfinite(gm.sample(5, rng=0)))


def test_kde_on_identical_points_is_an_error_that_names_the_remedy():
    with pytest.raises(ValueError, match="every column of X is constant.*numeric bandwidth"):
        KDE().fit(np.ones((50, 2)))
    kde = KDE(0.5).fit(np.ones((50, 2)))                          # a given bandwidth is fine
    assert kde.score_samples([[1.0, 1.0]])[0] == pytest.approx(-np.log(2 * np.pi * 0.25))


@pytest.mark.parametrize("n", [10, 50, 400])
def test_kde_constant_column_gets_the_documented_floor_not_rounding_noise(n):
    # A column of 0.1s: its mean is not exactly 0.1 in floating point, so the old covariance
    # kept ~1e-34 of rounding noise there (log p +80 at the data, -1e30 a step away).
    X = np.c_[np.random.default_rng(n).standard_normal(n), np.full(n, 0.1)]
    with pytest.warns(RuntimeWarning, match="singular"):
        kde = KDE().fit(X)
    f2 = kde.bandwidth_ ** 2
    top = np.var(X[:, 0], ddof=1)
    np.testing.assert_allclose(np.diag(kde.covariance_), [top * f2, 1e-6 * top * f2], rtol=1e-12)
    assert np.all(np.isfinite(kde.score_samples(X + [0.0, 0.01])))


def test_pca_whitening_of_rank_one_data_stays_bounded():
    t = np.random.default_rng(0).standard_normal((50, 1))
    X = np.c_[t, 2 * t, -t] + [3.0, 4.0, 5.0]                     # rank 1 after centring
    for solver in ("full", "covariance_eigh"):
        pca = PCA(3, whiten=True, svd_solver=solver).fit(X)
        Z = pca.transform(X)
        assert np.all(np.isfinite(Z)) and np.abs(Z).max() < 1e3
        assert np.std(Z[:, 0], ddof=1) == pytest.approx(1.0, rel=1e-9)   # the real axis is whitened
        np.testing.assert_allclose(pca.inverse_transform(Z), X, atol=1e-9)


def test_pca_whitening_clamps_a_zero_variance_relative_to_the_largest():
    pca = PCA(2, whiten=True).fit(_data())
    pca.explained_variance_ = np.array([4.0, 0.0])                # a component with no variance
    eps = np.finfo(np.float64).eps
    np.testing.assert_allclose(pca._whitening_scale(), [2.0, 2.0 * eps])
    assert np.all(np.isfinite(pca.transform(_data(1))))


def test_whitened_latent_density_uses_the_jacobian_of_the_clamped_scale():
    """z = y / s with s the (clamped) whitening scale, so log p(x) is the same as with the
    unwhitened code y and a KDE whose bandwidth is scaled by s (change of variables)."""
    t = np.random.default_rng(0).standard_normal((60, 1))
    X = np.c_[t, 2 * t] + [3.0, 4.0]                               # rank 1: s_2 is clamped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        white = LatentDensity(PCA(2, whiten=True), KDE(0.5)).fit(X)
        s = white.reducer._whitening_scale()
        plain = LatentDensity(PCA(2), KDE(0.5 * s)).fit(X)
        np.testing.assert_allclose(white.score_samples(X[:5]), plain.score_samples(X[:5]), rtol=1e-9)


def test_pca_on_identical_points_is_an_error():
    with pytest.raises(ValueError, match="every column of X is constant"):
        PCA().fit(np.full((10, 3), 0.1))


# ------------------------------------------------------------------ extreme magnitudes
@pytest.mark.parametrize("scale", [1e160, 1e300])
def test_overflowing_magnitudes_are_rejected_at_fit(scale):
    X = _data() * scale
    for est in _estimators() + [KMeans(2, random_state=0)]:
        with pytest.raises(ValueError, match=r"overflow float64.*rescale X"):
            est.fit(X)


def test_underflowing_variation_is_rejected_at_fit():
    X = np.c_[_data()[:, 0], 1e-200 * _data(1)[:, 0]]            # squares of 1e-200 underflow
    for est in _estimators() + [KMeans(2, random_state=0)]:
        with pytest.raises(ValueError, match=r"column 1 of X varies by only .*rescale X"):
            est.fit(X)


@pytest.mark.parametrize("scale", [1e-100, 1e100])
def test_large_and_small_but_representable_scales_fit_equivariantly(scale):
    """log p_{cX}(c x) = log p_X(x) - d log c for the scale-equivariant estimators."""
    X, Q = _data(0), _data(1, n=5)
    for make in (KDE, lambda: PCA(1), lambda: GaussianMixture(2, reg_covar=0.0, random_state=0)):
        plain, scaled = make().fit(X), make().fit(X * scale)
        np.testing.assert_allclose(scaled.score_samples(Q * scale),
                                   plain.score_samples(Q) - 2 * np.log(scale), rtol=1e-9)
    km = KMeans(3, random_state=0)
    np.testing.assert_array_equal(km.fit(X * scale).labels_, KMeans(3, random_state=0).fit(X).labels_)


# ------------------------------------------------------------------ arguments
@pytest.mark.parametrize("make, name", [
    (lambda: KMeans(tol="a"), "tol"), (lambda: KMeans(n_clusters="3"), "n_clusters"),
    (lambda: KMeans(max_iter=2.5), "max_iter"), (lambda: KMeans(n_init=None), "n_init"),
    (lambda: GaussianMixture(tol="a"), "tol"), (lambda: GaussianMixture(reg_covar="1e-6"), "reg_covar"),
    (lambda: GaussianMixture(max_iter=-1), "max_iter"), (lambda: GaussianMixture(n_init=1.5), "n_init"),
    (lambda: GaussianMixture(n_components=[2]), "n_components"),
    (lambda: GaussianMixture(tol=float("nan")), "tol"),
    (lambda: PCA(n_components="3"), "n_components"), (lambda: PCA(svd_solver=3), "svd_solver"),
    (lambda: GaussianMixture(covariance_type=np.array([1, 2])), "covariance_type"),
    (lambda: GaussianMixture(init_params=["kmeans"]), "init_params"),
    (lambda: KMeans(init=np.zeros((2, 2))), "init"),
])
def test_non_numeric_hyper_parameters_are_clear_errors_naming_the_argument(make, name):
    with pytest.raises(ValueError, match=rf"^(KMeans|GaussianMixture|PCA): {name} must be"):
        make()


def test_sample_extras_after_rng_are_keyword_only():
    X = _data()
    with pytest.raises(TypeError):
        GaussianMixture(2, random_state=0).fit(X).sample(3, 0, True)
    with pytest.raises(TypeError):
        LatentDensity(PCA(1), KDE()).fit(X).sample(3, 0, False)


def test_sample_residual_rejects_a_negative_count():
    pca = PCA(1).fit(_data())
    with pytest.raises(ValueError, match="PCA.sample_residual: n must be an int >= 0, got -1"):
        pca.sample_residual(-1)
    assert pca.sample_residual(0).shape == (0, 2)


@pytest.mark.parametrize("index", range(7))
def test_sample_zero_is_an_empty_array_with_the_data_width(index):
    est = _estimators()[index].fit(_data(n=40))
    out = est.sample(0, rng=0)
    assert out.shape == (0, 2) and out.dtype == np.float64


# ------------------------------------------------------------------ arbitrary finite data
hypothesis = pytest.importorskip("hypothesis")
from hypothesis import given, settings, strategies as st          # noqa: E402
from hypothesis.extra import numpy as hnp                          # noqa: E402


@st.composite
def _awkward_arrays(draw):
    """Small arrays of any finite float64 (huge, tiny, subnormal, zero), sometimes with a
    constant column, duplicated rows, or a single common scale."""
    n, d = draw(st.integers(2, 8)), draw(st.integers(1, 3))
    X = draw(hnp.arrays(np.float64, (n, d), elements=st.floats(allow_nan=False, allow_infinity=False)))
    if draw(st.booleans()):
        X[:, draw(st.integers(0, d - 1))] = draw(st.floats(-1e6, 1e6))
    if draw(st.booleans()):
        X[n // 2:] = X[: n - n // 2]
    if draw(st.booleans()):
        X = np.random.default_rng(n).standard_normal((n, d)) * draw(st.sampled_from([1e-300, 1e-150, 1e150, 1e300, 1.0]))
    return X


@settings(max_examples=25, deadline=None)
@given(X=_awkward_arrays(), index=st.integers(0, 7))
def test_any_finite_data_gives_a_clear_error_or_a_finite_model(X, index):
    est = (_estimators() + [KMeans(2, random_state=0)])[index]
    name = type(est).__name__
    with warnings.catch_warnings(), np.errstate(over="raise", invalid="raise"):
        warnings.simplefilter("ignore")                             # warnings are allowed
        try:
            est.fit(X)
        except ValueError as err:
            assert str(err).startswith(name) or str(err).startswith(("PCA", "KDE")), str(err)
            return
        if isinstance(est, KMeans):
            labels = est.predict(X)
            assert labels.shape == (len(X),) and np.all(np.isfinite(est.cluster_centers_))
            return
        scores, samples = est.score_samples(X), est.sample(4, rng=0)
    assert scores.shape == (len(X),) and np.all(np.isfinite(scores)), scores
    assert samples.shape == (4, X.shape[1]) and np.all(np.isfinite(samples)), samples
