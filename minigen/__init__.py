"""minigen: density estimation and generative models from scratch, on a small autograd engine.

>>> import minigen as mg
>>> x = mg.tensor([1.0, 2.0], requires_grad=True)
>>> (x ** 3).sum().backward(); x.grad
"""
from . import data, density, functional, metrics, models, nn, optim
from .autograd import Function, Tensor, enable_grad, grad, is_grad_enabled, no_grad
from .creation import (arange, full, manual_seed, ones, ones_like, rand, randn, tensor, zeros,
                       zeros_like)
from .io import load, load_model, save, save_model
from .backend import AxisError, get_default_dtype, set_default_dtype
from .functional import (abs, cat, clip, concatenate, cos, erf, exp, log, logsumexp, matmul,
                         maximum, minimum, one_hot, prod, sigmoid, sin, softmax, sort, split,
                         sqrt, stack, std, tanh, where)
from ._version import __version__
