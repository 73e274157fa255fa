"""Gaussian kernel density estimation.

p(x) = sum_j w_j N(x; x_j, H) with weights w_j summing to 1 and one kernel covariance H
(Parzen 1962; Silverman, "Density Estimation for Statistics and Data Analysis", 1986).
The bandwidth rules follow ``scipy.stats.gaussian_kde``: H = f^2 Sigma, where Sigma is the
weighted data covariance (divisor 1 - sum w_j^2) and, with d dimensions and the effective
sample size n_eff = 1 / sum w_j^2 (Kish 1965),
    Scott (1992):      f = n_eff^(-1/(d+4)),
    Silverman (1986):  f = (n_eff (d+2) / 4)^(-1/(d+4)).
'cv' keeps H = f^2 Sigma and picks f maximising the leave-one-out log-likelihood
sum_i w_i log[sum_{j != i} w_j N(x_i; x_j, H) / (1 - w_i)] (Habbema et al. 1974; Duin 1976).
The pairwise sums are ``minigen.kernels.kde.log_kernel_sum`` (a streamed log-sum-exp).
On Dask data the same fit runs with the moments and the pairwise sums computed block by block
(``dask_kde``).
"""
import warnings

import numpy as np

from .. import _checks
from ..backend import as_rng
from ..blockwise import is_dask
from ..kernels import kde as kde_kernel
from ..distribution import (Distribution, register, check_array, check_fitted, check_n_samples,
                            check_sample_weight)
from ._validate import check_scale, exact_mean

_RULES = ("scott", "silverman", "cv")
_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0


def _rule_factor(rule, neff, d):
    if rule == "silverman":
        return (neff * (d + 2) / 4.0) ** (-1.0 / (d + 4))
    return neff ** (-1.0 / (d + 4))


def _data_covariance(X, w):
    """Sigma = sum_j w_j (x_j - m)(x_j - m)^T / (1 - sum_j w_j^2), m the weighted mean, with
    constant columns centred exactly (their variance is 0, not rounding noise)."""
    Xc = X - exact_mean(X, w)
    return (Xc.T * w) @ Xc / (1.0 - np.sum(w ** 2))


def _cholesky_or_diagonal(cov, n, where, stacklevel):
    """The Cholesky factor of the data covariance Sigma (d, d) of n samples.

    With d >= n, or a numerically singular Sigma (the factorisation fails, or a pivot L_ii^2
    falls below d eps max_j Sigma_jj), warn and fall back to diag(Sigma) with zero variances
    raised to 1e-6 of the largest one. If every column is constant there is no scale at all:
    raise. ``stacklevel`` points the warning at the caller of ``KDE.fit``."""
    d = len(cov)
    variances = np.diag(cov).copy()
    top = variances.max()
    if top == 0:
        raise ValueError(f"{where}: every column of X is constant (all samples coincide), so "
                         "the data covariance is zero and a bandwidth rule has nothing to "
                         "scale; pass a numeric bandwidth, e.g. KDE(bandwidth=1.0)")
    if n > d:
        try:
            chol = np.linalg.cholesky(cov)
            if np.min(np.diag(chol)) ** 2 > d * np.finfo(np.float64).eps * top:
                return chol
        except np.linalg.LinAlgError:
            pass
    floor = 1e-6 * top
    warnings.warn(f"{where}: the data covariance is singular (n={n}, d={d}); using its diagonal "
                  f"with variances floored at {floor:.3g}", RuntimeWarning, stacklevel=stacklevel)
    variances = np.where(variances > floor, variances, floor)
    return np.diag(np.sqrt(variances))


def _check_bandwidth(bandwidth):
    if isinstance(bandwidth, str):
        if bandwidth not in _RULES:
            raise ValueError(f"KDE: bandwidth must be one of {', '.join(map(repr, _RULES))}, a "
                             f"positive number, or a (d,) / (d, d) array, got "
                             f"{_checks.excerpt(bandwidth)}")
        return bandwidth
    try:
        h = np.asarray(bandwidth, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"KDE: bandwidth must be a rule name, a number or an array, "
                        f"got {type(bandwidth).__name__}") from err
    if h.ndim > 2 or (h.ndim == 2 and h.shape[0] != h.shape[1]) or h.size == 0:
        raise ValueError(f"KDE: an array bandwidth must be (d,) or (d, d), got shape {h.shape}")
    if not np.all(np.isfinite(h)) or (h.ndim < 2 and np.any(h <= 0)):
        raise ValueError(f"KDE: bandwidth must be finite and > 0, got "
                         f"{_checks.excerpt(bandwidth)}")
    return h


