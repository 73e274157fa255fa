"""DDPM on a 2-D toy and on the 8x8 digits: samples, and the reverse process frame by frame.

    python examples/diffusion_toys.py [--toy swiss_roll] [--steps 3000] [--digit-steps N]
                                      [--quick] [--out out]

A diffusion model (Ho et al. 2020) learns to undo q(x_t | x_0) = N(sqrt(abar_t) x_0,
(1 - abar_t) I): a network predicts, from x_t and t, the noise eps (or v = sqrt(abar_t) eps -
sqrt(1 - abar_t) x_0; Salimans & Ho 2022) by least squares, and sampling starts from
x_T ~ N(0, I) and steps back, x_{t-1} ~ N(c0_t x0_hat + c1_t x_t, sigma_t^2 I) (Algorithm 2),
or deterministically over a few timesteps (DDIM; Song et al. 2021).

2-D toy: DDPM(TimeMLP(2, 128, depth 3)) on 50,000 points, batch 1,024, Adam 2e-3, EMA 0.995,
linear schedule with T = 1000. Figure out/diffusion_<toy>.png: the data, 5,000 samples from
Algorithm 2 and 5,000 from 50-step DDIM; out/diffusion_<toy>_reverse.png: the reverse process
as a strip of frames x_T ... x_0.

Digits: the recipe in ``DIGITS`` below (measured in benchmarks/README.md, "DDPM on the
digits"), on the training digits in [0, 1] (``data_range`` maps them to [-1, 1] inside
the model, and x0_hat is clipped there). Figure out/diffusion_digits.png: 64 of the 1,000 samples
(50-step DDIM) beside 64 held-out digits; out/diffusion_digits_reverse.png: x_T ... x_0 for 8
samples.
Prints sliced Wasserstein distances to held-out data next to their floors (a second draw of
the toy; the training digits) and, for the digits, a full-covariance Gaussian fit.
``main(argv)`` returns these numbers.
"""
import argparse
import os
import time

import numpy as np

from minigen import plot
from minigen.data import load_digits, make_toy
from minigen.metrics import sliced_wasserstein
from minigen.models import DDPM, NoiseSchedule, TimeMLP, TinyUNet
from minigen.optim import CosineWarmup

TOYS = ["swiss_roll", "moons", "eight_gaussians", "pinwheel", "checkerboard", "circles"]
# The digits recipe: cosine schedule, v-prediction, Adam with warm-up and cosine decay,
# gradient clipping, EMA; 'steps' is the default budget (about 3 minutes on 2 cores), and
# 1,000 samples are scored, since sliced Wasserstein grows as the sample shrinks and the
# benchmark's numbers are for 1,000
DIGITS = dict(channels=16, batch=64, lr=3e-3, warmup=50, clip_grad=1.0, ema_decay=0.995,
              steps=2400, samples=1000, sample_steps=50)
QUICK_DIGITS = dict(DIGITS, channels=8, batch=32, warmup=5, steps=30, samples=64,
                    sample_steps=10)


FRAMES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95, 0.98, 1.0)   # where in the reverse process to look


def reverse_frames(path, schedule):
    """Frames of a sampling path x_T, ..., x_0 (K sampler steps over the timesteps
    ``schedule.ddim_timesteps(K)``; K = T is Algorithm 2), denser near the end where the
    structure appears, each labelled with its (1-based) timestep t."""
    K = len(path) - 1
    timesteps = schedule.ddim_timesteps(K)
    steps = np.unique((np.array(FRAMES) * K).round().astype(int))
    labels = [f"t = {timesteps[K - 1 - k] + 1}" if k < K else "t = 0" for k in steps]
    return [path[k] for k in steps], labels


