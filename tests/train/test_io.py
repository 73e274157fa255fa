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


def test_load_never_suggests_loading_unsafely(tmp_path):
    for kind, path in _write_non_checkpoints(tmp_path, tmp_path / "marker").items():
        with pytest.raises(ValueError) as info:
            mg.load(path)
        assert "allow_pickle" not in str(info.value), kind


def test_a_bit_flipped_member_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.npz"
    mg.save({"w": np.linspace(0, 1, 4000)}, path)
    data = bytearray(path.read_bytes())
    start = data.index(b"w.npy") + 200              # inside w's compressed stream
    for offset in range(0, 400, 40):
        broken = bytearray(data)
        broken[start + offset] ^= 0xFF
        path.write_bytes(bytes(broken))
        with pytest.raises(ValueError, match=r"load: .* (is not a|member 'w' is corrupt)"):
            mg.load(path)


def test_non_array_members_are_rejected(tmp_path):
    import io as stdio
    import zipfile
    path = tmp_path / "odd.npz"
    marker = stdio.BytesIO()
    np.save(marker, np.array(1))
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("__minigen_checkpoint__.npy", marker.getvalue())
        z.writestr("notes.txt", b"hello")
    with pytest.raises(ValueError, match="member 'notes.txt' is not a numeric array"):
        mg.load(path)


@pytest.mark.parametrize("state, error, match", [
    ({1: np.ones(2)}, TypeError, "save: keys must be strings, got 1"),
    ({"w": "a string"}, TypeError, "save: w is a str, not a numeric array"),
    ({"w": np.array(["a", "b"])}, TypeError, r"save: w is not a numeric array \(dtype <U1\)"),
    ({"../evil": np.ones(2)}, ValueError, "save: the key '../evil' is not a plain name"),
    ({"a/b": np.ones(2)}, ValueError, "save: the key 'a/b' is not a plain name"),
    ({".hidden": np.ones(2)}, ValueError, "save: the key '.hidden' is not a plain name"),
    ({"a..b": np.ones(2)}, ValueError, "not a plain name"),
])
def test_save_rejects_bad_keys_and_values(tmp_path, state, error, match):
    with pytest.raises(error, match=match):
        mg.save(state, tmp_path / "x.npz")
    assert list(tmp_path.iterdir()) == []


def test_save_is_atomic_under_a_failing_write(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    mg.save({"w": np.arange(3.0)}, path)

    def crash(f, **arrays):
        f.write(b"garbage")
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(RuntimeError, match="killed mid-write"):
        mg.save({"w": np.zeros(5)}, path)
    monkeypatch.undo()
    np.testing.assert_array_equal(mg.load(path)["w"], np.arange(3.0))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.npz"]
    assert (os.stat(path).st_mode & 0o777) == 0o666 & ~_umask()


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


# --- whole models ---------------------------------------------------------------------------
def _ddpm():
    from minigen.models import DDPM, NoiseSchedule, TimeMLP
    X = np.random.default_rng(0).standard_normal((64, 2))
    return DDPM(TimeMLP(2, hidden=8, rng=0), NoiseSchedule(T=10), rng=0).fit(
        X, steps=3, batch_size=32)


def _edit(path, change):
    """Rewrite a model file with ``change(arrays, header)`` applied; a change that returns an
    array stores it as the model description instead of the edited header."""
    arrays = mg.load(path)
    header = mg.io.from_json_array(arrays["__minigen_model__"])
    raw = change(arrays, header)
    arrays["__minigen_model__"] = mg.io.json_array(header) if raw is None else raw
    mg.save(arrays, path)


def test_save_model_round_trip_keeps_weights_dtype_fitted_state_and_rng(tmp_path):
    model = _ddpm().double()
    mg.save_model(model, tmp_path / "m.npz")
    again = mg.load_model(tmp_path / "m.npz")
    assert type(again) is type(model) and again.dtype == np.float64 and not again.training
    assert again.get_params(deep=False).keys() == model.get_params(deep=False).keys()
    assert again.shape_ == (2,) and again.schedule.T == 10
    np.testing.assert_array_equal(again.losses_, model.losses_)
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(again.state_dict()[k], v)
    for k, v in model.ema_.shadow.items():
        np.testing.assert_array_equal(again.ema_.shadow[k], v)
    assert again.rng_.random() == model.rng_.random()   # the training noise continues alike
    header = mg.io.from_json_array(mg.load(tmp_path / "m.npz")["__minigen_model__"])
    assert header["minigen"] == mg.__version__ and header["model"]["__class__"] == "DDPM"


@pytest.mark.parametrize("change, match", [
    (lambda a, h: h["model"].update({"__class__": "os.system"}),
     r"unknown class 'os.system' \(not a registered minigen class\)"),
    (lambda a, h: h["model"]["params"]["schedule"]["params"].update({"T": -1}),
     r"NoiseSchedule rejected the saved parameters .*T must be a positive int"),
    (lambda a, h: a.__delitem__("model.state.denoiser.out.weight"),
     r"the array 'model.state.denoiser.out.weight' is missing from the file"),
    (lambda a, h: a.update({"model.state.denoiser.out.weight": np.zeros((3, 3))}),
     r"the weights of DDPM do not fit it: .*out.weight has shape \(3, 3\)"),
    (lambda a, h: np.frombuffer(b"{not json", np.uint8), r"the model description is corrupt"),
])
def test_load_model_errors_name_the_file_and_the_problem(tmp_path, change, match):
    path = tmp_path / "m.npz"
    mg.save_model(_ddpm(), path)
    _edit(path, change)
    with pytest.raises(ValueError, match=rf"load_model: '.*m.npz'.*{match}"):
        mg.load_model(path)


def test_load_model_of_a_state_dict_and_of_a_pickle(tmp_path):
    mg.save({"w": np.ones(2)}, tmp_path / "state.npz")
    with pytest.raises(ValueError, match="holds arrays but no model"):
        mg.load_model(tmp_path / "state.npz")
    marker = tmp_path / "code_was_executed"
    for kind, path in _write_non_checkpoints(tmp_path, marker).items():
        with pytest.raises(ValueError):
            mg.load_model(path)
    assert not marker.exists()


def test_save_model_refuses_what_it_cannot_rebuild(tmp_path):
    with pytest.raises(TypeError, match="save_model: Linear is not a registered minigen class"):
        mg.save_model(nn.Linear(2, 2), tmp_path / "x.npz")
    model = _ddpm()
    model.extra_ = lambda x: x
    with pytest.raises(TypeError, match="save_model: model.fitted.extra_ is a function"):
        mg.save_model(model, tmp_path / "x.npz")
    assert not (tmp_path / "x.npz").exists()


def test_kmeans_round_trips_with_its_fitted_state(tmp_path):
    from minigen.density import KMeans
    X = np.random.default_rng(0).standard_normal((100, 2)) + np.repeat([[0, 0], [5, 5]], 50, 0)
    model = KMeans(2, random_state=0).fit(X)
    mg.save_model(model, tmp_path / "km.npz")
    again = mg.load_model(tmp_path / "km.npz")
    assert again.get_params() == model.get_params()
    np.testing.assert_array_equal(again.cluster_centers_, model.cluster_centers_)
    np.testing.assert_array_equal(again.predict(X), model.predict(X))
