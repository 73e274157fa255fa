"""Fused elementwise steps of denoising diffusion (DDPM, DDIM).

x has shape (n, ...); every coefficient is a 1-D array of shape (n,) (one value per sample,
e.g. gathered at a per-sample timestep t) broadcast over the trailing dimensions.  These ops
are memory-bound: the Numba kernel is one fused parallel loop that reads each input once and
writes the output once, no temporaries (about the bandwidth of np.copyto); the CUDA kernel is
one thread per element.  Outputs have x's dtype (coefficients are cast to it).

Implementations (pick one with ``impl=``): ``reference_*`` (NumPy/CuPy), the Numba CPU
kernels ``_numba_*`` and the CUDA kernels ``_cuda_*``; both compiled paths evaluate the same
per-element functions (``*_element``, written once, compiled for each by ``both``).
"""
import numpy as np

from ._dispatch import _xp, both, choose, launch, lazy_cuda_jit, lazy_njit, prange, register

cuda = None            # numba.cuda, bound by materialize(globals(), "cuda")
CUDA_THREADS = 256     # 8 warps per block for a memory-bound map; untuned: chosen by warp
                       # count; benchmarks/gpu_check.py tunes it
BLOCK = 16_384         # elements per prange task (64-128 KiB per array): hides the task cost
for _name in ("q_sample", "ddpm_step", "ddim_step"):
    # work = elements.  NumPy/Numba time ratio of a DDPM step (quiet 2-core machine, two
    # threads, float32, rows of 2 / 64 entries): 0.59 / 0.39 at 16k, 0.98 / 1.11 at 65k,
    # 2.2 / 3.0 at 262k (q_sample: 0.70 / 0.47 at 65k, 2.1 / 1.5 at 262k)
    register(_name, threshold=65_536)


def _check(where, x, arrays, coefs, clip=None):
    """Validate; return arrays flattened to (n, F) and coefficients as (n,) of x's dtype."""
    if getattr(x, "dtype", None) not in (np.float32, np.float64) or x.ndim < 1:
        raise TypeError(f"{where}: x must be a float32 or float64 array of shape (n, ...), "
                        f"got {getattr(x, 'dtype', type(x).__name__)}")
    xp = _xp(x)
    n, F = x.shape[0], int(np.prod(x.shape[1:]))
    flat = []
    for name, a in arrays.items():
        if getattr(a, "shape", None) != x.shape:
            raise ValueError(f"{where}: {name} must have shape {x.shape}, "
                             f"got {getattr(a, 'shape', None)}")
        flat.append(xp.ascontiguousarray(a, dtype=x.dtype).reshape(n, F))
    cs = []
    for name, c in coefs.items():
        c = xp.asarray(c, dtype=x.dtype)
        if c.shape != (n,):
            raise ValueError(f"{where}: {name} must have shape ({n},) (one value per sample), "
                             f"got {c.shape}")
        cs.append(xp.ascontiguousarray(c))
    if clip is not None and not clip > 0:
        raise ValueError(f"{where}: clip must be None or positive, got {clip}")
    return flat, cs


def col(c, x):
    """Per-sample coefficients (n,) -> (n, 1, ..., 1), to broadcast over x's trailing
    dimensions (also the models' helper for the same job)."""
    return c.reshape((-1,) + (1,) * (x.ndim - 1))


# ------------------------------------------------------------------ reference (NumPy/CuPy)
def reference_q_sample(x0, noise, sqrt_abar, sqrt_one_minus_abar):
    return col(sqrt_abar, x0) * x0 + col(sqrt_one_minus_abar, x0) * noise


def reference_ddpm_step(xt, eps, z, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt,
                        sigma, clip=None):
    x0 = col(sqrt_recip_abar, xt) * xt - col(sqrt_recipm1_abar, xt) * eps
    if clip is not None:
        x0 = _xp(xt).clip(x0, -clip, clip)
    out = col(coef_x0, xt) * x0 + col(coef_xt, xt) * xt
    return out if z is None else out + col(sigma, xt) * z


def reference_ddim_step(xt, eps, z, sqrt_abar, sqrt_one_minus_abar, sqrt_abar_prev, dir_coef,
                        sigma, clip=None):
    x0 = (xt - col(sqrt_one_minus_abar, xt) * eps) / col(sqrt_abar, xt)
    if clip is not None:
        clipped = _xp(xt).clip(x0, -clip, clip)
        eps = _xp(xt).where(clipped != x0, (xt - col(sqrt_abar, xt) * clipped)
                            / col(sqrt_one_minus_abar, xt), eps)
        x0 = clipped
    out = col(sqrt_abar_prev, xt) * x0 + col(dir_coef, xt) * eps
    return out if z is None else out + col(sigma, xt) * z


