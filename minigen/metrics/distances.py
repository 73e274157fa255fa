"""Distances between samples held in memory: sliced Wasserstein, MMD with a Gaussian kernel,
energy distance (``minigen.metrics`` adds the Dask path on top).

Each takes two point sets X (n, ...) and Y (m, ...) (trailing dimensions are flattened) and
compares the empirical distributions they define; none allocates an n x m matrix beyond a
bounded tile.
"""
import math

import numpy as np

from .. import _checks
from ..autograd import Tensor
from ..backend import as_rng
from ..kernels.kde import log_kernel_sum
from ..ops.shape import sort


def _numeric(A, where, name):
    try:
        return np.asarray(A, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{where}: {name} must be a numeric array, got "
                        f"{type(A).__name__}") from err


def _pair(where, X, Y):
    X, Y = _numeric(X, where, "X"), _numeric(Y, where, "Y")
    if X.ndim < 1 or Y.ndim < 1 or len(X) < 1 or len(Y) < 1:
        raise ValueError(f"{where}: X and Y must be non-empty arrays of shape (n, ...), got "
                         f"{X.shape} and {Y.shape}")
    X, Y = X.reshape(len(X), -1), Y.reshape(len(Y), -1)
    if X.shape[1] != Y.shape[1]:
        raise ValueError(f"{where}: X and Y must have the same number of features, got "
                         f"{X.shape[1]} and {Y.shape[1]}")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(Y))):
        raise ValueError(f"{where}: X and Y must be finite")
    return X, Y


def wasserstein_1d(x, y, p=2):
    """W_p between the empirical distributions of 1-D samples x (n,) and y (m,):

        W_p^p = int_0^1 |F^-1(u) - G^-1(u)|^p du,

    exact for empirical quantile functions (piecewise constant between the levels i/n, j/m).
    Columns of 2-D x (n, k) and y (m, k) are k independent problems; returns W_p (k,)."""
    x, y = np.sort(np.asarray(x, dtype=np.float64), axis=0), np.sort(np.asarray(y, np.float64), 0)
    n, m = len(x), len(y)
    if n == m:
        wpp = np.mean(np.abs(x - y) ** p, axis=0)
    else:
        widths, ix, iy = _quantile_pairs(n, m)
        diff = np.abs(x[ix] - y[iy]) ** p
        wpp = np.tensordot(widths, diff, axes=(0, 0))
    return wpp ** (1.0 / p)


def _quantile_pairs(n, m):
    """The pieces of int_0^1 |F^-1(u) - G^-1(u)|^p du for sorted samples of sizes n and m: the
    widths of the intervals between the merged levels i/n and j/m, and the sorted indices
    (ix, iy) that the two quantile functions take on each interval."""
    levels = np.union1d(np.arange(1, n + 1) / n, np.arange(1, m + 1) / m)
    widths = np.diff(levels, prepend=0.0)
    mid = levels - widths / 2
    ix = np.minimum((mid * n).astype(np.int64), n - 1)
    iy = np.minimum((mid * m).astype(np.int64), m - 1)
    return widths, ix, iy


def check_projections(where, n_projections, p):
    """The sliced Wasserstein arguments: an int n_projections >= 1 and a real p >= 1."""
    _checks.positive_int(n_projections, "n_projections", where)
    _checks.real(p, "p", where, low=1)


def check_bandwidths(bandwidth, where):
    """``bandwidth`` (a number or a sequence of them) as a 1-D array of positive widths."""
    try:
        hs = np.atleast_1d(np.asarray(bandwidth, dtype=np.float64))
    except (TypeError, ValueError):
        hs = np.array([np.nan])
    if hs.ndim != 1 or hs.size == 0 or not np.all(np.isfinite(hs) & (hs > 0)):
        raise ValueError(f"{where}: bandwidth must be a positive number or a sequence of them, "
                         f"got {_checks.excerpt(bandwidth)}")
    return hs


def random_directions(d, n_projections, rng=None):
    """``n_projections`` directions theta ~ U(S^{d-1}) as the columns of a (d, L) array
    (normalised Gaussian draws): the projections of both sliced Wasserstein functions."""
    theta = as_rng(rng, where="random_directions").standard_normal((d, n_projections))
    return theta / np.linalg.norm(theta, axis=0, keepdims=True)


def sliced_wasserstein(X, Y, n_projections=256, p=2, rng=None):
    """Monte Carlo sliced Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015):

        SW_p(X, Y) = (E_theta W_p^p(theta . X, theta . Y))^(1/p),  theta ~ U(S^{d-1}),

    averaged over ``n_projections`` random directions drawn from ``rng``. For a
    differentiable version on Tensors see ``sliced_wasserstein_loss``."""
    X, Y = _pair("sliced_wasserstein", X, Y)
    check_projections("sliced_wasserstein", n_projections, p)
    theta = random_directions(X.shape[1], n_projections, as_rng(rng, where="sliced_wasserstein"))
    wpp = wasserstein_1d(X @ theta, Y @ theta, p) ** p
    return float(np.mean(wpp) ** (1.0 / p))


