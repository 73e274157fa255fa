"""Gaussian mixture models fitted by expectation-maximisation in log space.

p(x) = sum_k pi_k N(x; mu_k, Sigma_k) (Dempster, Laird & Rubin 1977; Bishop, "Pattern
Recognition and Machine Learning", 2006, sec. 9.2). Each component is stored by the Cholesky
factor P_k of its precision (P_k P_k^T = Sigma_k^-1), so
    log N(x; mu_k, Sigma_k) = -d/2 log 2 pi + log|det P_k| - 1/2 ||x P_k - mu_k P_k||^2.
E-step: r_ik = pi_k N(x_i | k) / sum_j pi_j N(x_i | j), by log-sum-exp; the lower bound is
the mean of log p(x_i) under the parameters before the M-step. M-step (weights s_i, mean 1):
n_k = sum_i s_i r_ik, pi_k = n_k / n, mu_k = sum_i s_i r_ik x_i / n_k,
Sigma_k = sum_i s_i r_ik (x_i - mu_k)(x_i - mu_k)^T / n_k + reg_covar I, pooled over k for
'tied' (sum_k n_k Sigma_k / n), its diagonal for 'diag', the mean of that diagonal for
'spherical'. Initial parameters
(weights_init, means_init, precisions_init) follow scikit-learn's conventions, so a fit can
start from the same place as scikit-learn's.
"""
import functools
import warnings

import numpy as np

from .. import _checks
from ..backend import as_rng
from ..blockwise import is_dask
from ..distribution import (ConvergenceWarning, Distribution, register, check_array, check_fitted,
                            check_n_samples, check_sample_weight, logsumexp)
from ._gaussian import covariances_from_precision_cholesky, log_gaussian, precision_cholesky
from ._validate import check_scale
from .kmeans import KMeans, kmeans_plusplus

_TYPES = ("full", "tied", "diag", "spherical")
_INITS = ("kmeans", "k-means++", "random", "random_from_data")


def estimate_parameters(X, resp, reg_covar, covariance_type):
    """M-step: (n_k, mu_k, Sigma_k) from weighted responsibilities ``resp`` (n, K).

    Every type sums centred squares (x_i - mu_k)^2 (two passes), not E[x^2] - mu^2: the one-pass
    form cancels catastrophically for data far from the origin, and leaves rounding noise where
    a component sits on duplicate points, whose true covariance is exactly zero."""
    nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
    means = (resp.T @ X) / nk[:, None]
    K, d = len(nk), X.shape[1]
    if covariance_type in ("full", "tied"):
        scatter = np.empty((K, d, d))
        for k in range(K):
            D = (X - means[k]) * np.sqrt(resp[:, k])[:, None]
            scatter[k] = D.T @ D
        covariances = scatter / nk[:, None, None] if covariance_type == "full" \
            else scatter.sum(axis=0) / nk.sum()
        covariances[..., np.arange(d), np.arange(d)] += reg_covar
    else:
        covariances = np.stack([resp[:, k] @ (X - means[k]) ** 2 for k in range(K)])
        covariances = covariances / nk[:, None] + reg_covar
        if covariance_type == "spherical":
            covariances = covariances.mean(axis=1)
    return nk, means, covariances


def _n_precision_parameters(covariance_type, K, d):
    return {"full": K * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": K * d,
            "spherical": K}[covariance_type]


def _n_parameters(covariance_type, K, d):
    """Free parameters of a K-component mixture in d dimensions: precisions, means, weights."""
    return _n_precision_parameters(covariance_type, K, d) + K * d + K - 1


