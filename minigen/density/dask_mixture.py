"""KDE and Gaussian mixtures on Dask arrays: the estimator-specific half of the block-wise
path (``minigen.blockwise`` holds the kernel-sum tree, the input checks and the seeded streams).

``KDE`` and ``GaussianMixture`` call in here when their data are a ``dask.array.Array``; the
results equal the in-memory ones to float64 rounding.

* KDE: moments in two passes (the mean, then the covariance about it), the same factor code as
  in memory (``kde._cholesky_or_diagonal``); scores, score function and leave-one-out CV are
  ``blockwise.log_kernel_sum``; sampling decomposes the mixture over data blocks.
* EM for Gaussian mixtures (Dempster, Laird & Rubin 1977). Per chunk, the E-step and the
  sufficient statistics sum_i s_i log p(x_i), n_k = sum_i s_i r_ik, sum_i s_i r_ik x_i and
  sum_i s_i r_ik (x_i - c_k)(x_i - c_k)^T, centred at the previous means c_k (no cancellation);
  summed over chunks, the M-step recovers Sigma_k = [S2_k - a_k b_k^T - b_k a_k^T + n_k a_k a_k^T]
  / n_k with a_k = mu_k - c_k, b_k = sum_i s_i r_ik x_i - n_k c_k. Initial k-means centres come
  from k-means|| (Bahmani et al. 2012, "Scalable k-means++"): a few passes that each keep a
  point with probability min(1, l D(x)^2 / phi), then a weighted k-means++ on the candidates.
* The extreme-magnitude check (``_validate.check_scale``) runs on per-chunk max |x| and column
  min / max, reduced in one pass.
"""
import numpy as np

from ..backend import as_rng
from ..blockwise import _da, _rows, _spawn, _weights, is_dask, log_kernel_sum
from ..distribution import check_fitted, check_n_samples, logsumexp
from ._validate import check_extremes
from .kde import _cholesky_or_diagonal, _rule_factor
from .kmeans import _squared_distances
from .mixture import covariances_from_precision_cholesky, log_gaussian, precision_cholesky

_KMEANS_ROUNDS = 5                   # k-means|| rounds (Bahmani et al. 2012 find 5 enough)


def _checked_scale(X, where):
    """``check_scale`` on Dask X: max |x| and each column's min and max in one pass of per-chunk
    reductions; returns them."""
    import dask
    top, low, high = dask.compute(abs(X).max(), X.min(axis=0), X.max(axis=0))
    check_extremes(float(top), low, high, X.shape, where)
    return float(top), low, high


# ------------------------------------------------------------------ KDE
def kde_fit(model, X, sample_weight=None):
    """``KDE.fit`` on Dask data: bandwidth_, cholesky_, covariance_, neff_ are plain values;
    data_ and weights_ stay Dask arrays (a KDE is its data). Moments take two passes (the
    mean, then the covariance about it); 'cv' evaluates its leave-one-out likelihood block-wise.
    """
    import dask
    where = "KDE.fit"
    X = _rows(X, where)
    n, d = X.shape
    _, low, high = _checked_scale(X, where)
    w = _weights(sample_weight, X, where)
    h = model._bandwidth
    if isinstance(h, str):
        sum_w2, positive, mean = dask.compute((w ** 2).sum(), (w > 0).sum(), w @ X)
        neff = 1.0 / sum_w2
        if n < 2 or positive < 2:
            raise ValueError(f"{where}: bandwidth={h!r} needs at least 2 samples with "
                             f"positive weight, got {positive}")
        mean = np.where(low == high, low, mean)        # constant columns centre exactly
        Xc = X - mean
        cov = ((Xc.T * w) @ Xc).compute() / (1.0 - sum_w2)
        base = _cholesky_or_diagonal(cov, n, where, stacklevel=4)
        scott = _rule_factor("scott", neff, d)
        factor = (model._cv_factor(X, w, base, scott) if h == "cv"
                  else _rule_factor(h, neff, d))
        model.bandwidth_, model.cholesky_ = factor, base * factor
    else:
        # A numeric bandwidth depends on d alone: the in-memory fit of one point gives it.
        fixed = type(model)(bandwidth=model.bandwidth).fit(np.zeros((1, d)))
        model.bandwidth_, model.cholesky_ = fixed.bandwidth_, fixed.cholesky_
        neff = 1.0 / float((w ** 2).sum().compute())
    model.covariance_ = model.cholesky_ @ model.cholesky_.T
    model.data_, model.weights_, model.neff_, model.n_features_in_ = X, w, neff, d
    return model


