"""Language-model benchmark: held-out loss after a fixed budget on Python's documentation
(``pydoc_data.topics``, character level), minigen's three models and the same Transformer in
PyTorch, plus the training-step time ratio and generation speed with and without the KV cache.

    python benchmarks/models_lm.py [--steps 150] [--batch 32] [--seed 0]
    OPENBLAS_NUM_THREADS=2 OMP_NUM_THREADS=2 python benchmarks/models_lm.py --step-only

``--step-only`` times the TransformerLM training step alone (no training run): 5 rounds
(``--rounds``) of 3 steps, alternating in one process the fused graph (``linear_act`` for
W_1's bias and GELU, the kernel-backed ``LayerNorm``) with the unfused one (``F.gelu`` of
``F.linear``, the NumPy ``Norm``), then PyTorch's step in its own process from the same
weights; median and range of the rounds' medians.

* Data: ``load_pydoc()``, the last 10% held out; one CharTokenizer over the whole text. Training
  rows are all windows of 129 characters; held-out loss is ``model.evaluate(held_out)["loss"]``
  (nats per character over pieces of 129 that overlap by one, every character predicted once).
* Models: Bigram (lr 0.1), MLPLM(context=8, n_embd=32, n_hidden=256) (lr 3e-3) and
  TransformerLM(n_layer=4, n_head=4, n_embd=128, block_size=128) (lr 1e-3), each ``fit`` for
  the same number of steps of batch 32 x 128 with the defaults of ``LanguageModel.fit``
  (AdamW, decay 0.1 on matrices, betas (0.9, 0.95), 5% warm-up then cosine to 0.1 lr, clip 1).
* PyTorch: the same Transformer (explicit attention, GELU in its tanh form, weight tying) in its
  own process, starting from minigen's initial weights (the logits at step 0 are compared),
  trained on the same batches in the same order (minigen's BatchStream with the same seed)
  with torch.optim.AdamW and the same schedule and clipping.
* Step time: 10 timed training steps (forward, backward, clip, AdamW) of each library after
  training, median and range; generation: tokens per second for 120 new tokens after a
  4-character prompt, batch 1 and 16, with and without the KV cache.

Both libraries use one BLAS / intra-op thread (set below, before NumPy loads), so that the
comparison is not decided by how each library's thread pool copes with other jobs on a shared
machine.
"""
import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from _timing import machine  # noqa: E402

import minigen as mg  # noqa: E402
from minigen.train import keep_freed_memory  # noqa: E402
from minigen.data import CharTokenizer, load_pydoc, pad_sequences, split_text  # noqa: E402
from minigen.data.batching import BatchStream  # noqa: E402
from minigen.models.lm import (BETAS, CLIP_GRAD, MIN_LR, WARMUP, WEIGHT_DECAY, Bigram,  # noqa: E402
                               MLPLM, TransformerLM)
from minigen.optim import clip_grad_norm_  # noqa: E402

BLOCK, TIMED_STEPS, NEW_TOKENS = 128, 10, 120


def corpus():
    text = load_pydoc()
    tok = CharTokenizer.train(text)
    train, held = split_text(text, 0.1)
    return tok, train, held


def held_out_rows(tok, held, block=BLOCK):
    """The pieces ``LanguageModel.evaluate`` scores: block + 1 ids overlapping by one, padded."""
    ids = np.asarray(tok.encode(held))
    return pad_sequences([ids[i:i + block + 1] for i in range(0, len(ids) - 1, block)])[0]


def step_times(step, n=TIMED_STEPS):
    times = []
    for _ in range(n):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


