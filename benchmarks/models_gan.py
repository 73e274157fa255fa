"""GAN and WGAN-GP on the 8- and 25-Gaussians toys: minigen next to the same WGAN-GP in PyTorch.

    python benchmarks/models_gan.py [--iters 3000] [--seeds 0 1 2] [--toys 8gauss 25gauss]
        [--models gan wgan-gp torch] [--hidden 128] [--n-critic 5] [--lr 1e-3]
        [--betas 0.5 0.9] [--batch 256] [--gp 0.1] [--scale 2.828] [--ema 0.999]
        [--trace EVERY] [--quick]
    python benchmarks/models_gan.py --time [--widths 128 256 512] [--iters 20]

For each toy (noise sigma: 0.1 for 8 Gaussians, 0.05 for 25), model and seed, after a budget
of ``--iters`` generator iterations (each: n_critic critic updates, the first of them with a
generator update; the GAN takes n_critic 1):
  * modes covered: a sample belongs to its nearest mode when within 3 sigma of it; a mode is
    covered when it holds at least 1% of the samples;
  * high quality: the share of samples within 3 sigma of their nearest mode;
  * SW: sliced Wasserstein distance between 5,000 samples and 5,000 held-out points (the
    held-out-vs-held-out value is the noise floor).
Networks: MLPs with 3 hidden ReLU layers of ``--hidden`` units (the WGAN-GP paper's toys use
512), z_dim 2. ``--scale s`` trains on X / s and multiplies the samples by s. The penalty pulls
the critic's gradient norm to 1 whatever the data's scale while the Wasserstein term grows with
it, so the scale and lambda (``--gp``) set the balance between the two. The defaults are the
paper's code for its toys (lambda 0.1 on the grid divided by 2.828, i.e. coordinates of
standard deviation 0.5 for both toys here) with Adam's learning rate raised from 1e-4 to 1e-3,
which covers the 25 modes in a few thousand generator iterations (the sweep is in
benchmarks/README.md). ``--ema``: sample from an exponential moving average of the generator's
weights (decay min(ema, (1 + k) / (10 + k)) at critic step k, as minigen's fit; 0 turns it
off). ``--trace EVERY`` also scores the trained and the averaged generator every EVERY
iterations. PyTorch runs in its own process with the same architecture, losses, penalty,
update order, optimiser, budget and seed; its random streams differ, so compare the seed
spreads.

``--time`` measures milliseconds per generator iteration of the WGAN-GP for each width, minigen
and PyTorch each in its own process with their default threads, after a warm-up (best of 3
rounds of ``--iters`` iterations): what a wall-clock budget buys.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import machine  # noqa: E402

from minigen.data import eight_gaussians, twenty_five_gaussians  # noqa: E402
from minigen.metrics import sliced_wasserstein  # noqa: E402

TOYS = {"8gauss": (eight_gaussians, 0.1,
                   2.0 * np.stack([np.cos(np.arange(8) * np.pi / 4),
                                   np.sin(np.arange(8) * np.pi / 4)], 1)),
        "25gauss": (twenty_five_gaussians, 0.05,
                    np.stack(np.meshgrid(np.arange(-2, 3), np.arange(-2, 3)), -1)
                    .reshape(-1, 2).astype(float))}
Z_DIM, N_TRAIN, N_EVAL = 2, 20000, 5000
RECIPE = dict(hidden=128, n_critic=5, lr=1e-3, betas=(0.5, 0.9), batch=256, gp=0.1,
              scale=2.828, ema=0.999)


def quality(S, modes, sigma, held_out):
    d = np.sqrt(((S[:, None, :] - modes[None]) ** 2).sum(-1))
    nearest, close = d.argmin(1), d.min(1) < 3 * sigma
    counts = np.bincount(nearest[close], minlength=len(modes))
    return {"modes": int((counts >= 0.01 * len(S)).sum()), "quality": float(close.mean()),
            "sw": float(sliced_wasserstein(S, held_out, rng=0))}


def evaluate(toy, S):
    sample_fn, sigma, modes = TOYS[toy]
    return quality(S, modes, sigma, sample_fn(N_EVAL, noise=sigma, rng=999))


def minigen_model(model, r, seed):
    from minigen.models import GAN, WGANGP
    hidden = (r["hidden"],) * 3
    if model == "gan":
        return GAN.mlp(x_dim=2, z_dim=Z_DIM, hidden=hidden, rng=seed)
    return WGANGP.mlp(x_dim=2, z_dim=Z_DIM, hidden=hidden, rng=seed, gp_weight=r["gp"],
                      n_critic=r["n_critic"], betas=r["betas"])


def minigen_run(toy, model, iters, seed, r, every=None):
    """Train, then score samples of the averaged generator; with ``every``, also score the
    trained and the averaged generator every ``every`` iterations (training resumes from a
    checkpoint between them, exactly as one run) into ``trace``."""
    sample_fn, sigma, _ = TOYS[toy]
    X = sample_fn(N_TRAIN, noise=sigma, rng=seed) / r["scale"]
    m = minigen_model(model, r, seed)
    per_iter = 1 if model == "gan" else r["n_critic"]
    fit = dict(batch_size=r["batch"], rng=seed, lr=r["lr"], ema_decay=r["ema"] or None)
    trace, seconds = [], 0.0
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "run.npz")
        for done in (list(range(every, iters, every)) if every else []) + [iters]:
            start = time.perf_counter()
            if every:
                m.fit(X, steps=done * per_iter, checkpoint=path, log_every=every * per_iter,
                      resume=path if os.path.exists(path) else None, **fit)
            else:
                m.fit(X, steps=done * per_iter, **fit)
            seconds += time.perf_counter() - start
            if every:
                averaged, m.ema_ = m.ema_, None
                raw = evaluate(toy, r["scale"] * m.sample(N_EVAL, rng=seed + 100))
                m.ema_ = averaged
                trace.append((done, raw, evaluate(toy, r["scale"] * m.sample(N_EVAL,
                                                                             rng=seed + 100))))
    return dict(evaluate(toy, r["scale"] * m.sample(N_EVAL, rng=seed + 100)), seconds=seconds,
                trace=trace)


def torch_wgan(r, seed):
    """The same WGAN-GP in PyTorch: Algorithm 1 of Gulrajani et al. Returns (G, one critic
    step with the generator update on every n_critic-th, the EMA state)."""
    import torch
    nn = torch.nn
    torch.manual_seed(seed)
    hidden, batch, n_critic = (r["hidden"],) * 3, r["batch"], r["n_critic"]

    def mlp(a, b):
        sizes, layers = (a,) + hidden + (b,), []
        for i, (p, q) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [nn.Linear(p, q)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
        return nn.Sequential(*layers)

    G, D = mlp(Z_DIM, 2), mlp(2, 1)
    opt_g = torch.optim.Adam(G.parameters(), lr=r["lr"], betas=tuple(r["betas"]))
    opt_d = torch.optim.Adam(D.parameters(), lr=r["lr"], betas=tuple(r["betas"]))
    ema = {k: v.detach().clone() for k, v in G.state_dict().items()}

    def step(k, X):
        real = X[torch.randint(0, len(X), (batch,))]
        with torch.no_grad():
            fake = G(torch.randn(batch, Z_DIM))
        e = torch.rand(batch, 1)
        xh = (e * real + (1 - e) * fake).requires_grad_(True)
        g, = torch.autograd.grad(D(xh).sum(), xh, create_graph=True)
        gp = ((g.pow(2).sum(1) + 1e-12).sqrt() - 1).pow(2).mean()
        opt_d.zero_grad()
        (D(fake).mean() - D(real).mean() + r["gp"] * gp).backward()
        opt_d.step()
        if (k - 1) % n_critic == 0:
            opt_g.zero_grad()
            (-D(G(torch.randn(batch, Z_DIM))).mean()).backward()
            opt_g.step()
        if r["ema"]:
            decay = min(r["ema"], (1 + k) / (10 + k))
            with torch.no_grad():
                for name, v in G.state_dict().items():
                    ema[name].mul_(decay).add_(v, alpha=1 - decay)
    return G, step, ema


def torch_run(toy, iters, seed, r, every=None):
    import torch
    sample_fn, sigma, _ = TOYS[toy]
    X = torch.tensor(sample_fn(N_TRAIN, noise=sigma, rng=seed) / r["scale"],
                     dtype=torch.float32)
    G, step, ema = torch_wgan(r, seed)

    def scored(weights=None):
        trained = {k: v.clone() for k, v in G.state_dict().items()}
        if weights is not None:
            G.load_state_dict(weights)
        with torch.no_grad():
            S = G(torch.randn(N_EVAL, Z_DIM)).numpy().astype(np.float64)
        G.load_state_dict(trained)
        return evaluate(toy, r["scale"] * S)

    trace, seconds = [], 0.0
    for k in range(1, iters * r["n_critic"] + 1):
        start = time.perf_counter()
        step(k, X)
        seconds += time.perf_counter() - start
        if every and k % (every * r["n_critic"]) == 0:
            trace.append((k // r["n_critic"], scored(), scored(ema if r["ema"] else None)))
    return dict(scored(ema if r["ema"] else None), seconds=seconds, trace=trace)


def time_per_iter(library, r, iters, rounds=3):
    """Best of ``rounds`` mean wall times (ms) of one generator iteration (n_critic critic
    steps) on 25 Gaussians, after a warm-up of ``iters`` iterations (kernel compilation)."""
    X = twenty_five_gaussians(N_TRAIN, noise=0.05, rng=0)
    if library == "torch":
        import torch
        _, step, _ = torch_wgan(r, 0)
        X = torch.tensor(X, dtype=torch.float32)

        def run(n):
            for k in range(1, n * r["n_critic"] + 1):
                step(k, X)
    else:
        def run(n):   # a fresh fit: its set-up is small next to n iterations
            minigen_model("wgan-gp", r, 0).fit(X, steps=n * r["n_critic"],
                                               batch_size=r["batch"], rng=0, lr=r["lr"],
                                               ema_decay=r["ema"] or None)
    run(iters)
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run(iters)
        best = min(best, (time.perf_counter() - start) / iters)
    return 1e3 * best


def in_process(mode, recipe, *args):
    """Run ``mode`` (torch, time-minigen or time-torch) of this script in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--child", mode, json.dumps(recipe),
                          *map(str, args)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child(mode, recipe, args):
    r = json.loads(recipe)
    if mode == "torch":
        toy, iters, seed, every = args
        return torch_run(toy, int(iters), int(seed), r, int(every) or None)
    return time_per_iter(mode.split("-")[1], r, int(args[0]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=3000, help="generator iterations")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--toys", nargs="+", default=list(TOYS), choices=list(TOYS))
    ap.add_argument("--models", nargs="+", default=["gan", "wgan-gp", "torch"],
                    choices=["gan", "wgan-gp", "torch"])
    ap.add_argument("--hidden", type=int, default=RECIPE["hidden"],
                    help="units in each of 3 hidden layers")
    ap.add_argument("--n-critic", type=int, default=RECIPE["n_critic"])
    ap.add_argument("--lr", type=float, default=RECIPE["lr"], help="Adam's learning rate")
    ap.add_argument("--betas", type=float, nargs=2, default=RECIPE["betas"])
    ap.add_argument("--batch", type=int, default=RECIPE["batch"])
    ap.add_argument("--gp", type=float, default=RECIPE["gp"], help="penalty weight lambda")
    ap.add_argument("--scale", type=float, default=RECIPE["scale"])
    ap.add_argument("--ema", type=float, default=RECIPE["ema"])
    ap.add_argument("--trace", type=int, metavar="EVERY")
    ap.add_argument("--quick", action="store_true", help="100 iterations, one seed")
    ap.add_argument("--time", action="store_true", help="ms per generator iteration")
    ap.add_argument("--widths", type=int, nargs="+", default=[128, 256, 512])
    ap.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], args.child[1], args.child[2:])))
        return
    r = dict(hidden=args.hidden, n_critic=args.n_critic, lr=args.lr, betas=tuple(args.betas),
             batch=args.batch, gp=args.gp, scale=args.scale, ema=args.ema)
    if args.time:
        print(f"# WGAN-GP ms per generator iteration ({r['n_critic']} critic steps, batch "
              f"{r['batch']}); {machine()}\n")
        print("| width | minigen ms | PyTorch ms | ratio |")
        print("|---|---|---|---|")
        for width in args.widths:
            rw = dict(r, hidden=width)
            ms = [in_process(f"time-{lib}", rw, args.iters) for lib in ("minigen", "torch")]
            print(f"| {width} | {ms[0]:.1f} | {ms[1]:.1f} | {ms[0] / ms[1]:.2f} |", flush=True)
        return
    iters, seeds = (100, [0]) if args.quick else (args.iters, args.seeds)
    print(f"# GANs on 2-D toys, {iters} generator iterations, recipe {r}; {machine()}\n")
    print("| toy | model | seed | modes | high quality | SW | floor SW | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for toy in args.toys:
        sample_fn, sigma, modes = TOYS[toy]
        floor = sliced_wasserstein(sample_fn(N_EVAL, noise=sigma, rng=998),
                                   sample_fn(N_EVAL, noise=sigma, rng=999), rng=0)
        for name in args.models:
            for seed in seeds:
                if name == "torch":
                    res = in_process("torch", r, toy, iters, seed, args.trace or 0)
                else:
                    res = minigen_run(toy, name, iters, seed, r, args.trace)
                for done, raw, averaged in res["trace"]:
                    print(f"|   {toy} | {name} | {seed} | after {done}: trained "
                          f"{raw['modes']}/{len(modes)} {raw['quality']:.1%} SW {raw['sw']:.4f};"
                          f" averaged {averaged['modes']}/{len(modes)} {averaged['quality']:.1%}"
                          f" SW {averaged['sw']:.4f} |", flush=True)
                print(f"| {toy} | {name} | {seed} | {res['modes']}/{len(modes)} | "
                      f"{res['quality']:.1%} | {res['sw']:.4f} | {floor:.4f} | "
                      f"{res['seconds']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