def _numeric_bandwidth(h, d, where):
    """(bandwidth_, L) for a numeric bandwidth h in d dimensions: L = h I for a number, diag(h)
    for a (d,) vector, the Cholesky factor of H for a (d, d) matrix."""
    if h.ndim == 2:
        if h.shape != (d, d):
            raise ValueError(f"{where}: a matrix bandwidth must be ({d}, {d}), got {h.shape}")
        try:
            chol = np.linalg.cholesky(h)
        except np.linalg.LinAlgError as err:
            raise ValueError(f"{where}: a matrix bandwidth must be symmetric positive "
                             "definite") from err
        if not np.allclose(h, h.T):
            raise ValueError(f"{where}: a matrix bandwidth must be symmetric positive definite")
        return h.copy(), chol
    if h.ndim == 1 and h.shape != (d,):
        raise ValueError(f"{where}: a vector bandwidth must have shape ({d},), got {h.shape}")
    chol = np.diag(np.broadcast_to(h, (d,)).astype(np.float64))
    return (h.copy() if h.ndim else float(h)), chol


def _loo_log_likelihood(X, w, chol):
    """sum_i w_i log[sum_{j != i} w_j N(x_i; x_j, L L^T) / (1 - w_i)] (zero-weight rows skipped)."""
    with np.errstate(divide="ignore"):
        log_w = np.log(w)
    loo = kde_kernel.log_kernel_sum(X, X, chol=chol, log_weights=log_w, exclude_self=True)
    keep = w > 0
    return float(np.sum(w[keep] * (loo[keep] - np.log1p(-w[keep]))))


def _cv_search(loo_log_likelihood, base, scott):
    """The factor f maximising ``loo_log_likelihood(f L_base)`` over log f: a grid
    scott * 2^(-5..2), then a golden-section search between the best grid point's
    neighbours."""
    def objective(log_f):
        return loo_log_likelihood(base * np.exp(log_f))

    grid = np.log(scott) + np.log(2.0) * np.arange(-5, 3)
    values = [objective(g) for g in grid]
    best = int(np.argmax(values))
    lo, hi = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    a, b = hi - _GOLDEN * (hi - lo), lo + _GOLDEN * (hi - lo)
    fa, fb = objective(a), objective(b)
    for _ in range(20):
        if fa > fb:
            hi, b, fb = b, a, fa
            a = hi - _GOLDEN * (hi - lo)
            fa = objective(a)
        else:
            lo, a, fa = a, b, fb
            b = lo + _GOLDEN * (hi - lo)
            fb = objective(b)
    return float(np.exp(0.5 * (lo + hi)))


