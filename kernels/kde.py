"""Pairwise Gaussian log-sum-exp: the kernel behind KDE, leave-one-out CV and MMD.

For queries Q (m, d), data X (n, d), a bandwidth H = L L^T given by its lower-triangular
Cholesky factor L and log-weights log w_j,

    out_i = log sum_j w_j N(q_i; x_j, H)
          = logsumexp_j(log w_j - 0.5 ||L^-1 (q_i - x_j)||^2) - d/2 log(2 pi) - log|det L|,

(Parzen 1962; Silverman 1986, ch. 4).  Both point sets are whitened once by L^-1
(O((m + n) d^2)); the core then streams over X in tiles with an online log-sum-exp (running
max M_i and rescaled sum S_i per query; Milakov & Gimelshein 2018), accumulating in float64,
so memory stays O(m + n) and queries far from every data point keep a finite, exact result.

Implementations (pick one with ``impl=``): ``reference_core`` (vectorised NumPy/CuPy, row
chunks, the truth for tests), ``numba_core`` (``njit(parallel=True)`` over blocks of queries,
tiles of ``TILE`` points, the polynomial exp of ``_math``; from d = 4, distances in the
product form c_j + 2 q.x_j - ||q||^2 with 4 queries per pass over a tile, where the
coordinates are finite and their norms bounded, ``PRODUCT_MAX_NORM2``), ``cuda_core`` (one
thread per query).  All three take the whitened points and return float64.

This file is over 400 lines because the kernel's three implementations (NumPy reference,
Numba CPU with the direct and product forms, CUDA) sit side by side, as every kernel file's
do, and the KDE kernel is the one with two distance forms and a gradient.
"""
import math

import numpy as np

from . import _math
from ._dispatch import _xp, choose, launch, lazy_cuda_jit, lazy_njit, prange, register

cuda = None            # numba.cuda, bound by materialize(globals(), "cuda")
_expn, _fmax = _math.exp_nonpositive_cpu, _math.fmax
_lse_push_gpu, _lse_value_cpu = _math.lse_push_gpu, _math.lse_value_cpu
_lse_value_gpu = _math.lse_value_gpu
_reciprocal_gpu = _math.reciprocal_gpu

TILE = 512                    # points per tile: v (4 KiB) stays in L1
ROWS = 4                      # queries per prange block: enough blocks for 2 threads at m >= 8
# The product form (``_numba_core_product``) from 4 dimensions on, 4 queries per block
# sharing each load of a tile's coordinates: 1.17x the direct form at d = 4, 1.23x at 6,
# 1.3-1.55x at 8, 1.85-2.2x at 16 (n = m = 20,000, 2 threads, medians of 5 in several runs);
# with the gradient 1.1-1.4x at d = 4-16. Below 4 the direct form's one or two passes are all
# there is to save.
PRODUCT_MIN_D = 4
# ...and while max ||xs_j||^2 + max ||qs_i||^2 <= 2^10 (scaled, centred coordinates): each
# v_ij then carries an absolute error of at most (d + 2) u (|log w_j| + 2^11), u = 2^-53
# (2e-12 at d = 8), where the direct form's error is relative to the distance itself.
PRODUCT_MAX_NORM2 = 2.0 ** 10
SQRT2 = math.sqrt(2.0)
CUDA_THREADS = 128            # 4 warps per block; untuned: chosen by warp count;
                              # benchmarks/gpu_check.py tunes it
# work = m * n pairs; NumPy/Numba time ratio 0.75 at 20k pairs, 2.7 at 80k
register("log_kernel_sum", threshold=20_000)
register("log_kernel_sum_grad", threshold=20_000)


# ------------------------------------------------------------------ whitening and checks
def _as_cholesky(chol, d, where):
    """The lower-triangular factor L (d, d) for chol = None | scalar h | (d,) | (d, d)."""
    if chol is None:
        return None
    c = np.asarray(chol.get() if hasattr(chol, "get") else chol, dtype=np.float64)
    if c.ndim == 0:
        L = float(c) * np.eye(d)
    elif c.shape == (d,):
        L = np.diag(c)
    elif c.shape == (d, d):
        if np.any(np.triu(c, 1) != 0):
            raise ValueError(f"{where}: chol must be lower-triangular (a Cholesky factor)")
        L = c
    else:
        raise ValueError(f"{where}: chol must be None, a scalar, shape ({d},) or ({d}, {d}); "
                         f"got shape {c.shape}")
    if not np.all(np.isfinite(L)) or np.any(np.diag(L) <= 0):
        raise ValueError(f"{where}: chol must have a finite, positive diagonal")
    return L