def sliced_wasserstein_loss(X, Y, n_projections=50, p=2, rng=None):
    """SW_p^p(X, Y) between the rows of two Tensors, differentiable in both (the p-th power,
    smooth where X = Y; Kolouri et al. 2019, the sliced-Wasserstein auto-encoder's penalty):

        SW_p^p = (1/L) sum_l int_0^1 |F_l^-1(u) - G_l^-1(u)|^p du,

    with F_l, G_l the empirical distributions of theta_l . x and theta_l . y for L =
    ``n_projections`` directions from ``random_directions``. The quantile functions are the
    sorted projections (``F.sort``; its gradient goes back through the sorting permutation);
    for n != m they are matched on the merged levels i/n, j/m, exactly as ``wasserstein_1d``.
    X (n, d) and Y (m, d) are Tensors or arrays of one float dtype; returns a scalar Tensor."""
    where = "sliced_wasserstein_loss"
    X, Y = (t if isinstance(t, Tensor) else Tensor(np.asarray(t)) for t in (X, Y))
    if X.ndim != 2 or Y.ndim != 2 or X.shape[1] != Y.shape[1] or len(X) < 1 or len(Y) < 1:
        raise ValueError(f"{where}: X and Y must be non-empty (n, d) and (m, d) Tensors, got "
                         f"{X.shape} and {Y.shape}")
    check_projections(where, n_projections, p)
    theta = Tensor(random_directions(X.shape[1], n_projections, as_rng(rng, where=where))
                   .astype(X.dtype))
    x, y = sort(X @ theta, axis=0), sort(Y @ theta, axis=0)
    n, m = len(X), len(Y)
    if n == m:
        return (abs(x - y) ** p).mean()
    widths, ix, iy = _quantile_pairs(n, m)
    diff = abs(x[ix] - y[iy]) ** p
    return (diff * Tensor(widths[:, None].astype(X.dtype))).sum() * (1.0 / n_projections)


def median_bandwidth(X, Y, max_points=1000, rng=0):
    """The median heuristic: h = sqrt(median ||a - b||^2 / 2) over pairs of the pooled sample
    (at most ``max_points`` of it, drawn with ``rng``) (Gretton et al. 2012, section 8)."""
    X, Y = _pair("median_bandwidth", X, Y)
    Z = np.concatenate([X, Y])
    if len(Z) > max_points:
        Z = Z[as_rng(rng, where="median_bandwidth").choice(len(Z), max_points, replace=False)]
    sq = (Z * Z).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0)[np.triu_indices(len(Z), 1)]
    return float(np.sqrt(np.median(d2) / 2)) if d2.size and np.median(d2) > 0 else 1.0


def _mean_kernel(A, B, h, same):
    """mean_{i, j} exp(-||a_i - b_j||^2 / (2 h^2)), without i = j when ``same``."""
    logs = log_kernel_sum(A, B, chol=h, exclude_self=same, normalize=False)
    pairs = len(A) * (len(B) - 1) if same else len(A) * len(B)
    return float(np.exp(logs).sum() / pairs)


def mmd2(X, Y, bandwidth=None, unbiased=True):
    """Squared maximum mean discrepancy with k(a, b) = exp(-||a - b||^2 / (2 h^2))
    (Gretton et al. 2012, eqs. 3 and 5):

        MMD^2 = E k(x, x') + E k(y, y') - 2 E k(x, y).

    unbiased=True drops the i = j terms of the within-sample means (the U-statistic, which
    can be negative); False keeps them (the V-statistic, >= 0). ``bandwidth``: h, a sequence
    of h (the kernel is their average), or None (``median_bandwidth``). Kernel sums stream
    through ``minigen.kernels.kde.log_kernel_sum``: no n x m matrix."""
    X, Y = _pair("mmd2", X, Y)
    if unbiased and (len(X) < 2 or len(Y) < 2):
        raise ValueError("mmd2: the unbiased estimate needs at least 2 points in X and in Y")
    hs = check_bandwidths(median_bandwidth(X, Y) if bandwidth is None else bandwidth, "mmd2")
    total = 0.0
    for h in hs:
        total += (_mean_kernel(X, X, h, unbiased) + _mean_kernel(Y, Y, h, unbiased)
                  - 2 * _mean_kernel(X, Y, h, False))
    return total / len(hs)


def _mean_dist(A, B, max_elements=2 ** 22):
    """mean_{i, j} ||a_i - b_j||, over row tiles of A of at most ``max_elements`` differences."""
    tile = max(1, max_elements // (len(B) * A.shape[1]))
    total = 0.0
    for lo in range(0, len(A), tile):
        total += np.sqrt(((A[lo:lo + tile, None, :] - B[None]) ** 2).sum(-1)).sum()
    return total / (len(A) * len(B))


def energy_distance(X, Y):
    """The energy distance (Szekely & Rizzo 2004), the V-statistic's square root:

        D = sqrt(2 E||x - y|| - E||x - x'|| - E||y - y'||),

    as ``scipy.stats.energy_distance`` in 1-D. Pairwise distances run in row tiles."""
    X, Y = _pair("energy_distance", X, Y)
    d2 = 2 * _mean_dist(X, Y) - _mean_dist(X, X) - _mean_dist(Y, Y)
    return math.sqrt(max(d2, 0.0))
