"""Tokenizers: text <-> integer ids, by character or by byte-level byte-pair encoding.

Both reserve the first ids for three special tokens, which ``encode`` never produces from
text (the string "<eos>" in a text is five ordinary characters) and ``decode`` leaves out:

    0 <pad>   fills a batch's short rows (``key_padding_mask`` is True there)
    1 <bos>   begins a document
    2 <eos>   ends a document

``CharTokenizer`` gives each character of a fixed alphabet one id. ``BPETokenizer`` works on the
UTF-8 bytes of the text, so every string has an encoding and ``decode(encode(s)) == s``; training
merges the most frequent adjacent pair of ids into a new id, again and again (Sennrich et al.
2016, "Neural Machine Translation of Rare Words with Subword Units"; the byte-level form and the
pre-split into word-like chunks, so merges never cross a chunk boundary, follow GPT-2, Radford
et al. 2019).

A tokenizer is defined by its constructor arguments alone (the alphabet, the merge list), so
``to_json`` / ``from_json`` and ``minigen.io.save_model`` rebuild it exactly.
"""
import json
import re
from collections import Counter
from numbers import Integral

from .._checks import excerpt, int_tuple, integer
from ..distribution import Configurable, register

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>")
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
N_SPECIAL = len(SPECIAL_TOKENS)


class Tokenizer(Configurable):
    """The shared part: special ids, ``encode`` with optional bos/eos, JSON save and load."""

    pad_id, bos_id, eos_id = PAD_ID, BOS_ID, EOS_ID

    @property
    def vocab_size(self):
        return N_SPECIAL + self._n_tokens()

    def encode(self, text, bos=False, eos=False):
        """The ids of ``text`` (a list of ints), with <bos> first / <eos> last if asked."""
        if not isinstance(text, str):
            raise TypeError(f"{type(self).__name__}.encode: text must be a str, "
                            f"got {type(text).__name__}")
        return [BOS_ID] * bos + self._encode(text) + [EOS_ID] * eos

    def decode(self, ids):
        """The text of ``ids`` (any iterable of ints); special tokens are left out."""
        where = f"{type(self).__name__}.decode"
        if isinstance(ids, (str, bytes)) or not hasattr(ids, "__iter__"):
            raise TypeError(f"{where}: ids must be an iterable of ints, got {excerpt(ids)}")
        ids = list(ids)
        for i in ids:
            if isinstance(i, bool) or not isinstance(i, Integral) or \
                    not 0 <= i < self.vocab_size:
                raise ValueError(f"{where}: ids must be ints in [0, {self.vocab_size}), got "
                                 f"{excerpt(i)}")
        return self._decode([int(i) for i in ids if i >= N_SPECIAL])

    def to_json(self):
        return json.dumps({"type": type(self).__name__, "params": self.get_params(deep=False)})

    @staticmethod
    def from_json(text):
        """Rebuild a tokenizer from ``to_json``'s string, {"type": <class name>, "params":
        {<constructor argument>: <value>}} (only minigen's own classes)."""
        where = "Tokenizer.from_json"
        if not isinstance(text, (str, bytes)):
            raise TypeError(f"{where}: text must be a str, got {type(text).__name__}")
        try:
            spec = json.loads(text)
        except (ValueError, RecursionError) as err:
            reason = "nested too deeply" if isinstance(err, RecursionError) else str(err)
            raise ValueError(f"{where}: not a tokenizer's JSON ({reason}): "
                             f"{excerpt(text)}") from None
        kinds = {cls.__name__: cls for cls in (CharTokenizer, BPETokenizer)}
        if not isinstance(spec, dict) or spec.get("type") not in kinds \
                or not isinstance(spec.get("params"), dict):
            raise ValueError(f"{where}: expected a JSON object whose 'type' is one of "
                             f"{sorted(kinds)} and whose 'params' is an object, got "
                             f"{excerpt(text)}")
        cls, params = kinds[spec["type"]], spec["params"]
        expected = set(cls._param_names())
        if set(params) != expected:
            raise ValueError(f"{where}: a {cls.__name__}'s params are {sorted(expected)}, "
                             f"got {excerpt(sorted(params))}")
        return cls(**params)

    def save(self, path):
        """Write ``to_json()`` to ``path`` atomically (``minigen.io.atomic_write``), so a crash
        never leaves a half-written file."""
        from ..io import atomic_write
        atomic_write(path, lambda f: f.write(self.to_json().encode("utf-8")))

    @staticmethod
    def load(path):
        """The tokenizer ``save`` wrote to ``path``."""
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except UnicodeDecodeError as err:
            raise ValueError(f"Tokenizer.load: {str(path)!r} is not UTF-8 text (byte "
                             f"{err.start}: {err.reason})") from None
        try:
            return Tokenizer.from_json(text)
        except ValueError as err:
            raise ValueError(f"Tokenizer.load: {str(path)!r}: {err}") from None

    def __eq__(self, other):
        return type(self) is type(other) and self.get_params() == other.get_params()

    __hash__ = None


