"""The PyTorch peer of benchmarks/distributed.py: the same TinyUNet DDPM and TransformerLM steps
in DistributedDataParallel on the gloo backend, 2 ranks of 1 thread each on the loopback
(``--ranks 1 --threads 2``: the same step in one process of 2 threads, no DDP).

    python benchmarks/distributed_torch.py --model unet \\
        --config '{"batch": 64, "channels": 16, "warmup": 3, "steps": 20}'
    python benchmarks/distributed_torch.py --model lm \\
        --config '{"batch": 32, "n_layer": 4, "n_head": 4, "n_embd": 128,
                   "warmup": 1, "steps": 3}'

(benchmarks/distributed.py runs it with its ``CONFIG`` in every round). It prints one JSON
line: ``step_ms`` (milliseconds per step) and ``samples_per_s`` of rank 0 over the timed
steps that follow the warm-up.

The networks are the PyTorch mirrors of benchmarks/models_ddpm_digits.py (``torch_tinyunet``)
and benchmarks/models_lm.py (``torch_model``), starting from minigen's initial weights for the
seed. Each step is the one minigen's ``fit`` takes: the global batch drawn from one seed on
every rank, this rank's contiguous half of it, forward, backward (DDP averages the gradients
in buckets during backward), gradient-norm clipping at 1, the optimiser (Adam for the DDPM,
AdamW with decay on matrices for the LM), the warm-up + cosine schedule, and for the DDPM the
EMA of the weights, decay min(ema, (1 + k) / (10 + k)) at step k.
"""
import argparse
import json
import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from minigen._checks import positive_int  # noqa: E402

SEED = 0


