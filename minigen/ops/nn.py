"""Neural-network ops: softmax family (with the attention's masked softmax) and convolutions (backed by ``minigen.kernels``),
pooling, upsampling, dropout, embedding (the normalisations are in ops/norm.py).

The kernel-backed ops keep second derivatives exact by pairing each fused kernel with a
Function whose own backward is written in Tensor ops (softmax) or in the other kernels
(conv2d, its input gradient and its weight gradient form a closed set of bilinear maps).
"""
import numpy as np

from .. import _checks as C
from .. import backend
from ..autograd import Function, Tensor, is_grad_enabled
from ..backend import xp
from ..kernels import channels_last
from ..kernels import conv as kconv
from ..kernels import softmax as ksoftmax
from ._promote import floating
from .shape import getitem, pad, reshape


# --- softmax family -----------------------------------------------------------------------
class Softmax(Function):
    """softmax(x)_k = exp(x_k - logsumexp(x)) over the last axis."""

    def forward(self, x):
        return ksoftmax.softmax(x)

    def backward(self, g):
        return SoftmaxBackward.apply(self.output(), g)


class SoftmaxBackward(Function):
    """(y, gy) -> y * (gy - sum(gy * y)), the vector-Jacobian product of softmax."""

    def forward(self, y, gy):
        return ksoftmax.softmax_backward(y, gy)

    def backward(self, g):
        y, gy = self.inputs
        s = (gy * y).sum(-1, keepdims=True)
        t = (g * y).sum(-1, keepdims=True)
        return g * (gy - s) - gy * t, SoftmaxBackward.apply(y, g)


class LogSoftmax(Function):
    """log_softmax(x)_k = x_k - logsumexp(x) over the last axis."""

    def forward(self, x):
        return ksoftmax.log_softmax(x)

    def backward(self, g):
        return LogSoftmaxBackward.apply(self.output(), g)


class LogSoftmaxBackward(Function):
    """(y, gy) -> gy - exp(y) * sum(gy), with y = log_softmax(x)."""

    def forward(self, y, gy):
        return ksoftmax.log_softmax_backward(y, gy)

    def backward(self, g):
        y, gy = self.inputs
        p = y.exp()
        return -g * p * gy.sum(-1, keepdims=True), g - (g * p).sum(-1, keepdims=True)


class MaskedSoftmax(Function):
    """softmax over the last axis with the entries where ``mask`` is True left out:
    y_k = exp(x_k - M) / sum_{j not masked} exp(x_j - M) where k is not masked, y_k = 0 where
    it is, M the largest unmasked x_j; a row with every entry masked is 0.  ``mask`` (a
    boolean array) broadcasts to x; the kernel reads it in place of the masked entries (one
    pass, no -inf-filled copy of x), so a masked weight is exactly 0 whatever the scale of
    x.  Since y is 0 there, the
    softmax gradient y (gy - sum(gy y)) is exactly 0 at masked entries and on empty rows, so
    the backward is one ``SoftmaxBackward`` and no separate pass for the mask."""

    def forward(self, x, mask):
        return ksoftmax.masked_softmax(x, mask)

    def backward(self, g):
        return SoftmaxBackward.apply(self.output(), g)


def masked_softmax(x, mask):
    """softmax over the last axis of x, entries where the boolean ``mask`` (broadcastable to
    x) is True excluded: they get weight 0, as does every entry of a fully masked row."""
    x = floating(x)
    m = xp(x.data)
    mask = m.asarray(mask.data if isinstance(mask, Tensor) else mask)
    if mask.dtype != bool or x.ndim == 0:
        raise ValueError(f"masked_softmax: mask must be a boolean array and x at least 1-d, "
                         f"got mask {mask.dtype} and x of shape {x.shape}")
    try:
        np.broadcast_shapes(mask.shape, x.shape)
    except ValueError:
        raise ValueError(f"masked_softmax: mask of shape {mask.shape} does not broadcast to x "
                         f"of shape {x.shape}") from None
    return MaskedSoftmax.apply(x, mask=mask)


def softmax(x, axis=-1):
    return _last_axis(Softmax, x, axis, "softmax")


def log_softmax(x, axis=-1):
    return _last_axis(LogSoftmax, x, axis, "log_softmax")


def _last_axis(fn, x, axis, name):
    """Apply ``fn`` (which works on the last axis) along ``axis``; a 0-d tensor is one
    value along axis 0 or -1, as in PyTorch."""
    if x.ndim == 0:
        backend.check_axis(axis, 1, name)
        return fn.apply(floating(x).reshape(1)).reshape(())
    axis = backend.check_axis(axis, x.ndim, name)
    if axis == x.ndim - 1:
        return fn.apply(floating(x))
    return fn.apply(floating(x).transpose(axis, -1)).transpose(axis, -1)


