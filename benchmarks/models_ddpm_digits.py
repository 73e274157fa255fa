"""DDPM on the 8x8 digits: minigen and the same model in PyTorch, side by side.

    python benchmarks/models_ddpm_digits.py [--seeds 0 1 2] [--steps N] [--jobs J] [--quick]
                                            [--set key=value ...] [--out out/benchmarks]

Both libraries train the same TinyUNet (``minigen.models.TinyUNet``; the PyTorch module below
mirrors it layer for layer and starts from minigen's initial weights for the seed) with the
same recipe (``RECIPE``: schedule, prediction, batch, Adam with linear warm-up and cosine
decay, gradient clipping, EMA with warm-up) on the training digits scaled to [-1, 1], each run
in its own process. Samples come from one sampler, minigen's (DDIM, x0 clipped to [-1, 1]),
with the PyTorch network passed as ``eps_fn``, so only the training differs. The table gives,
per library and seed, the sliced Wasserstein distance of 1,000 samples to the held-out digits,
the training seconds and the seconds per step; below it the reference rows (training digits
vs held-out, a full-covariance Gaussian fit). ``--set key=value`` overrides a recipe entry
(e.g. ``--set channels=16 --set prediction=eps``; ``--set denoiser=mlp`` swaps the
TinyUNet for a TimeMLP(64, hidden, depth) on the flat rows), which is how the routes in
benchmarks/README.md were measured. ``--worker LIB SEED`` runs one training and prints one
JSON line (used by the parent). Threads follow OMP_NUM_THREADS / NUMBA_NUM_THREADS.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np

# The recipe of examples/diffusion_toys.py's digits part (its defaults).
RECIPE = dict(denoiser="unet", channels=32, groups=8, hidden=512, depth=4, emb_dim=32,
              T=1000, schedule="cosine", prediction="v", batch=64, lr=3e-3, warmup=50,
              min_factor=0.0, clip_grad=1.0, ema=0.995, steps=5000, sample_steps=50, eta=0.0,
              n_samples=1000)
INTS = ("channels", "groups", "hidden", "depth", "emb_dim", "T", "batch", "warmup", "steps",
        "sample_steps", "n_samples")


def digits():
    from minigen.data import load_digits
    scale = lambda X: (X / 8.0 - 1.0).astype(np.float32)
    return scale(load_digits("train")[0]), scale(load_digits("test")[0])


def minigen_model(r, seed):
    """DDPM with a TinyUNet on the rows seen as (1, 8, 8) images, or a TimeMLP on the rows."""
    from minigen.models import DDPM, NoiseSchedule, TimeMLP, TinyUNet
    if r["denoiser"] == "unet":
        net = TinyUNet(1, channels=r["channels"], emb_dim=r["emb_dim"], groups=r["groups"],
                       rng=seed)
    else:
        net = TimeMLP(64, hidden=r["hidden"], depth=r["depth"], emb_dim=r["emb_dim"], rng=seed)
    return DDPM(net, NoiseSchedule(T=r["T"], kind=r["schedule"]), prediction=r["prediction"],
                shape=(1, 8, 8) if r["denoiser"] == "unet" else None, rng=seed)


def sample_and_score(model, r, Xte, eps_fn=None):
    from minigen.metrics import sliced_wasserstein
    shape = (1, 8, 8) if r["denoiser"] == "unet" else (64,)
    S = model.sample(r["n_samples"], rng=1, steps=r["sample_steps"], eta=r["eta"], clip=1.0,
                     eps_fn=eps_fn, shape=shape if eps_fn is not None else None)
    S = S.reshape(len(S), -1)
    return S, sliced_wasserstein(S, Xte, rng=0)


def run_minigen(r, seed, Xtr, Xte):
    from minigen.optim import CosineWarmup
    model = minigen_model(r, seed)
    start = time.perf_counter()
    model.fit(Xtr, steps=r["steps"], batch_size=r["batch"], lr=r["lr"], ema_decay=r["ema"],
              clip_grad=r["clip_grad"] or None, rng=seed,
              schedule=lambda opt: CosineWarmup(opt, r["warmup"], r["steps"], r["min_factor"]))
    seconds = time.perf_counter() - start
    return seconds, sample_and_score(model, r, Xte)


# --- the same network and training loop in PyTorch ----------------------------------------
def _embed(freqs, t):
    """timestep_embedding in torch: [sin(t w), cos(t w)], computed in float64 as minigen does."""
    import torch
    args = t.double()[:, None] * freqs.double()
    return torch.cat([torch.sin(args), torch.cos(args)], 1).float()


def _with_weights(module, net, where):
    """``module`` with a copy of the minigen ``net``'s weights (same names; 'freqs' is its own)."""
    import torch
    state = {k: torch.tensor(np.asarray(v)) for k, v in net.state_dict().items()}
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or set(missing) != {"freqs"}:
        raise RuntimeError(f"{where}: names differ: {missing}, {unexpected}")
    return module


