"""Checkpoints: save/load round trip (dtypes, shapes, Tensors, modules, optimiser state) and
clear errors for files that are not minigen checkpoints, without ever executing their code."""
import os
import pickle

import numpy as np
import pytest

import minigen as mg
from minigen import nn, optim


def test_round_trip_keeps_values_dtypes_and_shapes(tmp_path):
    state = {"w32": np.arange(6, dtype=np.float32).reshape(2, 3),
             "w64": np.linspace(0, 1, 5),
             "steps": np.array(7, dtype=np.int64),
             "tensor": mg.tensor(np.array([[1.5, -2.0]]), dtype=np.float64),
             "flags": np.array([True, False]),
             "empty": np.zeros((0, 3), dtype=np.float32)}
    path = tmp_path / "ckpt.npz"
    mg.save(state, path)
    loaded = mg.load(path)
    assert set(loaded) == set(state)
    for name, value in state.items():
        expected = value.numpy() if isinstance(value, mg.Tensor) else value
        assert loaded[name].dtype == expected.dtype and loaded[name].shape == expected.shape
        np.testing.assert_array_equal(loaded[name], expected)


def test_module_and_optimizer_round_trip(tmp_path):
    net = nn.Sequential(nn.Linear(3, 4, rng=0), nn.BatchNorm1d(4), nn.Linear(4, 1, rng=1))
    opt = optim.Adam(net.parameters(), lr=0.01)
    x = mg.tensor(np.random.default_rng(0).standard_normal((8, 3)))
    net(x).sum().backward()
    opt.step()
    mg.save(net.state_dict(), tmp_path / "model.npz")
    mg.save(opt.state_dict(), tmp_path / "opt.npz")
    other = nn.Sequential(nn.Linear(3, 4, rng=5), nn.BatchNorm1d(4), nn.Linear(4, 1, rng=6))
    other.load_state_dict(mg.load(tmp_path / "model.npz"))
    net.eval(), other.eval()
    np.testing.assert_array_equal(net(x).numpy(), other(x).numpy())
    opt2 = optim.Adam(other.parameters(), lr=1.0)
    opt2.load_state_dict(mg.load(tmp_path / "opt.npz"))
    assert opt2.step_count == 1 and opt2.lr == pytest.approx(0.01)
    np.testing.assert_array_equal(opt2.state[0]["m"], opt.state[0]["m"])


def test_shape_mismatch_after_load_is_a_clear_error(tmp_path):
    mg.save(nn.Linear(3, 4).state_dict(), tmp_path / "a.npz")
    with pytest.raises(ValueError, match=r"load_state_dict: weight has shape \(4, 3\)"):
        nn.Linear(3, 5).load_state_dict(mg.load(tmp_path / "a.npz"))


def test_save_rejects_reserved_key_and_object_arrays(tmp_path):
    with pytest.raises(ValueError, match="save: the key '__minigen_checkpoint__' is reserved"):
        mg.save({"__minigen_checkpoint__": np.ones(1)}, tmp_path / "x.npz")
    with pytest.raises(TypeError, match="save: bad is not a numeric array"):
        mg.save({"bad": np.array([{"a": 1}], dtype=object)}, tmp_path / "x.npz")


class _Payload:
    """Unpickling this runs code: it creates the file named ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _write_non_checkpoints(tmp_path, marker):
    files = {}
    files["npy"] = tmp_path / "array.npy"
    np.save(files["npy"], np.ones(3))
    files["object_npy"] = tmp_path / "object.npy"
    np.save(files["object_npy"], np.array([_Payload(marker)], dtype=object), allow_pickle=True)
    files["text"] = tmp_path / "notes.txt"
    files["text"].write_text("not a checkpoint\n")
    files["npz_without_marker"] = tmp_path / "plain.npz"
    np.savez(files["npz_without_marker"], w=np.ones(2))
    files["pickle"] = tmp_path / "model.pkl"
    with open(files["pickle"], "wb") as f:
        pickle.dump({"w": _Payload(marker)}, f)
    files["marked_npz_with_pickled_object"] = tmp_path / "sneaky.npz"
    np.savez(files["marked_npz_with_pickled_object"], __minigen_checkpoint__=np.array(1),
             w=np.array([_Payload(marker)], dtype=object))
    files["corrupt_zip"] = tmp_path / "corrupt.npz"
    files["corrupt_zip"].write_bytes(b"PK\x03\x04" + b"\x00" * 64)
    files["empty"] = tmp_path / "empty.npz"
    files["empty"].write_bytes(b"")
    return files


@pytest.mark.parametrize("kind", ["npy", "object_npy", "text", "npz_without_marker", "pickle",
                                  "marked_npz_with_pickled_object", "corrupt_zip", "empty"])
def test_non_checkpoints_give_a_clear_error_and_never_run_code(tmp_path, kind):
    marker = tmp_path / "code_was_executed"
    path = _write_non_checkpoints(tmp_path, marker)[kind]
    with pytest.raises(ValueError, match=r"load: .* is not a (valid )?minigen checkpoint"):
        mg.load(path)
    assert not os.path.exists(marker)


def test_the_payload_would_run_code_if_unpickled(tmp_path):
    """Guards the test above: the payload really executes on an unsafe load."""
    marker = tmp_path / "code_was_executed"
    path = _write_non_checkpoints(tmp_path, marker)["pickle"]
    with open(path, "rb") as f:
        pickle.load(f)
    assert os.path.exists(marker)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="load: no such file"):
        mg.load(tmp_path / "nope.npz")