class CrossEntropy(Function):
    """Per-row loss_i = logsumexp(z_i) - z_i[t_i]; 0 where t_i == ignore_index."""

    def forward(self, logits, targets, ignore_index):
        self.targets, self.ignore_index = targets, ignore_index
        return ksoftmax.cross_entropy(logits, targets, ignore_index)

    def backward(self, g):
        return CrossEntropyBackward.apply(self.inputs[0], g, targets=self.targets,
                                          ignore_index=self.ignore_index)


class CrossEntropyBackward(Function):
    """(z, g) -> g_i * (softmax(z_i) - onehot(t_i)), rows with t_i == ignore_index zero."""

    def forward(self, logits, g, targets, ignore_index):
        self.targets, self.ignore_index = targets, ignore_index
        return ksoftmax.cross_entropy_backward(logits, targets, g, ignore_index)

    def backward(self, gg):
        logits, g = self.inputs
        p = softmax(logits)
        kept = _kept_rows(self.targets, self.ignore_index, logits.dtype)
        keep = Tensor(kept)
        onehot = one_hot(self.targets * (kept > 0), logits.shape[-1], dtype=logits.dtype)
        g_g = ((gg * (p - onehot)).sum(-1)) * keep
        pg = p * gg
        g_logits = (pg - p * pg.sum(-1, keepdims=True)) * (g * keep).reshape(-1, 1)
        return g_logits, g_g


def _kept_rows(targets, ignore_index, dtype):
    if ignore_index is None:
        return xp(targets).ones(targets.shape, dtype=dtype)
    return (targets != ignore_index).astype(dtype)


def one_hot(indices, num_classes, dtype=None):
    """Not differentiable: a float Tensor with a 1 at each index along a new last axis."""
    num_classes = C.positive_int(num_classes, "num_classes", "one_hot")
    idx = indices.data if isinstance(indices, Tensor) else indices
    mod = xp(idx) if hasattr(idx, "dtype") else np
    idx = mod.asarray(idx)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"one_hot: indices must be integers, got {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= num_classes):
        raise ValueError(f"one_hot: indices must lie in [0, {num_classes})")
    out = mod.zeros(idx.shape + (num_classes,), dtype=dtype or backend.get_default_dtype())
    mod.put_along_axis(out, idx[..., None], 1, axis=-1)
    return Tensor(out)


# --- convolution --------------------------------------------------------------------------
class Conv2d(Function):
    """y[n,o] = sum_c x[n,c] (*) w[o,c] + b[o] (cross-correlation, NCHW; b optional): the bias
    is added in place and its gradient, gb[o] = sum_{n,h,w} gy[n,o,h,w], summed here, so a
    biased convolution is one node of the graph, not three (convolution, broadcast, add)."""

    def forward(self, x, w, *bias, geometry):
        self.geometry = geometry
        # the patch matrix of x, kept for the weight gradient (freed with the graph); None
        # where the convolution ran in image blocks, whose gradients read gy's patches instead
        y, self.patches = kconv.conv2d(x, w, *geometry, return_patches=True)
        if bias:
            y += bias[0].reshape(1, -1, 1, 1)
        return y

    def backward(self, g):
        x, w, *bias = self.inputs
        gb = None
        if bias and bias[0].requires_grad:
            gb = g.sum(axis=(0, 2, 3)) if is_grad_enabled() else Tensor(_channel_sums(g.data))
        if x.requires_grad and w.requires_grad and not is_grad_enabled():
            # both gradients in one kernel call, which shares their work where it can (the
            # channels-last copy of g, or the patch rows of g); under create_graph the two
            # Functions below keep the graph differentiable
            gx, gw = kconv.conv2d_gradients(x.data, g.data, w.data, *self.geometry,
                                            patches=self.patches)
            gx, gw = Tensor(gx), Tensor(gw)
        else:
            gx = ConvInputGrad.apply(g, w, x_shape=x.shape, geometry=self.geometry) \
                if x.requires_grad else None
            gw = ConvWeightGrad.apply(x, g, w_shape=w.shape, geometry=self.geometry,
                                      patches=self.patches) if w.requires_grad else None
        return (gx, gw, gb) if bias else (gx, gw)

    def release(self):
        super().release()
        self.patches = None


def _channel_sums(g):
    """g (N, C, H, W) summed over all but the channel axis: on channels-last memory as the
    column sums of its (N H W, C) rows (one unit-stride pass), else over the axes in place."""
    if channels_last(g):
        return g.transpose(0, 2, 3, 1).reshape(-1, g.shape[1]).sum(axis=0)
    return g.sum(axis=(0, 2, 3))


