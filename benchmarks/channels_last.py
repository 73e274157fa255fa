"""The convolution networks other than the TinyUNet with the convolutions' results kept
channels-last or copied back to NCHW (``kernels.conv.KEEP_CHANNELS_LAST``).

    OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python benchmarks/channels_last.py [--rounds 5]

Times, in one process on its CPU clock (one core's time, which other jobs on a shared machine
disturb far less than the wall clock), the layouts alternating per round, best of 3 per
round: the conv net of benchmarks/engine.py (forward + backward on 128x1x28x28), and a
training step (a 10-step ``fit``, its setup included, divided by 10) of the digits GAN of
``GAN.conv`` and of an autoencoder with the convolutional encoder and decoder, batch 64 of
8x8 images.  Prints the median and range of each over the rounds.
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout
from _timing import best_time, machine  # noqa: E402


FIT_STEPS = 10


def fit_steps(model, X):
    """A fit of FIT_STEPS steps (its setup included); the timing divides by FIT_STEPS."""
    return lambda: model.fit(X, steps=FIT_STEPS, batch_size=64, rng=0)


def workloads():
    import engine
    from minigen import manual_seed
    from minigen.data import load_digits
    from minigen.models import GAN, AutoEncoder
    X = load_digits("train")[0] / 16.0
    manual_seed(0)
    gan = GAN.conv(image_shape=(1, 8, 8), z_dim=16, rng=0)
    ae = AutoEncoder(64, 8, image_shape=(1, 8, 8), rng=0)
    return {"conv net (engine.py)": (engine.minigen_conv(engine.inputs()[3]), 1),
            "digits GAN.conv step": (fit_steps(gan, X), FIT_STEPS),
            "digits conv AE step": (fit_steps(ae, X), FIT_STEPS)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--number", type=int, default=3, help="calls per timing")
    args = parser.parse_args()
    from minigen.kernels import conv
    saved = conv.KEEP_CHANNELS_LAST
    times = {}
    for name, (step, per) in workloads().items():
        times[name] = {"NCHW copies": [], "channels-last": []}
        for _ in range(args.rounds):
            for layout, keep in (("NCHW copies", False), ("channels-last", True)):
                conv.KEEP_CHANNELS_LAST = keep
                times[name][layout].append(best_time(step, repeat=3, number=args.number,
                                                     warmup=1, clock=time.process_time) / per)
    conv.KEEP_CHANNELS_LAST = saved
    print(f"machine: {machine()}")
    for name, by_layout in times.items():
        cells = [f"{k} {np.median(v) * 1e3:.2f} ms [{min(v) * 1e3:.2f}-{max(v) * 1e3:.2f}]"
                 for k, v in by_layout.items()]
        print(f"{name}: {'; '.join(cells)}")


if __name__ == "__main__":
    main()
