"""Engine benchmark: minigen vs PyTorch CPU (or a hand-written NumPy baseline without torch).

    python benchmarks/engine.py [--rounds 5] [--only ops,tiny,mlp,conv]
    python benchmarks/engine.py --threads [--rounds 5]

Each round times PyTorch in a process of its own, then minigen here (best of k calls each);
prints, for each workload, the medians of both times over the rounds and the median and range
of the per-round ratio minigen / baseline (lower is better; the target for the MLP step is <= 1.0x
PyTorch):
  * the fixed cost of one op: a chain of 10,000 ``y = y * b`` on 4-element tensors, forward
    (one ``Function.apply``) and backward (one node) timed apart, per op;
  * a tiny graph: a + b, a * b, exp, sum on 4-element tensors, forward+backward;
  * MLP 784-512-512-784, batch 256, float32: forward + MSE + backward + Adam step (flat
    parameter buffers, the default; a second row with Adam per parameter);
  * conv net conv(1->32, 3x3, pad 1) + relu + conv(32->64, 3x3, stride 2, pad 1) + relu on
    128x1x28x28: forward + backward.
``--threads`` times the MLP step and a small TransformerLM step under each Numba threading
layer, with the BLAS pools as they are and limited to one thread.

Measured on a 2-core Xeon shared by about seven jobs (load average 6-11), medians [ranges] of
5 rounds. Fixed cost per op, process CPU clock, before -> after the engine's fast paths
(PyTorch 2.13 beside): forward 6.41 [6.13-6.47] -> 2.98 [1.99-3.48] us (PyTorch 1.73
[1.52-1.75]); backward node 6.41 [6.37-6.52] -> 3.43 [3.34-3.51] us (PyTorch 2.54
[2.34-2.79]). Pieces of one forward op (timeit, CPU clock): NumPy's multiply 0.23 us,
Tensor() 0.19-0.24, Function() 0.06, weakref 0.06, the per-thread grad-mode lookup 0.04,
promotion of two Tensors of one dtype 0.15, a Python number 0.9; Python's cyclic GC over
the graph's objects adds 0.5-1.7 us per op to a 10,000-op chain (1.45 us with gc off).
The MLP step is GEMM-bound (its ~170 applies are ~0.5 ms): 37.0 [35.6-39.1] -> 34.1
[31.2-37.0] ms, TransformerLM step 50.5 [49.5-51.8] -> 48.1 [47.8-49.4] ms (BLAS at one
thread, alternating processes, best of 3).

Threads (two runs of 5 and 3 rounds, BLAS at one thread): workqueue 77 [56-146] / 25
[24-31] ms MLP, 79 [56-172] / 36 [24-51] ms LM; tbb 52 [25-107] / 25 [16-25], 74 [43-98] /
33 [22-35]; omp 119 [43-149] / 16 [15-36], 234 [119-292] / 52 [46-111]. tbb and workqueue
overlap, omp is the slowest on the LM step in both runs, so the workqueue default stays
(tbb, installed by pip, needs ``sys.prefix/lib`` on LD_LIBRARY_PATH). With the BLAS pool at
its default two threads every step ran 5-10x slower (MLP 160-690 ms), also with
MINIGEN_KERNELS=reference (no Numba: 441-488 vs 44-64 ms), while a lone 256x784 @ 784x512
GEMM ran faster on two threads (4.7 vs 7.1 ms): OpenBLAS's threads wait for each other, and
on an oversubscribed machine a descheduled partner costs a time slice. That is the load, not
the library, so no limit is set by default; and threadpoolctl's context manager costs 635 us
per enter and exit, more than most ops, so a limit can only be per process or per step.
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
sys.path.insert(0, os.path.dirname(os.path.abspath(os.path.dirname(__file__))))  # this checkout
from _timing import best_time, machine  # noqa: E402

import minigen as mg  # noqa: E402
from minigen import functional as F  # noqa: E402
from minigen import nn, optim  # noqa: E402
from minigen.train import keep_freed_memory  # noqa: E402


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


def minigen_mlp(x, y, weights, flat=True):
    model = nn.MLP([784, 512, 512, 784])
    model.load_state_dict(weights)
    opt = optim.Adam(model.parameters(), lr=1e-3, flat=flat)
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


def minigen_lm():
    """A TransformerLM training step (2 layers x 2 heads x 64, block 64, batch 16, AdamW,
    gradient clipping): small, so the element-wise kernels and the Python around them weigh
    as much as the GEMMs."""
    from minigen.models.lm import TransformerLM
    from minigen.optim import clip_grad_norm_
    model = TransformerLM(vocab_size=64, block_size=64, n_layer=2, n_head=2, n_embd=64, rng=0)
    rows = np.random.default_rng(0).integers(4, 64, (16, 65))
    opt = model.configure_optimizers(1e-3)
    params = list(model.parameters())
    model.train()

    def step():
        opt.zero_grad()
        model.loss(rows).backward()
        clip_grad_norm_(params, 1.0)
        opt.step()
    return step


def thread_child(x, y, weights, blas_limit):
    """Best-of-3 MLP and TransformerLM step times under this process's Numba threading layer,
    all BLAS pools limited to ``blas_limit`` threads (threadpoolctl) unless it is 0."""
    import contextlib

    import numba
    from threadpoolctl import threadpool_limits
    steps = {"mlp": minigen_mlp(x, y, weights), "lm": minigen_lm()}
    scope = threadpool_limits(blas_limit, "blas") if blas_limit else contextlib.nullcontext()
    with scope:
        times = {k: best_time(step, repeat=3) for k, step in steps.items()}
    try:
        times["layer"] = numba.threading_layer()
    except ValueError:          # no parallel kernel ran (MINIGEN_KERNELS=reference)
        times["layer"] = "none"
    return times


def thread_configs(rounds):
    """Each Numba threading layer x (BLAS pools as they are, BLAS limited to 1 thread), each
    in a process of its own (the layer is fixed when Numba's pool starts), taking turns for
    ``rounds`` rounds; prints the median and range of each step time. The tbb layer needs the
    ``tbb`` wheel's libtbb.so.12 on the loader path: it lives in ``sys.prefix/lib``."""
    configs = [(layer, blas) for layer in ("workqueue", "omp", "tbb") for blas in (0, 1)]
    results = {c: [] for c in configs}
    for _ in range(rounds):
        for layer, blas in configs:
            env = dict(os.environ, NUMBA_THREADING_LAYER=layer, LD_LIBRARY_PATH=os.pathsep.join(
                filter(None, [os.path.join(sys.prefix, "lib"), os.environ.get("LD_LIBRARY_PATH")])))
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--thread-child",
                                   str(blas)], capture_output=True, text=True, env=env)
            if done.returncode:
                print(f"{layer}, blas {blas or 'default'}: failed: {done.stderr.strip()[-200:]}")
                continue
            results[(layer, blas)].append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"machine: {machine()}; medians of {rounds} rounds, best of 3 steps each")
    print("| Numba layer (active) | BLAS threads | MLP step, ms [range] | TransformerLM step, ms [range] |")
    print("|---|---|---:|---:|")
    for (layer, blas), runs in results.items():
        if not runs:
            continue
        cells = []
        for key in ("mlp", "lm"):
            t = np.array([r[key] for r in runs]) * 1e3
            cells.append(f"{np.median(t):.1f} [{t.min():.1f}-{t.max():.1f}]")
        print(f"| {layer} ({runs[0]['layer']}) | {blas or 'default'} | {cells[0]} | {cells[1]} |")


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
        times["mlp_loose"] = best_time(minigen_mlp(x, y, weights, flat=False), repeat=7)
        times["numpy"] = best_time(numpy_mlp(x, y, weights), repeat=7)
    if "conv" in only:
        times["conv"] = best_time(minigen_conv(xc), repeat=5)
    return times