def toy(name, steps, n, out):
    X, held_out, floor = make_toy(name, 50000, rng=0), make_toy(name, n, rng=1), \
        make_toy(name, n, rng=2)
    model = DDPM(TimeMLP(2, hidden=128, depth=3, rng=0), NoiseSchedule(), rng=0)
    model.fit(X, steps=steps, batch_size=1024, lr=2e-3, ema_decay=0.995, verbose=True,
              log_every=max(steps // 5, 1))
    ancestral, path = model.sample(n, return_trajectory=True, rng=2)
    ddim = model.sample(n, steps=50, rng=3)
    sw = lambda S: sliced_wasserstein(S, held_out, rng=0)
    result = {"toy_sw_ancestral": sw(ancestral), "toy_sw_ddim": sw(ddim), "toy_floor": sw(floor)}
    print(f"{name}: sliced Wasserstein to held-out: Algorithm 2 {result['toy_sw_ancestral']:.4f}"
          f", DDIM 50 steps {result['toy_sw_ddim']:.4f} (a second draw of the data: "
          f"{result['toy_floor']:.4f})")

    fig = plot.scatter_panels([("data", held_out), ("DDPM, 1000 steps", ancestral),
                               ("DDIM, 50 steps", ddim)], title=f"{name}: DDPM samples")
    result["toy_figure"] = plot.save(fig, os.path.join(out, f"diffusion_{name}.png"))
    frames, labels = reverse_frames(path, model.schedule)
    lo, hi = held_out.min(0), held_out.max(0)
    fig = plot.scatter_panels(list(zip(labels, frames)),
                              limits=(lo - 0.3 * (hi - lo), hi + 0.3 * (hi - lo)),
                              title="reverse process (Algorithm 2), x_T -> x_0")
    result["toy_reverse_figure"] = plot.save(
        fig, os.path.join(out, f"diffusion_{name}_reverse.png"))
    return result


def digits(recipe, out):
    unit = lambda split: load_digits(split, scale="unit")[0]     # pixels in [0, 1]
    Xtr, Xte = unit("train"), unit("test")
    r = recipe
    start = time.perf_counter()
    model = DDPM(TinyUNet(1, channels=r["channels"], rng=0), NoiseSchedule(kind="cosine"),
                 prediction="v", shape=(1, 8, 8), data_range=(0, 1), rng=0)
    model.fit(Xtr, steps=r["steps"], batch_size=r["batch"], lr=r["lr"],
              ema_decay=r["ema_decay"], clip_grad=r["clip_grad"], verbose=True,
              schedule=lambda opt: CosineWarmup(opt, r["warmup"], r["steps"]),
              log_every=max(r["steps"] // 5, 1))
    S, path = model.sample(r["samples"], steps=r["sample_steps"], return_trajectory=True, rng=1)
    seconds = time.perf_counter() - start
    gauss = np.random.default_rng(2).multivariate_normal(Xtr.mean(0), np.cov(Xtr.T), 1000)
    # distances in the model's [-1, 1] pixel scale (twice the [0, 1] scale's)
    sw = lambda A: 2 * sliced_wasserstein(A, Xte, rng=0)
    result = {"digits_sw": sw(S), "digits_floor": sw(Xtr), "digits_gaussian": sw(gauss),
              "digits_seconds": seconds, "digits_steps": r["steps"]}
    print(f"digits: {r['steps']} steps and {r['samples']} samples in {seconds:.0f} s; sliced "
          f"Wasserstein to held-out (pixels in [-1, 1]): DDPM {result['digits_sw']:.4f}, "
          f"training digits {result['digits_floor']:.4f}, Gaussian fit "
          f"{result['digits_gaussian']:.4f}")

    fig = plot.image_panels([("DDPM samples", S[:64]), ("held-out digits", Xte[:64])], cols=8,
                            vmin=0, vmax=1)
    result["digits_figure"] = plot.save(fig, os.path.join(out, "diffusion_digits.png"))
    frames, labels = reverse_frames(np.clip(path[:, :8], 0, 1), model.schedule)
    fig = plot.image_strip(frames, labels, vmin=0, vmax=1,
                           title=f"reverse process ({r['sample_steps']}-step DDIM), x_T -> x_0")
    result["digits_reverse_figure"] = plot.save(
        fig, os.path.join(out, "diffusion_digits_reverse.png"))
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description="DDPM on a 2-D toy and on the digits")
    parser.add_argument("--toy", default="swiss_roll", choices=TOYS)
    parser.add_argument("--steps", type=int, default=3000, help="2-D toy training steps")
    parser.add_argument("--digit-steps", type=int, default=None,
                        help=f"digits training steps (default {DIGITS['steps']}; 0 skips)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (tests)")
    parser.add_argument("--out", default="out")
    args = parser.parse_args(argv)
    recipe = dict(QUICK_DIGITS if args.quick else DIGITS)
    if args.digit_steps is not None:
        recipe["steps"] = args.digit_steps
    result = toy(args.toy, 100 if args.quick else args.steps, 500 if args.quick else 5000,
                 args.out)
    if recipe["steps"] > 0:
        result.update(digits(recipe, args.out))
    return result


if __name__ == "__main__":
    main()
