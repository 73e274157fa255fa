"""Checkpoints, never pickle: state dicts saved as ``.npz`` and loaded with
``allow_pickle=False``, and whole models that rebuild themselves from minigen's registry.

``save(state, path)`` / ``load(path)``: name -> numeric array. ``save_model(model, path)`` /
``load_model(path)``: the model's class name and constructor parameters as JSON (stored as a
uint8 array, so loading never unpickles), nested minigen objects recursively (a
``DDPM(TimeMLP(...), NoiseSchedule(...))`` or ``LatentDensity(PCA(), GaussianMixture())``),
every object's fitted ``_`` state, a Module's state dict, and the library version. Loading looks
class names up in ``minigen.distribution.registry()`` (never an import path from the file).

Every write is atomic: the archive goes to a temporary file in the target's directory, is
flushed and fsynced, then ``os.replace``d over the target, so a crash or a kill mid-write
leaves the previous file intact.
"""
import json
import os
import re
import tempfile
import zipfile
import zlib

import numpy as np

from ._checks import excerpt
from .backend import to_device
from ._version import __version__
from .distribution import Configurable, registry
from .nn import Module

_MAGIC = "__minigen_checkpoint__"
_MODEL = "__minigen_model__"
_KEY = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_NUMERIC = "biufc"   # bool, int, uint, float, complex


def json_array(obj):
    """``obj`` (JSON-serialisable) as a uint8 array of its UTF-8 JSON text."""
    return np.frombuffer(json.dumps(obj).encode("utf-8"), dtype=np.uint8).copy()


def from_json_array(array):
    """The object stored by ``json_array``."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or array.ndim != 1:
        raise ValueError(f"from_json_array: expected a 1-D uint8 array, got {array.dtype} "
                         f"{array.shape}")
    return json.loads(array.tobytes().decode("utf-8"))


def atomic_write(path, write):
    """Call ``write(file)`` on a binary temporary file beside ``path``, fsync, then replace
    ``path``: a crash mid-write leaves the previous file intact."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp",
                               dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)     # mkstemp's 0600 -> the mode open() would give
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    if hasattr(os, "O_DIRECTORY"):        # make the rename itself durable (POSIX)
        dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def save(state_dict, path):
    """Save name -> array (NumPy, CuPy or Tensor) to ``path`` (.npz, compressed), atomically.

    Names are member names in the archive: letters, digits, '_', '.' and '-', not starting
    with '.' and without '..' (no paths); values are numeric or boolean arrays."""
    arrays = {}
    for name, value in state_dict.items():
        if not isinstance(name, str):
            raise TypeError(f"save: keys must be strings, got {name!r}")
        if name == _MAGIC:
            raise ValueError(f"save: the key {_MAGIC!r} is reserved")
        if not _KEY.fullmatch(name) or ".." in name:
            raise ValueError(f"save: the key {name!r} is not a plain name (letters, digits, "
                             "'_', '.', '-'; no '/', no '..')")
        if isinstance(value, (str, bytes)):
            raise TypeError(f"save: {name} is a {type(value).__name__}, not a numeric array")
        value = getattr(value, "data", value) if not isinstance(value, np.ndarray) else value
        arr = to_device(value, "cpu") if hasattr(value, "dtype") else np.asarray(value)
        if arr.dtype.kind not in _NUMERIC:
            raise TypeError(f"save: {name} is not a numeric array (dtype {arr.dtype})")
        arrays[name] = arr
    arrays[_MAGIC] = np.array(1)
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))


