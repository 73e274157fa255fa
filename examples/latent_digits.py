"""Generate handwritten digits with a Gaussian mixture in a PCA code.

    python examples/latent_digits.py [out/latent_digits.png] [--components 20] [--mixtures 12]

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

from minigen.data import load_digits
from minigen.density import PCA, GaussianMixture, LatentDensity


def image_grid(images, rows, cols):
    """Tile (rows * cols, 8, 8) images into one array with a 1-pixel blank border."""
    grid = np.zeros((rows * 9 + 1, cols * 9 + 1))
    for i, image in enumerate(images[:rows * cols]):
        r, c = divmod(i, cols)
        grid[1 + 9 * r:9 * r + 9, 1 + 9 * c:9 * c + 9] = image
    return grid


def main(argv=None):
    parser = argparse.ArgumentParser(description="PCA + Gaussian mixture digits")
    parser.add_argument("output", nargs="?", default=os.path.join("out", "latent_digits.png"))
    parser.add_argument("--components", type=int, default=20, help="PCA code size k")
    parser.add_argument("--mixtures", type=int, default=12, help="mixture components K")
    parser.add_argument("--residual", action="store_true",
                        help="add the PPCA noise outside the code subspace to the samples")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X_train, _ = load_digits("train", seed=args.seed)
    X_test, _ = load_digits("test", seed=args.seed)
    model = LatentDensity(PCA(args.components),
                          GaussianMixture(args.mixtures, covariance_type="full", n_init=3,
                                          reg_covar=1e-3, random_state=args.seed)).fit(X_train)
    ppca = PCA(args.components).fit(X_train)
    print(f"held-out log-likelihood per image: PPCA(k={args.components}) {ppca.score(X_test):.1f}, "
          f"PCA + GaussianMixture(K={args.mixtures}) {model.score(X_test):.1f}")

    samples = model.sample(60, rng=args.seed, residual=args.residual)
    samples = np.clip(samples, 0.0, 16.0).reshape(-1, 8, 8)
    real = X_test[:60].reshape(-1, 8, 8)

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.9))
    for ax, images, title in ((axes[0], real, "real (test split)"),
                              (axes[1], samples, f"generated: PCA({args.components}) + GMM({args.mixtures})")):
        ax.imshow(image_grid(images, 6, 10), cmap="gray_r", vmin=0, vmax=16, interpolation="nearest")
        ax.set_title(title)
        ax.axis("off")
    fig.tight_layout()
    directory = os.path.dirname(args.output)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(args.output, dpi=120)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
