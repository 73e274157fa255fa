"""Principal component analysis and its probabilistic model (PPCA).

Fit: centre X (mean mu), take the SVD X - mu = U S V^T; the rows of W = V^T[:k] are the
principal axes and lambda_i = S_i^2 / (n - 1) the variance along each. The code of x is
z = W (x - mu) (divided by sqrt(lambda) when whitening), and x_hat = W^T z + mu decodes it.

The probabilistic PCA of Tipping & Bishop, "Probabilistic principal component analysis"
(JRSS B, 1999) reads the fit as the Gaussian x ~ N(mu, C) with
C = W^T diag(lambda) W + sigma^2 (I - W^T W), where the maximum-likelihood noise variance
sigma^2 is the mean of the discarded variances. Because W has orthonormal rows, with
r = (x - mu) - W^T W (x - mu) the residual outside the principal subspace,
    log p(x) = -1/2 [sum_i z_i^2 / lambda_i + |r|^2 / sigma^2 + sum_i log lambda_i
                     + (d - k) log sigma^2 + d log 2 pi].
Signs follow scikit-learn's convention: the largest-magnitude entry of each axis is positive.
Whitening divides by max(sqrt(lambda_i), eps sqrt(lambda_1)): a (numerically) zero variance of
rank-deficient data is clamped, as scikit-learn clamps it at eps, but relative to the largest
scale so that the rule does not depend on the data's units.
"""
import warnings

import numpy as np

from .. import _checks
from ..backend import as_rng
from ..distribution import Distribution, register, check_array, check_fitted, check_n_samples
from ._validate import check_scale, exact_mean

_SOLVERS = ("full", "covariance_eigh", "randomized")


def _flip_signs(Vt):
    """Make the largest-|.| entry of each row of Vt positive (scikit-learn's svd_flip on V)."""
    rows = np.arange(Vt.shape[0])
    signs = np.sign(Vt[rows, np.argmax(np.abs(Vt), axis=1)])
    signs[signs == 0] = 1.0
    return Vt * signs[:, None]


def _randomized_svd(Xc, k, rng, oversample=10, n_iter=7):
    """Halko, Martinsson & Tropp (2011), Alg. 4.4: a range finder with power iterations,
    re-orthonormalised by QR each step, then the exact SVD of the small projected matrix."""
    sketch = min(k + oversample, min(Xc.shape))
    Q = np.linalg.qr(Xc @ rng.standard_normal((Xc.shape[1], sketch)))[0]
    for _ in range(n_iter):
        Q = np.linalg.qr(Xc.T @ Q)[0]
        Q = np.linalg.qr(Xc @ Q)[0]
    _, S, Vt = np.linalg.svd(Q.T @ Xc, full_matrices=False)
    return S[:k], Vt[:k]


def _float_dtype(X):
    """float32 for a float32 array (scikit-learn's dtype preservation), else float64."""
    return np.float32 if getattr(X, "dtype", None) == np.float32 else np.float64


