"""Denoisers for diffusion models: networks f(x_t, t) with the output shape of x_t.

Both embed the integer timestep t with sinusoids (Vaswani et al. 2017, as used for t by
Ho et al. 2020) and add a learned projection of that embedding to every hidden layer. When
every t in the batch is equal (as in sampling) the embedding is computed once and broadcast.
"""
import functools
import math

import numpy as np

from ... import functional as F
from ...autograd import Tensor
from ...backend import shared_rng
from ...distribution import Configurable, register
from ...nn import Conv2d, GroupNorm, Identity, Linear, Module, ModuleList, init
from ...nn import activation as activation_module
from ...ops.activations import KINDS


def timestep_embedding(t, dim, max_period=10000.0, dtype=np.float32):
    """e(t) = [sin(t w_0), ..., sin(t w_{h-1}), cos(t w_0), ..., cos(t w_{h-1})],
    w_i = max_period^(-i/h), h = dim/2; t an int array (n,) -> array (n, dim)."""
    if dim < 2 or dim % 2:
        raise ValueError(f"timestep_embedding: dim must be an even int >= 2, got {dim}")
    t = np.asarray(t, dtype=np.float64).reshape(-1)
    half = dim // 2
    freqs = np.exp(-math.log(max_period) * np.arange(half) / half)
    args = t[:, None] * freqs
    return np.concatenate([np.sin(args), np.cos(args)], axis=1).astype(dtype)


@functools.lru_cache(maxsize=16)
def _embedding_table(size, dim, dtype):
    """timestep_embedding(0..size-1), computed once per (size, dim, dtype) and read-only."""
    table = timestep_embedding(np.arange(size), dim, dtype=dtype)
    table.flags.writeable = False
    return table


_TABLE_MAX = 1 << 16   # the cached embedding table covers t < 65536


def _time_features(t, n, dim, dtype, where):
    """The embedding of t (n,) as a constant Tensor: one row if all t are equal, else n rows
    (gathered from a cached table of the embeddings of 0..2^k - 1; computed directly for
    t >= 2^16, so a huge t never allocates a huge table)."""
    t = np.asarray(t)
    if t.shape != (n,) or t.dtype.kind not in "iu" or (n and t.min() < 0):
        raise ValueError(f"{where}: t must be a non-negative int array of shape ({n},), got "
                         f"{t.shape} {t.dtype}")
    rows = t[:1] if n and np.all(t == t[0]) else t
    top = int(rows.max()) if n else 0
    if top >= _TABLE_MAX:       # beyond any schedule's T: computed directly, never tabled
        return Tensor(timestep_embedding(rows, dim, dtype=np.dtype(dtype)))
    return Tensor(_embedding_table(1 << top.bit_length(), dim, np.dtype(dtype))[rows])


@register()
class TimeMLP(Module, Configurable):
    """For x (n, dim): h_1 = act(W_1 x + U_1 e(t) + b_1), h_k = act(W_k h_{k-1} + U_k e(t) + b_k)
    for k = 2..depth, output W_out h_depth + b_out (shape (n, dim))."""

    def __init__(self, dim, hidden=128, depth=3, emb_dim=32, activation="relu", rng=None):
        super().__init__()
        if dim < 1 or hidden < 1 or depth < 1:
            raise ValueError(f"TimeMLP: dim, hidden and depth must be >= 1, got {dim}, "
                             f"{hidden}, {depth}")
        self.dim, self.hidden, self.depth, self.emb_dim = dim, hidden, depth, emb_dim
        self.activation, self.rng = activation, rng
        self.act = activation_module(activation, "TimeMLP")
        rng = shared_rng(rng, "TimeMLP")
        self.layers = ModuleList([Linear(dim if k == 0 else hidden, hidden, rng=rng)
                                  for k in range(depth)])
        self.time = ModuleList([Linear(emb_dim, hidden, bias=False, rng=rng)
                                for _ in range(depth)])
        self.out = Linear(hidden, dim, rng=rng)

    def forward(self, x, t):
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"TimeMLP: x must have shape (n, {self.dim}), got {x.shape}")
        e = _time_features(t, x.shape[0], self.emb_dim, x.dtype, "TimeMLP")
        h = x
        for layer, proj in zip(self.layers, self.time):
            # b + U e first: a single row when every t is equal (sampling)
            h = self.act(h @ layer.weight.T + (layer.bias + proj(e)))
        return self.out(h)

    def runner(self, n):
        """A graph-free forward for a loop of calls on n float32 samples (a sampler), the same
        numbers as ``forward`` (``_TimeMLPRunner``); None unless the activation is ReLU (and
        ``forward`` is this class's own)."""
        plain = self.activation == "relu" and type(self).forward is TimeMLP.forward
        return _TimeMLPRunner(self, n) if plain else None


