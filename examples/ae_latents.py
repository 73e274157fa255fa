"""The 2-D latent spaces of three auto-encoders on the 8x8 digits.

    python examples/ae_latents.py [--epochs 60] [--out out/ae_latents] [--seed 0]

Trains, with a 2-D code and a Bernoulli decoder on the digits scaled to [0, 1]:
  * AutoEncoder, with a 10-component Gaussian mixture fitted to its codes afterwards;
  * SupervisedAutoEncoder (reconstruction + cross-entropy of a classifier on the code), with
    one mixture per class;
  * SWAE with a ring prior (its codes are pulled onto the ring during training).
Writes three figures under --out: ``latents.png`` (held-out codes coloured by class over
draws from each model's latent distribution, in grey), ``reconstructions.png`` (held-out
digits and their reconstructions) and ``samples.png`` (decoded latent draws; the supervised
AE's rows are the classes 0..9). Prints reconstruction errors and the classifier's accuracy.
"""
import argparse
import os

import numpy as np

from minigen import plot
from minigen.data import load_digits
from minigen.models import SWAE, AutoEncoder, SupervisedAutoEncoder


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--out", default=os.path.join("out", "ae_latents"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    X, y = load_digits("train", scale="unit")
    Xt, yt = load_digits("test", scale="unit")
    common = dict(hidden=(256, 128), reconstruction="bernoulli", rng=args.seed)
    fit = dict(epochs=args.epochs, lr=2e-3, rng=args.seed)
    ae = AutoEncoder(64, 2, **common).fit(X, **fit)
    sup = SupervisedAutoEncoder(64, 2, 10, **common).fit(X, y, **fit)
    swae = SWAE(64, 2, prior="ring", **common).fit(X, **fit)
    models = {"AutoEncoder + GMM": ae, "supervised AE": sup, "SWAE (ring prior)": swae}
    for name, model in models.items():
        print(f"{name:20s} held-out reconstruction MSE {model.reconstruction_error(Xt).mean():.4f}")
    print(f"supervised AE held-out accuracy {np.mean(sup.predict(Xt) == yt):.3f}")

    rng = np.random.default_rng(args.seed)
    backgrounds = {"AutoEncoder + GMM": ae.latent_density_.sample(3000, rng=rng),
                   "supervised AE": sup.latent_density_.sample(3000, rng=rng),
                   "SWAE (ring prior)": swae.sample_prior(3000, rng=rng)}
    plt = plot.pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13.5, 4.2))
    for ax, (name, model) in zip(axes, models.items()):
        ax.scatter(*backgrounds[name].T, s=2, c="0.8", linewidths=0)
        codes = model.transform(Xt)
        points = ax.scatter(*codes.T, s=6, c=yt, cmap="tab10", linewidths=0)
        ax.set_title(name)
    fig.colorbar(points, ax=axes, ticks=range(10), label="digit")
    fig.suptitle("held-out codes by class, over draws of each latent distribution (grey)")
    print("wrote", plot.save(fig, os.path.join(args.out, "latents.png")))

    panels = [("held-out digits", Xt[:40])] + [(name, m.reconstruct(Xt[:40]))
                                               for name, m in models.items()]
    fig = plot.image_panels(panels, cols=8, vmin=0, vmax=1, title="reconstructions")
    print("wrote", plot.save(fig, os.path.join(args.out, "reconstructions.png")))

    panels = [("AutoEncoder + GMM", ae.sample(40, rng=rng)),
              ("supervised AE, p(z | y), y = row",
               sup.sample(40, rng=rng, y=np.repeat(np.arange(10), 4))),
              ("SWAE, ring prior", swae.sample(40, rng=rng))]
    fig = plot.image_panels(panels, cols=4, vmin=0, vmax=1, title="decoded latent draws")
    print("wrote", plot.save(fig, os.path.join(args.out, "samples.png")))


if __name__ == "__main__":
    main()
