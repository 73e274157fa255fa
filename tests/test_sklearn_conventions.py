"""The scikit-learn conventions the classical estimators follow.

get_params / set_params from the constructor (so clone, Pipeline and GridSearchCV work),
NotFittedError from every method that needs a fit, ConvergenceWarning, random_state / rng
types, fit_predict, GaussianMixture(max_iter=0), PCA's n_components and dtype rules, and a
fitted state made only of constructor parameters and public ``_`` attributes (what
save_model stores).
"""
import warnings

import numpy as np
import pytest

from minigen.distribution import Configurable, ConvergenceWarning, NotFittedError
from minigen.density import KDE, GaussianMixture, KMeans, LatentDensity, PCA


def _blobs(seed=0, n=300):
    rng = np.random.default_rng(seed)
    centres = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    return centres[rng.integers(0, 3, n)] + rng.standard_normal((n, 2))


def _fitted():
    X = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return [KDE().fit(X), KDE(np.array([0.5, 0.8])).fit(X), KDE("cv").fit(X[:80]),
                GaussianMixture(3, random_state=0).fit(X),
                GaussianMixture(2, covariance_type="tied", max_iter=3, random_state=0).fit(X),
                PCA(1).fit(X), PCA(2, whiten=True).fit(X),
                LatentDensity(PCA(1), GaussianMixture(2, random_state=0)).fit(X)]


# ------------------------------------------------------------------ parameters
def test_get_params_returns_the_constructor_arguments_and_set_params_rebuilds():
    kde = KDE("silverman")
    assert kde.get_params() == {"bandwidth": "silverman", "precision": "float64"}
    assert kde.set_params(bandwidth=0.5) is kde
    np.testing.assert_allclose(kde.fit(_blobs()).covariance_, 0.25 * np.eye(2))   # _bandwidth rebuilt
    latent = LatentDensity(PCA(1), KDE())
    latent.set_params(density__bandwidth=0.3, reducer__whiten=True)
    assert latent.density.bandwidth == 0.3 and latent.reducer.whiten
    assert latent.get_params()["density__bandwidth"] == 0.3
    with pytest.raises(ValueError, match="KDE.set_params: unknown parameter 'h'"):
        KDE().set_params(h=1.0)
    with pytest.raises(ValueError, match="KDE: bandwidth must be one of"):   # checked on rebuild
        KDE().set_params(bandwidth="wide")


def test_clone_gives_an_unfitted_copy_with_the_same_parameters():
    base = pytest.importorskip("sklearn.base")
    for est in _fitted():
        copy = base.clone(est)
        assert type(copy) is type(est) and repr(copy) == repr(est)
        assert not [name for name in vars(copy) if name.endswith("_") and not name.startswith("_")]
        copy.fit(_blobs(1))                      # and it fits


def test_grid_search_chooses_the_kde_bandwidth_by_held_out_likelihood():
    model_selection = pytest.importorskip("sklearn.model_selection")
    X = np.random.default_rng(0).standard_normal((150, 2))
    grid = [0.05, 0.4, 4.0]
    search = model_selection.GridSearchCV(KDE(), {"bandwidth": grid}, cv=3).fit(X)
    assert search.best_params_ == {"bandwidth": 0.4}
    assert search.best_estimator_.bandwidth == 0.4 and search.best_estimator_.covariance_[0, 0] == pytest.approx(0.16)
    # the score is the mean held-out log-likelihood, fold by fold
    folds = list(model_selection.KFold(3).split(X))
    for h, score in zip(grid, search.cv_results_["mean_test_score"]):
        held_out = [KDE(h).fit(X[train]).score(X[test]) for train, test in folds]
        assert score == pytest.approx(np.mean(held_out), rel=1e-12)


