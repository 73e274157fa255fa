"""Principal component analysis: the linear code of the digits, and its probabilistic model.

    python examples/pca_digits.py [--out out] [--quick]

PCA keeps the k directions of largest variance: the top eigenvectors W of the covariance,
codes z = W (x - mu), reconstructions x' = W^T z + mu. Probabilistic PCA (Tipping & Bishop
1999) makes it a density, x ~ N(mu, W^T diag(lambda - s^2) W + s^2 I), with s^2 the mean of the
discarded eigenvalues, so held-out log-likelihood can pick k. The figure shows the explained
variance against k, the first principal components as images, and reconstructions of held-out
digits with k = 2, 8 and 32.
"""
import argparse
import os

import numpy as np

from minigen import plot
from minigen.data import load_digits
from minigen.density import PCA


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="out")
    parser.add_argument("--quick", action="store_true", help="fewer k values (for tests)")
    args = parser.parse_args(argv)
    (X, _), (X_test, _) = load_digits("train"), load_digits("test")
    full = PCA().fit(X)
    ks = [2, 8, 32] if args.quick else [1, 2, 4, 8, 16, 24, 32, 48]
    scores = {k: PCA(k).fit(X).score(X_test) for k in ks}
    for k in ks:
        print(f"k={k:2d}  explained variance {full.explained_variance_ratio_[:k].sum():6.1%}  "
              f"held-out PPCA log p {scores[k]:8.1f} nats per image")
    recon = [("held-out digits", X_test[:20])]
    for k in (2, 8, 32):
        pca = PCA(k).fit(X)
        recon.append((f"k = {k}", np.clip(pca.inverse_transform(pca.transform(X_test[:20])), 0, 16)))

    plt = plot.pyplot()
    fig = plt.figure(figsize=(12, 6.5))
    a = fig.add_subplot(2, 2, 1)
    a.plot(np.arange(1, 65), np.cumsum(full.explained_variance_ratio_), "-")
    a.set_xlabel("k")
    a.set_ylabel("explained variance")
    a.set_title("cumulative explained variance")
    b = fig.add_subplot(2, 2, 2)
    b.imshow(plot.image_grid(full.components_[:16], cols=8), cmap="RdBu", interpolation="nearest")
    b.set_title("the first 16 principal components")
    b.axis("off")
    c = fig.add_subplot(2, 1, 2)
    c.imshow(plot.image_grid(np.concatenate([r for _, r in recon]), cols=20), cmap="gray_r",
             interpolation="nearest")
    c.set_title("rows: held-out digits; reconstructions with k = 2, 8, 32")
    c.axis("off")
    path = plot.save(fig, os.path.join(args.out, "pca_digits.png"))
    print(f"saved {path}")
    return {"scores": scores, "explained": full.explained_variance_ratio_, "figure": path}


if __name__ == "__main__":
    main()