# --- minigen ----------------------------------------------------------------------------------
def run_minigen(cls, kwargs, lr, tok, train, held, steps, batch, seed, init_path=None):
    model = cls(block_size=BLOCK, tokenizer=tok, rng=seed, **kwargs)
    out = {}
    if init_path is not None:               # for PyTorch: the initial weights and logits
        with model.inference():
            out["init_logits"] = model(held_out_rows(tok, held)[:4, :-1]).numpy()
        mg.save(model.state_dict(), init_path)
    start = time.perf_counter()
    model.fit(train, steps=steps, batch_size=batch, lr=lr, rng=seed)
    out["train_seconds"] = time.perf_counter() - start
    out["first_loss"], out["last_loss"] = float(model.history_.losses[0]), \
        float(model.history_.losses[-1])
    out["held_out"] = model.evaluate(held)["loss"]

    rows = model._rows(train, "benchmark")[0]
    batch_rows = rows[np.random.default_rng(seed).integers(0, len(rows), batch)]
    out["step_times"] = step_times(transformer_step(model, batch_rows, lr))
    model.eval()
    if cls is TransformerLM:
        prompt = np.asarray(tok.encode("The "))
        for rows_, cache in [(1, True), (1, False), (16, True), (16, False)]:
            start = time.perf_counter()
            model.generate(np.tile(prompt, (rows_, 1)), NEW_TOKENS, rng=seed, use_cache=cache)
            out[f"tokens_per_s_{rows_}_{cache}"] = \
                rows_ * NEW_TOKENS / (time.perf_counter() - start)
    return out


# --- the training step alone, fused against unfused, then PyTorch ---------------------------
def unfused():
    """A context in which TransformerLM runs its MLP as F.gelu(F.linear(...)), layer_norm as
    the NumPy ``Norm`` Function and the attention's mask as F.where before the softmax: the
    graph without the fused Functions."""
    import contextlib

    import minigen.functional as F
    from minigen.ops import norm

    @contextlib.contextmanager
    def patched():
        saved = F.linear_act, norm.LayerNorm, F.masked_softmax
        F.linear_act = lambda x, w, b, kind: F.gelu(F.linear(x, w, b), approximate="tanh")
        norm.LayerNorm = norm.Norm
        F.masked_softmax = lambda s, m: F.where(m, -math.inf, s).softmax(-1)
        try:
            yield
        finally:
            F.linear_act, norm.LayerNorm, F.masked_softmax = saved
    return patched()


def step_rounds(step, rounds, steps=3, contexts=None):
    """{name: [median step time of each round]}, the contexts alternating within a round."""
    import contextlib
    contexts = contexts or {"step": contextlib.nullcontext}
    out = {name: [] for name in contexts}
    for name, ctx in contexts.items():          # one warm-up step each (compilation)
        with ctx():
            step()
    for _ in range(rounds):
        for name, ctx in contexts.items():
            with ctx():
                out[name].append(float(np.median(step_times(step, steps))))
    return out


def transformer_step(model, batch_rows, lr=1e-3):
    opt = model.configure_optimizers(lr)
    params = list(model.parameters())
    model.train()

    def step():
        opt.zero_grad()
        model.loss(batch_rows).backward()
        clip_grad_norm_(params, CLIP_GRAD)
        opt.step()
    return step


def step_model(rng=0, batch=32):
    """The timed step's TransformerLM (4 x 4 x 128, block 128) and one batch of training rows,
    both drawn from ``rng``; ``transformer_step(*step_model())`` is the step."""
    tok, train, _ = corpus()
    model = TransformerLM(block_size=BLOCK, tokenizer=tok, rng=rng, n_layer=4, n_head=4,
                          n_embd=128)
    rows = model._rows(train, "benchmark")[0]
    return model, rows[np.random.default_rng(rng).integers(0, len(rows), batch)]