def _prepare(Q, X, chol, log_weights, where):
    """Check inputs; return float64 whitened Qw (m, d), Xw (n, d), logw (n,), L, log|det L|."""
    for name, a in (("Q", Q), ("X", X)):
        if getattr(a, "ndim", None) != 2:
            raise ValueError(f"{where}: {name} must be a 2-D array (points, dims), "
                             f"got shape {getattr(a, 'shape', None)}")
    if Q.shape[1] != X.shape[1]:
        raise ValueError(f"{where}: Q and X must have the same number of columns, "
                         f"got {Q.shape[1]} and {X.shape[1]}")
    xp = _xp(Q)
    d, n = X.shape[1], X.shape[0]
    if log_weights is None:
        logw = xp.zeros(n)
    else:
        if getattr(log_weights, "shape", None) != (n,):
            raise ValueError(f"{where}: log_weights must have shape ({n},), "
                             f"got {getattr(log_weights, 'shape', None)}")
        logw = xp.ascontiguousarray(log_weights, dtype=xp.float64)
    L = _as_cholesky(chol, d, where)
    Qw, Xw = xp.asarray(Q, dtype=xp.float64), xp.asarray(X, dtype=xp.float64)
    if L is None:
        return xp.ascontiguousarray(Qw), xp.ascontiguousarray(Xw), logw, None, 0.0
    Linv = xp.asarray(np.linalg.inv(L))          # lower-triangular, d is small
    return (xp.ascontiguousarray(Qw @ Linv.T), xp.ascontiguousarray(Xw @ Linv.T), logw, L,
            float(np.sum(np.log(np.diag(L)))))


def _constant(d, logdet, normalize):
    return -0.5 * d * math.log(2 * math.pi) - logdet if normalize else 0.0


