"""The 8x8 handwritten digits, shipped inside the package.

1,797 images of 8x8 pixels, integer values 0..16 (the number of "on" pixels in each 4x4 block
of a 32x32 bitmap), with their labels 0..9. This is the test set of the UCI "Optical
Recognition of Handwritten Digits" data (E. Alpaydin and C. Kaynak, 1998; UCI Machine Learning
Repository, https://doi.org/10.24432/C50P49, licensed CC BY 4.0). ``digits.npz`` was written
once from scikit-learn's bundled copy of that file with
``np.savez_compressed(path, images=images.astype(np.uint8), labels=target)``.
"""
import os

import numpy as np

from .._checks import choice, real
from ..backend import check_rng

_PATH = os.path.join(os.path.dirname(__file__), "digits.npz")
SCALES = (None, "unit", "binary")


def load_digits(split=None, test_fraction=0.2, seed=0, flatten=True, dtype=np.float64,
                scale=None):
    """Return ``(X, y)``: images as ``(n, 64)`` (or ``(n, 8, 8)`` if ``flatten=False``) and labels.

    split: None (all 1,797 images), 'train' or 'test'. The split is a seeded permutation:
    the first ``round(test_fraction * 1797)`` permuted indices form the test set, the rest
    the training set, so 'train' and 'test' with the same seed are disjoint and cover all images.
    dtype: the image dtype (float64 by default; ``np.uint8`` gives the stored integers).
    scale: None (the raw counts 0..16), 'unit' (x / 16, in [0, 1]) or 'binary' (1 where
    x >= 8, else 0: the binarised digits that Bernoulli likelihoods model).
    """
    choice(split, "split", "load_digits", (None, "train", "test"))
    choice(scale, "scale", "load_digits", SCALES)
    if scale == "unit" and np.dtype(dtype).kind != "f":
        raise ValueError(f"load_digits: scale='unit' needs a float dtype, got {np.dtype(dtype)}")
    real(test_fraction, "test_fraction", "load_digits", low=0, high=1, low_open=True,
         high_open=True)
    check_rng(seed, "seed", "load_digits")
    with np.load(_PATH) as archive:
        images, labels = archive["images"], archive["labels"]
    if split is not None:
        order = np.random.default_rng(seed).permutation(len(labels))
        n_test = int(round(test_fraction * len(labels)))
        keep = np.sort(order[:n_test] if split == "test" else order[n_test:])
        images, labels = images[keep], labels[keep]
    if scale == "unit":
        images = images / 16.0
    elif scale == "binary":
        images = images >= 8
    X = images.reshape(len(images), -1) if flatten else images
    return X.astype(dtype), labels.astype(np.int64)
