"""Block-wise reductions over Dask arrays: kernel sums, the sample metrics and seeded sample
streams, for data that outgrow one machine.

The sample metrics (and ``minigen.density``'s estimators, through ``density/_dask.py``) call in
here when an argument is a ``dask.array.Array`` (Dask is imported only then), so a user keeps
the ordinary API and passes a ``distributed.Client`` the ordinary Dask way. Every reduction is
an exact re-association of the in-memory sum, so results equal the in-memory ones to float64
rounding.

* Kernel sums (KDE, leave-one-out CV, MMD). For query block a and data block b, minigen's own
  kernel ``kernels.kde.log_kernel_sum`` (Numba where present) gives l_ib = log sum_{j in b}
  w_j k(q_i, x_j). Each block contributes the row (M, c, S) = (l_ib, n_b, 1): a running max, the
  number of data points it covers and a sum scaled by exp(-M). Rows combine by a tree reduction
  of log-sum-exp (Milakov & Gimelshein 2018),
      M = max(M_1, M_2),  c = c_1 + c_2,  S = S_1 exp(M_1 - M) + S_2 exp(M_2 - M),
  and log p(q_i) = M + log S. The count must reach n, or the sum is refused: a lost block is
  an error, never a silently partial sum. No worker holds more than one block pair, and each
  block pair sends O(rows of its query block) numbers. The KDE score function rides along:
  extra columns S g_b scale like S, and grad log p = sum_b softmax_b(l_b) g_b.
* Sliced Wasserstein (Rabin et al. 2011) needs sorted projections, so it is split by direction:
  each task sorts the n + m projections on a group of directions.
* ``sample(model, n)``: a Dask array whose blocks draw from independent, reproducible streams,
  children of one ``SeedSequence`` (``SeedSequence.spawn``), rebuilt identically if a lost
  worker's block is recomputed.
"""

import numpy as np

from .backend import as_rng
from .distribution import check_n_samples
from .kernels import kde as kde_kernel

_PROJECTION_FLOATS = 1 << 24         # projected values one sliced-Wasserstein task sorts


def is_dask(*arrays):
    """True if any argument is a Dask collection (checked by type, without importing Dask)."""
    return any(type(a).__module__.split(".")[0] == "dask" for a in arrays)


def _da():
    try:
        import dask.array as da
    except ImportError as err:
        raise ImportError("minigen.blockwise: Dask arrays need the 'dist' extra "
                          "(pip install minigen[dist])") from err
    return da


# ------------------------------------------------------------------ checks
def _finite_block(x, where, name):
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{where}: {name} contains NaN or infinity")
    return x


def _rows(X, where, name="X", n_features=None, chunks=None, flatten=False):
    """X as a float64 Dask array (n, d) with one chunk across columns, its blocks checked finite
    when computed. A NumPy X (against Dask data) is wrapped, in blocks of ``chunks`` rows."""
    da = _da()
    if not is_dask(X):
        X = np.asarray(X, dtype=np.float64)
        if X.ndim >= 1:
            X = da.from_array(X, chunks=(chunks or max(len(X), 1),) + X.shape[1:])
    if X.ndim == 1:
        X = X[:, None]
    elif flatten and X.ndim > 2 and len(X):
        X = X.rechunk({k: -1 for k in range(1, X.ndim)}).reshape(len(X), -1)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"{where}: {name} must be 2-D (n_samples, n_features) and non-empty, "
                         f"got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{where}: {name} has {X.shape[1]} features but the model was fitted "
                         f"with {n_features}")
    X = X.astype(np.float64).rechunk({1: -1})
    return X.map_blocks(_finite_block, where, name, meta=np.empty((0, 0)))


def _checked_weights(w, where):
    if not (np.all(np.isfinite(w)) and np.all(w >= 0)):
        raise ValueError(f"{where}: sample_weight must be finite and non-negative")
    return w


def _weights(sample_weight, X, where):
    """Normalised weights w (n,) in X's row chunks (``check_sample_weight`` block by block)."""
    da, n = _da(), X.shape[0]
    if sample_weight is None:
        return da.full(n, 1.0 / n, chunks=X.chunks[0])
    w = sample_weight if is_dask(sample_weight) else np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape ({n},), got {w.shape}")
    w = da.asarray(w).astype(np.float64).rechunk((X.chunks[0],))
    w = w.map_blocks(_checked_weights, where, meta=np.empty(0))
    total = float(w.sum().compute())
    if total <= 0:
        raise ValueError(f"{where}: sample_weight must have a positive sum")
    return w / total


