"""Layer normalisation (Ba et al. 2016) and group normalisation (Wu & He 2018), forward and
backward, with their statistics accumulated in float64.

Both view x as (N, G, K, S): G groups of K channels of S entries (layer_norm over the last
axis of length D: (rows, 1, 1, D); group_norm of x (N, C, *): (N, G, C / G, prod(*))).  Over
each group of M = K S entries

    mu = mean(x),   r = 1 / sqrt(mean((x - mu)^2) + eps),   x_hat = (x - mu) r,
    y = x_hat w + b,

with w and b per entry of the last axis (layer_norm, shape (D,)) or per channel (group_norm,
shape (C,)), each optional.  The backward, with h = gy w (gy without w), is

    gx = r (h - mean(h) - x_hat mean(h x_hat)),   gw = sum gy x_hat,   gb = sum gy,

the sums running over every axis w broadcasts along.  The forward returns (y, mu, r); the
backward recomputes x_hat from x, mu and r (no saved (N, D) array).

Implementations (pick one with ``impl=``): ``reference_*`` (NumPy/CuPy, the arithmetic of the
engine's ``Norm``/``NormBackward`` in ``minigen.ops.norm``), the Numba CPU kernels
``_numba_*`` (a prange task per block of groups; gw and gb accumulate per task in float64
and the tasks' partial sums are added) and the CUDA kernels ``_cuda_*`` (one thread per
group; gw and gb by a second kernel, one thread per parameter entry).  The per-element maps
are written once and compiled for both by ``both``.

``group_norm_act`` fuses a group norm, an optional per-(n, c) shift and an activation f
(``elementwise.KINDS`` or None), the TinyUNet's ``silu(group_norm(x) + U e)``:

    a = x_hat w + b + shift[n, c],   y = f(a),

one pass per group that saves only mu and r.  Its backward recomputes a (one read of x
instead of a write and a read of a saved a), then with ga = gy f'(a) it is the group norm's
backward on ga, and the shift's gradient is the per-(n, c) sum that gb needs anyway:

    gx = r (h - mean(h) - x_hat mean(h x_hat)), h = ga w,
    gw = sum_n sum_s ga x_hat,   gb = sum_n gshift,   gshift[n, c] = sum_s ga

(sum_s over the entries of channel c; summed over n too where shift has one row).  The
kernels write the per-(n, c) sums in float64 and the array library adds them over n, so no
parallel task shares an accumulator.  f and f' are ``elementwise``'s per-element source.
Below ``PARALLEL_MIN`` elements the Numba path runs serial twins of the prange kernels (the
same source compiled without ``parallel``; a parallel launch costs more than the TinyUNet's
whole norm).

``group_norm_act`` and its backward also run on channels-last memory (PyTorch's
``channels_last``: x (N, C, *) whose memory is C-contiguous (N, *, C), as the convolutions
of ``conv`` return it): the kernels read x and gy as (N, S, C) rows, a group being a run of
K channels inside each row, and write y and gx in the same layout, so the convolutions on
either side need no transposing copy.  The sums run per channel along the rows (unit stride
over C), then over each group's K channels.  64 8x8 or 4x4 images, 16-64 channels, float32,
one core: 0.6-1.25x the NCHW kernels' time on NCHW memory (forward and backward),
where copying x to NCHW and y back would cost more than the kernel.  The reference computes
on the NCHW values and returns y and gx in x's layout.
"""
import math

import numpy as np

from ._dispatch import (FASTMATH, _xp, both, channels_last, channels_to_last,
                        channels_to_second, check_float, choose, launch, lazy_cuda_jit,
                        lazy_njit, prange, register, serial_twin, to_channels_last)
from .elementwise import (GELU, GELU_TANH, KINDS, RELU, SILU, act_cpu, act_gpu, act_grad_cpu,
                          act_grad_gpu, reference_bias_act, reference_bias_act_backward)

cuda = None            # numba.cuda, bound by materialize(globals(), "cuda")
CUDA_THREADS = 128     # 4 warps per block; untuned: chosen by warp count;
                       # benchmarks/gpu_check.py tunes it
TASKS = 64             # at most this many backward tasks, each with float64 partial gw, gb
BLOCK = 16_384         # elements per forward task of layer-norm rows
for _name in ("layer_norm", "layer_norm_backward"):
    # work = elements.  ``benchmarks/fused.py --sweep`` on the 2-core machine shared with
    # other jobs (layer norm, float32, D = 128), NumPy/Numba time ratio at 16k / 65k / 262k /
    # 1M elements: forward 0.79 / 1.15 / 1.84 / 2.15, backward 0.72 / 0.34 / 1.55 / 1.72.
    # Re-measure on a quiet machine.
    register(_name, threshold=262_144)
# Group norm of the TinyUNet's shapes (batch 64, 8 groups, float32; one core, CPU clock,
# median of 40), NumPy / Numba ms: 64x64x4x4 (65k) forward 0.19 / 0.18, backward 0.46 / 0.18;
# 64x16x8x8 (65k) 0.17 / 0.14, 0.35 / 0.17; 64x32x8x8 (131k) 0.40 / 0.21, 0.79 / 0.33;
# 64x32x4x4 (32k) 0.11 / 0.12, 0.24 / 0.11 (the backward kernel's per-channel sums below).
register("group_norm", threshold=65_536)
register("group_norm_backward", threshold=32_768)
# group_norm_act: Numba at every size (``benchmarks/group_norm_act.py --sweep``, one core, CPU
# clock, medians of 5, Numba / NumPy ms: 4x16x8x8 (4k) forward 0.019 / 0.056, backward
# 0.031 / 0.103; 32x16x8x8 (32k) 0.056 / 0.188, 0.087 / 0.624).
register("group_norm_act", threshold=0)
register("group_norm_act_backward", threshold=0)
# Elements from which group_norm_act's forward and backward run their prange kernels (below,
# the serial twins).  Wall time on 2 Numba threads, ms, parallel / serial (float32, 8 groups):
# 64x16x8x8 (65k) forward 0.23 / 0.09, backward 0.28 / 0.14; 64x64x8x8 (262k) 0.44 / 0.31,
# 0.40 / 0.49; 128x64x8x8 (524k) 0.65 / 0.60, 0.95 / 0.93; 128x64x16x16 (2M) 1.08 / 1.83,
# 1.38 / 2.52.  On one thread the serial twin is always faster (no pool to hand work to).
PARALLEL_MIN = (1 << 19, 1 << 18)


