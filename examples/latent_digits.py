"""Generate handwritten digits with a Gaussian mixture in a PCA code.

    python examples/latent_digits.py [--out out] [--components 20] [--mixtures 12] [--quick]

Fits LatentDensity(PCA(k), GaussianMixture(K)) on the digits' training split: the codes
z = W (x - mu) of the 64-pixel images get a K-component full-covariance mixture, and new
digits are x = W^T z + mu with z drawn from the mixture (Tipping & Bishop 1999 for the PCA
model; Bishop 2006, ch. 9 and 12). Prints held-out log-likelihoods (nats per image) of the
plain PPCA and of the mixture-in-code model, and saves a figure of real test digits (left)
beside generated ones (right).
"""
import argparse
import os

import numpy as np

from minigen import plot
from minigen.data import load_digits
from minigen.density import PCA, GaussianMixture, LatentDensity


def main(argv=None):
    parser = argparse.ArgumentParser(description="PCA + Gaussian mixture digits")
    parser.add_argument("--out", default="out")
    parser.add_argument("--components", type=int, default=20, help="PCA code size k")
    parser.add_argument("--mixtures", type=int, default=12, help="mixture components K")
    parser.add_argument("--residual", action="store_true",
                        help="add the PPCA noise outside the code subspace to the samples")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="one EM start (for tests)")
    args = parser.parse_args(argv)

    X_train, _ = load_digits("train", seed=args.seed)
    X_test, _ = load_digits("test", seed=args.seed)
    model = LatentDensity(PCA(args.components),
                          GaussianMixture(args.mixtures, covariance_type="full",
                                          n_init=1 if args.quick else 3,
                                          reg_covar=1e-3, random_state=args.seed)).fit(X_train)
    ppca = PCA(args.components).fit(X_train)
    print(f"held-out log-likelihood per image: PPCA(k={args.components}) {ppca.score(X_test):.1f}, "
          f"PCA + GaussianMixture(K={args.mixtures}) {model.score(X_test):.1f}")

    samples = np.clip(model.sample(64, rng=args.seed, residual=args.residual), 0.0, 16.0)
    fig = plot.image_panels([("real (test split)", X_test[:64]),
                             (f"generated: PCA({args.components}) + GMM({args.mixtures})",
                              samples)], vmin=0, vmax=16)
    path = plot.save(fig, os.path.join(args.out, "latent_digits.png"))
    print(f"saved {path}")
    return {"ppca": ppca.score(X_test), "mixture": model.score(X_test), "figure": path}


if __name__ == "__main__":
    main()
