"""Text corpora that need no download, a train/held-out split, and padded batches.

- ``load_pydoc()``: Python's own documentation topics (``pydoc_data.topics``, part of every
  CPython install; about 460,000 characters of English prose and code).
- ``load_names()``: a list of given names shipped with minigen (``names.txt``, one a line),
  in the spirit of the names data of Karpathy's makemore.
- ``load_text(path)``: any text file.

``pad_sequences`` turns sequences of ids of different lengths into one (n, length) array and a
boolean ``key_padding_mask``, True where a position is padding (the convention of
``nn.MultiheadAttention`` and PyTorch).
"""
import os

import numpy as np

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
    """The contents of the text file at ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"load_text: no such file {path!r}")
    with open(path, encoding=encoding) as f:
        return f.read()


def split_text(text, held_out=0.1):
    """(train, held-out): the last ``held_out`` fraction of ``text`` is held out (a contiguous
    tail, so no sentence is on both sides except the one that is cut)."""
    if not 0 < held_out < 1:
        raise ValueError(f"split_text: held_out must lie in (0, 1), got {held_out}")
    cut = int(round(len(text) * (1 - held_out)))
    return text[:cut], text[cut:]


def pad_sequences(sequences, pad_id=PAD_ID, length=None, side="right"):
    """Stack sequences of ids of different lengths into ``(ids, key_padding_mask)``.

    ids: int64 (n, length), each sequence followed (side='right') or preceded (side='left') by
    ``pad_id``; key_padding_mask: bool (n, length), True at the padding. ``length`` defaults to
    the longest sequence; a longer sequence is an error (cut it first: padding never drops data).
    """
    if side not in ("right", "left"):
        raise ValueError(f"pad_sequences: side must be 'right' or 'left', got {side!r}")
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
