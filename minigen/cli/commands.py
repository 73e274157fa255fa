"""The subcommands that work on one model or one data set: fit, sample, score, compare, info.

Every model comes from the registry (``minigen.distribution.models()``): ``cls.for_data(X,
**options)`` builds it for the data, ``fit`` trains it, ``save_model`` / ``load_model`` carry it
between commands. Nothing here knows one model from another. Every argument is checked before
any work starts (an output path before a model is trained), and every error is a one-line
``UsageError`` that quotes user data through ``_checks.excerpt``.
"""
import inspect
import json
import os
import shlex
import sys
import time

import numpy as np

from .. import _checks, metrics
from ..backend import manual_seed
from ..backend import as_rng
from ..data import sources
from ..data.text import split_text
from ..data.tokenizers import CharTokenizer
from ..distributed import world
from ..distribution import NoDensityError, models
from ..io import load_model, save_model
from ..train import TrainingInterrupted
from . import diagnose, figures, tables
from .options import UsageError, parse as parse_options, unknown_option

__all__ = ["UsageError", "parse_options", "fit", "sample", "score", "compare", "info"]


# --- arguments ---------------------------------------------------------------------------------
def checked(check, value, name, where, **bounds):
    """``check(value, name, where, **bounds)`` from ``_checks``, its ValueError as a UsageError."""
    try:
        return check(value, name, where, **bounds)
    except ValueError as err:
        raise UsageError(str(err)) from None


def check_output(path, where):
    """A file path whose folder exists and which is not itself a folder, checked before any
    work (so a long fit never ends in an unwritable path)."""
    if os.path.isdir(path):
        raise UsageError(f"{where}: -o {excerpt_path(path)} is a folder; give a file name in "
                         "it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise UsageError(f"{where}: -o {excerpt_path(path)}: the folder {excerpt_path(folder)} "
                         "does not exist")
    return path


def excerpt_path(path):
    return _checks.excerpt(os.fspath(path), limit=120)


# --- models and data ---------------------------------------------------------------------------
def model_class(name):
    registered = models()
    if name not in registered:
        raise UsageError(f"unknown model {_checks.excerpt(name)}; expected one of "
                         f"{', '.join(sorted(registered))}")
    return registered[name]


def model_kind(cls):
    """'text' for a language model, 'array' for a model of numeric rows."""
    return getattr(cls, "data_kind", "array")


def distributions(kind):
    """Registered names of the models that fit data of ``kind`` ('array' or 'text')."""
    return [name for name, cls in sorted(models().items())
            if callable(getattr(cls, "sample", None)) and model_kind(cls) == kind]


def check_kind(label, cls, data, spec):
    """A UsageError unless ``data`` is the kind (text or numbers) that ``cls`` models."""
    kind = "text" if sources.is_text(data) else "array"
    if kind == model_kind(cls):
        return
    what = {"text": "text", "array": "numeric rows"}
    others = ", ".join(n for n in distributions(kind)
                       if not getattr(models()[n], "needs_labels", False))
    raise UsageError(f"{label}: {cls.__name__} models {what[model_kind(cls)]}, but "
                     f"{excerpt_path(spec)} holds {what[kind]}; models of {what[kind]}: {others}")


def build(name, data, options=None):
    """``cls.for_data(data, **options)`` (the constructor alone for a model without one)."""
    cls, options = model_class(name), options or {}
    for_data = getattr(cls, "for_data", None)
    try:
        return cls(**options) if for_data is None else for_data(data, **options)
    except (TypeError, ValueError) as err:
        raise unknown_option(cls, name, err) or UsageError(f"{name}: {err}") from None


def budget(model, steps=None, epochs=None):
    """The fit keywords for the budget: steps/epochs for a trained model (its
    ``default_steps`` when neither is given); nothing for a closed-form or EM fit."""
    default = getattr(type(model), "default_steps", None)
    if default is None:
        if steps is not None or epochs is not None:
            raise UsageError(f"{type(model).__name__} is not trained by steps; drop --steps / "
                             "--epochs")
        return {}
    if steps is None and epochs is None:
        steps = default
    return {"steps": steps} if epochs is None else {"epochs": epochs}


def with_alphabet(name, options, corpus):
    """A character-level model compared on held-out text needs the alphabet of all of it (the
    characters only, no statistics): a CharTokenizer of ``corpus`` unless one is given."""
    options = dict(options or {})
    if sources.is_text(corpus) and "tokenizer" in model_class(name)._param_names():
        text = corpus if isinstance(corpus, str) else "\n".join(corpus)
        options.setdefault("tokenizer", CharTokenizer.train(text))
    return options


