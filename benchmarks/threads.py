"""Threads that cooperate: Numba threading layers and BLAS thread limits, measured on the
fused kernels and whole training steps, each setting in a process of its own.

    python benchmarks/threads.py [--rounds 5] [--only fused,pair,mlp,conv,unet16,lm]
    python benchmarks/threads.py --configs "workqueue b2,omp b2 passive,tbb b2"   # others
    python benchmarks/threads.py --log runs.jsonl; python benchmarks/threads.py --report runs.jsonl

A setting is a Numba threading layer (fixed when Numba's pool starts, so one per process),
the number of BLAS threads (``b1``: ``threadpoolctl.threadpool_limits(1, "blas")`` around all
the timed work, what a scoped limit around the library's own calls would do; ``b2``: the pool
as it starts), and optionally a spin setting: ``passive`` (``OMP_WAIT_POLICY=PASSIVE``, the
OpenMP workers sleep at once instead of spinning) or ``t4`` (``OPENBLAS_THREAD_TIMEOUT=4``:
OpenBLAS's idle threads spin 2^4 cycles instead of 2^28 before they sleep). Numba has 2
threads in every setting. Each round starts one process per setting, the settings in turn,
so load from other jobs hits all alike; prints the median and range over the rounds of each
workload's best-of-k time, and the ratio of each setting's median to the first setting's.
The default settings: workqueue b2 (minigen's default), workqueue b1, workqueue b2 t4, tbb b1.

Workloads (the shapes of the other benchmarks):
  fused   bias+GELU forward and backward (32x128x512), LayerNorm forward and backward
          (4096x128), AdamW (1M parameters): the five Numba kernels one after another, summed
  mlp     MLP 784-512-512-784, batch 256, Adam step (benchmarks/engine.py)
  conv    conv net 128x1x28x28 forward + backward (benchmarks/engine.py)
  unet16  TinyUNet step, batch 64, 16 channels (benchmarks/models_speed.py; unet32 on request)
  lm      TransformerLM 4 x 4 x 128, block 128, batch 32, AdamW step (benchmarks/models_lm.py)
  pair    two Python threads each launching 20 bias+GELU forwards at once, wall time for
          all 40 (under 'workqueue' the launches take turns: kernels._dispatch.launch)

The tbb layer needs the ``tbb`` wheel's libtbb.so.12 on the loader path; it lives in
``sys.prefix/lib``, which is added to LD_LIBRARY_PATH of the child processes here.
"""
import argparse
import json
import os
import subprocess
import sys
import threading

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from _timing import best_time  # noqa: E402

WORKLOADS = ("fused", "pair", "mlp", "conv", "unet16", "unet32", "lm")
DEFAULT = ("fused", "pair", "mlp", "conv", "unet16", "lm")
CONFIGS = ("workqueue b2", "workqueue b1", "workqueue b2 t4", "tbb b1")


def config_env(config):
    """The environment of a child process for a setting such as 'omp b2 passive'."""
    layer, *flags = config.split()
    env = dict(os.environ, NUMBA_THREADING_LAYER=layer, NUMBA_NUM_THREADS="2",
               OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        filter(None, [os.path.join(sys.prefix, "lib"), os.environ.get("LD_LIBRARY_PATH")]))
    if "passive" in flags:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    if "t4" in flags:
        env["OPENBLAS_THREAD_TIMEOUT"] = "4"
    return env


def fused_step():
    """The five Numba kernels of benchmarks/fused.py at the TransformerLM's shapes, in turn."""
    import fused
    calls = [pair[1] for name, pair in fused.cases(32 * 128, 512, 4096, 128, 1_000_000).items()
             if name.startswith(("bias+gelu ", "layer_norm", "adamw"))]

    def step():
        for c in calls:
            c()
    return step