def _spawn(rng, k):
    """k independent children of ``rng``'s SeedSequence (reproducible for a seed). Tasks build
    their Generator from a child, so a task re-run after a lost worker draws the same numbers."""
    return as_rng(rng).bit_generator.seed_seq.spawn(k)


# ------------------------------------------------------------------ kernel sums
def _pair_block(q, x, w, chol, normalize, want_grad, same, block_id=None):
    """One block pair's row (M, c, S[, S g]): l_ib, n_b, 1[, g_ib] for each query (the blocks
    arrive as q (m_a, 1, d), x (1, n_b, d), w (1, n_b, 1))."""
    q, x = q[:, 0], x[0]
    with np.errstate(divide="ignore"):
        logw = np.log(w[0, :, 0])
    if want_grad:       # Dask's threads may call this at once: kernels' launch serialises
        out, grad = kde_kernel.log_kernel_sum_grad(q, x, chol=chol, log_weights=logw)
    else:
        exclude = same and block_id[0] == block_id[1]
        out = kde_kernel.log_kernel_sum(q, x, chol=chol, log_weights=logw,
                                        exclude_self=exclude, normalize=normalize)
        grad = np.empty((len(q), 0))
    columns = [out[:, None], np.full((len(q), 1), float(len(x))), np.ones((len(q), 1)), grad]
    return np.concatenate(columns, axis=1)[:, None, :]


def _merge(rows, axis=None, keepdims=True):
    """Tree step: combine the (M, c, S, ...) rows along axis 1 (module docstring)."""
    M = rows[..., :1].max(axis=1, keepdims=True)
    shift = np.where(np.isfinite(M), M, 0.0)
    count = rows[..., 1:2].sum(axis=1, keepdims=True)
    scaled = np.sum(rows[..., 2:] * np.exp(rows[..., :1] - shift), axis=1, keepdims=True)
    return np.concatenate([M, count, scaled], axis=-1)


def _identity(rows, axis=None, keepdims=True):
    return rows


def _finish(rows, n, where):
    """log sum = M + log S (and g = (S g) / S) after checking that all n points were summed."""
    rows = rows[:, 0]
    if np.any(rows[:, 1] != n):
        raise RuntimeError(f"{where}: the block-wise kernel sum covered {rows[:, 1].min():.0f} "
                           f"of {n} data points; refusing a partial sum")
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.concatenate([(rows[:, 0] + np.log(rows[:, 2]))[:, None],
                               rows[:, 3:] / rows[:, 2:3]], axis=1)


def log_kernel_sum(Q, X, chol=None, weights=None, *, exclude_self=False, normalize=True,
                   want_grad=False, where="log_kernel_sum"):
    """Dask (m,) array of log sum_j w_j N(q_i; x_j, L L^T), as ``kernels.kde.log_kernel_sum``
    (or (m, 1 + d) with the gradient columns of ``log_kernel_sum_grad`` if ``want_grad``).

    Q, X: Dask (m, d), (n, d) (checked by ``_rows``); ``weights`` (n,) in X's row chunks, or
    None (all one). ``exclude_self``: Q is X, the j = i terms are dropped on diagonal blocks.
    """
    da = _da()
    n, d = X.shape
    if weights is None:
        weights = da.ones(n, chunks=X.chunks[0])
    rows = da.map_blocks(
        _pair_block, Q[:, None, :], X[None, :, :], weights[None, :, None], chol, normalize,
        want_grad, exclude_self, meta=np.empty((0, 0, 0)),
        chunks=(Q.chunks[0], (1,) * X.numblocks[0], (3 + d * want_grad,)))
    rows = da.reduction(rows, _identity, _merge, axis=1, combine=_merge, keepdims=True,
                        concatenate=True, dtype=np.float64, meta=np.empty((0, 0, 0)))
    out = rows.map_blocks(_finish, n, where, drop_axis=1, meta=np.empty((0, 0)),
                          chunks=(Q.chunks[0], (1 + d * want_grad,)))
    return out if want_grad else out[:, 0]