@register("gmm")
class GaussianMixture(Distribution):
    """Gaussian mixture fitted by EM (formulas in the module docstring).

    covariance_type: 'full' (K, d, d), 'tied' (d, d), 'diag' (K, d) or 'spherical' (K,).
    init_params: responsibilities to start from: 'kmeans' (minigen's k-means labels),
    'k-means++' (one seed point per component), 'random' (uniform, normalised) or
    'random_from_data' (one random point per component); overridden by whichever of
    weights_init (K,), means_init (K, d), precisions_init (shape of covariances_) are given.
    Stops when the lower bound changes by less than ``tol`` (a ConvergenceWarning if it never
    does in ``max_iter`` iterations); keeps the best of ``n_init`` runs. ``max_iter=0`` only
    initialises (scikit-learn's meaning), and ``lower_bound_`` is then the mean log-likelihood
    of the initial parameters. With ``reg_covar=0`` a component that collapses onto a point
    (duplicates) is a ValueError that says to increase reg_covar, never a NaN model.
    """

    def __init__(self, n_components=1, covariance_type="full", tol=1e-3, reg_covar=1e-6,
                 max_iter=100, n_init=1, init_params="kmeans", weights_init=None,
                 means_init=None, precisions_init=None, random_state=None):
        where = "GaussianMixture"
        _checks.positive_int(n_components, "n_components", where)
        _checks.integer(max_iter, "max_iter", where, low=0)
        _checks.positive_int(n_init, "n_init", where)
        _checks.real(tol, "tol", where, low=0)
        _checks.real(reg_covar, "reg_covar", where, low=0)
        _checks.choice(covariance_type, "covariance_type", where, _TYPES)
        _checks.choice(init_params, "init_params", where, _INITS)
        self.n_components, self.covariance_type, self.tol = n_components, covariance_type, tol
        self.reg_covar, self.max_iter, self.n_init = reg_covar, max_iter, n_init
        self.init_params, self.random_state = init_params, random_state
        self.weights_init, self.means_init, self.precisions_init = weights_init, means_init, precisions_init

    #: the component counts ``for_data`` tries when none is given
    BIC_CANDIDATES = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20)

    @classmethod
    def for_data(cls, X, **params):
        """The mixture the command line fits to X: ``n_components`` as given, else the count in
        ``BIC_CANDIDATES`` with the smallest BIC = -2 log L + n_params log n on X (Schwarz
        1978), among counts whose parameters number fewer than X's rows; ``random_state``
        defaults to 0 so the choice repeats. Other parameters pass through unchanged."""
        params.setdefault("random_state", 0)
        if "n_components" in params:
            return cls(**params)
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or len(X) < 2:
            return cls(**params)
        n, d = X.shape
        covariance_type = params.get("covariance_type", "full")
        best = None
        for K in cls.BIC_CANDIDATES:
            if K > 1 and (K >= n or _n_parameters(covariance_type, K, d) >= n):
                break
            with warnings.catch_warnings():      # a candidate need not converge to be ranked
                warnings.simplefilter("ignore", ConvergenceWarning)
                bic = cls(n_components=K, **params).fit(X).bic(X)
            if best is None or bic < best[0]:
                best = (bic, K)
        return cls(n_components=best[1], **params)

    # ---------------------------------------------------------------- checks and initialisation
    def _check_inits(self, d):
        K, where = self.n_components, "GaussianMixture.fit"
        shapes = {"full": (K, d, d), "tied": (d, d), "diag": (K, d), "spherical": (K,)}
        checked = {}
        for name, value, shape in (("weights_init", self.weights_init, (K,)),
                                   ("means_init", self.means_init, (K, d)),
                                   ("precisions_init", self.precisions_init,
                                    shapes[self.covariance_type])):
            if value is None:
                checked[name] = None
                continue
            value = np.asarray(value, dtype=np.float64)
            if value.shape != shape or not np.all(np.isfinite(value)):
                raise ValueError(f"{where}: {name} must be a finite array of shape {shape}, "
                                 f"got shape {value.shape}")
            checked[name] = value
        w = checked["weights_init"]
        if w is not None and (np.any(w < 0) or not np.isclose(w.sum(), 1.0)):
            raise ValueError(f"{where}: weights_init must be non-negative and sum to 1")
        prec = checked["precisions_init"]
        if prec is not None:
            if self.covariance_type in ("diag", "spherical"):
                if np.any(prec <= 0):
                    raise ValueError(f"{where}: precisions_init must be positive")
                checked["precisions_init"] = np.sqrt(prec)
            else:
                symmetric = np.allclose(prec, np.swapaxes(prec, -1, -2))
                try:
                    checked["precisions_init"] = np.linalg.cholesky(prec)
                except np.linalg.LinAlgError:
                    symmetric = False
                if not symmetric:
                    raise ValueError(f"{where}: precisions_init must be symmetric positive definite")
        return checked

    def _initial_resp(self, X, rng):
        n, K = len(X), self.n_components
        resp = np.zeros((n, K))
        if self.init_params == "kmeans":
            labels = KMeans(K, n_init=1, random_state=rng).fit(X).labels_
            resp[np.arange(n), labels] = 1.0
        elif self.init_params == "random":
            resp = rng.uniform(size=(n, K))
            resp /= resp.sum(axis=1, keepdims=True)
        elif self.init_params == "random_from_data":
            resp[rng.choice(n, size=K, replace=False), np.arange(K)] = 1.0
        else:
            resp[kmeans_plusplus(X, K, rng)[1], np.arange(K)] = 1.0
        return resp

    def _initialize(self, X, s, inits, rng, resolution=0.0):
        if any(v is None for v in inits.values()):
            resp = self._initial_resp(X, rng) * s[:, None]
            nk, means, covariances = estimate_parameters(X, resp, self.reg_covar, self.covariance_type)
            self.weights_ = nk / len(X)
            self.means_ = means
            self.precisions_cholesky_ = precision_cholesky(covariances, self.covariance_type,
                                                           "GaussianMixture.fit", resolution)
        if inits["weights_init"] is not None:
            self.weights_ = inits["weights_init"].copy()
        if inits["means_init"] is not None:
            self.means_ = inits["means_init"].copy()
        if inits["precisions_init"] is not None:
            self.precisions_cholesky_ = inits["precisions_init"].copy()
        self.covariances_ = covariances_from_precision_cholesky(self.precisions_cholesky_,
                                                                self.covariance_type)

    # ---------------------------------------------------------------- EM
    def _e_step(self, X):
        """Per-sample log p(x_i) and responsibilities r_ik."""
        weighted = log_gaussian(X, self.means_, self.precisions_cholesky_, self.covariance_type)
        with np.errstate(divide="ignore"):
            weighted += np.log(self.weights_)
        log_norm = logsumexp(weighted, axis=1)
        weighted -= log_norm[:, None]
        return log_norm, np.exp(weighted, out=weighted)

    def _m_step(self, X, resp, resolution=0.0):
        nk, self.means_, self.covariances_ = estimate_parameters(
            X, resp, self.reg_covar, self.covariance_type)
        self.weights_ = nk / nk.sum()
        self.precisions_cholesky_ = precision_cholesky(self.covariances_, self.covariance_type,
                                                       "GaussianMixture.fit", resolution)

    def _best_run(self, X, s, inits, rng, resolution):
        """EM from ``n_init`` initialisations: the state of the run with the highest bound."""
        n, best = len(X), None
        for _ in range(self.n_init):
            self._initialize(X, s, inits, rng, resolution)
            lower_bound, bounds, converged, n_iter = -np.inf, [], False, 0
            if self.max_iter == 0:
                lower_bound = float(np.dot(s, self._e_step(X)[0]) / n)
            for n_iter in range(1, self.max_iter + 1):
                previous = lower_bound
                log_norm, resp = self._e_step(X)
                self._m_step(X, resp * s[:, None], resolution)
                lower_bound = float(np.dot(s, log_norm) / n)
                bounds.append(lower_bound)
                if abs(lower_bound - previous) < self.tol:
                    converged = True
                    break
            if best is None or lower_bound > best[0]:
                best = (lower_bound, np.array(bounds), converged, n_iter, self.weights_,
                        self.means_, self.covariances_, self.precisions_cholesky_)
        return best

    def fit(self, X, y=None, sample_weight=None):
        """Run EM ``n_init`` times and keep the run with the highest final lower bound
        (``y`` is ignored: scikit-learn's signature). Dask data run the same EM with the
        E-step and the sufficient statistics computed chunk by chunk (``dask_mixture``)."""
        where = "GaussianMixture.fit"
        if is_dask(X, sample_weight):
            from . import dask_mixture
            X, s, top = dask_mixture.checked(X, sample_weight, where)
            best_run = functools.partial(dask_mixture.best_run, self)
        else:
            X = check_scale(check_array(X, where, min_samples=1), where)
            s = check_sample_weight(sample_weight, len(X), where) * len(X)
            top, best_run = float(np.max(np.abs(X))), self._best_run
        n, d = X.shape
        if self.n_components > n:
            raise ValueError(f"{where}: n_components={self.n_components} exceeds n_samples={n}")
        # The variance that rounding alone produces in data of this magnitude: a component
        # whose largest variance is no more than this has collapsed onto a point.
        resolution = (4 * np.finfo(np.float64).eps * top) ** 2
        inits = self._check_inits(d)
        rng = as_rng(self.random_state, name="random_state", where=where)
        return self._keep_best(lambda: best_run(X, s, inits, rng, resolution), d, stacklevel=3)

    def _keep_best(self, best_run, d, stacklevel):
        """Store the state of ``best_run()`` (EM from every initialisation; the in-memory and
        the Dask fit share this tail) and warn if EM did not converge. A collapsed component
        (ValueError) leaves no half-fitted state."""
        try:
            best = best_run()
        except ValueError:
            for name in [name for name in vars(self) if name.endswith("_")]:
                delattr(self, name)
            raise
        (self.lower_bound_, self.lower_bounds_, self.converged_, self.n_iter_, self.weights_,
         self.means_, self.covariances_, self.precisions_cholesky_) = best
        if not self.converged_ and self.max_iter > 0:
            warnings.warn(f"GaussianMixture.fit: EM did not converge in max_iter={self.max_iter} "
                          f"iterations (tol={self.tol}); increase max_iter or tol",
                          ConvergenceWarning, stacklevel=stacklevel)
        self.n_features_in_ = d
        return self

    def fit_predict(self, X, y=None, sample_weight=None):
        """Fit, then the most likely component of each row: ``fit(X).predict(X)``."""
        return self.fit(X, sample_weight=sample_weight).predict(X)

    # ---------------------------------------------------------------- using the fit
    @property
    def precisions_(self):
        """Sigma^-1 = P P^T (P^2 for 'diag' and 'spherical')."""
        check_fitted(self, "precisions_cholesky_", "GaussianMixture.precisions_")
        P = self.precisions_cholesky_
        return P ** 2 if self.covariance_type in ("diag", "spherical") else P @ np.swapaxes(P, -1, -2)

    def _checked(self, X, where):
        check_fitted(self, "precisions_cholesky_", where)
        return check_array(X, where, n_features=self.n_features_in_)

    def _log_joint(self, X):
        logp = log_gaussian(X, self.means_, self.precisions_cholesky_, self.covariance_type)
        with np.errstate(divide="ignore"):
            return logp + np.log(self.weights_)

    def score_samples(self, X):
        """log p(x_i) = logsumexp_k (log pi_k + log N(x_i; mu_k, Sigma_k))."""
        if is_dask(X):
            from .dask_mixture import score_rows
            return score_rows(self.score_samples, X, "GaussianMixture.score_samples")
        return logsumexp(self._log_joint(self._checked(X, "GaussianMixture.score_samples")), axis=1)

    def predict_proba(self, X):
        """Responsibilities r_ik = p(k | x_i)."""
        joint = self._log_joint(self._checked(X, "GaussianMixture.predict_proba"))
        return np.exp(joint - logsumexp(joint, axis=1)[:, None])

    def predict(self, X):
        return np.argmax(self._log_joint(self._checked(X, "GaussianMixture.predict")), axis=1)

    def sample(self, n, rng=None, *, return_labels=False):
        """Draw k ~ Categorical(pi), then x = mu_k + L_k u with L_k L_k^T = Sigma_k, u ~ N(0, I)."""
        check_fitted(self, "precisions_cholesky_", "GaussianMixture.sample")
        n = check_n_samples(n, "GaussianMixture.sample")
        rng = as_rng(rng, where="GaussianMixture.sample")
        labels = rng.choice(self.n_components, size=n, p=self.weights_ / self.weights_.sum())
        U = rng.standard_normal((n, self.n_features_in_))
        P = self.precisions_cholesky_
        if self.covariance_type == "diag":
            X = U / P[labels]
        elif self.covariance_type == "spherical":
            X = U / P[labels][:, None]
        else:
            # Sigma = P^-T P^-1, so x - mu = P^-T u, i.e. the row u^T P^-1.
            P_inv = np.linalg.inv(np.broadcast_to(P, (self.n_components,) + P.shape[-2:]))
            X = np.empty_like(U)
            for k in range(self.n_components):
                X[labels == k] = U[labels == k] @ P_inv[k]
        X += self.means_[labels]
        return (X, labels) if return_labels else X

    def _n_parameters(self):
        return _n_parameters(self.covariance_type, self.n_components, self.n_features_in_)

    def bic(self, X):
        """Bayesian information criterion: -2 sum_i log p(x_i) + n_params log n (Schwarz 1978)."""
        X = self._checked(X, "GaussianMixture.bic")
        return -2 * self.score(X) * len(X) + self._n_parameters() * np.log(len(X))

    def aic(self, X):
        """Akaike information criterion: -2 sum_i log p(x_i) + 2 n_params (Akaike 1974)."""
        X = self._checked(X, "GaussianMixture.aic")
        return -2 * self.score(X) * len(X) + 2 * self._n_parameters()
