"""Language models on bad and edge input: constructor arguments, sample lengths, documents of
ids, vocabulary sizes; and the document pieces that training and scoring share."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from minigen.data import CharTokenizer
from minigen.data.text import document_pieces, pad_sequences, stream_windows
from minigen.data.tokenizers import EOS_ID, PAD_ID
from minigen.models import MLPLM, Bigram, TransformerLM

V = 9


# --- constructor arguments ---------------------------------------------------------------------
@pytest.mark.parametrize("kw, match", [
    ({"n_head": 0}, "n_head must be a positive int, got 0"),
    ({"n_embd": 0}, "n_embd must be a positive int, got 0"),
    ({"n_layer": 2.5}, "n_layer must be a positive int, got 2.5"),
    ({"n_layer": -1}, "n_layer must be a positive int, got -1"),
    ({"n_embd": 10, "n_head": 4}, "n_embd must be a multiple of n_head = 4, got 10"),
    ({"dropout": 1.0}, r"dropout must be a finite number in \[0, 1\), got 1.0"),
    ({"block_size": 0}, "block_size must be a positive int, got 0"),
])
def test_transformer_constructor_errors(kw, match):
    with pytest.raises(ValueError, match="TransformerLM: " + match):
        TransformerLM(V, **kw)


@pytest.mark.parametrize("kw, match", [
    ({"context": 0}, "context must be a positive int, got 0"),
    ({"context": -1}, "context must be a positive int, got -1"),
    ({"n_hidden": 0}, "n_hidden must be a positive int, got 0"),
    ({"n_embd": 1.5}, "n_embd must be a positive int, got 1.5"),
])
def test_mlp_constructor_errors(kw, match):
    with pytest.raises(ValueError, match="MLPLM: " + match):
        MLPLM(V, **kw)


@pytest.mark.parametrize("cls", [Bigram, MLPLM, TransformerLM])
def test_vocab_size_other_than_the_tokenizers_is_an_error(cls):
    """A larger vocab_size would let generation emit ids the tokenizer cannot decode."""
    tok = CharTokenizer("abc")
    with pytest.raises(ValueError, match=f"{cls.__name__}: vocab_size must be None or the "
                                         "tokenizer's vocab_size 6"):
        cls(vocab_size=8, tokenizer=tok, block_size=4)
    with pytest.raises(ValueError, match=f"{cls.__name__}.fit: the model has vocab_size 8 but "
                                         "the CharTokenizer of this text has 6 ids"):
        cls(vocab_size=8, block_size=4).fit("abcabcabc", steps=1)


def test_fit_checks_warmup_before_any_work():
    model = Bigram(V, block_size=4)
    for bad in (float("nan"), -0.1, 1.5):
        with pytest.raises(ValueError, match=r"Bigram.fit: warmup must be a finite number in "
                                             r"\[0, 1\]"):
            model.fit(np.arange(3, 9).repeat(2), steps=1, warmup=bad)
    assert not hasattr(model, "documents_")


# --- sample -------------------------------------------------------------------------------------
def _stream_model(cls):
    kw = {"n_layer": 1, "n_head": 1, "n_embd": 4} if cls is TransformerLM else \
        {"context": 2, "n_embd": 2, "n_hidden": 4} if cls is MLPLM else {}
    return cls(V, block_size=4, rng=0, **kw).fit(np.arange(3, 9).repeat(3), steps=1, rng=0)


@pytest.mark.parametrize("cls", [Bigram, MLPLM, TransformerLM])
def test_sample_lengths_on_a_stream(cls):
    """max_new_tokens counts every token of a sample, so 0 gives empty samples."""
    model = _stream_model(cls)
    assert [len(s) for s in model.sample(3, rng=0, max_new_tokens=0)] == [0, 0, 0]
    assert [len(s) for s in model.sample(3, rng=0, max_new_tokens=1)] == [1, 1, 1]
    assert [len(s) for s in model.sample(2, rng=0, max_new_tokens=5)] == [5, 5]
    assert model.sample(0) == [] and model.sample(0, max_new_tokens=3) == []
    for bad in (-5, 2.5, True):
        with pytest.raises(ValueError, match=f"{cls.__name__}.sample: max_new_tokens must be "
                                             f"an int >= 0, got {bad!r}"):
            model.sample(2, max_new_tokens=bad)


@pytest.mark.parametrize("cls", [MLPLM, TransformerLM])
def test_forward_on_an_empty_batch(cls):
    model = _stream_model(cls)
    with model.inference():
        assert model(np.zeros((0, 3), dtype=np.int64)).shape == (0, 3, V)


def test_document_samples_of_ids_stop_before_eos():
    """A model fitted on id documents that (by its table) always says <eos> after token 4:
    no sample holds <eos>, <bos> or anything after them."""
    docs = [np.array([1, 3, 4, 2])] * 8
    model = Bigram(6, block_size=3).fit(docs, steps=200, batch_size=8, lr=0.5, rng=0)
    samples = model.sample(50, rng=0, max_new_tokens=6, temperature=0.5)
    assert all(s.dtype.kind == "i" for s in samples)
    assert all(EOS_ID not in s and 1 not in s for s in samples)
    assert all(list(s) == [3, 4] for s in samples)


# --- the pieces of documents and streams -------------------------------------------------------
@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 40), min_size=1, max_size=6), st.integers(2, 9))
def test_document_pieces_cover_every_target_exactly_once(lengths, length):
    """Position p of a document (1 <= p < n) is predicted from position p - 1 of the same
    piece: collect (document, position) over every piece's targets: each exactly once, and
    each piece's history is the document's own history (the piece is a slice)."""
    docs = [np.arange(n) + 1000 * d for d, n in enumerate(lengths)]
    seen = []
    for d, doc in enumerate(docs):
        for piece in document_pieces(doc, length):
            assert 2 <= len(piece) <= length
            start = piece[0] - 1000 * d
            np.testing.assert_array_equal(piece, doc[start:start + len(piece)])
            seen += [(d, int(t) - 1000 * d) for t in piece[1:]]
    expected = [(d, p) for d, n in enumerate(lengths) for p in range(1, n)]
    assert sorted(seen) == expected


def test_models_train_on_every_target_of_every_document_once():
    """The rows a model trains on (pieces of block_size + 1, padded) hold each target of each
    document once: counting the non-padding targets per document token gives all ones."""
    docs = [np.arange(3, 3 + n) for n in (2, 5, 9, 13)]
    model = Bigram(16, block_size=4)
    rows = model._check_fit_data(docs, None, "test")
    targets = rows[:, 1:][rows[:, 1:] != PAD_ID]
    expected = np.concatenate([d[1:] for d in docs])
    np.testing.assert_array_equal(np.sort(targets), np.sort(expected))


def test_stream_windows_and_pad_sequences_errors():
    np.testing.assert_array_equal(stream_windows(np.arange(5), 3, 2), [[0, 1, 2], [2, 3, 4]])
    with pytest.raises(ValueError, match="stream_windows: ids must be 1-D with at least "
                                         "length = 6 ids"):
        stream_windows(np.arange(5), 6)
    with pytest.raises(ValueError, match="document_pieces: length must be an int >= 2, got 1"):
        document_pieces(np.arange(5), 1)
    with pytest.raises(ValueError, match="pad_sequences: side must be one of 'right', 'left'"):
        pad_sequences([[1]], side="middle")
    with pytest.raises(ValueError, match="no document has a token to predict"):
        Bigram(V, block_size=4).fit([np.array([3]), np.array([4])], steps=1)


# --- sizes and data a user may pass in unexpected forms ----------------------------------------
def test_sizes_given_as_small_numpy_ints_never_wrap_around():
    """np.uint8 sizes pass the int check; the layers must be built from their true values
    (100 * 3 = 300 inputs, not 300 mod 256) and generation past block_size must work."""
    mlp = MLPLM(V, context=np.uint8(100), n_embd=np.uint8(3), n_hidden=np.uint8(4))
    assert mlp.hidden.weight.shape == (4, 300)
    gpt = TransformerLM(V, block_size=np.uint8(4), n_layer=1, n_head=1, n_embd=4, rng=0)
    gpt.fit(np.arange(3, 9).repeat(3), steps=1, rng=0)
    assert [len(s) for s in gpt.sample(2, rng=0, max_new_tokens=7)] == [7, 7]


@pytest.mark.parametrize("cls", [Bigram, MLPLM])
def test_data_with_nothing_to_predict_is_refused(cls):
    """Targets that are all <pad> would give a 0 / 0 loss: a clear error before training."""
    model = cls(V, block_size=4)
    with pytest.raises(ValueError, match=f"{cls.__name__}.fit: the stream has 23 <pad> ids"):
        model.fit(np.zeros(24, dtype=np.int64), steps=1)
    four_pads = np.array([3, 4, 0, 0, 0, 0, 5, 6, 7, 8])
    with pytest.raises(ValueError, match="has 4 <pad> ids .id 0. in a row"):
        model.fit(four_pads, steps=1)
    with pytest.raises(ValueError, match="row 1 of ids has no token to predict"):
        model.fit(np.array([[3, 4, 0], [5, 0, 0]]), steps=1)
    model.fit(np.delete(four_pads, 2), steps=1, rng=0)     # three pads: every window has a
    assert np.all(np.isfinite(model.history_.losses))       # target