def fit_model(name, data, options=None, steps=None, epochs=None, quiet=False, rng=0,
              labels=None, **fit_options):
    """Build ``name`` for the data, fit it (with ``labels`` when it needs them, and
    ``fit_options`` such as lr or batch_size); (model, seconds). ``rng`` (an int) seeds minigen's
    default generator first, so initial weights repeat too."""
    manual_seed(rng)
    model = build(name, data, options)
    extra = budget(model, steps, epochs)
    if extra:
        extra.update(rng=rng, verbose=not quiet, **fit_options)
    targets = (labels,) if getattr(model, "needs_labels", False) else ()
    start = time.perf_counter()
    try:
        model.fit(data, *targets, **extra)
    except (TypeError, ValueError) as err:        # the model's own clear message, as one line
        raise UsageError(f"{name}: {err}") from None
    return model, time.perf_counter() - start


def labels_for(name, spec, split=None):
    """Class labels for a model that needs them (None otherwise), or a UsageError."""
    if not getattr(model_class(name), "needs_labels", False):
        return None
    try:
        return sources.load_labels(spec, split)
    except ValueError as err:
        raise UsageError(f"{name}: {err}") from None


def load_data(spec, **kwargs):
    try:
        return sources.load(spec, **kwargs)
    except ValueError as err:
        raise UsageError(str(err)) from None


def describe(data, spec, split):
    """What a command used: '<split> of <spec> (<size>)', or all of a file."""
    size = (f"{len(data)} characters" if isinstance(data, str) else
            f"{len(data)} documents" if isinstance(data, list) else f"{len(data)} rows")
    if not sources.has_split(spec):
        return f"all of {excerpt_path(spec)} ({size})"
    return f"the {'held-out' if split == 'test' else 'training'} split of {spec} ({size})"


def split(data, held_out=0.2, rng=0):
    """(train, test): a text stream split into head and tail, documents and arrays by a
    seeded permutation."""
    if isinstance(data, str):
        return split_text(data, held_out)
    order = as_rng(rng, where="split").permutation(len(data))
    n_test = max(1, int(round(held_out * len(data))))
    if isinstance(data, list):
        return [data[i] for i in order[n_test:]], [data[i] for i in order[:n_test]]
    return data[order[n_test:]], data[order[:n_test]]


def held_out_score(model, data, rng=0):
    """mean score_samples(data); a stochastic bound (one with an ``rng``) is drawn with
    ``rng``, so the same checkpoint and data always give the same number."""
    seeded = "rng" in inspect.signature(model.score_samples).parameters
    return model.score(data, **({"rng": rng} if seeded else {}))


