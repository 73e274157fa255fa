"""minigen's hot-path kernels, each beside the NumPy/CuPy reference it must match.

Modules: ``kde`` (pairwise Gaussian log-sum-exp and its query gradient), ``conv`` (conv2d
forward and gradients via im2col/col2im), ``softmax`` (softmax, log_softmax, fused
cross-entropy, with backwards), ``diffusion`` (fused DDPM/DDIM steps), ``elementwise``
(bias + activation, forward and backward), ``norm`` (layer and group norm, forward and
backward), ``optimizer`` (SGD, Adam and AdamW updates in place over flat buffers),
``scatter`` (the scatter-add of rows behind an embedding's gradient).  Every
public kernel takes ``impl=None | 'reference' | 'numba' | 'cuda'``; ``None`` lets ``_dispatch`` choose (see
its docstring; ``MINIGEN_KERNELS=reference|numba`` forces a path, and ``requested_path()``
returns the forced path or raises a clear error for an invalid value).  ``info()`` reports
what runs for each kernel and why.  Needs NumPy only; Numba and numba-cuda are used when present.
"""
from . import conv, diffusion, elementwise, kde, norm, optimizer, scatter, softmax
from ._dispatch import channels_last, info, requested_path, to_channels_last

__all__ = ["channels_last", "conv", "diffusion", "elementwise", "info", "kde", "norm",
           "optimizer", "requested_path", "scatter", "softmax", "to_channels_last"]
