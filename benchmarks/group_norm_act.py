"""Group norm, per-(sample, channel) shift and SiLU fused (``F.group_norm_act``) against the
unfused sequence, at the TinyUNet's shapes (batch 64, 8 groups, float32).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 \\
        python benchmarks/group_norm_act.py [--rounds 7] [--clock cpu|wall] [--sweep]

Per shape and round, best of 5 runs of ``--number`` calls each (ms per call), for:

* ``kernel``: ``kernels.norm.group_norm_act`` and its backward on Numba and on the NumPy
  reference (the thresholds in kernels/norm.py come from this), and on Numba with x and gy
  in channels-last memory (``NHWC``);
* ``op``: one forward and backward through the engine, ``F.group_norm_act(x, 8, w, b,
  shift=s)`` against ``F.silu(F.group_norm(x, 8, w, b) + s.reshape(N, C, 1, 1))`` (group
  norm kernel, broadcast add, NumPy SiLU; backward: SiLU's gradient, the shift's sum, the
  group-norm backward kernel), each with the default dispatch.

``--sweep`` times the kernels alone at batch 4, 8, 16 and 32 of 16x8x8 (4k to 32k elements)
instead.  Prints the median and range over rounds; ``--clock cpu`` (the default) is the process's CPU
time, which other jobs on a shared machine disturb far less than the wall clock.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout
from _timing import best_time, machine  # noqa: E402

SHAPES = [(64, 16, 8, 8), (64, 32, 4, 4), (64, 32, 8, 8), (64, 64, 4, 4)]
SWEEP = [(4, 16, 8, 8), (8, 16, 8, 8), (16, 16, 8, 8), (32, 16, 8, 8)]
GROUPS = 8


def contenders(shape, ops=True):
    import minigen as mg
    from minigen import functional as F
    from minigen.kernels import norm
    rng = np.random.default_rng(0)
    n, c = shape[:2]
    x, gy = (rng.standard_normal(shape).astype(np.float32) for _ in range(2))
    w, b = (rng.standard_normal(c).astype(np.float32) for _ in range(2))
    s = rng.standard_normal((n, c)).astype(np.float32)
    y, mu, r = norm.group_norm_act(x, GROUPS, w, b, s, impl="reference")
    out = {}
    for impl in ("numba", "reference"):
        out[f"kernel fwd {impl}"] = \
            lambda impl=impl: norm.group_norm_act(x, GROUPS, w, b, s, impl=impl)
        out[f"kernel bwd {impl}"] = lambda impl=impl: norm.group_norm_act_backward(
            x, gy, mu, r, GROUPS, w, b, s, impl=impl)
    # the Numba kernels on channels-last memory (x, gy and the results NHWC)
    x_last, gy_last = norm.to_channels_last(x), norm.to_channels_last(gy)
    out["kernel fwd numba NHWC"] = lambda: norm.group_norm_act(x_last, GROUPS, w, b, s)
    out["kernel bwd numba NHWC"] = lambda: norm.group_norm_act_backward(
        x_last, gy_last, mu, r, GROUPS, w, b, s)
    if not ops:
        return out
    xt, wt, bt, st = (mg.tensor(a, requires_grad=True) for a in (x, w, b, s))
    g = mg.tensor(gy)

    def fused():
        F.group_norm_act(xt, GROUPS, wt, bt, shift=st).backward(g)

    def unfused():
        F.silu(F.group_norm(xt, GROUPS, wt, bt) + st.reshape(n, c, 1, 1)).backward(g)
    out["op fused fwd+bwd"], out["op unfused fwd+bwd"] = fused, unfused
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--number", type=int, default=20)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    print(f"# {machine()}; clock {args.clock}; NUMBA_NUM_THREADS="
          f"{os.environ.get('NUMBA_NUM_THREADS', 'all')}; ms per call, median [range] of "
          f"{args.rounds} rounds")
    for shape in SWEEP if args.sweep else SHAPES:
        fns = contenders(shape, ops=not args.sweep)
        times = {k: [] for k in fns}
        for _ in range(args.rounds):
            for k, fn in fns.items():
                times[k].append(1e3 * best_time(fn, repeat=5, number=args.number, clock=clock))
        print("x".join(map(str, shape)))
        for k, ts in times.items():
            print(f"  {k:<24} {np.median(ts):7.3f} [{min(ts):.3f}-{max(ts):.3f}]")


if __name__ == "__main__":
    main()
