"""Data-parallel training through ``minigen.train``: one process with 2 threads against 2 MPI
ranks with 1 thread each, on the same global batch, for three steps, with PyTorch's
DistributedDataParallel (2 ranks, gloo) as the peer.

    python benchmarks/distributed.py                    5 rounds of every step, then the table
    python benchmarks/distributed.py --project          the same, then the scaling projection
    python benchmarks/distributed.py --project --load out/benchmarks/distributed.json
                                                        the projection of a saved run
    python benchmarks/distributed.py --smoke            tiny networks and budgets: it all runs
    python benchmarks/distributed.py --bound            also one thread at the full and half batch,
                                                        and PyTorch's step in one process

The steps (``CONFIG``), each the real ``fit`` / ``train`` path (batch stream, shard, loss,
backward, all-reduce, clipping, optimiser, schedule, EMA where the recipe has one):

* unet: the DDPM of benchmarks/models_ddpm_digits.py (``RECIPE``: TinyUNet with 16 channels on
  the 8x8 digits, v-prediction, batch 64, Adam, clip 1, EMA), ``DDPM.fit``;
* lm: TransformerLM 4 layers x 4 heads x 128, block 128, batch 32 on the pydoc characters
  (benchmarks/models_lm.py), ``TransformerLM.fit`` (AdamW, warm-up + cosine, clip 1);
* mlp: a 784-512-512-784 ReLU MLP regressing its input, batch 256, Adam, ``train``.

Each round runs, per step, the contenders in turn, each in its own processes so that thread
pools do not meet: ``python THIS worker`` with 2 BLAS/OpenMP/Numba threads, ``mpiexec -n 2
python THIS worker`` with 1 thread per rank, and (unet, lm) ``benchmarks/distributed_torch.py``
(2 ranks, 1 thread each). A worker trains warm-up + timed steps; a scheduler wrapper that
``train`` steps at the end of every step records the clock, so the timed steps exclude
start-up (imports, data, JIT compilation, the parameter broadcast). Rank 0 reports samples
per second and ms per step over the timed steps, and the gradient all-reduce's bytes (the
flat buffer of ``minigen.distributed.average_gradients``: every gradient, the row count, one
flag per parameter) and milliseconds per step (flat copy, Allreduce, scatter back, and the
wait for the slower rank). The loss's own all-reduce (16 bytes) is left in the step time.

Projection (``--project``): a ring all-reduce of b bytes over N ranks sends and receives
2 (N - 1) / N b bytes per rank in 2 (N - 1) messages (Patarasuk & Yuan 2009), so at bandwidth
W and per-message latency a

    t_comm(N) = 2 (N - 1) / N * b / W + 2 (N - 1) * a,

and with the per-rank batch fixed (the measured 2-rank shard), the step takes
T(N) = t_compute + t_comm(N), where t_compute is the measured 2-rank step minus its all-reduce
(minigen reduces after backward: no overlap). Scaling efficiency t_compute / T(N) is the
fraction of N times one rank's throughput that N ranks reach.

Expected ratio (``--bound``): each round also runs one process with one thread at the global
batch B and at the shard B/2. If a rank's step cost what one thread takes for the shard alone
and the all-reduce nothing, 2 ranks would reach T(B, 2 threads) / T(B/2, 1 thread) = s / g
times the samples per second of one process, where s = T(B, 1) / T(B/2, 1) is what halving
the batch saves (2 when the step has no cost that the batch does not scale) and
g = T(B, 1) / T(B, 2) is what the process gains from its second thread: the better one process
uses its second thread, the less 2 ranks can add. (Not a strict bound: two ranks side by side
can run a little faster than one thread alone, as the TransformerLM's do.) With ``--bound`` PyTorch also runs its step in one process of 2 threads, for
the peer's own ratio of DDP on 2 ranks to one process.
"""
import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from minigen._checks import positive_int  # noqa: E402

