"""The one training loop, for every deep model.

A step is, by default, ``loss = model.loss(batch)``; zero_grad, backward, optional gradient
clipping, a check that the loss and every gradient are finite, then the optimiser step, the
schedule and the EMA update. A model whose step is more than one loss (a GAN's critic and
generator updates) defines ``train_step(batch, step, optimizers) -> {name: float}`` instead and
does its own updates with the optimisers of ``model.configure_optimizers(lr)``.

The budget is ``steps=`` (optimiser steps, counted from the start, also on resume, like
``max_steps`` in the trainers people know) or ``epochs=`` (``epochs * (n // batch_size)``
steps), exactly one. Around the steps: validation every ``val_every`` steps under ``no_grad``
and ``eval()``, early stopping after ``patience`` validations without improvement (the best
weights are restored), progress (one line redrawn in place on a terminal, plain lines every
``log_every`` steps otherwise), and checkpoints every ``log_every`` steps, at the end and on
an interrupt. A checkpoint holds everything a run depends on (weights, optimiser and schedule
states, EMA, step, the batch order and every random generator's state), so
``train(..., steps=100, resume=path)`` after 50 checkpointed steps gives the same losses and
weights as 100 uninterrupted steps. Nothing non-finite is ever written: a NaN or inf loss or
gradient stops training before the update, naming the step.
"""
import contextlib
import math
import re
import signal
import sys
import threading
import time

import numpy as np

from . import backend, io
from .autograd import Tensor, no_grad
from .data.batching import BatchStream, batches
from .optim import EMA, Adam, Optimizer, clip_grad_norm_


class TrainingInterrupted(KeyboardInterrupt):
    """The ``KeyboardInterrupt`` that ``train`` re-raises after cleaning up: the model is in
    eval mode, the final checkpoint (if one was asked for) is written, and ``result`` holds the
    TrainResult of the completed steps."""

    def __init__(self, result):
        super().__init__(f"training interrupted after step {result.steps}")
        self.result = result


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


# --- argument checks (all before any work) -------------------------------------------------
def _positive_int(value, name, optional=False):
    if optional and value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"train: {name} must be a positive int, got {value!r}")
    return int(value)


def _check_arguments(model, steps, epochs, batch_size, lr, schedule, ema_decay, clip_grad,
                     validation, val_every, patience, metric, log_every):
    if (steps is None) == (epochs is None):
        raise ValueError(f"train: give exactly one of steps= or epochs= (got steps={steps!r}, "
                         f"epochs={epochs!r})")
    _positive_int(steps, "steps", optional=True)
    _positive_int(epochs, "epochs", optional=True)
    _positive_int(batch_size, "batch_size")
    _positive_int(log_every, "log_every")
    _positive_int(val_every, "val_every", optional=True)
    _positive_int(patience, "patience", optional=True)
    if isinstance(lr, bool) or not isinstance(lr, (int, float, np.integer, np.floating)) \
            or not 0 < lr < math.inf:
        raise ValueError(f"train: lr must be a finite number > 0, got {lr!r}")
    if clip_grad is not None and (isinstance(clip_grad, bool) or not isinstance(
            clip_grad, (int, float, np.integer, np.floating)) or not clip_grad > 0):
        raise ValueError(f"train: clip_grad must be a number > 0 (the max gradient norm), "
                         f"got {clip_grad!r}")
    if schedule is not None and not callable(schedule):
        raise TypeError(f"train: schedule must be a callable optimizer -> scheduler (e.g. "
                        f"lambda opt: StepLR(opt, 100)), got {type(schedule).__name__}")
    if ema_decay is not None:
        EMA._checked_decay(ema_decay)
    if metric is not None and not callable(metric):
        raise TypeError(f"train: metric must be a callable (model, validation) -> float, got "
                        f"{type(metric).__name__}")
    if validation is None and (patience is not None or metric is not None):
        raise ValueError("train: patience= and metric= need a validation= set")
    has_loss, has_step = callable(getattr(model, "loss", None)), callable(
        getattr(model, "train_step", None))
    if not has_loss and not has_step:
        raise TypeError(f"train: {type(model).__name__} has no loss(batch) method (nor "
                        "train_step(batch, step, optimizers))")
    if has_step and clip_grad is not None:
        raise ValueError(f"train: clip_grad applies to the default step; "
                         f"{type(model).__name__}.train_step does its own updates (clip there "
                         "with minigen.optim.clip_grad_norm_)")
    if validation is not None and metric is None and not has_loss:
        raise TypeError(f"train: validation needs {type(model).__name__}.loss(batch) or a "
                        "metric=")


