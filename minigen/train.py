"""The one training loop: any model with ``loss(batch) -> scalar Tensor`` and parameters.

Each step: draw a batch, loss = model.loss(batch), backward, optional gradient clipping,
optimiser step, optional schedule and EMA update. Progress is printed every ``log_every``
steps; a NaN or inf loss stops training with an error naming the step.
"""
import math
import sys
import time

from . import io
from .data.batching import infinite_batches
from .optim import EMA, Adam, clip_grad_norm_


class TrainResult:
    """What ``train`` returns: per-step ``losses``, the ``ema`` (or None), wall ``seconds``."""

    def __init__(self, losses, ema, seconds):
        self.losses, self.ema, self.seconds = losses, ema, seconds

    def __repr__(self):
        last = f"{self.losses[-1]:.4f}" if self.losses else "n/a"
        return f"TrainResult(steps={len(self.losses)}, last_loss={last}, seconds={self.seconds:.1f})"


def train(model, data, steps=1000, batch_size=128, optimizer=None, lr=1e-3, schedule=None,
          ema_decay=None, ema_warmup=True, clip_grad=None, log_every=100, checkpoint=None,
          rng=None, verbose=True, out=None):
    """Train ``model`` on ``data`` (an array, or a tuple of arrays sharing the first axis).

    optimizer: an Optimizer (default Adam(lr)); schedule: a callable optimizer -> LRScheduler;
    ema_decay: keep an EMA of the parameters; ema_warmup: at step k use the decay
    min(ema_decay, (1 + k)/(10 + k)) (TensorFlow's ExponentialMovingAverage with num_updates),
    so a short run's average is not dominated by the initial weights; checkpoint: a path
    written every ``log_every`` steps and at the end (model parameters, and the EMA as
    ``ema.*``).
    """
    if steps < 1:
        raise ValueError(f"train: steps must be >= 1, got {steps}")
    if not hasattr(model, "loss"):
        raise TypeError(f"train: {type(model).__name__} has no loss(batch) method")
    params = list(model.parameters())
    optimizer = optimizer or Adam(params, lr=lr)
    scheduler = schedule(optimizer) if schedule is not None else None
    ema = EMA(model, ema_decay) if ema_decay else None
    out = out or sys.stdout
    source = infinite_batches(data, batch_size, rng=rng)
    losses, start = [], time.perf_counter()
    model.train()
    for step in range(1, steps + 1):
        optimizer.zero_grad()
        loss = model.loss(next(source))
        value = float(loss.item())
        if not math.isfinite(value):
            raise FloatingPointError(f"train: loss is {value} at step {step}; lower the learning "
                                     "rate or check the data")
        loss.backward()
        if clip_grad is not None:
            clip_grad_norm_(params, clip_grad)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        if ema is not None:
            if ema_warmup:
                ema.decay = min(ema_decay, (1 + step) / (10 + step))
            ema.update(model)
        losses.append(value)
        if step % log_every == 0 or step == steps:
            if verbose:
                recent = losses[-log_every:]
                rate = step / (time.perf_counter() - start)
                print(f"step {step:>6}/{steps}  loss {sum(recent) / len(recent):.4f}  "
                      f"{rate:.1f} steps/s", file=out, flush=True)
            if checkpoint is not None:
                state = model.state_dict()
                if ema is not None:
                    state.update({"ema." + k: v for k, v in ema.state_dict().items()})
                io.save(state, checkpoint)
    model.eval()
    return TrainResult(losses, ema, time.perf_counter() - start)
