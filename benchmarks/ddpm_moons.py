"""The demo's moons DDPM: how far its samples are from the moons, per recipe.

    python benchmarks/ddpm_moons.py [--seeds 0 1] [--set key=value ...] [--demo]
                                    [--save PREFIX]

Trains a DDPM(TimeMLP) on ``moons(2000, rng=0)`` as ``minigen demo`` does (the recipe is
``RECIPE``, the demo's MOONS entry; ``--set`` overrides entries, e.g. ``--set standardize=0
--set hidden=256``; ``train_n`` and ``train_seed`` draw other training data,
``moons(train_n, rng=train_seed)``) and scores its samples three ways, per training seed:

  * demo SW: the sliced Wasserstein distance of 2,000 samples to the 2,000 held-out points
    ``moons(2000, rng=1)``, sampler and directions seeded k = 0..3 (the demo's row is k = 0);
    one such draw moves by about +-0.01 with k, so the mean over k is reported too;
  * the bias b = sqrt(SW^2 - s^2) of 10,000 samples (sampler seed 5) against 20,000 fresh
    points ``moons(20000, rng=7)``, where s is the SW of 10,000 fresh points
    ``moons(10000, rng=8)`` against the same 20,000 (the metric's own noise at these sizes;
    both with the directions of ``rng=0``): the part of SW a perfect sampler would not have;
  * diagnostics of those 10,000 samples: the share on the upper moon (data: 0.5), the standard
    deviation across the arc of the points within 0.2 of an arc (data: about 0.05, the noise),
    the share farther than 0.2 (data: about 0), and the share of each moon's samples in the 30
    degrees at its inner tip (data: 1/6).

``--demo`` trains through ``commands.fit_model`` with the demo's MOONS entry unchanged (on
the recipe's training data, so ``--set train_n=...`` still applies) and also reports the held-out bound and the row's CPU seconds (fit, bound, 2,000 samples, SW and
MMD, as ``commands.evaluate`` does). One JSON line per seed.
"""
import argparse
import json
import time

import numpy as np

from minigen import manual_seed, metrics
from minigen.cli import commands
from minigen.cli.demo import MOONS, cosine_decay
from minigen.data import moons
from minigen.models.diffusion import DDPM, NoiseSchedule, TimeMLP

DEMO = next(run for run in MOONS if run.name == "ddpm")
RECIPE = dict(hidden=128, depth=3, emb_dim=32, activation="relu", T=1000, schedule="linear",
              prediction="v", standardize=1, batch=256, lr=3e-3, steps=8000, decay=1,
              ema=0.999, sample_steps=0, variance="fixed_small", clip=0.0, train_n=2000,
              train_seed=0)
STRINGS = ("activation", "schedule", "prediction", "variance")
FLOATS = ("lr", "ema", "clip")


def build(recipe, X, seed):
    """The DDPM of ``recipe``, seeded as ``commands.fit_model`` seeds it, and its fit keywords."""
    manual_seed(seed)
    net = TimeMLP(X.shape[1], recipe["hidden"], recipe["depth"], recipe["emb_dim"],
                  recipe["activation"], rng=seed)
    model = DDPM(net, NoiseSchedule(recipe["T"], kind=recipe["schedule"]),
                 prediction=recipe["prediction"], standardize=bool(recipe["standardize"]),
                 sample_steps=recipe["sample_steps"] or None, rng=seed)
    fit = dict(steps=recipe["steps"], batch_size=recipe["batch"], lr=recipe["lr"],
               ema_decay=recipe["ema"], rng=seed)
    if recipe["decay"]:
        fit["schedule"] = cosine_decay(recipe["steps"])
    return model, fit


