"""The Dask half of ``GaussianMixture``: the same EM with the E-step and the sufficient
statistics computed chunk by chunk, and its k-means initialisation over chunks; the fitted
attributes are plain NumPy arrays, equal to the in-memory ones to float64 rounding.

* EM (Dempster, Laird & Rubin 1977). Per chunk, the E-step and the sufficient statistics
  sum_i s_i log p(x_i), n_k = sum_i s_i r_ik, sum_i s_i r_ik x_i and
  sum_i s_i r_ik (x_i - c_k)(x_i - c_k)^T, centred at the previous means c_k (no cancellation);
  summed over chunks, the M-step recovers Sigma_k = [S2_k - a_k b_k^T - b_k a_k^T + n_k a_k a_k^T]
  / n_k with a_k = mu_k - c_k, b_k = sum_i s_i r_ik x_i - n_k c_k.
* Initial k-means centres come from k-means|| (Bahmani et al. 2012, "Scalable k-means++"): a few
  passes that each keep a point with probability min(1, l D(x)^2 / phi), then a weighted
  k-means++ on the candidates; Lloyd's iterations then run over chunks.
"""
import numpy as np

from ..backend import as_rng
from ..blockwise import _da, _rows, _spawn, _weights
from ..distribution import logsumexp
from ._gaussian import covariances_from_precision_cholesky, log_gaussian, precision_cholesky
from ._validate import check_scale_blocks
from .kmeans import _squared_distances

_KMEANS_ROUNDS = 5                   # k-means|| rounds (Bahmani et al. 2012 find 5 enough)


def checked(X, sample_weight, where):
    """(X, s, max |x|): the Dask data (n, d), checked finite and of a safe scale (one pass),
    the sample weights s in X's row chunks scaled to mean 1, and the largest magnitude."""
    X = _rows(X, where)
    top = check_scale_blocks(X, where)
    return X, _weights(sample_weight, X, where) * X.shape[0], top


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
    rng = as_rng(rng, where="kmeans_parallel")
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
    centers = kmeans_parallel(X, k, as_rng(rng, where="kmeans"))[0]
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


def best_run(model, X, s, inits, rng, resolution):
    """``GaussianMixture._best_run`` with the E- and M-steps over chunks: EM from
    ``model.n_init`` initialisations (``inits``: the checked weights_init, means_init and
    precisions_init, None where not given); returns the state of the best run."""
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


def score_rows(method, X, where):
    """A per-row method (e.g. ``GaussianMixture.score_samples``) mapped over Dask row blocks."""
    X = _rows(X, where)
    return X.map_blocks(method, drop_axis=1, meta=np.empty(0))
