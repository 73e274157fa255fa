"""Mini-batches over one or more arrays that share their first axis."""
import numpy as np

from .._checks import positive_int
from ..backend import as_rng
from ..io import from_json_array, json_array


def _as_arrays(arrays, where):
    single = not isinstance(arrays, (tuple, list))
    arrays = (arrays,) if single else tuple(arrays)
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"{where}: arrays have different lengths {[len(a) for a in arrays]}")
    return arrays, single, n


def batches(arrays, batch_size, shuffle=True, drop_last=False, rng=None):
    """Yield batches (an array, or a tuple of arrays when given a tuple) for one epoch."""
    arrays, single, n = _as_arrays(arrays, "batches")
    positive_int(batch_size, "batch_size", "batches")
    order = as_rng(rng, where="batches").permutation(n) if shuffle else np.arange(n)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        idx = order[start:start + batch_size]
        out = tuple(a[idx] for a in arrays)
        yield out[0] if single else out


class BatchStream:
    """Batches forever, reshuffled each epoch (drop_last, so every batch has batch_size rows).

    Its position is state: ``state_dict()`` holds the epoch's permutation, the offset in it
    and the generator's state, so a resumed stream yields exactly the batches the original
    would have (``minigen.train`` checkpoints it)."""

    def __init__(self, arrays, batch_size, rng=None):
        self.arrays, self.single, self.n = _as_arrays(arrays, "infinite_batches")
        positive_int(batch_size, "batch_size", "infinite_batches")
        if self.n < batch_size:
            raise ValueError(f"infinite_batches: {self.n} rows is fewer than batch_size "
                             f"{batch_size}")
        self.batch_size, self.rng = batch_size, as_rng(rng, where="train")
        self.order, self.pos = None, 0

    @property
    def batches_per_epoch(self):
        return self.n // self.batch_size

    def __iter__(self):
        return self

    def __next__(self):
        if self.order is None or self.pos + self.batch_size > self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        out = tuple(a[idx] for a in self.arrays)
        return out[0] if self.single else out

    def state_dict(self):
        order = np.zeros(0, np.int64) if self.order is None else self.order
        return {"order": order.copy(), "pos": np.array(self.pos),
                "rng": json_array(self.rng.bit_generator.state)}

    def load_state_dict(self, state):
        order = np.asarray(state["order"])
        if order.size and (order.shape != (self.n,)
                           or not np.array_equal(np.sort(order), np.arange(self.n))):
            raise ValueError(f"BatchStream.load_state_dict: the saved order is not a "
                             f"permutation of the {self.n} rows")
        self.rng.bit_generator.state = from_json_array(state["rng"])
        self.order = order.astype(np.int64) if order.size else None
        self.pos = int(state["pos"])


def infinite_batches(arrays, batch_size, rng=None):
    """A ``BatchStream``: batches forever, reshuffled each epoch (drop_last)."""
    return BatchStream(arrays, batch_size, rng)
