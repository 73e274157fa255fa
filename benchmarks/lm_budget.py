"""The TransformerLM at a real budget: held-out loss over thousands of steps, minigen against the
same network in PyTorch, several seeds each, with the curves.

    python benchmarks/lm_budget.py --time                  # step time of each library, 1 thread
    nice -n 19 python benchmarks/lm_budget.py [--steps 2000] [--seeds 0 1 2] [--jobs 2]
    python benchmarks/lm_budget.py --report                # table and figure of the saved runs

* Data: ``load_pydoc()`` (Python's documentation), character level, the last 10% held out, one
  CharTokenizer over the whole text. Training rows are every window of block + 1 characters;
  held-out loss is the mean cross-entropy (nats per character; bits = nats / ln 2) of every
  held-out character, scored in pieces of block + 1 that overlap by one (what
  ``LanguageModel.evaluate`` and ``fit(validation=...)`` compute), at step 0, every
  ``--eval-every`` steps and at the end.
* Network (both libraries): GPT with learned positions, pre-LayerNorm blocks, causal
  multi-head attention, GELU (tanh form), weight tying. Initial weights drawn independently in
  each library from the same distributions, seeded by the run's seed: matrices and embeddings
  N(0, 0.02^2), the residual projections N(0, (0.02 / sqrt(2 n_layer))^2), biases 0,
  LayerNorm gains 1.
* Training (both libraries): ``LanguageModel.fit``'s recipe, AdamW (betas (0.9, 0.95), decay
  0.1 on matrices and embeddings only), 5% linear warm-up then cosine to 0.1 lr, gradient norm
  clipped at 1. The batches are minigen's ``BatchStream`` over the same rows with the run's
  seed, so both libraries see the same batches in the same order for a given seed.
* Defaults: 2 layers x 4 heads x 64 features, block 64, batch 32, lr 2e-3, 2,000 steps, seeds
  0, 1, 2: one run is about 2 CPU-minutes in either library.
* Each run is its own process with one BLAS / intra-op thread, writing a JSON file to
  ``--out``; finished runs are kept, so an interrupted sweep resumes where it stopped. At most
  ``--jobs`` runs at once. Then the table (per seed, median and range, the ratio of the
  medians against the 2% target) and the figure of the curves (``--figure``).
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.dirname(HERE)]     # the checkout's minigen, not an installed one
from _timing import machine  # noqa: E402
from models_lm import corpus, held_out_rows, torch_model  # noqa: E402

import minigen as mg  # noqa: E402
from minigen.data.batching import BatchStream  # noqa: E402
from minigen.models.lm import BETAS, CLIP_GRAD, MIN_LR, WARMUP, WEIGHT_DECAY  # noqa: E402
from minigen.models.lm import TransformerLM  # noqa: E402
from minigen.models.lm.gpt import INIT_STD  # noqa: E402

LIBRARIES = ("minigen", "PyTorch")


def config(args):
    return dict(n_layer=args.n_layer, n_head=args.n_head, n_embd=args.n_embd)


# --- one run of each library ------------------------------------------------------------------
def run_minigen(args, seed, tok, train, held, steps):
    """fit() with validation on the held-out text: the library's own training loop."""
    model = TransformerLM(block_size=args.block, tokenizer=tok, rng=seed, **config(args))
    curve = [(0, initial_loss(model, held_out_rows(tok, held, args.block), args.batch))]
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(train, steps=steps, batch_size=args.batch, lr=args.lr, rng=seed,
              validation=held, val_every=args.eval_every, verbose=False)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    curve += [(int(s), float(v)) for s, v in model.history_.val_losses]
    return {"curve": curve, "train_loss": model.history_.losses.tolist(), "seconds": seconds,
            "cpu_seconds": cpu, "final": model.evaluate(held)["loss"]}


def initial_loss(model, rows, batch):
    """The held-out loss before training, as ``fit``'s validation scores it: each batch's mean
    loss weighted by its number of targets (``evaluate`` needs a fitted model)."""
    total = count = 0
    with mg.no_grad():
        for lo in range(0, len(rows), batch):
            weight = model.loss_weight(rows[lo:lo + batch])
            total += float(model.loss(rows[lo:lo + batch]).item()) * weight
            count += weight
    return total / count


