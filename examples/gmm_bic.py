"""Gaussian mixtures: how many components? The Bayesian information criterion decides.

    python examples/gmm_bic.py [--out out] [--quick]

EM fits p(x) = sum_k pi_k N(x; mu_k, Sigma_k) by alternating responsibilities
r_ik = pi_k N(x_i; mu_k, Sigma_k) / p(x_i) (E-step) and weighted means and covariances (M-step);
each step cannot lower the likelihood (Dempster, Laird & Rubin 1977). More components always
fit the training data better, so the number is chosen by BIC = -2 log L + p log n (Schwarz
1978), which charges for the p free parameters. The figure shows BIC and held-out
log-likelihood against K on the 8-Gaussians toy (left) and the K chosen by BIC with its
component ellipses and samples (right).
"""
import argparse
import os

import numpy as np

from minigen import plot
from minigen.data import eight_gaussians
from minigen.density import GaussianMixture


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out")
    parser.add_argument("--quick", action="store_true", help="fewer K values (for tests)")
    args = parser.parse_args(argv)
    X, X_test = eight_gaussians(2000, noise=0.2, rng=0), eight_gaussians(2000, noise=0.2, rng=1)
    ks = [2, 8, 12] if args.quick else list(range(1, 15))
    fits = {k: GaussianMixture(k, n_init=2, random_state=0).fit(X) for k in ks}
    bic = {k: m.bic(X) for k, m in fits.items()}
    held_out = {k: m.score(X_test) for k, m in fits.items()}
    best = min(bic, key=bic.get)
    for k in ks:
        print(f"K={k:2d}  BIC {bic[k]:9.1f}  held-out log p {held_out[k]:7.4f}"
              + ("   <- BIC's choice" if k == best else ""))

    plt = plot.pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ks, [bic[k] for k in ks], "o-", label="BIC (train)")
    a.set_xlabel("components K")
    a.set_ylabel("BIC")
    a2 = a.twinx()
    a2.plot(ks, [held_out[k] for k in ks], "s--", color="C1", label="held-out log p")
    a2.set_ylabel("held-out log p per point")
    a.set_title("BIC and held-out likelihood")
    model = fits[best]
    S = model.sample(2000, rng=0)
    b.scatter(X[:, 0], X[:, 1], s=2, c="0.7", label="data")
    b.scatter(S[:, 0], S[:, 1], s=2, c="C0", alpha=0.4, label="samples")
    t = np.linspace(0, 2 * np.pi, 100)
    for mean, cov in zip(model.means_, model.covariances_):
        vals, vecs = np.linalg.eigh(cov)
        ellipse = (vecs * 2 * np.sqrt(vals)) @ np.stack([np.cos(t), np.sin(t)])
        b.plot(mean[0] + ellipse[0], mean[1] + ellipse[1], "k-", lw=1)
    b.set_aspect("equal")
    b.set_title(f"GaussianMixture(K={best}): 2-sigma ellipses and samples")
    b.legend(fontsize=8, loc="upper right")
    path = plot.save(fig, os.path.join(args.out, "gmm_bic.png"))
    print(f"saved {path}")
    return {"bic": bic, "held_out": held_out, "best": best, "figure": path}


if __name__ == "__main__":
    main()
