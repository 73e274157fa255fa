"""Tokenizers: BPE segmentation follows the merge priority; bad ids, merge lists, JSON and files
get errors that name the call and the argument (or the file)."""
import json

import numpy as np
import pytest

from minigen.data import BPETokenizer, CharTokenizer, Tokenizer

A, B, C = (3 + ord(ch) for ch in "abc")        # byte ids: 3 + byte value


# --- BPE merge priority -----------------------------------------------------------------------
@pytest.mark.parametrize("merges, expected", [
    # (a, b) learned first: "abc" -> [ab, c], although (b, c) also occurs in "abc"
    ([[A, B], [B, C]], [259, C]),
    # (b, c) learned first: "abc" -> [a, bc]
    ([[B, C], [A, B]], [A, 259]),
    # a chain: (b, c) first, then (a, bc): one token for "abc"
    ([[B, C], [A, 259]], [260]),
], ids=["ab-first", "bc-first", "chain"])
def test_bpe_encode_applies_merges_by_rank_on_overlapping_pairs(merges, expected):
    tok = BPETokenizer(merges)
    assert tok.encode("abc") == expected
    assert tok.decode(expected) == "abc"


def test_bpe_lowest_rank_wins_wherever_it_sits_in_the_chunk():
    """"abcb": pairs ab, bc, cb; (c, b) ranks first, then (a, b): [ab, cb], not [a, bc, b]."""
    tok = BPETokenizer([[C, B], [A, B], [B, C]])
    assert tok.encode("abcb") == [260, 259]


# --- decode -----------------------------------------------------------------------------------
@pytest.mark.parametrize("tok", [CharTokenizer("abc"), BPETokenizer()], ids=["char", "bpe"])
def test_decode_rejects_non_iterables_and_non_integers(tok):
    name = type(tok).__name__
    with pytest.raises(TypeError, match=f"{name}.decode: ids must be an iterable of ints, "
                                        "got None"):
        tok.decode(None)
    with pytest.raises(TypeError, match=f"{name}.decode: ids must be an iterable"):
        tok.decode("abc")
    for bad in (float("nan"), 3.0, True, -1):
        with pytest.raises(ValueError, match=f"{name}.decode: ids must be ints in"):
            tok.decode([3, bad])
    assert tok.decode(np.array([3, 4])) == tok.decode([3, 4])


# --- constructors -----------------------------------------------------------------------------
@pytest.mark.parametrize("merges, match", [
    (None, r"merges must be a list of pairs of ids, got None"),
    (5, r"merges must be a list of pairs of ids, got 5"),
    ("ab", r"merges must be a list of pairs of ids, got 'ab'"),
    ([[3, "a"]], r"merges\[0\] must be a 2-tuple of ints >= 3, got \[3, 'a'\]"),
    ([[3]], r"merges\[0\] must be a 2-tuple of ints >= 3, got \[3\]"),
    ([[3, 4], 7], r"merges\[1\] must be a 2-tuple of ints >= 3, got 7"),
    ([[3, 4], [259, 260]], r"merges\[1\] must be a pair of earlier ids in \[3, 260\)"),
])
def test_bpe_constructor_rejects_bad_merges(merges, match):
    with pytest.raises(ValueError, match="BPETokenizer: " + match):
        BPETokenizer(merges)


def test_char_tokenizer_error_quotes_only_an_excerpt():
    with pytest.raises(ValueError, match=r"distinct characters, got 'aa+ \.\.\.") as err:
        CharTokenizer("a" * 10_000)
    assert len(str(err.value)) < 200


# --- JSON and files ---------------------------------------------------------------------------
@pytest.mark.parametrize("text, match", [
    ("not json", r"not a tokenizer's JSON \(Expecting value"),
    ("[" * 100_000 + "]" * 100_000, r"not a tokenizer's JSON \(nested too deeply\)"),
    ('{"type": "CharTokenizer"}', "whose 'params' is an object"),
    ('{"type": "CharTokenizer", "params": ["abc"]}', "whose 'params' is an object"),
    ('{"type": "CharTokenizer", "params": {"chars": "ab", "x": 1}}',
     r"a CharTokenizer's params are \['chars'\], got \['chars', 'x'\]"),
    ('{"type": "BPETokenizer", "params": {"merges": 5}}', "merges must be a list"),
])
def test_from_json_errors_name_the_call(text, match):
    with pytest.raises(ValueError, match=r"^(Tokenizer.from_json|BPETokenizer): .*" + match):
        Tokenizer.from_json(text)


def test_from_json_round_trip_and_deep_nesting_error_is_short():
    tok = BPETokenizer([[A, B], [B, C]])
    assert Tokenizer.from_json(tok.to_json()) == tok
    with pytest.raises(ValueError) as err:
        Tokenizer.from_json('{"a": ' * 50_000 + "1" + "}" * 50_000)
    assert len(str(err.value)) < 300


def test_load_names_the_file(tmp_path):
    bad = tmp_path / "tok.json"
    bad.write_bytes(b'{"type": "CharTokenizer", "params": {"chars": "\xff"}}')
    with pytest.raises(ValueError, match=r"Tokenizer.load: '.*tok.json' is not UTF-8 text"):
        Tokenizer.load(bad)
    bad.write_text(json.dumps({"type": "CharTokenizer"}))
    with pytest.raises(ValueError, match=r"Tokenizer.load: '.*tok.json': Tokenizer.from_json"):
        Tokenizer.load(bad)
    good = tmp_path / "good.json"
    CharTokenizer("xyz").save(good)
    assert Tokenizer.load(good) == CharTokenizer("xyz")
