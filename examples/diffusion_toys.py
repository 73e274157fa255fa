"""Train DDPMs on a 2-D toy and on the 8x8 digits, and save figures of their samples.

    python examples/diffusion_toys.py [--toy swiss_roll] [--steps 3000] [--digit-steps 1500]
                                      [--out out]

2-D: DDPM(TimeMLP(2, 128, depth 3)) on 50,000 points, batch 1,024, Adam 2e-3, EMA 0.995,
linear schedule with T = 1000 (Ho et al. 2020); figure: the data, 5,000 samples from
Algorithm 2, and 5,000 from DDIM with 50 steps (Song et al. 2021), plus the trajectory of a
few points. Digits: DDPM(TinyUNet) on the training digits scaled to [-1, 1], 100-step DDIM
with x0 clipped to [-1, 1]; figure: a grid of 64 samples beside 64 held-out digits. Prints
sliced Wasserstein distances to held-out data. Both models train from one call:
``DDPM(...).fit(X, steps=N)``.
"""
import argparse
import os

import numpy as np

from minigen.data import load_digits, make_toy
from minigen.metrics import sliced_wasserstein
from minigen.models import DDPM, NoiseSchedule, TimeMLP, TinyUNet


def toy(name, steps, out):
    X, held_out = make_toy(name, 50000, rng=0), make_toy(name, 5000, rng=1)
    model = DDPM(TimeMLP(2, hidden=128, depth=3, rng=0), NoiseSchedule(), rng=0)
    model.fit(X, steps=steps, batch_size=1024, lr=2e-3, ema_decay=0.995, verbose=True,
              log_every=max(steps // 5, 1))
    ancestral, path = model.sample(5000, return_trajectory=True, rng=2)
    ddim = model.sample(5000, steps=50, rng=3)
    for label, S in (("Algorithm 2", ancestral), ("DDIM 50 steps", ddim)):
        print(f"{name}: {label}: sliced Wasserstein to held-out "
              f"{sliced_wasserstein(S, held_out, rng=0):.4f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 4, figsize=(16, 4), sharex=True, sharey=True)
    for ax, (title, P) in zip(axes, (("data", held_out), ("DDPM (1000 steps)", ancestral),
                                     ("DDIM (50 steps)", ddim))):
        ax.scatter(P[:, 0], P[:, 1], s=1, alpha=0.4)
        ax.set_title(title)
    for i in range(30):
        axes[3].plot(path[:, i, 0], path[:, i, 1], lw=0.4, alpha=0.7)
    axes[3].scatter(path[-1, :30, 0], path[-1, :30, 1], s=6, c="k")
    axes[3].set_title("trajectories x_T -> x_0")
    _save(fig, os.path.join(out, f"diffusion_{name}.png"))


def digits(steps, out):
    Xtr = load_digits("train")[0].reshape(-1, 1, 8, 8) / 8.0 - 1.0
    Xte = load_digits("test")[0].reshape(-1, 1, 8, 8) / 8.0 - 1.0
    model = DDPM(TinyUNet(1, channels=16, rng=0), NoiseSchedule(), rng=0)
    model.fit(Xtr, steps=steps, batch_size=64, lr=1e-3, ema_decay=0.995, verbose=True,
              log_every=max(steps // 5, 1))
    S = model.sample(500, steps=100, clip=1.0, rng=1)
    print(f"digits: sliced Wasserstein to held-out {sliced_wasserstein(S, Xte, rng=0):.3f} "
          f"(train digits: {sliced_wasserstein(Xtr, Xte, rng=0):.3f})")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 2, figsize=(10, 5))
    for ax, (title, images) in zip(axes, (("DDPM samples", S), ("held-out digits", Xte))):
        grid = np.full((8 * 9 + 1, 8 * 9 + 1), -1.0)
        for i, img in enumerate(images[:64]):
            r, c = divmod(i, 8)
            grid[1 + 9 * r:9 * r + 9, 1 + 9 * c:9 * c + 9] = img[0]
        ax.imshow(grid, cmap="gray_r", vmin=-1, vmax=1)
        ax.set_title(title)
        ax.axis("off")
    _save(fig, os.path.join(out, "diffusion_digits.png"))


def _save(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"saved {path}")


def main(argv=None):
    parser = argparse.ArgumentParser(description="DDPM on a 2-D toy and on digits")
    parser.add_argument("--toy", default="swiss_roll", choices=["swiss_roll", "moons",
                                                                "eight_gaussians", "pinwheel",
                                                                "checkerboard", "circles"])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--digit-steps", type=int, default=1500)
    parser.add_argument("--out", default="out")
    args = parser.parse_args(argv)
    toy(args.toy, args.steps, args.out)
    if args.digit_steps > 0:
        digits(args.digit_steps, args.out)


if __name__ == "__main__":
    main()
