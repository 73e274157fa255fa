"""Engine benchmark: minigen vs PyTorch CPU (or a hand-written NumPy baseline without torch).

    python benchmarks/engine.py [--rounds 5] [--only ops,tiny,mlp,conv]

Each round times PyTorch in a process of its own, then minigen here (best of k calls each);
prints, for each workload, the medians of both times over the rounds and the median and range
of the per-round ratio minigen / baseline (lower is better; the target for the MLP step is <= 1.0x
PyTorch):
  * the fixed cost of one op: a chain of 10,000 ``y = y * b`` on 4-element tensors, forward
    (one ``Function.apply``) and backward (one node) timed apart, per op;
  * a tiny graph: a + b, a * b, exp, sum on 4-element tensors, forward+backward;
  * MLP 784-512-512-784, batch 256, float32: forward + MSE + backward + Adam step;
  * conv net conv(1->32, 3x3, pad 1) + relu + conv(32->64, 3x3, stride 2, pad 1) + relu on
    128x1x28x28: forward + backward.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from _timing import best_time, machine  # noqa: E402

import minigen as mg  # noqa: E402
from minigen import functional as F  # noqa: E402
from minigen import nn, optim  # noqa: E402


def minigen_tiny():
    a = mg.tensor(np.ones(4, np.float32), requires_grad=True)
    b = mg.tensor(np.full(4, 2.0, np.float32), requires_grad=True)

    def step():
        ((a + b) * b).exp().sum().backward()
    return step


def torch_tiny(torch):
    a = torch.ones(4, requires_grad=True)
    b = torch.full((4,), 2.0, requires_grad=True)

    def step():
        ((a + b) * b).exp().sum().backward()
    return step


def chain(a, b, n=10_000, repeat=3):
    """Fixed cost of one op, in seconds: ``y = y * b`` n times on 4-element tensors (a
    requires grad, b is a constant), then ``y.sum().backward()``. The forward time / n is the
    cost of one ``Function.apply`` with its dispatch; the backward time / n the cost of one
    backward node (its own ``mul`` included). Best of ``repeat`` chains, on the process's CPU
    clock: the chain runs on one thread, and on a shared machine the CPU time of the process
    moves far less with other jobs' load than the wall clock does (5 rounds on a loaded
    2-core machine: 2.6-6.3x spread in wall time). Works for minigen and torch tensors
    alike."""
    fwd = bwd = float("inf")
    for _ in range(repeat):
        start = time.process_time()
        y = a
        for _ in range(n):
            y = y * b
        loss = y.sum()
        mid = time.process_time()
        loss.backward()
        end = time.process_time()
        a.grad = None
        fwd, bwd = min(fwd, (mid - start) / n), min(bwd, (end - mid) / n)
    return fwd, bwd


def minigen_chain():
    return chain(mg.tensor(np.ones(4, np.float32), requires_grad=True),
                 mg.tensor(np.full(4, 1.0001, np.float32)))


def torch_chain(torch):
    return chain(torch.ones(4, requires_grad=True), torch.full((4,), 1.0001))


def minigen_mlp(x, y, weights):
    model = nn.MLP([784, 512, 512, 784])
    model.load_state_dict(weights)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = mg.tensor(x), mg.tensor(y)

    def step():
        opt.zero_grad()
        F.mse_loss(model(xt), yt).backward()
        opt.step()
    return step


def torch_mlp(torch, x, y, weights):
    model = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 512), torch.nn.ReLU(),
                                torch.nn.Linear(512, 784))
    model.load_state_dict({k.replace("1.", "2.", 1) if k.startswith("1.") else
                           k.replace("2.", "4.", 1) if k.startswith("2.") else k: torch.from_numpy(v)
                           for k, v in _torch_names(weights).items()})
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)

    def step():
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(xt), yt).backward()
        opt.step()
    return step


def _torch_names(weights):
    """minigen's Sequential indices (0, 2, 4 for the Linears) -> consecutive 0, 1, 2."""
    mapping = {"0": "0", "2": "1", "4": "2"}
    return {mapping[k.split(".")[0]] + "." + k.split(".")[1]: v for k, v in weights.items()}


def numpy_mlp(x, y, weights):
    """A hand-written NumPy forward/backward/Adam step: the floor for any engine on NumPy."""
    ws = [weights[f"{i}.weight"].copy() for i in (0, 2, 4)]
    bs = [weights[f"{i}.bias"].copy() for i in (0, 2, 4)]
    params = ws + bs
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    t = [0]

    def step():
        h1 = np.maximum(x @ ws[0].T + bs[0], 0)
        h2 = np.maximum(h1 @ ws[1].T + bs[1], 0)
        out = h2 @ ws[2].T + bs[2]
        g = (2.0 / out.size) * (out - y)
        gw2, gb2 = g.T @ h2, g.sum(0)
        g = (g @ ws[2]) * (h2 > 0)
        gw1, gb1 = g.T @ h1, g.sum(0)
        g = (g @ ws[1]) * (h1 > 0)
        gw0, gb0 = g.T @ x, g.sum(0)
        t[0] += 1
        step_size = 1e-3 / (1 - 0.9 ** t[0])
        corr = 1 / np.sqrt(1 - 0.999 ** t[0])
        for p, gp, mp, vp in zip(params, [gw0, gw1, gw2, gb0, gb1, gb2], m, v):
            mp *= 0.9
            mp += 0.1 * gp
            vp *= 0.999
            gp *= gp
            gp *= 0.001
            vp += gp
            denom = np.sqrt(vp)
            denom *= corr
            denom += 1e-8
            np.divide(mp, denom, out=denom)
            denom *= step_size
            p -= denom
    return step


