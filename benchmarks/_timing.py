"""Shared timing helper for the benchmarks: best-of-k wall time of a callable."""
import time


def best_time(fn, repeat=5, number=1, warmup=1, clock=time.perf_counter):
    """Minimum over ``repeat`` runs of the mean time of ``number`` calls (seconds), on
    ``clock`` (the wall clock; ``time.process_time`` for the process's CPU time)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        start = clock()
        for _ in range(number):
            fn()
        best = min(best, (clock() - start) / number)
    return best


def interleaved(*fns, repeat=5, number=1, warmup=1):
    """Best-of-``repeat`` mean times of ``number`` calls of each function, taking turns, so
    that load from other jobs on a shared machine hits every contender alike."""
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            best[i] = min(best[i], best_time(fn, repeat=1, number=number, warmup=warmup))
    return best


def machine():
    import platform
    import subprocess
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        model = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                     if line.startswith("Model name"))
    except Exception:
        model = platform.processor() or "unknown CPU"
    import os
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"