def test_grid_search_over_mixture_components_and_a_pipeline():
    model_selection = pytest.importorskip("sklearn.model_selection")
    pipeline = pytest.importorskip("sklearn.pipeline")
    X = _blobs()
    search = model_selection.GridSearchCV(GaussianMixture(random_state=0),
                                          {"n_components": [1, 3]}, cv=3).fit(X)
    assert search.best_params_ == {"n_components": 3}
    pipe = pipeline.Pipeline([("pca", PCA(2, whiten=True)), ("kde", KDE())]).fit(X)
    pca = PCA(2, whiten=True).fit(X)
    expected = KDE().fit(pca.transform(X)).score_samples(pca.transform(X[:5]))
    np.testing.assert_allclose(pipe.score_samples(X[:5]), expected, rtol=1e-12)
    labels = pipeline.Pipeline([("pca", PCA(2)), ("km", KMeans(3, random_state=0))]).fit_predict(X)
    np.testing.assert_array_equal(labels, KMeans(3, random_state=0).fit(PCA(2).fit_transform(X)).labels_)


# ------------------------------------------------------------------ not fitted
UNFITTED = [
    (KDE, ["score_samples", "log_prob", "score", "pdf", "score_function"], ["sample"]),
    (lambda: GaussianMixture(2), ["score_samples", "log_prob", "score", "predict",
                                  "predict_proba", "bic", "aic"], ["sample"]),
    (lambda: PCA(1), ["transform", "score_samples", "log_prob", "score", "residual_log_prob"],
     ["sample", "sample_residual"]),
    (lambda: KMeans(2), ["predict"], []),
    (lambda: LatentDensity(PCA(1), KDE()), ["score_samples", "log_prob", "score"], ["sample"]),
]


@pytest.mark.parametrize("make, on_data, on_count", UNFITTED)
def test_every_method_that_needs_a_fit_raises_not_fitted_error(make, on_data, on_count):
    assert issubclass(NotFittedError, ValueError) and issubclass(NotFittedError, AttributeError)
    X = _blobs(n=10)
    calls = [(name, (X,)) for name in on_data] + [(name, (3,)) for name in on_count]
    for name, args in calls:
        checked_by = "score_samples" if name in ("log_prob", "score", "pdf") else name
        with pytest.raises(NotFittedError, match=rf"\.{checked_by}: this \w+ is not fitted yet"):
            getattr(make(), name)(*args)


def test_not_fitted_error_on_properties_and_inverse_transform():
    with pytest.raises(NotFittedError, match="GaussianMixture.precisions_"):
        GaussianMixture(2).precisions_
    with pytest.raises(NotFittedError, match="PCA.inverse_transform"):
        PCA(1).inverse_transform(np.zeros((2, 1)))
    with pytest.raises(NotFittedError, match="PCA.get_covariance"):
        PCA(1).get_covariance()
    assert not hasattr(PCA(1), "components_")        # AttributeError semantics for hasattr


# ------------------------------------------------------------------ convergence
def test_em_and_kmeans_warn_when_they_stop_at_max_iter():
    assert issubclass(ConvergenceWarning, UserWarning)
    X = _blobs()
    with pytest.warns(ConvergenceWarning, match=r"GaussianMixture.fit: EM did not converge in max_iter=2"):
        gm = GaussianMixture(3, max_iter=2, tol=0.0, random_state=0).fit(X)
    assert not gm.converged_ and gm.n_iter_ == 2
    with pytest.warns(ConvergenceWarning, match=r"KMeans.fit: .* did not converge in max_iter=1"):
        KMeans(3, init="random", max_iter=1, tol=0.0, random_state=0).fit(X)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)     # converged fits stay quiet
        assert GaussianMixture(3, random_state=0).fit(X).converged_
        KMeans(3, random_state=0).fit(X)


def test_kmeans_warns_when_x_has_fewer_distinct_points_than_clusters():
    X = np.repeat([[0.0, 0.0], [1.0, 1.0]], 10, axis=0)
    with pytest.warns(ConvergenceWarning, match=r"only 2 distinct clusters for n_clusters=3 \(X has 2 distinct points\)"):
        km = KMeans(3, random_state=0).fit(X)
    assert len(np.unique(km.labels_)) == 2 and km.inertia_ == 0.0


