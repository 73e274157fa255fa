"""The data check the classical estimators share beyond ``minigen.distribution``'s: data
whose squares float64 cannot hold (hyper-parameters are checked by ``minigen._checks``).

Every estimator here sums squares of the data (covariances, squared distances, squared
singular values). With N = n d entries, a sum of N squares stays finite while
max |x| <= sqrt(f_max / (4 N)), and a column's variation delta keeps a normal (not underflowed)
square, even averaged over the N entries, while delta >= sqrt(4 N f_tiny); f_max and f_tiny
are float64's largest and smallest normal numbers. Outside that range the answer is an error
that says to rescale, never a NaN or infinite model.
"""
import numpy as np

_INFO = np.finfo(np.float64)


def check_scale(X, where):
    """Raise a ValueError when the squares of X's entries overflow float64 or a column's
    (non-zero) variation is so small that its squares underflow (bounds in the module
    docstring). X is a finite, non-empty float64 (n, d) array."""
    check_extremes(float(np.max(np.abs(X))), X.min(axis=0), X.max(axis=0), X.shape, where)
    return X


def check_scale_blocks(X, where):
    """``check_scale`` on a Dask X: max |x| and each column's min and max in one pass of
    per-chunk reductions."""
    import dask
    top, low, high = dask.compute(abs(X).max(), X.min(axis=0), X.max(axis=0))
    check_extremes(float(top), low, high, X.shape, where)
    return float(top)


def check_extremes(top, low, high, shape, where):
    """``check_scale`` from the summaries of an (n, d) = ``shape`` array: top = max |x|, and
    each column's min ``low`` and max ``high`` (the Dask path reduces these chunk by chunk).
    The spread high - low is taken only once top is known not to overflow it."""
    size = shape[0] * shape[1]
    huge, small = np.sqrt(_INFO.max / (4 * size)), np.sqrt(4 * size * _INFO.tiny)
    if top > huge:
        raise ValueError(f"{where}: X has entries as large as {top:.3g} in magnitude; sums of "
                         f"their squares overflow float64 (the limit for {shape[0]} x "
                         f"{shape[1]} data is {huge:.3g}): rescale X, e.g. X / np.abs(X).max()")
    spread = high - low
    tiny = np.flatnonzero((spread > 0) & (spread < small))
    if len(tiny):
        j = int(tiny[0])
        raise ValueError(f"{where}: column {j} of X varies by only {spread[j]:.3g}; squared "
                         f"deviations below {small:.3g} underflow float64: rescale X, e.g. "
                         "(X - X.mean(axis=0)) / X.std(axis=0), or drop the column")


def exact_mean(X, weights=None):
    """The (weighted) column means, exact for constant columns: their mean is the constant
    itself, so centred constant columns are exactly zero rather than rounding noise."""
    mean = X.mean(axis=0) if weights is None else weights @ X
    constant = np.ptp(X, axis=0) == 0
    mean[constant] = X[0, constant]
    return mean