def step_only(args):
    import contextlib
    model, batch_rows = step_model(args.seed, args.batch)
    print(f"# {machine()}; TransformerLM 4 x 4 x 128, block {BLOCK}, batch {args.batch}, "
          f"AdamW; {os.environ['OPENBLAS_NUM_THREADS']} BLAS thread(s); machine shared with "
          f"other jobs", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        init_path = os.path.join(tmp, "init.npz")
        mg.save(model.state_dict(), init_path)
        with keep_freed_memory():      # as train() runs each step
            times = step_rounds(transformer_step(model, batch_rows), args.rounds,
                                contexts={"unfused": unfused, "fused": contextlib.nullcontext})
        cmd = [sys.executable, __file__, "--torch-worker", "--step-only", "--init", init_path,
               "--batch", str(args.batch), "--seed", str(args.seed),
               "--rounds", str(args.rounds)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:
            times["PyTorch"] = json.loads(done.stdout.strip().splitlines()[-1])
        else:
            print(f"no PyTorch row: {done.stderr.strip().splitlines()[-1:]}")
    for name, t in times.items():
        print(f"{name:8s} {summary(t)}")
    fused = np.median(times["fused"])
    print(f"unfused / fused: {np.median(times['unfused']) / fused:.2f}x")
    if "PyTorch" in times:
        print(f"fused / PyTorch: {fused / np.median(times['PyTorch']):.2f}x, "
              f"unfused / PyTorch: {np.median(times['unfused']) / np.median(times['PyTorch']):.2f}x")


def torch_step_only(args):
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    tok, train, _ = corpus()
    model = torch_model(torch, tok.vocab_size)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in mg.load(args.init).items()})
    rows = np.lib.stride_tricks.sliding_window_view(np.asarray(tok.encode(train)), BLOCK + 1)
    batch = torch.from_numpy(np.ascontiguousarray(
        rows[np.random.default_rng(args.seed).integers(0, len(rows), args.batch)]))
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=1e-3, betas=BETAS, weight_decay=WEIGHT_DECAY)

    def step():
        opt.zero_grad()
        logits = model(batch[:, :-1])
        torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                          batch[:, 1:].reshape(-1), ignore_index=0).backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_GRAD)
        opt.step()
    print(json.dumps(step_rounds(step, args.rounds)["step"]))


# --- PyTorch (run in its own process) ---------------------------------------------------------
def torch_model(torch, vocab, n_layer=4, n_head=4, n_embd=128, block=BLOCK):
    nn, F = torch.nn, torch.nn.functional

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.proj = nn.Linear(n_embd, 3 * n_embd), nn.Linear(n_embd, n_embd)

        def forward(self, x, bias):
            b, t, c = x.shape
            q, k, v = (z.view(b, t, n_head, -1).transpose(1, 2)
                       for z in self.qkv(x).split(c, dim=-1))
            scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1) + bias
            y = scores.softmax(-1) @ v
            return self.proj(y.transpose(1, 2).reshape(b, t, c))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln1, self.attn = nn.LayerNorm(n_embd), Attention()
            self.ln2 = nn.LayerNorm(n_embd)
            self.fc, self.fc_out = nn.Linear(n_embd, 4 * n_embd), nn.Linear(4 * n_embd, n_embd)

        def forward(self, x, bias):
            x = x + self.attn(self.ln1(x), bias)
            return x + self.fc_out(F.gelu(self.fc(self.ln2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte, self.wpe = nn.Embedding(vocab, n_embd), nn.Embedding(block, n_embd)
            self.blocks = nn.ModuleList([Block() for _ in range(n_layer)])
            self.ln_f = nn.LayerNorm(n_embd)

        def forward(self, idx):
            t = idx.shape[1]
            bias = torch.triu(torch.full((t, t), -1e9), diagonal=1)
            x = self.wte(idx) + self.wpe(torch.arange(t))
            for block in self.blocks:
                x = block(x, bias)
            return self.ln_f(x) @ self.wte.weight.T

    return GPT()


def torch_worker(args):
    import torch
    torch.set_num_threads(1)
    tok, train, held = corpus()
    model = torch_model(torch, tok.vocab_size)
    model.load_state_dict({k: torch.from_numpy(v) for k, v in mg.load(args.init).items()})
    rows = np.lib.stride_tricks.sliding_window_view(np.asarray(tok.encode(train)), BLOCK + 1)
    held_rows = torch.from_numpy(held_out_rows(tok, held))
    out = {}
    with torch.no_grad():
        out["init_logits"] = model(held_rows[:4, :-1]).numpy().tolist()
    params = list(model.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2],
                              "weight_decay": WEIGHT_DECAY},
                             {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}],
                            lr=args.lr, betas=BETAS)
    warm = int(WARMUP * args.steps)

    def factor(step):        # minigen.optim.CosineWarmup's formula
        if step < warm:
            return (step + 1) / warm
        progress = min((step - warm) / max(args.steps - warm, 1), 1.0)
        return MIN_LR + (1 - MIN_LR) * 0.5 * (1 + math.cos(math.pi * progress))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)

    def loss_of(batch):
        batch = torch.from_numpy(np.ascontiguousarray(batch))
        logits = model(batch[:, :-1])
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch[:, 1:].reshape(-1), ignore_index=0)

    stream = BatchStream(rows, args.batch, args.seed)
    losses, start = [], time.perf_counter()
    for _ in range(args.steps):
        opt.zero_grad()
        loss = loss_of(next(stream))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_GRAD)
        opt.step()
        sched.step()
        losses.append(loss.item())
    out["train_seconds"] = time.perf_counter() - start
    out["first_loss"], out["last_loss"] = losses[0], losses[-1]
    with torch.no_grad():
        total = count = 0.0
        for lo in range(0, len(held_rows), 64):
            b = held_rows[lo:lo + 64]
            logits = model(b[:, :-1])
            total += torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), ignore_index=0,
                reduction="sum").item()
            count += (b[:, 1:] != 0).sum().item()
        out["held_out"] = total / count
    batch_rows = rows[np.random.default_rng(args.seed).integers(0, len(rows), args.batch)]

    def step():
        opt.zero_grad()
        loss_of(batch_rows).backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_GRAD)
        opt.step()
    out["step_times"] = step_times(step)
    print(json.dumps(out))