def _optimizers(model, optimizer, lr):
    """(what train_step receives, name -> Optimizer)."""
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


# --- one step -----------------------------------------------------------------------------
def _scalar_loss(loss, step):
    if not isinstance(loss, Tensor):
        raise TypeError(f"train: model.loss must return a scalar Tensor (with its graph), got "
                        f"{type(loss).__name__} at step {step}")
    if loss.size != 1 or loss.dtype.kind != "f":
        raise ValueError(f"train: model.loss must return a scalar float Tensor, got shape "
                         f"{loss.shape} dtype {loss.dtype} at step {step}")
    value = float(loss.item())
    if not math.isfinite(value):
        raise FloatingPointError(f"train: loss is {value} at step {step}; lower the learning "
                                 "rate or check the data")
    return value


def _default_step(model, batch, step, optimizers, params, clip_grad):
    """zero_grad; loss; backward; clip; finite checks; step. Nothing is updated when the loss
    or a gradient is not finite."""
    for opt in optimizers.values():
        opt.zero_grad()
    loss = model.loss(batch)
    value = _scalar_loss(loss, step)
    loss.backward()
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


def _hook_step(model, batch, step, given):
    losses = model.train_step(batch, step, given)
    if not isinstance(losses, dict) or not losses:
        raise TypeError(f"train: {type(model).__name__}.train_step must return a non-empty "
                        f"dict name -> loss, got {type(losses).__name__}")
    out = {}
    for name, v in losses.items():
        try:
            v = float(v.item() if hasattr(v, "item") else v)
        except (TypeError, ValueError):
            raise TypeError(f"train: {type(model).__name__}.train_step returned {name}="
                            f"{v!r}; expected a number or a scalar Tensor") from None
        if not math.isfinite(v):
            raise FloatingPointError(f"train: {name} is {v} at step {step}; lower the learning "
                                     "rate or check the data")
        out[str(name)] = v
    return out


def _check_finite_parameters(model, step):
    for name, p in model.named_parameters():
        if not bool(backend.xp(p.data).isfinite(p.data).all()):
            raise FloatingPointError(f"train: parameter {name} is not finite after step "
                                     f"{step}; no checkpoint written")


def _validate(model, validation, metric, batch_size):
    """The validation loss (model.loss averaged over the set, weighted by batch size) or
    ``metric(model, validation)``, under no_grad and eval()."""
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            if metric is not None:
                return float(metric(model, validation))
            total = count = 0
            for batch in batches(validation, batch_size, shuffle=False):
                n = len(batch[0] if isinstance(batch, tuple) else batch)
                total += float(model.loss(batch).item()) * n
                count += n
            return total / count
    finally:
        model.train(was_training)


