"""Strided convolutions in image blocks against the whole patch matrix, per call.

    python benchmarks/conv_strided.py [--rounds 3] [--repeat 9] [--clock cpu|wall]
                                      [--block-kib 512,1024,2048,4096]

For each shape (3x3, stride 2, padding 1, float32), the forward (``conv2d``) and both
gradients (``conv2d_gradients``, as ``Conv2d.backward`` calls them) are timed on the route
that builds the whole channels-last patch matrix and keeps it for the weight gradient
(``STRIDED_BLOCK_MIN_BYTES`` out of reach), then in image blocks of each ``--block-kib`` of
patches (forced whatever Numba's thread count, which the default route asks for one).  Each call runs after 64 MB of other traffic, as inside a training step (a patch
matrix that stayed in cache from the call before would flatter the whole-matrix route); that
traffic's own time is subtracted.  Best of ``--repeat`` calls, on the process's CPU clock by
default; run with OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 for one core.  Each round times
every route once more, so drift on a shared machine shows as the spread between rounds;
prints the median [range] over the rounds, in ms.
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

# (N, C, H, O): the conv net's second layer (benchmarks/engine.py), the same at a quarter and
# an eighth of the batch, and the TinyUNet's downsampling convolutions (batch 64, 8x8, 16 and
# 32 channels)
SHAPES = [(128, 32, 28, 64), (32, 32, 28, 64), (16, 32, 28, 64), (64, 16, 8, 32),
          (64, 32, 8, 64)]


def timed(fn, flush, repeat, clock):
    def after_traffic():
        flush()
        fn()
    return best_time(after_traffic, repeat=repeat, clock=clock) - \
        best_time(flush, repeat=repeat, clock=clock)


def routes(block_kib):
    yield "whole matrix", 2 ** 62, conv.STRIDED_BLOCK_BYTES
    for kib in block_kib:
        yield f"blocks of {kib} KiB", 0, kib << 10


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=9)
    parser.add_argument("--clock", choices=["cpu", "wall"], default="cpu")
    parser.add_argument("--block-kib", default="512,1024,2048,4096")
    args = parser.parse_args(argv)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    block_kib = [int(v) for v in args.block_kib.split(",")]
    traffic = np.ones(8 << 20)
    saved = conv.STRIDED_BLOCK_MIN_BYTES, conv.STRIDED_BLOCK_BYTES, conv.numba_threads
    conv.numba_threads = lambda: 1
    rng = np.random.default_rng(0)
    print("| N, C, HxW -> O | route | images per block | forward | both gradients | sum |")
    print("|---|---|---:|---:|---:|---:|")
    try:
        for N, C, H, O in SHAPES:
            x = np.maximum(rng.standard_normal((N, C, H, H)), 0).astype(np.float32)
            w = (rng.standard_normal((O, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
            geo = ((2, 2), (1, 1), (1, 1))
            g = conv._geometry("bench", x.shape, w.shape, *geo)
            gy = rng.standard_normal((N, O, g[13], g[14])).astype(np.float32)
            ms = {}
            for _ in range(args.rounds):
                for name, block_min, block_bytes in routes(block_kib):
                    conv.STRIDED_BLOCK_MIN_BYTES, conv.STRIDED_BLOCK_BYTES = block_min, block_bytes
                    patches = conv.conv2d(x, w, *geo, return_patches=True)[1]
                    forward = timed(lambda: conv.conv2d(x, w, *geo, return_patches=True),
                                    traffic.sum, args.repeat, clock)
                    grads = timed(lambda: conv.conv2d_gradients(x, gy, w, *geo, patches=patches),
                                  traffic.sum, args.repeat, clock)
                    per_block = conv._images_per_block(g, 4) if block_min == 0 else N
                    ms.setdefault((name, per_block), []).append(
                        (forward * 1e3, grads * 1e3, (forward + grads) * 1e3))
            for (name, per_block), runs in ms.items():
                cells = []
                for column in np.array(runs).T:
                    cells.append(f"{np.median(column):.2f} [{column.min():.2f}-{column.max():.2f}]")
                print(f"| {N}, {C}, {H}x{H} -> {O} | {name} | {per_block} | {' | '.join(cells)} |")
    finally:
        conv.STRIDED_BLOCK_MIN_BYTES, conv.STRIDED_BLOCK_BYTES, conv.numba_threads = saved


if __name__ == "__main__":
    main()