# ------------------------------------------------------------------ randomness
@pytest.mark.parametrize("kind", ["int", "Generator", "RandomState"])
def test_random_state_and_rng_accept_int_generator_and_random_state(kind):
    make = {"int": lambda: 3, "Generator": lambda: np.random.default_rng(3),
            "RandomState": lambda: np.random.RandomState(3)}[kind]
    X = _blobs()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        runs = [(GaussianMixture(3, init_params="random_from_data", max_iter=5, random_state=make()).fit(X).means_,
                 KMeans(3, init="random", random_state=make()).fit(X).cluster_centers_,
                 PCA(1, svd_solver="randomized", random_state=make()).fit(X).components_,
                 KDE().fit(X).sample(5, rng=make()),
                 GaussianMixture(3, random_state=0).fit(X).sample(5, rng=make()),
                 PCA(1).fit(X).sample(5, rng=make()),
                 LatentDensity(PCA(1), KDE()).fit(X).sample(5, rng=make()))
                for _ in range(2)]
    for first, second in zip(*runs):
        np.testing.assert_array_equal(first, second)     # the same seed, the same numbers
    GaussianMixture(2, random_state=None).fit(X)
    KDE().fit(X).sample(2, rng=None)


@pytest.mark.parametrize("bad", ["abc", 1.5, [1, 2]])
def test_a_junk_random_state_or_rng_is_a_clear_error_naming_it(bad):
    X = _blobs(n=30)
    for call, name in ((lambda: GaussianMixture(2, random_state=bad).fit(X), "GaussianMixture.fit: random_state"),
                       (lambda: KMeans(2, random_state=bad).fit(X), "KMeans.fit: random_state"),
                       (lambda: PCA(1, svd_solver="randomized", random_state=bad).fit(X), "PCA.fit: random_state"),
                       (lambda: KDE().fit(X).sample(2, rng=bad), "KDE.sample: rng"),
                       (lambda: GaussianMixture(1).fit(X).sample(2, rng=bad), "GaussianMixture.sample: rng"),
                       (lambda: PCA(1).fit(X).sample(2, rng=bad), "PCA.sample: rng")):
        with pytest.raises(TypeError, match=f"{name} must be None, an int seed"):
            call()


# ------------------------------------------------------------------ fit_predict and max_iter=0
def test_fit_predict_equals_fit_then_predict():
    X = _blobs()
    labels = GaussianMixture(3, random_state=0).fit_predict(X)
    np.testing.assert_array_equal(labels, GaussianMixture(3, random_state=0).fit(X).predict(X))
    assert len(np.unique(labels)) == 3
    km = KMeans(3, random_state=0)
    labels = km.fit_predict(X)
    np.testing.assert_array_equal(labels, km.labels_)
    np.testing.assert_array_equal(labels, km.predict(X))


def test_mixture_max_iter_zero_only_initialises():
    X = _blobs()
    means, weights = np.array([[1.0, 1.0], [5.0, 0.0], [0.0, 5.0]]), np.array([0.2, 0.3, 0.5])
    precisions = np.stack([np.eye(2) * p for p in (1.0, 2.0, 4.0)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)   # initialising only is not a failure
        gm = GaussianMixture(3, max_iter=0, means_init=means, weights_init=weights,
                             precisions_init=precisions).fit(X)
    np.testing.assert_array_equal(gm.means_, means)
    np.testing.assert_array_equal(gm.weights_, weights)
    np.testing.assert_allclose(gm.precisions_, precisions, rtol=1e-14)
    np.testing.assert_allclose(gm.covariances_, np.linalg.inv(precisions), rtol=1e-14)
    assert gm.n_iter_ == 0 and not gm.converged_ and len(gm.lower_bounds_) == 0
    assert gm.lower_bound_ == pytest.approx(gm.score(X), rel=1e-12)
    one_step = GaussianMixture(3, max_iter=1, means_init=means, weights_init=weights,
                               precisions_init=precisions)
    with pytest.warns(ConvergenceWarning):
        one_step.fit(X)
    assert one_step.lower_bounds_[0] == pytest.approx(gm.lower_bound_, rel=1e-12)


# ------------------------------------------------------------------ PCA
@pytest.mark.parametrize("solver", ["full", "covariance_eigh", "randomized"])
def test_pca_n_components_zero_and_out_of_range_are_rejected_in_fit(solver):
    X = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])
    for n_components, message in ((0, r"n_components=0 must be between 1 and min\(n_samples, n_features\)=2"),
                                  (-1, r"n_components=-1 must be between 1"),
                                  (3, r"n_components=3 exceeds min\(n_samples, n_features\)=2")):
        pca = PCA(n_components, svd_solver=solver, random_state=0)      # constructing is fine
        with pytest.raises(ValueError, match=message):
            pca.fit(X)
        with pytest.raises(ValueError, match=message):
            pca.fit(X.T)