def torch_tinyunet(net):
    """A PyTorch module equal to the minigen TinyUNet ``net``, holding a copy of its weights."""
    import torch
    nn = torch.nn
    c, groups, emb = net.channels, net.groups, net.emb_dim

    def norm(ch):
        return nn.GroupNorm(np.gcd(groups, ch), ch) if groups else nn.Identity()

    class Block(nn.Module):
        def __init__(self, cin, cout):
            super().__init__()
            self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.time = nn.Linear(2 * c, cout)
            self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

        def forward(self, x, temb):
            h = self.conv1(nn.functional.silu(self.norm1(x)))
            h = self.norm2(h) + self.time(temb)[:, :, None, None]
            h = self.conv2(nn.functional.silu(h))
            return (x if self.skip is None else self.skip(x)) + h

    class UNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.time = nn.Linear(emb, 2 * c)
            self.conv_in = nn.Conv2d(1, c, 3, padding=1)
            self.down = Block(c, c)
            self.downsample = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
            self.mid = Block(2 * c, 2 * c)
            self.upconv = nn.Conv2d(2 * c, c, 3, padding=1)
            self.up = Block(2 * c, c)
            self.norm_out = norm(c)
            self.conv_out = nn.Conv2d(c, 1, 3, padding=1)
            half = emb // 2
            self.register_buffer("freqs", torch.exp(-np.log(1e4) * torch.arange(half) / half))

        def forward(self, x, t):
            e = _embed(self.freqs, t)
            temb = nn.functional.silu(self.time(e))
            skip = self.down(self.conv_in(x), temb)
            h = self.mid(self.downsample(skip), temb)
            h = self.upconv(nn.functional.interpolate(h, scale_factor=2, mode="nearest"))
            h = self.up(torch.cat([h, skip], 1), temb)
            return self.conv_out(nn.functional.silu(self.norm_out(h)))

    return _with_weights(UNet(), net, "torch_tinyunet")


def torch_timemlp(net):
    """A PyTorch module equal to the minigen TimeMLP ``net`` (ReLU), with a copy of its weights."""
    import torch
    nn = torch.nn

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList([nn.Linear(net.dim if k == 0 else net.hidden, net.hidden)
                                         for k in range(net.depth)])
            self.time = nn.ModuleList([nn.Linear(net.emb_dim, net.hidden, bias=False)
                                       for _ in range(net.depth)])
            self.out = nn.Linear(net.hidden, net.dim)
            half = net.emb_dim // 2
            self.register_buffer("freqs", torch.exp(-np.log(1e4) * torch.arange(half) / half))

        def forward(self, x, t):
            e = _embed(self.freqs, t)
            for layer, proj in zip(self.layers, self.time):
                x = torch.relu(layer(x) + proj(e))
            return self.out(x)

    return _with_weights(MLP(), net, "torch_timemlp")


