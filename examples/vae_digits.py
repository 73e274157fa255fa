"""A VAE and a hierarchical VAE on the binarised 8x8 digits.

    python examples/vae_digits.py [--epochs 60] [--out out] [--seed 0] [--quick]

Trains VAE(64, 2) (a 2-D code to look at), VAE(64, 8) and HierarchicalVAE(64, (16, 4)) with
KL warm-up, Bernoulli likelihoods, on ``load_digits(scale='binary')``, and prints each one's
held-out bound, -IWAE with k = 1 (the ELBO) and k = 100 (Burda et al. 2016), in nats per
image, next to independent Bernoulli pixels. Writes under --out: ``vae_latent.png`` (the
2-D VAE: held-out codes, the mean of q(z|x), coloured by class, beside the decoded means
over a grid of z, the "manifold" figure of Kingma & Welling 2014), ``vae_samples.png``
(pixel probabilities decoded from prior draws of each model) and
``vae_reconstructions.png``. ``--quick``: a few epochs and narrower networks, for the tests.
``main(argv)`` returns the bounds (nats per image) and the figure paths.
"""
import argparse
import os

import numpy as np

from minigen import plot
from minigen.data import load_digits
from minigen.models import VAE, HierarchicalVAE


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", default="out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a tiny budget (for tests)")
    args = parser.parse_args(argv)
    epochs, hidden, k = (15, (64,), 20) if args.quick else (args.epochs, (256, 256), 100)

    X, _ = load_digits("train", scale="binary")
    Xt, yt = load_digits("test", scale="binary")
    fit = dict(epochs=epochs, lr=2e-3, rng=args.seed)
    models = {
        "VAE, z in R^2": VAE(64, 2, hidden=hidden, rng=args.seed).fit(X, **fit),
        "VAE, z in R^8": VAE(64, 8, hidden=hidden, rng=args.seed).fit(X, **fit),
        "hierarchical VAE (16, 4)": HierarchicalVAE(64, (16, 4), hidden=hidden,
                                                    warmup_steps=200,
                                                    rng=args.seed).fit(X, **fit),
    }
    p = np.clip(X.mean(0), 1e-3, 1 - 1e-3)
    baseline = -np.mean((Xt * np.log(p) + (1 - Xt) * np.log1p(-p)).sum(1))
    print(f"{'independent pixels':26s} -log p = {baseline:.2f} nats")
    bounds = {}
    for name, model in models.items():
        elbo, iwae = (model.score(Xt, k=kk, rng=args.seed) for kk in (1, k))
        bounds[name] = {"elbo": elbo, "iwae": iwae}
        print(f"{name:26s} -ELBO = {-elbo:.2f}   -IWAE({k}) = {-iwae:.2f} nats")

    vae2 = models["VAE, z in R^2"]
    plt = plot.pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.6))
    codes = vae2.transform(Xt)
    points = left.scatter(*codes.T, s=6, c=yt, cmap="tab10", linewidths=0)
    fig.colorbar(points, ax=left, ticks=range(10), label="digit")
    left.set_title("held-out codes (mean of q(z|x))")
    side = np.linspace(-2.5, 2.5, 15)
    grid = np.array([[a, b] for b in side[::-1] for a in side])
    right.imshow(plot.image_grid(vae2.inverse_transform(grid), cols=15), cmap="gray_r",
                 vmin=0, vmax=1, extent=(-2.6, 2.6, -2.6, 2.6))
    right.set_title("decoded means over z in [-2.5, 2.5]^2")
    fig.tight_layout()
    figures = [plot.save(fig, os.path.join(args.out, "vae_latent.png"))]

    rng = np.random.default_rng(args.seed)
    panels = [(name, m.sample(40, rng=rng, mean=True)) for name, m in models.items()]
    fig = plot.image_panels(panels, cols=8, vmin=0, vmax=1,
                            title="prior draws decoded (pixel probabilities)")
    figures.append(plot.save(fig, os.path.join(args.out, "vae_samples.png")))
    panels = [("held-out digits", Xt[:40])] + [(name, m.inverse_transform(m.transform(Xt[:40])))
                                               for name, m in models.items()]
    fig = plot.image_panels(panels, cols=8, vmin=0, vmax=1, title="reconstructions")
    figures.append(plot.save(fig, os.path.join(args.out, "vae_reconstructions.png")))
    print("wrote", ", ".join(figures))
    return {"independent_pixels": -baseline, "bounds": bounds, "k": k, "figures": figures}


if __name__ == "__main__":
    main()