def kde_loo_log_likelihood(X, w, chol):
    """sum_i w_i log[sum_{j != i} w_j N(x_i; x_j, L L^T) / (1 - w_i)], block-wise ('cv')."""
    da = _da()
    loo = log_kernel_sum(X, X, chol, w, exclude_self=True, where="KDE.fit")
    with np.errstate(divide="ignore"):
        terms = da.where(w > 0, w * (loo - da.log1p(-w)), 0.0)
    return float(terms.sum().compute())


def _kde_query(model, Q, where):
    check_fitted(model, "cholesky_", where)
    data = model.data_
    X = _rows(data, where, "data_")
    Q = _rows(Q, where, n_features=model.n_features_in_, chunks=max(X.chunks[0]))
    return Q, X, _da().asarray(model.weights_).rechunk((X.chunks[0],))


def kde_score_samples(model, Q):
    """``KDE.score_samples``: a Dask (m,) array for a Dask Q, else a NumPy array."""
    where = "KDE.score_samples"
    Qd, X, w = _kde_query(model, Q, where)
    out = log_kernel_sum(Qd, X, model.cholesky_, w, where=where)
    return out if is_dask(Q) else out.compute()


def kde_score_function(model, Q):
    """``KDE.score_function``: grad log p = sum_b softmax_b(l_b) g_b over data blocks b."""
    where = "KDE.score_function"
    Qd, X, w = _kde_query(model, Q, where)
    out = log_kernel_sum(Qd, X, model.cholesky_, w, want_grad=True, where=where)[:, 1:]
    return out if is_dask(Q) else out.compute()


def _kde_sample_block(x, w, count, chol, seed):
    if count == 0:
        return np.empty((0, x.shape[1]))
    rng = np.random.default_rng(seed)
    index = rng.choice(len(x), size=count, p=w / w.sum())
    return x[index] + rng.standard_normal((count, x.shape[1])) @ chol.T


def kde_sample(model, n, rng=None):
    """``KDE.sample`` on Dask data, a Dask array. Mixture decomposition: n_b ~ Multinomial(n, W_b)
    points from data block b (W_b its weight), each block then drawing j with probability
    w_j / W_b and adding L u; block b draws from child stream b of ``rng``'s SeedSequence."""
    import dask
    da = _da()
    n = check_n_samples(n, "KDE.sample")
    X = _rows(model.data_, "KDE.sample", "data_")
    w = da.asarray(model.weights_).rechunk((X.chunks[0],))
    totals = np.array(dask.compute(*[b.sum() for b in w.to_delayed()]))
    rng = as_rng(rng)
    counts = rng.multinomial(n, totals / totals.sum())
    blocks = [da.from_delayed(dask.delayed(_kde_sample_block)(x, wb, int(c), model.cholesky_,
                                                               child),
                              shape=(int(c), X.shape[1]), dtype=np.float64)
              for x, wb, c, child in zip(X.to_delayed()[:, 0], w.to_delayed(), counts,
                                         _spawn(rng, len(counts)))]
    return da.concatenate(blocks)


# ------------------------------------------------------------------ sums with a row count
def _reduce(per_block, X, n, where):
    """Sum the (1, 1 + L) rows [rows counted, statistics] of ``per_block`` over X's blocks;
    refuse the result unless every one of the n rows was counted."""
    total = per_block.sum(axis=0).compute()
    if total[0] != n:
        raise RuntimeError(f"{where}: the block-wise sum covered {total[0]:.0f} of {n} rows; "
                           "refusing a partial sum")
    return total[1:]


def _packed(x, *parts):
    return np.concatenate([[float(len(x))]] + [np.ravel(p) for p in parts])[None, :]


def _offsets(chunks):
    return np.concatenate([[0], np.cumsum(chunks)]).astype(np.int64)


def _map_rows(function, arrays, length, *args):
    """function(*blocks, *args) per row block of the Dask ``arrays`` (aligned rows, 2-D) ->
    a Dask (n_blocks, length) array of packed statistics."""
    return _da().map_blocks(function, *arrays, *args, meta=np.empty((0, 0)),
                            chunks=((1,) * arrays[0].numblocks[0], (length,)))


# ------------------------------------------------------------------ k-means over chunks
def _sq(x, centers):
    return _squared_distances(x, np.einsum("ij,ij->i", x, x), centers)