def run_torch(r, seed, Xtr, Xte):
    import torch
    torch.manual_seed(seed)
    model = minigen_model(r, seed)
    s = model.schedule
    net = (torch_tinyunet if r["denoiser"] == "unet" else torch_timemlp)(model.denoiser)
    shape = (-1, 1, 8, 8) if r["denoiser"] == "unet" else (-1, 64)
    col = (-1,) + (1,) * (len(shape) - 1)
    sab = torch.tensor(s.sqrt_alpha_bars, dtype=torch.float32)
    s1mab = torch.tensor(s.sqrt_one_minus_alpha_bars, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=r["lr"])
    warm, total, floor = r["warmup"], r["steps"], r["min_factor"]
    lam = lambda k: (k + 1) / warm if k < warm else floor + (1 - floor) * 0.5 * (
        1 + np.cos(np.pi * min((k - warm) / max(total - warm, 1), 1.0)))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lam)
    ema = {k: v.detach().clone() for k, v in net.state_dict().items()}
    data = torch.tensor(Xtr.reshape(shape))
    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    for step in range(1, total + 1):
        x0 = data[torch.randint(0, len(data), (r["batch"],), generator=g)]
        t = torch.randint(0, s.T, (len(x0),), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a, b = sab[t].reshape(col), s1mab[t].reshape(col)
        target = {"eps": eps, "x0": x0, "v": a * eps - b * x0}[r["prediction"]]
        loss = ((net(a * x0 + b * eps, t) - target) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        if r["clip_grad"]:
            torch.nn.utils.clip_grad_norm_(net.parameters(), r["clip_grad"])
        opt.step()
        sched.step()
        decay = min(r["ema"], (1 + step) / (10 + step))
        with torch.no_grad():
            for k, v in net.state_dict().items():
                ema[k].mul_(decay).add_(v, alpha=1 - decay)
    seconds = time.perf_counter() - start
    net.load_state_dict(ema)
    net.eval()

    @torch.no_grad()
    def eps_fn(xt, t):
        out = net(torch.from_numpy(xt), torch.from_numpy(t)).numpy()
        if r["prediction"] == "eps":
            return out
        a = s.sqrt_alpha_bars[t].reshape(col)
        b = s.sqrt_one_minus_alpha_bars[t].reshape(col)
        return (xt - a * out) / b if r["prediction"] == "x0" else a * out + b * xt

    return seconds, sample_and_score(model, r, Xte, eps_fn=eps_fn)


def worker(lib, seed, r, out):
    Xtr, Xte = digits()
    start = time.perf_counter()
    seconds, (S, sw) = (run_minigen if lib == "minigen" else run_torch)(r, seed, Xtr, Xte)
    total = time.perf_counter() - start
    if out:
        os.makedirs(out, exist_ok=True)
        np.save(os.path.join(out, f"ddpm_digits_{lib}_{seed}.npy"), S[:64])
    print(json.dumps({"lib": lib, "seed": seed, "sw": sw, "seconds": seconds,
                      "step_s": seconds / r["steps"], "total_s": total}), flush=True)


def references(rng=0):
    from minigen.metrics import sliced_wasserstein
    Xtr, Xte = digits()
    gauss = np.random.default_rng(rng).multivariate_normal(Xtr.mean(0), np.cov(Xtr.T), 1000)
    return {"train digits (1,437)": sliced_wasserstein(Xtr, Xte, rng=0),
            "Gaussian fit (1,000 samples)": sliced_wasserstein(gauss, Xte, rng=0)}


def parse_sets(pairs):
    r = dict(RECIPE)
    for pair in pairs:
        key, _, value = pair.partition("=")
        if key not in r:
            raise SystemExit(f"--set: unknown recipe entry {key!r}; known: {sorted(r)}")
        r[key] = int(value) if key in INTS else value if isinstance(RECIPE[key], str) \
            else float(value)
    return r


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--libs", nargs="+", default=["minigen", "torch"])
    parser.add_argument("--jobs", type=int, default=1, help="runs in parallel")
    parser.add_argument("--quick", action="store_true", help="60 steps, 200 samples, 1 seed")
    parser.add_argument("--set", dest="sets", action="append", default=[])
    parser.add_argument("--out", default=os.path.join("out", "benchmarks"))
    parser.add_argument("--worker", nargs=2, metavar=("LIB", "SEED"))
    args = parser.parse_args(argv)
    r = parse_sets(args.sets)
    if args.quick:
        r.update(steps=60, warmup=10, n_samples=200, sample_steps=20)
        args.seeds = args.seeds[:1]
    if args.steps:
        r["steps"] = args.steps
    if args.worker:
        return worker(args.worker[0], int(args.worker[1]), r, args.out)

    flags = [f"--set={k}={v}" for k, v in r.items()] + ["--out", args.out]
    jobs = [(lib, seed) for seed in args.seeds for lib in args.libs]
    results, running = [], []
    while jobs or running:
        while jobs and len(running) < args.jobs:
            lib, seed = jobs.pop(0)
            running.append(subprocess.Popen(
                [sys.executable, __file__, "--worker", lib, str(seed)] + flags,
                stdout=subprocess.PIPE, text=True))
        proc = running.pop(0)
        out, _ = proc.communicate()
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"recipe: {json.dumps(r)}\n")
    print("| library | seed | SW to held-out | train s | s / step |\n|---|---|---|---|---|")
    for row in sorted(results, key=lambda row: (row["lib"], row["seed"])):
        print(f"| {row['lib']} | {row['seed']} | {row['sw']:.4f} | {row['seconds']:.0f} | "
              f"{row['step_s']:.3f} |")
    for lib in args.libs:
        sws = [row["sw"] for row in results if row["lib"] == lib]
        print(f"| {lib}, median (range) | | {np.median(sws):.4f} ({min(sws):.4f}-{max(sws):.4f}) "
              f"| | |")
    for name, sw in references().items():
        print(f"| {name} | | {sw:.4f} | | |")
    return results


if __name__ == "__main__":
    main()
