"""KDE: parity with scipy.stats.gaussian_kde, normalisation, sampling, cv, bad input."""
import warnings

import numpy as np
import pytest

from minigen.distribution import NotFittedError
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.density import KDE
from minigen.density.kde import _loo_log_likelihood


def _data(seed, n, d):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, d)) @ rng.standard_normal((d, d)) + rng.normal(size=d)


@pytest.mark.parametrize("d", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("rule", ["scott", "silverman"])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_scipy_gaussian_kde(d, rule, weighted):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(d)
    X = _data(d, 200, d)
    Q = 2.0 * rng.standard_normal((60, d)) + X.mean(axis=0)
    w = rng.uniform(0.1, 2.0, len(X)) if weighted else None
    ours = KDE(rule).fit(X, sample_weight=w)
    ref = stats.gaussian_kde(X.T, bw_method=rule, weights=w)
    np.testing.assert_allclose(ours.score_samples(Q), ref.logpdf(Q.T), rtol=1e-10)
    np.testing.assert_allclose(ours.covariance_, ref.covariance, rtol=1e-10)
    assert ours.bandwidth_ == pytest.approx(ref.factor, rel=1e-12)
    assert ours.neff_ == pytest.approx(ref.neff, rel=1e-12)


def test_matches_scipy_above_the_kernel_dispatch_threshold():
    stats = pytest.importorskip("scipy.stats")
    X = _data(7, 400, 3)                         # 400 x 400 pairs: the compiled path when present
    w = np.random.default_rng(7).uniform(0.1, 1.0, len(X))
    ours = KDE("scott").fit(X, sample_weight=w).score_samples(X)
    np.testing.assert_allclose(ours, stats.gaussian_kde(X.T, weights=w).logpdf(X.T), rtol=1e-10)


def test_float32_precision_is_an_opt_in_within_its_bound_and_saved(tmp_path):
    """KDE(precision='float32') scores within the kernel's worst-case bound 90 u (u = 2^-24)
    of the float64 KDE above the dispatch threshold, is a constructor parameter (get_params,
    save/load) and keeps the fit (the bandwidth) in float64."""
    pytest.importorskip("numba")
    from minigen.io import load_model, save_model
    from minigen.kernels._dispatch import choose
    X, Q = _data(9, 600, 2), _data(10, 300, 2)
    exact = KDE("cv").fit(X)
    fast = KDE("cv", precision="float32").fit(X)
    assert fast.bandwidth_ == exact.bandwidth_ and fast.get_params()["precision"] == "float32"
    diff = np.abs(fast.score_samples(Q) - exact.score_samples(Q))
    assert diff.max() <= 90 * 2.0 ** -24
    if choose("log_kernel_sum", Q, len(Q) * len(X)) == "numba":   # the reference is float64
        assert diff.max() > 0
    np.testing.assert_allclose(fast.score_function(Q), exact.score_function(Q), rtol=1e-4,
                               atol=1e-6)
    save_model(fast, tmp_path / "kde.npz")
    loaded = load_model(tmp_path / "kde.npz")
    assert loaded.precision == "float32"
    np.testing.assert_array_equal(loaded.score_samples(Q), fast.score_samples(Q))
    assert KDE().precision == "float64"
    with pytest.raises(ValueError, match="KDE: precision must be one of"):
        KDE(precision="half")


def test_zero_weights_equal_dropping_the_points():
    X = _data(8, 300, 2)
    w = np.random.default_rng(8).uniform(0.1, 1.0, len(X)) * (np.arange(len(X)) % 5 > 0)
    keep = w > 0
    for bandwidth in ("silverman", "cv"):
        full = KDE(bandwidth).fit(X, sample_weight=w)
        kept = KDE(bandwidth).fit(X[keep], sample_weight=w[keep])
        np.testing.assert_allclose(full.score_samples(X), kept.score_samples(X), rtol=1e-10)
        assert full.bandwidth_ == pytest.approx(kept.bandwidth_, rel=1e-8)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(2, 25),
       bandwidth=st.sampled_from(["scott", "silverman", 0.3, 1.0]))
def test_integrates_to_one_1d(seed, n, bandwidth):
    X = _data(seed, n, 1)
    kde = KDE(bandwidth).fit(X)
    h = float(kde.cholesky_[0, 0])
    grid = np.arange(X.min() - 12 * h, X.max() + 12 * h, h / 8)
    assert np.trapezoid(kde.pdf(grid[:, None]), grid) == pytest.approx(1.0, abs=1e-7)


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), n=st.integers(3, 12),
       bandwidth=st.sampled_from(["scott", "silverman", "diag", "full"]))
def test_integrates_to_one_2d(seed, n, bandwidth):
    X = _data(seed, n, 2)
    bw = {"diag": np.array([0.4, 0.7]), "full": np.array([[0.5, 0.2], [0.2, 0.3]])}.get(bandwidth, bandwidth)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)      # n=3 can be near-singular
        kde = KDE(bw).fit(X)
    std = np.sqrt(np.diag(kde.covariance_))
    step = np.linalg.eigvalsh(kde.covariance_).min() ** 0.5 / 4
    axes = [np.arange(X[:, k].min() - 10 * std[k], X[:, k].max() + 10 * std[k], step) for k in range(2)]
    gx, gy = np.meshgrid(*axes, indexing="ij")
    density = kde.pdf(np.stack([gx.ravel(), gy.ravel()], axis=1)).reshape(gx.shape)
    total = np.trapezoid(np.trapezoid(density, axes[1], axis=1), axes[0])
    assert total == pytest.approx(1.0, abs=1e-5)


