"""Multi-step noising vs the one-shot closed form (Ho et al. 2020, eqs. 2 and 4).

    python examples/diffusion_noising.py [--n 20000] [--kind linear] [--quick] [--out out]

The forward process of a diffusion model adds a little Gaussian noise per step,

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t),

and composing t such steps gives the closed form that training uses to jump straight to step t:

    q(x_t | x_0) = N(sqrt(abar_t) x_0, 1 - abar_t),   abar_t = prod_{s<=t} (1 - beta_s).

This script draws 1-D data from a three-component Gaussian mixture and pushes it through t =
100, 500 and 999 steps of q(x_t | x_{t-1}). The figure (out/diffusion_noising.png) overlays,
per t, the histogram of those chains, the histogram of the closed form drawn in one shot from
the same data, and the N(0, 1) density that both approach. (After k steps the schedule index
is k - 1; see minigen.models.diffusion.schedule.) Prints per t the mean and std of both samples and the
sliced (here: plain 1-D) Wasserstein distance between them; ``main`` returns them.
"""
import argparse
import os

import numpy as np

from minigen import plot
from minigen.data import mixture_1d
from minigen.metrics import sliced_wasserstein
from minigen.models import NoiseSchedule

STEPS = (100, 500, 999)


def noise(n, kind, rng):
    """(x0, {k: (multi-step x after k steps, one-shot x at index k - 1)})."""
    rng = np.random.default_rng(rng)
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
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument("--kind", default="linear", choices=["linear", "cosine", "sigmoid"])
    parser.add_argument("--rng", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="2,000 points")
    parser.add_argument("--out", default="out")
    args = parser.parse_args(argv)
    n = 2000 if args.quick else args.n

    x0, out = noise(n, args.kind, args.rng)
    results = {}
    for k, (multi, one) in out.items():
        w = sliced_wasserstein(multi, one, n_projections=1)
        results[k] = {"multi_mean": float(multi.mean()), "multi_std": float(multi.std()),
                      "one_mean": float(one.mean()), "one_std": float(one.std()), "w2": w}
        print(f"t = {k:4d} steps: multi-step mean {multi.mean():+.3f} std {multi.std():.3f} | "
              f"closed form mean {one.mean():+.3f} std {one.std():.3f} | W2 {w:.4f}")

    normal = ("N(0, 1)", lambda x: np.exp(-x ** 2 / 2) / np.sqrt(2 * np.pi))
    panels = [("data x_0", {"x_0": x0})] + [
        (f"t = {k}", {f"{k} steps of q(x_t|x_t-1)": multi, "closed form q(x_t|x_0)": one})
        for k, (multi, one) in out.items()]
    fig = plot.histogram_overlays(panels, bins=np.linspace(-5, 5, 81), curve=normal,
                                  title=f"forward process, {args.kind} schedule")
    results["figure"] = plot.save(fig, os.path.join(args.out, "diffusion_noising.png"))
    print(f"saved {results['figure']}")
    return results


if __name__ == "__main__":
    main()