class ConvInputGrad(Function):
    """The transpose of conv2d in x: <g, C_w^T gy> = <C_w g, gy> (also conv_transpose2d)."""

    def forward(self, gy, w, x_shape, geometry):
        self.geometry = geometry
        return kconv.conv2d_input_grad(gy, w, x_shape, *geometry)

    def backward(self, g):
        gy, w = self.inputs
        ggy = Conv2d.apply(g, w, geometry=self.geometry) if gy.requires_grad else None
        gw = ConvWeightGrad.apply(g, gy, w_shape=w.shape, geometry=self.geometry) \
            if w.requires_grad else None
        return ggy, gw


class ConvWeightGrad(Function):
    """The weight gradient of conv2d: <G, W(x, gy)> = <conv2d(x, G), gy>."""

    def forward(self, x, gy, w_shape, geometry, patches=None):
        self.geometry = geometry
        return kconv.conv2d_weight_grad(x, gy, w_shape, *geometry, patches=patches)

    def backward(self, g):
        x, gy = self.inputs
        gx = ConvInputGrad.apply(gy, g, x_shape=x.shape, geometry=self.geometry) \
            if x.requires_grad else None
        ggy = Conv2d.apply(x, g, geometry=self.geometry) if gy.requires_grad else None
        return gx, ggy


def _check_conv(name, x, w, in_axis):
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"{name}: expected input (N, C, H, W) and a 4-D weight, got shapes "
                         f"{x.shape} and {w.shape}")
    if x.shape[1] != w.shape[in_axis]:
        raise ValueError(f"{name}: input has {x.shape[1]} channels but weight expects "
                         f"{w.shape[in_axis]} (weight shape {w.shape})")
    if 0 in w.shape:
        raise ValueError(f"{name}: the weight needs at least one channel in and out and a kernel "
                         f"of at least 1 x 1, got shape {w.shape}")


def conv2d(x, weight, bias=None, stride=1, padding=0, dilation=1):
    """2-D cross-correlation, NCHW; weight (C_out, C_in, kh, kw), bias (C_out,)."""
    _check_conv("conv2d", x, weight, 1)
    geometry = (C.int_pair(stride, "stride", "conv2d"),
                C.int_pair(padding, "padding", "conv2d", low=0),
                C.int_pair(dilation, "dilation", "conv2d"))
    (sh, sw), (ph, pw), (dh, dw) = geometry
    if x.shape[2] + 2 * ph < dh * (weight.shape[2] - 1) + 1 or \
            x.shape[3] + 2 * pw < dw * (weight.shape[3] - 1) + 1:
        raise ValueError(f"conv2d: kernel {weight.shape[2:]} (dilation {geometry[2]}) is larger "
                         f"than the padded input {x.shape[2:]} (padding {geometry[1]})")
    if bias is not None and tuple(bias.shape) == tuple(weight.shape[:1]) and \
            bias.dtype == x.dtype == weight.dtype:
        return Conv2d.apply(x, weight, bias, geometry=geometry)
    y = Conv2d.apply(x, weight, geometry=geometry)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


def conv_transpose2d(x, weight, bias=None, stride=1, padding=0, output_padding=0, dilation=1):
    """The adjoint of conv2d, NCHW; weight (C_in, C_out, kh, kw) as in PyTorch.

    H_out = (H - 1) stride - 2 padding + dilation (kh - 1) + output_padding + 1.
    """
    _check_conv("conv_transpose2d", x, weight, 0)
    geometry = (C.int_pair(stride, "stride", "conv_transpose2d"),
                C.int_pair(padding, "padding", "conv_transpose2d", low=0),
                C.int_pair(dilation, "dilation", "conv_transpose2d"))
    (sh, sw), (ph, pw), (dh, dw) = geometry
    oph, opw = C.int_pair(output_padding, "output_padding", "conv_transpose2d", low=0)
    if oph >= max(sh, dh) or opw >= max(sw, dw):
        raise ValueError("conv_transpose2d: output_padding must be smaller than stride or dilation")
    h = (x.shape[2] - 1) * sh - 2 * ph + dh * (weight.shape[2] - 1) + oph + 1
    w = (x.shape[3] - 1) * sw - 2 * pw + dw * (weight.shape[3] - 1) + opw + 1
    eh, ew = max(oph - sh + 1, 0), max(opw - sw + 1, 0)
    if eh or ew:
        # output_padding >= stride (allowed when dilation is larger) adds rows/columns that no
        # input pixel reaches and that conv2d's geometry cannot express: scatter into the
        # unpadded output, append the unreached rows/columns as zeros, then crop the padding
        full = ConvInputGrad.apply(
            x, weight, x_shape=(x.shape[0], weight.shape[1], h + 2 * ph - eh, w + 2 * pw - ew),
            geometry=(geometry[0], (0, 0), geometry[2]))
        y = pad(full, ((0, 0), (0, 0), (0, eh), (0, ew)))[:, :, ph:ph + h, pw:pw + w]
    else:
        y = ConvInputGrad.apply(x, weight, x_shape=(x.shape[0], weight.shape[1], h, w),
                                geometry=geometry)
    return y if bias is None else y + bias.reshape(1, -1, 1, 1)


