"""Tiny models trained by the real ``minigen.train.train``, under ``mpiexec -n N`` by
tests/train/test_distributed_train.py, which also imports this file and calls ``run`` in one
process for the reference trajectory (without a launcher ``train`` is the one-process loop).

    python train_models.py parity OUT.npz       every model of MODELS, saved by rank 0
    python train_models.py save CKPT            vae64 for HALF steps, checkpointed at the end
    python train_models.py resume CKPT OUT.npz  vae64 resumed from CKPT up to STEPS steps
    python train_models.py kill CKPT            mlp64 checkpointed every 2 steps; rank 1 is
                                                killed by SIGKILL in the loss of step 7

Every rank builds its model from a seed that depends on its rank, so the runs only match the
one process because ``train`` broadcasts rank 0's parameters and generators. Every rank but 0
replaces ``minigen.io.save`` by a function that raises, so a checkpoint written by another
rank ends the job. The per-example noise is drawn inside the losses: dropout (mlp, lm), the
VAE's reparameterisation, WGAN-GP's generator noise and interpolation weights.
"""
import os
import signal
import sys

import numpy as np

from minigen import backend, io, nn, optim
from minigen import distributed as dist
from minigen import functional as F
from minigen.autograd import Tensor
from minigen.data.tokenizers import PAD_ID
from minigen.models.gan import WGANGP
from minigen.models.lm.gpt import TransformerLM
from minigen.models.vae import VAE
from minigen.train import train

STEPS, HALF, SEED = 20, 10, 5
MODELS = ("mlp64", "mlp32", "vae64", "gan64", "lm64")


class Regression(nn.Module):
    """y ~ MLP(dropout(x)): mean squared error, dropout noise per example from ``self.rng``."""

    def __init__(self, seed, kill_at=None):
        super().__init__()
        self.net = nn.MLP([3, 16, 2], activation="tanh", rng=seed)
        self.rng, self.kill_at, self.calls = np.random.default_rng(seed + 1), kill_at, 0

    def loss(self, batch):
        x, y = batch
        if self.training:
            self.calls += 1
            if self.calls == self.kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        return F.mse_loss(self.net(F.dropout(Tensor(x), 0.2, self.training, self.rng)),
                          Tensor(y))


class TokenLM(TransformerLM):
    """A TransformerLM whose loss, the mean over the targets that are not padding, is weighted
    by their count when averaged over the ranks."""

    def loss_weight(self, batch):
        return int((np.asarray(batch)[:, 1:] != PAD_ID).sum())


def problem(key, seed, kill_at=None):
    """(model, data, train keywords) of a configuration; ``seed`` sets the initial weights."""
    data = np.random.default_rng(SEED)
    if key.startswith("mlp"):
        X = data.standard_normal((45, 3))
        y = np.sin(X @ data.standard_normal((3, 2)))
        model = Regression(seed, kill_at)
        opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        return model, (X, y), dict(batch_size=8, optimizer=opt)
    if key == "vae64":
        X = (data.random((40, 64)) < 0.3).astype(np.float64)
        valid = (data.random((17, 64)) < 0.3).astype(np.float64)
        model = VAE(64, 2, image_shape=(1, 8, 8), channels=(2, 4), rng=seed)
        # 17 validation rows in batches of 8: the last batch has 1 row, and no rows on the
        # other ranks.
        return model, X, dict(batch_size=8, lr=0.01, validation=valid, val_every=5)
    if key == "gan64":
        X = data.standard_normal((40, 2))
        model = WGANGP.mlp(2, z_dim=2, hidden=(8, 8), n_critic=2, rng=seed)
        return model, X, dict(batch_size=8, lr=1e-3)
    if key == "lm64":
        rows = data.integers(1, 12, (30, 9))
        for row, length in zip(rows, data.integers(3, 10, 30)):
            row[length:] = PAD_ID
        model = TokenLM(vocab_size=12, block_size=8, n_layer=1, n_head=2, n_embd=8,
                        dropout=0.1, rng=seed)
        return model, rows, dict(batch_size=6, lr=3e-3, validation=rows[:11], val_every=10)
    raise ValueError(key)


def run(key, steps=STEPS, checkpoint=None, resume=None, kill_at=None):
    """Train configuration ``key``; (flat parameters, history of the main loss, validations)."""
    rank = dist.world()[0]
    backend.set_default_dtype(np.float32 if key.endswith("32") else np.float64)
    backend.manual_seed(SEED + rank)
    try:
        model, data, options = problem(key, SEED + rank, kill_at)
        result = train(model, data, steps=steps, rng=SEED + 10 + rank, verbose=False,
                       checkpoint=checkpoint, resume=resume, log_every=2, **options)
    finally:
        backend.set_default_dtype(np.float32)
    flat = np.concatenate([p.numpy().ravel().astype(np.float64) for p in model.parameters()])
    return flat, result.losses, np.array(result.val_losses, dtype=np.float64).reshape(-1, 2)


def refuse_to_write(arrays, path):
    raise RuntimeError(f"rank {dist.world()[0]} wrote {path}; only rank 0 writes checkpoints")


def main(argv):
    rank = dist.world()[0]
    if rank != 0:
        io.save = refuse_to_write
    mode = argv[0]
    out = {}
    if mode == "parity":
        for key in MODELS:
            out[f"{key}.params"], out[f"{key}.losses"], out[f"{key}.val"] = run(key)
    elif mode == "save":
        run("vae64", steps=HALF, checkpoint=argv[1])
    elif mode == "resume":
        out["params"], out["losses"], out["val"] = run("vae64", resume=argv[1])
    elif mode == "kill":
        dist.set_timeout(20)
        run("mlp64", checkpoint=argv[1], kill_at=7 if rank == 1 else None)
    if out and rank == 0:
        np.savez(argv[-1], **out)


if __name__ == "__main__":
    main(sys.argv[1:])
