"""An MLP regression trained data-parallel with minigen.distributed in a minimal hand-written
loop; run under ``mpiexec -n N`` by tests/train/test_distributed_mpi.py, and imported by it to
compute the single-process reference (``run`` with no launcher is the one-process run).

    python train_mlp.py parity OUT.npz     every configuration of CONFIGS, saved by rank 0
    python train_mlp.py FAULT              desync | raise | hang | kill, planted on rank 1

The data has 47 rows and the global batch 10 rows, so every epoch ends with a ragged batch
of 7 rows (2, 2, 3 on 3 ranks; 3, 4 on 2), and every batch is split unevenly on 3 ranks.
The loss adds per-example noise to the targets (drawn through ``per_example``), so the
test also holds the noise to being independent of the number of ranks.
"""
import os
import signal
import sys
import time

import numpy as np

from minigen import distributed as dist
from minigen import functional as F
from minigen import nn, optim
from minigen.autograd import Tensor
from minigen.data.batching import batches

CONFIGS = {"sgd64": ("sgd", np.float64), "adam64": ("adam", np.float64),
           "adam32": ("adam", np.float32)}
STEPS, ROWS, BATCH, SEED = 20, 47, 10, 3


def data():
    rng = np.random.default_rng(SEED)
    X = rng.standard_normal((ROWS, 3))
    y = np.sin(X @ rng.standard_normal((3, 2)))
    return X, y


def global_batches(seed):
    """Row indices of every global batch, epoch after epoch: a function of the seed alone."""
    order = np.random.default_rng(seed)
    while True:
        yield from batches(np.arange(ROWS), BATCH, shuffle=True, rng=order)


def run(optimizer, dtype, fault=None, fault_step=7):
    """Train STEPS steps; return (parameters flattened, reduced losses, whether the replicas
    differed before the broadcast)."""
    rank, size = dist.world()
    X, y = (a.astype(dtype) for a in data())
    model = nn.MLP([3, 16, 16, 2], activation="tanh", rng=SEED + rank).to(dtype=dtype)
    noise_rng = np.random.default_rng(SEED + 10 + rank)
    try:
        dist.check_in_sync(model, 0)
        differed = False
    except RuntimeError:
        differed = True
    dist.broadcast_parameters(model)
    dist.broadcast_generators(noise_rng)
    dist.check_in_sync(model, 0)
    params = list(model.parameters())
    opt = optim.SGD(params, lr=0.1, momentum=0.9) if optimizer == "sgd" else \
        optim.Adam(params, lr=0.01)
    losses = []
    for step, idx in zip(range(1, STEPS + 1), global_batches(SEED + 20)):
        lo, hi = dist.shard_bounds(len(idx), rank, size)
        local = idx[lo:hi]
        with dist.sharded(lo, hi, len(idx)):
            jitter = 0.1 * dist.per_example(noise_rng.standard_normal, (hi - lo, 2))
        opt.zero_grad()
        loss = F.mse_loss(model(Tensor(X[local])), Tensor(y[local] + jitter.astype(dtype)))
        loss.backward()
        dist.average_gradients(params, hi - lo)
        losses.append(dist.allreduce_scalar(loss.item(), hi - lo))
        opt.step()
        if rank == 1 and step == fault_step:
            plant(fault, params)
        dist.check_in_sync(model, step)
    flat = np.concatenate([p.numpy().ravel() for p in params])
    return flat, np.array(losses), differed


def plant(fault, params):
    if fault == "desync":
        params[0].data[0, 0] += 1e-6
    elif fault == "raise":
        raise RuntimeError("a planted failure on rank 1")
    elif fault == "hang":
        time.sleep(60)
    elif fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)


def main(argv):
    dist.abort_on_error()
    if argv[0] == "parity":
        out = {}
        for key, (optimizer, dtype) in CONFIGS.items():
            out[f"{key}.params"], out[f"{key}.losses"], out[f"{key}.differed"] = run(
                optimizer, dtype)
        if dist.world()[0] == 0:
            np.savez(argv[1], **out)
    else:
        dist.set_timeout(3)
        run("sgd", np.float64, fault=argv[0])


if __name__ == "__main__":
    main(sys.argv[1:])
