"""Benchmarks of minigen.kernels against their baselines, as ratios measured in one run.

    python benchmarks/kernels.py            # the full sizes listed below
    python benchmarks/kernels.py --quick    # smaller sizes, a smoke run

* KDE log density, d=2 n=m=10k and 50k, d=8 n=m=20k (``--kde-sizes`` to choose): the Numba
  kernel, float64 and ``precision='float32'``, against
  scipy ``gaussian_kde(...).logpdf`` (same bandwidth matrix), scikit-learn
  ``KernelDensity(rtol=0)`` (exact; on whitened data, since it takes a scalar bandwidth), the
  NumPy reference, and the exp-throughput bound: the same polynomial exp in a bare parallel
  loop, one exp per pair, i.e. the speed of a kernel that did nothing but its exps.
  Slow baselines run on a subset of the queries; all rates are pairs per second. Then the
  whole call a user makes, ``KDE(precision=...).fit(X).score_samples(Q)`` at d=2
  n=m=10,000, against scipy's ``gaussian_kde(X.T).logpdf`` (2,000 queries, scaled), in 5
  alternating rounds.
* softmax and log_softmax, 4096 x 4096 float32, forward + backward, against PyTorch autograd.
* the engine benchmark's conv layers (128x1x28x28; conv 1->32 3x3 pad 1; conv 32->64 3x3
  stride 2 pad 1), forward + both gradients, against PyTorch autograd.
  PyTorch is timed in a process of its own (``--torch softmax|conv``), as in engine.py: its
  OpenMP workers and OpenBLAS/Numba threads slow each other down in one process.
* DDPM step over 10M float32 elements: effective bandwidth (3 arrays read, 1 written) as a
  fraction of np.copyto's over the same arrays.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import best_time, machine  # noqa: E402

from minigen.kernels import _dispatch, _math, conv, diffusion, kde, softmax  # noqa: E402


_BOUND = {}


def exp_bound_rate(tile=512, repeat=3):
    """Exps per second of the kernels' polynomial exp in a bare parallel loop over L1 tiles."""
    if "loop" not in _BOUND:
        import numba
        _dispatch.materialize(vars(_math), "cpu")
        exp = _math.exp_nonpositive_cpu                # the exp the KDE kernel runs

        @numba.njit(parallel=True, fastmath=_math.FASTMATH)
        def loop(rows, cols):
            total = 0.0
            for i in numba.prange(rows):
                v = np.empty(tile)
                for j in range(tile):
                    v[j] = -1e-3 * (i + j)
                s = 0.0
                for _ in range(cols // tile):
                    for j in range(tile):
                        s += exp(v[j] - 0.5)
                total += s
            return total

        loop(2, tile)
        _BOUND["loop"] = loop
    rows, cols = 64, 6250 * tile                       # 2e8 exps
    return rows * cols / best_time(lambda: _BOUND["loop"](rows, cols), repeat)


def of_bound(kernel, pairs, rounds=5):
    """The kernel's pairs per second as a fraction of the exp bound's, the two timed in turn
    in each round (the bound alone moved 1.2-2.1 G/s between runs on the shared VM): median,
    min and max over the rounds."""
    fractions = []
    for _ in range(rounds):
        fractions.append(pairs / best_time(kernel, 1) / exp_bound_rate(repeat=1))
    return np.median(fractions), min(fractions), max(fractions)


def bench_kde(quick, sizes=None):
    from scipy.stats import gaussian_kde
    from sklearn.neighbors import KernelDensity
    from minigen.density import KDE
    rows = []
    cases = sizes or ([(2, 2000), (8, 2000)] if quick else [(2, 10_000), (2, 50_000), (8, 20_000)])
    bound = exp_bound_rate()
    for d, n in cases:
        rng = np.random.default_rng(0)
        X, Q = rng.normal(size=(n, d)), rng.normal(size=(n, d))
        ref = gaussian_kde(X.T)
        L = np.linalg.cholesky(ref.covariance)
        logw = np.full(n, -math.log(n))
        sub = min(n, 1000)

        def ours(precision):
            return lambda: kde.log_kernel_sum(Q, X, L, logw, impl="numba", precision=precision)

        repeat = 3 if n <= 20_000 else 1
        t64, t32 = (best_time(ours(p), repeat) for p in ("float64", "float32"))
        t_ref = best_time(lambda: kde.log_kernel_sum(Q[:sub], X, L, logw, impl="reference"), 2)
        t_scipy = best_time(lambda: ref.logpdf(Q[:sub].T), 2)
        Xw, Qw = np.linalg.solve(L, X.T).T, np.linalg.solve(L, Q[:sub].T).T
        skl = KernelDensity(bandwidth=1.0, rtol=0).fit(Xw)
        t_skl = best_time(lambda: skl.score_samples(Qw), 1)
        np.testing.assert_allclose(ours("float64")()[:sub], ref.logpdf(Q[:sub].T), rtol=1e-9)
        assert np.abs(ours("float32")()[:sub] - ref.logpdf(Q[:sub].T)).max() < 90 * 2.0 ** -24
        pairs = sub * n / 1e6
        frac = of_bound(ours("float64"), n * n, rounds=3 if quick else 5)
        rows.append((f"KDE d={d} n=m={n}", n * n / t64 / 1e6, n * n / t32 / 1e6, pairs / t_scipy,
                     pairs / t_skl, pairs / t_ref, bound / 1e6, frac))
    print("\n| KDE, Mpairs/s | minigen float64 | minigen float32 | scipy | sklearn rtol=0 | NumPy ref "
          "| exp bound | x scipy (float64) | x scipy (float32) | x sklearn | x ref | of bound "
          "(float64, median [range], rounds alternating with the bound) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, r64, r32, sp, sk, rf, bd, (med, lo, hi) in rows:
        print(f"| {name} | {r64:.0f} | {r32:.0f} | {sp:.1f} | {sk:.1f} | {rf:.1f} | {bd:.0f} | "
              f"{r64 / sp:.1f}x | {r32 / sp:.1f}x | {r64 / sk:.1f}x | {r64 / rf:.1f}x | "
              f"{med:.0%} [{lo:.0%}-{hi:.0%}] |")
    if quick:
        return
    # The whole call as a user makes it: KDE(...).fit(X) once, then score_samples(Q) on all
    # 10,000 queries, against scipy's gaussian_kde(X.T).logpdf on 2,000 of them scaled by 5
    # (its cost is linear in the queries), alternating in rounds so that both meet the same
    # load; median and range of the per-round ratios.
    n, rounds = 10_000, 5
    rng = np.random.default_rng(0)
    X, Q = rng.normal(size=(n, 2)), rng.normal(size=(n, 2))
    scipy_kde = gaussian_kde(X.T)
    models = {p: KDE(precision=p).fit(X) for p in ("float64", "float32")}
    times = {"scipy": [], "float64": [], "float32": []}
    for _ in range(rounds):
        times["scipy"].append(5 * best_time(lambda: scipy_kde.logpdf(Q[:2000].T), 1, warmup=0))
        for p, model in models.items():
            times[p].append(best_time(lambda: model.score_samples(Q), 2))
    print(f"\n| KDE.score_samples, d=2 n=m={n:,} ({rounds} rounds) | minigen s (median) "
          "| scipy logpdf s (median) | x scipy, median [range] |\n|---|---|---|---|")
    for p in ("float64", "float32"):
        ratio = np.array(times["scipy"]) / np.array(times[p])
        print(f"| precision={p!r} | {np.median(times[p]):.4f} | {np.median(times['scipy']):.3f} "
              f"| {np.median(ratio):.1f}x [{ratio.min():.1f}-{ratio.max():.1f}] |")


def _softmax_inputs(quick):
    n = 1024 if quick else 4096
    rng = np.random.default_rng(0)
    return (rng.normal(size=(n, n)).astype(np.float32),
            rng.normal(size=(n, n)).astype(np.float32))


def _conv_inputs(quick):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32 if quick else 128, 1, 28, 28)).astype(np.float32)
    w1 = (0.3 * rng.normal(size=(32, 1, 3, 3))).astype(np.float32)
    w2 = (0.05 * rng.normal(size=(64, 32, 3, 3))).astype(np.float32)
    return x, w1, w2


