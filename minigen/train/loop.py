"""The one training loop, for every deep model.

A step is, by default, ``loss = model.loss(batch)``; zero_grad, backward, optional gradient
clipping, a check that the loss and every gradient are finite, then the optimiser step, the
schedule and the EMA update, and a check that every parameter is still finite. A model whose
step is more than one loss (a GAN's critic and generator updates) defines
``train_step(batch, step, optimizers) -> {name: float}`` instead and does its own updates with
the optimisers of ``model.configure_optimizers(lr)``.

Each step has three single points: the batch is drawn (``next(stream)``), the gradients are
ready (after ``backward``, before clipping and the update), and the step's scalars (losses,
validation) are decided (``RunState.finish_step``). After ``finish_step`` the run is at a step
boundary again, the only place where a checkpoint is written.

Under ``mpiexec -n N`` the same loop runs data-parallel (``minigen.train.parallel``): each
rank runs the step on its shard of the global batch, the gradients are averaged over the ranks
right after backward, every scalar decision is taken on values reduced over the ranks, and
rank 0 alone writes checkpoints, which every rank restores.
"""
import math
import re
import sys
import time

import numpy as np

from .. import backend
from .._alloc import keep_freed_memory
from .._blas import blas_threads as limit_blas
from .._checks import positive, positive_int, real
from ..autograd import Tensor, no_grad
from ..data.batching import BatchStream, batches
from ..optim import EMA, Adam, Optimizer, clip_grad_norm_
from .checkpoint import Best, check_destination, restore, write_checkpoint
from .parallel import AveragingOptimizer, Ranks, loss_weight, rows
from .progress import Progress, deferred_interrupt


class TrainingInterrupted(KeyboardInterrupt):
    """The ``KeyboardInterrupt`` that ``train`` re-raises after cleaning up: the model is in
    eval mode and ``result`` holds the TrainResult of the completed steps. Interrupted at a step
    boundary (a first Ctrl-C), the checkpoint asked for is written at that step; interrupted
    inside a step (``inside_step``), the model holds part of that step's update and the
    checkpoint file keeps the last step boundary written. ``checkpoint`` is (path, step) of the
    last checkpoint this run wrote, or of the one it resumed from, or None."""

    def __init__(self, result, inside_step, checkpoint=None):
        where = f"inside step {result.steps + 1}" if inside_step else \
            f"after step {result.steps}"
        super().__init__(f"training interrupted {where}")
        self.result, self.inside_step, self.checkpoint = result, inside_step, checkpoint


class TrainResult:
    """What ``train`` returns: ``history`` (name -> per-step values of every named loss),
    ``losses`` (the main loss per step), ``val_losses`` ([(step, value)]), ``best_step`` (of the
    best validation, or None), ``ema`` (or None), ``seconds`` and ``steps`` (steps done, counted
    from the start)."""

    def __init__(self, history, val_losses, best_step, ema, seconds, steps):
        self.history = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
        self.val_losses, self.best_step = list(val_losses), best_step
        self.ema, self.seconds, self.steps = ema, seconds, steps

    @property
    def losses(self):
        """The main loss per step: ``history['loss']``, or the first named loss."""
        if not self.history:
            return np.zeros(0)
        return self.history["loss"] if "loss" in self.history else next(iter(
            self.history.values()))

    def __repr__(self):
        last = f"{self.losses[-1]:.4f}" if len(self.losses) else "n/a"
        return f"TrainResult(steps={self.steps}, last_loss={last}, seconds={self.seconds:.1f})"