def run_torch(args, seed, tok, train, held, steps):
    import torch
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    model = torch_model(torch, tok.vocab_size, block=args.block, **config(args))
    with torch.no_grad():                   # GPT-2's initialisation, as TransformerLM._build
        for name, p in model.named_parameters():
            if name.endswith(("proj.weight", "fc_out.weight")):
                p.normal_(0.0, INIT_STD / math.sqrt(2 * args.n_layer))
            elif p.dim() == 2:
                p.normal_(0.0, INIT_STD)
            elif name.endswith("bias"):
                p.zero_()
    ids = np.asarray(tok.encode(train))
    rows = np.lib.stride_tricks.sliding_window_view(ids, args.block + 1)
    held_rows = torch.from_numpy(held_out_rows(tok, held, args.block))
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2],
                              "weight_decay": WEIGHT_DECAY},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=args.lr, betas=BETAS)
    warm = int(WARMUP * steps)

    def factor(step):        # minigen.optim.CosineWarmup's formula
        if step < warm:
            return (step + 1) / warm
        progress = min((step - warm) / max(steps - warm, 1), 1.0)
        return MIN_LR + (1 - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def cross_entropy(batch, reduction="mean"):
        logits = model(batch[:, :-1])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch[:, 1:].reshape(-1), ignore_index=0,
                                                 reduction=reduction)

    def held_out():
        model.eval()
        with torch.no_grad():
            total = sum(cross_entropy(held_rows[lo:lo + args.batch], "sum").item()
                        for lo in range(0, len(held_rows), args.batch))
        model.train()
        return total / (held_rows[:, 1:] != 0).sum().item()

    stream = BatchStream(rows, args.batch, seed)
    curve, losses = [(0, held_out())], []
    start, cpu, step_seconds, step_cpu = time.perf_counter(), time.process_time(), [], []
    for step in range(1, steps + 1):
        tic, cpu_tic = time.perf_counter(), time.process_time()
        opt.zero_grad()
        loss = cross_entropy(torch.from_numpy(np.ascontiguousarray(next(stream))))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_GRAD)
        opt.step()
        sched.step()
        losses.append(loss.item())
        step_seconds.append(time.perf_counter() - tic)
        step_cpu.append(time.process_time() - cpu_tic)
        if step % args.eval_every == 0 or step == steps:
            curve.append((step, held_out()))
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    return {"curve": curve, "train_loss": losses, "seconds": seconds, "cpu_seconds": cpu,
            "final": curve[-1][1], "step_seconds": step_seconds, "step_cpu": step_cpu}


class StepClock:
    """A progress stream that notes the time of each line: with ``log_every=1`` fit writes one
    line per step, so the differences are the step times of minigen's own loop."""

    def __init__(self):
        self.times = []

    def write(self, text):
        if text.strip():
            self.times.append((time.perf_counter(), time.process_time()))

    def flush(self):
        pass

    def isatty(self):
        return False


def step_rounds(args, tok, train, rounds=5, per_round=10, warmup=3):
    """{"wall": [...], "cpu": [...]}: the mean training-step time, wall clock and the process's
    CPU time, of each of ``rounds`` rounds of ``per_round`` steps after ``warmup`` steps
    (Numba's compilation); one run of each library without evaluation. On one thread the CPU
    time is what the step would take on an idle core: a shared machine inflates the wall time
    by whatever else runs."""
    steps = warmup + rounds * per_round
    if args.worker == "PyTorch":
        held = train[:args.block + 2]           # a token held-out set: evaluation is not timed
        run = run_torch(args, 0, tok, train, held, steps)
        times = {"wall": run["step_seconds"][warmup:], "cpu": run["step_cpu"][warmup:]}
    else:
        clock = StepClock()
        model = TransformerLM(block_size=args.block, tokenizer=tok, rng=0, **config(args))
        model.fit(train, steps=steps, batch_size=args.batch, lr=args.lr, rng=0, log_every=1,
                  verbose=True, out=clock)
        wall, cpu = np.diff(np.array(clock.times), axis=0)[warmup - 1:].T
        times = {"wall": wall, "cpu": cpu}
    return {kind: [float(np.mean(t[i:i + per_round])) for i in range(0, len(t), per_round)]
            for kind, t in times.items()}