# ------------------------------------------------------------------ per-element formulas
def q_sample_element(x0, noise, sqrt_abar, sqrt_one_minus_abar):
    return sqrt_abar * x0 + sqrt_one_minus_abar * noise


# x0 is clipped to [-clip, clip] by comparisons that keep NaN NaN (as np.clip does; Numba's
# min/max would return the bound).  Helpers compiled by ``both`` call no other helper.
def ddpm_element(xt, eps, z, has_z, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt,
                 sigma, clip):
    x0 = sqrt_recip_abar * xt - sqrt_recipm1_abar * eps
    x0 = -clip if x0 < -clip else (clip if x0 > clip else x0)
    out = coef_x0 * x0 + coef_xt * xt
    return out + sigma * z if has_z else out


def ddim_element(xt, eps, z, has_z, sqrt_abar, sqrt_one_minus_abar, sqrt_abar_prev, dir_coef,
                 sigma, clip):
    x0 = (xt - sqrt_one_minus_abar * eps) / sqrt_abar
    x0c = -clip if x0 < -clip else (clip if x0 > clip else x0)
    if x0c != x0:                           # re-derive eps from the clipped x0
        eps = (xt - sqrt_abar * x0c) / sqrt_one_minus_abar
    out = sqrt_abar_prev * x0c + dir_coef * eps
    return out + sigma * z if has_z else out


_q_sample_cpu, _q_sample_gpu = both(q_sample_element)
_ddpm_cpu, _ddpm_gpu = both(ddpm_element)
_ddim_cpu, _ddim_gpu = both(ddim_element)


