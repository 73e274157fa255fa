"""Modules: layers with parameters, built from ``minigen.functional``."""
from . import init
from .attention import MultiheadAttention, scaled_dot_product_attention
from .layers import (GELU, MLP, BatchNorm1d, BatchNorm2d, Conv2d, ConvTranspose2d, Dropout,
                     Embedding, GroupNorm, Identity, LayerNorm, LeakyReLU, Linear, ReLU, SiLU,
                     Sigmoid, Softplus, Tanh, activation)
from .module import Module, ModuleList, Parameter, Sequential
