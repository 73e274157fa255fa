"""Training checkpoints: everything a run depends on, in one ``.npz`` written atomically
(``minigen.io.save``), so ``train(..., resume=path)`` continues exactly where the run stopped.

Members (flat names, arrays only; JSON travels as uint8 arrays, never pickle):

    model.<name>                   the model's state dict
    ema.<name>                     the state dict with the averaged parameters (with ema_decay)
    train.optimizer.<opt>          1 for each optimiser; optim.<opt>.<key> its state dict
    train.schedule.<opt>           1 for each schedule; sched.<opt>.<key> its state dict
    batches.order/pos/rng          the batch stream: epoch permutation, offset, generator
    rng.model.<module.attr>        every NumPy Generator the model holds (JSON state)
    rng.global                     minigen's global generator (JSON state)
    history.<loss>                 the per-step values of every named loss
    val.steps, val.values          the validations so far
    best.step, best.value          the best validation, its weights under best.model.<name>,
    best.validations_since         and how many validations came after it (for patience)
    train.step, train.stopped, train.seconds

A checkpoint is written only at a step boundary, when all of these describe the same step.
"""
import os
from collections import namedtuple

import numpy as np

from .. import backend, io
from .._checks import excerpt, integer


Best = namedtuple("Best", "step value weights")
Best.__doc__ = "The best validation so far: its step, its value and the model's state dict then."


def generators(model):
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


def _scalar(arrays, key, kind, where):
    """The 0-d member ``key`` as a Python number of ``kind`` ("i" int, "f" float, "b" bool)."""
    if key not in arrays:
        raise ValueError(f"{where} lacks {key}")
    value = arrays[key]
    kinds = {"i": "iu", "f": "iuf", "b": "bi"}[kind]
    if value.ndim != 0 or value.dtype.kind not in kinds:
        raise ValueError(f"{where}: {key} must be a single {'int' if kind == 'i' else 'number'}"
                         f", got dtype {value.dtype} shape {value.shape}")
    return {"i": int, "f": float, "b": bool}[kind](value.item())


class Checkpoint:
    """A training checkpoint read by ``load_checkpoint``: ``step``, ``model`` (the model's
    state dict: ``model.load_state_dict(ckpt.model)``), ``ema`` (a full state dict with the
    averaged parameters, loadable the same way, or None), ``optimizers`` / ``schedulers``
    (name -> state dict), ``history`` (name -> per-step values) and ``arrays`` (every member)."""

    def __init__(self, arrays, where):
        self.arrays = arrays
        self.step = integer(_scalar(arrays, "train.step", "i", where), "train.step", where,
                            low=0)
        self.model = _section(arrays, "model.")
        self.ema = _section(arrays, "ema.") or None
        names = [k[len("train.optimizer."):] for k in arrays if k.startswith("train.optimizer.")]
        self.optimizers = {n: _section(arrays, f"optim.{n}.") for n in names}
        self.schedulers = {n: _section(arrays, f"sched.{n}.") for n in names
                           if f"train.schedule.{n}" in arrays}
        self.history = _section(arrays, "history.")


def load_checkpoint(path):
    """Read a checkpoint written by ``train(..., checkpoint=path)`` (see ``Checkpoint``)."""
    arrays = io.load(path)
    where = f"load_checkpoint: {excerpt(os.fspath(path), 200)}"
    if "train.step" not in arrays:
        raise ValueError(f"{where} is a minigen file but not a training checkpoint (no "
                         "train.step)")
    return Checkpoint(arrays, where)


def check_destination(path, where):
    """Fail before training when ``path`` cannot receive a checkpoint: a folder, or a file in
    a folder that does not exist."""
    try:
        path = os.fspath(path)
    except TypeError:
        raise TypeError(f"{where}: checkpoint must be a path, got {type(path).__name__}") \
            from None
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ValueError(f"{where}: checkpoint={excerpt(path, 200)} is a folder; give a file "
                         "path such as run.npz")
    if not os.path.isdir(folder):
        raise ValueError(f"{where}: checkpoint={excerpt(path, 200)}: the folder "
                         f"{excerpt(folder, 200)} does not exist")


