"""The sample metrics on Dask arrays, equal to the in-memory ones (``distances``) to float64
rounding; ``minigen.metrics`` calls in here when an argument is a ``dask.array.Array``.

* MMD: the three mean kernels of every bandwidth are block-wise log-sum-exps of
  ``blockwise.log_kernel_sum``, computed in one pass.
* Sliced Wasserstein (Rabin et al. 2011) needs sorted projections, so it is split by direction:
  each task sorts the n + m projections on a group of directions.
"""
import numpy as np

from ..backend import as_rng
from ..blockwise import _da, _rows, log_kernel_sum
from .distances import (check_bandwidths, check_projections, median_bandwidth,
                        random_directions, wasserstein_1d)

_PROJECTION_FLOATS = 1 << 24         # projected values one sliced-Wasserstein task sorts
_MEDIAN_POINTS = 1000                # the pooled subsample of the median heuristic, as in memory


def _pair(where, X, Y):
    X, Y = _rows(X, where, "X", flatten=True), _rows(Y, where, "Y", flatten=True)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"{where}: X and Y must have the same number of features, got "
                         f"{X.shape[1]} and {Y.shape[1]}")
    return X, Y


def mmd2(X, Y, bandwidth=None, unbiased=True):
    """``distances.mmd2`` with Dask samples: the three mean kernels of every bandwidth are
    block-wise log-sum-exps, computed in one pass; the median heuristic sees the same
    subsample as in memory."""
    import dask
    where = "mmd2"
    X, Y = _pair(where, X, Y)
    if unbiased and (len(X) < 2 or len(Y) < 2):
        raise ValueError("mmd2: the unbiased estimate needs at least 2 points in X and in Y")
    if bandwidth is None:
        Z = _da().concatenate([X, Y])
        if len(Z) > _MEDIAN_POINTS:
            Z = Z[np.sort(as_rng(0, where=where).choice(len(Z), _MEDIAN_POINTS, replace=False))]
        Z = Z.compute()
        bandwidth = median_bandwidth(Z[:1], Z[1:], max_points=len(Z))
    hs = check_bandwidths(bandwidth, where)

    def mean_kernel(A, B, h, same):
        logs = log_kernel_sum(A, B, float(h), exclude_self=same, normalize=False, where=where)
        return _da().exp(logs).sum() / (len(A) * (len(B) - 1) if same else len(A) * len(B))

    means = dask.compute([(mean_kernel(X, X, h, unbiased), mean_kernel(Y, Y, h, unbiased),
                           mean_kernel(X, Y, h, False)) for h in hs])[0]
    return sum(xx + yy - 2 * xy for xx, yy, xy in means) / len(hs)


def _wpp_block(px, py, p):
    return wasserstein_1d(px, py, p) ** p


def sliced_wasserstein(X, Y, n_projections=256, p=2, rng=None):
    """``distances.sliced_wasserstein`` with Dask samples: the directions theta are drawn as in
    memory; the projections are computed per row block, then regrouped by direction so that
    each task sorts all n + m projections on a few directions (one projected column of both
    samples must fit a worker) and returns W_p^p on them."""
    da = _da()
    where = "sliced_wasserstein"
    X, Y = _pair(where, X, Y)
    check_projections(where, n_projections, p)
    theta = random_directions(X.shape[1], n_projections, as_rng(rng, where=where))
    group = max(1, _PROJECTION_FLOATS // (len(X) + len(Y)))
    PX = (X @ theta).rechunk({0: -1, 1: group})
    PY = (Y @ theta).rechunk({0: -1, 1: group})
    wpp = da.blockwise(_wpp_block, "j", PX, "aj", PY, "bj", p, None, dtype=np.float64,
                       concatenate=True)
    return float(wpp.mean().compute() ** (1.0 / p))