class RunState:
    """The mutable state of one run, what a checkpoint saves: the optimisers, schedules, EMA
    and batch stream, the loss history, the validations, the best one (a ``Best``) and how many
    validations came after it, the step reached and whether early stopping ended the run.
    ``in_step`` is True from the start of a step until ``finish_step``."""

    def __init__(self, optimizers, schedulers, ema, stream):
        self.optimizers, self.schedulers, self.ema, self.stream = (optimizers, schedulers,
                                                                   ema, stream)
        self.history, self.val_losses = {}, []
        self.best, self.validations_since_best = None, 0
        self.step, self.stopped, self.in_step = 0, False, False
        self.seconds_before, self.start = 0.0, time.perf_counter()

    def seconds(self):
        return self.seconds_before + time.perf_counter() - self.start

    def finish_step(self, step, losses, val_loss, patience, model):
        """Record the step's losses and validation (early stopping after ``patience``
        validations without improvement); the run is at a step boundary again."""
        if self.history and set(losses) != set(self.history):
            raise ValueError(f"train: step {step} returned the losses {sorted(losses)}, earlier "
                             f"steps {sorted(self.history)}")
        for name, value in losses.items():
            self.history.setdefault(name, []).append(value)
        if val_loss is not None:
            self.val_losses.append((step, val_loss))
            if self.best is None or val_loss < self.best.value:
                self.best, self.validations_since_best = Best(step, val_loss,
                                                              model.state_dict()), 0
            else:
                self.validations_since_best += 1
                self.stopped = patience is not None and self.validations_since_best >= patience
        self.step = step
        self.in_step = False

    def result(self):
        return TrainResult(self.history, self.val_losses,
                           None if self.best is None else self.best.step, self.ema,
                           self.seconds(), self.step)


# --- argument checks (all before any work) -------------------------------------------------
def _check_model(model, clip_grad, validation, metric):
    has_loss = callable(getattr(model, "loss", None))
    has_train_step = callable(getattr(model, "train_step", None))
    if not has_loss and not has_train_step:
        raise TypeError(f"train: {type(model).__name__} has no loss(batch) method (nor "
                        "train_step(batch, step, optimizers))")
    if has_train_step and clip_grad is not None:
        raise ValueError(f"train: clip_grad applies to the default step; "
                         f"{type(model).__name__}.train_step does its own updates (clip there "
                         "with minigen.optim.clip_grad_norm_)")
    if validation is not None and metric is None and not has_loss:
        raise TypeError(f"train: validation needs {type(model).__name__}.loss(batch) or a "
                        "metric=")
    if validation is None and metric is not None:
        raise ValueError("train: metric= needs a validation= set")
    if metric is not None and not callable(metric):
        raise TypeError(f"train: metric must be a callable (model, validation) -> float, got "
                        f"{type(metric).__name__}")
    return has_train_step


def _optimizers(model, optimizer, lr):
    """(what ``train_step`` receives: the Optimizer or the dict, name -> Optimizer)."""
    if optimizer is None:
        configure = getattr(model, "configure_optimizers", None)
        optimizer = configure(lr) if callable(configure) else Adam(model.parameters(), lr=lr)
    if isinstance(optimizer, Optimizer):
        return optimizer, {"optimizer": optimizer}
    if isinstance(optimizer, dict) and optimizer and all(
            isinstance(k, str) and isinstance(v, Optimizer) for k, v in optimizer.items()):
        bad = [k for k in optimizer if not re.fullmatch(r"[A-Za-z0-9_\-]+", k)]
        if bad:
            raise ValueError(f"train: optimizer names must be letters, digits, '_' or '-' "
                             f"(they name checkpoint entries), got {bad}")
        return optimizer, dict(optimizer)
    raise TypeError(f"train: optimizer must be an Optimizer or a dict name -> Optimizer, got "
                    f"{type(optimizer).__name__}")


def _schedulers(schedule, optimizers, checkpointed):
    """name -> schedule(optimizer); a checkpointed run needs their state_dict/load_state_dict."""
    if schedule is None:
        return {}
    if not callable(schedule):
        raise TypeError(f"train: schedule must be a callable optimizer -> scheduler (e.g. "
                        f"lambda opt: StepLR(opt, 100)), got {type(schedule).__name__}")
    schedulers = {name: schedule(opt) for name, opt in optimizers.items()}
    needs = ("step", "state_dict", "load_state_dict") if checkpointed else ("step",)
    for sched in schedulers.values():
        if not all(callable(getattr(sched, m, None)) for m in needs):
            raise TypeError(f"train: schedule(optimizer) must return a scheduler with "
                            f"{', '.join(needs)}; got {type(sched).__name__}")
    return schedulers