def _cost_block(x, centers):
    return _sq(x, centers).min(axis=1).sum()


def _oversample_block(x, centers, phi, ell, offset, seed):
    """Keep each x with probability min(1, ell D(x)^2 / phi); return (points, global rows)."""
    rng = np.random.default_rng(seed)
    keep = np.flatnonzero(rng.uniform(size=len(x)) < ell * _sq(x, centers).min(axis=1) / phi)
    return x[keep], keep + offset


def _nearest_counts(x, centers):
    return np.bincount(np.argmin(_sq(x, centers), axis=1), minlength=len(centers))


def _weighted_kmeans_plusplus(C, weight, k, rng):
    """Greedy k-means++ (Arthur & Vassilvitskii 2007) on points C with multiplicities ``weight``:
    candidates drawn with probability proportional to weight D^2; returns k row indices."""
    n_trials = 2 + int(np.log(k))
    chosen = [int(rng.choice(len(C), p=weight / weight.sum()))]
    closest = _sq(C, C[chosen])[:, 0]
    for _ in range(1, k):
        potential = weight * closest
        total = potential.sum()
        if total <= 0:
            candidates = rng.integers(len(C), size=n_trials)
        else:
            candidates = np.minimum(np.searchsorted(np.cumsum(potential),
                                                    rng.uniform(0, total, n_trials), "right"),
                                    len(C) - 1)
        trial = np.minimum(closest[:, None], _sq(C, C[candidates]))
        best = int(np.argmin((weight[:, None] * trial).sum(axis=0)))
        chosen.append(int(candidates[best]))
        closest = trial[:, best]
    return np.asarray(chosen)


def kmeans_parallel(X, k, rng):
    """k-means|| seeding (Bahmani et al. 2012): returns (centres (k, d), their global rows).

    One point uniformly at random; then ``_KMEANS_ROUNDS`` rounds, each a pass for the cost
    phi = sum_x D(x)^2 and a pass keeping x with probability min(1, 2k D(x)^2 / phi); each
    candidate is weighted by the points nearest to it, and a weighted k-means++ picks k of them.
    """
    import dask
    rng = as_rng(rng)
    n = X.shape[0]
    blocks, offsets = X.to_delayed()[:, 0], _offsets(X.chunks[0])
    rows = np.array([int(rng.integers(n))])
    C = X[rows].compute()
    for _ in range(_KMEANS_ROUNDS):
        phi = float(sum(dask.compute(*[dask.delayed(_cost_block)(b, C) for b in blocks])))
        if phi <= 0:
            break
        found = dask.compute(*[dask.delayed(_oversample_block)(b, C, phi, 2 * k, o, child)
                               for b, o, child in zip(blocks, offsets, _spawn(rng, len(blocks)))])
        C = np.concatenate([C] + [f[0] for f in found])
        rows = np.concatenate([rows] + [f[1] for f in found])
    if len(C) < k:                       # fewer distinct candidates than k: add random rows
        extra = rng.choice(n, size=k - len(C), replace=False)
        C, rows = np.concatenate([C, X[np.sort(extra)].compute()]), np.concatenate([rows, np.sort(extra)])
    weight = sum(dask.compute(*[dask.delayed(_nearest_counts)(b, C) for b in blocks]))
    chosen = _weighted_kmeans_plusplus(C, weight.astype(np.float64), k, rng)
    return C[chosen].copy(), rows[chosen]


def _lloyd_block(x, centers):
    D = _sq(x, centers)
    labels = np.argmin(D, axis=1)
    k = len(centers)
    sums = np.stack([np.bincount(labels, weights=x[:, j], minlength=k)
                     for j in range(x.shape[1])], axis=1)
    return _packed(x, np.bincount(labels, minlength=k), sums)


def _worst_block(x, centers, count):
    """The ``count`` points of the block farthest from their nearest centre, with distances."""
    dist = _sq(x, centers).min(axis=1)
    top = np.argsort(dist)[::-1][:count]
    return dist[top], x[top]


