"""Optimiser updates in place over one flat buffer of parameters, gradients and moments.

p, g and the moment buffers are 1-D contiguous arrays of one dtype (float32 or float64), e.g.
every parameter of a model laid end to end; one call updates all of them.  With t the step
count (from 1) and the order of operations of ``torch.optim`` (and ``minigen.optim``):

* SGD with momentum (Sutskever et al. 2013): g <- g + wd p;  v <- g on the first step,
  else v <- mu v + g;  d = g + mu v (Nesterov) or v (mu = 0: d = g);  p <- p - lr d.
* Adam (Kingma & Ba 2015): g <- g + wd p (coupled L2);  m <- m + (1 - b1)(g - m);
  v <- b2 v + (1 - b2) g^2;  p <- p - (lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps).
* AdamW (Loshchilov & Hutter 2019): p <- p (1 - lr wd) first, then Adam's update without
  the L2 term.

The scalars (lr / (1 - b1^t), 1 / sqrt(1 - b2^t), ...) are computed once in float64 and cast
to the buffer's dtype, as NumPy does when a Python float scales a float32 array.

Implementations (pick one with ``impl=``): ``reference_*`` (NumPy/CuPy, the passes of
``minigen.optim``), the Numba CPU kernels ``_numba_*`` (one fused pass, a prange task per
BLOCK elements, or their serial twins below PARALLEL_MIN elements) and the CUDA kernels
``_cuda_*`` (one thread per element), both from the per-element functions compiled by
``both``.
"""
import math

import numpy as np

from ._dispatch import (FASTMATH, _xp, both, check_float, choose, launch, lazy_cuda_jit,
                        lazy_njit, prange, register, serial_twin)

cuda = None            # numba.cuda, bound by materialize(globals(), "cuda")
CUDA_THREADS = 256     # 8 warps per block for a memory-bound map; untuned: chosen by warp
                       # count; benchmarks/gpu_check.py tunes it
BLOCK = 16_384         # elements per prange task: amortises the task's start-up cost
# work = elements.  Numba at every size: the serial kernel against NumPy's passes, AdamW,
# float32, median ms on the quiet 2-core machine: 4k 0.0026 / 0.015, 65k 0.031 / 0.12, 262k
# 0.17 / 0.75, 1M 0.65 / 3.6 (``benchmarks/fused.py --sweep --only adam`` times the
# dispatched call).
for _name in ("sgd_step", "adam_step"):
    register(_name, threshold=0)
# Elements from which the prange kernel runs (below, its serial twin).  The update is
# memory-bound and one core already streams at about np.copyto's rate: on two threads the
# prange kernel against the serial one, ms, 262k 0.33 / 0.17, 1M 0.82 / 0.65, 4M 1.7-2.6 /
# 3.0-3.2, 16M 11-15 / 19 (and in the MLP step's 1M-parameter Adam, 1.33-1.49 against
# 1.13-1.23 ms).
PARALLEL_MIN = 1 << 21


def _check(where, p, buffers, **scalars):
    check_float(where, p=p)
    if p.ndim != 1 or not p.flags.c_contiguous:
        raise ValueError(f"{where}: p must be a 1-D contiguous array, got shape {p.shape}")
    for name, a in buffers.items():
        check_float(where, **{name: a})
        if a.shape != p.shape or a.dtype != p.dtype or not a.flags.c_contiguous:
            raise ValueError(f"{where}: {name} must be a contiguous {p.dtype} array of shape "
                             f"{p.shape}, got {a.dtype} {a.shape}")
    for name, (value, low, low_open, high) in scalars.items():
        ok = not isinstance(value, bool) and isinstance(value, (int, float, np.integer,
                                                               np.floating))
        ok = ok and math.isfinite(value) and (value > low if low_open else value >= low)
        ok = ok and (high is None or value < high)
        if not ok:
            bounds = f"{'(' if low_open else '['}{low}, {'inf' if high is None else high})"
            raise ValueError(f"{where}: {name} must be a finite number in {bounds}, "
                             f"got {value!r}")


