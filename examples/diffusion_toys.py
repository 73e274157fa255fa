"""DDPM on a 2-D toy and on the 8x8 digits: samples, and the reverse process frame by frame.

    python examples/diffusion_toys.py [--toy swiss_roll] [--steps 3000] [--digit-steps N]
                                      [--ranks 2] [--quick] [--out out]

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
The digits train data-parallel on ``--ranks`` MPI processes (default 2, one per core here),
which this script starts itself with mpiexec: the ranks take the steps one process would take
on the same global batches, up to the order of float sums (``minigen.distributed``), about 1.6x
as many per second on 2 cores as one process with 2 threads. Without mpi4py or mpiexec (the
``dist`` extra), or with ``--ranks 1``, they train in this process: the same steps, slower.
Prints sliced Wasserstein distances to held-out data next to their floors (a second draw of
the toy; the training digits) and, for the digits, a full-covariance Gaussian fit.
``main(argv)`` returns these numbers (and the digits model).
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

import minigen
from minigen import plot
from minigen.data import load_digits, make_toy
from minigen.distributed import world
from minigen.io import load_model, save_model
from minigen.metrics import sliced_wasserstein
from minigen.models import DDPM, NoiseSchedule, TimeMLP, TinyUNet
from minigen.optim import CosineWarmup

TOYS = ["swiss_roll", "moons", "eight_gaussians", "pinwheel", "checkerboard", "circles"]
# The digits recipe: cosine schedule, v-prediction, Adam with warm-up and cosine decay,
# gradient clipping, EMA; 'steps' is the default budget: 5,000 steps of the 32-channel network,
# about 32 ms each on 2 MPI ranks, plus sampling fit in 3 minutes on 2 cores
# (benchmarks/README.md, "The digits DDPM at 32 channels in 3 minutes"); 16 channels stop
# improving near SW 0.065 however long they train. 1,000 samples are scored, since sliced
# Wasserstein grows as the sample shrinks and the benchmark's numbers are for 1,000
DIGITS = dict(channels=32, batch=64, lr=3e-3, warmup=50, clip_grad=1.0, ema_decay=0.995,
              steps=5000, samples=1000, sample_steps=50)
QUICK_DIGITS = dict(DIGITS, channels=8, batch=32, warmup=5, steps=30, samples=64,
                    sample_steps=10)
# the thread pools sized for each rank: cores / ranks threads
THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
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


def digits_model(r):
    """The digits DDPM of recipe ``r``, untrained."""
    return DDPM(TinyUNet(1, channels=r["channels"], rng=0), NoiseSchedule(kind="cosine"),
                prediction="v", shape=(1, 8, 8), data_range=(0, 1), rng=0)


def fit_digits(model, X, r):
    return model.fit(X, steps=r["steps"], batch_size=r["batch"], lr=r["lr"],
                     ema_decay=r["ema_decay"], clip_grad=r["clip_grad"], verbose=True,
                     schedule=lambda opt: CosineWarmup(opt, r["warmup"], r["steps"]),
                     log_every=max(r["steps"] // 5, 1))


def mpi_launcher(ranks):
    """The mpiexec that runs ``ranks`` data-parallel ranks (the one beside this Python first),
    or None for ranks == 1 or where mpiexec or mpi4py (the dist extra) is missing."""
    if ranks < 2 or importlib.util.find_spec("mpi4py") is None:
        return None
    return shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or \
        shutil.which("mpiexec")


def train_digits(X, r, ranks):
    """(the fitted digits DDPM, where it trained). With ``mpi_launcher(ranks)``, ``ranks``
    processes of cores / ranks threads each run ``fit_digits`` data-parallel (this script's
    ``--digits-worker``; rank 0 saves the model, read back here); otherwise this process
    does."""
    mpiexec = mpi_launcher(ranks)
    if mpiexec is None:
        return fit_digits(digits_model(r), X, r), "1 process"
    threads = str(max(1, (os.cpu_count() or 1) // ranks))
    env = dict(os.environ, **{k: threads for k in THREADS})
    # the ranks import the minigen this process runs, wherever it lives
    root = os.path.dirname(os.path.dirname(os.path.abspath(minigen.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "digits_ddpm.npz")
        subprocess.run([mpiexec, "-n", str(ranks), sys.executable, os.path.abspath(__file__),
                        "--digits-worker", path, "--recipe", json.dumps(r)], env=env,
                       check=True)
        return load_model(path), f"{ranks} MPI ranks"


def digits_worker(path, r):
    """One rank of ``train_digits``: fit on the training digits; rank 0 saves the model."""
    model = fit_digits(digits_model(r), unit_digits("train"), r)
    if world()[0] == 0:
        save_model(model, path)


def unit_digits(split):
    return load_digits(split, scale="unit")[0]        # pixels in [0, 1]


def digits(recipe, out, ranks=1):
    Xtr, Xte = unit_digits("train"), unit_digits("test")
    r = recipe
    start = time.perf_counter()
    model, trained_on = train_digits(Xtr, r, ranks)
    S, path = model.sample(r["samples"], steps=r["sample_steps"], return_trajectory=True, rng=1)
    seconds = time.perf_counter() - start
    gauss = np.random.default_rng(2).multivariate_normal(Xtr.mean(0), np.cov(Xtr.T), 1000)
    # distances in the model's [-1, 1] pixel scale (twice the [0, 1] scale's)
    sw = lambda A: 2 * sliced_wasserstein(A, Xte, rng=0)
    result = {"digits_sw": sw(S), "digits_floor": sw(Xtr), "digits_gaussian": sw(gauss),
              "digits_seconds": seconds, "digits_steps": r["steps"],
              "digits_trained_on": trained_on, "digits_model": model}
    print(f"digits: {r['steps']} steps ({trained_on}) and {r['samples']} samples in "
          f"{seconds:.0f} s; sliced "
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
    parser.add_argument("--steps", type=int, default=3000,
                        help="2-D toy training steps (0 skips)")
    parser.add_argument("--digit-steps", type=int, default=None,
                        help=f"digits training steps (default {DIGITS['steps']}; 0 skips)")
    parser.add_argument("--ranks", type=int, default=2,
                        help="MPI ranks for the digits' training (1: this process)")
    parser.add_argument("--quick", action="store_true", help="tiny budgets (tests)")
    parser.add_argument("--out", default="out")
    parser.add_argument("--digits-worker", metavar="PATH", help=argparse.SUPPRESS)
    parser.add_argument("--recipe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.digits_worker:
        return digits_worker(args.digits_worker, json.loads(args.recipe))
    if args.ranks < 1:
        parser.error(f"--ranks must be >= 1, got {args.ranks}")
    recipe = dict(QUICK_DIGITS if args.quick else DIGITS)
    if args.digit_steps is not None:
        recipe["steps"] = args.digit_steps
    result = {}
    if args.steps > 0:
        result.update(toy(args.toy, 100 if args.quick else args.steps,
                          500 if args.quick else 5000, args.out))
    if recipe["steps"] > 0:
        result.update(digits(recipe, args.out, args.ranks))
    return result


if __name__ == "__main__":
    main()
