"""Check every Numba CUDA kernel against the CuPy reference on a real GPU, and time both.

    python benchmarks/gpu_check.py            # needs CuPy, numba-cuda and a GPU
    python benchmarks/gpu_check.py --quick    # smaller sizes

Prints one markdown row per kernel: the largest relative difference between the CUDA kernel
and the CuPy reference (float64 cases must stay under 1e-10, float32 under 1e-5), and the
best-of-5 time of each (CUDA events; the first call, which compiles, is excluded).  Exits 1
if any check fails, 2 if there is no GPU to check on.
"""
import argparse
import math
import sys

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    try:
        import cupy as cp
        from numba import cuda
        if cp.cuda.runtime.getDeviceCount() == 0 or not cuda.is_available():
            raise RuntimeError("no GPU visible")
    except Exception as exc:                       # no CuPy, no numba-cuda, or no device
        print(f"gpu_check: nothing to check ({exc})")
        sys.exit(2)
    from minigen.kernels import conv, diffusion, kde, softmax

    def timed(fn, repeat=5):
        fn()                                       # compile / warm up
        start, stop = cp.cuda.Event(), cp.cuda.Event()
        best = math.inf
        for _ in range(repeat):
            start.record()
            fn()
            stop.record()
            stop.synchronize()
            best = min(best, cp.cuda.get_elapsed_time(start, stop))
        return best

    def rel_diff(a, b):
        a = [a] if not isinstance(a, tuple) else a
        b = [b] if not isinstance(b, tuple) else b
        worst = 0.0
        for x, y in zip(a, b):
            x, y = cp.asnumpy(x).astype(np.float64), cp.asnumpy(y).astype(np.float64)
            finite = np.isfinite(y)
            if not np.array_equal(finite, np.isfinite(x)):
                return math.inf
            scale = np.maximum(np.abs(y[finite]), 1.0)
            worst = max(worst, float(np.max(np.abs(x[finite] - y[finite]) / scale, initial=0)))
        return worst

    rng = cp.random.default_rng(0)
    q = args.quick
    n_kde = 5_000 if q else 50_000
    X2, Q2 = rng.standard_normal((n_kde, 2)), rng.standard_normal((n_kde, 2))
    X8 = rng.standard_normal((2_000 if q else 20_000, 8))
    L2 = np.array([[0.3, 0.0], [0.1, 0.2]])
    logw = cp.log(rng.random(n_kde))
    S = 1024 if q else 4096
    x32 = rng.standard_normal((S, S), dtype=cp.float32) * 5
    g32 = rng.standard_normal((S, S), dtype=cp.float32)
    y32, ly32 = softmax.softmax(x32, impl="reference"), softmax.log_softmax(x32, impl="reference")
    att = rng.standard_normal((8 if q else 32, 4, 128, 128), dtype=cp.float32) * 5
    causal = cp.triu(cp.ones((128, 128), dtype=bool), 1)[None, None]
    t = cp.asarray(np.random.default_rng(0).integers(0, S, S))
    t[::7] = -100
    g_rows = rng.standard_normal(S, dtype=cp.float32)
    B = 16 if q else 128
    img = rng.standard_normal((B, 1, 28, 28), dtype=cp.float32)
    w1 = rng.standard_normal((32, 1, 3, 3), dtype=cp.float32)
    h = conv.conv2d(img, w1, (1, 1), (1, 1), (1, 1), impl="reference")
    w2 = rng.standard_normal((64, 32, 3, 3), dtype=cp.float32) * 0.05
    gy2 = rng.standard_normal((B, 64, 14, 14), dtype=cp.float32)
    E = 1_000_000 if q else 10_000_000
    xt, eps, z = (rng.standard_normal((100, E // 100), dtype=cp.float32) for _ in range(3))
    coefs = [rng.random(100) + 0.1 for _ in range(5)]
    s2, p1, one = (2, 2), (1, 1), (1, 1)

    cases = [
        ("kde log_kernel_sum d=2 float64", 1e-10,
         lambda impl: kde.log_kernel_sum(Q2, X2, L2, logw, impl=impl)),
        ("kde leave-one-out d=8 float64", 1e-10,
         lambda impl: kde.log_kernel_sum(X8, X8, 0.5, exclude_self=True, impl=impl)),
        ("kde log_kernel_sum_grad d=2 float64", 1e-9,
         lambda impl: kde.log_kernel_sum_grad(Q2[:n_kde // 5], X2, L2, logw, impl=impl)),
        ("softmax float32", 1e-5, lambda impl: softmax.softmax(x32, impl=impl)),
        ("log_softmax float32", 1e-5, lambda impl: softmax.log_softmax(x32, impl=impl)),
        ("masked_softmax causal 32x4x128x128 float32", 1e-5,
         lambda impl: softmax.masked_softmax(att, causal, impl=impl)),
        ("softmax_backward float32", 1e-5,
         lambda impl: softmax.softmax_backward(y32, g32, impl=impl)),
        ("log_softmax_backward float32", 1e-5,
         lambda impl: softmax.log_softmax_backward(ly32, g32, impl=impl)),
        ("cross_entropy float32 (ignore_index)", 1e-5,
         lambda impl: softmax.cross_entropy(x32 * 1e3, t, -100, impl=impl)),
        ("cross_entropy_backward float32", 1e-5,
         lambda impl: softmax.cross_entropy_backward(x32, t, g_rows, -100, impl=impl)),
        ("conv2d 32->64 s2 float32", 1e-5,
         lambda impl: conv.conv2d(h, w2, s2, p1, one, impl=impl)),
        ("conv2d_input_grad float32", 1e-5,
         lambda impl: conv.conv2d_input_grad(gy2, w2, h.shape, s2, p1, one, impl=impl)),
        ("conv2d_weight_grad float32", 1e-5,
         lambda impl: conv.conv2d_weight_grad(h, gy2, w2.shape, s2, p1, one, impl=impl)),
        ("q_sample float32", 1e-5,
         lambda impl: diffusion.q_sample(xt, eps, coefs[0], coefs[1], impl=impl)),
        ("ddpm_step float32 (clip, noise)", 1e-5,
         lambda impl: diffusion.ddpm_step(xt, eps, z, *coefs, clip=1.0, impl=impl)),
        ("ddim_step float32 (sigma = 0)", 1e-5,
         lambda impl: diffusion.ddim_step(xt, eps, None, *coefs[:4], cp.zeros(100), impl=impl)),
    ]
    print(f"device: {cp.cuda.runtime.getDeviceProperties(0)['name'].decode()}")
    print("| kernel | max rel diff | tolerance | CUDA ms | CuPy reference ms | speedup |")
    print("|---|---|---|---|---|---|")
    failed = 0
    for name, tol, run in cases:
        diff = rel_diff(run("cuda"), run("reference"))
        t_cuda, t_ref = timed(lambda: run("cuda")), timed(lambda: run("reference"))
        ok = diff <= tol
        failed += not ok
        print(f"| {name} | {diff:.1e}{'' if ok else ' FAIL'} | {tol:.0e} | {t_cuda:.3f} | "
              f"{t_ref:.3f} | {t_ref / t_cuda:.1f}x |")
    failed += nonfinite_check()
    sys.exit(1 if failed else 0)


def nonfinite_check():
    """NaN, +-inf and empty inputs through every CUDA kernel on the GPU: the cases of
    tests/kernels/test_nonfinite.py (NumPy arrays, which numba-cuda copies to the device and
    back).  Returns the number of failures."""
    import os
    import warnings
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from tests.kernels.test_nonfinite import assert_same, cases
    failures = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")            # host-array transfers; NumPy's NaN notes
        for name, (fn, dtype) in sorted(cases(small=True).items()):
            try:
                assert_same(fn("cuda"), fn("reference"), dtype)
            except AssertionError as exc:
                failures += 1
                print(f"NaN/inf/empty case {name}: FAIL {str(exc)[:300]}")
    print(f"NaN/inf/empty cases on the GPU: {failures} failed")
    return failures


if __name__ == "__main__":
    main()
