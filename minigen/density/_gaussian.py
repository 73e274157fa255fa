"""Gaussian maths shared by the in-memory and the Dask mixture fits: precision Cholesky
factors and the component log densities.

Each component is stored by the Cholesky factor P of its precision (P P^T = Sigma^-1), so

    log N(x; mu, Sigma) = -d/2 log 2 pi + log|det P| - 1/2 ||x P - mu P||^2.

minigen evaluates a Gaussian log density in three other places, each in the form its model
keeps: ``PCA.score_samples`` (the probabilistic-PCA covariance W W^T + sigma^2 I, through its
eigenvalues, never a d x d factor), ``models.vae.gaussian_log_density`` (diagonal, from the
encoder's log-variances) and ``kernels.kde`` (one shared kernel covariance, streamed over
pairs). This one serves a stack of K arbitrary covariances evaluated on all n rows at once.
"""
import warnings

import numpy as np

_SCRATCH = 1 << 21                   # floats in one E-step block (rows x K d): 16 MiB


def _collapsed(k, where):
    return ValueError(f"{where}: component {k} has collapsed onto a single point (its covariance "
                      "is zero up to rounding, e.g. from duplicate points), so its density is "
                      "undefined; increase reg_covar (e.g. 1e-6), use fewer components, or "
                      "remove the duplicates")


def _cholesky_with_jitter(covariances, where):
    """Lower Cholesky factors of a stack (K, d, d). A component that is singular gets the
    smallest ridge 10^j * trace/d * I (j = -12, -11, ...) that factorises, with a warning."""
    try:
        return np.linalg.cholesky(covariances)
    except np.linalg.LinAlgError:
        pass
    factors = np.empty_like(covariances)
    eye = np.eye(covariances.shape[-1])
    for k, cov in enumerate(covariances):
        scale = float(np.trace(cov)) / len(cov)
        for ridge in [0.0] + [10.0 ** power * scale for power in range(-12, 3)]:
            try:
                factors[k] = np.linalg.cholesky(cov + ridge * eye)
                break
            except np.linalg.LinAlgError:
                continue
        else:
            raise _collapsed(k, where)
        if ridge > 0:
            warnings.warn(f"{where}: component {k} has a singular covariance; added a ridge "
                          f"{ridge:.3g} I (increase reg_covar)", RuntimeWarning, stacklevel=6)
    return factors


def precision_cholesky(covariances, covariance_type, where="GaussianMixture", resolution=0.0):
    """P with P P^T = Sigma^-1: the inverse transpose of Sigma's Cholesky factor (1/sqrt for
    'diag' and 'spherical'). A component whose largest variance is at most ``resolution`` (the
    variance rounding alone can produce in the data) has collapsed: a ValueError that says to
    increase reg_covar. A zero variance in a component that has not collapsed is floored at
    1e-12 of that component's largest, with a warning."""
    stack = covariances[None] if covariance_type == "tied" else covariances
    largest = (np.max(np.diagonal(stack, axis1=1, axis2=2), axis=1)
               if covariance_type in ("full", "tied") else stack.reshape(len(stack), -1).max(axis=1))
    if np.any(largest <= resolution):
        raise _collapsed(int(np.argmax(largest <= resolution)), where)
    if covariance_type in ("diag", "spherical"):
        floor = 1e-12 * largest.reshape((-1,) + (1,) * (covariances.ndim - 1))
        if np.any(covariances <= floor):
            warnings.warn(f"{where}: a zero variance; flooring it at 1e-12 of its component's "
                          "largest (increase reg_covar)", RuntimeWarning, stacklevel=5)
            covariances = np.maximum(covariances, floor)
        return 1.0 / np.sqrt(covariances)
    factors = _cholesky_with_jitter(stack, where)
    precisions = np.swapaxes(np.linalg.inv(factors), -1, -2)
    if not np.all(np.isfinite(precisions)):
        raise _collapsed(int(np.argmax(~np.all(np.isfinite(precisions), axis=(1, 2)))), where)
    return precisions[0] if covariance_type == "tied" else precisions


def covariances_from_precision_cholesky(prec_chol, covariance_type):
    """Sigma = (P P^T)^-1 (1 / P^2 for 'diag' and 'spherical')."""
    if covariance_type in ("diag", "spherical"):
        return 1.0 / prec_chol ** 2
    inverse = np.linalg.inv(prec_chol)
    return np.swapaxes(inverse, -1, -2) @ inverse


def log_gaussian(X, means, prec_chol, covariance_type):
    """log N(x_i; mu_k, Sigma_k) for all i, k: an (n, K) array.

    'full'/'tied': one matrix product X [P_1 ... P_K] per block of rows, minus mu_k P_k, squared
    and summed per component by a second product with a block indicator.
    'diag'/'spherical': ||x . p_k - mu_k . p_k||^2 expanded into three matrix products.
    """
    n, d = X.shape
    K = len(means)
    if covariance_type in ("full", "tied"):
        P = np.broadcast_to(prec_chol, (K, d, d))
        log_det = np.sum(np.log(np.diagonal(P, axis1=1, axis2=2)), axis=1)
        stacked = np.ascontiguousarray(P.transpose(1, 0, 2).reshape(d, K * d))
        shift = np.einsum("kd,kde->ke", means, P).reshape(K * d)
        blocks = np.kron(np.eye(K), np.ones((d, 1)))
        mahalanobis = np.empty((n, K))
        rows = max(1, _SCRATCH // (K * d))
        for a in range(0, n, rows):
            Y = X[a:a + rows] @ stacked
            Y -= shift
            np.square(Y, out=Y)
            mahalanobis[a:a + rows] = Y @ blocks
    else:
        P = prec_chol[:, None] * np.ones(d) if covariance_type == "spherical" else prec_chol
        log_det = np.sum(np.log(P), axis=1)
        P2 = P ** 2
        mahalanobis = ((X * X) @ P2.T - 2.0 * (X @ (means * P2).T)
                       + np.sum(means ** 2 * P2, axis=1))
    return -0.5 * (d * np.log(2 * np.pi) + mahalanobis) + log_det