# --- one step -----------------------------------------------------------------------------
def _finite(value, name, step):
    if not math.isfinite(value):
        raise FloatingPointError(f"train: {name} is {value} at step {step}; lower the learning "
                                 "rate or check the data")
    return value


def _loss_value(loss, step, ranks, weight):
    """The loss as a float, its weighted mean over the ranks, checked finite."""
    if not isinstance(loss, Tensor):
        raise TypeError(f"train: model.loss must return a scalar Tensor (with its graph), got "
                        f"{type(loss).__name__} at step {step}")
    if loss.size != 1 or loss.dtype.kind != "f":
        raise ValueError(f"train: model.loss must return a scalar float Tensor, got shape "
                         f"{loss.shape} dtype {loss.dtype} at step {step}")
    return _finite(ranks.mean([float(loss.item())], weight)[0], "loss", step)


def _loss_step(model, batch, step, optimizers, params, clip_grad, ranks):
    """zero_grad; loss; backward; gradients averaged over the ranks; clip; finite checks;
    update. Nothing is updated when the loss or a gradient is not finite."""
    for opt in optimizers.values():
        opt.zero_grad()
    loss = model.loss(batch)
    weight = loss_weight(model, batch)
    value = _loss_value(loss, step, ranks, weight)
    loss.backward()                                     # the gradients are ready
    ranks.average_gradients(params, weight)
    if clip_grad is not None:
        finite = math.isfinite(clip_grad_norm_(params, clip_grad))
    else:
        finite = all(bool(backend.xp(p.grad.data).isfinite(p.grad.data).all())
                     for p in params if p.grad is not None)
    if not finite:
        raise FloatingPointError(f"train: a gradient is not finite at step {step} (loss "
                                 f"{value:.6g}); the parameters were not updated")
    for opt in optimizers.values():
        opt.step()
    return {"loss": value}


def _model_train_step(model, batch, step, optimizers, ranks):
    """The model's own ``train_step``, its losses checked: a non-empty dict of numbers, each
    finite once averaged over the ranks. Every optimiser ``train_step`` receives averages the
    gradients over the ranks before it steps."""
    weight = loss_weight(model, batch)
    for opt in optimizers.values() if isinstance(optimizers, dict) else [optimizers]:
        if isinstance(opt, AveragingOptimizer):
            opt.weight = weight
    losses = model.train_step(batch, step, optimizers)
    if not isinstance(losses, dict) or not losses:
        raise TypeError(f"train: {type(model).__name__}.train_step must return a non-empty "
                        f"dict name -> loss, got {type(losses).__name__}")
    out = {}
    for name, value in losses.items():
        try:
            value = float(value.item() if hasattr(value, "item") else value)
        except (TypeError, ValueError):
            raise TypeError(f"train: {type(model).__name__}.train_step returned {name}="
                            f"{value!r}; expected a number or a scalar Tensor") from None
        out[str(name)] = value
    means = ranks.mean(list(out.values()), weight)
    return {name: _finite(value, name, step) for name, value in zip(out, means)}


def _check_finite_parameters(model, step):
    for name, p in model.named_parameters():
        if not bool(backend.xp(p.data).isfinite(p.data).all()):
            raise FloatingPointError(f"train: parameter {name} is not finite after step "
                                     f"{step}; lower the learning rate or check the data "
                                     "(nothing of this step is saved)")


