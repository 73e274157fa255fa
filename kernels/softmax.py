"""Softmax, log-softmax and fused cross-entropy over the last axis, forward and backward.

    softmax(x)_k = exp(x_k - M) / S,   log_softmax(x)_k = x_k - M - log S,
    M = max_k x_k,  S = sum_k exp(x_k - M)                          (Bridle 1990)

The Numba and CUDA kernels read each row once for (M, S) with an online max and rescaled sum
(Milakov & Gimelshein 2018, "Online normalizer calculation for softmax"): the CPU kernel
takes the row in chunks of CHUNK (chunk max, then S <- S exp(M_old - M) + sum exp(x - M)
with the polynomial exp, so the loop vectorises), the CUDA kernel one element at a time.

Backward passes: softmax y*(gy - sum(gy*y)), log_softmax gy - exp(y) sum(gy);
cross-entropy loss_i = logsumexp(z_i) - z_{i,t_i} and its gradient
g_i (softmax(z_i) - onehot(t_i)), both exactly 0 on rows with t_i == ignore_index.

Implementations (pick one with ``impl=``): ``reference_*`` (NumPy/CuPy), the Numba CPU
kernels ``_numba_*`` (one row per prange iteration) and the CUDA kernels ``_cuda_*`` (one
thread per row).
"""
import math

import numpy as np

from . import _math
from ._dispatch import (_xp, both, check_float, choose, launch, lazy_cuda_jit, lazy_njit, prange,
                        register)

cuda = None            # numba.cuda, bound by materialize(globals(), "cuda")
_exp, _expn, _fmax = _math.exp_cpu, _math.exp_nonpositive_cpu, _math.fmax
CHUNK = 256            # rows stream in L1-sized chunks; a rescale per chunk is cheap
BLOCK = 16_384         # elements per prange task (rows of a short last axis are grouped)
SHORT_ROW = 4_096      # rows up to this long take the four-pass kernel (they stay in L1/L2):
                       # 0.9 against 2.8 ms for the online one, 16k rows of 128, 2 threads
CUDA_THREADS = 128     # 4 warps per block; untuned: chosen by warp count;
                       # benchmarks/gpu_check.py tunes it
for _name in ("softmax", "masked_softmax", "log_softmax", "softmax_backward",
              "log_softmax_backward", "cross_entropy", "cross_entropy_backward"):
    # work = elements; NumPy/Numba time ratio 0.22 at 8k, 0.34 at 32k, 0.94 at 131k
    register(_name, threshold=131_072)


def _check_same(where, y, gy):
    if y.shape != gy.shape:
        raise ValueError(f"{where}: y and gy must have the same shape, got {y.shape} and {gy.shape}")


def _check_ce(where, logits, targets, g=None):
    check_float(where, logits=logits)
    if logits.ndim != 2:
        raise ValueError(f"{where}: logits must be (N, K), got shape {logits.shape}")
    if getattr(targets, "shape", None) != (logits.shape[0],) or targets.dtype.kind not in "iu":
        raise ValueError(f"{where}: targets must be an integer array of shape "
                         f"({logits.shape[0]},), got {getattr(targets, 'dtype', None)} "
                         f"{getattr(targets, 'shape', None)}")
    if g is not None and getattr(g, "shape", None) != (logits.shape[0],):
        raise ValueError(f"{where}: g must have shape ({logits.shape[0]},), "
                         f"got {getattr(g, 'shape', None)}")


def _rows(a):
    """View as a contiguous (rows, K) array."""
    return _xp(a).ascontiguousarray(a).reshape(-1, a.shape[-1]) if a.size else a.reshape(-1, a.shape[-1])


def _kept_targets(targets, ignore_index, K, where):
    xp = _xp(targets)
    keep = xp.ones(targets.shape, bool) if ignore_index is None else targets != ignore_index
    t = xp.where(keep, targets, 0).astype(np.int64)
    if t.size and (int(t.min()) < 0 or int(t.max()) >= K):
        raise ValueError(f"{where}: targets must lie in [0, {K}) (or equal ignore_index)")
    return t, keep


