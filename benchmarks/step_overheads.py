"""Three costs of a training step outside the arithmetic, each measured against its fix:

    python benchmarks/step_overheads.py [--rounds 5] [--threads 2]

1. Matrix products laid out for OpenBLAS (``minigen._blas.matmul``) against NumPy's ``a @ b``
   on the TransformerLM's products (4 x 4 x 128, block 128, batch 32): the linear layers'
   (32, 128, C) @ (C, n), and the attention's 128 stacked products with the layouts the
   graph makes (q, k, v are strided views of the fused projection; k^T a transposed view).
2. The attention's masked softmax (32 x 4 x 128 x 128 float32 scores, causal mask): the
   reference (fill the masked scores with -inf, then softmax) against the one-pass kernel.
3. Memory kept between steps (``minigen._alloc.keep_freed_memory``, which ``train`` uses):
   minor page faults and CPU time per step of the TransformerLM and MLP steps, one process
   per setting (glibc's thresholds, once changed, stay changed in a process), alternating.

Products and softmax: median over ``--rounds`` rounds of the best of 20 calls each, the two
sides alternating within a round; ``--threads`` BLAS / Numba threads.  Steps: median of 15
steps after 3 warm-up ones, per process, median and range over the rounds.
"""
import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)          # the benchmarks' shared modules (_timing, models_lm, engine)


def _set_threads(n):
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS",
                "NUMBA_NUM_THREADS"):
        os.environ[var] = str(n)


def products():
    import numpy as np
    rng = np.random.default_rng(0)
    B, nh, T, hs = 32, 4, 128, 32
    C = nh * hs
    qkv = rng.standard_normal((B, T, 3 * C), dtype=np.float32)

    def head(i):
        return qkv[..., i * C:(i + 1) * C].reshape(B, T, nh, hs).transpose(0, 2, 1, 3)
    q, k, v = head(0) * np.float32(hs ** -0.5), head(1), head(2)
    w = rng.standard_normal((B, nh, T, T), dtype=np.float32)
    g = rng.standard_normal((B, nh, T, hs), dtype=np.float32)
    x, h = (rng.standard_normal((B, T, n), dtype=np.float32) for n in (C, 4 * C))
    w_qkv = rng.standard_normal((3 * C, C), dtype=np.float32)      # Linear weights (out, in)
    w_2 = rng.standard_normal((C, 4 * C), dtype=np.float32)
    return {
        "x W_qkv^T (32,128,128)@(128,384)": (x, w_qkv.T),
        "h W_2^T (32,128,512)@(512,128)": (h, w_2.T),
        "q k^T 128 x (128,32)@(32,128)": (q, k.swapaxes(-1, -2)),
        "P v 128 x (128,128)@(128,32)": (w, v),
        "dP = g v^T": (g, v.swapaxes(-1, -2)),
        "dv = P^T g": (w.swapaxes(-1, -2), g),
    }


def time_pair(f, g, rounds):
    import numpy as np
    from _timing import best_time
    a, b = [], []
    for _ in range(rounds):
        a.append(best_time(f, repeat=20))
        b.append(best_time(g, repeat=20))
    return float(np.median(a)), float(np.median(b))


def kernels_part(rounds):
    import numpy as np

    from minigen import _blas
    from minigen.kernels import softmax as sm
    rows = []
    for name, (a, b) in products().items():
        assert np.allclose(_blas.matmul(a, b), a @ b, rtol=1e-5, atol=1e-4)
        rows.append((name, *time_pair(lambda: a @ b, lambda: _blas.matmul(a, b), rounds)))
    x = np.random.default_rng(1).standard_normal((32, 4, 128, 128), dtype=np.float32)
    mask = np.triu(np.ones((128, 128), bool), 1)[None, None]
    sm.masked_softmax(x, mask, impl="numba")
    rows.append(("masked softmax 32x4x128x128", *time_pair(
        lambda: sm.masked_softmax(x, mask, impl="reference"),
        lambda: sm.masked_softmax(x, mask, impl="numba"), rounds)))
    return rows


def step_child(workload, keep):
    """One process: page faults and CPU / wall ms per step, as JSON on the last line."""
    import resource
    import time

    import numpy as np

    from minigen.train import keep_freed_memory
    if workload == "lm":
        import models_lm
        step = models_lm.transformer_step(*models_lm.step_model())
    else:
        import engine as E
        x, y, weights, _ = E.inputs()
        step = E.minigen_mlp(x, y, weights)
    import contextlib
    with keep_freed_memory() if keep else contextlib.nullcontext():
        for _ in range(3):
            step()
        faults, cpu, wall = [], [], []
        for _ in range(15):
            f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            c0, w0 = time.process_time(), time.perf_counter()
            step()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0)
    print(json.dumps({"faults": float(np.median(faults)), "cpu": 1e3 * float(np.median(cpu)),
                      "wall": 1e3 * float(np.median(wall))}))


def steps_part(rounds):
    import numpy as np
    out = {}
    for _ in range(rounds):
        for workload in ("lm", "mlp"):
            for keep in (False, True):
                done = subprocess.run([sys.executable, __file__, "--child", workload,
                                       "--keep", str(int(keep))], capture_output=True, text=True,
                                      env=os.environ)
                if done.returncode:
                    raise RuntimeError(done.stderr[-2000:])
                res = json.loads(done.stdout.strip().splitlines()[-1])
                for key, value in res.items():
                    out.setdefault((workload, keep, key), []).append(value)
    return {k: (float(np.median(v)), min(v), max(v)) for k, v in out.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--keep", type=int, default=0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    _set_threads(args.threads)
    if args.child:
        return step_child(args.child, bool(args.keep))
    from _timing import machine
    print(f"# {machine()}; {args.threads} thread(s); {args.rounds} rounds")
    print("| product / kernel | NumPy / reference ms | minigen ms | ratio |\n|---|---:|---:|---:|")
    for name, ref, new in kernels_part(args.rounds):
        print(f"| {name} | {1e3 * ref:.2f} | {1e3 * new:.2f} | {new / ref:.2f} |")
    print("\n| step | memory | page faults / step | CPU ms / step | wall ms / step |\n"
          "|---|---|---:|---:|---:|")
    res = steps_part(args.rounds)
    for workload in ("lm", "mlp"):
        for keep in (False, True):
            cells = [res[(workload, keep, key)] for key in ("faults", "cpu", "wall")]
            print(f"| {'TransformerLM 4x4x128' if workload == 'lm' else 'MLP 784-512-512-784'}"
                  f" | {'kept' if keep else 'glibc default'} | {cells[0][0]:.0f} | "
                  + " | ".join(f"{m:.1f} [{lo:.1f}-{hi:.1f}]" for m, lo, hi in cells[1:]) + " |")


if __name__ == "__main__":
    main()