def write_checkpoint(path, model, run):
    """Write the run (a ``RunState`` at a step boundary) and the model to ``path``."""
    arrays = _prefixed("model.", model.state_dict())
    if run.ema is not None:
        full = model.state_dict()
        full.update(run.ema.state_dict())       # averaged parameters, current buffers
        arrays.update(_prefixed("ema.", full))
    for name, opt in run.optimizers.items():
        arrays[f"train.optimizer.{name}"] = np.array(1)
        arrays.update(_prefixed(f"optim.{name}.", opt.state_dict()))
    for name, sched in run.schedulers.items():
        arrays[f"train.schedule.{name}"] = np.array(1)
        arrays.update(_prefixed(f"sched.{name}.", sched.state_dict()))
    arrays.update(_prefixed("batches.", run.stream.state_dict()))
    for name, gen in generators(model):
        arrays[f"rng.model.{name}"] = io.json_array(gen.bit_generator.state)
    arrays["rng.global"] = io.json_array(backend.default_rng("cpu").bit_generator.state)
    arrays.update(_prefixed("history.", {k: np.asarray(v) for k, v in run.history.items()}))
    arrays["val.steps"] = np.array([s for s, _ in run.val_losses], dtype=np.int64)
    arrays["val.values"] = np.array([v for _, v in run.val_losses], dtype=np.float64)
    if run.best is not None:
        arrays["best.step"], arrays["best.value"] = np.array(run.best.step), np.array(
            run.best.value)
        arrays["best.validations_since"] = np.array(run.validations_since_best)
        arrays.update(_prefixed("best.model.", run.best.weights))
    arrays["train.step"] = np.array(run.step)
    arrays["train.stopped"] = np.array(run.stopped)
    arrays["train.seconds"] = np.array(run.seconds())
    io.save(arrays, path)


def _generator_state(generator, raw):
    """The JSON state in ``raw``, checked by loading it into a fresh bit generator of
    ``generator``'s kind (so a bad state fails before anything is restored)."""
    state = io.from_json_array(raw)
    type(generator.bit_generator)().state = state
    return state


def _parse_run(ckpt, model, run, where):
    """Every piece of the run's state in the checkpoint, checked and converted (nothing is
    assigned): (generator, state) pairs, history, validations, (Best, validations since) or
    None, stopped, seconds."""
    arrays = ckpt.arrays
    states = [(gen, _generator_state(gen, arrays[f"rng.model.{name}"]))
              for name, gen in generators(model) if f"rng.model.{name}" in arrays]
    states.append((run.stream.rng, _generator_state(run.stream.rng, arrays["batches.rng"])))
    global_gen = backend.default_rng("cpu")
    states.append((global_gen, _generator_state(global_gen, arrays["rng.global"])))
    history = {}
    for name, values in ckpt.history.items():
        if values.ndim != 1 or values.dtype.kind not in "iuf" or len(values) != ckpt.step:
            raise ValueError(f"history.{name} must hold {ckpt.step} numbers, got dtype "
                             f"{values.dtype} shape {values.shape}")
        history[name] = values.astype(np.float64).tolist()
    val_steps, val_values = arrays["val.steps"], arrays["val.values"]
    if val_steps.shape != val_values.shape or val_steps.ndim != 1:
        raise ValueError(f"val.steps and val.values must be two 1-D arrays of one length, got "
                         f"shapes {val_steps.shape} and {val_values.shape}")
    val_losses = list(zip(val_steps.astype(np.int64).tolist(),
                          val_values.astype(np.float64).tolist()))
    best = None
    if "best.step" in arrays:
        best = (Best(_scalar(arrays, "best.step", "i", where),
                     _scalar(arrays, "best.value", "f", where), _section(arrays, "best.model.")),
                _scalar(arrays, "best.validations_since", "i", where))
    stopped = _scalar(arrays, "train.stopped", "b", where)
    seconds = _scalar(arrays, "train.seconds", "f", where)
    return states, history, val_losses, best, stopped, seconds


def restore(path, model, run, total):
    """Continue from the checkpoint at ``path``: the budget, the optimiser, schedule and EMA
    set and the model's weights are checked, and every piece parsed, before anything is
    assigned; then the optimisers, schedules, EMA, batch stream, model and generators are
    loaded and ``run`` takes the saved step, history and validations."""
    where = f"train: resume={excerpt(os.fspath(path), 200)}"
    ckpt = load_checkpoint(path)
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
    own = model.state_dict()
    differ = sorted(set(own) ^ set(ckpt.model)) or [
        k for k, v in own.items() if np.shape(ckpt.model[k]) != np.shape(v)]
    if differ:
        raise ValueError(f"{where} holds the weights of another model (they differ in "
                         f"{excerpt(differ)}); resume from a checkpoint of this model")
    try:
        states, history, val_losses, best, stopped, seconds = _parse_run(ckpt, model, run,
                                                                         where)
        for name, opt in run.optimizers.items():
            opt.load_state_dict(ckpt.optimizers[name])
        for name, sched in run.schedulers.items():
            sched.load_state_dict(ckpt.schedulers[name])
        if run.ema is not None:
            run.ema.load_state_dict({k: ckpt.ema[k] for k in run.ema.shadow})
        run.stream.load_state_dict(_section(ckpt.arrays, "batches."))
        model.load_state_dict(ckpt.model)
    except (KeyError, ValueError, TypeError) as err:
        raise ValueError(f"{where} is not a usable checkpoint for this run: {err}") from None
    for gen, state in states:
        gen.bit_generator.state = state
    run.history, run.val_losses = history, val_losses
    if best is not None:
        run.best, run.validations_since_best = best
    run.step, run.stopped, run.seconds_before = ckpt.step, stopped, seconds