# ------------------------------------------------------------------ Numba CPU
# Tasks of about BLOCK elements: a long row (one sample of an image batch) is cut into
# BLOCK-long pieces, so a few large samples still spread over every core, and short rows (2-D
# points) go several whole rows to a task.  Each row loads its sample's coefficients once and
# loops over views of its piece from 0, which LLVM vectorises (over ``range(c0, c1)`` of the
# whole arrays the loop stayed scalar: a DDPM step on 64 x 4096 float32, two threads, 0.55
# -> 0.36 ms).
@lazy_njit(inline="always")
def _task_count(n, F):
    if F >= BLOCK:
        return n * ((F + BLOCK - 1) // BLOCK)
    rows = BLOCK // max(F, 1)
    return (n + rows - 1) // rows


@lazy_njit(inline="always")
def _task_span(task, n, F):
    """(first row, end row, first column, end column) of a task's elements."""
    if F >= BLOCK:
        per_row = (F + BLOCK - 1) // BLOCK
        r, c0 = task // per_row, (task % per_row) * BLOCK
        return r, r + 1, c0, min(F, c0 + BLOCK)
    rows = BLOCK // max(F, 1)
    return task * rows, min(n, task * rows + rows), 0, F


@lazy_njit(parallel=True, cache=True, fastmath={"contract"})
def _numba_q_sample(x0, noise, sqrt_abar, sqrt_one_minus_abar, out):
    n, F = x0.shape
    for task in prange(_task_count(n, F)):
        r0, r1, c0, c1 = _task_span(task, n, F)
        for r in range(r0, r1):
            signal, noise_scale = sqrt_abar[r], sqrt_one_minus_abar[r]
            xr, nr, o = x0[r, c0:c1], noise[r, c0:c1], out[r, c0:c1]
            for c in range(o.shape[0]):
                o[c] = _q_sample_cpu(xr[c], nr[c], signal, noise_scale)


@lazy_njit(parallel=True, cache=True, fastmath={"contract"})
def _numba_ddpm_step(xt, eps, z, has_z, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt,
                     sigma, clip, out):
    n, F = xt.shape
    for task in prange(_task_count(n, F)):
        r0, r1, c0, c1 = _task_span(task, n, F)
        for r in range(r0, r1):
            ra, rm1, cx0, cxt, sr = (sqrt_recip_abar[r], sqrt_recipm1_abar[r], coef_x0[r],
                                     coef_xt[r], sigma[r])
            xr, er, zr, o = xt[r, c0:c1], eps[r, c0:c1], z[r, c0:c1], out[r, c0:c1]
            for c in range(o.shape[0]):
                o[c] = _ddpm_cpu(xr[c], er[c], zr[c], has_z, ra, rm1, cx0, cxt, sr, clip)


@lazy_njit(parallel=True, cache=True, fastmath={"contract"})
def _numba_ddim_step(xt, eps, z, has_z, sqrt_abar, sqrt_one_minus_abar, sqrt_abar_prev,
                     dir_coef, sigma, clip, out):
    n, F = xt.shape
    for task in prange(_task_count(n, F)):
        r0, r1, c0, c1 = _task_span(task, n, F)
        for r in range(r0, r1):
            sa, s1ma, sap, dc, sr = (sqrt_abar[r], sqrt_one_minus_abar[r], sqrt_abar_prev[r],
                                     dir_coef[r], sigma[r])
            xr, er, zr, o = xt[r, c0:c1], eps[r, c0:c1], z[r, c0:c1], out[r, c0:c1]
            for c in range(o.shape[0]):
                o[c] = _ddim_cpu(xr[c], er[c], zr[c], has_z, sa, s1ma, sap, dc, sr, clip)


# ------------------------------------------------------------------ Numba CUDA
@lazy_cuda_jit()
def _cuda_q_sample(x0, noise, sqrt_abar, sqrt_one_minus_abar, out):
    i = cuda.grid(1)
    F = x0.shape[1]
    if i < x0.shape[0] * F:
        r, c = i // F, i % F
        out[r, c] = _q_sample_gpu(x0[r, c], noise[r, c], sqrt_abar[r], sqrt_one_minus_abar[r])


@lazy_cuda_jit()
def _cuda_ddpm_step(xt, eps, z, has_z, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt,
                    sigma, clip, out):
    i = cuda.grid(1)
    F = xt.shape[1]
    if i < xt.shape[0] * F:
        r, c = i // F, i % F
        out[r, c] = _ddpm_gpu(xt[r, c], eps[r, c], z[r, c], has_z, sqrt_recip_abar[r],
                              sqrt_recipm1_abar[r], coef_x0[r], coef_xt[r], sigma[r], clip)


@lazy_cuda_jit()
def _cuda_ddim_step(xt, eps, z, has_z, sqrt_abar, sqrt_one_minus_abar, sqrt_abar_prev,
                    dir_coef, sigma, clip, out):
    i = cuda.grid(1)
    F = xt.shape[1]
    if i < xt.shape[0] * F:
        r, c = i // F, i % F
        out[r, c] = _ddim_gpu(xt[r, c], eps[r, c], z[r, c], has_z, sqrt_abar[r],
                              sqrt_one_minus_abar[r], sqrt_abar_prev[r], dir_coef[r], sigma[r],
                              clip)


# ------------------------------------------------------------------ public API
def _output(where, x, out):
    """A fresh output array, or the caller's ``out`` after checking it (it may alias x)."""
    if out is None:
        return _xp(x).empty(x.shape, x.dtype)
    if out.shape != x.shape or out.dtype != x.dtype or not out.flags.c_contiguous:
        raise ValueError(f"{where}: out must be a C-contiguous {x.dtype} array of shape "
                         f"{x.shape}")
    return out


def _unaliased(flat, out):
    """The flat inputs, each copied if it overlaps ``out`` without being the same elements
    (out = x itself is safe: each element is read before it is written; out = x shifted by
    one element is not)."""
    xp = _xp(out)
    same = [a.__array_interface__["data"][0] == out.__array_interface__["data"][0]
            if xp is np else a.data.ptr == out.data.ptr for a in flat]
    return [a.copy() if not s and xp.shares_memory(a, out) else a for a, s in zip(flat, same)]


def _finish(result, out):
    if out is None:
        return result
    out[...] = result
    return out


def _run(path, cpu_kernel, cuda_kernel, x, out, *args):
    """Launch the kernel for ``path`` on flat (n, F) arguments, writing ``out``."""
    if x.size == 0:
        return out
    flat_out = out.reshape(x.shape[0], x.size // x.shape[0])
    launch(path, cpu_kernel, cuda_kernel, x.size, CUDA_THREADS, *args, flat_out)
    return out


def _noise_and_clip(where, flat, z, sigma, clip, dtype):
    """(z as (n, F), has_z, clip bound): z may be None only when every sigma is 0; without z
    the kernels get xt in its place (already being read) and leave the term out."""
    if z is None and bool((sigma != 0).any()):
        raise ValueError(f"{where}: z is None but some sigma are nonzero; pass z")
    bound = dtype.type(np.inf if clip is None else clip)
    return (flat[-1], False, bound) if z is None else (flat[1], True, bound)


def q_sample(x0, noise, sqrt_abar, sqrt_one_minus_abar, impl=None, out=None):
    """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps, per sample (Ho et al. 2020, eq. 4).

    ``out`` (optional, may be x0 itself): write the result there instead of a new array.
    """
    (fx, fn), cs = _check("q_sample", x0, {"x0": x0, "noise": noise},
                          {"sqrt_abar": sqrt_abar, "sqrt_one_minus_abar": sqrt_one_minus_abar})
    out = _output("q_sample", x0, out)
    path = choose("q_sample", x0, x0.size, impl)
    if path == "reference":
        return _finish(reference_q_sample(x0, noise.astype(x0.dtype, copy=False), *cs), out)
    fx, fn = _unaliased([fx, fn], out)
    return _run(path, _numba_q_sample, _cuda_q_sample, x0, out, fx, fn, *cs)


def ddpm_step(xt, eps, z, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, sigma,
              clip=None, impl=None, out=None):
    """One ancestral DDPM step x_t -> x_{t-1} (Ho et al. 2020, eqs. 6-7 and 15):

        x0_hat = sqrt(1/abar_t) x_t - sqrt(1/abar_t - 1) eps    (clipped to [-clip, clip])
        x_{t-1} = coef_x0 x0_hat + coef_xt x_t + sigma z,

    with the posterior mean coefficients coef_x0 = beta_t sqrt(abar_{t-1}) / (1 - abar_t) and
    coef_xt = sqrt(alpha_t)(1 - abar_{t-1}) / (1 - abar_t).  Without clipping this equals
    x_{t-1} = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) + sigma_t z (eq. 11).
    ``z`` may be None when every sigma is 0; ``out`` as in ``q_sample`` (may be xt).
    """
    where = "ddpm_step"
    arrays = {"eps": eps} if z is None else {"eps": eps, "z": z}
    flat, cs = _check(where, xt, dict(arrays, xt=xt),
                      {"sqrt_recip_abar": sqrt_recip_abar, "sqrt_recipm1_abar": sqrt_recipm1_abar,
                       "coef_x0": coef_x0, "coef_xt": coef_xt, "sigma": sigma}, clip)
    fz, has_z, bound = _noise_and_clip(where, flat, z, cs[-1], clip, xt.dtype)
    out = _output(where, xt, out)
    path = choose(where, xt, xt.size, impl)
    if path == "reference":
        return _finish(reference_ddpm_step(xt, eps.astype(xt.dtype, copy=False),
                                           None if z is None else z.astype(xt.dtype, copy=False),
                                           *cs, clip=clip), out)
    fx, fe, fz = _unaliased([flat[-1], flat[0], fz], out)
    return _run(path, _numba_ddpm_step, _cuda_ddpm_step, xt, out, fx, fe, fz, has_z, *cs, bound)


def ddim_step(xt, eps, z, sqrt_abar, sqrt_one_minus_abar, sqrt_abar_prev, dir_coef, sigma,
              clip=None, impl=None, out=None):
    """One DDIM step x_t -> x_{t-1} (Song et al. 2021, eq. 12):

        x0_hat = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)     (clipped to [-clip, clip])
        x_{t-1} = sqrt(abar_{t-1}) x0_hat + dir_coef eps + sigma z,
        dir_coef = sqrt(1 - abar_{t-1} - sigma^2);  sigma = 0 is the deterministic DDIM.
    Where clipping changes x0_hat, eps is re-derived from it, eps = (x_t - sqrt(abar_t) x0_hat)
    / sqrt(1 - abar_t), so both terms describe the same x_t.
    ``z`` may be None when every sigma is 0; ``out`` as in ``q_sample`` (may be xt).
    """
    where = "ddim_step"
    arrays = {"eps": eps} if z is None else {"eps": eps, "z": z}
    flat, cs = _check(where, xt, dict(arrays, xt=xt),
                      {"sqrt_abar": sqrt_abar, "sqrt_one_minus_abar": sqrt_one_minus_abar,
                       "sqrt_abar_prev": sqrt_abar_prev, "dir_coef": dir_coef, "sigma": sigma},
                      clip)
    fz, has_z, bound = _noise_and_clip(where, flat, z, cs[-1], clip, xt.dtype)
    out = _output(where, xt, out)
    path = choose(where, xt, xt.size, impl)
    if path == "reference":
        return _finish(reference_ddim_step(xt, eps.astype(xt.dtype, copy=False),
                                           None if z is None else z.astype(xt.dtype, copy=False),
                                           *cs, clip=clip), out)
    fx, fe, fz = _unaliased([flat[-1], flat[0], fz], out)
    return _run(path, _numba_ddim_step, _cuda_ddim_step, xt, out, fx, fe, fz, has_z, *cs, bound)