def worker(args):
    tok, train, held = corpus()
    if args.step_times:
        with open(args.json, "w") as f:
            json.dump(step_rounds(args, tok, train), f)
        return
    run = run_minigen if args.worker == "minigen" else run_torch
    out = run(args, args.seed, tok, train, held, args.steps)
    out = {k: v for k, v in out.items() if k not in ("step_seconds", "step_cpu")}
    out["train_loss"] = [round(v, 4) for v in out["train_loss"]]
    out.update(library=args.worker, seed=args.seed, steps=args.steps, config=config(args),
               block=args.block, batch=args.batch, lr=args.lr)
    with open(args.json, "w") as f:
        json.dump(out, f)


def worker_cmd(args, library, seed, steps, path):
    return [sys.executable, os.path.abspath(__file__), "--worker", library, "--seed", str(seed),
            "--steps", str(steps), "--json", path, "--n-layer", str(args.n_layer),
            "--n-head", str(args.n_head), "--n-embd", str(args.n_embd), "--block",
            str(args.block), "--batch", str(args.batch), "--lr", str(args.lr),
            "--eval-every", str(args.eval_every)]


# --- the sweep, the table, the figure ---------------------------------------------------------
def sweep(args):
    os.makedirs(args.out, exist_ok=True)
    todo = [(lib, seed) for seed in args.seeds for lib in LIBRARIES
            if not os.path.exists(result_path(args, lib, seed))]
    running = []
    while todo or running:
        while todo and len(running) < args.jobs:
            lib, seed = todo.pop(0)
            path = result_path(args, lib, seed)
            log = open(path + ".log", "w")
            running.append((lib, seed, log, subprocess.Popen(
                worker_cmd(args, lib, seed, args.steps, path), stdout=log,
                stderr=subprocess.STDOUT)))
            print(f"started {lib} seed {seed}", flush=True)
        time.sleep(2)
        for item in list(running):
            lib, seed, log, proc = item
            if proc.poll() is not None:
                log.close()
                running.remove(item)
                status = "done" if proc.returncode == 0 else f"FAILED (see {log.name})"
                if proc.returncode == 0 and not os.path.getsize(log.name):
                    os.remove(log.name)
                print(f"{lib} seed {seed}: {status}", flush=True)


def result_path(args, library, seed):
    return os.path.join(args.out, f"{library}_seed{seed}.json")


def load_results(args):
    results = {lib: {} for lib in LIBRARIES}
    for lib in LIBRARIES:
        for seed in args.seeds:
            path = result_path(args, lib, seed)
            if os.path.exists(path):
                with open(path) as f:
                    results[lib][seed] = json.load(f)
    return results


def table(results, tolerance=0.02):
    bits = 1 / math.log(2)
    print("\n| seed | minigen held-out (nats/char) | PyTorch held-out (nats/char) | "
          "minigen / PyTorch |")
    print("|---:|---:|---:|---:|")
    seeds = sorted(set(results["minigen"]) | set(results["PyTorch"]))
    for seed in seeds:
        m, t = (results[lib].get(seed, {}).get("final") for lib in LIBRARIES)
        ratio = f"{m / t:.4f}" if m and t else "-"
        print(f"| {seed} | {m if m is None else f'{m:.4f}'} | "
              f"{t if t is None else f'{t:.4f}'} | {ratio} |")
    finals = {lib: np.array([r["final"] for r in results[lib].values()]) for lib in LIBRARIES}
    if not all(len(v) for v in finals.values()):
        return
    print("\n| library | runs | held-out, median [range] (nats/char) | bits/char, median | "
          "CPU time per run, median |")
    print("|---|---:|---:|---:|---:|")
    for lib in LIBRARIES:
        v = finals[lib]
        cpu = [r["cpu_seconds"] for r in results[lib].values() if "cpu_seconds" in r]
        cpu = f"{np.median(cpu):.0f} s ({len(cpu)} runs)" if cpu else "-"
        print(f"| {lib} | {len(v)} | {np.median(v):.4f} [{v.min():.4f}-{v.max():.4f}] | "
              f"{np.median(v) * bits:.3f} | {cpu} |")
    curves = {lib: np.median([np.array(r["curve"])[:, 1] for r in results[lib].values()], 0)
              for lib in LIBRARIES}
    steps = np.array(next(iter(results["minigen"].values()))["curve"])[:, 0]
    late = steps >= steps[-1] / 4                    # the figure's right panel
    along = (curves["minigen"] / curves["PyTorch"])[late]
    print(f"\nalong the curve (steps {steps[late][0]:.0f}-{steps[-1]:.0f}, medians over the "
          f"seeds at each evaluation), minigen / PyTorch: {along.min():.4f} to "
          f"{along.max():.4f}")
    ratio = np.median(finals["minigen"]) / np.median(finals["PyTorch"])
    verdict = "PASS" if abs(ratio - 1) <= tolerance else "FAIL"
    print(f"\nratio of the medians, minigen / PyTorch: {ratio:.4f} "
          f"({100 * (ratio - 1):+.2f}%; target within {100 * tolerance:.0f}%: {verdict})")


