"""DDPM benchmark: minigen vs the same model in PyTorch (CPU), one run.

    python benchmarks/models.py [--quick] [--out out/benchmarks]

Prints Markdown tables:
  * speed: one training step (batch 1024, TimeMLP 3x128 with a 32-d sinusoidal time
    embedding, Adam; best of 5 interleaved) and 1000-step ancestral sampling of 10,000
    points (``--rounds`` alternations, median and range of the per-round ratios), and the
    digits DDPM's TinyUNet training step (benchmarks/models_speed.py: PyTorch in its own
    process each round), minigen / PyTorch (targets <= 1.3x, <= 0.8x and <= 1.2x);
  * quality on 2-D toys (swiss roll, moons, 8 gaussians): after the same training budget in
    both libraries (same architecture, optimiser, schedule, batch, EMA), the sliced
    Wasserstein distance and MMD (Gaussian kernel, h = 0.1, 0.2, 0.5) between 10,000 samples
    and 10,000 held-out points; a second held-out draw gives the noise floor;
  * digits: the digits recipe (TinyUNet with GroupNorm, cosine schedule, v-prediction,
    warm-up + cosine decay; ``models_ddpm_digits.RECIPE``) on the 8x8 digits scaled to
    [-1, 1]; sliced Wasserstein of 1,000 samples (the recipe's DDIM, x0 clipped to
    [-1, 1]) to the held-out digits next to train-vs-held-out and a fitted Gaussian; the
    sample grid is saved under --out. benchmarks/models_ddpm_digits.py runs the same model
    in PyTorch over three seeds.
``--speed-only`` runs the first table alone. Thread counts follow the environment
(OPENBLAS_NUM_THREADS, OMP_NUM_THREADS for PyTorch, NUMBA_NUM_THREADS).
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import interleaved, machine  # noqa: E402

from minigen.data import make_toy  # noqa: E402
from minigen.metrics import mmd2, sliced_wasserstein  # noqa: E402
from minigen.models import DDPM, NoiseSchedule, TimeMLP  # noqa: E402
from minigen.optim import Adam  # noqa: E402

HIDDEN, DEPTH, EMB, BATCH, LR, EMA = 128, 3, 32, 1024, 2e-3, 0.995
BANDWIDTHS = (0.1, 0.2, 0.5)


# --- the same model in PyTorch --------------------------------------------------------------
def torch_ddpm(dim, schedule, seed):
    """TimeMLP and Algorithms 1-2 written in PyTorch, layer for layer as in minigen."""
    import torch
    nn = torch.nn
    torch.manual_seed(seed)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(dim if k == 0 else HIDDEN, HIDDEN)
                                         for k in range(DEPTH)])
            self.time = nn.ModuleList([nn.Linear(EMB, HIDDEN, bias=False) for _ in range(DEPTH)])
            self.out = nn.Linear(HIDDEN, dim)
            half = EMB // 2
            self.register_buffer("freqs", torch.exp(-np.log(1e4) * torch.arange(half) / half))

        def forward(self, x, t):
            rows = t[:1] if bool((t == t[0]).all()) else t
            args = rows.float()[:, None] * self.freqs
            e = torch.cat([torch.sin(args), torch.cos(args)], 1)
            h = x
            for layer, proj in zip(self.layers, self.time):
                h = torch.relu(layer(h) + proj(e))
            return self.out(h)

    net = Net()
    f = lambda a: torch.tensor(a, dtype=torch.float32)
    c = {k: f(getattr(schedule, k)) for k in (
        "sqrt_alpha_bars", "sqrt_one_minus_alpha_bars", "sqrt_recip_alpha_bars",
        "sqrt_recipm1_alpha_bars", "posterior_coef_x0", "posterior_coef_xt",
        "posterior_variance")}

    def loss(x0):
        t = torch.randint(0, schedule.T, (len(x0),))
        eps = torch.randn_like(x0)
        xt = c["sqrt_alpha_bars"][t, None] * x0 + c["sqrt_one_minus_alpha_bars"][t, None] * eps
        return ((net(xt, t) - eps) ** 2).mean()

    @torch.no_grad()
    def sample(n):
        x = torch.randn(n, dim)
        for t in range(schedule.T - 1, -1, -1):
            tt = torch.full((n,), t)
            eps = net(x, tt)
            x0 = c["sqrt_recip_alpha_bars"][t] * x - c["sqrt_recipm1_alpha_bars"][t] * eps
            x = c["posterior_coef_x0"][t] * x0 + c["posterior_coef_xt"][t] * x
            if t > 0:
                x = x + c["posterior_variance"][t].sqrt() * torch.randn_like(x)
        return x.numpy()

    return net, loss, sample


def torch_fit(X, steps, seed):
    import torch
    net, loss, sample = torch_ddpm(X.shape[1], NoiseSchedule(), seed)
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    data, g = torch.tensor(X, dtype=torch.float32), torch.Generator().manual_seed(seed)
    for step in range(1, steps + 1):
        opt.zero_grad()
        loss(data[torch.randint(0, len(data), (BATCH,), generator=g)]).backward()
        opt.step()
        decay = min(EMA, (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].mul_(decay).add_(v, alpha=1 - decay)
    net.load_state_dict(ema)
    return sample


# --- speed ------------------------------------------------------------------------------------
def speed_rows(quick, rounds):
    """(name, minigen s, PyTorch s, per-round ratios, target) for the training step (best of
    5 x ``steps`` steps, interleaved) and for sampling (``rounds`` alternations of one full
    1000-step run each; the seconds are medians)."""
    import torch
    X = make_toy("swiss_roll", 20000, rng=0).astype(np.float32)
    model = DDPM(TimeMLP(2, HIDDEN, DEPTH, EMB, rng=0), NoiseSchedule(), shape=(2,), rng=0)
    model.fit(X, steps=1, batch_size=BATCH, lr=LR)        # sample() needs a fitted model
    opt = Adam(list(model.parameters()), lr=LR)
    rng = np.random.default_rng(0)

    def ours():
        opt.zero_grad()
        model.loss(X[rng.integers(0, len(X), BATCH)]).backward()
        opt.step()

    net, loss, sample = torch_ddpm(2, NoiseSchedule(), 0)
    topt, data = torch.optim.Adam(net.parameters(), lr=LR), torch.tensor(X)

    def theirs():
        topt.zero_grad()
        loss(data[torch.randint(0, len(data), (BATCH,))]).backward()
        topt.step()

    steps = 50 if quick else 200
    n = 2000 if quick else 10000
    model_sample, torch_sample = (lambda: model.sample(n, rng=0)), (lambda: sample(n))
    t_step = interleaved(ours, theirs, repeat=5, number=steps, warmup=20)
    model.sample(100, rng=0), sample(100)                 # warm-up (first calls, compiles)
    t_sample = np.array([interleaved(model_sample, torch_sample, repeat=1, number=1, warmup=0)
                         for _ in range(rounds)])
    import models_speed      # the digits DDPM's TinyUNet step, PyTorch in its own process
    t_unet, r_unet = models_speed.rounds_of(rounds, 5 if quick else 10)
    return [("training step, batch 1024", *t_step, [t_step[0] / t_step[1]], 1.3),
            (f"1000-step sampling, {n:,} points", *np.median(t_sample, axis=0),
             list(t_sample[:, 0] / t_sample[:, 1]), 0.8),
            ("TinyUNet training step (digits, batch 64, 32 ch)",
             *np.median(np.array(t_unet), axis=0), r_unet, 1.2)]


# --- quality ----------------------------------------------------------------------------------
def metrics(S, H):
    return sliced_wasserstein(S, H, rng=0), mmd2(S, H, BANDWIDTHS)


def toy_rows(steps, n):
    rows = []
    for name in ("swiss_roll", "moons", "eight_gaussians"):
        X = make_toy(name, 50000, rng=1)
        H, H2 = make_toy(name, n, rng=2), make_toy(name, n, rng=3)
        start = time.perf_counter()
        model = DDPM(TimeMLP(2, HIDDEN, DEPTH, EMB, rng=0), NoiseSchedule(), rng=0)
        model.fit(X, steps=steps, batch_size=BATCH, lr=LR, ema_decay=EMA)
        ours = metrics(model.sample(n, rng=4), H)
        t_ours = time.perf_counter() - start
        start = time.perf_counter()
        theirs = metrics(torch_fit(X, steps, seed=0)(n), H)
        t_theirs = time.perf_counter() - start
        rows.append((name, ours, theirs, metrics(H2, H), t_ours, t_theirs))
    return rows


def digits_rows(steps, out):
    import models_ddpm_digits as digits_bench
    Xtr, Xte = digits_bench.digits()
    recipe = dict(digits_bench.RECIPE, steps=steps, warmup=min(digits_bench.RECIPE["warmup"],
                                                                 steps // 2))
    start = time.perf_counter()
    _, (S, sw_ddpm) = digits_bench.run_minigen(recipe, 0, Xtr, Xte)
    seconds = time.perf_counter() - start
    references = digits_bench.references()
    rows = [("DDPM samples (1,000)", sw_ddpm)] + list(references.items())
    _save_grid(S[:64].reshape(-1, 1, 8, 8), os.path.join(out, "ddpm_digits_grid.png"))
    return rows, seconds


def _save_grid(images, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig, axes = plt.subplots(8, 8, figsize=(6, 6))
    for ax, img in zip(axes.ravel(), images):
        ax.imshow(img[0], cmap="gray_r", vmin=-1, vmax=1)
        ax.axis("off")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    print(f"saved {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (a smoke run)")
    parser.add_argument("--out", default=os.path.join("out", "benchmarks"))
    parser.add_argument("--speed-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=3,
                        help="alternations of minigen and PyTorch sampling (default 3)")
    args = parser.parse_args()
    import torch
    print(f"machine: {machine()}; torch {torch.__version__} ({torch.get_num_threads()} "
          f"threads)\n")
    print("| DDPM speed | minigen s | PyTorch s | ratio, median [range] | target |\n"
          "|---|---|---|---|---|")
    for name, a, b, ratios, target in speed_rows(args.quick, args.rounds):
        spread = f" [{min(ratios):.2f}-{max(ratios):.2f}]" if len(ratios) > 1 else ""
        print(f"| {name} | {a:.4f} | {b:.4f} | {np.median(ratios):.2f}x{spread} | "
              f"<= {target}x |", flush=True)
    if args.speed_only:
        return
    steps, n = (300, 2000) if args.quick else (3000, 10000)
    print(f"\n| toy ({steps} steps, {n:,} samples) | SW minigen | SW PyTorch | SW floor | "
          f"MMD² minigen | MMD² PyTorch | MMD² floor | s minigen | s PyTorch |\n"
          "|---|---|---|---|---|---|---|---|---|")
    for name, (sa, ma), (sb, mb), (sf, mf), ta, tb in toy_rows(steps, n):
        print(f"| {name} | {sa:.4f} | {sb:.4f} | {sf:.4f} | {ma:.5f} | {mb:.5f} | {mf:.5f} | "
              f"{ta:.0f} | {tb:.0f} |", flush=True)
    import models_ddpm_digits
    dsteps = 100 if args.quick else models_ddpm_digits.RECIPE["steps"]
    rows, seconds = digits_rows(dsteps, args.out)
    print(f"\n| digits ({dsteps} steps, {seconds:.0f} s) | SW to held-out |\n|---|---|")
    for name, sw in rows:
        print(f"| {name} | {sw:.3f} |")


if __name__ == "__main__":
    main()
