"""GAN and WGAN-GP on the 8- and 25-Gaussians toys: minigen next to the same WGAN-GP in PyTorch.

    python benchmarks/models_gan.py [--steps 4000] [--seeds 0 1 2] [--hidden 128] [--lr 1e-4]
                                    [--quick]

For each toy (noise sigma: 0.1 for 8 Gaussians, 0.05 for 25), model and seed, after a fixed
budget of discriminator steps (batch 256; the generator moves every n_critic steps):
  * modes covered: a sample belongs to its nearest mode when within 3 sigma of it; a mode is
    covered when it holds at least 1% of the samples;
  * high quality: the share of samples within 3 sigma of their nearest mode;
  * SW: sliced Wasserstein distance between 5,000 samples and 5,000 held-out points (the
    held-out-vs-held-out value is the noise floor).
Networks: MLPs with 3 hidden ReLU layers (the WGAN-GP paper's toys use 512 units; the default
here is 128, which fits a 2-core budget; z_dim 2). PyTorch runs
in its own process (``--torch`` mode prints JSON), with the same architecture, losses,
optimiser, budget and seed (its random streams differ, so compare the seed spreads).
"""
import argparse
import json
import os
import subprocess
import sys
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
Z_DIM, BATCH, N_EVAL = 2, 256, 5000


def quality(S, modes, sigma, held_out):
    d = np.sqrt(((S[:, None, :] - modes[None]) ** 2).sum(-1))
    nearest, close = d.argmin(1), d.min(1) < 3 * sigma
    counts = np.bincount(nearest[close], minlength=len(modes))
    return {"modes": int((counts >= 0.01 * len(S)).sum()), "quality": float(close.mean()),
            "sw": float(sliced_wasserstein(S, held_out, rng=0))}


def minigen_run(toy, model, steps, seed, hidden, lr):
    from minigen.models import GAN, WGANGP
    sample_fn, sigma, modes = TOYS[toy]
    X = sample_fn(20000, noise=sigma, rng=seed)
    cls = WGANGP if model == "wgan-gp" else GAN
    start = time.perf_counter()
    m = cls.mlp(x_dim=2, z_dim=Z_DIM, hidden=hidden, rng=seed).fit(
        X, steps=steps, batch_size=BATCH, rng=seed, lr=lr)
    seconds = time.perf_counter() - start
    S = m.sample(N_EVAL, rng=seed + 100)
    return dict(quality(S, modes, sigma, sample_fn(N_EVAL, noise=sigma, rng=999)),
                seconds=seconds)


def torch_run(toy, steps, seed, hidden, lr):
    """The same WGAN-GP in PyTorch: Algorithm 1 of Gulrajani et al., betas (0.5, 0.9), the
    generator's weights averaged with decay 0.999 (EMA warm-up as minigen's) for sampling."""
    import torch
    nn = torch.nn
    torch.manual_seed(seed)
    sample_fn, sigma, modes = TOYS[toy]
    X = torch.tensor(sample_fn(20000, noise=sigma, rng=seed), dtype=torch.float32)

    def mlp(a, b):
        sizes, layers = (a,) + hidden + (b,), []
        for i, (p, q) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers += [nn.Linear(p, q)] + ([nn.ReLU()] if i < len(sizes) - 2 else [])
        return nn.Sequential(*layers)

    G, D = mlp(Z_DIM, 2), mlp(2, 1)
    opt_g = torch.optim.Adam(G.parameters(), lr=lr, betas=(0.5, 0.9))
    opt_d = torch.optim.Adam(D.parameters(), lr=lr, betas=(0.5, 0.9))
    ema = {k: v.detach().clone() for k, v in G.state_dict().items()}
    start = time.perf_counter()
    for step in range(1, steps + 1):
        real = X[torch.randint(0, len(X), (BATCH,))]
        with torch.no_grad():
            fake = G(torch.randn(BATCH, Z_DIM))
        e = torch.rand(BATCH, 1)
        xh = (e * real + (1 - e) * fake).requires_grad_(True)
        g, = torch.autograd.grad(D(xh).sum(), xh, create_graph=True)
        gp = ((g.pow(2).sum(1) + 1e-12).sqrt() - 1).pow(2).mean()
        opt_d.zero_grad()
        (D(fake).mean() - D(real).mean() + 10 * gp).backward()
        opt_d.step()
        if (step - 1) % 5 == 0:
            opt_g.zero_grad()
            (-D(G(torch.randn(BATCH, Z_DIM))).mean()).backward()
            opt_g.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in G.state_dict().items():
                ema[k].mul_(decay).add_(v, alpha=1 - decay)
    G.load_state_dict(ema)
    seconds = time.perf_counter() - start
    with torch.no_grad():
        S = G(torch.randn(N_EVAL, Z_DIM)).numpy().astype(np.float64)
    return dict(quality(S, modes, sigma, sample_fn(N_EVAL, noise=sigma, rng=999)),
                seconds=seconds)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--hidden", type=int, default=128, help="units in each of 3 hidden layers")
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam's learning rate (both models)")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--quick", action="store_true", help="500 steps, one seed")
    ap.add_argument("--torch", nargs=5, metavar=("TOY", "STEPS", "SEED", "HIDDEN", "LR"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.torch:
        toy, steps, seed, hidden, lr = args.torch
        print(json.dumps(torch_run(toy, int(steps), int(seed), (int(hidden),) * 3, float(lr))))
        return
    steps, seeds = (500, [0]) if args.quick else (args.steps, args.seeds)
    hidden = (args.hidden,) * 3
    print(f"# GANs on 2-D toys, MLPs 3x{args.hidden}, {steps} discriminator steps, batch "
          f"{BATCH}, Adam lr {args.lr}; {machine()}\n")
    print("| toy | model | seed | modes | high quality | SW | floor SW | seconds |")
    print("|---|---|---|---|---|---|---|---|")
    for toy, (sample_fn, sigma, modes) in TOYS.items():
        floor = sliced_wasserstein(sample_fn(N_EVAL, noise=sigma, rng=998),
                                   sample_fn(N_EVAL, noise=sigma, rng=999), rng=0)
        for name in ("gan", "wgan-gp", "torch wgan-gp"):
            for seed in seeds:
                if name.startswith("torch"):
                    out = subprocess.run([sys.executable, __file__, "--torch", toy, str(steps),
                                          str(seed), str(args.hidden), str(args.lr)],
                                         capture_output=True,
                                         text=True, check=True)
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                else:
                    r = minigen_run(toy, name, steps, seed, hidden, args.lr)
                print(f"| {toy} | {name} | {seed} | {r['modes']}/{len(modes)} | "
                      f"{r['quality']:.1%} | {r['sw']:.4f} | {floor:.4f} | {r['seconds']:.0f} |",
                      flush=True)


if __name__ == "__main__":
    main()
