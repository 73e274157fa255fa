"""Density benchmark: minigen's classical estimators vs SciPy and scikit-learn, one run.

    python benchmarks/density.py [--quick] [--skip-slow]

Prints a Markdown table of wall times (best of k; seconds) and ratios minigen / baseline
(lower is better):
  * KDE fit + score (Scott's rule, full-covariance Gaussian kernel), n data = m queries, at
    d=2 n=10,000; d=2 n=50,000; d=8 n=20,000. Baselines: scipy.stats.gaussian_kde(...).logpdf
    and sklearn KernelDensity (exact: rtol=0) on data whitened by the same kernel covariance,
    so all three compute the same log density (checked). ``--skip-slow`` leaves out the
    scikit-learn baseline above 10,000 points, which takes minutes there.
  * GaussianMixture.fit on 100,000 x 10, 10 full-covariance components, both libraries from
    the same weights_init/means_init/precisions_init and exactly 20 EM iterations (tol=0).
    Target: <= 1.0x scikit-learn.
  * PCA.fit on the 1,797 x 64 digits (full SVD; and 'covariance_eigh'), 16 components.
"""
import argparse
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import best_time, machine  # noqa: E402

from minigen.data import load_digits  # noqa: E402
from minigen.density import KDE, PCA, GaussianMixture  # noqa: E402


def kde_rows(sizes, skip_slow):
    from scipy.stats import gaussian_kde
    from sklearn.neighbors import KernelDensity
    rows = []
    for d, n in sizes:
        rng = np.random.default_rng(d)
        X = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
        Q = rng.standard_normal((n, d)) @ rng.standard_normal((d, d))
        repeat = 3 if n <= 10_000 else 1

        def ours():
            return KDE("scott").fit(X).score_samples(Q)

        def scipy_kde():
            return gaussian_kde(X.T).logpdf(Q.T)

        expected = ours()
        t_ours = best_time(ours, repeat=repeat)
        t_scipy = best_time(scipy_kde, repeat=repeat, warmup=0)
        if n <= 10_000:                                       # the check costs a full run
            assert np.allclose(scipy_kde(), expected, rtol=1e-9)
        rows.append((f"KDE d={d} n=m={n:,}", t_ours, "scipy gaussian_kde", t_scipy))
        if skip_slow and n > 10_000:
            rows.append((f"KDE d={d} n=m={n:,}", t_ours, "sklearn KernelDensity", None))
            continue
        kde = KDE("scott").fit(X)
        Linv = np.linalg.inv(kde.cholesky_)
        log_det = np.sum(np.log(np.diag(kde.cholesky_)))

        def sklearn_kde():
            white = KernelDensity(bandwidth=1.0, rtol=0.0, atol=0.0).fit(X @ Linv.T)
            return white.score_samples(Q @ Linv.T) - log_det

        t_sklearn = best_time(sklearn_kde, repeat=1, warmup=0)
        if n <= 10_000:                   # scikit-learn's tree loses accuracy far in the tails
            body = expected > -40.0
            assert np.allclose(sklearn_kde()[body], expected[body], rtol=1e-9)
        rows.append((f"KDE d={d} n=m={n:,}", t_ours, "sklearn KernelDensity", t_sklearn))
    return rows


def gmm_row(n=100_000, d=10, k=10, iters=20):
    from sklearn.mixture import GaussianMixture as SkGaussianMixture
    rng = np.random.default_rng(0)
    centres = 3.0 * rng.standard_normal((k, d))
    X = centres[rng.integers(0, k, n)] + rng.standard_normal((n, d))
    init = dict(n_components=k, covariance_type="full", tol=0.0, max_iter=iters,
                weights_init=np.full(k, 1.0 / k), means_init=X[rng.choice(n, k, replace=False)],
                precisions_init=np.stack([np.eye(d)] * k))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                       # tol=0 never "converges"
        ours = GaussianMixture(**init).fit(X)
        ref = SkGaussianMixture(**init).fit(X)
        assert ours.n_iter_ == ref.n_iter_ == iters
        assert abs(ours.lower_bound_ - ref.lower_bound_) < 1e-6 * abs(ref.lower_bound_)
        t_ours = best_time(lambda: GaussianMixture(**init).fit(X), repeat=3)
        t_ref = best_time(lambda: SkGaussianMixture(**init).fit(X), repeat=3)
    return [(f"GaussianMixture.fit {n:,}x{d}, K={k}, {iters} iters", t_ours,
             "sklearn GaussianMixture", t_ref)]


def pca_rows():
    from sklearn.decomposition import PCA as SkPCA
    X = load_digits()[0]
    rows = []
    for solver in ("full", "covariance_eigh"):
        t_ours = best_time(lambda: PCA(16, svd_solver=solver).fit(X), repeat=20)
        t_ref = best_time(lambda: SkPCA(16, svd_solver=solver).fit(X), repeat=20)
        rows.append((f"PCA.fit digits 1,797x64 ({solver})", t_ours, "sklearn PCA", t_ref))
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the smallest KDE size")
    parser.add_argument("--skip-slow", action="store_true",
                        help="skip the scikit-learn KDE baseline above 10,000 points")
    args = parser.parse_args(argv)
    sizes = [(2, 10_000)] if args.quick else [(2, 10_000), (2, 50_000), (8, 20_000)]
    rows = kde_rows(sizes, args.skip_slow) + gmm_row() + pca_rows()
    print(f"machine: {machine()}")
    print("| workload | minigen (s) | baseline | baseline (s) | ratio |")
    print("|---|---:|---|---:|---:|")
    for name, ours, base_name, base in rows:
        if base is None:
            print(f"| {name} | {ours:.4g} | {base_name} | skipped | |")
        else:
            print(f"| {name} | {ours:.4g} | {base_name} | {base:.4g} | {ours / base:.2f}x |")


if __name__ == "__main__":
    main()
