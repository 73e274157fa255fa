"""Layers: Linear, convolutions, Embedding, normalisation (LayerNorm, GroupNorm, BatchNorm),
Dropout, activations, MLP."""
import math

import numpy as np

from .. import _checks as C
from .. import backend
from .. import functional as F
from ..autograd import Tensor
from . import init
from .module import Module, Parameter, Sequential


def _empty(*shape):
    return Parameter(np.zeros(shape, dtype=backend.get_default_dtype()))


def _check_sizes(where, **sizes):
    """Each keyword's value must be a positive int (``minigen._checks.positive_int``)."""
    for name, value in sizes.items():
        C.positive_int(value, name, where)


def _default_uniform(p, fan_in, rng):
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
    return init.uniform_(p, -bound, bound, rng)


class Linear(Module):
    """y = x W^T + b, W (out_features, in_features), initialised as in PyTorch."""

    def __init__(self, in_features, out_features, bias=True, rng=None):
        super().__init__()
        backend.check_rng(rng, "rng", "Linear")
        self.in_features, self.out_features = in_features, out_features
        self.weight = _default_uniform(_empty(out_features, in_features), in_features, rng)
        self.bias = _default_uniform(_empty(out_features), in_features, rng) if bias else None

    def forward(self, x):
        if x.shape[-1] != self.in_features:
            raise ValueError(f"Linear: input has {x.shape[-1]} features (shape {x.shape}), "
                             f"expected {self.in_features}")
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1,
                 bias=True, rng=None):
        super().__init__()
        _check_sizes("Conv2d", in_channels=in_channels, out_channels=out_channels)
        backend.check_rng(rng, "rng", "Conv2d")
        kh, kw = C.int_pair(kernel_size, "kernel_size", "Conv2d")
        self.stride, self.padding, self.dilation = stride, padding, dilation
        fan_in = in_channels * kh * kw
        self.weight = _default_uniform(_empty(out_channels, in_channels, kh, kw), fan_in, rng)
        self.bias = _default_uniform(_empty(out_channels), fan_in, rng) if bias else None

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation)

    def extra_repr(self):
        o, i, kh, kw = self.weight.shape
        return f"{i}, {o}, kernel_size={(kh, kw)}, stride={self.stride}, padding={self.padding}"


class ConvTranspose2d(Module):
    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 output_padding=0, dilation=1, bias=True, rng=None):
        super().__init__()
        _check_sizes("ConvTranspose2d", in_channels=in_channels, out_channels=out_channels)
        backend.check_rng(rng, "rng", "ConvTranspose2d")
        kh, kw = C.int_pair(kernel_size, "kernel_size", "ConvTranspose2d")
        self.stride, self.padding = stride, padding
        self.output_padding, self.dilation = output_padding, dilation
        fan_in = out_channels * kh * kw  # PyTorch computes fan_in from weight.shape[1]
        self.weight = _default_uniform(_empty(in_channels, out_channels, kh, kw), fan_in, rng)
        self.bias = _default_uniform(_empty(out_channels), fan_in, rng) if bias else None

    def forward(self, x):
        return F.conv_transpose2d(x, self.weight, self.bias, self.stride, self.padding,
                                  self.output_padding, self.dilation)


class Embedding(Module):
    def __init__(self, num_embeddings, embedding_dim, rng=None):
        super().__init__()
        backend.check_rng(rng, "rng", "Embedding")
        self.weight = init.normal_(_empty(num_embeddings, embedding_dim), rng=rng)

    def forward(self, indices):
        return F.embedding(indices, self.weight)


class LayerNorm(Module):
    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True):
        super().__init__()
        self.normalized_shape = (normalized_shape,) if isinstance(normalized_shape, int) \
            else tuple(normalized_shape)
        self.eps = eps
        if elementwise_affine:
            self.weight = init.ones_(_empty(*self.normalized_shape))
            self.bias = _empty(*self.normalized_shape)
        else:
            self.weight = self.bias = None

    def forward(self, x):
        return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)