THREADS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")
SEED = 0
# batch: global rows per step; warmup: untimed steps (the first one compiles); steps: timed.
CONFIG = {
    "unet": dict(batch=64, channels=16, warmup=3, steps=20),
    "lm": dict(batch=32, n_layer=4, n_head=4, n_embd=128, warmup=1, steps=3),
    "mlp": dict(batch=256, sizes=[784, 512, 512, 784], warmup=3, steps=30),
}
SMOKE = {
    "unet": dict(batch=8, channels=8, warmup=1, steps=2),
    "lm": dict(batch=4, n_layer=1, n_head=2, n_embd=32, warmup=1, steps=2),
    "mlp": dict(batch=16, sizes=[32, 64, 32], warmup=1, steps=2),
}
TITLES = {
    "unet": "TinyUNet DDPM step (digits 8x8, {channels} channels, batch {batch}, Adam, clip, EMA)",
    "lm": "TransformerLM step ({n_layer} layers x {n_head} heads x {n_embd}, block 128, "
          "batch {batch}, AdamW, clip)",
    "mlp": "MLP step ({sizes}, batch {batch}, Adam, float32)",
}
TARGETS = {"unet": 1.6, "lm": 1.4}      # 2 ranks over 1 process, samples per second
TORCH_TARGET = 1.3                      # minigen 2 ranks over torch DDP 2 ranks, step time
NETWORKS = [("10 Gb/s", 10e9 / 8), ("100 Gb/s", 100e9 / 8)]
LATENCIES = [5e-6, 50e-6]
RANKS = [8, 64, 512]


# --- the worker: one contender, under mpiexec or not ----------------------------------------
class StepClock:
    """A learning-rate scheduler wrapper used as a step hook: ``train`` steps it once at the
    end of every training step; it steps the wrapped scheduler (if any) and records the time."""

    def __init__(self, inner=None):
        self.inner, self.times = inner, []

    def step(self):
        if self.inner is not None:
            self.inner.step()
        self.times.append(time.perf_counter())


def tally_allreduce(dist):
    """Wrap ``dist.average_gradients`` (which ``minigen.train`` calls through the module) so
    that every call's seconds and its flat buffer's bytes are recorded."""
    original, tally = dist.average_gradients, {"seconds": [], "bytes": 0}

    def timed(params, count):
        params = list(params)
        start = time.perf_counter()
        total = original(params, count)
        tally["seconds"].append(time.perf_counter() - start)
        by_dtype = {}
        for p in params:
            by_dtype.setdefault(np.dtype(p.dtype), []).append(p.size)
        tally["bytes"] = sum((sum(sizes) + 1 + len(sizes)) * dtype.itemsize
                             for dtype, sizes in by_dtype.items())
        return total
    dist.average_gradients = timed
    return tally


def fit(name, cfg, clocks):
    """Train the step ``name`` for warmup + steps steps through its real fit / train path;
    ``clocks`` receives the StepClock of the run."""
    from minigen.optim import CosineWarmup
    total = cfg["warmup"] + cfg["steps"]

    def hook(inner=None):
        clocks.append(StepClock(inner))
        return clocks[-1]
    if name == "unet":
        from models_ddpm_digits import RECIPE, digits, minigen_model
        r = dict(RECIPE, channels=cfg["channels"])
        model = minigen_model(r, SEED)
        model.fit(digits()[0], steps=total, batch_size=cfg["batch"], lr=r["lr"],
                  ema_decay=r["ema"], clip_grad=r["clip_grad"], rng=SEED,
                  schedule=lambda opt: hook(CosineWarmup(
                      opt, min(r["warmup"], total - 1), total, r["min_factor"])))
    elif name == "lm":
        from minigen.models.lm import MIN_LR, WARMUP, TransformerLM
        from models_lm import BLOCK, corpus
        tok, text, _ = corpus()
        model = TransformerLM(block_size=BLOCK, tokenizer=tok, rng=SEED, n_layer=cfg["n_layer"],
                              n_head=cfg["n_head"], n_embd=cfg["n_embd"])
        model.fit(text, steps=total, batch_size=cfg["batch"], lr=1e-3, rng=SEED,
                  schedule=lambda opt: hook(CosineWarmup(opt, int(WARMUP * total), total,
                                                         MIN_LR)))
    else:
        from minigen import functional as F
        from minigen import nn
        from minigen.autograd import Tensor
        from minigen.train import train

        class Regress(nn.Module):
            """The MLP trained to reproduce its input: loss = mean (mlp(x) - x)^2."""

            def __init__(self, sizes):
                super().__init__()
                self.net = nn.MLP(sizes, activation="relu", rng=SEED)

            def forward(self, x):
                return self.net(x)

            def loss(self, batch):
                x = Tensor(batch)
                return F.mse_loss(self(x), x)
        sizes = cfg["sizes"]
        X = np.random.default_rng(1).standard_normal((8 * cfg["batch"], sizes[0]))
        train(Regress(sizes), X.astype(np.float32), steps=total, batch_size=cfg["batch"],
              rng=SEED, verbose=False, schedule=lambda opt: hook())


def check_config(cfg, where):
    """The counts every configuration holds, checked: batch, warmup and steps >= 1."""
    for key in ("batch", "warmup", "steps"):
        positive_int(cfg.get(key), f"config[{key!r}]", where)
    return cfg


