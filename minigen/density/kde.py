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
"""
import warnings

import numpy as np

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
    raise. The in-memory and the Dask fit (``density._dask``) both end here; ``stacklevel``
    points the warning at the caller of ``KDE.fit``."""
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
            raise ValueError(f"KDE: bandwidth must be one of {_RULES}, a positive number, or a "
                             f"(d,) / (d, d) array; got {bandwidth!r}")
        return bandwidth
    try:
        h = np.asarray(bandwidth, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"KDE: bandwidth must be a rule name, a number or an array, "
                        f"got {type(bandwidth).__name__}") from err
    if h.ndim > 2 or (h.ndim == 2 and h.shape[0] != h.shape[1]) or h.size == 0:
        raise ValueError(f"KDE: an array bandwidth must be (d,) or (d, d), got shape {h.shape}")
    if not np.all(np.isfinite(h)) or (h.ndim < 2 and np.any(h <= 0)):
        raise ValueError(f"KDE: bandwidth must be finite and > 0, got {bandwidth!r}")
    return h


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
        if precision not in kde_kernel.PRECISIONS:
            raise ValueError(f"KDE: precision must be one of {kde_kernel.PRECISIONS}, "
                             f"got {precision!r}")
        self.bandwidth, self.precision = bandwidth, precision
        self._bandwidth = _check_bandwidth(bandwidth)

    def fit(self, X, y=None, sample_weight=None):
        """Store the data and weights and set H (``y`` is ignored: scikit-learn's signature)."""
        if is_dask(X, sample_weight):
            from ._dask import kde_fit
            return kde_fit(self, X, sample_weight)
        where = "KDE.fit"
        X = check_scale(check_array(X, where), where)
        n, d = X.shape
        w = check_sample_weight(sample_weight, n, where)
        h = self._bandwidth
        neff = 1.0 / np.sum(w ** 2)
        if isinstance(h, str):
            if n < 2 or np.count_nonzero(w) < 2:
                raise ValueError(f"{where}: bandwidth={h!r} needs at least 2 samples with "
                                 f"positive weight, got {np.count_nonzero(w)}")
            base = _cholesky_or_diagonal(_data_covariance(X, w), n, where, stacklevel=3)
            factor = (self._cv_factor(X, w, base, _rule_factor("scott", neff, d))
                      if h == "cv" else _rule_factor(h, neff, d))
            self.bandwidth_, chol = factor, base * factor
        elif h.ndim == 2:
            if h.shape != (d, d):
                raise ValueError(f"{where}: a matrix bandwidth must be ({d}, {d}), got {h.shape}")
            try:
                chol = np.linalg.cholesky(h)
            except np.linalg.LinAlgError as err:
                raise ValueError(f"{where}: a matrix bandwidth must be symmetric positive "
                                 "definite") from err
            if not np.allclose(h, h.T):
                raise ValueError(f"{where}: a matrix bandwidth must be symmetric positive definite")
            self.bandwidth_ = h.copy()
        else:
            if h.ndim == 1 and h.shape != (d,):
                raise ValueError(f"{where}: a vector bandwidth must have shape ({d},), got {h.shape}")
            chol = np.diag(np.broadcast_to(h, (d,)).astype(np.float64))
            self.bandwidth_ = h.copy() if h.ndim else float(h)
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

    def _loo_log_likelihood(self, X, w, chol, log_w):
        """sum_i w_i log[sum_{j != i} w_j N(x_i; x_j, L L^T) / (1 - w_i)] (zero-weight rows skipped)."""
        if is_dask(X):
            from ._dask import kde_loo_log_likelihood
            return kde_loo_log_likelihood(X, w, chol)
        loo = kde_kernel.log_kernel_sum(X, X, chol=chol, log_weights=log_w, exclude_self=True)
        keep = w > 0
        return float(np.sum(w[keep] * (loo[keep] - np.log1p(-w[keep]))))

    def _cv_factor(self, X, w, base, scott):
        """Maximise the leave-one-out likelihood over log f: a grid scott * 2^(-5..2), then a
        golden-section search between the best grid point's neighbours."""
        with np.errstate(divide="ignore"):
            log_w = np.log(w)

        def objective(log_f):
            return self._loo_log_likelihood(X, w, base * np.exp(log_f), log_w)

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

    def _checked(self, X, where):
        check_fitted(self, "cholesky_", where)
        return check_array(X, where, n_features=self.n_features_in_)

    def score_samples(self, X):
        """log p(x) = log sum_j w_j N(x; x_j, H) for each row of X."""
        if is_dask(X, getattr(self, "data_", None)):
            from ._dask import kde_score_samples
            return kde_score_samples(self, X)
        X = self._checked(X, "KDE.score_samples")
        return kde_kernel.log_kernel_sum(X, self.data_, chol=self.cholesky_,
                                         log_weights=self._log_weights,
                                         precision=self.precision)

    def pdf(self, X):
        return np.exp(self.score_samples(X))

    def score_function(self, Q):
        """grad_q log p(q) = H^-1 (sum_j r_j(q) x_j - q), r_j(q) the kernel responsibilities."""
        if is_dask(Q, getattr(self, "data_", None)):
            from ._dask import kde_score_function
            return kde_score_function(self, Q)
        Q = self._checked(Q, "KDE.score_function")
        return kde_kernel.log_kernel_sum_grad(Q, self.data_, chol=self.cholesky_,
                                              log_weights=self._log_weights,
                                              precision=self.precision)[1]

    def sample(self, n, rng=None):
        """Pick a data point j with probability w_j, add L u with u ~ N(0, I)."""
        if is_dask(getattr(self, "data_", None)):
            from ._dask import kde_sample
            return kde_sample(self, n, rng)
        check_fitted(self, "cholesky_", "KDE.sample")
        n = check_n_samples(n, "KDE.sample")
        rng = as_rng(rng, name="KDE.sample: rng")
        index = rng.choice(len(self.data_), size=n, p=self.weights_)
        return self.data_[index] + rng.standard_normal((n, self.n_features_in_)) @ self.cholesky_.T
