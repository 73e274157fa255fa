"""How a TinyUNet training step's time splits into a part fixed per step and a part per sample,
minigen against PyTorch, one thread each:

    python benchmarks/step_scaling.py [--rounds 5] [--channels 16] [--batches 1,4,16,32,64]

Each library runs in a process of its own per round (PyTorch's OpenMP pool and NumPy's
OpenBLAS slow each other down in one), the two alternating; each times the step of
``benchmarks/models_speed.py`` (TinyUNet, Adam) at every batch size on the process's CPU clock
(median of 20 steps after 5), with BLAS, Numba and OpenMP pinned to one thread.  The line
through the two largest batches, t(B) = t0 + B c, gives the fixed part t0 (autograd, the
per-layer Python and kernel launches, the optimizer) and the per-sample part c.

Why it matters for data parallelism: a rank with half the batch saves s = t(B) / t(B/2), not 2,
and two ranks of one thread beat one process of two threads by s / g (g: that process's gain
from its second thread).  ``benchmarks/distributed.py --bound`` measures s and g on the
parallel step itself; this script says which of t0 and c keeps s below 2.
"""
import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def worker(lib, channels, batches):
    sys.path.insert(0, HERE)
    sys.path.insert(0, os.path.dirname(HERE))
    import models_speed
    models_speed.CHANNELS = channels
    kept = contextlib.nullcontext()
    if lib == "torch":
        import torch
        torch.set_num_threads(1)
    else:
        from minigen._alloc import keep_freed_memory
        kept = keep_freed_memory()            # as train() runs each step
    out = {}
    with kept:
        for b in batches:
            out[b] = _median_step(lib, channels, b, models_speed)
    print(json.dumps(out))


def _median_step(lib, channels, b, models_speed):
    """Median CPU ms of 20 steps after 5, at batch b."""
    models_speed.BATCH = b
    step = models_speed.torch_step() if lib == "torch" else models_speed.minigen_step(channels)
    for _ in range(5):
        step()
    times = []
    for _ in range(20):
        start = time.process_time()
        step()
        times.append(time.process_time() - start)
    return float(np.median(times)) * 1e3


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--channels", type=int, default=16)
    ap.add_argument("--batches", default="1,4,16,32,64")
    ap.add_argument("--worker", choices=["minigen", "torch"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    batches = sorted(int(b) for b in args.batches.split(","))
    if len(batches) < 2:
        ap.error("--batches needs at least two sizes")
    if args.worker:
        return worker(args.worker, args.channels, batches)
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", OMP_NUM_THREADS="1",
               MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    runs = {"minigen": [], "torch": []}
    for _ in range(args.rounds):
        for lib in runs:
            done = subprocess.run([sys.executable, __file__, "--worker", lib, "--channels",
                                   str(args.channels), "--batches", args.batches],
                                  capture_output=True, text=True, env=env)
            if done.returncode:
                sys.exit(f"{lib} worker failed: {done.stderr.strip().splitlines()[-1:]}")
            runs[lib].append({int(k): v for k, v in
                              json.loads(done.stdout.strip().splitlines()[-1]).items()})
    big, half = batches[-1], batches[-2]
    print(f"TinyUNet {args.channels} ch training step, one thread, CPU ms per step: median "
          f"[range] of {args.rounds} processes each")
    print("| batch | " + " | ".join(["minigen", "PyTorch", "minigen / PyTorch"]) + " |")
    print("|---:|---:|---:|---:|")
    for b in batches:
        m = [r[b] for r in runs["minigen"]]
        t = [r[b] for r in runs["torch"]]
        ratios = [x / y for x, y in zip(m, t)]
        print(f"| {b} | {np.median(m):.2f} [{min(m):.2f}-{max(m):.2f}] | {np.median(t):.2f} "
              f"[{min(t):.2f}-{max(t):.2f}] | {np.median(ratios):.2f}x |")
    for lib, name in (("minigen", "minigen"), ("torch", "PyTorch")):
        per = [(r[big] - r[half]) / (big - half) for r in runs[lib]]
        fixed = [r[big] - big * c for r, c in zip(runs[lib], per)]
        s = [r[big] / r[big // 2] for r in runs[lib]] if big // 2 in batches else None
        line = (f"{name}: fixed part t0 {np.median(fixed):.2f} ms [{min(fixed):.2f}-"
                f"{max(fixed):.2f}], per sample c {np.median(per) * 1e3:.0f} us "
                f"[{min(per) * 1e3:.0f}-{max(per) * 1e3:.0f}]")
        if s:
            line += f", s = t({big}) / t({big // 2}) {np.median(s):.2f} [{min(s):.2f}-{max(s):.2f}]"
        print(line)


if __name__ == "__main__":
    main()
