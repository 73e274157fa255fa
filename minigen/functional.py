"""minigen.functional (``F``): every differentiable op, in one namespace.

The ops live in ``minigen/ops/`` grouped by kind (math, activations, shape, reduce, nn, norm, losses); this
module gathers them and gives Tensor its operators and methods (``x + y``, ``x @ w``,
``x.sum()``).
"""
import operator

from .autograd import Tensor, sum_to, to_device
from .backend import check_axis
from .ops.losses import (binary_cross_entropy_with_logits, cross_entropy, gaussian_nll,
                         kl_normal, l1_loss, mse_loss)
from .ops.activations import (bias_act, gelu, leaky_relu, linear_act, relu, sigmoid, silu,
                              softplus)
from .ops.math import (abs, add, clip, cos, div, erf, exp, linear, log, matmul, maximum, minimum,
                       mul, neg, pow, sin, sqrt, sub, tanh, where)
from .ops.nn import (avg_pool2d, conv2d, conv_transpose2d, dropout, embedding, log_softmax,
                     masked_softmax, max_pool2d, one_hot, softmax, upsample_nearest)
from .ops.norm import group_norm, group_norm_act, layer_norm
from .ops.reduce import logsumexp, max, mean, min, prod, std, sum, var
from .ops.shape import (cat, concatenate, cumsum, expand, flatten, flip, getitem, pad, permute,
                        reshape, sort, split, squeeze, stack, transpose, unsqueeze)


def _compare(op):
    """Elementwise comparison: a boolean Tensor, outside the graph."""
    return lambda a, b: Tensor(op(a.data, b.data if isinstance(b, Tensor) else b))


def _swap(fn):
    return lambda a, b: fn(b, a)


_methods = {
    "__add__": add, "__radd__": _swap(add), "__sub__": sub, "__rsub__": _swap(sub),
    "__mul__": mul, "__rmul__": _swap(mul), "__truediv__": div, "__rtruediv__": _swap(div),
    "__pow__": pow, "__rpow__": _swap(pow), "__matmul__": matmul, "__rmatmul__": _swap(matmul),
    "__neg__": neg, "__getitem__": getitem, "__abs__": abs,
    "exp": exp, "log": log, "sqrt": sqrt, "abs": abs, "sin": sin, "cos": cos, "tanh": tanh,
    "sigmoid": sigmoid, "erf": erf, "relu": relu, "softplus": softplus, "clip": clip,
    "matmul": matmul, "sum": sum, "mean": mean, "var": var, "std": std, "prod": prod,
    "max": max, "min": min, "logsumexp": logsumexp,
    "softmax": softmax, "log_softmax": log_softmax, "reshape": reshape, "permute": permute,
    "transpose": transpose, "expand": expand, "squeeze": squeeze, "unsqueeze": unsqueeze,
    "flatten": flatten, "cumsum": cumsum, "flip": flip, "sum_to": sum_to,
    "__lt__": _compare(operator.lt), "__le__": _compare(operator.le),
    "__gt__": _compare(operator.gt), "__ge__": _compare(operator.ge),
    "__eq__": _compare(operator.eq), "__ne__": _compare(operator.ne),
    "__float__": lambda a: float(a.item()),
    "argmax": lambda a, axis=None: Tensor(a.data.argmax(
        None if axis is None else check_axis(axis, a.ndim, "argmax"))),
}
for _name, _fn in _methods.items():
    setattr(Tensor, _name, _fn)
Tensor.T = property(lambda self: permute(self, tuple(reversed(range(self.ndim)))))
Tensor.swapaxes = transpose
del _name, _fn

__all__ = sorted(n for n in dir() if not n.startswith("_") and n not in
                 ("Tensor", "operator", "check_axis"))
