"""Mini-batches over one or more arrays that share their first axis."""
import numpy as np

from ..backend import as_rng


def batches(arrays, batch_size, shuffle=True, drop_last=False, rng=None):
    """Yield batches (an array, or a tuple of arrays when given a tuple) for one epoch."""
    single = not isinstance(arrays, (tuple, list))
    arrays = (arrays,) if single else tuple(arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"batches: arrays have different lengths {[len(a) for a in arrays]}")
    if batch_size < 1:
        raise ValueError(f"batches: batch_size must be >= 1, got {batch_size}")
    order = as_rng(rng).permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        out = tuple(a[idx] for a in arrays)
        yield out[0] if single else out


def infinite_batches(arrays, batch_size, rng=None):
    """Batches forever, reshuffled each epoch (drop_last, so every batch has batch_size rows)."""
    rng = as_rng(rng)
    n = len(arrays[0] if isinstance(arrays, (tuple, list)) else arrays)
    if n < batch_size:
        raise ValueError(f"infinite_batches: {n} rows is fewer than batch_size {batch_size}")
    while True:
        yield from batches(arrays, batch_size, shuffle=True, drop_last=True, rng=rng)
