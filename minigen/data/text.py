"""Text corpora that need no download, a train/held-out split, and padded batches.

- ``load_pydoc()``: Python's own documentation topics (``pydoc_data.topics``, part of every
  CPython install; about 460,000 characters of English prose and code).
- ``load_names()``: a list of given names shipped with minigen (``names.txt``, one a line),
  in the spirit of the names data of Karpathy's makemore.
- ``load_text(path)``: any text file.

Windows for next-token training, where a row of ``length`` ids holds ``length - 1`` targets
(every id but the first):

- ``stream_windows(ids, length)``: every window of one long stream (each target in up to
  ``length - 1`` rows, each with a different history).
- ``document_pieces(ids, length)``: one document cut into pieces that overlap by one id, so
  every position 1 .. n-1 of the document is a target exactly once.
- ``pad_sequences``: sequences of different lengths as one (n, length) array and a boolean
  ``key_padding_mask``, True where a position is padding (the convention of
  ``nn.MultiheadAttention`` and PyTorch).
"""
import os

import numpy as np

from .._checks import choice, excerpt, integer, positive_int, real
from .tokenizers import PAD_ID

_NAMES_PATH = os.path.join(os.path.dirname(__file__), "names.txt")


def load_pydoc():
    """The text of every topic in ``pydoc_data.topics``, in sorted topic order, joined by blank
    lines: the same string on every run of the same Python version."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k].strip() for k in sorted(topics))


def load_names():
    """The built-in list of given names (lower case a-z, one per name)."""
    with open(_NAMES_PATH, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def load_text(path, encoding="utf-8"):
    """The contents of the text file at ``path``; errors quote the path as an excerpt."""
    name = excerpt(os.fspath(path), 120)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_text: no such file {name}")
    try:
        with open(path, encoding=encoding) as f:
            return f.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"load_text: {name} is not {encoding.upper()} text (byte {err.start}: "
                         f"{err.reason})") from None


def split_text(text, held_out=0.1):
    """(train, held-out): the last ``held_out`` fraction of ``text`` is held out (a contiguous
    tail, so no sentence is on both sides except the one that is cut)."""
    held_out = real(held_out, "held_out", "split_text", 0, 1, low_open=True, high_open=True)
    cut = int(round(len(text) * (1 - held_out)))
    return text[:cut], text[cut:]


def stream_windows(ids, length, stride=1):
    """Rows ``ids[s : s + length]`` for s = 0, stride, 2 stride, ... <= len(ids) - length: a
    read-only (n, length) view of the 1-D ``ids``, no copy."""
    length = positive_int(length, "length", "stream_windows")
    stride = positive_int(stride, "stride", "stream_windows")
    ids = np.asarray(ids)
    if ids.ndim != 1 or len(ids) < length:
        raise ValueError(f"stream_windows: ids must be 1-D with at least length = {length} "
                         f"ids, got shape {ids.shape}")
    return np.lib.stride_tricks.sliding_window_view(ids, length)[::stride]


def document_pieces(ids, length):
    """``ids`` cut into pieces ``ids[s : s + length]``, s = 0, length - 1, 2 (length - 1), ...
    while a target is left: consecutive pieces share one id (the last of one is the first of
    the next), so every position 1 .. n-1 is a target of exactly one piece. A document of
    fewer than 2 ids has no target and gives no piece."""
    length = integer(length, "length", "document_pieces", low=2)
    ids = np.asarray(ids).reshape(-1)
    return [ids[s:s + length] for s in range(0, len(ids) - 1, length - 1)]


def pad_sequences(sequences, pad_id=PAD_ID, length=None, side="right"):
    """Stack sequences of ids of different lengths into ``(ids, key_padding_mask)``.

    ids: int64 (n, length), each sequence followed (side='right') or preceded (side='left') by
    ``pad_id``; key_padding_mask: bool (n, length), True at the padding. ``length`` defaults to
    the longest sequence; a longer sequence is an error (cut it first: padding never drops data).
    """
    side = choice(side, "side", "pad_sequences", ("right", "left"))
    seqs = [np.asarray(s, dtype=np.int64).reshape(-1) for s in sequences]
    longest = max((len(s) for s in seqs), default=0)
    length = longest if length is None else length
    if longest > length:
        raise ValueError(f"pad_sequences: a sequence has {longest} ids, more than "
                         f"length={length}")
    ids = np.full((len(seqs), length), pad_id, dtype=np.int64)
    mask = np.ones((len(seqs), length), dtype=bool)
    for row, s in enumerate(seqs):
        cols = slice(0, len(s)) if side == "right" else slice(length - len(s), length)
        ids[row, cols] = s
        mask[row, cols] = False
    return ids, mask