@register()
class CharTokenizer(Tokenizer):
    """One id per character of ``chars`` (a string of distinct characters): id = 3 + position.

    ``CharTokenizer.train(text)`` takes the sorted set of characters of ``text``. Encoding a
    character outside the alphabet is an error that names it.
    """

    def __init__(self, chars):
        if not isinstance(chars, str) or len(set(chars)) != len(chars):
            raise ValueError(f"CharTokenizer: chars must be a string of distinct characters, "
                             f"got {excerpt(chars)}")
        self.chars = chars
        self._index = {c: N_SPECIAL + i for i, c in enumerate(chars)}

    @classmethod
    def train(cls, text):
        if not isinstance(text, str) or not text:
            raise ValueError(f"CharTokenizer.train: text must be a non-empty str, got "
                             f"{excerpt(text)}")
        return cls("".join(sorted(set(text))))

    def _n_tokens(self):
        return len(self.chars)

    def _encode(self, text):
        try:
            return [self._index[c] for c in text]
        except KeyError as err:
            raise ValueError(f"CharTokenizer.encode: the character {err.args[0]!r} is not in "
                             f"the alphabet of {len(self.chars)} characters") from None

    def _decode(self, ids):
        return "".join(self.chars[i - N_SPECIAL] for i in ids)

    def token_bytes(self, i):
        """The UTF-8 bytes token ``i`` stands for (empty for a special token)."""
        return b"" if i < N_SPECIAL else self.chars[i - N_SPECIAL].encode("utf-8", "surrogatepass")


# GPT-2's pre-split with Python's re (\p{L} ~ [^\W\d_], \p{N} ~ \d); the last alternative
# takes any character the others skip, so the chunks always cover the whole text.
_CHUNK = re.compile(r"'(?:s|t|re|ve|m|ll|d)| ?[^\W\d_]+| ?\d+| ?[^\s\w]+|\s+(?!\S)|\s+|[\s\S]")
_BYTE0 = N_SPECIAL                 # id of byte 0; bytes take ids 3..258
_FIRST_MERGE = _BYTE0 + 256        # merge i gets id 259 + i


