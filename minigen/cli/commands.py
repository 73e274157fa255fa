"""The subcommands that work on one model or one data set: fit, sample, score, compare, info.

Every model comes from the registry (``minigen.distribution.models()``): ``cls.for_data(X,
**options)`` builds it for the data, ``fit`` trains it, ``save_model`` / ``load_model`` carry it
between commands. Nothing here knows one model from another.
"""
import ast
import inspect
import json
import os
import time

import numpy as np

from .. import metrics
from ..autograd import manual_seed
from ..backend import as_rng
from ..data import sources
from ..data.text import split_text
from ..data.tokenizers import CharTokenizer
from ..distribution import NoDensityError, models
from ..io import load_model, save_model


class UsageError(Exception):
    """A bad command line: printed as one line, exit status 2."""


# --- models and options ----------------------------------------------------------------------
def model_class(name):
    registered = models()
    if name not in registered:
        raise UsageError(f"unknown model {name!r}; expected one of {', '.join(sorted(registered))}")
    return registered[name]


def distributions(kind):
    """Registered names of the models that fit data of ``kind`` ('array' or 'text')."""
    return [name for name, cls in sorted(models().items())
            if callable(getattr(cls, "sample", None)) and getattr(cls, "data_kind", "array") == kind]


def parse_options(words, name):
    """``--key value`` / ``--key=value`` pairs -> {key: value}; values parsed as Python
    literals where they are (``12``, ``0.5``, ``(16, 4)``), else kept as strings. The model's
    ``for_data`` (and its constructor) reject what they do not take."""
    options, i = {}, 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--") or len(word) == 2:
            raise UsageError(f"{name}: unexpected argument {word!r}; model options look like "
                             "--key value")
        key, eq, value = word[2:].partition("=")
        if not eq:
            if i + 1 >= len(words):
                raise UsageError(f"{name}: option --{key} needs a value")
            value, i = words[i + 1], i + 1
        try:
            options[key.replace("-", "_")] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            options[key.replace("-", "_")] = value
        i += 1
    return options


def build(name, data, options=None):
    cls = model_class(name)
    try:
        return cls.for_data(data, **(options or {}))
    except (TypeError, ValueError) as err:
        raise UsageError(f"{name}: {err}") from None


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
    except ValueError as err:        # the model's own clear message, as one line
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


def split(data, held_out=0.2, rng=0):
    """(train, test): a text stream split into head and tail, documents and arrays by a
    seeded permutation."""
    if isinstance(data, str):
        return split_text(data, held_out)
    order = as_rng(rng).permutation(len(data))
    n_test = max(1, int(round(held_out * len(data))))
    if isinstance(data, list):
        return [data[i] for i in order[n_test:]], [data[i] for i in order[:n_test]]
    return data[order[n_test:]], data[order[:n_test]]


def held_out_score(model, data, rng=0):
    """mean score_samples(data); a stochastic bound (one with an ``rng``) is drawn with
    ``rng``, so the same checkpoint and data always give the same number."""
    seeded = "rng" in inspect.signature(model.score_samples).parameters
    return model.score(data, **({"rng": rng} if seeded else {}))


# --- fit / sample / score ----------------------------------------------------------------------
def fit(args, options):
    data = load_data(args.data)
    model, seconds = fit_model(args.model, data, options, args.steps, args.epochs, args.quiet,
                               args.seed, labels_for(args.model, args.data))
    save_model(model, args.output)
    print(f"fitted {args.model} on {args.data} in {seconds:.1f} s; saved {args.output}")
    return 0


def _load(path):
    try:
        return load_model(path)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UsageError(str(err)) from None


def sample(args, options):
    model = _load(args.model_file)
    samples = model.sample(args.n, rng=args.seed)
    out, ext = args.output, os.path.splitext(args.output)[1].lower()
    if ext == ".npy":
        np.save(out, np.asarray(samples))
    elif ext == ".txt":
        with open(out, "w", encoding="utf-8") as f:
            f.write("\n".join(samples) if isinstance(samples, list) else
                    "\n".join(" ".join(f"{v:.6g}" for v in row) for row in np.asarray(samples)))
    elif ext == ".png":
        from .. import plot
        save_figure(plot, samples, None, out, f"{args.n} samples from {args.model_file}")
    else:
        raise UsageError(f"{out}: unsupported output type {ext!r}; expected .npy, .png or .txt")
    print(f"wrote {args.n} samples to {out}")
    return 0


def score(args, options):
    model = _load(args.model_file)
    data = load_data(args.data)
    try:
        value = held_out_score(model, data, args.seed)
    except NoDensityError as err:
        print(f"{args.model_file}: {err}")
        return 1
    except ValueError as err:                       # e.g. data of the wrong shape or alphabet
        raise UsageError(f"{args.model_file}: {err}") from None
    print(f"mean held-out log-likelihood (or the model's stated bound) of {args.data}: "
          f"{value:.4f} nats per sample")
    return 0


