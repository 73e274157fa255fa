"""Tokenizers (character, byte-level BPE), corpora and padding."""
import os
from collections import Counter

import numpy as np
import pytest

from minigen.data import (BPETokenizer, CharTokenizer, Tokenizer, load_names, load_pydoc,
                          load_text, pad_sequences, split_text)
from minigen.data.tokenizers import _CHUNK, BOS_ID, EOS_ID, PAD_ID, _merge

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies
given = hypothesis.given

CORPUS = load_pydoc()[:20000]
BPE = BPETokenizer.train(CORPUS, 320)


# --- byte-level BPE -------------------------------------------------------------------------
@given(st.text())
def test_bpe_round_trip_any_unicode(s):
    assert BPE.decode(BPE.encode(s)) == s


def test_bpe_round_trip_lone_surrogate_and_specials_text():
    for s in ["\ud800", "a\udfffb", "<eos><pad>", "héllo wörld 😀\n\t", "a_b²c"]:
        ids = BPE.encode(s)
        assert BPE.decode(ids) == s
        assert not {PAD_ID, BOS_ID, EOS_ID} & set(ids)   # special strings are plain text


def test_bpe_wikipedia_example():
    """aaabdaaabac: merge aa -> Z, then ab -> Y (the tie with Za goes to the smaller first id),
    then ZY -> X (Wikipedia, "Byte pair encoding")."""
    a, b = 3 + ord("a"), 3 + ord("b")
    tok = BPETokenizer.train("aaabdaaabac", 262)
    assert tok.merges == [[a, a], [a, b], [259, 260]]
    assert tok.encode("aaabdaaabac") == [261, 3 + ord("d"), 261, a, 3 + ord("c")]


def _naive_bpe(text, vocab_size):
    """Reference: recount every pair of every chunk occurrence before each merge."""
    words = [[3 + b for b in w.encode("utf-8")] for w in _CHUNK.findall(text)]
    merges = []
    for new_id in range(259, vocab_size):
        counts = Counter(p for w in words for p in zip(w, w[1:]))
        if not counts:
            break
        pair, count = max(counts.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
        if count < 2:
            break
        merges.append(list(pair))
        words = [_merge(w, pair, new_id) for w in words]
    return merges


def test_bpe_incremental_counts_match_naive_training():
    text = CORPUS[:3000]
    assert BPETokenizer.train(text, 330).merges == _naive_bpe(text, 330)


def test_bpe_compresses_and_encodes_like_training():
    ids = BPE.encode(CORPUS)
    assert len(ids) < 0.7 * len(CORPUS.encode())
    assert BPE.vocab_size == 320 and max(ids) < 320
    assert b"".join(BPE.token_bytes(i) for i in ids) == CORPUS.encode()


def test_bpe_errors():
    with pytest.raises(ValueError, match="vocab_size must be an int >= 259"):
        BPETokenizer.train("abc", 100)
    with pytest.raises(ValueError, match=r"merges\[0\] must be a pair of earlier ids"):
        BPETokenizer([[3, 259]])
    with pytest.raises(ValueError, match=r"ids must be ints in \[0, 320\), got 320"):
        BPE.decode([320])


def test_bpe_invalid_utf8_decodes_with_replacement():
    assert BPE.decode([3 + 0xC3]) == "\ufffd"          # half of a two-byte character


# --- characters -----------------------------------------------------------------------------
CHAR = CharTokenizer.train("hello wörld\n")


@given(st.text(alphabet=CHAR.chars))
def test_char_round_trip(s):
    assert CHAR.decode(CHAR.encode(s)) == s


def test_char_ids_specials_and_errors():
    assert CHAR.vocab_size == 3 + len(set("hello wörld\n"))
    assert CHAR.encode("lo", bos=True, eos=True) == [BOS_ID, 3 + CHAR.chars.index("l"),
                                                      3 + CHAR.chars.index("o"), EOS_ID]
    assert CHAR.decode([BOS_ID, 3, PAD_ID, EOS_ID]) == CHAR.chars[0]
    with pytest.raises(ValueError, match="'z' is not in the alphabet"):
        CHAR.encode("oz")
    with pytest.raises(ValueError, match="distinct characters"):
        CharTokenizer("aa")


# --- JSON -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tok", [CHAR, BPE], ids=["char", "bpe"])
def test_json_save_load(tok, tmp_path):
    path = tmp_path / "tok.json"
    tok.save(path)
    back = Tokenizer.load(path)
    assert type(back) is type(tok) and back == tok
    assert back.encode(CORPUS[:500] if tok is BPE else "hello") == \
        tok.encode(CORPUS[:500] if tok is BPE else "hello")
    assert os.listdir(tmp_path) == ["tok.json"]


def test_save_is_atomic(tmp_path, monkeypatch):
    path = tmp_path / "tok.json"
    CHAR.save(path)
    before = path.read_text()

    def crash(*args):
        raise OSError("disk full")
    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        BPE.save(path)
    assert path.read_text() == before and os.listdir(tmp_path) == ["tok.json"]


def test_from_json_rejects_unknown_types():
    with pytest.raises(ValueError, match="'type' is one of"):
        Tokenizer.from_json('{"type": "os.system", "params": {}}')


# --- corpora and padding --------------------------------------------------------------------
def test_corpora():
    text = load_pydoc()
    assert len(text) > 100_000 and text == load_pydoc()
    names = load_names()
    assert len(names) > 300 and all(n.isalpha() and n.islower() for n in names)
    train, held = split_text(text, 0.1)
    assert train + held == text and abs(len(held) - 0.1 * len(text)) <= 1


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad_sequences(side):
    ids, mask = pad_sequences([[5, 6, 7], [8], []], pad_id=0, side=side)
    assert ids.shape == mask.shape == (3, 3) and ids.dtype == np.int64
    expected = [[5, 6, 7], [8, 0, 0], [0, 0, 0]] if side == "right" else \
        [[5, 6, 7], [0, 0, 8], [0, 0, 0]]
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(mask, np.asarray(expected) == 0)
    with pytest.raises(ValueError, match="more than length=2"):
        pad_sequences([[1, 2, 3]], length=2)


def test_load_text_names_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"load_text: '.*latin1.txt' is not UTF-8 text \(byte 3"):
        load_text(str(path))


def test_load_text_quotes_a_long_path_as_an_excerpt(tmp_path):
    path = tmp_path / ("d" * 300) / "t.txt"
    with pytest.raises(FileNotFoundError, match=r"load_text: no such file '.*dddd \.\.\.$") as err:
        load_text(path)
    assert len(str(err.value)) < 150