def run_torch(args, init_path):
    cmd = [sys.executable, __file__, "--torch-worker", "--init", init_path, "--steps",
           str(args.steps), "--batch", str(args.batch), "--seed", str(args.seed), "--lr", "1e-3"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the PyTorch process failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def summary(times):
    ms = 1e3 * np.asarray(times)
    return f"{np.median(ms):7.0f} ms [{ms.min():.0f}-{ms.max():.0f}]"


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--torch-worker", action="store_true")
    parser.add_argument("--init")
    parser.add_argument("--step-only", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.step_only:
        return (torch_step_only if args.torch_worker else step_only)(args)
    if args.torch_worker:
        return torch_worker(args)

    tok, train, held = corpus()
    print(f"# {machine()}; pydoc corpus {len(train)} + {len(held)} held-out characters, "
          f"vocab {tok.vocab_size}; {args.steps} steps of batch {args.batch} x {BLOCK}; "
          f"one BLAS thread per library", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        init_path = os.path.join(tmp, "init.npz")
        for name, cls, kwargs, lr in [
                ("Bigram", Bigram, {}, 0.1),
                ("MLPLM", MLPLM, dict(context=8, n_embd=32, n_hidden=256), 3e-3),
                ("TransformerLM", TransformerLM, dict(n_layer=4, n_head=4, n_embd=128), 1e-3)]:
            results[name] = run_minigen(cls, kwargs, lr, tok, train, held, args.steps,
                                        args.batch, args.seed,
                                        init_path if cls is TransformerLM else None)
            print(f"{name:14s} held-out {results[name]['held_out']:.4f} nats/char  "
                  f"step {summary(results[name]['step_times'])}", flush=True)
        if importlib.util.find_spec("torch") is not None:
            results["PyTorch"] = run_torch(args, init_path)
        else:
            print("PyTorch is not installed: no reference row")

    print(f"\n| model | held-out loss (nats/char) | bits/char | train loss first -> last | "
          f"step (batch {args.batch}x{BLOCK}), median [range] | training wall |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        label = "TransformerLM, PyTorch" if name == "PyTorch" else name
        print(f"| {label} | {r['held_out']:.4f} | {r['held_out'] / math.log(2):.3f} | "
              f"{r['first_loss']:.3f} -> {r['last_loss']:.3f} | {summary(r['step_times'])} | "
              f"{r['train_seconds']:.0f} s |")
    mine = results["TransformerLM"]
    for rows_ in (1, 16):
        print(f"generation, {NEW_TOKENS} new tokens after a 4-token prompt, batch {rows_}: "
              f"{mine[f'tokens_per_s_{rows_}_True']:.0f} tokens/s with the KV cache, "
              f"{mine[f'tokens_per_s_{rows_}_False']:.0f} without")
    if "PyTorch" in results:
        ref = results["PyTorch"]
        diff = np.abs(np.asarray(ref["init_logits"]) - mine["init_logits"]).max()
        print(f"initial logits, minigen vs PyTorch: max |difference| {diff:.2e}")
        print(f"held-out loss ratio minigen / PyTorch: {mine['held_out'] / ref['held_out']:.4f}")
        print(f"step time ratio minigen / PyTorch (medians): "
              f"{np.median(mine['step_times']) / np.median(ref['step_times']):.2f}x")


if __name__ == "__main__":
    main()
