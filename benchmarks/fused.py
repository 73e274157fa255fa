"""The fused element-wise kernels (kernels/elementwise.py, norm.py, optimizer.py) against
their NumPy references, as time ratios (reference / Numba: above 1 the kernel is faster).

    python benchmarks/fused.py            # TransformerLM shapes, 5 rounds
    python benchmarks/fused.py --quick    # small shapes, 2 rounds (a smoke run)
    python benchmarks/fused.py --sweep    # ratios at a few sizes, for the dispatch thresholds
    python benchmarks/fused.py --sweep --only bias+   # the sweep for some kernels only
    python benchmarks/fused.py --step     # MLP training step: flat buffer vs per parameter

Shapes (float32, the TransformerLM's): bias + ReLU, SiLU, GELU (both forms) on the 32x128x512 hidden
layer, LayerNorm on 4096x128, an Adam/AdamW step over 1M parameters.  Each round times the
reference and the kernel in turn (interleaved), so load from other jobs hits both alike; the
medians over rounds are printed.  Thresholds in the kernel files came from ``--sweep``.
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from minigen.kernels import elementwise as ew  # noqa: E402
from minigen.kernels import norm  # noqa: E402
from minigen.kernels import optimizer as ko  # noqa: E402


def cases(rows, hidden, ln_rows, width, params, seed=0):
    """{name: (reference call, Numba call)} at the given sizes."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, hidden)).astype(np.float32)
    b, gy = rng.normal(size=hidden).astype(np.float32), rng.normal(size=x.shape).astype(np.float32)
    h = rng.normal(size=(ln_rows, width)).astype(np.float32)
    w, lb = rng.normal(size=width).astype(np.float32), rng.normal(size=width).astype(np.float32)
    hg = rng.normal(size=h.shape).astype(np.float32)
    _, mu, r = norm.layer_norm(h, w, lb, impl="reference")
    p, g = (rng.normal(size=params).astype(np.float32) for _ in range(2))
    m, v = np.zeros_like(p), np.zeros_like(p)
    out = {}
    for kind in ew.KINDS:
        out[f"bias+{kind} fwd"] = tuple(
            (lambda i=impl, k=kind: ew.bias_act(x, b, k, impl=i))
            for impl in ("reference", "numba"))
        out[f"bias+{kind} bwd"] = tuple(
            (lambda i=impl, k=kind: ew.bias_act_backward(x, gy, b, k, impl=i))
            for impl in ("reference", "numba"))
    out["layer_norm fwd"] = tuple((lambda i=impl: norm.layer_norm(h, w, lb, impl=i))
                                  for impl in ("reference", "numba"))
    out["layer_norm bwd"] = tuple((lambda i=impl: norm.layer_norm_backward(h, hg, mu, r, w, impl=i))
                                  for impl in ("reference", "numba"))
    out["adamw step"] = tuple((lambda i=impl: ko.adam_step(p, g, m, v, 10, 1e-4, 0.9, 0.999, 1e-8,
                                                           0.01, True, impl=i))
                              for impl in ("reference", "numba"))
    return out


def timed(fn, number):
    start = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - start) / number


def measure(calls, rounds, number):
    """(median reference time, median kernel time, lowest and highest per-round ratio) over
    ``rounds`` rounds, the two calls timed in turns."""
    for fn in calls:
        fn()                                        # compile / warm up
    times = [[timed(fn, number) for fn in calls] for _ in range(rounds)]
    ratios = [ref / fast for ref, fast in times]
    return (statistics.median(t[0] for t in times), statistics.median(t[1] for t in times),
            min(ratios), max(ratios))


def mlp_steps(sizes, batch, seed=0):
    """{name: one training step} for the MLP ``sizes`` (float32, Adam, MSE on a batch), with
    the optimizer over one flat buffer and parameter by parameter, from the same weights;
    "... update" times the optimizer's zero_grad and step alone."""
    import minigen as mg
    from minigen import functional as F
    from minigen import nn, optim
    rng = np.random.default_rng(seed)
    x = mg.tensor(rng.normal(size=(batch, sizes[0])).astype(np.float32))
    y = mg.tensor(rng.normal(size=(batch, sizes[-1])).astype(np.float32))
    weights = nn.MLP(sizes, rng=seed).state_dict()
    steps = {}
    for name, flat in (("per parameter", False), ("flat buffer", True)):
        model = nn.MLP(sizes, rng=seed).load_state_dict(weights)
        opt = optim.Adam(model.parameters(), lr=1e-4, flat=flat)

        def step(model=model, opt=opt):
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()

        def update(opt=opt):
            opt.zero_grad()
            for p in model.parameters():
                p.grad = mg.Tensor(p.data * np.float32(1e-3))
            opt.step()
        steps[name], steps[name + " update"] = step, update
    return steps


def step_section(rounds, number, quick):
    """Median and range over ``rounds`` of the MLP step time, the two optimizers in turns."""
    sizes, batch = ([64, 32, 32, 64], 16) if quick else ([784, 512, 512, 784], 256)
    steps = mlp_steps(sizes, batch)
    for fn in steps.values():
        fn()
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, fn in steps.items():
            times[name].append(timed(fn, number))
    print(f"MLP {'-'.join(map(str, sizes))}, batch {batch}, Adam, float32, "
          f"MINIGEN_KERNELS={os.environ.get('MINIGEN_KERNELS', '')!r}")
    for name, ts in times.items():
        print(f"{name:<21} median {1e3 * statistics.median(ts):7.2f} ms  range "
              f"{1e3 * min(ts):.2f}-{1e3 * max(ts):.2f} ms", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sweep", action="store_true")
    ap.add_argument("--only", default="", help="only the kernels whose name starts with this")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--step", action="store_true", help="the MLP training step instead")
    args = ap.parse_args()
    if args.step:
        return step_section(2 if args.quick else args.rounds, 1 if args.quick else 5,
                            args.quick)
    if args.sweep:
        for n in (4_096, 16_384, 65_536, 262_144, 1_048_576):
            res = cases(max(1, n // 512), 512, max(1, n // 128), 128, n)
            line = [f"{name}: {ref / fast:.2f}"
                    for name, (ref, fast, _, _) in ((k, measure(c, args.rounds, 5))
                                                    for k, c in res.items()
                                                    if k.startswith(args.only))]
            print(f"{n:>9} elements  " + "  ".join(line), flush=True)
        return
    sizes = (64, 512, 64, 128, 16_384) if args.quick else (32 * 128, 512, 4096, 128, 1_000_000)
    rounds, number = (2, 1) if args.quick else (args.rounds, 3)
    print(f"{'kernel':<20} {'NumPy ms':>9} {'Numba ms':>9} {'ratio':>6}  range")
    for name, calls in cases(*sizes).items():
        if name.startswith(args.only):
            ref, fast, low, high = measure(calls, rounds, number)
            print(f"{name:<20} {1e3 * ref:9.2f} {1e3 * fast:9.2f} {ref / fast:6.2f}  "
                  f"{low:.2f}-{high:.2f}", flush=True)


if __name__ == "__main__":
    main()
