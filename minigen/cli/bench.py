"""``minigen bench``: speed ratios of the hot paths, measured now on this machine.

Each row times one kernel's NumPy reference and its Numba kernel (and SciPy where it has the
same computation), taking turns (best of k runs each, so load from other jobs hits every
contender alike), and prints the ratio. It runs from an installed package; the full suites
with PyTorch baselines live in the source tree's ``benchmarks/`` folder.
"""
import time

import numpy as np

from .. import kernels
from ..kernels import _dispatch


def _best(fn, repeat):
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _turns(fns, repeat):
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], _best(fn, 1))
    return best


def cases(quick):
    rng = np.random.default_rng(0)
    n = 2000 if quick else 10000
    Q, X = rng.standard_normal((n, 2)), rng.standard_normal((n, 2))
    logits = rng.standard_normal((4096 if quick else 16384, 256))
    x = rng.standard_normal((256 if quick else 1024, 4096))
    eps, z = rng.standard_normal(x.shape), rng.standard_normal(x.shape)
    c = [np.full(len(x), v) for v in (1.01, 0.1, 0.5, 0.5, 0.01)]
    rows = [
        (f"KDE log-sum-exp, {n} x {n}, d=2",
         lambda impl: kernels.kde.log_kernel_sum(Q, X, impl=impl)),
        (f"softmax, {logits.shape[0]} x {logits.shape[1]}",
         lambda impl: kernels.softmax.softmax(logits, impl=impl)),
        (f"DDPM step, {x.shape[0]} x {x.shape[1]}",
         lambda impl: kernels.diffusion.ddpm_step(x, eps, z, *c, impl=impl)),
    ]
    scipy_row = None
    try:
        from scipy.stats import gaussian_kde
        kde = gaussian_kde(X.T)
        scipy_row = (f"KDE log density, {n} x {n}, d=2 (SciPy gaussian_kde.logpdf)",
                     lambda: kde.logpdf(Q.T))
    except ImportError:
        pass
    return rows, scipy_row, (Q, X)


def bench(args, options):
    repeat = 2 if args.quick else 5
    rows, scipy_row, (Q, X) = cases(args.quick)
    if not _dispatch.numba_available():
        print("Numba is not installed: every kernel runs its NumPy reference "
              "(pip install 'minigen[fast]' for the compiled kernels)")
        return 0
    print("| kernel | NumPy reference ms | Numba ms | speed-up |")
    print("|---|---:|---:|---:|")
    for name, run in rows:
        ref, fast = _turns([lambda: run("reference"), lambda: run("numba")], repeat)
        print(f"| {name} | {1e3 * ref:.1f} | {1e3 * fast:.1f} | {ref / fast:.1f}x |", flush=True)
    if scipy_row is not None:
        from ..density import KDE
        model = KDE().fit(X)
        name, run = scipy_row
        other, ours = _turns([run, lambda: model.score_samples(Q)], repeat)
        print(f"| {name} vs minigen KDE.score_samples | {1e3 * other:.1f} (SciPy) | "
              f"{1e3 * ours:.1f} | {other / ours:.1f}x |")
    print("\n(best of", repeat, "turns each; full suites with PyTorch baselines: benchmarks/ in "
          "the source tree)")
    return 0