def test_sample_mean_and_covariance_within_standard_errors():
    rng = np.random.default_rng(3)
    X = _data(3, 50, 2)
    w = rng.uniform(0.0, 1.0, len(X))
    kde = KDE("silverman").fit(X, sample_weight=w)
    S = kde.sample(40_000, rng=7)
    wn = w / w.sum()
    mean = wn @ X
    cov = (X - mean).T @ ((X - mean) * wn[:, None]) + kde.covariance_      # mixture covariance
    se_mean = np.sqrt(np.diag(cov) / len(S))
    assert np.all(np.abs(S.mean(axis=0) - mean) < 4 * se_mean)
    products = (S - mean)[:, :, None] * (S - mean)[:, None, :]
    se_cov = products.std(axis=0) / np.sqrt(len(S))
    assert np.all(np.abs(products.mean(axis=0) - cov) < 4 * se_cov)
    np.testing.assert_array_equal(kde.sample(5, rng=1), kde.sample(5, rng=1))


def test_cv_maximises_leave_one_out_likelihood():
    X = np.random.default_rng(0).standard_normal((150, 2)) * [1.0, 3.0]
    kde = KDE("cv").fit(X)
    w = np.full(len(X), 1 / len(X))

    def loo(factor):
        return _loo_log_likelihood(X, w, np.linalg.cholesky(np.cov(X.T)) * factor)

    best = loo(kde.bandwidth_)
    assert best >= loo(kde.bandwidth_ * 1.05) and best >= loo(kde.bandwidth_ / 1.05)
    assert best > loo(KDE("scott").fit(X).bandwidth_)


def test_score_function_matches_finite_differences():
    X = _data(1, 40, 3)
    kde = KDE(np.array([0.5, 0.8, 1.1])).fit(X)
    Q = X[:5] + 0.3
    eps = 1e-6
    fd = np.stack([(kde.score_samples(Q + eps * e) - kde.score_samples(Q - eps * e)) / (2 * eps)
                   for e in np.eye(3)], axis=1)
    np.testing.assert_allclose(kde.score_function(Q), fd, rtol=1e-6, atol=1e-8)


def test_isotropic_and_score_mean():
    stats = pytest.importorskip("scipy.stats")
    X = _data(2, 30, 2)
    kde = KDE(0.7).fit(X)
    Q = X[:4] + 0.1
    direct = np.log(np.mean([stats.multivariate_normal(x, 0.49 * np.eye(2)).pdf(Q) for x in X], axis=0))
    np.testing.assert_allclose(kde.log_prob(Q), direct, rtol=1e-12)
    assert kde.score(Q) == pytest.approx(direct.mean(), rel=1e-12)


@pytest.mark.parametrize("X", [np.c_[np.arange(10.0), 2 * np.arange(10.0)],   # collinear
                               np.random.default_rng(0).normal(size=(3, 6))])  # d > n
def test_singular_covariance_warns_and_falls_back_to_diagonal(X):
    with pytest.warns(RuntimeWarning, match="singular"):
        kde = KDE("scott").fit(X)
    assert np.count_nonzero(kde.covariance_ - np.diag(np.diag(kde.covariance_))) == 0
    assert np.all(np.isfinite(kde.score_samples(X)))


@pytest.mark.parametrize("bandwidth", [0.0, -1.0, np.inf, np.array([1.0, -0.5]), "gauss", [[[1.0]]]])
def test_bad_bandwidth_is_rejected_at_construction(bandwidth):
    with pytest.raises(ValueError, match="KDE: "):
        KDE(bandwidth)


def test_bad_input_raises_clear_errors():
    X = _data(0, 20, 2)
    for bad in (np.where(np.eye(20, 2) > 0, np.nan, X), np.where(np.eye(20, 2) > 0, np.inf, X)):
        with pytest.raises(ValueError, match="KDE.fit: X contains NaN"):
            KDE().fit(bad)
    with pytest.raises(ValueError, match="sample_weight must be finite and non-negative"):
        KDE().fit(X, sample_weight=np.r_[-1.0, np.ones(19)])
    with pytest.raises(ValueError, match=r"shape \(20,\)"):
        KDE().fit(X, sample_weight=np.ones(5))
    with pytest.raises(ValueError, match=r"vector bandwidth must have shape \(2,\)"):
        KDE(np.ones(3)).fit(X)
    with pytest.raises(ValueError, match="symmetric positive definite"):
        KDE(np.array([[1.0, 2.0], [2.0, 1.0]])).fit(X)
    with pytest.raises(ValueError, match="at least 2 samples"):
        KDE("scott").fit(X[:1])
    kde = KDE().fit(X)
    with pytest.raises(ValueError, match="KDE.score_samples: X has 3 features but the model was fitted with 2"):
        kde.score_samples(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="NaN"):
        kde.score_samples(np.full((1, 2), np.nan))
    assert kde.sample(0, rng=0).shape == (0, 2)
    with pytest.raises(ValueError, match="n must be an int >= 0"):
        kde.sample(-1)
    with pytest.raises(NotFittedError, match="not fitted"):
        KDE().score_samples(X)