# --- compare --------------------------------------------------------------------------------------
def evaluate(model, train, test, rng=0):
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


def _cell(value, fmt):
    return "-" if value is None or not np.isfinite(value) else format(value, fmt)


def table(rows, reference=None):
    """Rows of (name, result, seconds) as a Markdown table."""
    if rows and "bits_per_char" in rows[0][1]:
        return text_table(rows)
    lines = ["| model | held-out log p (or bound) | sliced W | MMD | fit s |",
             "|---|---:|---:|---:|---:|"]
    for name, r, seconds in rows:
        lines.append(f"| {name} | {_cell(r['log_p'], '.3f')} | {_cell(r['sw'], '.4f')} | "
                     f"{_cell(r['mmd'], '.4f')} | {seconds:.1f} |")
    if reference is not None:
        lines.append(f"| (held-out data itself) | - | {_cell(reference['sw'], '.4f')} | "
                     f"{_cell(reference['mmd'], '.4f')} | - |")
    return "\n".join(lines)


def text_table(rows):
    """Language models: held-out nats per token, bits per character, perplexity."""
    lines = ["| model | held-out nats per token | bits per character | perplexity | fit s |",
             "|---|---:|---:|---:|---:|"]
    for name, r, seconds in rows:
        lines.append(f"| {name} | {-r['log_p']:.3f} | {_cell(r['bits_per_char'], '.3f')} | "
                     f"{r['perplexity']:.2f} | {seconds:.1f} |")
    return "\n".join(lines)


def save_figure(plot, samples, data, path, title):
    """Samples (and the data) drawn as the data's shape suggests: 2-D points as scatter
    plots, 64-value rows as 8x8 image grids, 1-D values as histograms, text as an excerpt."""
    if isinstance(samples, (list, str)):
        return plot.save(plot.text_panel(samples if isinstance(samples, str) else
                                         "\n\n".join(samples), title), path)
    S = np.asarray(samples, dtype=np.float64).reshape(len(samples), -1)
    panels = ([] if data is None else [("data", data)]) + [("samples", S)]
    if S.shape[1] == 64:
        fig = plot.image_panels([(k, v[:60]) for k, v in panels], title=title)
    elif S.shape[1] == 1:
        fig = plot.histograms(panels, title=title)
    else:
        fig = plot.scatter_panels([(k, v[:, :2]) for k, v in panels], title=title)
    return plot.save(fig, path)


def compare(args, options):
    data = load_data(args.data)
    kind = "text" if sources.is_text(data) else "array"
    labelled = kind == "array" and args.data in sources.IMAGE_SETS
    names = args.models or [n for n in distributions(kind)
                            if labelled or not getattr(model_class(n), "needs_labels", False)]
    for name in names:
        model_class(name)
    train, test = split(data)
    y_train = split(sources.load_labels(args.data))[0] if labelled else None
    rows, figures = [], []
    for name in names:
        if y_train is None:
            labels_for(name, args.data)          # a clear error for a supervised model
        trained = getattr(model_class(name), "default_steps", None) is not None
        model, seconds = fit_model(name, train, with_alphabet(name, {}, data),
                                   steps=args.steps if trained else None, quiet=args.quiet,
                                   rng=args.seed, labels=y_train)
        result = evaluate(model, train, test, rng=args.seed)
        rows.append((name, result, seconds))
        print(f"  {name}: fitted in {seconds:.1f} s", flush=True)
    reference = None if kind == "text" else {
        "sw": metrics.sliced_wasserstein(train[:len(test)], test, rng=args.seed),
        "mmd": metrics.mmd(train[:len(test)], test)}
    text = table(rows, reference)
    print(text)
    os.makedirs(args.out, exist_ok=True)
    md = os.path.join(args.out, "compare.md")
    with open(md, "w", encoding="utf-8") as f:
        f.write(f"# minigen compare on {args.data}\n\n{text}\n")
    from .. import plot
    if plot.available():
        figures.append(_compare_figure(plot, rows, test, os.path.join(args.out, "compare.png")))
    print(f"wrote {md}" + (f" and {figures[0]}" if figures else
                           " (pip install 'minigen[plot]' for the figure)"))
    return 0


def _compare_figure(plot, rows, test, path):
    panels = [("held-out data", test)] + [(name, r["samples"]) for name, r, _ in rows]
    if sources.is_text(test):
        return plot.save(plot.text_panel("\n\n".join(f"[{n}] {s[0]}" for n, s in panels[1:])),
                         path)
    first = np.asarray(test)
    if first.shape[1] == 64:
        return plot.save(plot.image_panels([(n, np.asarray(s)[:30]) for n, s in panels],
                                           cols=6), path)
    if first.shape[1] == 1:
        return plot.save(plot.histograms(panels), path)
    return plot.save(plot.scatter_panels([(n, np.asarray(s)[:, :2]) for n, s in panels]), path)


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