def torch_times(which, quick):
    """PyTorch's times (seconds) for ``which``; run in its own process by ``_torch``."""
    import torch
    torch.set_num_threads(max(1, os.cpu_count()))
    if which == "softmax":
        x, g = _softmax_inputs(quick)
        xt, gt = torch.tensor(x, requires_grad=True), torch.tensor(g)
        times = {}
        for name in ("softmax", "log_softmax"):
            op = getattr(torch, name)

            def theirs():
                xt.grad = None
                op(xt, -1).backward(gt)
            times[name] = best_time(theirs, 5)
        return times
    x, w1, w2 = _conv_inputs(quick)
    F = torch.nn.functional
    xt = torch.tensor(x)
    wt1, wt2 = torch.tensor(w1, requires_grad=True), torch.tensor(w2, requires_grad=True)

    def theirs():
        wt1.grad = wt2.grad = None
        F.conv2d(F.conv2d(xt, wt1, padding=1), wt2, stride=2, padding=1).sum().backward()
    return {"conv": best_time(theirs, 5)}


def _torch(which, quick):
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch", which]
                          + (["--quick"] if quick else []), capture_output=True, text=True,
                          check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def bench_softmax(quick):
    x, g = _softmax_inputs(quick)
    theirs = _torch("softmax", quick)
    print(f"\n| {x.shape[0]}x{x.shape[1]} float32 fwd+bwd",
          "| minigen ms | NumPy ref ms | torch ms (own process) | minigen / torch |")
    print("|---|---|---|---|---|")
    for name in ("softmax", "log_softmax"):
        fwd, bwd = getattr(softmax, name), getattr(softmax, name + "_backward")

        def ours(impl):
            return lambda: bwd(fwd(x, impl=impl), g, impl=impl)

        t_ours, t_ref = (best_time(f, 5) * 1e3 for f in (ours("numba"), ours("reference")))
        t_torch = theirs[name] * 1e3
        print(f"| {name} | {t_ours:.1f} | {t_ref:.1f} | {t_torch:.1f} | {t_ours / t_torch:.2f}x |")