# ------------------------------------------------------------------ sampling
def sample(model, n, rng=None, *, chunk_size=100_000):
    """``model.sample`` as a Dask array of ``n`` rows in blocks of ``chunk_size``; block b draws
    from child stream b of ``rng``'s SeedSequence, so blocks are independent and the same
    ``rng`` seed gives the same array. A model fitted on Dask data (a KDE: its data are the
    model) samples itself, block by block."""
    import dask
    da = _da()
    n = check_n_samples(n, "blockwise.sample")
    if is_dask(getattr(model, "data_", None)):
        return model.sample(n, rng)
    if not (isinstance(chunk_size, (int, np.integer)) and chunk_size >= 1):
        raise ValueError(f"blockwise.sample: chunk_size must be an int >= 1, got {chunk_size!r}")
    sizes = [chunk_size] * (n // chunk_size) + ([n % chunk_size] if n % chunk_size else [])
    empty = model.sample(0, rng=np.random.default_rng(0))
    blocks = [da.from_delayed(dask.delayed(_sample_block)(model, size, child),
                              shape=(size,) + empty.shape[1:], dtype=empty.dtype)
              for size, child in zip(sizes, _spawn(rng, len(sizes)))]
    return da.concatenate(blocks) if blocks else da.from_array(empty)


def _sample_block(model, size, seed):
    return model.sample(size, rng=np.random.default_rng(seed))


# ------------------------------------------------------------------ sample metrics
def _metric_pair(where, X, Y):
    X, Y = _rows(X, where, "X", flatten=True), _rows(Y, where, "Y", flatten=True)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"{where}: X and Y must have the same number of features, got "
                         f"{X.shape[1]} and {Y.shape[1]}")
    return X, Y


def mmd2(X, Y, bandwidth=None, unbiased=True):
    """``metrics.mmd2`` with Dask samples: the three mean kernels of every bandwidth are
    block-wise log-sum-exps, computed in one pass; the median heuristic sees the same
    subsample as in memory."""
    import dask
    from .metrics import median_bandwidth
    where = "mmd2"
    X, Y = _metric_pair(where, X, Y)
    if unbiased and (len(X) < 2 or len(Y) < 2):
        raise ValueError("mmd2: the unbiased estimate needs at least 2 points in X and in Y")
    if bandwidth is None:
        Z, limit = _da().concatenate([X, Y]), 1000
        if len(Z) > limit:
            Z = Z[np.sort(as_rng(0).choice(len(Z), limit, replace=False))]
        Z = Z.compute()
        bandwidth = median_bandwidth(Z[:1], Z[1:], max_points=len(Z))
    hs = np.atleast_1d(bandwidth)
    if hs.ndim != 1 or not np.all(np.isfinite(hs) & (hs > 0)):
        raise ValueError(f"mmd2: bandwidth must be positive, got {bandwidth!r}")

    def mean_kernel(A, B, h, same):
        logs = log_kernel_sum(A, B, float(h), exclude_self=same, normalize=False, where=where)
        return _da().exp(logs).sum() / (len(A) * (len(B) - 1) if same else len(A) * len(B))

    means = dask.compute([(mean_kernel(X, X, h, unbiased), mean_kernel(Y, Y, h, unbiased),
                           mean_kernel(X, Y, h, False)) for h in hs])[0]
    return sum(xx + yy - 2 * xy for xx, yy, xy in means) / len(hs)


def _wpp_block(px, py, p):
    from .metrics import wasserstein_1d
    return wasserstein_1d(px, py, p) ** p


def sliced_wasserstein(X, Y, n_projections=256, p=2, rng=None):
    """``metrics.sliced_wasserstein`` with Dask samples: the directions theta are drawn as in
    memory; the projections are computed per row block, then regrouped by direction so that
    each task sorts all n + m projections on a few directions (one projected column of both
    samples must fit a worker) and returns W_p^p on them."""
    from .metrics import _check_projections, random_directions
    da = _da()
    where = "sliced_wasserstein"
    X, Y = _metric_pair(where, X, Y)
    _check_projections(where, n_projections, p)
    theta = random_directions(X.shape[1], n_projections, rng)
    group = max(1, _PROJECTION_FLOATS // (len(X) + len(Y)))
    PX = (X @ theta).rechunk({0: -1, 1: group})
    PY = (Y @ theta).rechunk({0: -1, 1: group})
    wpp = da.blockwise(_wpp_block, "j", PX, "aj", PY, "bj", p, None, dtype=np.float64,
                       concatenate=True)
    return float(wpp.mean().compute() ** (1.0 / p))