def _validate(model, validation, metric, batch_size, step, ranks):
    """The validation loss, sum_b w_b loss_b / sum_b w_b over the set's batches b with
    ``loss_weight`` w_b (each rank scoring its shard of every batch), or
    ``metric(model, validation)`` averaged over the ranks; under no_grad and eval()."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            if metric is not None:
                value = ranks.mean([float(metric(model, validation))], 1.0)[0]
                return _finite(value, "the validation metric", step)
            total = count = 0.0
            ragged = False
            for batch in batches(validation, batch_size, shuffle=False):
                ragged = ragged or rows(batch) < ranks.size
                with ranks.shard(batch) as local:
                    if rows(local):
                        weight = loss_weight(model, local)
                        total += float(model.loss(local).item()) * weight
                        count += weight
            if ragged:
                ranks.resync_generators(model)
            mean = ranks.mean([total / count if count else 0.0], count)[0]
            return _finite(mean, "the validation loss", step)
    finally:
        model.train(was_training)


def train(model, data, *, steps=None, epochs=None, batch_size=128, optimizer=None, lr=1e-3,
          schedule=None, ema_decay=None, ema_warmup=True, clip_grad=None, validation=None,
          val_every=None, patience=None, metric=None, log_every=100, checkpoint=None,
          resume=None, rng=None, verbose=True, out=None, blas_threads=None):
    """Train ``model`` on ``data`` (an array, or a tuple of arrays sharing the first axis; the
    batches come in the same form) and return a ``TrainResult``.

    steps / epochs: the budget, exactly one; steps count from the start, also on resume (an
    epoch is ``len(data) // batch_size`` steps). optimizer: an Optimizer or a dict name ->
    Optimizer (default: ``model.configure_optimizers(lr)`` where defined, else Adam(lr)).
    schedule: a callable optimizer -> scheduler, applied to each optimiser and stepped once per
    training step. ema_decay: keep an EMA of the parameters; with ema_warmup step k uses the
    decay min(ema_decay, (1 + k)/(10 + k)) (TensorFlow's ExponentialMovingAverage with
    num_updates), so a short run's average is not dominated by the initial weights. clip_grad:
    rescale the gradients to this global norm at most. validation: held-out data in the form of
    ``data``, scored every ``val_every`` steps (default: once an epoch) and at the end by
    ``model.loss`` or ``metric(model, validation)`` (lower is better); patience: stop after
    that many validations without improvement and restore the best weights. checkpoint: a path
    written every ``log_every`` steps, at the end and on an interrupt (read it with
    ``load_checkpoint``; see ``minigen.train.checkpoint`` for what it holds); resume: a
    checkpoint to continue from, exactly. rng: the batch order. verbose / out: progress to
    ``out`` (default sys.stdout). blas_threads: limit the BLAS thread pool to this many threads
    for the run (through threadpoolctl, ignored without it); 1 ran each step 2-5x faster on a
    loaded 2-core machine and suits one rank per core under mpiexec (benchmarks/README.md,
    "Threads that cooperate"), while a quiet machine may prefer the default pool. The memory
    a step frees stays with the process for the next step during the run (glibc's malloc;
    ``minigen._alloc``): 17% less CPU time per TransformerLM step, no page faults.

    A NaN or inf loss, gradient, validation or parameter stops training with a
    FloatingPointError naming the step, before anything of that step is saved. A first Ctrl-C
    lets the current step finish and writes the checkpoint; a second one, or any other
    KeyboardInterrupt inside a step, keeps the last checkpoint written. Either way the model is
    left in eval mode and ``TrainingInterrupted`` (with ``result``) is raised.

    Launched under ``mpiexec -n N`` it trains data-parallel: the ranks start from rank 0's
    parameters and generators, each runs the step on its contiguous shard of every global
    batch of ``batch_size`` rows (batch_size >= N), the gradients are averaged over the ranks,
    and losses, validation and stop decisions are reduced over them, so N ranks take the steps
    one process takes with the same batch_size, up to the order of floating-point sums. Rank 0
    writes the checkpoints; a checkpoint resumes on any number of ranks.
    """
    if (steps is None) == (epochs is None):
        raise ValueError(f"train: give exactly one of steps= or epochs= (got steps={steps!r}, "
                         f"epochs={epochs!r})")
    steps = positive_int(steps, "steps", "train", optional=True)
    epochs = positive_int(epochs, "epochs", "train", optional=True)
    batch_size = positive_int(batch_size, "batch_size", "train")
    log_every = positive_int(log_every, "log_every", "train")
    val_every = positive_int(val_every, "val_every", "train", optional=True)
    patience = positive_int(patience, "patience", "train", optional=True)
    lr = positive(lr, "lr", "train")
    blas_threads = positive_int(blas_threads, "blas_threads", "train", optional=True)
    clip_grad = positive(clip_grad, "clip_grad", "train", optional=True)
    ema_decay = real(ema_decay, "ema_decay", "train", low=0, high=1, high_open=True,
                     optional=True)
    if patience is not None and validation is None:
        raise ValueError("train: patience= needs a validation= set")
    uses_train_step = _check_model(model, clip_grad, validation, metric)
    if checkpoint is not None:
        check_destination(checkpoint, "train")
    stream = BatchStream(data, batch_size, rng)
    ranks = Ranks()
    ranks.start(model, batch_size, stream.rng)
    total = steps if steps is not None else epochs * stream.batches_per_epoch
    val_every = val_every or min(stream.batches_per_epoch, total)
    step_optimizers, optimizers = _optimizers(model, optimizer, lr)
    if ranks.size > 1 and uses_train_step:
        step_optimizers = AveragingOptimizer(step_optimizers, ranks) if isinstance(
            step_optimizers, Optimizer) else {name: AveragingOptimizer(opt, ranks)
                                              for name, opt in step_optimizers.items()}
    schedulers = _schedulers(schedule, optimizers, checkpoint is not None or resume is not None)
    ema = EMA(model, ema_decay) if ema_decay is not None else None
    run = RunState(optimizers, schedulers, ema, stream)
    saved = None                                # (path, step) of the last good checkpoint
    if resume is not None:
        restore(resume, model, run, total)
        saved = (resume, run.step)
    params = list(model.parameters())
    progress = Progress(out or sys.stdout, total, log_every, verbose and ranks.writer, run.step,
                        ranks.size, type(model).__name__)
    model.train()
    try:
        with deferred_interrupt() as interrupt_requested, limit_blas(blas_threads), \
                keep_freed_memory():
            while run.step < total and not run.stopped:
                step = run.step + 1
                run.in_step = True
                batch = next(stream)                    # the one place a batch is drawn
                with ranks.shard(batch) as local:
                    if uses_train_step:
                        losses = _model_train_step(model, local, step, step_optimizers, ranks)
                    else:
                        losses = _loss_step(model, local, step, optimizers, params, clip_grad,
                                            ranks)
                for sched in schedulers.values():
                    sched.step()
                if ema is not None:
                    ema.decay = min(ema_decay, (1 + step) / (10 + step)) if ema_warmup \
                        else ema_decay
                    ema.update(model)
                _check_finite_parameters(model, step)
                due = validation is not None and (step % val_every == 0 or step == total)
                val_loss = _validate(model, validation, metric, batch_size, step, ranks) \
                    if due else None
                run.finish_step(step, losses, val_loss, patience, model)
                progress.update(step, run.history, run.val_losses, force=run.stopped)
                if checkpoint is not None and (step % log_every == 0 or step == total
                                               or run.stopped):
                    ranks.check_in_sync(model, step)
                    if ranks.writer:
                        write_checkpoint(checkpoint, model, run)
                    saved = (checkpoint, step)
                if ranks.any(interrupt_requested):
                    raise KeyboardInterrupt
    except KeyboardInterrupt as err:
        progress.close()
        if checkpoint is not None and run.step > 0 and not run.in_step:
            try:
                if ranks.writer:
                    write_checkpoint(checkpoint, model, run)
                saved = (checkpoint, run.step)
            except KeyboardInterrupt:   # another Ctrl-C while writing: the file is unchanged
                pass
        raise TrainingInterrupted(run.result(), run.in_step, saved) from err
    finally:
        model.eval()
    if patience is not None and run.best is not None:
        model.load_state_dict(run.best.weights)
    return run.result()
