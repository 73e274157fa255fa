"""Helpers shared by several test files (imported as ``tests.helpers``; pytest's docs advise
against importing from conftest.py, which pytest loads under a name of its own)."""
import numpy as np

import minigen as mg


def leaf(values, dtype=np.float64):
    """A float64 (by default) leaf tensor that requires grad, for gradient tests."""
    return mg.tensor(np.asarray(values, dtype=dtype), requires_grad=True)
