"""Distances between samples: sliced Wasserstein, MMD with a Gaussian kernel, energy distance.

Each takes two point sets X (n, ...) and Y (m, ...) and compares the empirical distributions
they define. ``distances`` computes them in memory; ``sliced_wasserstein``, ``mmd2`` and
``mmd`` also accept Dask arrays and then run block-wise (``_dask``), with the same answer to
float64 rounding.
"""
import functools
import math

from ..blockwise import is_dask
from . import _dask, distances
from .distances import (energy_distance, median_bandwidth, random_directions,
                        sliced_wasserstein_loss, wasserstein_1d)

__all__ = ["energy_distance", "median_bandwidth", "mmd", "mmd2", "random_directions",
           "sliced_wasserstein", "sliced_wasserstein_loss", "wasserstein_1d"]


def _with_dask(in_memory, blockwise):
    """``in_memory``'s signature and docstring; Dask arguments go to ``blockwise``."""
    @functools.wraps(in_memory)
    def metric(X, Y, *args, **kwargs):
        return (blockwise if is_dask(X, Y) else in_memory)(X, Y, *args, **kwargs)
    return metric


sliced_wasserstein = _with_dask(distances.sliced_wasserstein, _dask.sliced_wasserstein)
mmd2 = _with_dask(distances.mmd2, _dask.mmd2)


def mmd(X, Y, bandwidth=None):
    """MMD = sqrt of the biased (V-statistic) ``mmd2``, a distance between the two samples."""
    return math.sqrt(max(mmd2(X, Y, bandwidth, unbiased=False), 0.0))