# --- pooling and upsampling ---------------------------------------------------------------
def _windows(name, x, kernel_size, stride, padding):
    """Flat indices (into each padded H*W image) of every pooling window: (Ho, Wo, kh*kw)."""
    if x.ndim != 4:
        raise ValueError(f"{name}: expected input (N, C, H, W), got shape {x.shape}")
    kh, kw = C.int_pair(kernel_size, "kernel_size", name)
    sh, sw = C.int_pair(stride if stride is not None else (kh, kw), "stride", name)
    ph, pw = C.int_pair(padding, "padding", name, low=0)
    H, W = x.shape[2] + 2 * ph, x.shape[3] + 2 * pw
    if kh > H or kw > W:
        raise ValueError(f"{name}: kernel {(kh, kw)} is larger than the padded input {(H, W)}")
    rows = np.arange(0, H - kh + 1, sh)[:, None, None] + np.repeat(np.arange(kh), kw)[None, None]
    cols = np.arange(0, W - kw + 1, sw)[None, :, None] + np.tile(np.arange(kw), kh)[None, None]
    return rows * W + cols, (ph, pw), (H, W)


def _gather_windows(name, x, kernel_size, stride, padding, fill):
    idx, (ph, pw), (H, W) = _windows(name, x, kernel_size, stride, padding)
    if ph or pw:
        x = pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), value=fill)
    flat = reshape(x, x.shape[0], x.shape[1], H * W)
    return getitem(flat, (slice(None), slice(None), xp(x.data).asarray(idx)))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """Max over each window (padding counts as -inf); gradient to the arg-max."""
    return _gather_windows("max_pool2d", x, kernel_size, stride, padding, -np.inf).max(-1)


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """Mean over each window (zero padding is counted, as in PyTorch's default)."""
    return _gather_windows("avg_pool2d", x, kernel_size, stride, padding, 0.0).mean(-1)


def upsample_nearest(x, scale_factor=2):
    """Nearest-neighbour upsampling of (N, C, H, W) by an integer factor."""
    s = C.positive_int(scale_factor, "scale_factor", "upsample_nearest")
    if x.ndim != 4:
        raise ValueError(f"upsample_nearest: expected input (N, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    if channels_last(x.data):
        # repeat whole (C,) rows: the copy that the last reshape makes is channels-last too
        rows = x.permute(0, 2, 3, 1).reshape(n, h, 1, w, 1, c).expand(n, h, s, w, s, c)
        return rows.reshape(n, h * s, w * s, c).permute(0, 3, 1, 2)
    return x.reshape(n, c, h, 1, w, 1).expand(n, c, h, s, w, s).reshape(n, c, h * s, w * s)


# --- regularisation and normalisation -----------------------------------------------------
def dropout(x, p=0.5, training=True, rng=None):
    """Inverted dropout: zero each element with probability p, scale the rest by 1/(1-p)."""
    p = C.real(p, "p", "dropout", low=0, high=1, high_open=True)
    if not training or p == 0:
        return x
    keep = backend.per_example(backend.as_rng(rng, x.device, where="dropout").random, x.shape) >= p
    return x * Tensor((keep / (1 - p)).astype(x.dtype))


def embedding(indices, weight):
    """Rows of ``weight`` (num_embeddings, dim) at integer ``indices``; backward scatter-adds."""
    idx = indices.data if isinstance(indices, Tensor) else xp(weight.data).asarray(indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"embedding: indices must be integers, got {idx.dtype}")
    if idx.size and (idx.min() < 0 or idx.max() >= weight.shape[0]):
        raise IndexError(f"embedding: indices must lie in [0, {weight.shape[0]}), got "
                         f"[{idx.min()}, {idx.max()}]")
    return getitem(weight, idx)


__all__ = ["softmax", "masked_softmax", "log_softmax", "one_hot", "conv2d", "conv_transpose2d", "max_pool2d",
           "avg_pool2d", "upsample_nearest", "dropout", "embedding"]