def worker(name, cfg):
    from minigen import distributed as dist
    check_config(cfg, "benchmarks/distributed.py worker")
    rank, size = dist.world()
    tally = tally_allreduce(dist)
    clocks = []
    fit(name, cfg, clocks)
    times, warm, steps = clocks[0].times, cfg["warmup"], cfg["steps"]
    seconds = times[warm + steps - 1] - times[warm - 1]
    reduce_ms = 1e3 * sum(tally["seconds"][-steps:]) / steps if size > 1 else 0.0
    if rank == 0:
        print(json.dumps({"ranks": size, "samples_per_s": steps * cfg["batch"] / seconds,
                          "step_ms": 1e3 * seconds / steps, "allreduce_ms": reduce_ms,
                          "allreduce_bytes": tally["bytes"] if size > 1 else 0}), flush=True)


# --- the driver ------------------------------------------------------------------------------
def environment(threads):
    env = dict(os.environ, **{k: str(threads) for k in THREADS})
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(HERE.parent), env.get("PYTHONPATH"))
                                        if p)
    for key in ("PMI_SIZE", "PMI_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        env.pop(key, None)
    return env


def last_json(command, env):
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"{' '.join(command[:6])} ... failed ({done.returncode}):\n"
                           f"{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def launch(name, cfg, ranks, threads):
    """One minigen contender: ``ranks`` processes of ``threads`` threads each."""
    command = [sys.executable, __file__, "worker", "--model", name, "--config", json.dumps(cfg)]
    if ranks > 1:
        mpiexec = shutil.which("mpiexec", path=str(Path(sys.executable).parent)) or "mpiexec"
        command = [mpiexec, "-n", str(ranks)] + command
    return last_json(command, environment(threads))


def launch_torch(name, cfg, ranks=2, threads=1):
    """The PyTorch peer (benchmarks/distributed_torch.py): DDP on 2 ranks of 1 thread each, or
    one process of 2 threads."""
    command = [sys.executable, str(HERE / "distributed_torch.py"), "--model", name, "--config",
               json.dumps(cfg), "--ranks", str(ranks), "--threads", str(threads)]
    return last_json(command, environment(threads))


def summary(values, unit, digits=4):
    return f"{np.median(values):.{digits}g} {unit} [{min(values):.{digits}g}, " \
           f"{max(values):.{digits}g}]"


def measure(names, config, rounds, torch, bound=False):
    """name -> {"config", "1 process", "2 ranks", "torch DDP", "1 thread", "1 thread, half",
    "torch 1 process"}: lists of the rounds' reports (the last three with ``bound``)."""
    results = {}
    for name in names:
        cfg = config[name]
        half = dict(cfg, batch=max(1, cfg["batch"] // 2))
        runs = results[name] = {"config": cfg, "1 process": [], "2 ranks": [], "torch DDP": [],
                                "1 thread": [], "1 thread, half": [], "torch 1 process": []}
        for _ in range(rounds):
            runs["1 process"].append(launch(name, cfg, 1, 2))
            runs["2 ranks"].append(launch(name, cfg, 2, 1))
            if torch and name in TARGETS:
                runs["torch DDP"].append(launch_torch(name, cfg))
            if bound:
                runs["1 thread"].append(launch(name, cfg, 1, 1))
                runs["1 thread, half"].append(launch(name, half, 1, 1))
                if torch and name in TARGETS:
                    runs["torch 1 process"].append(launch_torch(name, cfg, 1, 2))
        print_step(name, runs, rounds)
    return results


def print_step(name, runs, rounds):
    cfg = runs["config"]
    print(f"\n{TITLES[name].format(**cfg)}: {cfg['steps']} steps after {cfg['warmup']} "
          f"warm-up, {rounds} round(s), median [range]")
    base = np.median([r["samples_per_s"] for r in runs["1 process"]])
    for label, key in [("1 process x 2 threads", "1 process"), ("2 ranks x 1 thread", "2 ranks")]:
        rates = [r["samples_per_s"] for r in runs[key]]
        line = (f"  {label:<28} {summary(rates, 'samples/s')}  ({np.median(rates) / base:.2f}x)"
                f"  step {summary([r['step_ms'] for r in runs[key]], 'ms')}")
        if key == "2 ranks":
            line += (f"\n  {'':<28} all-reduce {runs[key][0]['allreduce_bytes'] / 1e6:.3f} MB, "
                     f"{summary([r['allreduce_ms'] for r in runs[key]], 'ms', 3)} per step")
            if name in TARGETS:
                line += f" (target 2 ranks >= {TARGETS[name]}x)"
        print(line)
    if runs["torch DDP"]:
        mine = np.median([r["step_ms"] for r in runs["2 ranks"]])
        ref = [r["step_ms"] for r in runs["torch DDP"]]
        print(f"  {'torch DDP 2 ranks x 1 thread':<28} step {summary(ref, 'ms')}")
        print(f"  minigen 2 ranks / torch DDP 2 ranks (step time, medians): "
              f"{mine / np.median(ref):.2f}x (target <= {TORCH_TARGET}x)")
    if runs.get("1 thread"):
        ms = {key: [r["step_ms"] for r in runs[key]] for key in ("1 thread", "1 thread, half")}
        for label, key in [("1 process x 1 thread", "1 thread"),
                           ("  the same, half the batch", "1 thread, half")]:
            print(f"  {label:<28} step {summary(ms[key], 'ms')}")
        full, half = np.median(ms["1 thread"]), np.median(ms["1 thread, half"])
        two = np.median([r["step_ms"] for r in runs["1 process"]])
        print(f"  halving the batch s = {full / half:.2f}x, the second thread g = {full / two:.2f}x:"
              f" 2 ranks at a shard's one-thread step: s / g = {two / half:.2f}x")
    if runs.get("torch 1 process") and runs["torch DDP"]:
        one = [r["samples_per_s"] for r in runs["torch 1 process"]]
        ddp = np.median([r["samples_per_s"] for r in runs["torch DDP"]])
        print(f"  {'torch 1 process x 2 threads':<28} {summary(one, 'samples/s')}; torch DDP 2 "
              f"ranks / torch 1 process: {ddp / np.median(one):.2f}x")


def project(results):
    """The ring all-reduce projection of every measured step (see the module docstring)."""
    print("\nRing all-reduce projection, per-rank batch fixed at the 2-rank shard: "
          "T(N) = t_compute + 2 (N-1)/N b/W + 2 (N-1) a; efficiency t_compute / T(N)")
    print(f"| step | b (MB) | t_compute (ms) | network W | latency a | "
          + " | ".join(f"{n} ranks" for n in RANKS) + " |")
    print("|---|---:|---:|---|---:|" + "---:|" * len(RANKS))
    for name, runs in results.items():
        two = runs["2 ranks"]
        b = two[0]["allreduce_bytes"]
        compute = np.median([r["step_ms"] - r["allreduce_ms"] for r in two]) / 1e3
        for net, bandwidth in NETWORKS:
            for latency in LATENCIES:
                cells = []
                for n in RANKS:
                    step = compute + 2 * (n - 1) / n * b / bandwidth + 2 * (n - 1) * latency
                    cells.append(f"{1e3 * step:.1f} ms ({100 * compute / step:.0f}%)")
                print(f"| {name} | {b / 1e6:.3f} | {1e3 * compute:.1f} | {net} | "
                      f"{1e6 * latency:.0f} us | " + " | ".join(cells) + " |")


def main():
    def rounds(text):
        return positive_int(int(text), "--rounds", "benchmarks/distributed.py")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", nargs="?", default="driver", choices=["driver", "worker"])
    parser.add_argument("--models", nargs="+", default=list(CONFIG), choices=list(CONFIG))
    parser.add_argument("--model", choices=list(CONFIG), help="the worker's step")
    parser.add_argument("--config", help="the worker's configuration (JSON)")
    parser.add_argument("--rounds", type=rounds, default=5)
    parser.add_argument("--smoke", action="store_true", help="1 round of tiny steps")
    parser.add_argument("--no-torch", dest="torch", action="store_false",
                        help="skip the PyTorch DDP peer")
    parser.add_argument("--project", action="store_true", help="print the scaling projection")
    parser.add_argument("--bound", action="store_true",
                        help="also time one thread at the full and the half batch")
    parser.add_argument("--load", help="project from this saved run instead of measuring")
    parser.add_argument("--save", default=os.path.join("out", "benchmarks", "distributed.json"))
    args = parser.parse_args()
    if args.mode == "worker":
        return worker(args.model, json.loads(args.config))
    if args.load:
        with open(args.load) as f:
            return project(json.load(f))
    config = SMOKE if args.smoke else CONFIG
    if args.torch and importlib.util.find_spec("torch") is None:
        print("PyTorch is not installed: no torch DDP rows")
        args.torch = False
    start = time.perf_counter()
    results = measure(args.models, config, 1 if args.smoke else args.rounds, args.torch,
                      args.bound)
    print(f"\n{time.perf_counter() - start:.0f} s in all")
    if not args.smoke:
        os.makedirs(os.path.dirname(args.save) or ".", exist_ok=True)
        with open(args.save, "w") as f:
            json.dump(results, f, indent=1)
    if args.project:
        project(results)


if __name__ == "__main__":
    main()