def _check(where, x, weight, bias, pshape, eps, gy=None, stats=()):
    check_float(where, x=x)
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.integer, np.floating)) \
            or not (math.isfinite(eps) and eps >= 0):
        raise ValueError(f"{where}: eps must be a finite number >= 0, got {eps!r}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            check_float(where, **{name: p})
            if p.shape != pshape:
                raise ValueError(f"{where}: {name} must have shape {pshape}, got {p.shape}")
    if gy is not None:
        check_float(where, gy=gy)
        if gy.shape != x.shape:
            raise ValueError(f"{where}: gy must have x's shape {x.shape}, got {gy.shape}")
    for name, s, shape in stats:
        if getattr(s, "shape", None) != shape:
            raise ValueError(f"{where}: {name} must have shape {shape}, "
                             f"got {getattr(s, 'shape', None)}")


def _groups(where, x, num_groups):
    if x.ndim < 2:
        raise ValueError(f"{where}: x must be (N, C, *) with at least 2 axes, got shape "
                         f"{x.shape}")
    c = x.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, (int, np.integer)) \
            or num_groups < 1 or c % num_groups:
        raise ValueError(f"{where}: num_groups must be a positive int dividing the {c} "
                         f"channels of x {x.shape}, got {num_groups!r}")
    g = int(num_groups)
    return (x.shape[0], g, c // g, math.prod(x.shape[2:]))


# ------------------------------------------------------------------ reference (NumPy/CuPy)
def reference_norm(x, view, wview, weight=None, bias=None, eps=1e-5):
    """(y, mu, r) on the (N, G, K, S) ``view``; w and b on the broadcastable ``wview``."""
    xp, x4 = _xp(x), x.reshape(view)
    if not x.size:
        empty = xp.zeros(view[:2], x.dtype)
        return x.copy(), empty, empty.copy()
    mu = x4.mean(axis=(2, 3), keepdims=True)
    xhat = x4 - mu
    r = 1 / xp.sqrt((xhat * xhat).sum(axis=(2, 3), keepdims=True) / (view[2] * view[3]) + eps)
    xhat *= r
    y = xhat * weight.reshape(wview) if weight is not None else xhat
    if bias is not None:
        y = y + bias.reshape(wview)
    return y.reshape(x.shape), mu.reshape(view[:2]), r.reshape(view[:2])


def reference_norm_backward(x, gy, mu, r, view, wview, weight=None):
    """(gx, gw, gb) on the view (gw, gb of shape prod(wview), whether or not w, b exist)."""
    x4, gy4 = x.reshape(view), gy.reshape(view)
    axes = tuple(i for i, s in enumerate(wview) if s == 1)
    if not x.size:
        zeros = _xp(x).zeros(math.prod(wview), x.dtype)
        return gy.copy(), zeros, zeros.copy()
    mu, r = mu.reshape(view[:2] + (1, 1)), r.reshape(view[:2] + (1, 1))
    xhat = (x4 - mu) * r
    h = gy4 * weight.reshape(wview) if weight is not None else gy4
    m = view[2] * view[3]
    gx = r * (h - h.mean(axis=(2, 3), keepdims=True)
              - xhat * ((h * xhat).sum(axis=(2, 3), keepdims=True) / m))
    gw, gb = (gy4 * xhat).sum(axis=axes), gy4.sum(axis=axes)
    return gx.reshape(x.shape), gw.reshape(-1), gb.reshape(-1)


def reference_group_norm_act(x, num_groups, weight=None, bias=None, shift=None, eps=1e-5,
                             activation="silu"):
    """(y, mu, r): the group norm, + shift, then f, as the engine's unfused ops compute it."""
    view = _groups("group_norm_act", x, num_groups)
    z, mu, r = reference_norm(x, view, (1,) + view[1:3] + (1,), weight, bias, eps)
    a = _add_shift(z, shift)
    y = a if activation is None else reference_bias_act(a, None, activation)
    return y.astype(_act_dtype(x, weight, bias, shift), copy=False), mu, r


def reference_group_norm_act_backward(x, gy, mu, r, num_groups, weight=None, bias=None,
                                      shift=None, activation="silu"):
    """(gx, gw, gb, gshift) of ``reference_group_norm_act`` (gshift None without a shift)."""
    view = _groups("group_norm_act_backward", x, num_groups)
    wview = (1,) + view[1:3] + (1,)
    xhat = (x.reshape(view) - mu.reshape(view[:2] + (1, 1))) * r.reshape(view[:2] + (1, 1))
    z = xhat * weight.reshape(wview) if weight is not None else xhat
    if bias is not None:
        z = z + bias.reshape(wview)
    a = _add_shift(z.reshape(x.shape), shift)
    ga = gy if activation is None else reference_bias_act_backward(a, gy, None, activation)[0]
    dtype = _act_dtype(x, weight, bias, shift, gy)
    gx, gw, gb = reference_norm_backward(x, ga.astype(dtype, copy=False), mu, r, view, wview,
                                         weight)
    if shift is None:
        return gx.astype(dtype, copy=False), gw, gb, None
    gshift = ga.reshape(x.shape[:2] + (math.prod(x.shape[2:]),)).sum(axis=2)
    gshift = gshift.sum(axis=0, keepdims=True) if shift.shape[0] != x.shape[0] else gshift
    return gx.astype(dtype, copy=False), gw, gb, gshift.astype(dtype, copy=False)


def _add_shift(z, shift):
    """z + shift[n, c] broadcast over z's trailing axes."""
    if shift is None:
        return z
    return z + shift.reshape(shift.shape + (1,) * (z.ndim - 2))


def _act_dtype(*arrays):
    return np.result_type(*(a for a in arrays if a is not None))


# ------------------------------------------------------------------ per-element maps
def normalize_element(x, mu, r, w, b):
    return (x - mu) * r * w + b


def norm_grad_element(x, gy, mu, r, w, mean_h, mean_hx):
    return r * (gy * w - mean_h - (x - mu) * r * mean_hx)


def group_stats(x, q, eps):
    """(mean, 1 / sqrt(var + eps)) of group x[q] (K, S), the sums in float64, two passes."""
    K, S = x.shape[1], x.shape[2]
    total = 0.0
    for k in range(K):
        for s in range(S):
            total += x[q, k, s]
    mean = total / (K * S)
    sq = 0.0
    for k in range(K):
        for s in range(S):
            d = x[q, k, s] - mean
            sq += d * d
    return mean, 1.0 / math.sqrt(sq / (K * S) + eps)


_norm_cpu, _norm_gpu = both(normalize_element)
_stats_cpu, _stats_gpu = both(group_stats)
_norm_grad_cpu, _norm_grad_gpu = both(norm_grad_element)


# ------------------------------------------------------------------ Numba CPU
# x, gy, out: (Q, K, S) with Q = N G groups; w, b: (G, K, Sw), Sw = S (per entry) or 1
# (per channel); entry s of channel k uses w[g, k, s * step], step = 1 if Sw == S else 0.
@lazy_njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def _numba_norm(x, w, b, eps, out, mu, rstd):
    Q, K, S = x.shape
    G, step = w.shape[0], 1 if w.shape[2] == S else 0
    for q in prange(Q):
        g = q % G
        mu[q], rstd[q] = _stats_cpu(x, q, eps)
        m, rr = mu[q], rstd[q]              # the stored (rounded) values, as the backward sees
        for k in range(K):
            for s in range(S):
                out[q, k, s] = _norm_cpu(x[q, k, s], m, rr, w[g, k, s * step], b[g, k, s * step])


@lazy_njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def _numba_norm_backward(x, gy, mu, rstd, w, out, gw, gb):
    """out = gx; gw[task], gb[task] = the task's float64 partial sums of gy x_hat and gy.
    With per-channel parameters (group norm) the sums over a channel's S entries run in
    scalars and reach gw, gb once per channel: an update of gw[g, k, 0] per entry is a chain
    through memory that keeps the loop from vectorising (8 groups, float32, one core, CPU
    clock, median of 40: 64x32x8x8 0.33 against 0.58 ms with per-entry updates, NumPy 0.77;
    64x64x8x8 0.58 against 1.08, NumPy 2.5)."""
    Q, K, S = x.shape
    G, step = w.shape[0], 1 if w.shape[2] == S else 0
    tasks = gw.shape[0]
    per = (Q + tasks - 1) // tasks
    for task in prange(tasks):
        pw, pb = gw[task], gb[task]
        pw[:] = 0.0
        pb[:] = 0.0
        for q in range(task * per, min(Q, task * per + per)):
            g, m, r = q % G, mu[q], rstd[q]
            sh, shx = 0.0, 0.0
            for k in range(K):
                if step == 0:
                    cw, cb = 0.0, 0.0
                    for s in range(S):
                        xh = (x[q, k, s] - m) * r
                        cw += gy[q, k, s] * xh
                        cb += gy[q, k, s]
                    wk = w[g, k, 0]
                    pw[g, k, 0] += cw
                    pb[g, k, 0] += cb
                    sh += wk * cb
                    shx += wk * cw
                else:
                    for s in range(S):
                        xh = (x[q, k, s] - m) * r
                        h = gy[q, k, s] * w[g, k, s]
                        sh += h
                        shx += h * xh
                        pw[g, k, s] += gy[q, k, s] * xh
                        pb[g, k, s] += gy[q, k, s]
            mh, mhx = sh / (K * S), shx / (K * S)
            for k in range(K):
                for s in range(S):
                    out[q, k, s] = _norm_grad_cpu(x[q, k, s], gy[q, k, s], m, r,
                                                  w[g, k, s * step], mh, mhx)


# Group norm + shift + activation: x, gy, out (Q, K, S), Q = N G groups; w, b (G, K); shift
# (Ns, G, K), Ns = 1 (one row for the whole batch) or N; kind: an index into KINDS, or -1
# for no activation.  One prange iteration per group; the per-(group, channel) sums go to
# cw, cb (Q, K), float64, each written by one iteration.
@lazy_njit(inline="always", fastmath=FASTMATH)
def _act_row(xr, o, m, r, w, b, shift, kind):
    """o = f(x_hat w + b + shift) for the entries xr of one channel of one group."""
    for s in range(xr.shape[0]):
        o[s] = act_cpu(_norm_cpu(xr[s], m, r, w, b) + shift, kind)


@lazy_njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def _numba_norm_act(x, w, b, shift, kind, eps, out, mu, rstd):
    Q, K, S = x.shape
    G, every = w.shape[0], shift.shape[0] > 1
    for q in prange(Q):
        g, n = q % G, q // G if every else 0
        mu[q], rstd[q] = _stats_cpu(x, q, eps)
        m, rr = mu[q], rstd[q]              # the stored (rounded) values, as the backward sees
        for k in range(K):
            wk, bk, sk, xr, o = w[g, k], b[g, k], shift[n, g, k], x[q, k], out[q, k]
            if kind == SILU:        # a constant kind per call, as in the backward
                _act_row(xr, o, m, rr, wk, bk, sk, SILU)
            elif kind == RELU:
                _act_row(xr, o, m, rr, wk, bk, sk, RELU)
            elif kind == GELU:
                _act_row(xr, o, m, rr, wk, bk, sk, GELU)
            elif kind == GELU_TANH:
                _act_row(xr, o, m, rr, wk, bk, sk, GELU_TANH)
            else:
                for s in range(S):
                    o[s] = _norm_cpu(xr[s], m, rr, wk, bk) + sk


@lazy_njit(inline="always", fastmath=FASTMATH)
def _act_grad_row(xr, gr, o, m, r, w, b, shift, kind):
    """o = gr f'(a), a = x_hat w + b + shift recomputed from xr.  Called with ``kind`` a
    constant: with the kind known only at run time this loop ran 1.6x slower (64x16x8x8
    float32, one thread: 0.265 against 0.17 ms for the whole backward), LLVM keeping it out
    of the 8 float32 lanes."""
    for s in range(xr.shape[0]):
        o[s] = act_grad_cpu(_norm_cpu(xr[s], m, r, w, b) + shift, gr[s], kind)


@lazy_njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def _numba_norm_act_backward(x, gy, mu, rstd, w, b, shift, kind, out, cw, cb):
    """out = gx; cw[q, k] = sum_s ga x_hat, cb[q, k] = sum_s ga, ga = gy f'(a).  ga goes to
    out first (a float32 loop of 8 lanes; the float64 sums run in a loop of their own, as in
    ``elementwise._row_grad``), then out is overwritten by gx."""
    Q, K, S = x.shape
    G, every = w.shape[0], shift.shape[0] > 1
    for q in prange(Q):
        g, n = q % G, q // G if every else 0
        m, r = mu[q], rstd[q]
        sh, shx = 0.0, 0.0
        for k in range(K):
            wk, bk, sk = w[g, k], b[g, k], shift[n, g, k]
            xr, gr, o = x[q, k], gy[q, k], out[q, k]
            if kind == SILU:        # one call per kind, each with a constant kind (above)
                _act_grad_row(xr, gr, o, m, r, wk, bk, sk, SILU)
            elif kind == RELU:
                _act_grad_row(xr, gr, o, m, r, wk, bk, sk, RELU)
            elif kind == GELU:
                _act_grad_row(xr, gr, o, m, r, wk, bk, sk, GELU)
            elif kind == GELU_TANH:
                _act_grad_row(xr, gr, o, m, r, wk, bk, sk, GELU_TANH)
            else:
                o[:] = gr
            sw, sb = 0.0, 0.0
            for s in range(S):
                sw += o[s] * ((xr[s] - m) * r)
                sb += o[s]
            cw[q, k], cb[q, k] = sw, sb
            sh += wk * sb
            shx += wk * sw
        # in x's dtype: float64 means would turn the float32 loop below to 4-lane float64
        mh, mhx = x.dtype.type(sh / (K * S)), x.dtype.type(shx / (K * S))
        for k in range(K):
            wk, xr, o = w[g, k], x[q, k], out[q, k]
            for s in range(S):
                o[s] = _norm_grad_cpu(xr[s], o[s], m, r, wk, mh, mhx)


# ------------------------------------------------------------------ Numba CUDA
@lazy_cuda_jit()
def _cuda_norm(x, w, b, eps, out, mu, rstd):
    q = cuda.grid(1)
    Q, K, S = x.shape
    if q < Q:
        g, step = q % w.shape[0], 1 if w.shape[2] == S else 0
        mu[q], rstd[q] = _stats_gpu(x, q, eps)
        m, rr = mu[q], rstd[q]
        for k in range(K):
            for s in range(S):
                out[q, k, s] = _norm_gpu(x[q, k, s], m, rr, w[g, k, s * step], b[g, k, s * step])


@lazy_cuda_jit()
def _cuda_norm_backward(x, gy, mu, rstd, w, out):
    q = cuda.grid(1)
    Q, K, S = x.shape
    if q < Q:
        g, step = q % w.shape[0], 1 if w.shape[2] == S else 0
        m, r = mu[q], rstd[q]
        sh, shx = 0.0, 0.0
        for k in range(K):
            for s in range(S):
                h = gy[q, k, s] * w[g, k, s * step]
                sh += h
                shx += h * (x[q, k, s] - m) * r
        mh, mhx = sh / (K * S), shx / (K * S)
        for k in range(K):
            for s in range(S):
                out[q, k, s] = _norm_grad_gpu(x[q, k, s], gy[q, k, s], m, r, w[g, k, s * step],
                                              mh, mhx)


@lazy_cuda_jit()
def _cuda_norm_param_grads(x, gy, mu, rstd, gw, gb):
    """gw[g, k, j], gb[g, k, j]: sums over the batch (and over s when Sw = 1)."""
    i = cuda.grid(1)
    Q, K, S = x.shape
    G, Sw = gw.shape[0], gw.shape[2]
    if i < G * K * Sw:
        g, k, j = i // (K * Sw), (i // Sw) % K, i % Sw
        s0, s1 = (j, j + 1) if Sw == S else (0, S)
        sw, sb = 0.0, 0.0
        for q in range(g, Q, G):
            m, r = mu[q], rstd[q]
            for s in range(s0, s1):
                sw += gy[q, k, s] * (x[q, k, s] - m) * r
                sb += gy[q, k, s]
        gw[g, k, j], gb[g, k, j] = sw, sb


_numba_norm_act_serial = serial_twin(_numba_norm_act)
_numba_norm_act_backward_serial = serial_twin(_numba_norm_act_backward)


@lazy_cuda_jit()
def _cuda_norm_act(x, w, b, shift, kind, eps, out, mu, rstd):
    """One thread per group, as ``_numba_norm_act``."""
    q = cuda.grid(1)
    Q, K, S = x.shape
    if q < Q:
        G = w.shape[0]
        g, n = q % G, q // G if shift.shape[0] > 1 else 0
        mu[q], rstd[q] = _stats_gpu(x, q, eps)
        m, rr = mu[q], rstd[q]
        for k in range(K):
            for s in range(S):
                a = _norm_gpu(x[q, k, s], m, rr, w[g, k], b[g, k]) + shift[n, g, k]
                out[q, k, s] = a if kind < 0 else act_gpu(a, kind)


@lazy_cuda_jit()
def _cuda_norm_act_backward(x, gy, mu, rstd, w, b, shift, kind, out, cw, cb):
    """One thread per group, as ``_numba_norm_act_backward``."""
    q = cuda.grid(1)
    Q, K, S = x.shape
    if q < Q:
        G = w.shape[0]
        g, n = q % G, q // G if shift.shape[0] > 1 else 0
        m, r = mu[q], rstd[q]
        sh, shx = 0.0, 0.0
        for k in range(K):
            sw, sb = 0.0, 0.0
            for s in range(S):
                ga = gy[q, k, s]
                if kind >= 0:
                    a = _norm_gpu(x[q, k, s], m, r, w[g, k], b[g, k]) + shift[n, g, k]
                    ga = act_grad_gpu(a, ga, kind)
                out[q, k, s] = ga
                sw += ga * (x[q, k, s] - m) * r
                sb += ga
            cw[q, k], cb[q, k] = sw, sb
            sh += w[g, k] * sb
            shx += w[g, k] * sw
        mh, mhx = sh / (K * S), shx / (K * S)
        for k in range(K):
            for s in range(S):
                out[q, k, s] = _norm_grad_gpu(x[q, k, s], out[q, k, s], m, r, w[g, k], mh, mhx)


# ------------------------------------------------------------------ channels-last (N, S, C)
# group_norm_act on x (N, C, *) whose memory is (N, *, C) (PyTorch's channels_last): x, gy
# and out as (N, S, C) rows of C channels, group g the run of K = C / G channels g K ..
# g K + K - 1 inside each row; w, b (C,), shift (Ns, C), mu and rstd (N, G).  One prange
# iteration per sample: the sums run per channel along the rows (a unit-stride loop over C
# that vectorises, in float64), and the groups' sums add K of them; the output pass reads
# each channel's mu, r, w, b and shift from arrays of length C.
@lazy_njit(inline="always", fastmath=FASTMATH)
def _act_row_cl(xr, o, m, r, w, b, shift, kind):
    """o = f(x_hat w + b + shift) over one row of C channels (all operands per channel)."""
    for c in range(xr.shape[0]):
        o[c] = act_cpu(_norm_cpu(xr[c], m[c], r[c], w[c], b[c]) + shift[c], kind)


@lazy_njit(inline="always", fastmath=FASTMATH)
def _act_grad_row_cl(xr, gr, o, m, r, w, b, shift, kind):
    """o = gr f'(a), a recomputed, over one row of C channels; ``kind`` a constant (as in
    ``_act_grad_row``)."""
    for c in range(xr.shape[0]):
        o[c] = act_grad_cpu(_norm_cpu(xr[c], m[c], r[c], w[c], b[c]) + shift[c], gr[c], kind)


@lazy_njit(inline="always", fastmath=FASTMATH)
def _per_channel(stat, n, K, out):
    """out[c] = stat[n, c // K]: a group's value repeated over its K channels."""
    for c in range(out.shape[0]):
        out[c] = stat[n, c // K]


@lazy_njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def _numba_norm_act_cl(x, w, b, shift, groups, kind, eps, out, mu, rstd):
    N, S, C = x.shape
    K, every = C // groups, shift.shape[0] > 1
    sums = np.empty((N, 2, C))                  # per sample: float64 sums and means
    chans = np.empty((N, 2, C), x.dtype)        # per sample: mu and r of each channel
    for n in prange(N):
        xn, on, sn = x[n], out[n], shift[n] if every else shift[0]
        acc, mean = sums[n, 0], sums[n, 1]
        acc[:] = 0.0
        for s in range(S):
            for c in range(C):
                acc[c] += xn[s, c]
        for g in range(groups):
            total = 0.0
            for k in range(g * K, g * K + K):
                total += acc[k]
            for k in range(g * K, g * K + K):
                mean[k] = total / (K * S)
        acc[:] = 0.0
        for s in range(S):
            for c in range(C):
                d = xn[s, c] - mean[c]
                acc[c] += d * d
        for g in range(groups):
            sq = 0.0
            for k in range(g * K, g * K + K):
                sq += acc[k]
            mu[n, g], rstd[n, g] = mean[g * K], 1.0 / math.sqrt(sq / (K * S) + eps)
        m, rr = chans[n, 0], chans[n, 1]        # the stored (rounded) values
        _per_channel(mu, n, K, m)
        _per_channel(rstd, n, K, rr)
        if kind == SILU:            # a constant kind per call, as in ``_numba_norm_act``
            for s in range(S):
                _act_row_cl(xn[s], on[s], m, rr, w, b, sn, SILU)
        elif kind == RELU:
            for s in range(S):
                _act_row_cl(xn[s], on[s], m, rr, w, b, sn, RELU)
        elif kind == GELU:
            for s in range(S):
                _act_row_cl(xn[s], on[s], m, rr, w, b, sn, GELU)
        elif kind == GELU_TANH:
            for s in range(S):
                _act_row_cl(xn[s], on[s], m, rr, w, b, sn, GELU_TANH)
        else:
            for s in range(S):
                for c in range(C):
                    on[s, c] = _norm_cpu(xn[s, c], m[c], rr[c], w[c], b[c]) + sn[c]


@lazy_njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def _numba_norm_act_backward_cl(x, gy, mu, rstd, w, b, shift, groups, kind, out, cw, cb):
    """out = gx; cw[n, c] = sum_s ga x_hat, cb[n, c] = sum_s ga (float64, zeroed by the
    caller), ga = gy f'(a) written to out first, as in ``_numba_norm_act_backward``."""
    N, S, C = x.shape
    K, every = C // groups, shift.shape[0] > 1
    chans = np.empty((N, 4, C), x.dtype)        # per sample: mu, r, mean(h), mean(h x_hat)
    for n in prange(N):
        xn, gn, on, sn = x[n], gy[n], out[n], shift[n] if every else shift[0]
        m, r, mh, mhx = chans[n, 0], chans[n, 1], chans[n, 2], chans[n, 3]
        _per_channel(mu, n, K, m)
        _per_channel(rstd, n, K, r)
        if kind == SILU:
            for s in range(S):
                _act_grad_row_cl(xn[s], gn[s], on[s], m, r, w, b, sn, SILU)
        elif kind == RELU:
            for s in range(S):
                _act_grad_row_cl(xn[s], gn[s], on[s], m, r, w, b, sn, RELU)
        elif kind == GELU:
            for s in range(S):
                _act_grad_row_cl(xn[s], gn[s], on[s], m, r, w, b, sn, GELU)
        elif kind == GELU_TANH:
            for s in range(S):
                _act_grad_row_cl(xn[s], gn[s], on[s], m, r, w, b, sn, GELU_TANH)
        else:
            on[:] = gn
        sw, sb = cw[n], cb[n]
        for s in range(S):
            for c in range(C):
                sw[c] += on[s, c] * ((xn[s, c] - m[c]) * r[c])
                sb[c] += on[s, c]
        # the group means of h = ga w and h x_hat, in x's dtype (as in the NCHW kernel)
        for g in range(groups):
            sh, shx = 0.0, 0.0
            for k in range(g * K, g * K + K):
                sh += w[k] * sb[k]
                shx += w[k] * sw[k]
            for k in range(g * K, g * K + K):
                mh[k], mhx[k] = sh / (K * S), shx / (K * S)
        for s in range(S):
            for c in range(C):
                on[s, c] = _norm_grad_cpu(xn[s, c], on[s, c], m[c], r[c], w[c], mh[c], mhx[c])


_numba_norm_act_cl_serial = serial_twin(_numba_norm_act_cl)
_numba_norm_act_backward_cl_serial = serial_twin(_numba_norm_act_backward_cl)


@lazy_cuda_jit()
def _cuda_norm_act_cl(x, w, b, shift, groups, kind, eps, out, mu, rstd):
    """One thread per (sample, group) of (N, S, C) rows, as ``_cuda_norm_act``."""
    q = cuda.grid(1)
    N, S, C = x.shape
    if q < N * groups:
        K = C // groups
        n, c0 = q // groups, (q % groups) * K
        ns = n if shift.shape[0] > 1 else 0
        total = 0.0
        for s in range(S):
            for c in range(c0, c0 + K):
                total += x[n, s, c]
        mean = total / (K * S)
        sq = 0.0
        for s in range(S):
            for c in range(c0, c0 + K):
                d = x[n, s, c] - mean
                sq += d * d
        mu[n, q % groups], rstd[n, q % groups] = mean, 1.0 / math.sqrt(sq / (K * S) + eps)
        m, rr = mu[n, q % groups], rstd[n, q % groups]
        for s in range(S):
            for c in range(c0, c0 + K):
                a = _norm_gpu(x[n, s, c], m, rr, w[c], b[c]) + shift[ns, c]
                out[n, s, c] = a if kind < 0 else act_gpu(a, kind)


@lazy_cuda_jit()
def _cuda_norm_act_backward_cl(x, gy, mu, rstd, w, b, shift, groups, kind, out, cw, cb):
    """One thread per (sample, group) of (N, S, C) rows, as ``_cuda_norm_act_backward``;
    cw, cb (N, C) zeroed by the caller."""
    q = cuda.grid(1)
    N, S, C = x.shape
    if q < N * groups:
        K = C // groups
        n, c0 = q // groups, (q % groups) * K
        ns = n if shift.shape[0] > 1 else 0
        m, r = mu[n, q % groups], rstd[n, q % groups]
        for s in range(S):
            for c in range(c0, c0 + K):
                ga = gy[n, s, c]
                if kind >= 0:
                    a = _norm_gpu(x[n, s, c], m, r, w[c], b[c]) + shift[ns, c]
                    ga = act_grad_gpu(a, ga, kind)
                out[n, s, c] = ga
                cw[n, c] += ga * (x[n, s, c] - m) * r
                cb[n, c] += ga
        sh, shx = 0.0, 0.0
        for c in range(c0, c0 + K):
            sh += w[c] * cb[n, c]
            shx += w[c] * cw[n, c]
        mh, mhx = sh / (K * S), shx / (K * S)
        for s in range(S):
            for c in range(c0, c0 + K):
                out[n, s, c] = _norm_grad_gpu(x[n, s, c], out[n, s, c], m, r, w[c], mh, mhx)

# ------------------------------------------------------------------ Numba CPU, layer norm
# The layer-norm case (G = K = 1, w and b per entry) on rows (R, D): the generic kernels
# above read w[g, k, s * step] with a step known only at run time and add into gw, gb in
# the same loop, so their row loops stay scalar; here each pass over a row is a unit-stride
# loop that vectorises.  TransformerLM's (4096, 128) float32 rows, one thread: forward 0.78 ->
# 0.30 ms, backward 2.03 -> 0.69 ms (the NumPy reference: 1.5 and 3.1 ms).
@lazy_njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def _numba_layer_norm(x, w, b, eps, out, mu, rstd):
    R, D = x.shape
    rows = max(1, BLOCK // D)
    for task in prange((R + rows - 1) // rows):
        for r in range(task * rows, min(R, task * rows + rows)):
            row, o = x[r], out[r]
            total = 0.0
            for d in range(D):
                total += row[d]
            mean = total / D
            sq = 0.0
            for d in range(D):
                dev = row[d] - mean
                sq += dev * dev
            mu[r], rstd[r] = mean, 1.0 / math.sqrt(sq / D + eps)
            m, rr = mu[r], rstd[r]          # the stored (rounded) values, as the backward sees
            for d in range(D):
                o[d] = _norm_cpu(row[d], m, rr, w[d], b[d])


@lazy_njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def _numba_layer_norm_backward(x, gy, mu, rstd, w, out, gw, gb):
    """out = gx; gw[task], gb[task] = the task's float64 partial sums of gy x_hat and gy."""
    R, D = x.shape
    tasks = gw.shape[0]
    per = (R + tasks - 1) // tasks
    for task in prange(tasks):
        pw, pb = gw[task], gb[task]
        for d in range(D):
            pw[d] = 0.0
            pb[d] = 0.0
        for r in range(task * per, min(R, task * per + per)):
            row, g, o = x[r], gy[r], out[r]
            m, rr = mu[r], rstd[r]
            sh, shx = 0.0, 0.0
            for d in range(D):
                h = g[d] * w[d]
                sh += h
                shx += h * ((row[d] - m) * rr)
            for d in range(D):
                pw[d] += g[d] * ((row[d] - m) * rr)
                pb[d] += g[d]
            mh, mhx = sh / D, shx / D
            for d in range(D):
                o[d] = _norm_grad_cpu(row[d], g[d], m, rr, w[d], mh, mhx)


def _rows_case(path, view, wview):
    """True for the layer-norm layout on the Numba path: one group of one channel per row,
    weights per entry."""
    return path == "numba" and view[1] == view[2] == 1 and wview[3] == view[3]


# ------------------------------------------------------------------ drivers
def _params(xp, view, wview, weight, bias, dtype):
    """w, b as contiguous (G, K, Sw) arrays of ``dtype`` (ones, zeros where absent)."""
    shape = wview[1:]
    w = xp.ones(shape, dtype) if weight is None else weight.astype(dtype).reshape(shape)
    b = xp.zeros(shape, dtype) if bias is None else bias.astype(dtype).reshape(shape)
    return xp.ascontiguousarray(w), xp.ascontiguousarray(b)


def _forward(where, x, view, wview, weight, bias, eps, impl):
    path = choose(where, x, x.size, impl)
    if path == "reference":
        return reference_norm(x, view, wview, weight, bias, eps)
    xp = _xp(x)
    dtype = np.result_type(*(a for a in (x, weight, bias) if a is not None))
    x = x.astype(dtype, copy=False)
    out = xp.empty(x.shape, dtype)
    mu, rstd = xp.zeros(view[:2], dtype), xp.zeros(view[:2], dtype)
    if x.size:
        q = view[0] * view[1]
        w, b = _params(xp, view, wview, weight, bias, dtype)
        if _rows_case(path, view, wview):
            launch(path, _numba_layer_norm, None, q, 0,
                   xp.ascontiguousarray(x).reshape(q, view[3]), w.reshape(-1), b.reshape(-1),
                   dtype.type(eps), out.reshape(q, view[3]), mu.reshape(q), rstd.reshape(q))
        else:
            launch(path, _numba_norm, _cuda_norm, q, CUDA_THREADS,
                   xp.ascontiguousarray(x).reshape(q, view[2], view[3]), w, b,
                   dtype.type(eps), out.reshape(q, view[2], view[3]), mu.reshape(q),
                   rstd.reshape(q))
    return out, mu, rstd


def _backward(where, x, gy, mu, rstd, view, wview, weight, impl):
    path = choose(where, x, x.size, impl)
    if path == "reference":
        return reference_norm_backward(x, gy, mu, rstd, view, wview, weight)
    xp = _xp(x)
    dtype = np.result_type(*(a for a in (x, gy, weight) if a is not None))
    q, pshape = view[0] * view[1], wview[1:]
    out = xp.empty(x.shape, dtype)
    args = [xp.ascontiguousarray(a, dtype=dtype).reshape(q, view[2], view[3]) for a in (x, gy)]
    args += [xp.ascontiguousarray(a, dtype=dtype).reshape(q) for a in (mu, rstd)]
    w = _params(xp, view, wview, weight, None, dtype)[0]
    fo = out.reshape(q, view[2], view[3])
    if path == "numba":
        tasks = max(1, min(TASKS, q))
        gw, gb = np.zeros((tasks,) + pshape), np.zeros((tasks,) + pshape)
        if x.size and _rows_case(path, view, wview):
            launch(path, _numba_layer_norm_backward, None, q, 0,
                   *(a.reshape(q, view[3]) for a in args[:2]), *args[2:], w.reshape(-1),
                   fo.reshape(q, view[3]), gw.reshape(tasks, -1), gb.reshape(tasks, -1))
        elif x.size:
            launch(path, _numba_norm_backward, None, q, 0, *args, w, fo, gw, gb)
        gw, gb = gw.sum(axis=0).astype(dtype), gb.sum(axis=0).astype(dtype)
    else:
        gw, gb = xp.zeros(pshape, dtype), xp.zeros(pshape, dtype)
        if x.size:
            launch(path, None, _cuda_norm_backward, q, CUDA_THREADS, *args, w, fo)
            launch(path, None, _cuda_norm_param_grads, gw.size, CUDA_THREADS, *args, gw, gb)
    return out, gw.reshape(-1), gb.reshape(-1)


# ------------------------------------------------------------------ public API
def _layer_view(x):
    return (math.prod(x.shape[:-1]), 1, 1, x.shape[-1]), (1, 1, 1, x.shape[-1])


def layer_norm(x, weight=None, bias=None, eps=1e-5, impl=None):
    """(y, mu, r) of layer normalisation over x's last axis (D): y = (x - mu) r w + b,
    r = 1 / sqrt(var + eps) (biased variance); mu and r have shape x.shape[:-1]."""
    _check("layer_norm", x, weight, bias, x.shape[-1:], eps)
    view, wview = _layer_view(x)
    y, mu, r = _forward("layer_norm", x, view, wview, weight, bias, eps, impl)
    return y, mu.reshape(x.shape[:-1]), r.reshape(x.shape[:-1])


def layer_norm_backward(x, gy, mu, rstd, weight=None, impl=None):
    """(gx, gw, gb) of ``layer_norm`` at x (mu, rstd from its forward): gx = r (h - mean(h)
    - x_hat mean(h x_hat)), h = gy w; gw = sum gy x_hat, gb = sum gy over the leading axes."""
    lead = x.shape[:-1]
    _check("layer_norm_backward", x, weight, None, x.shape[-1:], 0.0, gy,
           (("mu", mu, lead), ("rstd", rstd, lead)))
    view, wview = _layer_view(x)
    return _backward("layer_norm_backward", x, gy, mu, rstd, view, wview, weight, impl)


def group_norm(x, num_groups, weight=None, bias=None, eps=1e-5, impl=None):
    """(y, mu, r) of group normalisation of x (N, C, *) over ``num_groups`` groups of C / G
    channels: y = (x - mu_g) r_g w_c + b_c; mu and r have shape (N, G)."""
    view = _groups("group_norm", x, num_groups)
    _check("group_norm", x, weight, bias, x.shape[1:2], eps)
    return _forward("group_norm", x, view, (1,) + view[1:3] + (1,), weight, bias, eps, impl)


def group_norm_backward(x, gy, mu, rstd, num_groups, weight=None, impl=None):
    """(gx, gw, gb) of ``group_norm`` at x: gx as for ``layer_norm_backward`` per group,
    gw_c = sum gy x_hat and gb_c = sum gy over the batch and the entries of channel c."""
    view = _groups("group_norm_backward", x, num_groups)
    _check("group_norm_backward", x, weight, None, x.shape[1:2], 0.0, gy,
           (("mu", mu, view[:2]), ("rstd", rstd, view[:2])))
    return _backward("group_norm_backward", x, gy, mu, rstd, view, (1,) + view[1:3] + (1,),
                     weight, impl)


def _act_args(where, x, num_groups, weight, bias, shift, eps, activation, gy=None, stats=None):
    """Check the arguments of group_norm_act(_backward); (N, G, K, S) view and kind index."""
    view = _groups(where, x, num_groups)
    _check(where, x, weight, bias, x.shape[1:2], eps, gy,
           () if stats is None else (("mu", stats[0], view[:2]), ("rstd", stats[1], view[:2])))
    if shift is not None:
        check_float(where, shift=shift)
        if shift.shape not in ((x.shape[0], x.shape[1]), (1, x.shape[1])):
            raise ValueError(f"{where}: shift must have shape {x.shape[:2]} or "
                             f"{(1, x.shape[1])}, got {shift.shape}")
    if activation is not None and activation not in KINDS:
        raise ValueError(f"{where}: activation must be None or one of "
                         f"{', '.join(map(repr, KINDS))}, got {activation!r}")
    return view, -1 if activation is None else KINDS.index(activation)


def _act_operands(xp, view, weight, bias, shift, dtype):
    """w, b as contiguous (G, K) and the shift as (Ns, G, K) arrays of ``dtype``."""
    w, b = _params(xp, view, (1,) + view[1:3] + (1,), weight, bias, dtype)
    sh = xp.zeros((1,) + view[1:3], dtype) if shift is None else \
        xp.ascontiguousarray(shift, dtype=dtype).reshape((shift.shape[0],) + view[1:3])
    return w.reshape(view[1:3]), b.reshape(view[1:3]), sh


def group_norm_act(x, num_groups, weight=None, bias=None, shift=None, eps=1e-5,
                   activation="silu", impl=None):
    """(y, mu, r) of y = f(x_hat w_c + b_c + shift[n, c]) for x (N, C, *), x_hat the group
    norm over ``num_groups`` groups, shift (N, C) or (1, C) or None, f the ``activation``
    (one of ``elementwise.KINDS``, or None); mu and r have shape (N, G).  y has x's memory
    layout: an x whose memory is channels-last (``channels_last(x)``) gives such a y."""
    where = "group_norm_act"
    view, kind = _act_args(where, x, num_groups, weight, bias, shift, eps, activation)
    path = choose(where, x, x.size, impl)
    last = channels_last(x)
    if path == "reference":
        y, mu, r = reference_group_norm_act(x, num_groups, weight, bias, shift, eps, activation)
        return (to_channels_last(y) if last else y), mu, r
    xp, dtype = _xp(x), _act_dtype(x, weight, bias, shift)
    mu, rstd = xp.zeros(view[:2], dtype), xp.zeros(view[:2], dtype)
    w, b, sh = _act_operands(xp, view, weight, bias, shift, dtype)
    serial = x.size < PARALLEL_MIN[0]
    if last:
        rows = _rows(xp, x, dtype)
        out = xp.empty(rows.shape, dtype)
        if x.size:
            launch(path, _numba_norm_act_cl_serial if serial else _numba_norm_act_cl,
                   _cuda_norm_act_cl, view[0] * view[1], CUDA_THREADS, rows, w.reshape(-1),
                   b.reshape(-1), sh.reshape(sh.shape[0], -1), view[1], kind,
                   dtype.type(eps), out, mu, rstd)
        return _from_rows(xp, out, x.shape), mu, rstd
    out = xp.empty(x.shape, dtype)
    if x.size:
        q, groups = view[0] * view[1], view[1:]
        launch(path, _numba_norm_act_serial if serial else _numba_norm_act, _cuda_norm_act, q,
               CUDA_THREADS,
               xp.ascontiguousarray(x, dtype=dtype).reshape(q, *groups[1:]), w, b, sh, kind,
               dtype.type(eps), out.reshape(q, *groups[1:]), mu.reshape(q), rstd.reshape(q))
    return out, mu, rstd


def group_norm_act_backward(x, gy, mu, rstd, num_groups, weight=None, bias=None, shift=None,
                            activation="silu", impl=None):
    """(gx, gw, gb, gshift) of ``group_norm_act`` at x (mu, rstd from its forward): with
    ga = gy f'(a), the group norm's backward on ga, and gshift = ga summed over each
    channel's entries (and over the batch for a one-row shift; None without a shift).  gx
    has x's memory layout; gy may have either (it is copied to x's if it differs)."""
    where = "group_norm_act_backward"
    view, kind = _act_args(where, x, num_groups, weight, bias, shift, 0.0, activation, gy,
                           (mu, rstd))
    path = choose(where, x, x.size, impl)
    last = channels_last(x)
    if path == "reference":
        gx, *grads = reference_group_norm_act_backward(x, gy, mu, rstd, num_groups, weight,
                                                       bias, shift, activation)
        return (to_channels_last(gx) if last else gx, *grads)
    xp, dtype = _xp(x), _act_dtype(x, gy, weight, bias, shift)
    q, (n, c) = view[0] * view[1], x.shape[:2]
    cw, cb = xp.zeros((n, c)), xp.zeros((n, c))
    operands = _act_operands(xp, view, weight, bias, shift, dtype)
    stats = [xp.ascontiguousarray(a, dtype=dtype) for a in (mu, rstd)]
    serial = x.size < PARALLEL_MIN[1]
    if last:
        fx, fg = _rows(xp, x, dtype), _rows(xp, gy, dtype)
        out = xp.empty(fx.shape, dtype)
        w, b, sh = operands
        if x.size:
            launch(path,
                   _numba_norm_act_backward_cl_serial if serial else _numba_norm_act_backward_cl,
                   _cuda_norm_act_backward_cl, q, CUDA_THREADS, fx, fg, *stats,
                   w.reshape(-1), b.reshape(-1), sh.reshape(sh.shape[0], -1), view[1], kind,
                   out, cw, cb)
        out = _from_rows(xp, out, x.shape)
    else:
        out = xp.empty(x.shape, dtype)
        if x.size:
            fx, fg = (xp.ascontiguousarray(a, dtype=dtype).reshape(q, view[2], view[3])
                      for a in (x, gy))
            launch(path,
                   _numba_norm_act_backward_serial if serial else _numba_norm_act_backward,
                   _cuda_norm_act_backward, q, CUDA_THREADS,
                   fx, fg, *(a.reshape(q) for a in stats), *operands, kind,
                   out.reshape(q, view[2], view[3]), cw.reshape(q, view[2]),
                   cb.reshape(q, view[2]))
    gw, gb = cw.sum(axis=0).astype(dtype), cb.sum(axis=0).astype(dtype)
    if shift is None:
        return out, gw, gb, None
    gshift = cb if shift.shape[0] == n else cb.sum(axis=0, keepdims=True)
    return out, gw, gb, gshift.astype(dtype)


# ------------------------------------------------------------------ channels-last layout
def _rows(xp, a, dtype):
    """a (N, C, *) as (N, S, C) rows of ``dtype``: a view of channels-last memory, else a
    copy."""
    m = xp.ascontiguousarray(a.transpose(channels_to_last(a.ndim)), dtype=dtype)
    return m.reshape(a.shape[0], -1, a.shape[1])


def _from_rows(xp, rows, shape):
    """(N, S, C) rows as the (N, C, *) view of ``shape``."""
    return rows.reshape((shape[0],) + shape[2:] + (shape[1],)) \
        .transpose(channels_to_second(len(shape)))
