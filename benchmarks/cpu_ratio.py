"""The conv models on one core: minigen / PyTorch in process CPU time, each in its own process.

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 \
        python benchmarks/cpu_ratio.py [rounds]

Workloads: the conv net of benchmarks/engine.py (forward + backward, 128x1x28x28) and the
TinyUNet training step of benchmarks/models_speed.py. On a shared machine the wall clock of a
two-thread run measures the other jobs as much as the code (a thread that waits for a busy
core stalls the step); the CPU time of a single-threaded process is far steadier, so this is
the per-core comparison. PyTorch runs with torch.set_num_threads(1). Each round times both
libraries in fresh processes (best of 5 repeats); prints the median and range of the ratio.
"""
import json
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import best_time  # noqa: E402

NUMBER = {"convnet": 3, "unet": 10}


def steps(lib):
    import engine
    import models_speed
    x = engine.inputs()[3]
    if lib == "torch":
        import torch
        torch.set_num_threads(1)
        return {"convnet": engine.torch_conv(torch, x), "unet": models_speed.torch_step()}
    return {"convnet": engine.minigen_conv(x), "unet": models_speed.minigen_step()}


def main():
    if sys.argv[1:2] == ["--lib"]:
        times = {k: best_time(f, number=NUMBER[k], clock=time.process_time)
                 for k, f in steps(sys.argv[2]).items()}
        print(json.dumps(times))
        return
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    results = {k: [] for k in NUMBER}
    for _ in range(rounds):
        out = {}
        for lib in ("torch", "minigen"):
            done = subprocess.run([sys.executable, os.path.abspath(__file__), "--lib", lib],
                                  capture_output=True, text=True, check=True)
            out[lib] = json.loads(done.stdout.strip().splitlines()[-1])
        for k in results:
            results[k].append((out["minigen"][k] * 1e3, out["torch"][k] * 1e3))
    for k, pairs in results.items():
        ratios = [a / b for a, b in pairs]
        print(f"{k}: minigen {np.median([a for a, _ in pairs]):.1f} ms, PyTorch "
              f"{np.median([b for _, b in pairs]):.1f} ms of CPU (medians of {rounds}); ratio "
              f"median {np.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x")


if __name__ == "__main__":
    main()
