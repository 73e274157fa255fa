"""Data sets: toy distributions in 1-D and 2-D, the 8x8 handwritten digits, text corpora and
tokenizers."""
from .digits import load_digits
from .text import load_names, load_pydoc, load_text, pad_sequences, split_text
from .tokenizers import BPETokenizer, CharTokenizer, Tokenizer
from .toy import (TOY_DATASETS, checkerboard, circles, eight_gaussians, make_toy, mixture_1d,
                  mixture_1d_logpdf, moons, pinwheel, swiss_roll, twenty_five_gaussians)

__all__ = ["load_digits", "TOY_DATASETS", "make_toy", "moons", "circles", "swiss_roll",
           "eight_gaussians", "twenty_five_gaussians", "checkerboard", "pinwheel",
           "mixture_1d", "mixture_1d_logpdf", "load_pydoc", "load_names", "load_text",
           "split_text", "pad_sequences", "Tokenizer", "CharTokenizer", "BPETokenizer"]
