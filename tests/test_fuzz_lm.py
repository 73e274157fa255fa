"""Constructor arguments of the language models and the tokenizers, fuzzed: one argument at a
time is replaced by an arbitrary value (ints, floats, nan, inf, negatives, strings, tuples,
lists, NumPy scalars). Either the constructor raises a ValueError or TypeError whose message
starts with the class and names the argument, or the object works: a model fits one step and
samples decodable tokens, a tokenizer round-trips text and its JSON."""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.data import BPETokenizer, CharTokenizer, Tokenizer
from minigen.models import MLPLM, Bigram, TransformerLM

JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 8),
    st.floats(-10, 10), st.sampled_from([math.nan, math.inf, -math.inf, np.float32(0.5),
                                         np.int64(3), np.int32(12), np.float64(4.0)]),
    st.text(max_size=3), st.tuples(st.integers(-1, 4)),
    st.tuples(st.integers(-1, 300), st.integers(-1, 300)),
    st.lists(st.one_of(st.integers(0, 3), st.floats(0, 3), st.text(max_size=1)), max_size=3),
)

# class -> (build(**override), the arguments to fuzz); base sizes keep every model tiny
BUILDERS = {
    TransformerLM: (lambda **kw: TransformerLM(**{"vocab_size": 9, "block_size": 4,
                                                  "n_layer": 1, "n_head": 1, "n_embd": 4,
                                                  "rng": 0, **kw}),
                    ["vocab_size", "block_size", "n_layer", "n_head", "n_embd", "dropout",
                     "tokenizer"]),
    MLPLM: (lambda **kw: MLPLM(**{"vocab_size": 9, "block_size": 4, "context": 2, "n_embd": 2,
                                  "n_hidden": 4, "rng": 0, **kw}),
            ["vocab_size", "block_size", "context", "n_embd", "n_hidden", "dropout",
             "tokenizer"]),
    Bigram: (lambda **kw: Bigram(**{"vocab_size": 9, "block_size": 4, "rng": 0, **kw}),
             ["vocab_size", "block_size", "tokenizer"]),
}
CASES = [(cls, name) for cls, (_, names) in BUILDERS.items() for name in names]


def _stream(vocab):
    """24 ids that a model of ``vocab`` ids accepts: the text ids 3.. when there are any."""
    return np.arange(24) % (vocab - 3) + 3 if vocab > 3 else np.arange(24) % vocab


def _lm_works(model):
    """One training step, then two samples of two tokens, all inside the vocabulary."""
    if model.n_vocab is None:
        model.fit("abcabcabcabcabcabc", steps=1, batch_size=2, rng=0)
    else:
        model.fit(_stream(model.n_vocab), steps=1, batch_size=2, rng=0)
    samples = model.sample(2, rng=0, max_new_tokens=2)
    assert len(samples) == 2
    for s in samples:
        if isinstance(s, str):
            assert len(s) <= 2
        else:
            assert len(s) <= 2 and all(0 <= t < model.n_vocab for t in s)


@settings(max_examples=120, deadline=None)
@given(case=st.sampled_from(CASES), value=JUNK)
def test_fuzzed_language_model_argument_is_named_or_works(case, value):
    cls, name = case
    try:
        model = BUILDERS[cls][0](**{name: value})
    except (ValueError, TypeError) as err:
        message = str(err)
        assert message.startswith(cls.__name__ + ": ") and name in message, message
        return
    _lm_works(model)


@settings(max_examples=60, deadline=None)
@given(value=st.one_of(JUNK, st.text(max_size=6)))
def test_fuzzed_char_tokenizer_alphabet_is_named_or_works(value):
    try:
        tok = CharTokenizer(value)
    except (ValueError, TypeError) as err:
        assert str(err).startswith("CharTokenizer: chars must be"), str(err)
        return
    assert tok.decode(tok.encode(value)) == value
    assert Tokenizer.from_json(tok.to_json()) == tok


MERGE = st.one_of(JUNK, st.lists(st.integers(3, 262), min_size=2, max_size=2),
                  st.lists(st.integers(-1, 262), max_size=3))


@settings(max_examples=80, deadline=None)
@given(merges=st.one_of(JUNK, st.lists(MERGE, max_size=4), st.tuples(MERGE, MERGE)))
def test_fuzzed_bpe_merges_are_named_or_work(merges):
    try:
        tok = BPETokenizer(merges)
    except (ValueError, TypeError) as err:
        assert str(err).startswith("BPETokenizer: merges"), str(err)
        return
    text = "abc abcb ccb \u00e9"
    assert tok.decode(tok.encode(text)) == text
    assert Tokenizer.from_json(tok.to_json()) == tok