# ------------------------------------------------------------------ reference (NumPy/CuPy)
def reference_softmax(x):
    xp = _xp(x)
    e = xp.exp(x - x.max(axis=-1, keepdims=True)) if x.size else x.copy()
    return e / e.sum(axis=-1, keepdims=True)


def reference_log_softmax(x):
    xp = _xp(x)
    if not x.size:
        return x.copy()
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


def reference_masked_softmax(x, mask):
    """softmax of x with the entries where ``mask`` (broadcast to x) is True left out: they
    get weight 0, as does every entry of a row with all of them masked."""
    xp = _xp(x)
    with np.errstate(invalid="ignore"):     # an empty row: exp(-inf - -inf), zeroed below
        y = reference_softmax(xp.where(mask, -xp.inf, x).astype(x.dtype, copy=False))
    empty = xp.asarray(mask).all(axis=-1, keepdims=True)
    return xp.where(empty, 0, y).astype(y.dtype, copy=False) if empty.any() else y


def reference_softmax_backward(y, gy):
    return y * (gy - (gy * y).sum(axis=-1, keepdims=True))


def reference_log_softmax_backward(y, gy):
    return gy - _xp(y).exp(y) * gy.sum(axis=-1, keepdims=True)


def reference_cross_entropy(logits, targets, ignore_index=None):
    xp = _xp(logits)
    t, keep = _kept_targets(targets, ignore_index, logits.shape[1], "cross_entropy")
    if not logits.size:
        return xp.zeros(logits.shape[0], logits.dtype)
    lse = reference_log_softmax(logits)
    loss = -xp.take_along_axis(lse, t[:, None], axis=1)[:, 0]
    return xp.where(keep, loss, 0).astype(logits.dtype)


def reference_cross_entropy_backward(logits, targets, g, ignore_index=None):
    xp = _xp(logits)
    t, keep = _kept_targets(targets, ignore_index, logits.shape[1], "cross_entropy_backward")
    grad = reference_softmax(logits)
    if grad.size:
        xp.put_along_axis(grad, t[:, None], xp.take_along_axis(grad, t[:, None], 1) - 1, 1)
    scale = xp.where(keep, g, 0).astype(logits.dtype)
    return grad * scale[:, None]


# ------------------------------------------------------------------ shared per-element math
def softmax_backward_element(y, gy, dot):
    return y * (gy - dot)


def log_softmax_backward_element(y, gy, total, exp_y):
    return gy - exp_y * total


_lse_push_gpu = _math.lse_push_gpu
_lse_value_cpu, _lse_value_gpu = _math.lse_value_cpu, _math.lse_value_gpu
_reciprocal_cpu, _reciprocal_gpu = _math.reciprocal_cpu, _math.reciprocal_gpu
_sm_back_cpu, _sm_back_gpu = both(softmax_backward_element)
_lsm_back_cpu, _lsm_back_gpu = both(log_softmax_backward_element)


# ------------------------------------------------------------------ Numba CPU
@lazy_njit(inline="always", fastmath=_math.FASTMATH)
def _online_max_sum(row, chunk_max, dst):
    """One pass: M = max(row), S = sum exp(row - M).  M keeps the row's dtype, so the exps run
    in the row's precision (8 float32 lanes per AVX2 register); S accumulates in float64.
    chunk_max[c] gets the running M after chunk c; if dst has the row's length, the pass also
    writes exp(row_k - chunk_max[c]) there, for the caller to rescale by exp(chunk_max[c] - M).
    While M is -inf the exps use shift 0 instead (exp(-inf - -inf) would be NaN), so NaN in
    the row (which the max ignores) still reaches S."""
    M, S = row[0], 0.0
    K = row.shape[0]
    write = dst.shape[0] == K
    for c in range(chunk_max.shape[0]):
        c0, c1 = c * CHUNK, min(K, c * CHUNK + CHUNK)
        cmax = row[c0]
        for k in range(c0, c1):
            cmax = _fmax(cmax, row[k])
        if cmax > M:
            S *= math.exp(M - cmax)
            M = cmax
        chunk_max[c] = M
        shift = M if M != -np.inf else row.dtype.type(0)
        s = 0.0
        if write:
            for k in range(c0, c1):
                e = _expn(row[k] - shift)
                dst[k] = e
                s += e
        else:
            for k in range(c0, c1):
                s += _expn(row[k] - shift)
        S += s
    return M, S