def load(path):
    """Load a checkpoint written by ``save``: a dict name -> NumPy array."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file {os.fspath(path)!r}")
    where = f"load: {os.fspath(path)!r}"
    try:
        f = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
        f = None
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(f"{where} is not a minigen checkpoint (not an .npz archive)")
    with f:
        if _MAGIC not in f.files:
            raise ValueError(f"{where} is not a minigen checkpoint")
        out = {}
        for k in f.files:
            try:
                value = f[k]
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error):
                raise ValueError(f"{where} is not a valid minigen checkpoint: member {k!r} is "
                                 "corrupt or not a numeric array") from None
            if not isinstance(value, np.ndarray) or value.dtype.kind not in _NUMERIC:
                raise ValueError(f"{where} is not a valid minigen checkpoint: member {k!r} is "
                                 "not a numeric array")
            if k != _MAGIC:
                out[k] = value
        return out


# --- whole models --------------------------------------------------------------------------
_GENERATORS = ("PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64")


class _ModelFileError(ValueError):
    """A model file that cannot be rebuilt; the message names the file and the problem."""


def _encode(value, key, arrays, covered, where):
    """A parameter or fitted value as JSON; arrays go to ``arrays[key]``; registered objects
    become nested nodes."""
    from .optim import EMA
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float, np.integer, np.floating, np.bool_)):
        return value.item() if isinstance(value, np.generic) else value
    if isinstance(value, np.ndarray) or (hasattr(value, "__cuda_array_interface__")):
        arrays[key] = value
        return {"__array__": key}
    if isinstance(value, (tuple, list)):
        items = [_encode(v, f"{key}.{i}", arrays, covered, where) for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"__dict__": {k: _encode(v, f"{key}.{k}", arrays, covered, where)
                             for k, v in value.items()}}
    if isinstance(value, np.random.Generator):
        return {"__generator__": value.bit_generator.state}
    if isinstance(value, EMA):
        return {"__ema__": {"decay": value.decay,
                            "shadow": _encode(value.state_dict(), f"{key}.shadow", arrays,
                                              covered, where)}}
    if isinstance(value, Configurable):
        return _encode_object(value, key, arrays, covered, where)
    raise TypeError(f"{where}: {key} is a {type(value).__name__}, which save_model cannot "
                    "store (numbers, strings, arrays, tuples, lists, generators and registered "
                    "minigen objects can be stored)")


def _encode_object(obj, key, arrays, covered, where):
    cls = type(obj)
    if registry().get(cls.__name__) is not cls:
        raise TypeError(f"{where}: {cls.__name__} is not a registered minigen class "
                        "(decorate it with minigen.distribution.register())")
    node = {"__class__": cls.__name__}
    if isinstance(obj, Module):
        if id(obj) not in covered:     # a submodule's arrays are in its parent's state dict
            state = obj.state_dict()
            node["state"] = {k: _encode(v, f"{key}.state.{k}", arrays, covered, where)
                             for k, v in state.items()}
            floats = [p.dtype for p in obj.parameters() if p.dtype.kind == "f"]
            node["dtype"] = str(floats[0]) if floats else None
        covered = covered | {id(m) for m in obj.modules()}
    node["params"] = {k: _encode(v, f"{key}.params.{k}", arrays, covered, where)
                      for k, v in obj.get_params(deep=False).items()}
    node["fitted"] = {k: _encode(v, f"{key}.fitted.{k}", arrays, covered, where)
                      for k, v in obj._fitted_state().items()}
    return node


def save_model(model, path):
    """Save a registered minigen model (fitted or not) to ``path`` (.npz), atomically:
    its class, constructor parameters, fitted state and weights, and the library version."""
    arrays = {}
    tree = _encode_object(model, "model", arrays, frozenset(), "save_model")
    arrays[_MODEL] = json_array({"format": 1, "minigen": __version__, "model": tree})
    save(arrays, path)


def _decode(value, arrays, where):
    from .optim import EMA
    if isinstance(value, list):
        return [_decode(v, arrays, where) for v in value]
    if not isinstance(value, dict):
        return value
    if "__class__" in value:
        return _build(value, arrays, where)
    if "__array__" in value:
        key = value["__array__"]
        if key not in arrays:
            raise _ModelFileError(f"{where}: the array {excerpt(key)} is missing from the file")
        return arrays[key]
    if "__tuple__" in value:
        return tuple(_decode(v, arrays, where) for v in value["__tuple__"])
    if "__dict__" in value:
        return {k: _decode(v, arrays, where) for k, v in value["__dict__"].items()}
    if "__generator__" in value:
        state = value["__generator__"]
        name = state.get("bit_generator") if isinstance(state, dict) else None
        if name not in _GENERATORS:
            raise _ModelFileError(f"{where}: unknown random generator {excerpt(name)}")
        bits = getattr(np.random, name)()
        bits.state = state
        return np.random.Generator(bits)
    if "__ema__" in value:
        ema = value["__ema__"]
        return EMA.from_state_dict(_decode(ema["shadow"], arrays, where), ema["decay"])
    raise _ModelFileError(f"{where}: unreadable value {excerpt(value)}")


def _build(node, arrays, where):
    name = node.get("__class__")
    cls = registry().get(name)
    if cls is None:
        raise _ModelFileError(f"{where}: unknown class {excerpt(name)} (not a registered "
                              "minigen class)")
    params = {k: _decode(v, arrays, where) for k, v in node.get("params", {}).items()}
    try:
        obj = cls(**params)
    except (TypeError, ValueError, KeyError) as err:
        raise _ModelFileError(f"{where}: {name} rejected the saved parameters "
                              f"{excerpt(sorted(params))}: {err}") from err
    if "state" in node:
        state = {k: _decode(v, arrays, where) for k, v in node["state"].items()}
        try:
            if node.get("dtype"):
                dtype = np.dtype(node["dtype"])
                if dtype.kind != "f":
                    raise ValueError(f"the dtype must be a float type, got {excerpt(dtype)}")
                obj.to(dtype=dtype)
            obj.load_state_dict(state)
        except (KeyError, ValueError, TypeError) as err:
            raise _ModelFileError(f"{where}: the weights of {name} do not fit it: {err}") \
                from None
        obj.eval()                     # as fit leaves it
    obj._set_fitted_state({k: _decode(v, arrays, where)
                           for k, v in node.get("fitted", {}).items()})
    return obj


def load_model(path):
    """Rebuild the model saved by ``save_model``; no code from the file is ever executed.
    Whatever the file holds, a file that cannot be rebuilt raises a ValueError naming it."""
    arrays = load(path)
    where = f"load_model: {os.fspath(path)!r}"
    if _MODEL not in arrays:
        raise ValueError(f"{where} holds arrays but no model (a state dict? use minigen.load)")
    try:
        header = from_json_array(arrays.pop(_MODEL))
        return _build(header["model"], arrays, where)
    except _ModelFileError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError, IndexError, OverflowError,
            RecursionError) as err:
        raise ValueError(f"{where}: the model description is corrupt ({type(err).__name__}: "
                         f"{excerpt(str(err), 200)})") from None
