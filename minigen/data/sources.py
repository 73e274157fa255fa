"""Data by name or by file: what the command line's ``--data`` accepts.

    moons, circles, swiss_roll, 8gaussians, 25gaussians, checkerboard, pinwheel, mixture1d
                            the toy sets (2,000 points unless n= says otherwise)
    digits                  the 8x8 digits as rows of 64 values scaled to [0, 1]
    digits-binary           the same, thresholded at 8/16 (for Bernoulli likelihoods)
    pydoc                   Python's own documentation (one text stream)
    names                   a list of given names shipped with minigen (documents)
    file.npy                a 2-D numeric array (loaded with allow_pickle=False)
    file.csv                comma-separated numbers, one row per sample (a header row of
                            non-numbers is skipped)
    file.txt                text (for the language models)

Every file is checked before use: a malformed, empty, non-finite or wrongly shaped one gets
an error that names the file and the problem.
"""
import os

import numpy as np

from .._checks import choice, excerpt
from .digits import load_digits
from .text import load_names, load_pydoc, load_text, split_text
from .toy import TOY_DATASETS, make_toy

_ALIASES = {"8gaussians": "eight_gaussians", "25gaussians": "twenty_five_gaussians",
            "mixture1d": "mixture_1d"}
TEXT_SETS = {"pydoc": load_pydoc, "names": load_names}
IMAGE_SETS = ("digits", "digits-binary")


def names():
    """Every built-in data set name."""
    toys = [k for k in _ALIASES] + [k for k in TOY_DATASETS if k not in _ALIASES.values()]
    return sorted(toys) + list(IMAGE_SETS) + sorted(TEXT_SETS)


def is_text(data):
    """True for text: a str (one stream) or a list of str (documents, e.g. the names)."""
    return isinstance(data, str) or (isinstance(data, list) and all(isinstance(d, str)
                                                                     for d in data))


def load(spec, n=2000, rng=0, split=None):
    """The data named by ``spec``: a (n, d) float array, a str (pydoc, .txt files) or a list
    of str (names).

    split: None (all of it), 'train' or 'test'. The built-in sets hold out the same part on
    every call, so a model fitted on 'train' is scored on data it never saw: the digits' seeded
    split of ``load_digits``; the toys' training set is ``n`` points drawn with ``rng`` and
    their test set ``n // 4`` points of an independent draw; pydoc's last tenth
    (``split_text``); a seeded fifth of the names. A file has no split: every split is all of
    it (``has_split``).
    """
    choice(split, "split", "load", (None, "train", "test"))
    key = _ALIASES.get(spec, spec)
    if key in TOY_DATASETS:
        if split == "test":
            return make_toy(key, n // 4, rng=np.random.default_rng([rng, 1]))
        return make_toy(key, n, rng=rng)
    if spec in IMAGE_SETS:
        X, _ = load_digits(split, dtype=np.float64)
        return (X >= 8).astype(np.float64) if spec == "digits-binary" else X / 16.0
    if spec in TEXT_SETS:
        text = TEXT_SETS[spec]()
        if split is None:
            return text
        if isinstance(text, str):
            return split_text(text, 0.1)[split == "test"]
        order = np.random.default_rng(rng).permutation(len(text))
        part = order[:len(text) // 5] if split == "test" else order[len(text) // 5:]
        return [text[i] for i in np.sort(part)]
    if os.path.splitext(spec)[1] or os.path.sep in spec:
        return load_file(spec)
    raise ValueError(f"unknown data set {excerpt(spec)}: expected one of {', '.join(names())}, "
                     "or a .npy, .csv or .txt file")


def has_split(spec):
    """True for a built-in set (``load`` holds out a test split), False for a file."""
    return _ALIASES.get(spec, spec) in TOY_DATASETS or spec in IMAGE_SETS or spec in TEXT_SETS


def load_labels(spec, split=None):
    """The class labels that go with ``load(spec, split=split)``: the digits have them."""
    if spec not in IMAGE_SETS:
        raise ValueError(f"{excerpt(spec)} has no class labels; a supervised model needs labelled "
                         f"data ({', '.join(IMAGE_SETS)})")
    return load_digits(split)[1]


def load_file(path):
    """A .npy / .csv file as a checked (n, d) float array, or a .txt file as text. Errors
    quote the path as an excerpt."""
    name = _quoted(path)
    if not os.path.isfile(path):
        raise ValueError(f"{name}: no such file")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".txt":
        text = load_text(path)
        if not text:
            raise ValueError(f"{name}: the text file is empty")
        return text
    if ext == ".npy":
        try:
            X = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise ValueError(f"{name}: not a readable .npy array ({err})") from None
    elif ext == ".csv":
        X = _read_csv(path)
    else:
        raise ValueError(f"{name}: unsupported file type {excerpt(ext)}; expected .npy, .csv or .txt")
    return check_rows(X, name)


def _quoted(path):
    return excerpt(os.fspath(path), 120)


def _read_csv(path):
    name = _quoted(path)
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.strip() for line in f if line.strip()]
    except UnicodeDecodeError as err:
        raise ValueError(f"{name}: not UTF-8 text (byte {err.start} cannot be decoded)") from None
    if lines and not _numeric(lines[0]):
        lines = lines[1:]            # a header row
    if not lines:
        raise ValueError(f"{name}: the CSV file has no data rows")
    rows = [line.split(",") for line in lines]
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise ValueError(f"{name}: rows have different numbers of columns {sorted(widths)}")
    for number, row in enumerate(rows, 1):
        for value in row:
            if not _numeric(value):
                raise ValueError(f"{name}: a value is not a number: {excerpt(value.strip())} "
                                 f"in data row {number}")
    return np.array([[float(v) for v in r] for r in rows])


def _numeric(line):
    try:
        [float(v) for v in line.split(",")]
        return True
    except ValueError:
        return False


def check_rows(X, name):
    """X as a finite float64 (n, d) array with n >= 2, or a ValueError naming ``name``."""
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{name}: expected numbers, got an array of dtype {X.dtype}")
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array (samples, features), got shape {X.shape}")
    if X.shape[0] < 2 or X.shape[1] < 1:
        raise ValueError(f"{name}: expected at least 2 samples and 1 feature, got shape {X.shape}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{name}: contains NaN or infinity")
    return X.astype(np.float64)
