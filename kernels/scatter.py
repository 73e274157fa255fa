"""Scatter-add of rows, the backward of a gather along the first axis (an embedding lookup,
``a[index]`` with an integer array): for out (V, D), index (n,) in [0, V) and values (n, D),

    out[v, :] += sum over i with index[i] = v of values[i, :],

repeated indices accumulating (NumPy's ``add.at``; ``out[index] += values`` would keep one of
them).  In place on out.

Implementations (pick one with ``impl=``): ``reference_index_add_rows`` (``xp.add.at``); the
Numba CPU kernel, a prange task per block of COLUMNS columns, each walking every row in
index order, so no two tasks write one entry and every entry sees the reference's adds in the
reference's order (the same float result, whatever the thread count); the CUDA kernel, one
thread per entry of values adding with ``cuda.atomic.add`` (the order of a repeated row's adds,
and so the rounding, varies from run to run).
"""
import numpy as np

from ._dispatch import (_xp, check_float, choose, launch, lazy_cuda_jit, lazy_njit, prange,
                        register, serial_twin)

cuda = None            # numba.cuda, bound by materialize(globals(), "cuda")
CUDA_THREADS = 256     # 8 warps per block for a memory-bound scatter; untuned: chosen by warp
                       # count
COLUMNS = 64           # columns per prange task: the TransformerLM's 128 features are 2 tasks
# work = entries of values.  Numba at every size: one core, best of 5, ms, float32, NumPy's
# add.at / the serial kernel / the prange kernel on one thread (a fresh zero out each call):
# 4096 rows of 128 into 65 (the TransformerLM's token embedding) 3.77 / 0.12 / 0.11; 512 x 128
# 0.46 / 0.008 / 0.010; 4096 x 16 0.54 / 0.019 / 0.019; 128 x 128 0.12 / 0.002 / 0.003.  The
# row loop runs over views of the task's columns from 0, which LLVM vectorises (over
# ``range(c0, c1)`` of the whole rows it stayed scalar: 0.33 / 0.35 ms at 4096 x 128).
register("index_add_rows", threshold=0)
# Entries of values from which the prange kernel runs (below, its serial twin).
PARALLEL_MIN = 1 << 18


def reference_index_add_rows(out, index, values):
    _xp(out).add.at(out, index, values)


@lazy_njit(parallel=True, nogil=True, cache=True)
def _numba_index_add_rows(out, index, values):
    n, D = values.shape
    for task in prange((D + COLUMNS - 1) // COLUMNS):
        c0, c1 = task * COLUMNS, min(D, task * COLUMNS + COLUMNS)
        for i in range(n):
            row, src = out[index[i], c0:c1], values[i, c0:c1]
            for c in range(row.shape[0]):
                row[c] += src[c]


_numba_index_add_rows_serial = serial_twin(_numba_index_add_rows)


@lazy_cuda_jit()
def _cuda_index_add_rows(out, index, values):
    k = cuda.grid(1)
    D = values.shape[1]
    if k < values.shape[0] * D:
        i, c = k // D, k % D
        cuda.atomic.add(out, (index[i], c), values[i, c])


def index_add_rows(out, index, values, impl=None):
    """out[index[i]] += values[i] for every i, in place; repeated indices accumulate.  out
    (V, D) and values (n, D) float arrays of one dtype, index (n,) integers in [0, V)."""
    where = "index_add_rows"
    check_float(where, out=out, values=values)
    index = _xp(out).asarray(index)
    if index.dtype.kind not in "iu":
        raise TypeError(f"{where}: index must hold integers, got {index.dtype}")
    if out.ndim != 2 or index.ndim != 1 or values.shape != (index.shape[0], out.shape[1]):
        raise ValueError(f"{where}: expected out (V, D), index (n,) and values (n, D), got "
                         f"shapes {out.shape}, {index.shape} and {values.shape}")
    if values.dtype != out.dtype:
        raise TypeError(f"{where}: out and values must have one dtype, got {out.dtype} and "
                        f"{values.dtype}")
    if index.size and (int(index.min()) < 0 or int(index.max()) >= out.shape[0]):
        raise IndexError(f"{where}: index must lie in [0, {out.shape[0]}), got "
                         f"[{int(index.min())}, {int(index.max())}]")
    path = choose(where, out, values.size, impl)
    if path == "reference" or not values.size:
        return reference_index_add_rows(out, index, values)
    serial = values.size < PARALLEL_MIN
    launch(path, _numba_index_add_rows_serial if serial else _numba_index_add_rows,
           _cuda_index_add_rows, values.size, CUDA_THREADS, out, index, values)
