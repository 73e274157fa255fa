"""KDE, Gaussian mixtures and the sample metrics over Dask arrays (minigen.blockwise,
minigen.density.dask_kde, minigen.density.dask_mixture, minigen.metrics._dask).

Every block-wise result is compared with the in-memory one on data split into uneven chunks,
on Dask's default threaded scheduler and on a distributed.LocalCluster of two worker processes
(started and closed here). The fault tests kill a worker process in the middle of a
computation: the answer must still be right, or the error clear.
"""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from minigen import blockwise, metrics
from minigen.density import KDE, GaussianMixture, KMeans, dask_mixture


def test_import_needs_numpy_only():
    code = textwrap.dedent("""
        import sys
        sys.modules["dask"] = None                     # importing dask now fails
        import numpy as np
        import minigen
        from minigen.density import KDE, GaussianMixture
        X = np.random.default_rng(0).normal(size=(50, 2))
        KDE().fit(X).score_samples(X)
        GaussianMixture(2, random_state=0).fit(X)
        minigen.metrics.mmd2(X, X + 1)
        assert not [name for name, module in sys.modules.items()
                    if name.startswith(("dask", "distributed")) and module is not None]
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def da():
    return pytest.importorskip("dask.array")


@pytest.fixture(scope="module")
def client():
    dask = pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    # One crash per task is forgiven (the fault tests rely on it); a second is an error.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                           dashboard_address=":0", silence_logs=40)
        client = distributed.Client(cluster, set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        yield client
        client.close()
        cluster.close()


@pytest.fixture(params=["threads", "distributed"])
def scheduler(request, da):
    import dask
    target = "threads" if request.param == "threads" else request.getfixturevalue("client")
    with dask.config.set(scheduler=target):
        yield request.param


def data(n=300, d=2, rng=0):
    rng = np.random.default_rng(rng)
    centres = np.array([[-4.0, 0.0], [0.0, 4.0], [4.0, 0.0]])[:, :d]
    return centres[rng.integers(3, size=n)] + rng.normal(size=(n, d))


def chunked(da, X, chunks=None):
    """X in uneven row chunks (by default cut at 7/30, 8/30 and 23/30 of its length)."""
    n = len(X)
    chunks = chunks or tuple(np.diff([0, 7 * n // 30, 8 * n // 30, 23 * n // 30, n]))
    return da.from_array(X, chunks=(chunks,) + X.shape[1:])


# ------------------------------------------------------------------ KDE
@pytest.mark.parametrize("bandwidth", ["scott", [0.5, 1.0]])
def test_kde_parity(scheduler, da, bandwidth):
    X, Q = data(), data(120, rng=1)
    w = np.random.default_rng(2).uniform(size=len(X))
    memory = KDE(bandwidth).fit(X, sample_weight=w)
    lazy = KDE(bandwidth).fit(chunked(da, X), sample_weight=chunked(da, w))
    assert isinstance(lazy.cholesky_, np.ndarray) and isinstance(lazy.neff_, float)
    np.testing.assert_allclose(lazy.cholesky_, memory.cholesky_, rtol=1e-13)
    np.testing.assert_allclose(lazy.neff_, memory.neff_, rtol=1e-13)
    expected = memory.score_samples(Q)
    scored = lazy.score_samples(chunked(da, Q, (50, 70)))
    assert blockwise.is_dask(scored) and scored.chunks == ((50, 70),)
    np.testing.assert_allclose(scored.compute(), expected, rtol=1e-13)
    np.testing.assert_allclose(lazy.score_samples(Q), expected, rtol=1e-13)       # NumPy query
    np.testing.assert_allclose(memory.score_samples(chunked(da, Q, (50, 70))).compute(),
                               expected, rtol=1e-13)                               # NumPy data
    np.testing.assert_allclose(lazy.score_function(Q), memory.score_function(Q),
                               rtol=1e-11, atol=1e-12)


def test_kde_cv_bandwidth(da):
    X = data(120, d=1)
    w = np.random.default_rng(4).uniform(size=len(X))
    memory = KDE("cv").fit(X, sample_weight=w)
    lazy = KDE("cv").fit(chunked(da, X, (50, 31, 39)), sample_weight=w)
    assert lazy.bandwidth_ == pytest.approx(memory.bandwidth_, rel=1e-9)
    np.testing.assert_allclose(lazy.score_samples(X), memory.score_samples(X), rtol=1e-9)


def test_kde_sample_is_reproducible_and_weighted(da):
    X = data(400)
    w = np.where(X[:, 0] > 2, 1.0, 0.0)          # only the right-hand cluster
    lazy = KDE(0.1).fit(chunked(da, X), sample_weight=w)
    S = lazy.sample(2000, rng=4)
    assert blockwise.is_dask(S)
    S = S.compute()
    np.testing.assert_array_equal(S, lazy.sample(2000, rng=4).compute())
    target = X[w > 0].mean(axis=0)
    se = np.sqrt((X[w > 0].var(axis=0) + 0.01) / len(S))
    assert np.all(np.abs(S.mean(axis=0) - target) < 4 * se)


def test_bad_input_is_named(da):
    X = data()
    X[200, 1] = np.nan
    with pytest.raises(ValueError, match="KDE.fit: X contains NaN"):
        KDE().fit(chunked(da, X))
    model = KDE().fit(chunked(da, data()))
    with pytest.raises(ValueError, match="KDE.score_samples: X has 3 features"):
        model.score_samples(da.zeros((5, 3)))
    with pytest.raises(ValueError, match="mmd2: X and Y must have the same number"):
        metrics.mmd2(chunked(da, data()), np.zeros((4, 3)))


def test_rows_of_unknown_length_are_counted_first(da):
    """A boolean mask leaves the row chunk sizes unknown (NaN); the estimators and the metrics
    compute them and give the in-memory answer for the selected rows."""
    X, Y = data(), data(200, rng=1)
    D, E = chunked(da, X), chunked(da, Y)
    masked, kept = D[D[:, 0] > 0], X[X[:, 0] > 0]
    assert np.isnan(masked.shape[0])
    weights = chunked(da, np.linspace(1.0, 2.0, len(X)))
    w = weights[D[:, 0] > 0]
    memory = KDE().fit(kept, sample_weight=np.linspace(1.0, 2.0, len(X))[X[:, 0] > 0])
    lazy = KDE().fit(masked, sample_weight=w)
    np.testing.assert_allclose(lazy.cholesky_, memory.cholesky_, rtol=1e-13)
    np.testing.assert_allclose(lazy.score_samples(Y[:20]), memory.score_samples(Y[:20]),
                               rtol=1e-13)
    kw = dict(n_components=2, init_params="random_from_data", random_state=0, tol=1e-8)
    np.testing.assert_allclose(GaussianMixture(**kw).fit(masked).means_,
                               GaussianMixture(**kw).fit(kept).means_, atol=1e-10)
    assert metrics.mmd2(masked, E[E[:, 1] > 0], 1.0) == pytest.approx(
        metrics.mmd2(kept, Y[Y[:, 1] > 0], 1.0), rel=1e-10)


@pytest.mark.parametrize("call", [lambda X: KDE().fit(X),
                                  lambda X: GaussianMixture(2).fit(X),
                                  lambda X: metrics.mmd2(X, X),
                                  lambda X: metrics.sliced_wasserstein(X, X)])
def test_strings_are_the_in_memory_error(da, call):
    words = np.array([["a", "b"], ["c", "d"], ["e", "f"]])
    with pytest.raises(TypeError) as memory:
        call(words)
    with pytest.raises(TypeError) as lazy:
        call(da.from_array(words, chunks=2))
    assert str(lazy.value) == str(memory.value).replace("ndarray", "Array")
    assert "X must be a numeric array" in str(lazy.value)


@pytest.mark.parametrize("estimator", [KDE, lambda: KDE(1.0), lambda: GaussianMixture(2)])
def test_extreme_magnitudes_are_refused_as_in_memory(da, estimator):
    """``check_scale`` on the Dask path: the same error as in memory, before any other work."""
    for scale, column in ((1e160, 0), (1e-160, 1)):      # squares overflow / underflow
        X = data()
        X[:, column] *= scale
        with pytest.raises(ValueError) as memory:
            estimator().fit(X)
        with pytest.raises(ValueError) as lazy:
            estimator().fit(chunked(da, X))
        assert str(lazy.value) == str(memory.value)
        assert "rescale X" in str(lazy.value)


# ------------------------------------------------------------------ Gaussian mixtures
INITS = {"full": np.stack([np.eye(2)] * 3), "tied": np.eye(2), "diag": np.ones((3, 2)),
         "spherical": np.ones(3)}


@pytest.mark.parametrize("covariance_type", ["full", "tied", "diag", "spherical"])
def test_gmm_from_the_same_init(da, covariance_type):
    X = data(400)
    kw = dict(covariance_type=covariance_type, tol=1e-10, max_iter=200, weights_init=np.ones(3) / 3,
              means_init=X[:3], precisions_init=INITS[covariance_type])
    memory = GaussianMixture(3, **kw).fit(X)
    lazy = GaussianMixture(3, **kw).fit(chunked(da, X))
    assert memory.converged_ and lazy.n_iter_ == memory.n_iter_
    for name in ("weights_", "means_", "covariances_", "precisions_cholesky_"):
        assert isinstance(getattr(lazy, name), np.ndarray)
        np.testing.assert_allclose(getattr(lazy, name), getattr(memory, name), atol=1e-10)
    assert lazy.lower_bound_ == pytest.approx(memory.lower_bound_, abs=1e-12)


def test_gmm_weighted_on_a_cluster(scheduler, da):
    X = data(400)
    w = np.random.default_rng(3).uniform(size=len(X))
    kw = dict(tol=1e-8, init_params="random_from_data", random_state=5)
    memory = GaussianMixture(3, **kw).fit(X, sample_weight=w)
    lazy = GaussianMixture(3, **kw).fit(chunked(da, X), sample_weight=chunked(da, w))
    np.testing.assert_allclose(lazy.means_, memory.means_, atol=1e-10)
    np.testing.assert_allclose(lazy.covariances_, memory.covariances_, atol=1e-10)
    scored = lazy.score_samples(chunked(da, X))
    assert blockwise.is_dask(scored)
    np.testing.assert_allclose(scored.compute(), memory.score_samples(X), atol=1e-10)


def test_kmeans_parallel_finds_the_clusters(da):
    X = data(600)
    centres = dask_mixture.kmeans(chunked(da, X, (100, 333, 167)), 3, rng=0)
    expected = KMeans(3, random_state=0).fit(X).cluster_centers_
    order = lambda C: C[np.lexsort(C.T[::-1])]
    np.testing.assert_allclose(order(centres), order(expected), atol=1e-10)


@pytest.mark.parametrize("init_params", ["kmeans", "k-means++", "random"])
def test_gmm_scalable_inits_reach_the_in_memory_optimum(da, init_params):
    X = data(600)
    memory = GaussianMixture(3, tol=1e-10, random_state=0).fit(X)
    lazy = GaussianMixture(3, tol=1e-10, init_params=init_params, random_state=0)
    lazy.fit(chunked(da, X))
    order = np.argsort(lazy.means_[:, 0]), np.argsort(memory.means_[:, 0])
    np.testing.assert_allclose(lazy.means_[order[0]], memory.means_[order[1]], atol=1e-6)
    again = GaussianMixture(3, tol=1e-10, init_params=init_params, random_state=0)
    np.testing.assert_array_equal(again.fit(chunked(da, X)).means_, lazy.means_)


# ------------------------------------------------------------------ metrics and sampling
def test_metrics_parity(scheduler, da):
    X, Y = data(700), data(450, rng=1) + 0.3           # n + m > 1000: the median subsamples
    Xd, Yd = chunked(da, X, (300, 111, 289)), chunked(da, Y, (200, 250))
    assert metrics.mmd2(Xd, Yd) == pytest.approx(metrics.mmd2(X, Y), rel=1e-10)
    assert metrics.mmd2(Xd, Y, bandwidth=[0.5, 2.0], unbiased=False) == pytest.approx(
        metrics.mmd2(X, Y, bandwidth=[0.5, 2.0], unbiased=False), rel=1e-10)
    assert metrics.sliced_wasserstein(Xd, Yd, n_projections=64, rng=3) == pytest.approx(
        metrics.sliced_wasserstein(X, Y, n_projections=64, rng=3), rel=1e-12)


def test_sample_streams_are_independent_and_reproducible(scheduler, da):
    model = GaussianMixture(3, random_state=0).fit(data(300))
    S = blockwise.sample(model, 5000, rng=7, chunk_size=1200)
    assert S.chunks[0] == (1200, 1200, 1200, 1200, 200)
    S = S.compute()
    np.testing.assert_array_equal(S, blockwise.sample(model, 5000, rng=7, chunk_size=1200).compute())
    assert not np.allclose(S[:200], S[1200:1400])               # blocks draw different streams
    mean = model.weights_ @ model.means_
    se = np.sqrt(np.var(S, axis=0) / len(S))
    assert np.all(np.abs(S.mean(axis=0) - mean) < 4 * se)


def test_a_lost_block_is_refused(da, monkeypatch):
    import dask
    X, Q = chunked(da, data()), chunked(da, data(40))
    real = blockwise._pair_block

    def lossy(*args, block_id=None):             # data block 1's contribution goes missing
        rows = real(*args, block_id=block_id)
        return rows[:, :0] if block_id[1] == 1 else rows

    monkeypatch.setattr(blockwise, "_pair_block", lossy)
    with dask.config.set(scheduler="threads"), \
            pytest.raises(RuntimeError, match="covered 290 of 300 data points"):
        blockwise.log_kernel_sum(Q, X, 1.0, where="test").compute()


# ------------------------------------------------------------------ faults on the cluster
def _die_once(block, marker):
    """Kill this worker process the first time any block runs (the marker file says so)."""
    if not os.path.exists(marker):
        open(marker, "w").close()
        os._exit(1)
    return block


def _always_die(block):
    os._exit(1)


def test_killed_worker_still_gives_the_right_answer(client, da, tmp_path):
    import dask
    X, Q = data(), data(100, rng=1)
    marker = str(tmp_path / "killed")
    fragile = chunked(da, X).map_blocks(_die_once, marker, meta=np.empty((0, 0)))
    with dask.config.set(scheduler=client):
        scored = KDE(0.5).fit(chunked(da, X)).score_samples(chunked(da, Q, (30, 70)))
        lazy = KDE(0.5).fit(fragile)
        result = lazy.score_samples(Q)
    assert os.path.exists(marker)                           # a worker really died
    np.testing.assert_allclose(result, KDE(0.5).fit(X).score_samples(Q), rtol=1e-13)
    np.testing.assert_allclose(scored.compute(scheduler="threads"), result, rtol=1e-13)


def test_a_task_that_always_kills_its_worker_is_a_clear_error(da):
    """On a cluster of its own (a worker that dies on every task leaves its nanny restarting),
    forgiving no crash: the fit raises KilledWorker, naming the task, instead of a result."""
    import dask
    distributed = pytest.importorskip("distributed")
    doomed = chunked(da, data()).map_blocks(_always_die, meta=np.empty((0, 0)))
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(n_workers=1, processes=True, threads_per_worker=1,
                                           dashboard_address=":0", silence_logs=50)
    try:
        with distributed.Client(cluster, set_as_default=False) as client, \
                dask.config.set(scheduler=client), \
                pytest.raises(distributed.KilledWorker, match="workers died while running it"):
            KDE().fit(doomed)
    finally:
        cluster.close(timeout=30)
