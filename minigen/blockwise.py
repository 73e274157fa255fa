"""The generic plumbing of the Dask path: input checks, kernel sums over block pairs and seeded
sample streams, for data that outgrow one machine.

The sample metrics (``metrics/_dask.py``) and ``minigen.density``'s estimators
(``density/dask_kde.py``, ``density/dask_mixture.py``) build on these when an argument is a
``dask.array.Array`` (Dask is imported only then), so a user keeps the ordinary API and passes
a ``distributed.Client`` the ordinary Dask way. Every reduction is an exact re-association of
the in-memory sum, so results equal the in-memory ones to float64 rounding.

* Inputs: rows of unknown length (e.g. ``D[D[:, 0] > 0]``) get their chunk sizes computed
  first; a non-numeric dtype is the in-memory path's TypeError, raised before any work.
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
* ``sample(model, n)``: a Dask array whose blocks draw from independent, reproducible streams,
  children of one ``SeedSequence`` (``SeedSequence.spawn``), rebuilt identically if a lost
  worker's block is recomputed.
"""
import math

import numpy as np

from . import _checks
from .backend import as_rng, check_rng
from .kernels import kde as kde_kernel


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


def _numeric(X, where, name):
    """The in-memory check's TypeError for data that are not numbers."""
    return TypeError(f"{where}: {name} must be a numeric array, got {type(X).__name__}")


def _float_block(x, where, name):
    try:
        return np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise _numeric(x, where, name) from err


def _known_sizes(A):
    """A with its chunk sizes computed if some are unknown (NaN, e.g. after a boolean mask)."""
    if any(math.isnan(size) for sizes in A.chunks for size in sizes):
        return A.compute_chunk_sizes()
    return A


def _rows(X, where, name="X", n_features=None, chunks=None, flatten=False):
    """X as a float64 Dask array (n, d) with one chunk across columns and known chunk sizes,
    its blocks checked finite when computed. A NumPy X (against Dask data) is wrapped, in
    blocks of ``chunks`` rows. Strings, bytes and dates are refused before any work; object
    blocks are converted (and refused) as they are computed."""
    da = _da()
    if not is_dask(X):
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise _numeric(X, where, name) from err
        if X.ndim >= 1:
            X = da.from_array(X, chunks=(chunks or max(len(X), 1),) + X.shape[1:])
    elif X.dtype.kind not in "biufcO":
        raise _numeric(X, where, name)
    elif X.dtype.kind == "O":
        X = X.map_blocks(_float_block, where, name, dtype=np.float64)
    X = _known_sizes(X)
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
    if is_dask(sample_weight):
        w = _known_sizes(sample_weight)
    else:
        w = np.asarray(sample_weight, dtype=np.float64)
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
    n = _checks.integer(n, "n", "blockwise.sample", low=0)
    check_rng(rng, "rng", "blockwise.sample")
    if is_dask(getattr(model, "data_", None)):
        return model.sample(n, rng)
    chunk_size = _checks.positive_int(chunk_size, "chunk_size", "blockwise.sample")
    sizes = [chunk_size] * (n // chunk_size) + ([n % chunk_size] if n % chunk_size else [])
    empty = model.sample(0, rng=np.random.default_rng(0))
    blocks = [da.from_delayed(dask.delayed(_sample_block)(model, size, child),
                              shape=(size,) + empty.shape[1:], dtype=empty.dtype)
              for size, child in zip(sizes, _spawn(rng, len(sizes)))]
    return da.concatenate(blocks) if blocks else da.from_array(empty)


def _sample_block(model, size, seed):
    return model.sample(size, rng=np.random.default_rng(seed))