def figure(results, path, args):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (ax, zoom) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"minigen": "tab:blue", "PyTorch": "tab:orange"}
    styles = ["-", "--", ":", "-."]
    for lib in LIBRARIES:
        for i, (seed, r) in enumerate(sorted(results[lib].items())):
            steps, loss = np.array(r["curve"]).T
            for a in (ax, zoom):
                a.plot(steps, loss / math.log(2), styles[i % len(styles)], color=colors[lib],
                       lw=1.4, label=f"{lib}, seed {seed}")
    ax.set(xlabel="training step", ylabel="held-out bits per character",
           title="TransformerLM on pydoc, held-out loss")
    last = [r["curve"][-1][1] / math.log(2) for lib in LIBRARIES for r in results[lib].values()]
    zoom.set(xlabel="training step", ylabel="held-out bits per character",
             xlim=(args.steps * 0.25, args.steps * 1.02),
             ylim=(min(last) * 0.97, min(last) * 1.25), title="the last three quarters")
    for a in (ax, zoom):
        a.grid(alpha=0.3)
    zoom.legend(fontsize=8)
    fig.suptitle(f"{args.n_layer} layers x {args.n_head} heads x {args.n_embd}, block "
                 f"{args.block}, batch {args.batch}, AdamW lr {args.lr:g}, {args.steps} steps",
                 fontsize=10)
    fig.tight_layout()
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"saved {path}")


def time_steps(args):
    """Step time of each library, each in its own process (``step_rounds``)."""
    import tempfile
    print(f"# {machine()}; {args.n_layer} x {args.n_head} x {args.n_embd}, block {args.block}, "
          f"batch {args.batch}; one thread per library", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for lib in LIBRARIES:
            path = os.path.join(tmp, f"{lib}.json")
            subprocess.run(worker_cmd(args, lib, 0, 0, path) + ["--step-times"], check=True)
            with open(path) as f:
                times = json.load(f)
            for kind in ("wall", "cpu"):
                ms = 1e3 * np.array(times[kind])
                print(f"{lib:8s} {kind:4s} {np.median(ms):6.1f} ms per step, median [range] of "
                      f"{len(ms)} rounds of 10 [{ms.min():.1f}-{ms.max():.1f}]; {args.steps} "
                      f"steps: {np.median(ms) * args.steps / 6e4:.1f} min", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--n-layer", type=int, default=2)
    parser.add_argument("--n-head", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=64)
    parser.add_argument("--block", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "lm_budget"))
    parser.add_argument("--figure", default=os.path.join(HERE, "figures", "lm_budget.png"))
    parser.add_argument("--time", action="store_true")
    parser.add_argument("--report", action="store_true",
                        help="the table and the figure from the saved runs only")
    parser.add_argument("--worker", choices=LIBRARIES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json")
    parser.add_argument("--step-times", action="store_true")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    if args.time:
        return time_steps(args)
    print(f"# {machine()}; {args.n_layer} layers x {args.n_head} heads x {args.n_embd}, block "
          f"{args.block}, batch {args.batch}, lr {args.lr:g}, {args.steps} steps, seeds "
          f"{args.seeds}", flush=True)
    if not args.report:
        sweep(args)
    results = load_results(args)
    table(results)
    figure(results, args.figure, args)


if __name__ == "__main__":
    main()