def bench_conv(quick):
    x, w1, w2 = _conv_inputs(quick)
    one, pad, s2 = (1, 1), (1, 1), (2, 2)

    def ours(impl):
        def run():
            h = conv.conv2d(x, w1, one, pad, one, impl=impl)
            y = conv.conv2d(h, w2, s2, pad, one, impl=impl)
            gy = np.ones_like(y)
            conv.conv2d_weight_grad(h, gy, w2.shape, s2, pad, one, impl=impl)
            gh = conv.conv2d_input_grad(gy, w2, h.shape, s2, pad, one, impl=impl)
            conv.conv2d_weight_grad(x, gh, w1.shape, one, pad, one, impl=impl)
        return run

    t_torch = _torch("conv", quick)["conv"] * 1e3
    t_ours, t_ref = (best_time(f, 5) * 1e3 for f in (ours("numba"), ours("reference")))
    print(f"\n| conv layers {x.shape[0]}x1x28x28 fwd+bwd | minigen ms | NumPy ref ms "
          "| torch ms (own process) | minigen / torch |\n|---|---|---|---|---|")
    print(f"| conv 1->32, conv 32->64 s2 | {t_ours:.1f} | {t_ref:.1f} | {t_torch:.1f} | "
          f"{t_ours / t_torch:.2f}x |")


