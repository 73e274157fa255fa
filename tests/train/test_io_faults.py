"""load_model of edited files: whatever a file holds, the only error is a ValueError that names
the file, and no attribute outside the class's fitted state is ever set."""
import copy
import os
import tempfile

import numpy as np
import pytest

import minigen as mg


@pytest.fixture(scope="module")
def saved_ddpm(tmp_path_factory):
    """A small fitted DDPM's file bytes: nested objects, an EMA, a generator and a tuple."""
    from minigen.models import DDPM, NoiseSchedule, TimeMLP
    X = np.random.default_rng(0).standard_normal((64, 2))
    model = DDPM(TimeMLP(2, hidden=8, rng=0), NoiseSchedule(T=10), rng=0)
    model.fit(X, steps=2, batch_size=32)
    assert model.ema_ is not None
    path = tmp_path_factory.mktemp("model") / "m.npz"
    mg.save_model(model, path)
    return str(path)


def _write(arrays, header, path):
    arrays = dict(arrays)
    arrays["__minigen_model__"] = header if isinstance(header, np.ndarray) else \
        mg.io.json_array(header)
    mg.save(arrays, path)


def _header(arrays):
    return mg.io.from_json_array(arrays["__minigen_model__"])


def _params_as_a_list(h):
    h["model"]["params"] = [1, 2]                        # AttributeError: no .items()


def _ema_without_decay(h):
    h["model"]["fitted"]["ema_"]["__ema__"].pop("decay")   # KeyError


def _tuple_of_an_int(h):
    h["model"]["fitted"]["shape_"] = {"__tuple__": 5}        # TypeError: not iterable


def _class_as_a_fitted_name(h):
    h["model"]["fitted"]["__class__"] = "x"


def _method_as_a_fitted_name(h):
    h["model"]["fitted"]["sample"] = 1


def _object_dtype(h):
    h["model"]["dtype"] = "object"


@pytest.mark.parametrize("change, match", [
    (_params_as_a_list, "model description is corrupt .*AttributeError"),
    (_ema_without_decay, "model description is corrupt .*KeyError"),
    (_tuple_of_an_int, "model description is corrupt .*TypeError"),
    (_class_as_a_fitted_name, "'__class__' is not a fitted attribute name"),
    (_method_as_a_fitted_name, "'sample' is not a fitted attribute name"),
    (_object_dtype, "dtype must be a float type"),
    (lambda h: np.frombuffer(b"[" * 100_000, np.uint8), "corrupt .*RecursionError"),
    (lambda h: np.frombuffer(b'{"model": {"__class__": "DDPM", "params": {', np.uint8),
     "corrupt .*Expecting"),
])
def test_an_edited_model_file_is_a_value_error_naming_the_file(tmp_path, saved_ddpm, change,
                                                               match):
    arrays = mg.load(saved_ddpm)
    header = _header(arrays)
    raw = change(header)
    path = tmp_path / "m.npz"
    _write(arrays, header if raw is None else raw, path)
    with pytest.raises(ValueError, match=rf"load_model: '.*m\.npz'.*{match}"):
        mg.load_model(path)


# --- fuzz: any field of the header replaced or deleted ------------------------------------------
hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 40), st.floats(allow_nan=True),
    st.text(max_size=6), st.lists(st.integers(-3, 5), max_size=3),
    st.sampled_from([{"__class__": "DDPM"}, {"__class__": 5}, {"__array__": "nope"},
                     {"__array__": 3}, {"__tuple__": 3}, {"__dict__": [1]}, {"__ema__": {}},
                     {"__generator__": {"bit_generator": "PCG64"}}, {"__generator__": 1},
                     {"__dict__": {"a": {"__tuple__": None}}}, {}]))


def _locations(node, path=()):
    """Every (path to a container, key or index) in the JSON tree."""
    items = node.items() if isinstance(node, dict) else enumerate(node) \
        if isinstance(node, list) else ()
    for key, value in items:
        yield path, key
        yield from _locations(value, path + (key,))


@hypothesis.settings(max_examples=60, deadline=None)
@hypothesis.given(data=st.data())
def test_fuzzed_headers_raise_only_value_errors(saved_ddpm, data):
    arrays = mg.load(saved_ddpm)
    header = _header(arrays)
    places = list(_locations(header))
    for _ in range(data.draw(st.integers(1, 3), label="edits")):
        path, key = data.draw(st.sampled_from(places), label="place")
        node = header
        try:
            for step in path:
                node = node[step]
            if isinstance(node, dict) and data.draw(st.booleans(), label="delete"):
                node.pop(key, None)
            else:
                node[key] = copy.deepcopy(data.draw(_VALUES, label="value"))
        except (KeyError, IndexError, TypeError):    # an earlier edit removed this place
            continue
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.npz")
        _write(arrays, header, path)
        try:
            mg.load_model(path)
        except ValueError as err:
            assert str(err).startswith(f"load_model: {path!r}"), str(err)


# --- a language model's fitted state must agree with its weights -------------------------------
@pytest.fixture(scope="module")
def saved_bigram(tmp_path_factory):
    """A Bigram fitted on a text stream: a tokenizer of 6 ids, its table, unigram_."""
    from minigen.models import Bigram
    path = tmp_path_factory.mktemp("lm") / "m.npz"
    mg.save_model(Bigram(block_size=4, rng=0).fit("abcabcabcabc", steps=1, rng=0), path)
    return str(path)


@pytest.mark.parametrize("fitted, match", [
    ({"tokenizer_": '{"type": "CharTokenizer", "params": {"chars": "a"}}'},
     "the saved CharTokenizer has 4 ids but the weights have 6"),
    ({"documents_": "yes"}, "documents_ must be True or False, got 'yes'"),
    ({"unigram_": None}, "unigram_ must be 6 probabilities summing to 1, got None"),
    ({"unigram_": [0.5, 0.5]}, "unigram_ must be 6 probabilities"),
])
def test_an_edited_language_model_state_is_refused_at_load(tmp_path, saved_bigram, fitted,
                                                           match):
    """Otherwise the model loads and fails later, in sample (ids the tokenizer cannot decode,
    a first token drawn from no distribution)."""
    arrays = mg.load(saved_bigram)
    header = _header(arrays)
    header["model"]["fitted"].update(fitted)
    path = tmp_path / "m.npz"
    _write(arrays, header, path)
    with pytest.raises(ValueError, match=rf"load_model: '.*m\.npz'.*Bigram: {match}"):
        mg.load_model(path)
    assert len(mg.load_model(saved_bigram).sample(2, rng=0, max_new_tokens=3)) == 2
