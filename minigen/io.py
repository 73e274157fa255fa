"""Checkpoints: state dicts saved as ``.npz`` and loaded with ``allow_pickle=False``, so
loading a file never executes code."""
import os
import zipfile

import numpy as np

_MAGIC = "__minigen_checkpoint__"


def save(state_dict, path):
    """Save name -> array (NumPy, CuPy or Tensor) to ``path`` (.npz, compressed)."""
    from .backend import to_device
    arrays = {}
    for name, value in state_dict.items():
        if name == _MAGIC:
            raise ValueError(f"save: the key {_MAGIC!r} is reserved")
        value = getattr(value, "data", value) if not isinstance(value, np.ndarray) else value
        arr = to_device(value, "cpu") if hasattr(value, "dtype") else np.asarray(value)
        if arr.dtype == object:
            raise TypeError(f"save: {name} is not a numeric array (dtype object)")
        arrays[name] = arr
    arrays[_MAGIC] = np.array(1)
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def load(path):
    """Load a checkpoint written by ``save``: a dict name -> NumPy array."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file {path!r}")
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"load: {path!r} is not a minigen checkpoint ({err})") from None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"load: {path!r} is not a minigen checkpoint (not an .npz archive)")
    with f:
        if _MAGIC not in f.files:
            raise ValueError(f"load: {path!r} is not a minigen checkpoint")
        try:
            return {k: f[k] for k in f.files if k != _MAGIC}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
            raise ValueError(f"load: {path!r} is not a valid minigen checkpoint ({err})") from None
