"""The convolution routes of ``minigen.kernels.conv``, each timed on the shapes the models use.

    python benchmarks/conv_layouts.py [--repeat 15] [--clock cpu|wall]

For every shape, forward, input gradient and weight gradient are timed with the layout
choice forced each way (channel-major patches and col2im, or channels-last patches and the
flipped-kernel input gradient), plus the route the default picks (``NHWC_MIN_CHANNELS``,
``FLIP_MIN_CHANNELS``). The timings are the best of ``--repeat`` calls, interleaved, on the
process's CPU clock by default (``--clock cpu``), which a shared machine's other jobs disturb
far less than the wall clock; run it with OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 for
single-core numbers. Prints a markdown table of milliseconds, the faster route in bold.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import best_time  # noqa: E402

from minigen.kernels import conv  # noqa: E402

# (N, C, H, O, stride): the TinyUNet's convolutions (batch 64, 8x8 digits) at 32 channels
# and at 16 (the digits recipe's), the conv net of benchmarks/engine.py (128 x 28 x 28), and
# channel counts around the thresholds
SHAPES = [(64, 1, 8, 32, 1), (64, 32, 8, 32, 1), (64, 64, 8, 32, 1), (64, 64, 4, 64, 1),
          (64, 32, 8, 64, 2), (64, 16, 8, 16, 1), (64, 32, 8, 16, 1), (64, 32, 4, 32, 1),
          (64, 16, 8, 32, 2), (128, 1, 28, 32, 1), (128, 32, 28, 64, 2), (64, 3, 16, 32, 1),
          (64, 8, 16, 32, 1), (64, 16, 16, 32, 1), (64, 16, 16, 16, 1)]
LAYOUTS = {"channel-major": (10 ** 9, 10 ** 9), "channels-last": (1, 1)}


def calls(N, C, H, O, s, rng):
    x = rng.standard_normal((N, C, H, H)).astype(np.float32)
    w = (rng.standard_normal((O, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    geo = ((s, s), (1, 1), (1, 1))
    gy = rng.standard_normal(conv.conv2d(x, w, *geo).shape).astype(np.float32)
    return {"forward": lambda: conv.conv2d(x, w, *geo),
            "input grad": lambda: conv.conv2d_input_grad(gy, w, x.shape, *geo),
            "weight grad": lambda: conv.conv2d_weight_grad(x, gy, w.shape, *geo)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    args = parser.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    default = conv.NHWC_MIN_CHANNELS, conv.FLIP_MIN_CHANNELS
    rng = np.random.default_rng(0)
    print(f"| N, C, HxW, O, stride | op | {' | '.join(LAYOUTS)} | default picks |")
    print("|---|---|---:|---:|---|")
    try:
        for N, C, H, O, s in SHAPES:
            for op, fn in calls(N, C, H, O, s, rng).items():
                ms = {}
                for name, limits in LAYOUTS.items():
                    conv.NHWC_MIN_CHANNELS, conv.FLIP_MIN_CHANNELS = limits
                    ms[name] = best_time(fn, repeat=args.repeat, clock=clock) * 1e3
                conv.NHWC_MIN_CHANNELS, conv.FLIP_MIN_CHANNELS = default
                if op == "input grad":
                    picked = s == 1 and C >= conv.FLIP_MIN_CHANNELS
                else:
                    picked = C >= conv.NHWC_MIN_CHANNELS
                fastest = min(ms, key=ms.get)
                cells = [f"**{v:.2f}**" if k == fastest else f"{v:.2f}" for k, v in ms.items()]
                print(f"| {N}, {C}, {H}x{H}, {O}, {s} | {op} | {' | '.join(cells)} | "
                      f"{'channels-last' if picked else 'channel-major'} |")
    finally:
        conv.NHWC_MIN_CHANNELS, conv.FLIP_MIN_CHANNELS = default


if __name__ == "__main__":
    main()