@register("kde")
class KDE(Distribution):
    """Gaussian KDE (formulas in the module docstring).

    bandwidth: 'scott' | 'silverman' (the factor f of H = f^2 Sigma, exactly as SciPy),
    'cv' (f by leave-one-out likelihood), a number h (isotropic H = h^2 I), a (d,) array of
    per-dimension standard deviations (H = diag(h^2)), or a (d, d) covariance matrix H.
    precision: 'float64' (default) or 'float32', an opt-in for ``score_samples`` and
    ``score_function``: the Numba kernel then evaluates its exps in float32 (distances and
    sums stay float64), 1.1-1.5x faster on the pairwise sum (d = 2 and 8, measured on a
    shared 2-core Xeon; benchmarks/kernels.py), with an absolute error of
    log p of about 1e-7 near the data and at most 5.4e-6 anywhere (a relative error of p of
    that size; ``minigen.kernels.kde.log_kernel_sum`` derives the bound). Fitting ('cv') and
    the reference/CUDA paths stay float64.
    Fitted: ``bandwidth_`` (f for the rules, else the given value), ``covariance_`` (H),
    ``cholesky_`` (L with L L^T = H), ``neff_``, ``weights_``, ``data_``, ``n_features_in_``.
    """

    def __init__(self, bandwidth="scott", *, precision="float64"):
        _checks.choice(precision, "precision", "KDE", kde_kernel.PRECISIONS)
        self.bandwidth, self.precision = bandwidth, precision
        self._bandwidth = _check_bandwidth(bandwidth)

    def fit(self, X, y=None, sample_weight=None):
        """Store the data and weights and set H (``y`` is ignored: scikit-learn's signature).
        Dask data stay Dask arrays (a KDE is its data); their moments and the 'cv' likelihood
        are computed block by block (``dask_kde``)."""
        where = "KDE.fit"
        if is_dask(X, sample_weight):
            from . import dask_kde
            X, w = dask_kde.checked(X, sample_weight, where)
            neff, positive = dask_kde.weight_summary(w)
            covariance = lambda: dask_kde.data_covariance(X, w)
            loo_log_likelihood = lambda chol: dask_kde.loo_log_likelihood(X, w, chol, where)
        else:
            X = check_scale(check_array(X, where), where)
            w = check_sample_weight(sample_weight, len(X), where)
            neff, positive = 1.0 / np.sum(w ** 2), np.count_nonzero(w)
            covariance = lambda: _data_covariance(X, w)
            loo_log_likelihood = lambda chol: _loo_log_likelihood(X, w, chol)
        n, d = X.shape
        h = self._bandwidth
        if isinstance(h, str):
            if n < 2 or positive < 2:
                raise ValueError(f"{where}: bandwidth={h!r} needs at least 2 samples with "
                                 f"positive weight, got {positive}")
            base = _cholesky_or_diagonal(covariance(), n, where, stacklevel=3)
            factor = (_cv_search(loo_log_likelihood, base, _rule_factor("scott", neff, d))
                      if h == "cv" else _rule_factor(h, neff, d))
            self.bandwidth_, chol = factor, base * factor
        else:
            self.bandwidth_, chol = _numeric_bandwidth(h, d, where)
        self.cholesky_ = chol
        self.covariance_ = chol @ chol.T
        self.data_, self.weights_, self.neff_, self.n_features_in_ = X, w, neff, d
        return self

    @property
    def _log_weights(self):
        """log w_j (-inf for zero weights), derived from ``weights_`` so that the fitted state
        is the public attributes alone."""
        with np.errstate(divide="ignore"):
            return np.log(self.weights_)

    def _checked(self, X, where):
        check_fitted(self, "cholesky_", where)
        return check_array(X, where, n_features=self.n_features_in_)

    def score_samples(self, X):
        """log p(x) = log sum_j w_j N(x; x_j, H) for each row of X."""
        if is_dask(X, getattr(self, "data_", None)):
            from .dask_kde import score_samples
            return score_samples(self, X)
        X = self._checked(X, "KDE.score_samples")
        return kde_kernel.log_kernel_sum(X, self.data_, chol=self.cholesky_,
                                         log_weights=self._log_weights,
                                         precision=self.precision)

    def pdf(self, X):
        return np.exp(self.score_samples(X))

    def score_function(self, Q):
        """grad_q log p(q) = H^-1 (sum_j r_j(q) x_j - q), r_j(q) the kernel responsibilities."""
        if is_dask(Q, getattr(self, "data_", None)):
            from .dask_kde import score_function
            return score_function(self, Q)
        Q = self._checked(Q, "KDE.score_function")
        return kde_kernel.log_kernel_sum_grad(Q, self.data_, chol=self.cholesky_,
                                              log_weights=self._log_weights,
                                              precision=self.precision)[1]

    def sample(self, n, rng=None):
        """Pick a data point j with probability w_j, add L u with u ~ N(0, I)."""
        if is_dask(getattr(self, "data_", None)):
            from .dask_kde import sample
            return sample(self, n, rng)
        check_fitted(self, "cholesky_", "KDE.sample")
        n = check_n_samples(n, "KDE.sample")
        rng = as_rng(rng, where="KDE.sample")
        index = rng.choice(len(self.data_), size=n, p=self.weights_)
        return self.data_[index] + rng.standard_normal((n, self.n_features_in_)) @ self.cholesky_.T