# ------------------------------------------------------------------ reference (NumPy/CuPy)
def reference_core(Qw, Xw, logw, exclude_self, want_grad):
    """logsumexp_j(logw_j - 0.5 ||qw_i - xw_j||^2) and, if asked, sum_j r_ij xw_j - qw_i.

    Rows are processed in chunks of about 2^20 pairs; squared distances are summed
    dimension by dimension from exact differences (no ||q||^2 + ||x||^2 - 2 q.x cancellation).
    """
    xp = _xp(Qw)
    m, n = Qw.shape[0], Xw.shape[0]
    out = xp.empty(m)
    grad = xp.empty_like(Qw) if want_grad else None
    rows = max(1, (1 << 20) // max(n, 1))
    for a in range(0, m, rows):
        b = min(m, a + rows)
        v = xp.broadcast_to(logw, (b - a, n)).copy()
        for k in range(Qw.shape[1]):
            v -= 0.5 * (Qw[a:b, k, None] - Xw[None, :, k]) ** 2
        if exclude_self:
            i = xp.arange(a, b)
            v[i - a, i] = -xp.inf
        vmax = v.max(axis=1, keepdims=True) if n else xp.full((b - a, 1), -xp.inf)
        shift = xp.where(xp.isfinite(vmax), vmax, 0.0)
        e = xp.exp(v - shift)
        s = e.sum(axis=1)
        with np.errstate(divide="ignore"):
            out[a:b] = xp.log(s) + shift[:, 0]
        if want_grad:
            with np.errstate(invalid="ignore", divide="ignore"):
                grad[a:b] = (e @ Xw) / s[:, None] - Qw[a:b]
    return out, grad


# ------------------------------------------------------------------ Numba CPU
# The passes take 1-D slices of the tile (rows of XsT, logw): indexing the 2-D array as
# XsT[k, t0 + j] inside the loop ran the distance pass 3.4x slower (measured, d = 2).
@lazy_njit(inline="always", fastmath=_math.FASTMATH)
def _dist_pass(v, x0, x1, lw, q0, q1, t, first, two):
    """One vectorised pass over the tile: v_j (= lw_j if ``first``) -= (q0 - x0_j)^2 and, if
    ``two``, -= (q1 - x1_j)^2 too: one or two dimensions.  Coordinates are pre-scaled by
    sqrt(1/2), so each dimension costs a subtraction and an FMA.
    """
    if two and first:
        for j in range(t):
            a, b = q0 - x0[j], q1 - x1[j]
            v[j] = lw[j] - a * a - b * b
    elif two:
        for j in range(t):
            a, b = q0 - x0[j], q1 - x1[j]
            v[j] = v[j] - a * a - b * b
    else:                                             # odd d: dimension 0 alone, first
        for j in range(t):
            a = q0 - x0[j]
            v[j] = lw[j] - a * a


@lazy_njit(inline="always", fastmath=_math.FASTMATH)
def _tile_max(v, t):
    """max(v[:t]) ignoring NaN, in four independent chains: without fast-math nnan LLVM does
    not vectorise a max reduction, but it packs these chains (measured 1.5x faster on the
    whole kernel than a max fused into the distance pass)."""
    m0 = m1 = m2 = m3 = -np.inf
    j = 0
    while j + 4 <= t:
        m0, m1 = _fmax(m0, v[j]), _fmax(m1, v[j + 1])
        m2, m3 = _fmax(m2, v[j + 2]), _fmax(m3, v[j + 3])
        j += 4
    for j in range(j, t):
        m0 = _fmax(m0, v[j])
    return _fmax(_fmax(m0, m1), _fmax(m2, m3))


@lazy_njit(inline="always", fastmath=_math.FASTMATH)
def _exp_sum(v, e32, t, M, f32):
    """sum_j exp(v_j - M), leaving the terms in v (float64) or, with ``f32``, in e32: the
    argument v_j - M is formed in float64, rounded to float32 for an 8-lane float32 exp, and
    the terms are summed in float64.  A NaN v_j (not the max) reaches the sum here."""
    s = 0.0
    if f32:
        for j in range(t):
            e32[j] = np.float32(v[j] - M)
        for j in range(t):
            e32[j] = _expn(e32[j])
        for j in range(t):
            s += np.float64(e32[j])
    else:
        for j in range(t):
            e = _expn(v[j] - M)
            v[j] = e
            s += e
    return s


@lazy_njit(inline="always", fastmath=_math.FASTMATH)
def _fold_tile(v, e32, t, M, S, f32):
    """One tile v[:t] into a query's running log-sum-exp (M, S): with T = max(M, max_j v_j),
    S <- S exp(M - T) + sum_j exp(v_j - T) (the terms left in v, or e32 with ``f32``).
    Returns (M, S, scale = exp(M_old - M), skipped): ``skipped`` when the tile's max, which
    ignores NaN, is -inf or +inf; the tile is then not summed and ``_scan`` looks into it."""
    tmax = _tile_max(v, t)
    if tmax == -np.inf or tmax == np.inf:
        return M, S, 1.0, True
    scale = 1.0
    if tmax > M:
        scale = math.exp(M - tmax)
        S *= scale
        M = tmax
    return M, S + _exp_sum(v, e32, t, M, f32), scale, False


@lazy_njit(inline="always")
def _scan(v, t):
    """(any NaN, any +inf) in v[:t]."""
    nan, posinf = False, False
    for j in range(t):
        nan |= v[j] != v[j]
        posinf |= v[j] == np.inf
    return nan, posinf


@lazy_njit(inline="always", fastmath=_math.FASTMATH)
def _accumulate(acc, XsT, t0, t, v, e32, f32):
    """acc_k += sum_j e_j xs_kj over the tile, e_j = exp(v_j - M) as ``_fold_tile`` left it
    (in v, or in e32 with ``f32``): the gradient's weighted sum of data points."""
    for k in range(acc.shape[0]):
        x, a = XsT[k, t0:t0 + t], 0.0
        if f32:
            for j in range(t):
                a += np.float64(e32[j]) * x[j]
        else:
            for j in range(t):
                a += v[j] * x[j]
        acc[k] += a


@lazy_njit(parallel=True, cache=True, fastmath=_math.FASTMATH)
def _numba_core(Qs, XsT, logw, skip_self, want_grad, f32, out, grad):
    """Per query i, per tile of TILE points: v_j = logw_j - ||qs_i - xs_j||^2 (coordinates
    scaled by sqrt(1/2); XsT is (d, n)) in vectorised passes of two dimensions (one first if
    d is odd), the tile max, the rescale S *= exp(M_old - M), then S += sum_j exp(v_j - M)
    with the polynomial exp (in float32 with ``f32``: ``_exp_sum``), and acc += sum_j
    exp(v_j - M) xs_j for the gradient, returned as sqrt(2) (acc / S - qs_i).  As in the
    reference, a NaN v_ij makes out_i NaN (through the sum, or found by a scan of a tile whose
    max, which ignores NaN, is -inf or +inf), a +inf one (and no NaN) makes it +inf, and the
    gradient of a non-finite out_i is NaN.
    """
    m, d, n = Qs.shape[0], XsT.shape[0], XsT.shape[1]
    rows = ROWS
    for blk in prange((m + rows - 1) // rows):
        v = np.empty(TILE)
        e32 = np.empty(TILE, dtype=np.float32)
        acc = np.zeros(d)
        for i in range(blk * rows, min(m, blk * rows + rows)):
            skip = i if skip_self else -1
            M, S = -np.inf, 0.0
            nan, posinf = False, False
            acc[:] = 0.0
            for t0 in range(0, n, TILE):
                t = min(n, t0 + TILE) - t0
                lw = logw[t0:t0 + t]
                k = d % 2
                if k == 1:
                    _dist_pass(v, XsT[0, t0:t0 + t], XsT[0, t0:t0 + t], lw, Qs[i, 0], 0.0, t,
                               True, False)
                while k < d:
                    _dist_pass(v, XsT[k, t0:t0 + t], XsT[k + 1, t0:t0 + t], lw, Qs[i, k],
                               Qs[i, k + 1], t, k == 0, True)
                    k += 2
                if t0 <= skip < t0 + t:               # leave-one-out: one tile per query
                    v[skip - t0] = -np.inf
                M, S, scale, skipped = _fold_tile(v, e32, t, M, S, f32)
                if skipped:
                    a, b = _scan(v, t)
                    nan, posinf = nan | a, posinf | b
                    continue
                if scale != 1.0:
                    for k in range(d):
                        acc[k] *= scale
                if want_grad:
                    _accumulate(acc, XsT, t0, t, v, e32, f32)
            out[i] = np.nan if nan else (np.inf if posinf else _lse_value_cpu(M, S))
            if want_grad:
                for k in range(d):
                    grad[i, k] = ((acc[k] / S - Qs[i, k]) * SQRT2 if math.isfinite(out[i])
                                  else np.nan)


@lazy_njit(inline="always", fastmath=_math.FASTMATH)
def _dot_pass(v0, v1, v2, v3, x0, x1, x2, x3, c, q, k, t, first):
    """v_r[j] (= c_j if ``first``) += sum_{l < 4} q[r, k + l] x_l[j] for the block's 4 queries
    r: each coordinate of a point is loaded once for the 4 queries (register blocking)."""
    a0, a1, a2, a3 = q[0, k], q[0, k + 1], q[0, k + 2], q[0, k + 3]
    b0, b1, b2, b3 = q[1, k], q[1, k + 1], q[1, k + 2], q[1, k + 3]
    c0, c1, c2, c3 = q[2, k], q[2, k + 1], q[2, k + 2], q[2, k + 3]
    d0, d1, d2, d3 = q[3, k], q[3, k + 1], q[3, k + 2], q[3, k + 3]
    if first:
        for j in range(t):
            y0, y1, y2, y3, cj = x0[j], x1[j], x2[j], x3[j], c[j]
            v0[j] = cj + a0 * y0 + a1 * y1 + a2 * y2 + a3 * y3
            v1[j] = cj + b0 * y0 + b1 * y1 + b2 * y2 + b3 * y3
            v2[j] = cj + c0 * y0 + c1 * y1 + c2 * y2 + c3 * y3
            v3[j] = cj + d0 * y0 + d1 * y1 + d2 * y2 + d3 * y3
    else:
        for j in range(t):
            y0, y1, y2, y3 = x0[j], x1[j], x2[j], x3[j]
            v0[j] += a0 * y0 + a1 * y1 + a2 * y2 + a3 * y3
            v1[j] += b0 * y0 + b1 * y1 + b2 * y2 + b3 * y3
            v2[j] += c0 * y0 + c1 * y1 + c2 * y2 + c3 * y3
            v3[j] += d0 * y0 + d1 * y1 + d2 * y2 + d3 * y3


@lazy_njit(parallel=True, cache=True, fastmath=_math.FASTMATH)
def _numba_core_product(Q2, XsT, c, qq, skip_self, want_grad, f32, out, grad):
    """``_numba_core`` in the product form
    v_ij = logw_j - ||qs_i - xs_j||^2 = c_j + 2 qs_i . xs_j - ||qs_i||^2,  c_j = logw_j - ||xs_j||^2:
    per block of 4 queries (Q2 = 2 qs, rows and columns zero-padded to multiples of 4) and
    tile, d/4 passes of ``_dot_pass``, then per query the direct form's tile fold and gradient
    sum on c_j + 2 qs_i . xs_j (the constant -||qs_i||^2 = -qq_i is added to out_i at the
    end; it cancels from the responsibilities). Callers check that every coordinate is
    finite and the norms small (``PRODUCT_MAX_NORM2``).
    """
    m, d, n = Q2.shape[0], XsT.shape[0], XsT.shape[1]
    for blk in prange(m // 4):
        v = np.empty((4, TILE))
        e32 = np.empty(TILE, dtype=np.float32)
        acc = np.zeros((4, d))
        M, S = np.full(4, -np.inf), np.zeros(4)
        nan, posinf = np.zeros(4, dtype=np.bool_), np.zeros(4, dtype=np.bool_)
        q = Q2[4 * blk:4 * blk + 4]
        for t0 in range(0, n, TILE):
            t = min(n, t0 + TILE) - t0
            for k in range(0, d, 4):
                _dot_pass(v[0], v[1], v[2], v[3], XsT[k, t0:t0 + t], XsT[k + 1, t0:t0 + t],
                          XsT[k + 2, t0:t0 + t], XsT[k + 3, t0:t0 + t], c[t0:t0 + t], q, k, t,
                          k == 0)
            for r in range(4):
                i, vr = 4 * blk + r, v[r]
                if skip_self and t0 <= i < t0 + t:
                    vr[i - t0] = -np.inf
                M[r], S[r], scale, skipped = _fold_tile(vr, e32, t, M[r], S[r], f32)
                if skipped:
                    a, b = _scan(vr, t)
                    nan[r], posinf[r] = nan[r] | a, posinf[r] | b
                elif want_grad:
                    if scale != 1.0:
                        for k in range(d):
                            acc[r, k] *= scale
                    _accumulate(acc[r], XsT, t0, t, vr, e32, f32)
        for r in range(4):
            i = 4 * blk + r
            if i < out.shape[0]:
                out[i] = np.nan if nan[r] else (np.inf if posinf[r] else
                                                _lse_value_cpu(M[r], S[r]) - qq[i])
                if want_grad:
                    for k in range(d):
                        grad[i, k] = ((acc[r, k] / S[r] - 0.5 * q[r, k]) * SQRT2
                                      if math.isfinite(out[i]) else np.nan)


def _product_inputs(Qs, Xs, logw):
    """The product form's arrays (Q2, XsT, c, qq), or None where the direct form must run:
    a non-finite coordinate (inf - inf in the expansion) or norms above PRODUCT_MAX_NORM2."""
    (m, d), n = Qs.shape, Xs.shape[0]
    if d < PRODUCT_MIN_D or m == 0 or n == 0:
        return None
    xx, qq = (Xs * Xs).sum(axis=1), (Qs * Qs).sum(axis=1)
    norm2 = xx.max() + qq.max()
    if not norm2 <= PRODUCT_MAX_NORM2:                  # also False for inf and NaN
        return None
    mp, dp = -(-m // 4) * 4, -(-d // 4) * 4
    Q2, XsT = np.zeros((mp, dp)), np.zeros((dp, n))
    Q2[:m, :d], XsT[:d] = 2 * Qs, Xs.T
    return Q2, XsT, logw - xx, np.concatenate([qq, np.zeros(mp - m)])


def numba_core(Qw, Xw, logw, exclude_self, want_grad, f32=False):
    """The Numba CPU version of ``reference_core`` (same arguments and results); ``f32``: the
    exps in float32 (``log_kernel_sum``'s ``precision='float32'``).

    Both point sets are centred on the data's mean (when it is finite) before the scaling by
    sqrt(1/2): scaled coordinates far from the origin (data around 10^6 bandwidths, say) each
    round to eps |x|, which shifted log densities by 1e-9 where centred ones agree with the
    reference to 1e-11 (tested)."""
    m, d = Qw.shape
    out = np.empty(m)
    if d == 0:                      # every distance is 0: one zero coordinate says the same
        Qw, Xw = np.zeros((m, 1)), np.zeros((Xw.shape[0], 1))
    centre = Xw.mean(axis=0) if len(Xw) else 0.0
    centre = centre if np.all(np.isfinite(centre)) else 0.0
    c = math.sqrt(0.5)
    Qs, Xs = (Qw - centre) * c, (Xw - centre) * c
    product = _product_inputs(Qs, Xs, logw)
    if product is not None:
        grad = np.empty(product[0].shape) if want_grad else np.empty((1, 1))
        launch("numba", _numba_core_product, None, m, None, *product, bool(exclude_self),
               bool(want_grad), bool(f32), out, grad)
        return out, (grad[:m, :d] if want_grad else None)
    grad = np.empty(Qs.shape)
    launch("numba", _numba_core, None, m, None, Qs, np.ascontiguousarray(Xs.T), logw,
           bool(exclude_self), bool(want_grad), bool(f32), out, grad)
    return out, (grad[:, :d] if want_grad else None)


# ------------------------------------------------------------------ Numba CUDA
@lazy_cuda_jit(device=True)
def _cuda_pair(Qw, Xw, logw, i, j):
    """v_ij = logw_j - 0.5 ||qw_i - xw_j||^2."""
    v = logw[j]
    for k in range(Qw.shape[1]):
        diff = Qw[i, k] - Xw[j, k]
        v -= 0.5 * diff * diff
    return v


@lazy_cuda_jit()
def _cuda_core(Qw, Xw, logw, skip_self, want_grad, out, grad):
    """One thread per query: the online log-sum-exp over all data points, then (for the
    gradient) a second pass summing exp(v_ij - M) xw_j with the final max M."""
    i = cuda.grid(1)
    if i >= Qw.shape[0]:
        return
    d, n = Qw.shape[1], Xw.shape[0]
    M, S = -math.inf, 0.0
    for j in range(n):
        if not (skip_self and j == i):
            M, S = _lse_push_gpu(M, S, _cuda_pair(Qw, Xw, logw, i, j))
    out[i] = _lse_value_gpu(M, S)
    if want_grad:
        for k in range(d):
            grad[i, k] = 0.0
        for j in range(n):
            if not (skip_self and j == i):
                e = math.exp(_cuda_pair(Qw, Xw, logw, i, j) - M)
                for k in range(d):
                    grad[i, k] += e * Xw[j, k]
        inv = _reciprocal_gpu(S)
        for k in range(d):
            grad[i, k] = grad[i, k] * inv - Qw[i, k]


def cuda_core(Qw, Xw, logw, exclude_self, want_grad):
    """The Numba CUDA version of ``reference_core`` (CuPy arrays; NumPy under the simulator)."""
    xp = _xp(Qw)
    m = Qw.shape[0]
    out = xp.empty(m)
    grad = xp.empty_like(Qw) if want_grad else xp.empty((1, Qw.shape[1]))
    launch("cuda", None, _cuda_core, m, CUDA_THREADS, Qw, Xw, logw, bool(exclude_self),
           bool(want_grad), out, grad)
    return out, (grad if want_grad else None)


_CORES = {"reference": reference_core, "numba": numba_core, "cuda": cuda_core}
PRECISIONS = ("float64", "float32")


def _run_core(path, Qw, Xw, logw, exclude_self, want_grad, precision, where):
    if precision not in PRECISIONS:
        raise ValueError(f"{where}: precision must be one of {PRECISIONS}, got {precision!r}")
    if path == "numba":
        return numba_core(Qw, Xw, logw, exclude_self, want_grad, f32=precision == "float32")
    return _CORES[path](Qw, Xw, logw, exclude_self, want_grad)


# ------------------------------------------------------------------ public API
def log_kernel_sum(Q, X, chol=None, log_weights=None, exclude_self=False, normalize=True,
                   impl=None, *, precision="float64"):
    """out_i = log sum_j w_j N(q_i; x_j, L L^T), float64 (m,).

    ``chol``: None (identity), a scalar h (h I), a (d,) diagonal or a (d, d) lower-triangular
    Cholesky factor L.  ``log_weights`` (n,) or None (all zero: a plain sum; normalise the
    weights yourself).  ``exclude_self=True`` (Q and X the same points) drops the j = i term
    (leave-one-out).  ``normalize=False`` leaves out -d/2 log(2 pi) - log|det L|.

    ``precision='float32'`` (opt-in) lets the Numba CPU kernel evaluate each exp(a_ij),
    a_ij = v_ij - M_i <= 0, in float32 (8 lanes instead of 4) while distances, shifts and
    sums stay float64.  Rounding a_ij to float32 and the float32 exp perturb each term by a
    relative |a_ij| u + 2 u (u = 2^-24), so the absolute error of out_i is at most
    u (2 + sum_j r_ij |a_ij|) with r_ij the kernel responsibilities: about 1e-7 near the data
    and never above 90 u = 5.4e-6 (terms below exp(-87) are dropped, as float32 flushes them),
    i.e. a relative error of p(q_i) of order 1e-6.  The NumPy/CuPy reference and the CUDA
    kernel compute in float64 whatever the precision.
    """
    where = "log_kernel_sum"
    if exclude_self and Q.shape[0] != X.shape[0]:
        raise ValueError(f"{where}: exclude_self=True needs Q and X to be the same points, "
                         f"got {Q.shape[0]} queries and {X.shape[0]} data points")
    Qw, Xw, logw, _, logdet = _prepare(Q, X, chol, log_weights, where)
    path = choose(where, Qw, Qw.shape[0] * Xw.shape[0], impl)
    out, _ = _run_core(path, Qw, Xw, logw, exclude_self, False, precision, where)
    return out + _constant(X.shape[1], logdet, normalize)


def log_kernel_sum_grad(Q, X, chol=None, log_weights=None, impl=None, *, precision="float64"):
    """(out, grad): out as ``log_kernel_sum`` (normalised) and grad_i = d out_i / d q_i,

        grad_i = (L L^T)^-1 (sum_j r_ij x_j - q_i),  r_ij = softmax_j(logw_j - 0.5 ||L^-1(q_i - x_j)||^2),

    computed in whitened coordinates as L^-T (sum_j r_ij xw_j - qw_i): the score function of the
    KDE, used by Langevin sampling and by autograd through a KDE.  ``precision`` as in
    ``log_kernel_sum`` (the responsibilities r_ij then carry the same relative error).
    """
    where = "log_kernel_sum_grad"
    Qw, Xw, logw, L, logdet = _prepare(Q, X, chol, log_weights, where)
    path = choose(where, Qw, Qw.shape[0] * Xw.shape[0], impl)
    out, grad_w = _run_core(path, Qw, Xw, logw, False, True, precision, where)
    if L is not None:
        grad_w = grad_w @ _xp(grad_w).asarray(np.linalg.inv(L))    # rows of L^-T g
    return out + _constant(X.shape[1], logdet, True), grad_w