def kmeans(X, k, rng, max_iter=300, tol=1e-4):
    """Lloyd's algorithm over chunks from k-means|| seeds, with ``KMeans``'s stopping rule
    (total squared centre shift <= tol * mean feature variance) and its re-seeding of empty
    clusters at the worst-fit points. Returns the centres (k, d)."""
    import dask
    n, d = X.shape
    tol = tol * float(X.var(axis=0).mean().compute())
    centers = kmeans_parallel(X, k, rng)[0]
    for _ in range(max_iter):
        stats = _reduce(_map_rows(_lloyd_block, [X], 1 + k + k * d, centers), X, n, "kmeans")
        counts, sums = stats[:k], stats[k:].reshape(k, d)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            found = dask.compute(*[dask.delayed(_worst_block)(b, centers, len(empty))
                                   for b in X.to_delayed()[:, 0]])
            dist, points = np.concatenate([f[0] for f in found]), np.concatenate([f[1] for f in found])
            new[empty] = points[np.argsort(dist)[::-1][:len(empty)]]
        shift = np.sum((new - centers) ** 2)
        centers = new
        if shift <= tol:
            break
    return centers


# ------------------------------------------------------------------ Gaussian mixtures
def _e_step(x, weights, means, prec_chol, covariance_type):
    joint = log_gaussian(x, means, prec_chol, covariance_type)
    with np.errstate(divide="ignore"):
        joint += np.log(weights)
    log_norm = logsumexp(joint, axis=1)
    return log_norm, np.exp(joint - log_norm[:, None])


def _initial_resp(x, block, kind, K, info):
    """Initial responsibilities of one block: 'nearest' (one-hot to the nearest of the centres
    ``info``), 'rows' (one-hot at the global rows info = (rows, block offsets)), 'uniform'
    (uniform, normalised, from child stream info[block])."""
    if kind == "nearest":
        return np.eye(K)[np.argmin(_sq(x, info), axis=1)]
    if kind == "rows":
        rows, offsets = info
        resp = np.zeros((len(x), K))
        local = rows - offsets[block]
        inside = (local >= 0) & (local < len(x))
        resp[local[inside], np.flatnonzero(inside)] = 1.0
        return resp
    resp = np.random.default_rng(info[block]).uniform(size=(len(x), K))
    return resp / resp.sum(axis=1, keepdims=True)


def _em_block(x, s, source, centers, covariance_type, block_id=None):
    """[rows, sum s log p, n_k, sum s r x, sum s r (x - c)(x - c)^T (or its diagonal)] of a block.
    ``source``: ('params', weights, means, prec_chol) for the E-step, or ('init', ...)."""
    s = s[:, 0]
    if source[0] == "params":
        log_norm, resp = _e_step(x, *source[1:], covariance_type)
        ll = s @ log_norm
    else:
        resp, ll = _initial_resp(x, block_id[0], *source[1:]), 0.0
    resp *= s[:, None]
    K = resp.shape[1]
    second = []
    for k in range(K):
        D = x - centers[k]
        second.append(D.T @ (D * resp[:, k:k + 1]) if covariance_type in ("full", "tied")
                      else resp[:, k] @ (D * D))
    return _packed(x, [ll], resp.sum(axis=0), resp.T @ x, np.array(second))


def _em_statistics(model, X, s, source, centers):
    K, d = model.n_components, X.shape[1]
    moment = d * d if model.covariance_type in ("full", "tied") else d
    stats = _reduce(_map_rows(_em_block, [X, s[:, None]], 2 + K + K * d + K * moment, source,
                              centers, model.covariance_type), X, X.shape[0],
                    "GaussianMixture.fit")
    ll, nk = stats[0], stats[1:1 + K]
    sx = stats[1 + K:1 + K + K * d].reshape(K, d)
    second = stats[1 + K + K * d:].reshape((K, d, d) if moment == d * d else (K, d))
    return ll, nk, sx, second


def _parameters(model, nk_raw, sx, second, centers):
    """The M-step from the statistics (module docstring): (n_k, means, covariances)."""
    ct, d = model.covariance_type, sx.shape[1]
    nk = nk_raw + 10 * np.finfo(np.float64).eps
    means = sx / nk[:, None]
    a, b = means - centers, sx - nk_raw[:, None] * centers
    if ct in ("full", "tied"):
        outer = lambda u, v: u[:, :, None] * v[:, None, :]
        C = second - outer(a, b) - outer(b, a) + nk_raw[:, None, None] * outer(a, a)
        covariances = C / nk[:, None, None] if ct == "full" else C.sum(axis=0) / nk.sum()
        covariances[..., np.arange(d), np.arange(d)] += model.reg_covar
    else:
        covariances = (second - 2 * a * b + nk_raw[:, None] * a * a) / nk[:, None] + model.reg_covar
        if ct == "spherical":
            covariances = covariances.mean(axis=1)
    return nk, means, covariances