def cosine_warmup(step, warmup, total, floor):
    """minigen.optim.CosineWarmup's factor: (k + 1) / warmup during the warm-up, then
    floor + (1 - floor) (1 + cos(pi progress)) / 2."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


def shard(n, rank, size):
    """minigen.distributed.shard_bounds: rows [n rank // size, n (rank + 1) // size)."""
    return slice(n * rank // size, n * (rank + 1) // size)


def parallel(torch, module, size):
    """``module`` in DistributedDataParallel on more than one rank, else itself."""
    return torch.nn.parallel.DistributedDataParallel(module) if size > 1 else module


def unet_step(torch, rank, size, cfg, total):
    """One DDPM training step of the TinyUNet in DDP (v-prediction, Adam, clip, EMA)."""
    from models_ddpm_digits import RECIPE, digits, minigen_model, torch_tinyunet
    r = dict(RECIPE, channels=cfg["channels"])
    model = minigen_model(r, SEED)
    s = model.schedule
    module = torch_tinyunet(model.denoiser)
    net = parallel(torch, module, size)
    data = torch.tensor(digits()[0].reshape(-1, 1, 8, 8))
    sab = torch.tensor(s.sqrt_alpha_bars, dtype=torch.float32)
    s1mab = torch.tensor(s.sqrt_one_minus_alpha_bars, dtype=torch.float32)
    opt = torch.optim.Adam(net.parameters(), lr=r["lr"])
    warm = min(r["warmup"], total - 1)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: cosine_warmup(k, warm, total, r["min_factor"]))
    state = module.state_dict()
    ema = {k: v.detach().clone() for k, v in state.items()}
    g = torch.Generator().manual_seed(SEED)
    mine = shard(cfg["batch"], rank, size)
    done = [0]

    def step():
        x0 = data[torch.randint(0, len(data), (cfg["batch"],), generator=g)]
        t = torch.randint(0, s.T, (cfg["batch"],), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        x0, t, eps = x0[mine], t[mine], eps[mine]
        a, b = sab[t].reshape(-1, 1, 1, 1), s1mab[t].reshape(-1, 1, 1, 1)
        loss = ((net(a * x0 + b * eps, t) - (a * eps - b * x0)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), r["clip_grad"])
        opt.step()
        sched.step()
        done[0] += 1
        decay = min(r["ema"], (1 + done[0]) / (10 + done[0]))
        with torch.no_grad():
            for k, v in state.items():
                ema[k].mul_(decay).add_(v, alpha=1 - decay)
    return step


def lm_step(torch, rank, size, cfg, total):
    """One TransformerLM training step in DDP (AdamW, warm-up + cosine, clip)."""
    from minigen.data.batching import BatchStream
    from minigen.models.lm import (BETAS, CLIP_GRAD, MIN_LR, WARMUP, WEIGHT_DECAY,
                                   TransformerLM)
    from models_lm import BLOCK, corpus, torch_model
    tok, text, _ = corpus()
    shape = dict(n_layer=cfg["n_layer"], n_head=cfg["n_head"], n_embd=cfg["n_embd"])
    init = TransformerLM(block_size=BLOCK, tokenizer=tok, rng=SEED, **shape)
    module = torch_model(torch, tok.vocab_size, **shape)
    module.load_state_dict({k: torch.tensor(np.asarray(v)) for k, v in init.state_dict().items()})
    net = parallel(torch, module, size)
    params = list(net.parameters())
    opt = torch.optim.AdamW([{"params": [p for p in params if p.dim() >= 2],
                              "weight_decay": WEIGHT_DECAY},
                             {"params": [p for p in params if p.dim() < 2],
                              "weight_decay": 0.0}], lr=1e-3, betas=BETAS)
    warm = int(WARMUP * total)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: cosine_warmup(k, warm, total, MIN_LR))
    rows = np.lib.stride_tricks.sliding_window_view(np.asarray(tok.encode(text)), BLOCK + 1)
    stream = BatchStream(rows, cfg["batch"], SEED)
    mine = shard(cfg["batch"], rank, size)

    def step():
        batch = torch.from_numpy(np.ascontiguousarray(next(stream)[mine]))
        logits = net(batch[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 batch[:, 1:].reshape(-1), ignore_index=0)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, CLIP_GRAD)
        opt.step()
        sched.step()
    return step


STEPS = {"unet": unet_step, "lm": lm_step}


def timed(torch, name, cfg, rank, size):
    """Warm-up + timed steps of this rank; the report of the timed ones."""
    step = STEPS[name](torch, rank, size, cfg, cfg["warmup"] + cfg["steps"])
    for _ in range(cfg["warmup"]):
        step()
    start = time.perf_counter()
    for _ in range(cfg["steps"]):
        step()
    seconds = time.perf_counter() - start
    return {"ranks": size, "step_ms": 1e3 * seconds / cfg["steps"],
            "samples_per_s": cfg["steps"] * cfg["batch"] / seconds}


def rank_main(rank, name, cfg, port, out_path, size, threads):
    """One rank: join the gloo group on the loopback, run warm-up + timed steps; rank 0 writes
    its report to ``out_path``."""
    import torch
    import torch.distributed as tdist
    torch.set_num_threads(threads)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        report = timed(torch, name, cfg, rank, size)
        if rank == 0:
            with open(out_path, "w") as f:
                json.dump(report, f)
    finally:
        tdist.destroy_process_group()


def free_port():
    """A TCP port on the loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, choices=sorted(STEPS))
    parser.add_argument("--config", required=True, help="the step's configuration (JSON)")
    parser.add_argument("--ranks", type=int, default=2, help="DDP ranks (1: one process, no DDP)")
    parser.add_argument("--threads", type=int, default=1, help="threads per process")
    args = parser.parse_args()
    cfg = json.loads(args.config)
    for key in ("batch", "warmup", "steps"):
        positive_int(cfg.get(key), f"config[{key!r}]", "benchmarks/distributed_torch.py")
    for key, value in (("--ranks", args.ranks), ("--threads", args.threads)):
        positive_int(value, key, "benchmarks/distributed_torch.py")
    for key in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[key] = str(args.threads)
    if args.ranks == 1:
        import torch
        torch.set_num_threads(args.threads)
        print(json.dumps(timed(torch, args.model, cfg, 0, 1)))
        return
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    import torch.multiprocessing as mp
    with tempfile.TemporaryDirectory() as tmp:
        out_path = os.path.join(tmp, "rank0.json")
        mp.spawn(rank_main, nprocs=args.ranks,
                 args=(args.model, cfg, free_port(), out_path, args.ranks, args.threads))
        with open(out_path) as f:
            print(json.dumps(json.load(f)))


if __name__ == "__main__":
    main()