WORKLOADS = ("ops", "tiny", "mlp", "conv")
ROWS = [("op_fwd", "one op forward (Function.apply), us", 1e6),
        ("op_bwd", "one backward node, us", 1e6),
        ("tiny", "tiny graph (4 ops) fwd+bwd, us", 1e6),
        ("mlp", "MLP 784-512-512-784 b256 step, ms", 1e3),
        ("mlp_loose", "  the same, Adam per parameter (flat=False), ms", 1e3),
        ("numpy", "  hand-written NumPy step, ms", 1e3),
        ("conv", "conv net 128x1x28x28 fwd+bwd, ms", 1e3)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", default=",".join(WORKLOADS),
                        help=f"comma-separated workloads among {', '.join(WORKLOADS)}")
    parser.add_argument("--threads", action="store_true",
                        help="compare Numba threading layers and BLAS thread limits instead")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--thread-child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.thread_child is not None:
        x, y, weights, _ = inputs()
        print(json.dumps(thread_child(x, y, weights, args.thread_child)))
        return
    if args.threads:
        thread_configs(args.rounds)
        return
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
        with keep_freed_memory():      # as train() runs each step
            times = minigen_times(only, *data)
        if not have_torch:   # the hand-written NumPy step is the baseline of every row
            base = {k: times["numpy"] if k in ("mlp", "mlp_loose", "numpy") else float("nan")
                    for k in times}
        if "mlp" in only:
            base["numpy"] = base["mlp_loose"] = base["mlp"]
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