@pytest.mark.parametrize("solver", ["full", "covariance_eigh", "randomized"])
@pytest.mark.parametrize("shape", [(40, 5), (5, 40)])
def test_pca_n_components_none_keeps_min_n_d_with_every_solver(solver, shape):
    X = np.random.default_rng(0).standard_normal(shape)
    pca = PCA(svd_solver=solver, random_state=0).fit(X)
    k = min(shape)
    assert pca.n_components_ == k and pca.components_.shape == (k, shape[1])
    reference = PCA(svd_solver="full").fit(X)
    np.testing.assert_allclose(pca.explained_variance_[:k - 1], reference.explained_variance_[:k - 1],
                               rtol=1e-8)


@pytest.mark.parametrize("solver", ["full", "covariance_eigh", "randomized"])
def test_pca_keeps_float32_and_float64(solver):
    X = np.random.default_rng(0).random((200, 4))
    pca64 = PCA(3, svd_solver=solver, random_state=0).fit(X)
    pca32 = PCA(3, svd_solver=solver, random_state=0).fit(X.astype(np.float32))
    for name in ("components_", "mean_", "explained_variance_", "singular_values_"):
        assert getattr(pca64, name).dtype == np.float64 and getattr(pca32, name).dtype == np.float32
    Z32, Z64 = pca32.transform(X.astype(np.float32)), pca64.transform(X)
    assert Z32.dtype == np.float32 and Z64.dtype == np.float64
    assert pca32.inverse_transform(Z32).dtype == np.float32
    np.testing.assert_allclose(Z32, Z64, atol=1e-5)                   # float32 rounding only
    assert pca32.transform(X).dtype == np.float64                       # float64 in: float64 out


def test_pca_whitening_on_rank_deficient_data_is_finite_with_every_solver():
    """scikit-learn's solver-equivalence check on rank-deficient data, with whitening."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((110, 15)) @ rng.standard_normal((15, 30))
    train, test = X[:100], X[100:]
    full = PCA(svd_solver="full", whiten=True).fit(train)
    eigh = PCA(svd_solver="covariance_eigh", whiten=True).fit(train)
    stable = full.explained_variance_ > 1e-12
    for pca in (full, eigh):
        assert np.all(np.isfinite(pca.transform(train))) and np.all(np.isfinite(pca.transform(test)))
    np.testing.assert_allclose(full.transform(test)[:, stable], eigh.transform(test)[:, stable],
                               rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------ fitted state for save_model
def _rebuild(obj):
    """What save_model / load_model do: constructor parameters (nested objects rebuilt the same
    way), then the public fitted attributes."""
    params = {name: _rebuild(value) if isinstance(value, Configurable) else value
              for name, value in obj.get_params(deep=False).items()}
    copy = type(obj)(**params)
    copy._set_fitted_state(obj._fitted_state())
    return copy


def test_fitted_state_is_public_attributes_that_rebuild_the_model():
    X = _blobs(1, n=50)
    for est in _fitted():
        state = est._fitted_state()
        assert all(isinstance(v, (np.ndarray, int, float, str, bool, tuple, np.generic)) for v in state.values())
        copy = _rebuild(est)
        np.testing.assert_array_equal(copy.score_samples(X), est.score_samples(X))
        np.testing.assert_array_equal(copy.sample(7, rng=0), est.sample(7, rng=0))
    km = KMeans(3, random_state=0).fit(X)
    np.testing.assert_array_equal(_rebuild(km).predict(X), km.predict(X))


def test_save_model_round_trip_when_available(tmp_path):
    import minigen
    if not hasattr(minigen, "save_model"):
        pytest.skip("minigen.save_model is not there yet")
    X = _blobs(1, n=50)
    for i, est in enumerate(_fitted()):
        minigen.save_model(est, tmp_path / f"m{i}.npz")
        loaded = minigen.load_model(tmp_path / f"m{i}.npz")
        np.testing.assert_array_equal(loaded.score_samples(X), est.score_samples(X))
        np.testing.assert_array_equal(loaded.sample(7, rng=0), est.sample(7, rng=0))
