"""Multi-step noising vs the one-shot closed form (Ho et al. 2020, eqs. 2 and 4).

    python examples/diffusion_noising.py [out/diffusion_noising.png] [--n 20000] [--kind linear]

Draws 1-D data from a three-component Gaussian mixture and pushes it through t steps of
q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t) for t = 100, 500 and 999 steps. Each
panel overlays the histogram of those chains, the histogram of the closed form
q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t)) drawn in one shot from the same data, and
the N(0, 1) density. (After k steps the schedule index is k - 1; see minigen.models.ddpm.)
Prints, per t, the mean and std of both samples and the two-sample sliced Wasserstein
distance between them.
"""
import argparse
import os

import numpy as np

from minigen.data import mixture_1d
from minigen.metrics import sliced_wasserstein
from minigen.models import NoiseSchedule

STEPS = (100, 500, 999)


def noise(n, kind, seed):
    """(x0, {k: (multi-step x after k steps, one-shot x at index k - 1)})."""
    rng = np.random.default_rng(seed)
    schedule = NoiseSchedule(kind=kind)
    x0 = mixture_1d(n, rng=rng)
    x, out = x0, {}
    for t in range(max(STEPS)):
        x = schedule.q_step(x, t, rng.standard_normal(x.shape))
        if t + 1 in STEPS:
            out[t + 1] = (x, schedule.q_sample(x0, t, rng.standard_normal(x0.shape)))
    return x0, out


def main(argv=None):
    parser = argparse.ArgumentParser(description="multi-step vs one-shot noising")
    parser.add_argument("output", nargs="?", default=os.path.join("out", "diffusion_noising.png"))
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--kind", default="linear", choices=["linear", "cosine", "sigmoid"])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    x0, out = noise(args.n, args.kind, args.seed)
    for k, (multi, one) in out.items():
        print(f"t = {k:4d} steps: multi-step mean {multi.mean():+.3f} std {multi.std():.3f} | "
              f"closed form mean {one.mean():+.3f} std {one.std():.3f} | "
              f"W2 {sliced_wasserstein(multi, one, n_projections=1):.4f}")

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, 1 + len(STEPS), figsize=(4 * (1 + len(STEPS)), 3.2), sharey=True)
    bins = np.linspace(-5, 5, 81)
    axes[0].hist(x0[:, 0], bins=bins, density=True, color="0.4")
    axes[0].set_title("data x_0")
    grid = np.linspace(-5, 5, 400)
    for ax, (k, (multi, one)) in zip(axes[1:], out.items()):
        ax.hist(multi[:, 0], bins=bins, density=True, alpha=0.5, label=f"{k} steps of q(x_t|x_t-1)")
        ax.hist(one[:, 0], bins=bins, density=True, histtype="step", lw=1.5, color="k",
                label="closed form q(x_t|x_0)")
        ax.plot(grid, np.exp(-grid ** 2 / 2) / np.sqrt(2 * np.pi), "r--", label="N(0, 1)")
        ax.set_title(f"t = {k}")
    axes[-1].legend(fontsize=7, loc="upper right")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(args.output, dpi=110)
    print(f"saved {args.output}")


if __name__ == "__main__":
    main()
