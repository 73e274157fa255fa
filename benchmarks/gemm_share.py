"""The physical anchor of a training step: the share of its time spent outside the matrix
products, for minigen and PyTorch, each in a process of its own.

    python benchmarks/gemm_share.py [--rounds 5] [--only lm,unet16,unet32,conv,mlp]
    python benchmarks/gemm_share.py --shapes         # list each step's GEMMs and stop

For each step, one untimed minigen step runs with its matrix products recorded: every
``MatMul`` and ``Linear`` forward (the backward passes are Tensor ops, so their products are
recorded as ``MatMul`` forwards too) and every product inside ``kernels.conv`` (the forward's
patch GEMM; the input gradient's flipped convolution or its col2im GEMM; the weight
gradient's GEMM), as (batch, m, k, n): ``batch`` products of (m, k) @ (k, n). Then:

* minigen's process times the step (best of k) and each distinct GEMM alone with NumPy
  (``np.matmul`` into a preallocated output, float32, C-contiguous operands, the BLAS threads
  of the step), in both orientations ((m, k) @ (k, n) and (n, k) @ (k, m), the same flops; the
  faster counts: OpenBLAS's rate for that product), summed over the step's products;
* PyTorch's process times the same network's step and the same list of products with
  ``torch.matmul(out=)`` (its own GEMM rate), also the faster orientation.

The non-GEMM share is 1 - GEMM time / step time. ``GEMM (NumPy)`` is the common anchor: the
products at OpenBLAS's rate, which both libraries would pay if their products ran there;
PyTorch's share is given against its own GEMM time and against that anchor. The GEMMs are
timed back to back, warm in cache, so the anchor is a floor for the products' time.

The rounds alternate: minigen's process, then PyTorch's. 2 threads each side (``--threads``);
medians and ranges over the rounds.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from _timing import best_time, machine  # noqa: E402

WORKLOADS = ("lm", "unet16", "unet32", "conv", "mlp")
TITLES = {"lm": "TransformerLM 4x4x128, block 128, batch 32, AdamW",
          "unet16": "TinyUNet 16 ch, batch 64, Adam", "unet32": "TinyUNet 32 ch, batch 64, Adam",
          "conv": "conv net 128x1x28x28 fwd+bwd", "mlp": "MLP 784-512-512-784 b256, Adam"}
REPEAT = {"lm": (2, 1), "unet16": (3, 3), "unet32": (3, 3), "conv": (3, 2), "mlp": (3, 10)}


# --- recording minigen's matrix products -------------------------------------------------------
class GemmRecorder:
    """Context manager: patches minigen's product sites to append (batch, m, k, n) to
    ``self.gemms``, and restores them on exit."""

    def __init__(self):
        self.gemms = []

    def add(self, batch, m, k, n):
        self.gemms.append((int(batch), int(m), int(k), int(n)))

    def __enter__(self):
        from minigen.kernels import conv as kc
        from minigen.ops import math as om
        self._saved = (om.MatMul.forward, om.Linear.forward, kc.conv2d, kc.conv2d_input_grad,
                       kc.conv2d_weight_grad)
        mm_fwd, lin_fwd, conv2d, input_grad, weight_grad = self._saved
        rec = self

        def geometry(x_shape, w_shape, args):
            g = kc._geometry("record", x_shape, w_shape, *args[:3])
            return g[0], g[1], g[4], g[5] * g[6], g[13] * g[14]   # N, C, O, kh kw, Ho Wo

        def matmul_forward(self, a, b):
            rec.add(np.prod(np.broadcast_shapes(a.shape[:-2], b.shape[:-2]), dtype=int),
                    a.shape[-2], a.shape[-1], b.shape[-1])
            return mm_fwd(self, a, b)

        def linear_forward(self, x, w, *bias):
            rec.add(1, np.prod(x.shape[:-1], dtype=int), w.shape[1], w.shape[0])
            return lin_fwd(self, x, w, *bias)

        def conv_forward(x, w, *args, **kwargs):
            N, C, O, kk, HW = geometry(x.shape, w.shape, args)
            rec.add(1, N * HW, C * kk, O)                    # patches @ W^T
            return conv2d(x, w, *args, **kwargs)

        def conv_input_grad(gy, w, x_shape, *args, **kwargs):
            before = len(rec.gemms)
            out = input_grad(gy, w, x_shape, *args, **kwargs)
            if len(rec.gemms) == before:                    # no flipped conv2d ran: col2im's
                N, C, O, kk, HW = geometry(x_shape, w.shape, args)
                rec.add(1, C * kk, O, N * HW)                # W2^T @ G
            return out

        def conv_weight_grad(x, gy, w_shape, *args, **kwargs):
            N, C, O, kk, HW = geometry(x.shape, w_shape, args)
            rec.add(1, O, N * HW, C * kk)                    # G @ cols^T
            return weight_grad(x, gy, w_shape, *args, **kwargs)

        om.MatMul.forward, om.Linear.forward = matmul_forward, linear_forward
        kc.conv2d, kc.conv2d_input_grad, kc.conv2d_weight_grad = \
            conv_forward, conv_input_grad, conv_weight_grad
        return self

    def __exit__(self, *exc):
        from minigen.kernels import conv as kc
        from minigen.ops import math as om
        (om.MatMul.forward, om.Linear.forward, kc.conv2d, kc.conv2d_input_grad,
         kc.conv2d_weight_grad) = self._saved


def counted(gemms):
    """{(batch, m, k, n): count}."""
    out = {}
    for g in gemms:
        out[tuple(g)] = out.get(tuple(g), 0) + 1
    return out


# --- steps -------------------------------------------------------------------------------------
def minigen_step(name):
    if name == "lm":
        import models_lm
        return models_lm.transformer_step(*models_lm.step_model())
    if name.startswith("unet"):
        import models_speed
        return models_speed.minigen_step(int(name[4:]))
    import engine
    x, y, weights, xc = engine.inputs()
    return engine.minigen_mlp(x, y, weights) if name == "mlp" else engine.minigen_conv(xc)


def torch_step(torch, name):
    if name == "lm":
        import models_lm
        tok, train, _ = models_lm.corpus()
        model = models_lm.torch_model(torch, tok.vocab_size)
        rows = np.lib.stride_tricks.sliding_window_view(np.asarray(tok.encode(train)),
                                                        models_lm.BLOCK + 1)
        batch = torch.from_numpy(np.ascontiguousarray(
            rows[np.random.default_rng(0).integers(0, len(rows), 32)]))
        params = list(model.parameters())
        opt = torch.optim.AdamW(params, lr=1e-3, betas=models_lm.BETAS,
                                weight_decay=models_lm.WEIGHT_DECAY)

        def step():
            opt.zero_grad()
            logits = model(batch[:, :-1])
            torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                              batch[:, 1:].reshape(-1)).backward()
            torch.nn.utils.clip_grad_norm_(params, models_lm.CLIP_GRAD)
            opt.step()
        return step
    if name.startswith("unet"):
        import models_speed
        models_speed.CHANNELS = int(name[4:])      # torch_step's TinyUNet reads it when built
        return models_speed.torch_step()
    import engine
    x, y, weights, xc = engine.inputs()
    return engine.torch_mlp(torch, x, y, weights) if name == "mlp" else \
        engine.torch_conv(torch, xc)


def gemm_time(shapes, matmul, empty, repeat=5):
    """Seconds for all products in ``shapes`` ({(batch, m, k, n): count}), each distinct one
    timed alone (best of ``repeat``, enough calls for about 2 ms), the faster orientation."""
    total = 0.0
    rng = np.random.default_rng(0)
    for (batch, m, k, n), count in shapes.items():
        times = []
        for (p, q, r) in ((m, k, n), (n, k, m)):
            lead = (batch,) if batch > 1 else ()
            a = empty(rng.standard_normal(lead + (p, q)).astype(np.float32))
            b = empty(rng.standard_normal(lead + (q, r)).astype(np.float32))
            c = empty(np.zeros(lead + (p, r), np.float32))

            def call(a=a, b=b, c=c):
                matmul(a, b, out=c)
            once = best_time(call, 1, 1)
            times.append(best_time(call, repeat, max(1, int(2e-3 / max(once, 1e-7)))))
        total += count * min(times)
    return total


def child(side, only, shapes_path):
    out = {}
    if side == "minigen":
        shapes = {}
        for name in only:
            step = minigen_step(name)
            step()                                        # compile, warm up
            with GemmRecorder() as rec:
                step()
            shapes[name] = rec.gemms
            out[name] = {"step": best_time(step, *REPEAT[name]),
                         "gemm": gemm_time(counted(rec.gemms), np.matmul, lambda a: a)}
        out["shapes"] = shapes
        return out
    import torch
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    with open(shapes_path) as f:
        shapes = json.load(f)
    for name in only:
        out[name] = {"step": best_time(torch_step(torch, name), *REPEAT[name]),
                     "gemm": gemm_time(counted(shapes[name]), torch.matmul, torch.from_numpy)}
    return out


def pct(values):
    v = 100 * np.asarray(values)
    return f"{np.median(v):.0f}% [{v.min():.0f}-{v.max():.0f}]"


def ms(values):
    v = 1e3 * np.asarray(values)
    return f"{np.median(v):.1f} [{v.min():.1f}-{v.max():.1f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default=",".join(WORKLOADS))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shapes", action="store_true", help="list each step's GEMMs and stop")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--shapes-file", help=argparse.SUPPRESS)
    args = ap.parse_args()
    only = args.only.split(",")
    if args.child:
        print(json.dumps(child(args.child, only, args.shapes_file)))
        return
    import tempfile
    env = dict(os.environ, **{v: str(args.threads) for v in (
        "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")})
    cmd = [sys.executable, os.path.abspath(__file__), "--only", args.only]
    ours, theirs = [], []
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "shapes.json")
        for r in range(1 if args.shapes else args.rounds):
            done = subprocess.run(cmd + ["--child", "minigen"], env=env, capture_output=True,
                                  text=True, check=True)
            ours.append(json.loads(done.stdout.strip().splitlines()[-1]))
            if args.shapes:
                for name in only:
                    print(f"{TITLES[name]}: (batch, m, k, n) x count, "
                          f"{ours[0][name]['gemm'] * 1e3:.2f} ms at NumPy's rate")
                    for shape, count in counted(ours[0]["shapes"][name]).items():
                        print(f"  {shape} x {count}")
                return
            with open(path, "w") as f:
                json.dump(ours[-1]["shapes"], f)
            done = subprocess.run(cmd + ["--child", "torch", "--shapes-file", path], env=env,
                                  capture_output=True, text=True, check=True)
            theirs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            print(f"round {r + 1} done", file=sys.stderr, flush=True)
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f} at the end; "
          f"{args.threads} threads each side; medians [ranges] of {args.rounds} rounds, ms")
    print("| step | minigen step | GEMM (NumPy) | minigen non-GEMM share | PyTorch step | "
          "GEMM (torch.matmul) | PyTorch non-GEMM share (own GEMMs) | "
          "PyTorch non-GEMM share (NumPy GEMMs) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name in only:
        a = [o[name] for o in ours]
        b = [t[name] for t in theirs]
        print(f"| {TITLES[name]} | {ms([x['step'] for x in a])} | {ms([x['gemm'] for x in a])} | "
              f"{pct([1 - x['gemm'] / x['step'] for x in a])} | {ms([x['step'] for x in b])} | "
              f"{ms([x['gemm'] for x in b])} | {pct([1 - x['gemm'] / x['step'] for x in b])} | "
              f"{pct([1 - y['gemm'] / x['step'] for x, y in zip(b, a)])} |")


if __name__ == "__main__":
    main()
