"""Data-parallel MLP training step: one process with 2 threads against 2 MPI ranks with 1
thread each, on the same global batch (784-512-512-784 MLP, batch 256, Adam, float32).

    python benchmarks/distributed.py                 5 rounds, 30 timed steps each
    python benchmarks/distributed.py --smoke         a 3-step check that everything runs

Each round launches both contenders in turn (their own processes, so thread pools do not
meet): ``python THIS worker`` with 2 BLAS/OpenMP/Numba threads, and ``mpiexec -n 2 python
THIS worker`` with 1 thread per rank. A worker trains ``--steps`` steps after 3 warm-up
steps and rank 0 prints one JSON line: samples per second over the timed steps, the
all-reduce's milliseconds per step (the ``average_gradients`` call: flat copy, Allreduce,
scatter back) and its buffer's bytes (every gradient, the row count and one flag per
parameter). The table gives the median and range over the rounds of each number.

The bytes per step set the network's share: a ring all-reduce sends 2 (N - 1) / N times
the buffer per rank, so at bandwidth W a step spends about 2 bytes / W on the wire.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


def worker(args):
    from minigen import distributed as dist
    from minigen import functional as F
    from minigen import nn, optim
    from minigen.autograd import Tensor

    rank, size = dist.world()
    dist.abort_on_error()
    sizes = [int(s) for s in args.sizes.split(",")]
    model = nn.MLP(sizes, activation="relu", rng=0)
    dist.broadcast_parameters(model)
    params = list(model.parameters())
    opt = optim.Adam(params, lr=1e-3)
    data = np.random.default_rng(1).standard_normal((args.batch, sizes[0])).astype(np.float32)
    lo, hi = dist.shard_bounds(args.batch, rank, size)
    x = Tensor(data[lo:hi])
    reduce_seconds = 0.0

    def step():
        nonlocal reduce_seconds
        opt.zero_grad()
        loss = F.mse_loss(model(x), x)
        loss.backward()
        start = time.perf_counter()
        dist.average_gradients(params, hi - lo)
        reduce_seconds += time.perf_counter() - start
        opt.step()

    for _ in range(3):
        step()
    reduce_seconds = 0.0
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = time.perf_counter() - start
    n_params = sum(p.size for p in params)
    if rank == 0:
        print(json.dumps({"ranks": size, "samples_per_s": args.steps * args.batch / seconds,
                          "allreduce_ms": 1e3 * reduce_seconds / args.steps,
                          "allreduce_bytes": (n_params + 1 + len(params)) * 4 if size > 1
                          else 0}), flush=True)


def launch(ranks, threads, args):
    env = dict(os.environ, **{k: str(threads) for k in THREADS})
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    for key in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        env.pop(key, None)
    command = [sys.executable, __file__, "worker", "--steps", str(args.steps), "--batch",
               str(args.batch), "--sizes", args.sizes]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
        command = [mpiexec, "-n", str(ranks)] + command
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def summary(values, unit):
    return f"{np.median(values):.4g} {unit} [{min(values):.4g}, {max(values):.4g}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="driver", choices=["driver", "worker"])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--sizes", default="784,512,512,784")
    parser.add_argument("--smoke", action="store_true", help="3 steps, 1 round, a small MLP")
    args = parser.parse_args()
    if args.smoke:
        args.steps, args.rounds, args.sizes = 3, 1, "32,64,32"
    if args.mode == "worker":
        return worker(args)
    runs = {"1 process x 2 threads": [], "2 ranks x 1 thread": []}
    for _ in range(args.rounds):
        runs["1 process x 2 threads"].append(launch(1, 2, args))
        runs["2 ranks x 1 thread"].append(launch(2, 1, args))
    print(f"MLP {args.sizes}, global batch {args.batch}, Adam, float32; {args.steps} steps x "
          f"{args.rounds} rounds: median [range]")
    base = np.median([r["samples_per_s"] for r in runs["1 process x 2 threads"]])
    for name, rounds in runs.items():
        rates = [r["samples_per_s"] for r in rounds]
        line = f"  {name:<22} {summary(rates, 'samples/s')}  ({np.median(rates) / base:.2f}x)"
        if rounds[0]["allreduce_bytes"]:
            line += (f"  all-reduce {rounds[0]['allreduce_bytes'] / 1e6:.2f} MB, "
                     f"{summary([r['allreduce_ms'] for r in rounds], 'ms')} per step")
        print(line)


if __name__ == "__main__":
    main()