def _adam_scalars(step, lr, beta1, beta2, weight_decay, decoupled, dtype):
    """(decay, coupled wd, 1 - b1, b2, 1 - b2, 1 / sqrt(1 - b2^t), lr / (1 - b1^t)) in dtype."""
    decay = 1 - lr * weight_decay if decoupled else 1.0
    wd = 0.0 if decoupled else weight_decay
    return tuple(dtype.type(s) for s in (decay, wd, 1 - beta1, beta2, 1 - beta2,
                                         1 / math.sqrt(1 - beta2 ** step),
                                         lr / (1 - beta1 ** step)))


# ------------------------------------------------------------------ reference (NumPy/CuPy)
def reference_sgd_step(p, g, v, lr, momentum=0.0, weight_decay=0.0, nesterov=False,
                       first=False):
    if weight_decay:
        g = g + weight_decay * p
    if momentum:
        if first:
            v[...] = g
        else:
            v *= momentum
            v += g
        g = g + momentum * v if nesterov else v
    p -= lr * g


def reference_adam_step(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8,
                        weight_decay=0.0, decoupled=False):
    """Every pass writes into one scratch array (``out=``): over a flat buffer of millions of
    entries a fresh temporary per pass costs more than the arithmetic (page faults)."""
    xp = _xp(p)
    if weight_decay:
        if decoupled:
            p *= 1 - lr * weight_decay
        else:
            g = g + weight_decay * p
    t = xp.subtract(g, m)
    t *= 1 - beta1
    m += t
    v *= beta2
    xp.multiply(g, g, out=t)
    t *= 1 - beta2
    v += t
    xp.sqrt(v, out=t)
    t *= 1 / math.sqrt(1 - beta2 ** step)
    t += eps
    xp.divide(m, t, out=t)
    t *= lr / (1 - beta1 ** step)
    p -= t


# ------------------------------------------------------------------ per-element formulas
def sgd_element(p, g, v, lr, momentum, wd, nesterov, first):
    """(p, v) after one SGD step; v is returned unchanged when momentum is 0."""
    g = g + wd * p
    if momentum != 0:
        v = g if first else momentum * v + g
        g = g + momentum * v if nesterov else v
    return p - lr * g, v


def adam_element(p, g, m, v, decay, wd, one_b1, b2, one_b2, inv_bc2, step_size, eps):
    """(p, m, v) after one Adam/AdamW step (decay = 1 - lr wd for AdamW, else 1)."""
    p = p * decay
    g = g + wd * p
    m = m + one_b1 * (g - m)
    v = b2 * v + one_b2 * (g * g)
    return p - (m / (math.sqrt(v) * inv_bc2 + eps)) * step_size, m, v


_sgd_cpu, _sgd_gpu = both(sgd_element)
_adam_cpu, _adam_gpu = both(adam_element)


