"""Data sets: toy distributions in 1-D and 2-D, and the 8x8 handwritten digits."""
from .digits import load_digits
from .toy import (TOY_DATASETS, checkerboard, circles, eight_gaussians, make_toy, mixture_1d,
                  mixture_1d_logpdf, moons, pinwheel, swiss_roll, twenty_five_gaussians)

__all__ = ["load_digits", "TOY_DATASETS", "make_toy", "moons", "circles", "swiss_roll",
           "eight_gaussians", "twenty_five_gaussians", "checkerboard", "pinwheel",
           "mixture_1d", "mixture_1d_logpdf"]