@lazy_njit(inline="always")
def _task_rows(R, K):
    """Rows per prange task: about BLOCK elements, so a task's start-up cost and its scratch
    arrays (allocated once per task, not per row) are amortised over short rows."""
    return max(1, BLOCK // max(K, 1))


@lazy_njit(parallel=True, cache=True, fastmath=_math.FASTMATH)
def _numba_softmax(x, out):
    R, K = x.shape
    rows = _task_rows(R, K)
    for task in prange((R + rows - 1) // rows):
        chunk_max = np.empty((K + CHUNK - 1) // CHUNK, x.dtype)
        scale = np.empty(chunk_max.shape[0], x.dtype)      # in x's precision: no conversions
        for r in range(task * rows, min(R, task * rows + rows)):
            dst = out[r]
            M, S = _online_max_sum(x[r], chunk_max, dst)
            inv = _reciprocal_cpu(S)
            for c in range(chunk_max.shape[0]):
                scale[c] = math.exp(chunk_max[c] - M) * inv
            for c in range(chunk_max.shape[0]):      # rescale chunk c by exp(M_c - M) / S
                f = scale[c]
                for k in range(c * CHUNK, min(K, c * CHUNK + CHUNK)):
                    dst[k] *= f


@lazy_njit(parallel=True, cache=True, fastmath=_math.FASTMATH)
def _numba_masked_softmax(x, mask, mask_row, out):
    """Row r of x is masked by mask[mask_row[r]]: four branch-free passes over the row, which
    stays in cache between them (the max of the kept entries, their exps with 0 at masked
    ones, the sum in float64, the scale).  The sum is 0 exactly when every entry is masked
    (a kept maximum contributes exp(0) = 1, or NaN when it is infinite), and such a row is
    0; NaN or inf among the kept entries makes the row NaN, as in the reference.  Each pass
    vectorises (a branch on the row, or a count of its masked entries, made them scalar:
    2.7 ms against 0.9 ms for 32 x 4 x 128 rows of 128 float32 scores under a causal mask,
    2 threads; the reference's -inf fill and softmax take 5.9 ms)."""
    R, K = x.shape
    rows = _task_rows(R, K)
    for task in prange((R + rows - 1) // rows):
        for r in range(task * rows, min(R, task * rows + rows)):
            row, m, dst = x[r], mask[mask_row[r]], out[r]
            ninf, zero = row.dtype.type(-np.inf), row.dtype.type(0)
            M = ninf
            for k in range(K):
                M = _fmax(M, ninf if m[k] else row[k])
            for k in range(K):
                dst[k] = zero if m[k] else _expn(row[k] - M)
            S = 0.0
            for k in range(K):
                S += dst[k]
            inv = row.dtype.type(1.0 / S) if S != 0.0 else zero
            for k in range(K):
                dst[k] *= inv


@lazy_njit(parallel=True, cache=True, fastmath=_math.FASTMATH)
def _numba_log_softmax(x, out):
    R, K = x.shape
    rows = _task_rows(R, K)
    for task in prange((R + rows - 1) // rows):
        chunk_max = np.empty((K + CHUNK - 1) // CHUNK, x.dtype)
        for r in range(task * rows, min(R, task * rows + rows)):
            M, S = _online_max_sum(x[r], chunk_max, x[r, :0])
            shift = _lse_value_cpu(M, S)
            for k in range(K):
                out[r, k] = x[r, k] - shift


@lazy_njit(parallel=True, cache=True, fastmath=_math.FASTMATH)
def _numba_softmax_backward(y, gy, out):
    for r in prange(y.shape[0]):
        dot = 0.0
        for k in range(y.shape[1]):
            dot += gy[r, k] * y[r, k]
        for k in range(y.shape[1]):
            out[r, k] = _sm_back_cpu(y[r, k], gy[r, k], dot)


@lazy_njit(parallel=True, cache=True, fastmath=_math.FASTMATH)
def _numba_log_softmax_backward(y, gy, out):
    for r in prange(y.shape[0]):
        total = 0.0
        for k in range(y.shape[1]):
            total += gy[r, k]
        for k in range(y.shape[1]):
            out[r, k] = _lsm_back_cpu(y[r, k], gy[r, k], total, _exp(y[r, k]))


@lazy_njit(parallel=True, cache=True, fastmath=_math.FASTMATH)
def _numba_cross_entropy(z, t, keep, out):
    R, K = z.shape
    rows = _task_rows(R, K)
    for task in prange((R + rows - 1) // rows):
        chunk_max = np.empty((K + CHUNK - 1) // CHUNK, z.dtype)
        for r in range(task * rows, min(R, task * rows + rows)):
            out[r] = 0.0
            if keep[r]:
                row = z[r]
                M, S = _online_max_sum(row, chunk_max, row[:0])
                out[r] = _lse_value_cpu(M, S) - row[t[r]]


@lazy_njit(parallel=True, cache=True, fastmath=_math.FASTMATH)
def _numba_cross_entropy_backward(z, t, keep, g, out):
    R, K = z.shape
    rows = _task_rows(R, K)
    for task in prange((R + rows - 1) // rows):
        chunk_max = np.empty((K + CHUNK - 1) // CHUNK, z.dtype)
        for r in range(task * rows, min(R, task * rows + rows)):
            row, dst = z[r], out[r]
            M, S = _online_max_sum(row, chunk_max, row[:0])
            f = g[r] * _reciprocal_cpu(S) if keep[r] else 0.0 * S     # NaN rows stay NaN
            for k in range(K):
                dst[k] = f * _expn(row[k] - M)
            if keep[r]:
                dst[t[r]] -= g[r]


# ------------------------------------------------------------------ Numba CUDA
@lazy_cuda_jit(device=True)
def _cuda_max_sum(row):
    """(M, S) of one row, element by element; S is NaN if M = +inf (x - M is then NaN, as in
    the reference)."""
    M, S = -math.inf, 0.0
    for k in range(row.shape[0]):
        M, S = _lse_push_gpu(M, S, row[k])
    return M, (S if M != math.inf else math.nan)


@lazy_cuda_jit()
def _cuda_softmax(x, out):
    r = cuda.grid(1)
    if r < x.shape[0]:
        M, S = _cuda_max_sum(x[r])
        inv = _reciprocal_gpu(S)
        for k in range(x.shape[1]):
            out[r, k] = math.exp(x[r, k] - M) * inv


@lazy_cuda_jit()
def _cuda_masked_softmax(x, mask, mask_row, out):
    r = cuda.grid(1)
    if r < x.shape[0]:
        m = mask[mask_row[r]]
        M, S, kept = -math.inf, 0.0, 0
        for k in range(x.shape[1]):
            if not m[k]:
                kept += 1
                M, S = _lse_push_gpu(M, S, x[r, k])
        S = S if M != math.inf else math.nan
        inv = _reciprocal_gpu(S) if kept else 0.0
        for k in range(x.shape[1]):
            out[r, k] = 0.0 * inv if m[k] else math.exp(x[r, k] - M) * inv


@lazy_cuda_jit()
def _cuda_log_softmax(x, out):
    r = cuda.grid(1)
    if r < x.shape[0]:
        M, S = _cuda_max_sum(x[r])
        shift = _lse_value_gpu(M, S)
        for k in range(x.shape[1]):
            out[r, k] = x[r, k] - shift


@lazy_cuda_jit()
def _cuda_softmax_backward(y, gy, out):
    r = cuda.grid(1)
    if r < y.shape[0]:
        dot = 0.0
        for k in range(y.shape[1]):
            dot += gy[r, k] * y[r, k]
        for k in range(y.shape[1]):
            out[r, k] = _sm_back_gpu(y[r, k], gy[r, k], dot)


@lazy_cuda_jit()
def _cuda_log_softmax_backward(y, gy, out):
    r = cuda.grid(1)
    if r < y.shape[0]:
        total = 0.0
        for k in range(y.shape[1]):
            total += gy[r, k]
        for k in range(y.shape[1]):
            out[r, k] = _lsm_back_gpu(y[r, k], gy[r, k], total, math.exp(y[r, k]))


@lazy_cuda_jit()
def _cuda_cross_entropy(z, t, keep, out):
    r = cuda.grid(1)
    if r < z.shape[0]:
        out[r] = 0.0
        if keep[r]:
            M, S = _cuda_max_sum(z[r])
            out[r] = _lse_value_gpu(M, S) - z[r, t[r]]


@lazy_cuda_jit()
def _cuda_cross_entropy_backward(z, t, keep, g, out):
    r = cuda.grid(1)
    if r < z.shape[0]:
        M, S = _cuda_max_sum(z[r])
        f = g[r] * _reciprocal_gpu(S) if keep[r] else 0.0 * S
        for k in range(z.shape[1]):
            out[r, k] = f * math.exp(z[r, k] - M)
        if keep[r]:
            out[r, t[r]] -= g[r]


# ------------------------------------------------------------------ public API
def _rowwise(where, kernels, x, impl, *others):
    """Shared driver of the four row-wise ops: dispatch, flatten to rows, run, reshape.
    ``kernels`` is (reference, Numba CPU kernel, CUDA kernel); the output has the dtype the
    reference's arithmetic gives (float64 if any input is)."""
    reference, cpu_kernel, cuda_kernel = kernels
    path = choose(where, x, x.size, impl)
    if path == "reference":
        return reference(x, *others)
    out = _xp(x).empty(x.shape, np.result_type(x, *others))
    if x.size:
        rows = [_rows(a) for a in (x,) + others]
        launch(path, cpu_kernel, cuda_kernel, rows[0].shape[0], CUDA_THREADS,
               *rows, out.reshape(rows[0].shape))
    return out


def softmax(x, impl=None):
    """softmax over the last axis: exp(x - M) / sum exp(x - M)."""
    check_float("softmax", x=x)
    if x.ndim and 0 < x.shape[-1] <= SHORT_ROW and choose("softmax", x, x.size, impl) == "numba":
        return masked_softmax(x, np.zeros(x.shape[-1:], bool), impl="numba")
    return _rowwise("softmax", (reference_softmax, _numba_softmax, _cuda_softmax), x, impl)


def _mask_rows(mask, shape):
    """The boolean ``mask`` (broadcastable to ``shape``) as contiguous rows (Rm, K), and for
    each of the prod(shape[:-1]) rows of x the index of its mask row: a causal mask
    (1, 1, T, T) over scores (B, nh, T, T) stays T rows, not B nh T."""
    xp = _xp(mask)
    mask = xp.asarray(mask, dtype=bool)
    mask = mask.reshape((1,) * (len(shape) - mask.ndim) + mask.shape)
    lead = mask.shape[:-1]
    rows = xp.broadcast_to(mask, lead + shape[-1:]).reshape(-1, shape[-1]).copy()
    index = xp.broadcast_to(xp.arange(rows.shape[0]).reshape(lead), shape[:-1]).reshape(-1)
    return rows, index.copy()       # writable copies: a read-only view is its own Numba type


def masked_softmax(x, mask, impl=None):
    """softmax over the last axis with the entries where the boolean ``mask`` (broadcastable
    to x) is True left out: y_k = exp(x_k - M) / sum_{j kept} exp(x_j - M) at kept k, M the
    largest kept x_j; 0 at masked k and on rows with every entry masked."""
    check_float("masked_softmax", x=x)
    try:
        np.broadcast_shapes(mask.shape, x.shape)
    except ValueError:
        raise ValueError(f"masked_softmax: mask of shape {mask.shape} does not broadcast to x "
                         f"of shape {x.shape}") from None
    path = choose("masked_softmax", x, x.size, impl)
    if path == "reference" or x.ndim == 0:
        return reference_masked_softmax(x, mask)
    out = _xp(x).empty(x.shape, x.dtype)
    if x.size:
        rows, index = _mask_rows(mask, x.shape)
        x_rows = _rows(x)
        launch(path, _numba_masked_softmax, _cuda_masked_softmax, x_rows.shape[0],
               CUDA_THREADS, x_rows, rows, index, out.reshape(x_rows.shape))
    return out


def log_softmax(x, impl=None):
    """log_softmax over the last axis: x - M - log sum exp(x - M)."""
    check_float("log_softmax", x=x)
    return _rowwise("log_softmax", (reference_log_softmax, _numba_log_softmax,
                                    _cuda_log_softmax), x, impl)


def softmax_backward(y, gy, impl=None):
    """Gradient of softmax at output y: y * (gy - sum(gy * y, -1))."""
    check_float("softmax_backward", y=y, gy=gy)
    _check_same("softmax_backward", y, gy)
    return _rowwise("softmax_backward", (reference_softmax_backward, _numba_softmax_backward,
                                         _cuda_softmax_backward), y, impl, gy)


def log_softmax_backward(y, gy, impl=None):
    """Gradient of log_softmax at output y: gy - exp(y) * sum(gy, -1)."""
    check_float("log_softmax_backward", y=y, gy=gy)
    _check_same("log_softmax_backward", y, gy)
    return _rowwise("log_softmax_backward", (reference_log_softmax_backward,
                                             _numba_log_softmax_backward,
                                             _cuda_log_softmax_backward), y, impl, gy)


def cross_entropy(logits, targets, ignore_index=None, impl=None):
    """Per-row loss (N,): logsumexp(z_i) - z_{i, t_i}; exactly 0 where t_i == ignore_index."""
    _check_ce("cross_entropy", logits, targets)
    path = choose("cross_entropy", logits, logits.size, impl)
    if path == "reference":
        return reference_cross_entropy(logits, targets, ignore_index)
    t, keep = _kept_targets(targets, ignore_index, logits.shape[1], "cross_entropy")
    out = _xp(logits).zeros(logits.shape[0], logits.dtype)
    if logits.size:
        launch(path, _numba_cross_entropy, _cuda_cross_entropy, logits.shape[0], CUDA_THREADS,
               _rows(logits), t, keep, out)
    return out


def cross_entropy_backward(logits, targets, g, ignore_index=None, impl=None):
    """(N, K) gradient g_i (softmax(z_i) - onehot(t_i)); zero rows where t_i == ignore_index
    (NaN where such a row's logits hold NaN or inf, as softmax(z_i) * 0 in the reference)."""
    _check_ce("cross_entropy_backward", logits, targets, g)
    path = choose("cross_entropy_backward", logits, logits.size, impl)
    if path == "reference":
        return reference_cross_entropy_backward(logits, targets, g, ignore_index)
    t, keep = _kept_targets(targets, ignore_index, logits.shape[1], "cross_entropy_backward")
    out = _xp(logits).empty(logits.shape, logits.dtype)
    if logits.size:
        g = _xp(g).ascontiguousarray(g, dtype=logits.dtype)
        launch(path, _numba_cross_entropy_backward, _cuda_cross_entropy_backward,
               logits.shape[0], CUDA_THREADS, _rows(logits), t, keep, g, out)
    return out