def bench_diffusion(quick):
    size = 1_000_000 if quick else 10_000_000
    n = 100
    rng = np.random.default_rng(0)
    xt, eps, z = (rng.normal(size=(n, size // n)).astype(np.float32) for _ in range(3))
    c = [rng.uniform(0.1, 1.0, n) for _ in range(5)]
    dst = np.empty_like(xt)
    t_copy = best_time(lambda: np.copyto(dst, xt), 5)
    copy_bw = 2 * xt.nbytes / t_copy
    print(f"\n| DDPM step, {size / 1e6:.0f}M float32 | minigen ms | NumPy ref ms | minigen GB/s "
          "| np.copyto GB/s | of copy bandwidth |\n|---|---|---|---|---|---|")
    for label, out in (("into out=", dst), ("new array", None)):
        t_ours = best_time(lambda: diffusion.ddpm_step(xt, eps, z, *c, clip=1.0, impl="numba",
                                                       out=out), 5)
        t_ref = best_time(lambda: diffusion.ddpm_step(xt, eps, z, *c, clip=1.0,
                                                      impl="reference", out=out), 3)
        ours_bw = 4 * xt.nbytes / t_ours
        print(f"| ddpm_step (clip, noise), {label} | {t_ours * 1e3:.2f} | {t_ref * 1e3:.2f} | "
              f"{ours_bw / 1e9:.1f} | {copy_bw / 1e9:.1f} | {ours_bw / copy_bw:.0%} |")


def compile_times():
    """First-call time of each Numba kernel in a fresh process: with and without the cache."""
    import subprocess
    import tempfile
    code = ("import time, numpy as np\n"
            "t = time.perf_counter()\n"
            "from minigen.kernels import kde, softmax, conv, diffusion\n"
            "x = np.ones((4, 3))\n"
            "kde.log_kernel_sum(x, x, impl='numba'); kde.log_kernel_sum_grad(x, x, impl='numba')\n"
            "softmax.softmax(x, impl='numba'); softmax.log_softmax(x, impl='numba')\n"
            "conv.conv2d(np.ones((1, 1, 4, 4)), np.ones((1, 1, 2, 2)), (1, 1), (0, 0), (1, 1), "
            "impl='numba')\n"
            "diffusion.q_sample(x, x, np.ones(4), np.ones(4), impl='numba')\n"
            "print(time.perf_counter() - t)\n")
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        times = [float(subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                                      text=True, check=True).stdout) for _ in range(2)]
    print(f"\nfirst calls of 7 kernels in a fresh process: {times[0]:.1f} s compiling, "
          f"{times[1]:.1f} s from the on-disk cache")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    parser.add_argument("--only", choices=["kde", "softmax", "conv", "diffusion", "compile"])
    parser.add_argument("--torch", choices=["softmax", "conv"], help=argparse.SUPPRESS)
    parser.add_argument("--kde-sizes", help="KDE cases as d x n, e.g. 2x10000,8x20000")
    args = parser.parse_args()
    if args.torch:
        print(json.dumps(torch_times(args.torch, args.quick)))
        return
    import numba
    print(f"machine: {machine()}; numba {numba.__version__}")
    start = time.perf_counter()
    sizes = ([tuple(int(v) for v in case.split("x")) for case in args.kde_sizes.split(",")]
             if args.kde_sizes else None)
    for name, bench in (("kde", lambda quick: bench_kde(quick, sizes)), ("softmax", bench_softmax),
                        ("conv", bench_conv), ("diffusion", bench_diffusion)):
        if args.only in (None, name):
            bench(args.quick)
    if args.only in (None, "compile"):
        compile_times()
    print(f"\nNumba: {numba.get_num_threads()} threads, {numba.threading_layer()} threading layer")
    print(f"\n(total {time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
