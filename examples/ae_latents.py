"""The 2-D latent spaces of three auto-encoders on the 8x8 digits.

    python examples/ae_latents.py [--epochs 60] [--out out] [--seed 0] [--quick]

Trains, with a 2-D code and a Bernoulli decoder on the digits scaled to [0, 1]:
  * AutoEncoder, with a 10-component Gaussian mixture fitted to its codes afterwards;
  * SupervisedAutoEncoder (reconstruction + cross-entropy of a classifier on the code), with
    one mixture per class;
  * SWAE with a ring prior (its codes are pulled onto the ring during training).
Writes three figures under --out: ``ae_latents.png`` (held-out codes coloured by class over
draws from each model's latent distribution, in grey), ``ae_reconstructions.png`` (held-out
digits and their reconstructions) and ``ae_samples.png`` (decoded latent draws; the
supervised AE's rows are the classes 0..9). Prints held-out reconstruction errors (next to
the error of predicting the mean digit), the classifier's accuracy and how far the SWAE's
codes lie from the unit circle (the median |z|). ``--quick``: a few epochs and narrower
networks, for the tests. ``main(argv)`` returns these numbers and the figure paths.
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
    parser.add_argument("--out", default="out")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="a tiny budget (for tests)")
    args = parser.parse_args(argv)
    epochs, hidden, lr = (20, (64,), 1e-2) if args.quick else (args.epochs, (256, 128), 2e-3)

    X, y = load_digits("train", scale="unit")
    Xt, yt = load_digits("test", scale="unit")
    common = dict(hidden=hidden, reconstruction="bernoulli", rng=args.seed)
    fit = dict(epochs=epochs, lr=lr, rng=args.seed)
    ae = AutoEncoder(64, 2, **common).fit(X, **fit)
    sup = SupervisedAutoEncoder(64, 2, 10, **common).fit(X, y, **fit)
    swae = SWAE(64, 2, prior="ring", **common).fit(X, **fit)
    models = {"AutoEncoder + GMM": ae, "supervised AE": sup, "SWAE (ring prior)": swae}
    mse = {name: float(model.reconstruction_error(Xt).mean()) for name, model in models.items()}
    mean_digit_mse = float(np.mean((Xt - X.mean(0)) ** 2))
    accuracy = float(np.mean(sup.predict(Xt) == yt))
    ring_radius = float(np.median(np.linalg.norm(swae.transform(Xt), axis=1)))
    print(f"{'the mean digit':20s} held-out reconstruction MSE {mean_digit_mse:.4f}")
    for name in models:
        print(f"{name:20s} held-out reconstruction MSE {mse[name]:.4f}")
    print(f"supervised AE held-out accuracy {accuracy:.3f}")
    print(f"SWAE median |z| of held-out codes {ring_radius:.3f} (the ring prior: 1)")

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
    figures = [plot.save(fig, os.path.join(args.out, "ae_latents.png"))]

    panels = [("held-out digits", Xt[:40])] + [(name, m.reconstruct(Xt[:40]))
                                               for name, m in models.items()]
    fig = plot.image_panels(panels, cols=8, vmin=0, vmax=1, title="reconstructions")
    figures.append(plot.save(fig, os.path.join(args.out, "ae_reconstructions.png")))

    panels = [("AutoEncoder + GMM", ae.sample(40, rng=rng)),
              ("supervised AE, p(z | y), y = row",
               sup.sample(40, rng=rng, y=np.repeat(np.arange(10), 4))),
              ("SWAE, ring prior", swae.sample(40, rng=rng))]
    fig = plot.image_panels(panels, cols=4, vmin=0, vmax=1, title="decoded latent draws")
    figures.append(plot.save(fig, os.path.join(args.out, "ae_samples.png")))
    print("wrote", ", ".join(figures))
    return {"mse": mse, "mean_digit_mse": mean_digit_mse, "accuracy": accuracy,
            "ring_radius": ring_radius, "figures": figures}


if __name__ == "__main__":
    main()