@register("pca")
class PCA(Distribution):
    """PCA with the PPCA density (Tipping & Bishop 1999).

    n_components: an int k (1 <= k <= min(n, d), checked by ``fit``), a fraction in (0, 1) (the
    fewest axes whose explained-variance ratio sums above it), or None (min(n, d)).
    svd_solver: 'full' (SVD of the centred data), 'covariance_eigh' (eigenvectors of the
    d x d covariance: fast for n >> d), or 'randomized' (Halko et al. 2011; approximate).
    float32 data gives float32 components and transforms (computed in float64, then cast).
    """

    def __init__(self, n_components=None, whiten=False, svd_solver="full", random_state=None):
        _checks.choice(svd_solver, "svd_solver", "PCA", _SOLVERS)
        nc = n_components
        if not (nc is None or (isinstance(nc, (int, np.integer)) and not isinstance(nc, bool))
                or (isinstance(nc, (float, np.floating)) and 0.0 < nc < 1.0)):
            raise ValueError("PCA: n_components must be None, an int or a fraction in (0, 1), "
                             f"got {_checks.excerpt(nc)}")
        if svd_solver == "randomized" and isinstance(nc, (float, np.floating)):
            raise ValueError("PCA: svd_solver='randomized' needs an int n_components or None")
        self.n_components = n_components
        self.whiten = whiten
        self.svd_solver = svd_solver
        self.random_state = random_state

    def fit(self, X, y=None):
        """Principal axes and variances of X (``y`` is ignored: scikit-learn's signature)."""
        dtype = _float_dtype(X)
        X = check_scale(check_array(X, "PCA.fit", min_samples=2), "PCA.fit")
        n, d = X.shape
        rank = min(n, d)
        nc = self.n_components
        if isinstance(nc, (int, np.integer)) and nc > rank:
            raise ValueError(f"PCA.fit: n_components={nc} exceeds min(n_samples, n_features)={rank}")
        if isinstance(nc, (int, np.integer)) and nc < 1:
            raise ValueError(f"PCA.fit: n_components={nc} must be between 1 and "
                             f"min(n_samples, n_features)={rank}")
        if not np.any(np.ptp(X, axis=0)):
            raise ValueError("PCA.fit: every column of X is constant (all samples coincide), so "
                             "every variance is zero and there are no principal axes")
        mean, total_var = exact_mean(X), None
        if self.svd_solver == "full":
            _, S, Vt = np.linalg.svd(X - mean, full_matrices=False)
            variance = S ** 2 / (n - 1)
        elif self.svd_solver == "covariance_eigh":
            C = (X.T @ X - n * np.outer(mean, mean)) / (n - 1)
            variance, V = np.linalg.eigh(C)
            variance, Vt = np.clip(variance[::-1], 0.0, None), V[:, ::-1].T
            S = np.sqrt(variance * (n - 1))
        else:
            Xc = X - mean
            rng = as_rng(self.random_state, name="random_state", where="PCA.fit")
            S, Vt = _randomized_svd(Xc, rank if nc is None else nc, rng)
            variance = S ** 2 / (n - 1)
            total_var = np.einsum("ij,ij->", Xc, Xc) / (n - 1)
        Vt = _flip_signs(Vt)
        if total_var is None:
            total_var = variance.sum()
        ratio = variance / total_var
        if self.n_components is None:
            k = rank
        elif isinstance(self.n_components, (float, np.floating)):
            k = int(np.searchsorted(np.cumsum(ratio), self.n_components, side="right")) + 1
            k = min(k, rank)
        else:
            k = int(self.n_components)
        if k < rank:
            self.noise_variance_ = float((total_var - variance[:k].sum()) / (rank - k))
        else:
            self.noise_variance_ = 0.0
        self.n_components_, self.n_features_in_, self.n_samples_ = k, d, n
        self.mean_ = mean.astype(dtype)
        self.components_ = np.ascontiguousarray(Vt[:k], dtype=dtype)
        self.explained_variance_ = variance[:k].astype(dtype)
        self.explained_variance_ratio_ = ratio[:k].astype(dtype)
        self.singular_values_ = S[:k].astype(dtype)
        return self

    def _whitening_scale(self):
        """max(sqrt(lambda_i), eps sqrt(lambda_1)): no division by a zero variance."""
        scale = np.sqrt(self.explained_variance_.astype(np.float64))
        return np.maximum(scale, np.finfo(np.float64).eps * scale.max())

    def transform(self, X):
        """z = W (x - mu), divided by the whitening scale when whitening (float32 stays float32)."""
        check_fitted(self, "components_", "PCA.transform")
        dtype = np.result_type(_float_dtype(X), self.components_.dtype)
        X = check_array(X, "PCA.transform", n_features=self.n_features_in_, min_samples=0)
        Z = (X - self.mean_) @ self.components_.T.astype(np.float64)
        return (Z / self._whitening_scale() if self.whiten else Z).astype(dtype, copy=False)

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    def inverse_transform(self, Z):
        """x = W^T z + mu (z multiplied by the whitening scale first when whitening)."""
        check_fitted(self, "components_", "PCA.inverse_transform")
        dtype = np.result_type(_float_dtype(Z), self.components_.dtype)
        Z = check_array(Z, "PCA.inverse_transform", n_features=self.n_components_, min_samples=0)
        if self.whiten:
            Z = Z * self._whitening_scale()
        return (Z @ self.components_ + self.mean_).astype(dtype, copy=False)

    def _model_variances(self, where):
        """(lambda, sigma^2) with any zero variance floored, warning, so the density is proper."""
        variance, noise = self.explained_variance_, self.noise_variance_
        needs_noise = self.n_components_ < self.n_features_in_
        floor = 1e-12 * max(float(variance.max()), np.finfo(np.float64).tiny)
        if np.any(variance <= floor) or (needs_noise and noise <= floor):
            warnings.warn(f"{where}: the PPCA covariance is singular (a zero variance); "
                          f"flooring variances at {floor:.3g}", RuntimeWarning, stacklevel=3)
            variance, noise = np.maximum(variance, floor), max(noise, floor)
        return variance, noise

    def _residual_term(self, X, variance, noise):
        """-1/2 [|r|^2 / sigma^2 + (d - k) log(2 pi sigma^2)] for each row of X."""
        n_residual = self.n_features_in_ - self.n_components_
        if n_residual == 0:
            return np.zeros(len(X))
        Xc = X - self.mean_
        R = Xc - (Xc @ self.components_.T) @ self.components_
        return -0.5 * (np.einsum("ij,ij->i", R, R) / noise + n_residual * np.log(2 * np.pi * noise))

    def residual_log_prob(self, X):
        """log p(x) - log p_code(z) for the code z = transform(x) and its Gaussian N(0, diag(lambda))
        (N(0, I) when whitening): the residual term -1/2 [|r|^2 / sigma^2 + (d - k) log(2 pi sigma^2)],
        minus sum_i log s_i for whitened codes, s the whitening scale (the Jacobian of z = y / s;
        s_i = sqrt(lambda_i) unless clamped)."""
        check_fitted(self, "components_", "PCA.residual_log_prob")
        X = check_array(X, "PCA.residual_log_prob", n_features=self.n_features_in_)
        variance, noise = self._model_variances("PCA.residual_log_prob")
        out = self._residual_term(X, variance, noise)
        return out - np.sum(np.log(self._whitening_scale())) if self.whiten else out

    def score_samples(self, X):
        """The PPCA log density log N(x; mu, C) of each row (formula in the module docstring).

        Written in C's eigenbasis (k code variances lambda plus the isotropic residual sigma^2)
        rather than with ``density._gaussian.log_gaussian``: C is never formed or factored, so
        the cost is O(n d k), not O(n d^2)."""
        check_fitted(self, "components_", "PCA.score_samples")
        X = check_array(X, "PCA.score_samples", n_features=self.n_features_in_)
        variance, noise = self._model_variances("PCA.score_samples")
        Z = (X - self.mean_) @ self.components_.T
        code = -0.5 * (np.einsum("ij,ij->i", Z, Z / variance)
                       + np.sum(np.log(variance)) + self.n_components_ * np.log(2 * np.pi))
        return code + self._residual_term(X, variance, noise)

    def get_covariance(self):
        """C = W^T diag(lambda) W + sigma^2 (I - W^T W)."""
        check_fitted(self, "components_", "PCA.get_covariance")
        W = self.components_
        return (W.T * (self.explained_variance_ - self.noise_variance_)) @ W \
            + self.noise_variance_ * np.eye(self.n_features_in_)

    def sample(self, n, rng=None):
        """Draw from the PPCA model: x = mu + W^T (sqrt(lambda) * u) + sigma (I - W^T W) e,
        with u ~ N(0, I_k), e ~ N(0, I_d)."""
        check_fitted(self, "components_", "PCA.sample")
        n = check_n_samples(n, "PCA.sample")
        rng = as_rng(rng, where="PCA.sample")
        codes = rng.standard_normal((n, self.n_components_)) * np.sqrt(self.explained_variance_)
        return codes @ self.components_ + self.mean_ + self.sample_residual(n, rng)

    def sample_residual(self, n, rng=None):
        """Noise sigma (I - W^T W) e, e ~ N(0, I_d): the PPCA variation outside the principal axes."""
        check_fitted(self, "components_", "PCA.sample_residual")
        n = check_n_samples(n, "PCA.sample_residual")
        rng = as_rng(rng, where="PCA.sample_residual")
        E = np.sqrt(self.noise_variance_) * rng.standard_normal((n, self.n_features_in_))
        return E - (E @ self.components_.T) @ self.components_