def arcs(S):
    """Per point: which moon is nearer (True: the upper one), the signed distance across its
    arc and the angle along it from the inner tip (0 at the tip inside the other moon)."""
    upper, lower = S, (1.0, 0.5) - S          # the lower moon mirrored onto the upper
    dist = []
    for P in (upper, lower):
        r, angle = np.hypot(P[:, 0], P[:, 1]), np.arctan2(P[:, 1], P[:, 0])
        on = (angle >= 0)
        tips = np.minimum(np.hypot(P[:, 0] - 1, P[:, 1]), np.hypot(P[:, 0] + 1, P[:, 1]))
        dist.append((np.where(on, np.abs(r - 1), tips), np.where(on, r - 1, np.nan),
                     np.clip(angle, 0, np.pi)))
    is_upper = dist[0][0] <= dist[1][0]
    pick = lambda k: np.where(is_upper, dist[0][k], dist[1][k])
    return is_upper, pick(0), pick(1), pick(2)


def diagnostics(S):
    is_upper, far, across, angle = arcs(S)
    near = far <= 0.2
    tip = angle < np.pi / 6
    return {"upper": float(is_upper.mean()), "sd_across": float(np.nanstd(across[near])),
            "beyond": float((~near).mean()),
            "tip_upper": float(tip[is_upper].mean()), "tip_lower": float(tip[~is_upper].mean())}


def scores(model, Xte, sample_kw, demo_seeds=(0, 1, 2, 3), save=None):
    out = {}
    sw = [metrics.sliced_wasserstein(model.sample(2000, rng=k, **sample_kw), Xte, rng=k)
          for k in demo_seeds]
    out["demo_sw"], out["demo_sw_mean"] = [round(v, 4) for v in sw], round(float(np.mean(sw)), 4)
    big, fresh = moons(20000, rng=7), moons(10000, rng=8)
    noise = metrics.sliced_wasserstein(fresh, big, rng=0)
    S = model.sample(10000, rng=5, **sample_kw)
    if save:
        np.save(save, S)
    sw_big = metrics.sliced_wasserstein(S, big, rng=0)
    out["sw_10k"], out["s"] = round(sw_big, 4), round(noise, 4)
    out["bias"] = round(float(np.sqrt(max(sw_big ** 2 - noise ** 2, 0.0))), 4)
    out.update({k: round(v, 4) for k, v in diagnostics(S).items()})
    return out


def demo_row(seed, Xtr, Xte):
    """The demo's row through its own code path, with its CPU seconds."""
    start = time.process_time()
    model, fit_s = commands.fit_model("ddpm", Xtr, DEMO.options, DEMO.steps[0], quiet=True,
                                      rng=seed, **DEMO.fit_options)
    result = commands.evaluate(model, Xte, rng=0)
    cpu = time.process_time() - start
    return model, {"row_cpu_s": round(cpu, 1), "fit_s": round(fit_s, 1),
                   "row_sw": round(result["sw"], 4), "log_p": round(result["log_p"], 3)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--save", metavar="PREFIX", help="save the 10,000 samples of seed k "
                        "to PREFIX_k.npy")
    args = parser.parse_args()
    recipe = dict(RECIPE)
    for item in args.set:
        key, value = item.split("=", 1)
        if key not in recipe:
            parser.error(f"--set: unknown key {key!r} (one of {', '.join(recipe)})")
        recipe[key] = value if key in STRINGS else float(value) if key in FLOATS else int(value)
    Xtr, Xte = moons(recipe["train_n"], rng=recipe["train_seed"]), moons(2000, rng=1)
    sample_kw = {} if args.demo else {"variance": recipe["variance"],
                                      "clip": recipe["clip"] or None}
    for seed in args.seeds:
        if args.demo:
            model, row = demo_row(seed, Xtr, Xte)
            line = {"recipe": "demo", "seed": seed, **row}
        else:
            model, fit = build(recipe, Xtr, seed)
            start = time.process_time()
            model.fit(Xtr, **fit)
            line = {"recipe": {k: v for k, v in recipe.items() if v != RECIPE[k]}, "seed": seed,
                    "fit_cpu_s": round(time.process_time() - start, 1)}
        line.update(scores(model, Xte, sample_kw,
                           save=args.save and f"{args.save}_{seed}.npy"))
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