def _load(path):
    try:
        return load_model(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(str(err)) from None


# --- fit / sample / score ----------------------------------------------------------------------
def default_checkpoint(output):
    """Where ``minigen fit -o OUTPUT`` keeps its training checkpoint when no --checkpoint is
    given: beside the output, ``model.npz`` -> ``model.ckpt.npz``."""
    root, ext = os.path.splitext(output)
    return (root if ext.lower() == ".npz" else output) + ".ckpt.npz"


def resume_command(argv, path, ranks):
    """The command line that continues an interrupted ``minigen fit``: ``argv`` with --resume
    PATH in place of any --resume it had (under ``mpiexec -n ranks`` when it ran on more than
    one; a checkpoint resumes on any number)."""
    words, i = [], 0
    while i < len(argv):
        if argv[i] == "--resume":
            i += 2
            continue
        if not argv[i].startswith("--resume="):
            words.append(argv[i])
        i += 1
    launcher = ["mpiexec", "-n", str(ranks)] if ranks > 1 else []
    return shlex.join(launcher + ["minigen"] + words + ["--resume", path])


def interrupted(stop, argv, total):
    """The line that says where an interrupted fit stopped (``total``: its budget in steps, or
    None) and how to go on from there."""
    steps, of = stop.result.steps, f" of {total}" if total else ""
    head = f"interrupted inside step {steps + 1}{of}" if stop.inside_step else \
        f"interrupted after step {steps}{of}"
    if stop.checkpoint is None:
        return f"{head}; no checkpoint was written yet, nothing to resume from"
    path, saved = os.fspath(stop.checkpoint[0]), stop.checkpoint[1]
    kept = f"saved the checkpoint {path}" if saved == steps and not stop.inside_step else \
        f"the last good checkpoint, {path}, holds step {saved}"
    return f"{head}; {kept}; resume with: {resume_command(argv, path, world()[1])}"


def fit(args, options):
    where = "fit"
    seed = checked(_checks.integer, args.seed, "--seed", where, low=0)
    steps = checked(_checks.positive_int, args.steps, "--steps", where, optional=True)
    epochs = checked(_checks.positive_int, args.epochs, "--epochs", where, optional=True)
    check_output(args.output, where)
    runs = {key: getattr(args, key) for key in ("checkpoint", "resume")
            if getattr(args, key, None) is not None}
    if "resume" in runs and not os.path.isfile(runs["resume"]):
        raise UsageError(f"{where}: --resume {excerpt_path(runs['resume'])} is not a file")
    default_steps = getattr(model_class(args.model), "default_steps", None)
    trained = default_steps is not None
    own_checkpoint = trained and "checkpoint" not in runs
    if own_checkpoint:
        runs["checkpoint"] = default_checkpoint(args.output)
    if "checkpoint" in runs:
        check_output(runs["checkpoint"], where)
    data = load_data(args.data, split="train")
    check_kind(args.model, model_class(args.model), data, args.data)
    rank, size = world()
    try:
        model, seconds = fit_model(args.model, data, options, steps, epochs, args.quiet, seed,
                                   labels_for(args.model, args.data, "train"), **runs)
    except TrainingInterrupted as stop:
        if rank == 0:
            total = None if epochs is not None else steps or default_steps
            print(f"minigen: {interrupted(stop, args.argv, total)}", file=sys.stderr,
                  flush=True)
        return 130
    if rank == 0:
        save_model(model, args.output)
        if own_checkpoint and os.path.exists(runs["checkpoint"]):
            os.remove(runs["checkpoint"])             # the fit is complete: nothing to resume
        ranks = f" on {size} ranks" if size > 1 else ""
        print(f"fitted {args.model} on {describe(data, args.data, 'train')}{ranks} in "
              f"{seconds:.1f} s; saved {args.output}")
    return 0


def sample(args, options):
    where = "sample"
    seed = checked(_checks.integer, args.seed, "--seed", where, low=0)
    n = checked(_checks.integer, args.n, "-n", where, low=0)
    out, ext = args.output, os.path.splitext(args.output)[1].lower()
    if ext not in (".npy", ".txt", ".png"):
        raise UsageError(f"{where}: -o {excerpt_path(out)}: unsupported output type "
                         f"{_checks.excerpt(ext)}; expected .npy, .png or .txt")
    check_output(out, where)
    if ext == ".png":
        from .. import plot
        if not plot.available():
            raise UsageError(f"{where}: a .png needs matplotlib: pip install 'minigen[plot]'")
    model = _load(args.model_file)
    if not callable(getattr(model, "sample", None)):
        raise UsageError(f"{where}: {type(model).__name__} draws no samples")
    samples = model.sample(n, rng=seed)
    if ext == ".npy":
        np.save(out, np.asarray(samples))
    elif ext == ".txt":
        with open(out, "w", encoding="utf-8") as f:
            f.write("\n".join(samples) if isinstance(samples, list) else
                    "\n".join(" ".join(f"{v:.6g}" for v in row) for row in np.asarray(samples)))
    else:
        figures.save(plot, [("samples", samples)], out,
                     f"{n} samples from {os.path.basename(args.model_file)}")
    print(f"wrote {n} samples to {out}")
    return 0


def score(args, options):
    where = "score"
    seed = checked(_checks.integer, args.seed, "--seed", where, low=0)
    model = _load(args.model_file)
    if not callable(getattr(model, "score_samples", None)):
        raise UsageError(f"{where}: {type(model).__name__} has no log-likelihood to score")
    data = load_data(args.data, split="test")
    check_kind(excerpt_path(args.model_file), type(model), data, args.data)
    try:
        value = held_out_score(model, data, seed)
    except NoDensityError as err:
        print(f"{args.model_file}: {err}")
        return 1
    except (TypeError, ValueError) as err:          # e.g. data of the wrong width or alphabet
        raise UsageError(f"{args.model_file}: {err}") from None
    what = describe(data, args.data, "test")
    note = "" if sources.has_split(args.data) else " (a file has no held-out split: score one fit never saw)"
    print(f"mean log-likelihood (or the model's stated bound) of {what}{note}: "
          f"{value:.4f} nats per sample")
    return 0


# --- compare --------------------------------------------------------------------------------------
def evaluate(model, test, rng=0):
    """Held-out score (None without a density), sliced Wasserstein and MMD of samples."""
    if sources.is_text(test):
        scores = model.evaluate(test)
        return {"log_p": -scores["loss"], "bits_per_char": scores.get("bits_per_char"),
                "perplexity": scores["perplexity"], "sw": None, "mmd": None,
                "samples": model.sample(3, rng=rng, max_new_tokens=200)}
    try:
        ll = held_out_score(model, test, rng)
    except NoDensityError:
        ll = None
    S = np.asarray(model.sample(len(test), rng=rng), dtype=np.float64).reshape(len(test), -1)
    return {"log_p": ll, "sw": metrics.sliced_wasserstein(S, test, rng=rng),
            "mmd": metrics.mmd(S, test), "samples": S}


def failed(kind, err):
    """The result of a fit that stopped on a non-finite value: no scores, flagged."""
    empty = {"log_p": None, "bits_per_char": None, "perplexity": None} if kind == "text" else \
        {"log_p": None, "sw": None, "mmd": None}
    return dict(empty, samples=None, flags=[("model", f"did not converge: {err}")])


def compare(args, options):
    seed = checked(_checks.integer, args.seed, "--seed", "compare", low=0)
    steps = checked(_checks.positive_int, args.steps, "--steps", "compare",
                    optional=True)
    data = load_data(args.data)
    kind = "text" if sources.is_text(data) else "array"
    labelled = kind == "array" and args.data in sources.IMAGE_SETS
    names = args.models or [n for n in distributions(kind)
                            if labelled or not getattr(model_class(n), "needs_labels", False)]
    for name in names:
        check_kind(name, model_class(name), data, args.data)
    train, test = split(data)
    y_train = split(sources.load_labels(args.data))[0] if labelled else None
    floor = None if kind == "text" else diagnose.noise_floor(train, test, rng=seed)
    rows = []
    for name in names:
        if y_train is None:
            labels_for(name, args.data)          # a clear error for a supervised model
        trained = getattr(model_class(name), "default_steps", None) is not None
        start = time.perf_counter()
        try:
            model, seconds = fit_model(name, train, with_alphabet(name, {}, data),
                                       steps=steps if trained else None, quiet=args.quiet,
                                       rng=seed, labels=y_train)
        except FloatingPointError as err:        # diverged: a row that says so, not a crash
            rows.append((name, failed(kind, err), time.perf_counter() - start))
            print(f"  {name}: stopped after {rows[-1][2]:.1f} s: {err}", flush=True)
            continue
        result = evaluate(model, test, rng=seed)
        result["flags"] = diagnose.flags(result, model, floor)
        rows.append((name, result, seconds))
        print(f"  {name}: fitted in {seconds:.1f} s", flush=True)
    text = tables.table(rows, floor)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    md = os.path.join(args.out, "compare.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write(f"# minigen compare on {args.data}\n\n{text}\n")
    from .. import plot
    figure = None
    if plot.available():
        panels = [("held-out data", test)] + [(name, r["samples"]) for name, r, _ in rows
                                               if r["samples"] is not None]
        figure = figures.save(plot, panels, os.path.join(args.out, "compare.png"),
                              f"compare on {args.data}", per_panel=30)
    print(f"wrote {md}" + (f" and {figure}" if figure else
                           " (pip install 'minigen[plot]' for the figure)"))
    return 0


# --- info -------------------------------------------------------------------------------------------
def info(args, options):
    import minigen
    from .. import backend, kernels
    print(f"minigen {minigen.__version__}, numpy {np.__version__}")
    for module in ("numba", "numba.cuda", "cupy", "scipy", "matplotlib", "torch", "dask"):
        try:
            mod = __import__(module, fromlist=["_"])
            version = getattr(mod, "__version__", "installed")
        except Exception:
            version = "not installed"
        print(f"  {module}: {version}")
    gpu = backend.cupy() is not None
    print(f"  GPU through CuPy: {'usable' if gpu else 'not available'}")
    print("kernels (which implementation runs for NumPy / CuPy arrays, and why):")
    for name, value in kernels.info().items():
        print(f"  {name}: numpy -> {value['numpy']}, cupy -> {value['cupy']} ({value['reason']})")
    if args.json:
        print(json.dumps(kernels.info()))
    return 0