# --- progress -------------------------------------------------------------------------------
class _Progress:
    """On a terminal one line redrawn at most 10 times a second; otherwise a line every
    ``log_every`` steps; nothing when not verbose."""

    def __init__(self, out, total, log_every, verbose, first_step):
        self.out, self.total, self.log_every, self.verbose = out, total, log_every, verbose
        isatty = getattr(out, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.first_step, self.start, self.drawn = first_step, time.perf_counter(), 0.0

    def update(self, step, history, val_losses, force=False):
        if not self.verbose:
            return
        now = time.perf_counter()
        due = (step % self.log_every == 0 or step == self.total or force) if not self.tty \
            else (now - self.drawn >= 0.1 or step == self.total or force)
        if not due:
            return
        self.drawn = now
        window = min(self.log_every, step)
        parts = [f"step {step:>6}/{self.total}"]
        parts += [f"{name} {np.mean(values[-window:]):.4f}" for name, values in history.items()]
        if val_losses:
            parts.append(f"val {val_losses[-1][1]:.4f}")
        rate = (step - self.first_step) / max(now - self.start, 1e-9)
        parts.append(f"{rate:.1f} steps/s")
        if step < self.total and rate > 0:
            eta = int((self.total - step) / rate)
            parts.append(f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
        line = "  ".join(parts)
        if self.tty:
            self.out.write("\r" + line + "\x1b[K" + ("\n" if step == self.total or force else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self):
        if self.verbose and self.tty:
            self.out.write("\n")
            self.out.flush()


@contextlib.contextmanager
def _deferred_interrupt():
    """A first Ctrl-C (SIGINT) sets a flag that the loop checks after the current step, so
    the step completes and the final checkpoint is consistent; a second one interrupts at once.
    Only in the main thread and where Python's default handler is installed."""
    flag = []
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield flag
        return

    def handler(signum, frame):
        if flag:
            raise KeyboardInterrupt
        flag.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


# --- checkpoints ----------------------------------------------------------------------------
def _generators(model):
    """(name, Generator) for every NumPy generator a module of the model holds (e.g. DDPM's
    ``rng``), so a resumed run draws the same numbers."""
    for prefix, module in model.named_modules():
        for name, value in vars(module).items():
            if isinstance(value, np.random.Generator):
                yield prefix + name, value


def _prefixed(prefix, state):
    return {f"{prefix}{k}": v for k, v in state.items()}


def _section(arrays, prefix):
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


class Checkpoint:
    """A training checkpoint read by ``load_checkpoint``: ``step``, ``model`` (the model's
    state dict: ``model.load_state_dict(ckpt.model)``), ``ema`` (a full state dict with the
    averaged parameters, loadable the same way, or None), ``optimizers`` / ``schedulers``
    (name -> state dict), ``history`` (name -> per-step values) and ``arrays`` (every member)."""

    def __init__(self, arrays):
        self.arrays = arrays
        self.step = int(arrays["train.step"])
        self.model = _section(arrays, "model.")
        ema = _section(arrays, "ema.")
        self.ema = ema or None
        names = [k[len("train.optimizer."):] for k in arrays if k.startswith("train.optimizer.")]
        self.optimizers = {n: _section(arrays, f"optim.{n}.") for n in names}
        self.schedulers = {n: _section(arrays, f"sched.{n}.") for n in names
                           if f"sched.{n}.last_step" in arrays}
        self.history = _section(arrays, "history.")


def load_checkpoint(path):
    """Read a checkpoint written by ``train(..., checkpoint=path)`` (see ``Checkpoint``)."""
    arrays = io.load(path)
    if "train.step" not in arrays:
        raise ValueError(f"load_checkpoint: {str(path)!r} is a minigen file but not a training "
                         "checkpoint (no train.step)")
    return Checkpoint(arrays)


def _checkpoint_arrays(model, run):
    """Everything the run depends on, as a flat name -> array dict."""
    arrays = _prefixed("model.", model.state_dict())
    if run.ema is not None:
        full = model.state_dict()
        full.update(run.ema.state_dict())       # averaged parameters, current buffers
        arrays.update(_prefixed("ema.", full))
    for name, opt in run.optimizers.items():
        arrays[f"train.optimizer.{name}"] = np.array(1)
        arrays.update(_prefixed(f"optim.{name}.", opt.state_dict()))
    for name, sched in run.schedulers.items():
        arrays.update(_prefixed(f"sched.{name}.", sched.state_dict()))
    arrays.update(_prefixed("batches.", run.stream.state_dict()))
    for name, gen in _generators(model):
        arrays[f"rng.model.{name}"] = io.json_array(gen.bit_generator.state)
    arrays["rng.global"] = io.json_array(backend.default_rng("cpu").bit_generator.state)
    arrays.update(_prefixed("history.", {k: np.asarray(v) for k, v in run.history.items()}))
    arrays["val.steps"] = np.array([s for s, _ in run.val_losses], dtype=np.int64)
    arrays["val.values"] = np.array([v for _, v in run.val_losses], dtype=np.float64)
    if run.best is not None:
        arrays["best.step"], arrays["best.value"] = np.array(run.best[0]), np.array(run.best[1])
        arrays["best.bad"] = np.array(run.bad)
        arrays.update(_prefixed("best.model.", run.best[2]))
    arrays["train.step"] = np.array(run.step)
    arrays["train.stopped"] = np.array(run.stopped)
    arrays["train.seconds"] = np.array(run.seconds())
    return arrays


def _write_checkpoint(path, model, run):
    _check_finite_parameters(model, run.step)
    io.save(_checkpoint_arrays(model, run), path)


def _restore(path, model, run, total):
    """Load a checkpoint into the run and the model (the budget and the optimiser, schedule
    and EMA set are checked first; the model's weights are loaded after the run's state)."""
    ckpt = load_checkpoint(path)
    where = f"train: resume={str(path)!r}"
    if ckpt.step > total:
        raise ValueError(f"{where} is at step {ckpt.step}, past the budget of {total} steps")
    if set(ckpt.optimizers) != set(run.optimizers):
        raise ValueError(f"{where} holds optimisers {sorted(ckpt.optimizers)}, this run has "
                         f"{sorted(run.optimizers)}")
    if set(ckpt.schedulers) != set(run.schedulers):
        raise ValueError(f"{where} holds schedules for {sorted(ckpt.schedulers)}, this run has "
                         f"{sorted(run.schedulers)}")
    if (ckpt.ema is None) != (run.ema is None):
        raise ValueError(f"{where}: ema_decay must be given in both runs or in neither")
    for name, opt in run.optimizers.items():
        opt.load_state_dict(ckpt.optimizers[name])
    for name, sched in run.schedulers.items():
        sched.load_state_dict(ckpt.schedulers[name])
    if run.ema is not None:
        run.ema.load_state_dict({k: ckpt.ema[k] for k in run.ema.shadow})
    run.stream.load_state_dict(_section(ckpt.arrays, "batches."))
    model.load_state_dict(ckpt.model)
    for name, gen in _generators(model):
        key = f"rng.model.{name}"
        if key in ckpt.arrays:
            gen.bit_generator.state = io.from_json_array(ckpt.arrays[key])
    backend.default_rng("cpu").bit_generator.state = io.from_json_array(
        ckpt.arrays["rng.global"])
    run.history = {k: list(v) for k, v in ckpt.history.items()}
    run.val_losses = list(zip(ckpt.arrays["val.steps"].tolist(),
                              ckpt.arrays["val.values"].tolist()))
    if "best.step" in ckpt.arrays:
        run.best = (int(ckpt.arrays["best.step"]), float(ckpt.arrays["best.value"]),
                    _section(ckpt.arrays, "best.model."))
        run.bad = int(ckpt.arrays["best.bad"])
    run.step, run.stopped = ckpt.step, bool(ckpt.arrays["train.stopped"])
    run.seconds_before = float(ckpt.arrays["train.seconds"])


class _Run:
    """The mutable state of one training run (what a checkpoint saves)."""

    def __init__(self, optimizers, schedulers, ema, stream):
        self.optimizers, self.schedulers, self.ema, self.stream = (optimizers, schedulers,
                                                                   ema, stream)
        self.history, self.val_losses = {}, []
        self.best, self.bad, self.step, self.stopped = None, 0, 0, False
        self.seconds_before, self.start = 0.0, time.perf_counter()

    def seconds(self):
        return self.seconds_before + time.perf_counter() - self.start

    def record(self, losses):
        if self.history and set(losses) != set(self.history):
            raise ValueError(f"train: step {self.step + 1} returned the losses "
                             f"{sorted(losses)}, earlier steps {sorted(self.history)}")
        for name, v in losses.items():
            self.history.setdefault(name, []).append(v)

    def result(self):
        return TrainResult(self.history, self.val_losses,
                           None if self.best is None else self.best[0], self.ema,
                           self.seconds(), self.step)


def train(model, data, *, steps=None, epochs=None, batch_size=128, optimizer=None, lr=1e-3,
          schedule=None, ema_decay=None, ema_warmup=True, clip_grad=None, validation=None,
          val_every=None, patience=None, metric=None, log_every=100, checkpoint=None,
          resume=None, rng=None, verbose=True, out=None):
    """Train ``model`` on ``data`` (an array, or a tuple of arrays sharing the first axis; the
    batches come in the same form) and return a ``TrainResult``.

    steps / epochs: the budget, exactly one; steps count from the start, also on resume.
    optimizer: an Optimizer or a dict name -> Optimizer (default:
    ``model.configure_optimizers(lr)`` where defined, else Adam(lr)). schedule: a callable
    optimizer -> scheduler, applied to each optimiser and stepped once per training step.
    ema_decay: keep an EMA of the parameters; with ema_warmup step k uses the decay
    min(ema_decay, (1 + k)/(10 + k)) (TensorFlow's ExponentialMovingAverage with num_updates),
    so a short run's average is not dominated by the initial weights. clip_grad: rescale the
    gradients to this global norm at most. validation: held-out data in the form of ``data``,
    scored every ``val_every`` steps (default: once an epoch) and at the end by ``model.loss``
    or ``metric(model, validation)`` (lower is better); patience: stop after that many
    validations without improvement and restore the best weights. checkpoint: a path written
    every ``log_every`` steps, at the end and on an interrupt (read it with
    ``load_checkpoint``); resume: a checkpoint to continue from. rng: the batch order.
    verbose / out: progress to ``out`` (default sys.stdout).

    A KeyboardInterrupt lets the current step finish, writes the checkpoint, leaves the model in
    eval mode and re-raises as ``TrainingInterrupted`` (its ``result`` has the steps done).
    """
    _check_arguments(model, steps, epochs, batch_size, lr, schedule, ema_decay, clip_grad,
                     validation, val_every, patience, metric, log_every)
    stream = BatchStream(data, batch_size, rng)
    total = steps if steps is not None else epochs * stream.batches_per_epoch
    val_every = val_every or min(stream.batches_per_epoch, total)
    given, optimizers = _optimizers(model, optimizer, lr)
    schedulers = {} if schedule is None else {n: schedule(o) for n, o in optimizers.items()}
    needs = ("step", "state_dict", "load_state_dict") if checkpoint or resume else ("step",)
    for sched in schedulers.values():
        if not all(callable(getattr(sched, m, None)) for m in needs):
            raise TypeError(f"train: schedule(optimizer) must return a scheduler with "
                            f"{', '.join(needs)}; got {type(sched).__name__}")
    run = _Run(optimizers, schedulers, EMA(model, ema_decay) if ema_decay is not None else None,
               stream)
    if resume is not None:
        _restore(resume, model, run, total)
    hook = callable(getattr(model, "train_step", None))
    params = list(model.parameters())
    progress = _Progress(out or sys.stdout, total, log_every, verbose, run.step)
    model.train()
    try:
        with _deferred_interrupt() as interrupted:
            while run.step < total and not run.stopped:
                step = run.step + 1
                batch = next(stream)
                losses = _hook_step(model, batch, step, given) if hook else \
                    _default_step(model, batch, step, optimizers, params, clip_grad)
                for sched in schedulers.values():
                    sched.step()
                if run.ema is not None:
                    if ema_warmup:
                        run.ema.decay = min(ema_decay, (1 + step) / (10 + step))
                    run.ema.update(model)
                run.record(losses)
                run.step = step
                if validation is not None and (step % val_every == 0 or step == total):
                    value = _validate(model, validation, metric, batch_size)
                    run.val_losses.append((step, value))
                    if run.best is None or value < run.best[1]:
                        run.best, run.bad = (step, value, model.state_dict()), 0
                    else:
                        run.bad += 1
                        run.stopped = patience is not None and run.bad >= patience
                progress.update(step, run.history, run.val_losses, force=run.stopped)
                if checkpoint is not None and (step % log_every == 0 or step == total
                                               or run.stopped):
                    _write_checkpoint(checkpoint, model, run)
                if interrupted:
                    raise KeyboardInterrupt
    except KeyboardInterrupt as err:
        progress.close()
        if checkpoint is not None and run.step > 0:
            _write_checkpoint(checkpoint, model, run)
        raise TrainingInterrupted(run.result()) from err
    finally:
        model.eval()
    if patience is not None and run.best is not None:
        model.load_state_dict(run.best[2])
    return run.result()