def _initialize(model, X, s, inits, rng, resolution):
    """``GaussianMixture._initialize`` over chunks: initial responsibilities per block (k-means
    labels from ``kmeans``, rows chosen by k-means|| or at random, or uniform draws), then two
    passes (n_k and means; the covariances about those means)."""
    n, K = X.shape[0], model.n_components
    if any(v is None for v in inits.values()):
        kind = model.init_params
        if kind == "kmeans":
            source = ("init", "nearest", K, kmeans(X, K, rng))
        elif kind == "random":
            source = ("init", "uniform", K, _spawn(rng, X.numblocks[0]))
        else:
            rows = (rng.choice(n, size=K, replace=False) if kind == "random_from_data"
                    else kmeans_parallel(X, K, rng)[1])
            source = ("init", "rows", K, (rows, _offsets(X.chunks[0])))
        _, nk, sx, _ = _em_statistics(model, X, s, source, np.zeros((K, X.shape[1])))
        centers = sx / (nk + 10 * np.finfo(np.float64).eps)[:, None]
        _, nk, sx, second = _em_statistics(model, X, s, source, centers)
        nk, model.means_, covariances = _parameters(model, nk, sx, second, centers)
        model.weights_ = nk / n
        model.precisions_cholesky_ = precision_cholesky(covariances, model.covariance_type,
                                                        "GaussianMixture.fit", resolution)
    for name, attribute in (("weights_init", "weights_"), ("means_init", "means_"),
                            ("precisions_init", "precisions_cholesky_")):
        if inits[name] is not None:
            setattr(model, attribute, inits[name].copy())
    model.covariances_ = covariances_from_precision_cholesky(model.precisions_cholesky_,
                                                             model.covariance_type)


def _em_step(model, X, s, resolution):
    """One EM iteration over the chunks; returns sum_i s_i log p(x_i) before the M-step."""
    source = ("params", model.weights_, model.means_, model.precisions_cholesky_)
    ll, nk, sx, second = _em_statistics(model, X, s, source, model.means_)
    nk, model.means_, model.covariances_ = _parameters(model, nk, sx, second, model.means_)
    model.weights_ = nk / nk.sum()
    model.precisions_cholesky_ = precision_cholesky(model.covariances_, model.covariance_type,
                                                    "GaussianMixture.fit", resolution)
    return ll


def _best_run(model, X, s, inits, rng, resolution):
    """``GaussianMixture._best_run`` with the E- and M-steps over chunks."""
    n, best = X.shape[0], None
    for _ in range(model.n_init):
        _initialize(model, X, s, inits, rng, resolution)
        lower_bound, bounds, converged, n_iter = -np.inf, [], False, 0
        if model.max_iter == 0:
            source = ("params", model.weights_, model.means_, model.precisions_cholesky_)
            lower_bound = float(_em_statistics(model, X, s, source, model.means_)[0] / n)
        for n_iter in range(1, model.max_iter + 1):
            previous = lower_bound
            lower_bound = float(_em_step(model, X, s, resolution) / n)
            bounds.append(lower_bound)
            if abs(lower_bound - previous) < model.tol:
                converged = True
                break
        if best is None or lower_bound > best[0]:
            best = (lower_bound, np.array(bounds), converged, n_iter, model.weights_,
                    model.means_, model.covariances_, model.precisions_cholesky_)
    return best


def gmm_fit(model, X, sample_weight=None):
    """``GaussianMixture.fit`` on a Dask array: the same EM, one pass over the chunks per
    iteration; the fitted attributes are plain NumPy arrays."""
    where = "GaussianMixture.fit"
    X = _rows(X, where)
    n, d = X.shape
    top = _checked_scale(X, where)[0]
    if model.n_components > n:
        raise ValueError(f"{where}: n_components={model.n_components} exceeds n_samples={n}")
    # As in memory: the variance rounding alone produces at this magnitude.
    resolution = (4 * np.finfo(np.float64).eps * top) ** 2
    s = _weights(sample_weight, X, where) * n
    inits = model._check_inits(d)
    rng = as_rng(model.random_state)
    return model._keep_best(lambda: _best_run(model, X, s, inits, rng, resolution), d,
                            stacklevel=4)


def score_rows(method, X, where):
    """A per-row method (e.g. ``GaussianMixture.score_samples``) mapped over Dask row blocks."""
    X = _rows(X, where)
    return X.map_blocks(method, drop_axis=1, meta=np.empty(0))