class _TimeMLPRunner:
    """A ReLU ``TimeMLP``'s forward on float32 arrays for a loop of calls on n samples:

        h_k = relu(h_{k-1} W_k^T + (b_k + U_k e(t))),  output h_depth W_out^T + b_out,

    the same operations in the same order as ``TimeMLP.forward`` (so the same numbers), with
    each (n, hidden) product written into one of two buffers kept across calls
    (``np.matmul(out=)``), the row b_k + U_k e(t) added and the ReLU applied in place.  No
    graph and no fresh multi-MB array per layer and call: at n = 10,000 those were
    page-faulted anew on every sampling step.  Weights are read at each call, so an EMA
    swapped in (``EMA.applied``) is used."""

    def __init__(self, net, n):
        self.net = net
        self.buffers = [np.empty((n, net.hidden), np.float32) for _ in range(min(net.depth, 2))]

    def __call__(self, x, t):
        net = self.net
        if x.dtype != np.float32 or x.shape != (len(self.buffers[0]), net.dim):
            return net(Tensor(x), t).data
        e = _time_features(t, len(x), net.emb_dim, x.dtype, "TimeMLP").data
        h = x
        for k, (layer, proj) in enumerate(zip(net.layers, net.time)):
            row = layer.bias.data + e @ proj.weight.data.T
            h = np.matmul(h, layer.weight.data.T, out=self.buffers[k % 2])
            h += row
            np.maximum(h, 0, out=h)
        return h @ net.out.weight.data.T + net.out.bias.data


def group_norm(channels, groups):
    """The TinyUNet's norm before each convolution: nn.GroupNorm with G = gcd(groups, C)
    groups (so any channel count works), or none (``groups=0``)."""
    return GroupNorm(math.gcd(groups, channels), channels) if groups else Identity()


def _norm_act(norm, act, activation, x, shift=None):
    """act(norm(x) + shift) with shift (N, C) or (1, C) over every entry of (sample, channel):
    one ``F.group_norm_act`` (group norm, shift and activation in one kernel pass each way)
    when ``norm`` is a GroupNorm and ``activation`` (a name of ``nn.activation``) one of the
    kinds it fuses, else the modules in turn."""
    if isinstance(norm, GroupNorm) and activation in KINDS:
        return F.group_norm_act(x, norm.num_groups, norm.weight, norm.bias, norm.eps, shift,
                                activation)
    h = norm(x)
    return act(h if shift is None else h + shift.reshape(shift.shape + (1, 1)))


class _ResBlock(Module):
    """h = conv(act(norm(x))); out = skip(x) + conv(act(norm(h) + U e)) (Ho et al. 2020,
    appendix B; ``groups=0``: no norms). U e is added after the norm, which would otherwise
    subtract the part of it shared within a group (all of it at one channel per group)."""

    def __init__(self, cin, cout, tdim, act, activation, groups, rng):
        super().__init__()
        self.act, self.activation = act, activation
        self.norm1 = group_norm(cin, groups)
        self.conv1 = Conv2d(cin, cout, 3, padding=1, rng=rng)
        self.time = Linear(tdim, cout, rng=rng)
        self.norm2 = group_norm(cout, groups)
        self.conv2 = Conv2d(cout, cout, 3, padding=1, rng=rng)
        self.skip = Conv2d(cin, cout, 1, rng=rng) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv1(_norm_act(self.norm1, self.act, self.activation, x))
        h = self.conv2(_norm_act(self.norm2, self.act, self.activation, h, self.time(temb)))
        return (x if self.skip is None else self.skip(x)) + h


@register()
class TinyUNet(Module, Configurable):
    """A two-level U-Net for small images (n, C, H, W), H and W even (8x8 digits):

    conv_in -> ResBlock (H x W, c channels, skip s) -> stride-2 conv -> ResBlock (H/2 x W/2,
    2c) -> nearest upsample + conv -> concat s -> ResBlock (c) -> norm, act, conv_out
    (zero-initialised), with the time embedding act(Linear(e(t))) projected into every
    ResBlock and GroupNorm with ``groups`` groups before each convolution (0: none)
    (Ronneberger et al. 2015; Ho et al. 2020, appendix B).
    """

    def __init__(self, in_channels=1, channels=32, emb_dim=32, activation="silu", groups=8,
                 rng=None):
        super().__init__()
        self.in_channels, self.channels, self.emb_dim = in_channels, channels, emb_dim
        self.activation, self.groups, self.rng = activation, groups, rng
        c = channels
        self.act = act = activation_module(activation, "TinyUNet")
        rng = shared_rng(rng, "TinyUNet")
        tdim = 2 * c
        self.time = Linear(emb_dim, tdim, rng=rng)
        self.conv_in = Conv2d(in_channels, c, 3, padding=1, rng=rng)
        self.down = _ResBlock(c, c, tdim, act, activation, groups, rng)
        self.downsample = Conv2d(c, 2 * c, 3, stride=2, padding=1, rng=rng)
        self.mid = _ResBlock(2 * c, 2 * c, tdim, act, activation, groups, rng)
        self.upconv = Conv2d(2 * c, c, 3, padding=1, rng=rng)
        self.up = _ResBlock(2 * c, c, tdim, act, activation, groups, rng)
        self.norm_out = group_norm(c, groups)
        self.conv_out = Conv2d(c, in_channels, 3, padding=1, rng=rng)
        init.zeros_(self.conv_out.weight)
        init.zeros_(self.conv_out.bias)

    def forward(self, x, t):
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[2] % 2 or x.shape[3] % 2:
            raise ValueError(f"TinyUNet: x must have shape (n, {self.in_channels}, H, W) with "
                             f"even H and W, got {x.shape}")
        temb = self.act(self.time(_time_features(t, x.shape[0], self.emb_dim, x.dtype,
                                                 "TinyUNet")))
        skip = self.down(self.conv_in(x), temb)
        h = self.mid(self.downsample(skip), temb)
        h = self.upconv(F.upsample_nearest(h, 2))
        h = self.up(F.concatenate([h, skip], axis=1), temb)
        return self.conv_out(_norm_act(self.norm_out, self.act, self.activation, h))