def _merge(ids, pair, new_id):
    """``ids`` with every non-overlapping occurrence of ``pair`` (left to right) -> new_id."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


@register()
class BPETokenizer(Tokenizer):
    """Byte-level BPE: ids 3..258 are the 256 byte values, id 259 + i is ``merges[i]``, a pair
    of earlier ids. ``BPETokenizer.train(text, vocab_size)`` learns vocab_size - 259 merges.

    Encoding splits the text into chunks (``_CHUNK``), turns each into its UTF-8 bytes and
    applies the merges in the order they were learned (lowest rank first), as GPT-2 does.
    Lone surrogates survive the round trip (UTF-8 with ``surrogatepass``); ids whose bytes are
    not valid UTF-8 (a model can emit half a character) decode with U+FFFD replacements.
    """

    def __init__(self, merges=()):
        if not isinstance(merges, (list, tuple)):
            raise ValueError(f"BPETokenizer: merges must be a list of pairs of ids, got "
                             f"{excerpt(merges)}")
        self.merges = [list(int_tuple(pair, f"merges[{i}]", "BPETokenizer", low=_BYTE0,
                                      length=2)) for i, pair in enumerate(merges)]
        self._ranks, self._bytes = {}, [bytes([b]) for b in range(256)]
        for i, (a, b) in enumerate(self.merges):
            new_id = _FIRST_MERGE + i
            if max(a, b) >= new_id:
                raise ValueError(f"BPETokenizer: merges[{i}] must be a pair of earlier ids in "
                                 f"[{_BYTE0}, {new_id}), got {merges[i]!r}")
            self._ranks[(a, b)] = new_id
            self._bytes.append(self._bytes[a - _BYTE0] + self._bytes[b - _BYTE0])
        self._cache = {}

    @classmethod
    def train(cls, text, vocab_size):
        """Learn merges on ``text`` until the vocabulary has ``vocab_size`` ids (or no pair
        occurs twice). Pair counts are kept incrementally: a merge only recounts the chunks
        that contain the merged pair."""
        if not isinstance(text, str):
            raise TypeError(f"BPETokenizer.train: text must be a str, got {type(text).__name__}")
        integer(vocab_size, "vocab_size", "BPETokenizer.train", low=_FIRST_MERGE)
        chunks = Counter(_CHUNK.findall(text))
        words = [[_BYTE0 + b for b in w.encode("utf-8", "surrogatepass")] for w in chunks]
        freqs = list(chunks.values())
        counts, where = Counter(), {}
        for w, (ids, f) in enumerate(zip(words, freqs)):
            for pair in zip(ids, ids[1:]):
                counts[pair] += f
                where.setdefault(pair, set()).add(w)
        merges = []
        for new_id in range(_FIRST_MERGE, vocab_size):
            if not counts:
                break
            pair, count = max(counts.items(), key=lambda kv: (kv[1], -kv[0][0], -kv[0][1]))
            if count < 2:
                break
            merges.append(pair)
            for w in where.pop(pair):
                ids, f = words[w], freqs[w]
                for p in zip(ids, ids[1:]):
                    counts[p] -= f
                    if counts[p] == 0:
                        del counts[p]
                words[w] = ids = _merge(ids, pair, new_id)
                for p in zip(ids, ids[1:]):
                    counts[p] += f
                    where.setdefault(p, set()).add(w)
        return cls([list(m) for m in merges])

    def _n_tokens(self):
        return len(self._bytes)

    def _encode_chunk(self, chunk):
        ids = [_BYTE0 + b for b in chunk.encode("utf-8", "surrogatepass")]
        while len(ids) > 1:
            pair = min(zip(ids, ids[1:]), key=lambda p: self._ranks.get(p, float("inf")))
            if pair not in self._ranks:
                break
            ids = _merge(ids, pair, self._ranks[pair])
        return ids

    def _encode(self, text):
        out = []
        for chunk in _CHUNK.findall(text):
            ids = self._cache.get(chunk)
            if ids is None:
                if len(self._cache) > 100_000:
                    self._cache.clear()
                ids = self._cache[chunk] = self._encode_chunk(chunk)
            out.extend(ids)
        return out

    def _decode(self, ids):
        raw = b"".join(self._bytes[i - _BYTE0] for i in ids)
        try:
            return raw.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return raw.decode("utf-8", "replace")

    def token_bytes(self, i):
        """The bytes token ``i`` stands for (empty for a special token)."""
        return b"" if i < N_SPECIAL else self._bytes[i - _BYTE0]