def pair_step():
    """Two Python threads, each launching 20 bias+GELU forwards (32x128x512) at once."""
    from minigen.kernels import elementwise as ew
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(4096, 512)).astype(np.float32) for _ in range(2)]
    b = rng.normal(size=512).astype(np.float32)

    def work(x):
        for _ in range(20):
            ew.bias_act(x, b, "gelu", impl="numba")

    def step():
        threads = [threading.Thread(target=work, args=(x,)) for x in xs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return step


def minigen_steps(only):
    """{workload: (step, repeat, number)} for minigen."""
    out = {}
    if "fused" in only:
        out["fused"] = (fused_step(), 3, 3)
    if "pair" in only:
        out["pair"] = (pair_step(), 3, 1)
    if "mlp" in only or "conv" in only:
        import engine
        x, y, weights, xc = engine.inputs()
        if "mlp" in only:
            out["mlp"] = (engine.minigen_mlp(x, y, weights), 3, 5)
        if "conv" in only:
            out["conv"] = (engine.minigen_conv(xc), 3, 2)
    for c in (16, 32):
        if f"unet{c}" in only:
            import models_speed
            out[f"unet{c}"] = (models_speed.minigen_step(c), 3, 3)
    if "lm" in only:
        import models_lm
        out["lm"] = (models_lm.transformer_step(*models_lm.step_model()), 1, 1)
    return out


def child(config, only):
    """Best-of-k seconds per workload under this process's setting, as JSON."""
    import contextlib
    blas = 1 if "b1" in config.split() else 0
    steps = minigen_steps(only)
    from threadpoolctl import threadpool_limits
    scope = threadpool_limits(blas, "blas") if blas else contextlib.nullcontext()
    times = {}
    with scope:
        for name, (fn, repeat, number) in steps.items():
            times[name] = best_time(fn, repeat, number)
    import numba
    times["layer"] = numba.threading_layer()
    return times


def report(results, names, rounds):
    """The table: per setting, each workload's median [range] over the rounds and the ratio of
    its median to the first setting's."""
    from _timing import machine
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at the end; "
          f"medians [ranges] of {rounds} rounds, ms; ratio = median / first row's median")
    print("| setting (active layer) | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    base = None
    for c, runs in results.items():
        if not runs:
            continue
        med = {w: float(np.median([r[w] for r in runs])) for w in names}
        base = base or med
        cells = []
        for w in names:
            t = np.array([r[w] for r in runs]) * 1e3
            cells.append(f"{med[w] * 1e3:.1f} [{t.min():.1f}-{t.max():.1f}] "
                         f"{med[w] / base[w]:.2f}x")
        print(f"| {c} ({runs[0]['layer']}) | " + " | ".join(cells) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default=",".join(DEFAULT))
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--log", help="append each process's result to this file (JSON lines)")
    ap.add_argument("--report", help="print the table from such a log and stop")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    only = args.only.split(",")
    if args.child:
        print(json.dumps(child(args.child, only)))
        return
    configs = [c.strip() for c in args.configs.split(",")]
    results = {c: [] for c in configs}
    names = [w for w in WORKLOADS if w in only]
    if args.report:
        with open(args.report) as f:
            for line in f:
                entry = json.loads(line)
                results.setdefault(entry["config"], []).append(entry)
        return report(results, names, max(map(len, results.values())))
    for r in range(args.rounds):
        for c in configs:
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--child", c,
                                   "--only", args.only], capture_output=True, text=True,
                                  env=config_env(c))
            if done.returncode:
                print(f"{c}: failed: {done.stderr.strip()[-300:]}", flush=True)
                continue
            results[c].append(dict(json.loads(done.stdout.strip().splitlines()[-1]), config=c))
            if args.log:
                with open(args.log, "a") as f:
                    f.write(json.dumps(results[c][-1]) + "\n")
        print(f"round {r + 1} done", file=sys.stderr, flush=True)
    report(results, names, args.rounds)


if __name__ == "__main__":
    main()