def minigen_conv(x):
    w1 = mg.tensor(np.random.default_rng(0).standard_normal((32, 1, 3, 3), np.float32) * 0.3,
                   requires_grad=True)
    w2 = mg.tensor(np.random.default_rng(1).standard_normal((64, 32, 3, 3), np.float32) * 0.06,
                   requires_grad=True)
    xt = mg.tensor(x)

    def step():
        h = F.relu(F.conv2d(xt, w1, padding=1))
        F.relu(F.conv2d(h, w2, stride=2, padding=1)).sum().backward()
    return step


def torch_conv(torch, x):
    w1 = torch.tensor(np.random.default_rng(0).standard_normal((32, 1, 3, 3), np.float32) * 0.3,
                      requires_grad=True)
    w2 = torch.tensor(np.random.default_rng(1).standard_normal((64, 32, 3, 3), np.float32) * 0.06,
                      requires_grad=True)
    xt = torch.from_numpy(x)
    F_ = torch.nn.functional

    def step():
        h = F_.relu(F_.conv2d(xt, w1, padding=1))
        F_.relu(F_.conv2d(h, w2, stride=2, padding=1)).sum().backward()
    return step


def torch_times(only, x, y, weights, xc):
    """The PyTorch timings, taken in a process of their own: torch's OpenMP workers keep
    spinning after each op and slow NumPy/OpenBLAS threads in the same process (and the other
    way round), which made in-process baselines swing between 13 and 27 ms for the MLP."""
    import torch
    torch.set_num_threads(max(1, os.cpu_count()))
    times = {}
    if "ops" in only:
        times["op_fwd"], times["op_bwd"] = torch_chain(torch)
    if "tiny" in only:
        times["tiny"] = best_time(torch_tiny(torch), repeat=5, number=2000)
    if "mlp" in only:
        times["mlp"] = best_time(torch_mlp(torch, x, y, weights), repeat=7)
    if "conv" in only:
        times["conv"] = best_time(torch_conv(torch, xc), repeat=5)
    return times


def inputs():
    rng = np.random.default_rng(0)
    mg.manual_seed(0)
    weights = nn.MLP([784, 512, 512, 784]).state_dict()
    x = rng.standard_normal((256, 784)).astype(np.float32)
    y = rng.standard_normal((256, 784)).astype(np.float32)
    xc = rng.standard_normal((128, 1, 28, 28)).astype(np.float32)
    return x, y, weights, xc


def minigen_times(only, x, y, weights, xc):
    times = {}
    if "ops" in only:
        times["op_fwd"], times["op_bwd"] = minigen_chain()
    if "tiny" in only:
        times["tiny"] = best_time(minigen_tiny(), repeat=5, number=2000)
    if "mlp" in only:
        times["mlp"] = best_time(minigen_mlp(x, y, weights), repeat=7)
        times["numpy"] = best_time(numpy_mlp(x, y, weights), repeat=7)
    if "conv" in only:
        times["conv"] = best_time(minigen_conv(xc), repeat=5)
    return times


WORKLOADS = ("ops", "tiny", "mlp", "conv")
ROWS = [("op_fwd", "one op forward (Function.apply), us", 1e6),
        ("op_bwd", "one backward node, us", 1e6),
        ("tiny", "tiny graph (4 ops) fwd+bwd, us", 1e6),
        ("mlp", "MLP 784-512-512-784 b256 step, ms", 1e3),
        ("numpy", "  hand-written NumPy step, ms", 1e3),
        ("conv", "conv net 128x1x28x28 fwd+bwd, ms", 1e3)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help=f"comma-separated workloads among {', '.join(WORKLOADS)}")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    only = args.only.split(",")
    if args.torch_only:
        print(json.dumps(torch_times(only, *inputs())))
        return
    data = inputs()
    have_torch = importlib.util.find_spec("torch") is not None
    ours, theirs = [], []
    for _ in range(args.rounds):
        if have_torch:
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-only",
                                   "--only", args.only],
                                  capture_output=True, text=True, check=True)
            base = json.loads(done.stdout.strip().splitlines()[-1])
        times = minigen_times(only, *data)
        if not have_torch:   # the hand-written NumPy step is the baseline of every row
            base = {k: times["numpy"] if k in ("mlp", "numpy") else float("nan") for k in times}
        if "mlp" in only:
            base["numpy"] = base["mlp"]
        ours.append(times)
        theirs.append(base)
    baseline = "PyTorch (own process)" if have_torch else "hand-written NumPy"
    print(f"machine: {machine()}; medians of {args.rounds} rounds")
    print(f"| workload | minigen [range] | {baseline} [range] | ratio, median [range] |")
    print("|---|---:|---:|---:|")
    for key, name, unit in ROWS:
        if key not in ours[0]:
            continue
        a = np.array([t[key] for t in ours]) * unit
        b = np.array([t[key] for t in theirs]) * unit
        ratios = a / b
        print(f"| {name} | {np.median(a):.2f} [{a.min():.2f}-{a.max():.2f}] | "
              f"{np.median(b):.2f} [{b.min():.2f}-{b.max():.2f}] | "
              f"{np.median(ratios):.2f}x [{ratios.min():.2f}-{ratios.max():.2f}] |")


if __name__ == "__main__":
    main()
