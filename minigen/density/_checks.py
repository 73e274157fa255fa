"""Input checks shared by the density estimators: clear errors raised before any work."""
import numpy as np


def check_data(X, where, n_features=None, min_samples=1):
    """``X`` as a finite float64 ``(n, d)`` array (a 1-D array is one feature: ``(n, 1)``)."""
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{where}: X must be a numeric array, got {type(X).__name__}") from err
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"{where}: X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] < min_samples:
        raise ValueError(f"{where}: X needs at least {min_samples} sample(s), got {X.shape[0]}")
    if X.shape[1] < 1:
        raise ValueError(f"{where}: X needs at least 1 feature, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{where}: X has {X.shape[1]} features but the model was fitted "
                         f"with {n_features}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{where}: X contains NaN or infinity")
    return X


def check_sample_weight(sample_weight, n, where):
    """Non-negative finite weights of shape ``(n,)`` with a positive sum, normalised to sum 1;
    None means equal weights."""
    if sample_weight is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{where}: sample_weight must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError(f"{where}: sample_weight must have a positive sum")
    return w / w.sum()


def check_n_samples(n, where):
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"{where}: n must be a positive int, got {n!r}")
    return int(n)


def check_fitted(model, attribute, where):
    if not hasattr(model, attribute):
        raise RuntimeError(f"{where}: this {type(model).__name__} is not fitted yet; call fit(X) first")


def check_positive(value, name, where, integer=False):
    kind = (int, np.integer) if integer else (int, float, np.integer, np.floating)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0 or not np.isfinite(value):
        expected = "a positive int" if integer else "a positive finite number"
        raise ValueError(f"{where}: {name} must be {expected}, got {value!r}")
    return value


def logsumexp(a, axis):
    """log sum exp(a) along ``axis``, shifted by the maximum for stability (-inf rows stay -inf)."""
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.log(np.sum(np.exp(a - top), axis=axis)) + np.squeeze(top, axis=axis)
