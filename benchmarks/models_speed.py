"""One training step of the digits DDPM's TinyUNet, minigen against the same network in PyTorch.

    python benchmarks/models_speed.py [--rounds 5] [--steps 20] [--channels 16,32]
    python benchmarks/models_speed.py --layouts [--rounds 5] [--steps 10]
    python benchmarks/models_speed.py --faults [--steps 20]

The step: eps_hat = TinyUNet(x_t, t) on a batch of 64 8x8 one-channel images (channels 16
and 32, each timed on its own, time embedding 32, SiLU, GroupNorm with 8 groups), mean squared error against eps, backward,
Adam.  PyTorch runs in a process of its own each round (its OpenMP workers and NumPy's
OpenBLAS/Numba threads slow each other down in one process); the rounds alternate between
the two libraries so load from other jobs hits both alike.  Prints the median and range of
the per-round ratio minigen / PyTorch (lower is better; the target is <= 1.5x).
``--layouts`` times minigen alone at 16 and 32 channels in one process, the convolutions'
results copied back to NCHW (``kernels.conv.KEEP_CHANNELS_LAST = False``) against kept
channels-last, alternating per round, on the process's CPU clock (run it with
OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 for one core's time, which other jobs on a shared
machine disturb far less than the wall clock); prints the median and range of each.
``--faults`` runs minigen's TinyUNet steps (16 and 32 channels) and the conv net of
benchmarks/engine.py for ``--steps`` steps after 5 and prints, per step, the wall time, the
minor page faults and the system and user CPU time (``resource.getrusage``) with glibc's
defaults, i.e. outside ``minigen.train.keep_freed_memory`` (which ``train`` and the timed
rounds above use): what returning freed memory to the OS costs.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))   # this checkout
from _timing import best_time, machine  # noqa: E402

BATCH, SIZE, CHANNELS, EMB, GROUPS = 64, 8, 32, 32, 8


def batch():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((BATCH, 1, SIZE, SIZE)).astype(np.float32)
    eps = rng.standard_normal(x.shape).astype(np.float32)
    t = rng.integers(0, 1000, BATCH)
    return x, eps, t


def minigen_step(channels=CHANNELS):
    import minigen as mg
    from minigen import functional as F
    from minigen import optim
    from minigen.models.diffusion.denoisers import TinyUNet
    net = TinyUNet(1, channels, EMB, "silu", GROUPS, rng=0)
    opt = optim.Adam(net.parameters(), lr=1e-3)
    x, eps, t = batch()
    xt, et = mg.tensor(x), mg.tensor(eps)

    def step():
        opt.zero_grad()
        F.mse_loss(net(xt, t), et).backward()
        opt.step()
    return step


def torch_step():
    import torch
    from torch import nn
    F = torch.nn.functional

    class ResBlock(nn.Module):
        def __init__(self, cin, cout, tdim):
            super().__init__()
            self.norm1, self.conv1 = nn.GroupNorm(GROUPS, cin), nn.Conv2d(cin, cout, 3, padding=1)
            self.time = nn.Linear(tdim, cout)
            self.norm2, self.conv2 = nn.GroupNorm(GROUPS, cout), nn.Conv2d(cout, cout, 3, padding=1)
            self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

        def forward(self, x, temb):
            h = self.conv1(F.silu(self.norm1(x)))
            h = self.norm2(h) + self.time(temb)[:, :, None, None]
            h = self.conv2(F.silu(h))
            return (x if self.skip is None else self.skip(x)) + h

    class TinyUNet(nn.Module):
        def __init__(self, c=CHANNELS):
            super().__init__()
            self.time = nn.Linear(EMB, 2 * c)
            self.conv_in = nn.Conv2d(1, c, 3, padding=1)
            self.down = ResBlock(c, c, 2 * c)
            self.downsample = nn.Conv2d(c, 2 * c, 3, stride=2, padding=1)
            self.mid = ResBlock(2 * c, 2 * c, 2 * c)
            self.upconv = nn.Conv2d(2 * c, c, 3, padding=1)
            self.up = ResBlock(2 * c, c, 2 * c)
            self.norm_out, self.conv_out = nn.GroupNorm(GROUPS, c), nn.Conv2d(c, 1, 3, padding=1)

        def forward(self, x, temb):
            temb = F.silu(self.time(temb))
            skip = self.down(self.conv_in(x), temb)
            h = self.mid(self.downsample(skip), temb)
            h = self.upconv(F.interpolate(h, scale_factor=2, mode="nearest"))
            h = self.up(torch.cat([h, skip], 1), temb)
            return self.conv_out(F.silu(self.norm_out(h)))

    torch.manual_seed(0)
    net = TinyUNet()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    x, eps, t = batch()
    half = EMB // 2
    freqs = np.exp(-math.log(10000.0) * np.arange(half) / half)
    emb = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], 1)
    xt, et, tt = (torch.from_numpy(a.astype(np.float32)) for a in (x, eps, emb))

    def step():
        opt.zero_grad()
        F.mse_loss(net(xt, tt), et).backward()
        opt.step()
    return step


def torch_time(steps, channels):
    global CHANNELS
    CHANNELS = channels            # read by torch_step's TinyUNet when it is built
    import torch
    torch.set_num_threads(max(1, os.cpu_count()))
    return best_time(torch_step(), repeat=3, number=steps, warmup=3)


def rounds_of(rounds, steps, channels):
    """[(minigen s, PyTorch s)] per round and the per-round ratios; PyTorch in a fresh
    process each round, the two alternating."""
    from minigen.train import keep_freed_memory
    ours = minigen_step(channels)
    times = []
    for _ in range(rounds):
        done = subprocess.run([sys.executable, os.path.abspath(__file__), "--torch-only",
                               "--steps", str(steps), "--channels", str(channels)],
                              capture_output=True, text=True, check=True)
        t_torch = json.loads(done.stdout.strip().splitlines()[-1])
        with keep_freed_memory():          # as train() runs each step
            times.append((best_time(ours, repeat=3, number=steps, warmup=3), t_torch))
    return times, [a / b for a, b in times]


def layouts(rounds, steps):
    """Per channel count, {layout: [step seconds per round]}, the layouts alternating."""
    from minigen.kernels import conv
    saved, out = conv.KEEP_CHANNELS_LAST, {}
    for channels in (16, 32):
        step, times = minigen_step(channels), {"NCHW copies": [], "channels-last": []}
        for _ in range(rounds):
            for name, keep in (("NCHW copies", False), ("channels-last", True)):
                conv.KEEP_CHANNELS_LAST = keep
                times[name].append(best_time(step, repeat=3, number=steps, warmup=2,
                                             clock=time.process_time))
        conv.KEEP_CHANNELS_LAST = saved
        out[channels] = times
    return out


def faults(steps):
    """{name: (wall ms, minor faults, system ms, user ms) per step}."""
    import resource
    import engine
    out = {}
    for name, step in (("TinyUNet 16 ch", minigen_step(16)), ("TinyUNet 32 ch", minigen_step(32)),
                       ("conv net", engine.minigen_conv(engine.inputs()[3]))):
        for _ in range(5):
            step()
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(steps):
            step()
        t, r1 = time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF)
        out[name] = (t / steps * 1e3, (r1.ru_minflt - r0.ru_minflt) / steps,
                     (r1.ru_stime - r0.ru_stime) / steps * 1e3,
                     (r1.ru_utime - r0.ru_utime) / steps * 1e3)
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=20, help="steps per timing")
    parser.add_argument("--channels", default="16,32",
                        help="comma-separated TinyUNet channel counts, each timed on its own")
    parser.add_argument("--torch-only", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--layouts", action="store_true",
                        help="minigen only: NCHW copies vs channels-last, 16 and 32 channels")
    parser.add_argument("--faults", action="store_true",
                        help="minigen only: page faults and system time per step")
    args = parser.parse_args()
    if args.faults:
        print(f"machine: {machine()}")
        for name, (wall, flt, sys_ms, user_ms) in faults(args.steps).items():
            print(f"{name}: {wall:.1f} ms a step, {flt:.0f} minor faults, system {sys_ms:.1f} ms,"
                  f" user {user_ms:.1f} ms")
        return
    if args.layouts:
        print(f"machine: {machine()}")
        for channels, times in layouts(args.rounds, args.steps).items():
            cells = [f"{k} {np.median(v) * 1e3:.1f} ms [{min(v) * 1e3:.1f}-{max(v) * 1e3:.1f}]"
                     for k, v in times.items()]
            print(f"TinyUNet step, {channels} channels, batch {BATCH}: {'; '.join(cells)}")
        return
    if args.torch_only:
        print(json.dumps(torch_time(args.steps, int(args.channels))))
        return
    print(f"machine: {machine()}")
    for channels in (int(c) for c in args.channels.split(",")):
        times, ratios = rounds_of(args.rounds, args.steps, channels)
        med = float(np.median(ratios))
        print(f"TinyUNet training step, {channels} channels, batch {BATCH}, {SIZE}x{SIZE}: "
              f"minigen {np.median([a for a, _ in times]) * 1e3:.1f} ms, "
              f"PyTorch {np.median([b for _, b in times]) * 1e3:.1f} ms (medians of "
              f"{args.rounds}); ratio median {med:.2f}x, range {min(ratios):.2f}-"
              f"{max(ratios):.2f}x")


if __name__ == "__main__":
    main()