class GroupNorm(Module):
    """y = (x - mean_g) / sqrt(var_g + eps) * weight_c + bias_c over each of ``num_groups``
    groups of channels of x (N, C, *) (Wu & He 2018), as torch.nn.GroupNorm."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        _check_sizes("GroupNorm", num_groups=num_groups, num_channels=num_channels)
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_groups ({num_groups}) must divide num_channels "
                             f"({num_channels})")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        if affine:
            self.weight = init.ones_(_empty(num_channels))
            self.bias = _empty(num_channels)
        else:
            self.weight = self.bias = None

    def forward(self, x):
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, " \
            f"affine={self.weight is not None}"


class _BatchNorm(Module):
    """y = (x - mean) / sqrt(var + eps) * weight + bias, with batch statistics in training
    (and running averages updated with ``momentum``), running averages in eval."""
    axes = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.weight = init.ones_(_empty(num_features))
        self.bias = _empty(num_features)
        dtype = backend.get_default_dtype()
        self.register_buffer("running_mean", np.zeros(num_features, dtype=dtype))
        self.register_buffer("running_var", np.ones(num_features, dtype=dtype))

    def forward(self, x):
        if x.ndim != len(self.axes) + 1 or x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected input with {len(self.axes) + 1} "
                             f"dims and {self.num_features} channels on axis 1, got {x.shape}")
        shape = [1] * x.ndim
        shape[1] = self.num_features
        if self.training:
            n = x.size // self.num_features
            if n < 2:
                raise ValueError(f"{type(self).__name__}: training needs more than one value "
                                 f"per channel to estimate a variance, got input of shape "
                                 f"{x.shape}; use a larger batch or call .eval()")
            mean = x.mean(self.axes, keepdims=True)
            var = x.var(self.axes, keepdims=True)
            m = self.momentum
            self.running_mean[...] = (1 - m) * self.running_mean + m * mean.data.reshape(-1)
            self.running_var[...] = (1 - m) * self.running_var + \
                m * var.data.reshape(-1) * n / max(n - 1, 1)
        else:
            mean = Tensor(self.running_mean.reshape(shape))
            var = Tensor(self.running_var.reshape(shape))
        y = (x - mean) / (var + self.eps).sqrt()
        return y * self.weight.reshape(shape) + self.bias.reshape(shape)


class BatchNorm1d(_BatchNorm):
    axes = (0,)


class BatchNorm2d(_BatchNorm):
    axes = (0, 2, 3)


class Dropout(Module):
    def __init__(self, p=0.5, rng=None):
        super().__init__()
        self.p, self.rng = p, backend.shared_rng(rng, "Dropout")

    def forward(self, x):
        return F.dropout(x, self.p, self.training, self.rng)


def _activation(name, fn):
    cls = type(name, (Module,), {"forward": lambda self, x: fn(x), "__doc__": fn.__doc__})
    return cls


ReLU = _activation("ReLU", F.relu)
Tanh = _activation("Tanh", F.tanh)
Sigmoid = _activation("Sigmoid", F.sigmoid)


class GELU(Module):
    """GELU; ``approximate`` 'none' (exact, the default, as in PyTorch) or 'tanh'."""

    def __init__(self, approximate="none"):
        super().__init__()
        self.approximate = C.choice(approximate, "approximate", "GELU", ("none", "tanh"))

    def forward(self, x):
        return F.gelu(x, self.approximate)

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


SiLU = _activation("SiLU", F.silu)
Softplus = _activation("Softplus", F.softplus)


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)


class Identity(Module):
    def forward(self, x):
        return x


_ACTIVATIONS = {"relu": ReLU, "tanh": Tanh, "sigmoid": Sigmoid, "gelu": GELU, "silu": SiLU,
                "softplus": Softplus, "leaky_relu": LeakyReLU}


def activation(name, where="activation"):
    """A new activation module by name: the one registry of activations in minigen
    (``relu``, ``tanh``, ``sigmoid``, ``gelu``, ``silu``, ``softplus``, ``leaky_relu``);
    ``where`` names the caller in the error for an unknown name."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"{where}: unknown activation {name!r}; one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]()


_new_activation = activation  # for MLP, whose argument named ``activation`` hides the function


def MLP(sizes, activation="relu", final_activation=None, rng=None):
    """Linear layers sizes[0] -> sizes[1] -> ... with ``activation`` between them."""
    if len(sizes) < 2:
        raise ValueError(f"MLP: sizes needs at least an input and an output size, got {sizes}")
    rng = backend.shared_rng(rng, "MLP")

    def make(act):
        if isinstance(act, str):
            return _new_activation(act, "MLP")
        return act() if isinstance(act, type) else act

    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(Linear(a, b, rng=rng))
        if i < len(sizes) - 2:
            layers.append(make(activation))
    if final_activation is not None:
        layers.append(make(final_activation))
    return Sequential(*layers)