# ------------------------------------------------------------------ Numba CPU
# Each task loops over its own slices from 0: with the loop over ``range(lo, hi)`` of the
# whole arrays LLVM kept the parallel loop body scalar (an Adam step over 1M float32
# parameters, one thread: 2.30 ms against 0.76 ms vectorised; NumPy's passes 3.6 ms).
@lazy_njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def _numba_sgd(p, g, v, lr, momentum, wd, nesterov, first):
    n = p.shape[0]
    for task in prange((n + BLOCK - 1) // BLOCK):
        lo, hi = task * BLOCK, min(n, task * BLOCK + BLOCK)
        pb, gb, vb = p[lo:hi], g[lo:hi], v[lo:hi]
        for i in range(pb.shape[0]):
            pb[i], vb[i] = _sgd_cpu(pb[i], gb[i], vb[i], lr, momentum, wd, nesterov, first)


@lazy_njit(parallel=True, nogil=True, cache=True, fastmath=FASTMATH)
def _numba_adam(p, g, m, v, decay, wd, one_b1, b2, one_b2, inv_bc2, step_size, eps):
    n = p.shape[0]
    for task in prange((n + BLOCK - 1) // BLOCK):
        lo, hi = task * BLOCK, min(n, task * BLOCK + BLOCK)
        pb, gb, mb, vb = p[lo:hi], g[lo:hi], m[lo:hi], v[lo:hi]
        for i in range(pb.shape[0]):
            pb[i], mb[i], vb[i] = _adam_cpu(pb[i], gb[i], mb[i], vb[i], decay, wd, one_b1, b2,
                                            one_b2, inv_bc2, step_size, eps)


_numba_sgd_serial = serial_twin(_numba_sgd)
_numba_adam_serial = serial_twin(_numba_adam)


# ------------------------------------------------------------------ Numba CUDA
@lazy_cuda_jit()
def _cuda_sgd(p, g, v, lr, momentum, wd, nesterov, first):
    i = cuda.grid(1)
    if i < p.shape[0]:
        p[i], v[i] = _sgd_gpu(p[i], g[i], v[i], lr, momentum, wd, nesterov, first)


@lazy_cuda_jit()
def _cuda_adam(p, g, m, v, decay, wd, one_b1, b2, one_b2, inv_bc2, step_size, eps):
    i = cuda.grid(1)
    if i < p.shape[0]:
        p[i], m[i], v[i] = _adam_gpu(p[i], g[i], m[i], v[i], decay, wd, one_b1, b2, one_b2,
                                     inv_bc2, step_size, eps)


# ------------------------------------------------------------------ public API
def sgd_step(p, g, v, lr, momentum=0.0, weight_decay=0.0, nesterov=False, first=False,
             impl=None):
    """One SGD step in place on p (and on the velocity v when momentum > 0); ``first``
    marks the first step with momentum (v <- g)."""
    where = "sgd_step"
    _check(where, p, {"g": g, "v": v}, lr=(lr, 0, True, None), momentum=(momentum, 0, False, None),
           weight_decay=(weight_decay, 0, False, None))
    if nesterov and not momentum > 0:
        raise ValueError(f"{where}: nesterov must be False when momentum is 0, got True")
    path = choose(where, p, p.size, impl)
    if path == "reference":
        return reference_sgd_step(p, g, v, lr, momentum, weight_decay, nesterov, first)
    t = p.dtype.type
    serial = p.size < PARALLEL_MIN
    launch(path, _numba_sgd_serial if serial else _numba_sgd, _cuda_sgd, p.size, CUDA_THREADS,
           p, g, v, t(lr), t(momentum), t(weight_decay), bool(nesterov), bool(first))


def adam_step(p, g, m, v, step, lr, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
              decoupled=False, impl=None):
    """One Adam step (AdamW when ``decoupled``) in place on p, m and v; ``step`` counts from 1
    and sets the bias corrections 1 - b1^t and 1 - b2^t."""
    where = "adam_step"
    _check(where, p, {"g": g, "m": m, "v": v}, lr=(lr, 0, True, None),
           beta1=(beta1, 0, False, 1), beta2=(beta2, 0, False, 1), eps=(eps, 0, True, None),
           weight_decay=(weight_decay, 0, False, None))
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or step < 1:
        raise ValueError(f"{where}: step must be an int >= 1, got {step!r}")
    path = choose(where, p, p.size, impl)
    if path == "reference":
        return reference_adam_step(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay,
                                   decoupled)
    scalars = _adam_scalars(int(step), lr, beta1, beta2, weight_decay, decoupled, p.dtype)
    serial = p.size < PARALLEL_MIN
    launch(path, _numba_adam_serial if serial else _numba_adam, _cuda_adam, p.size,
           CUDA_THREADS, p, g, m, v, *scalars, p.dtype.type(eps))
