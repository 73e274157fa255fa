"""``minigen demo``: the main job. Every family fitted briefly on built-in data, one comparison
table per data set, and a gallery (a figure per family and a self-contained report.html).

  * engine: an MLP classifier trained on the 8x8 digits (the autograd engine at work);
  * two moons: KDE, Gaussian mixture, DDPM and a GAN, scored on held-out points;
  * digits (pixels scaled to [0, 1]): PCA -> Gaussian mixture, the auto-encoder family, VAE and
    hierarchical VAE (on binarised digits, where their Bernoulli bound applies) and a conv GAN,
    each compared with held-out digits by sliced Wasserstein distance and MMD, and a DDPM on a
    short budget (examples/diffusion_toys.py trains it for minutes);
  * text: bigram, MLP and Transformer language models on Python's own documentation, each
    scored on held-out text during training.
Which models run, with which options and budgets, is the data below (registry names). Every
table row and figure title carries the model's budget in steps; report.html adds each deep
model's training curve and a few lines from each language model.
"""
import os
import sys
import time
from typing import NamedTuple, Optional, Tuple

import numpy as np

from .. import functional as F
from .. import metrics, nn
from ..autograd import no_grad
from ..creation import tensor
from ..data import load_digits, moons, sources
from ..optim import CosineWarmup
from ..train import train
from . import commands, diagnose, figures, report, tables


class Run(NamedTuple):
    """One model of the demo: its table label, registry name, options for ``for_data``, its
    training budget as (steps, quick steps) (None for a closed-form or EM fit), the options
    of ``fit``, and whether its held-out log-likelihood is computed (False where the bound
    costs more than the fit)."""
    label: str
    name: str
    options: dict = {}
    steps: Optional[Tuple[int, int]] = None
    fit_options: dict = {}
    scored: bool = True

    def title(self, quick):
        """The label with the budget: 'label, 1,500 steps' (the label alone for a closed-form
        or EM fit)."""
        steps = self.budget(quick)
        return self.label if steps is None else f"{self.label}, {steps:,} steps"

    def budget(self, quick):
        return None if self.steps is None else self.steps[1 if quick else 0]


def cosine_decay(total):
    """A ``fit`` schedule: the learning rate falls from lr to 0 over ``total`` steps along a
    cosine (Loshchilov & Hutter 2017), so the last weights are not those of a noisy constant-lr
    walk (the quick budget stops early in the decay)."""
    return lambda optimizer: CosineWarmup(optimizer, 0, total)


MOONS = [
    Run("KDE (Scott)", "kde"),
    Run("KDE (leave-one-out CV)", "kde", {"bandwidth": "cv"}),
    Run("GaussianMixture (12, full)", "gmm", {"n_components": 12, "random_state": 0}),
    Run("DDPM (TimeMLP 3x128, T=1000, v-prediction, lr decay)", "ddpm", {"prediction": "v"},
        steps=(8000, 400), fit_options={"lr": 3e-3, "schedule": cosine_decay(8000)}),
    # Adam 5e-4 for 3,000 steps: SW 0.049-0.060 over seeds 0-4 with Numba's kernels and
    # 0.033-0.059 with NumPy's, where 1e-3 for 1,500 read 0.037-0.117 and 0.035-0.098 (one
    # seed in three near a collapse; benchmarks/README.md, "Loops that vectorise")
    Run("GAN (MLP 3x128)", "gan", steps=(3000, 400), fit_options={"lr": 5e-4}),
]
DIGITS = [
    Run("PCA(16) -> GaussianMixture(10)", "latent"),
    Run("AutoEncoder(z=8) + GMM on codes", "ae", {"z_dim": 8}, (600, 200)),
    Run("SupervisedAutoEncoder(z=8)", "supervised-ae", {"z_dim": 8, "n_classes": 10},
        (800, 200)),
    Run("SWAE(z=8, normal prior)", "swae", {"z_dim": 8}, (600, 200)),
    Run("GAN (conv 32-64)", "gan", {"image_shape": (1, 8, 8), "z_dim": 16,
                                    "channels": (32, 64)}, (1200, 100), {"lr": 1e-3}),
    Run("DDPM (TinyUNet 16 ch, 50-step DDIM)", "ddpm",
        {"image_shape": (1, 8, 8), "channels": 16, "sample_steps": 50}, (300, 30),
        {"lr": 3e-3, "batch_size": 64, "clip_grad": 1.0, "ema_decay": 0.995}, scored=False),
]
BINARY_DIGITS = [
    Run("VAE(z=16)", "vae", {"z_dim": 16}, (1500, 300)),
    Run("HierarchicalVAE(z=16, 4)", "hvae", steps=(1500, 300)),
]
TEXT = [
    Run("Bigram", "bigram", steps=(600, 200), fit_options={"lr": 3e-2}),
    Run("MLPLM (context 8)", "mlp-lm", steps=(800, 200)),
    Run("TransformerLM (2 layers, 64 wide, block 32)", "transformer-lm",
        {"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 32}, (900, 200),
        {"lr": 1e-2}),
]

TEXT_CHARS = (300_000, 100_000)    # characters of the pydoc corpus used (full, quick)
VALIDATION_CHARS = 4_000           # held-out characters scored during an LM's training ...
VALIDATIONS = 5                    # ... this many times


FLOOR_DRAWS = 10        # fresh draws of the moons behind the noise floor's mean and spread


def _mean_sd(values):
    """(mean, sample standard deviation): the floor cell's 'm +- s'."""
    return float(np.mean(values)), float(np.std(values, ddof=1))


def _section(title):
    print(f"\n== {title} " + "=" * max(0, 66 - len(title)), flush=True)


class Classifier(nn.Module):
    """An MLP classifier with the ``loss(batch)`` that the training loop expects."""

    def __init__(self, sizes, rng=None):
        super().__init__()
        self.net = nn.MLP(sizes, activation="relu", rng=rng)

    def forward(self, x):
        return self.net(x)

    def loss(self, batch):
        x, y = batch
        return F.cross_entropy(self(tensor(x)), y)

    def predict(self, x):
        with no_grad():
            return self(tensor(x)).data.argmax(-1)


def engine_demo(quick, log, rng=0):
    """Train an MLP classifier on the 8x8 digits; return (test accuracy, test size)."""
    Xtr, ytr = load_digits("train", dtype=np.float32)
    Xte, yte = load_digits("test", dtype=np.float32)
    clf = Classifier([64, 128, 128, 10], rng=rng)
    train(clf, (Xtr / 16.0, ytr), steps=300 if quick else 1500, batch_size=64, lr=1e-3,
          log_every=100 if quick else 500, rng=rng, out=log)
    return float((clf.predict(Xte / 16.0) == yte).mean()), len(yte)


def run_models(runs, train_data, test, labels, quick, quiet, rng=0, corpus=None,
               validation=None):
    """Fit each ``Run`` and evaluate it on ``test``. Returns rows (title, result, seconds),
    the fitted models by label and training curves (title, {loss name: per-step values},
    [(step, validation loss)]) for the models trained by steps. ``corpus``: all the text, for
    the character models' alphabet; ``validation``: held-out data scored ``VALIDATIONS``
    times during each trained model's fit."""
    rows, fitted, curves = [], {}, []
    for run in runs:
        steps, title = run.budget(quick), run.title(quick)
        fit_options = dict(run.fit_options)
        if validation is not None and steps is not None:
            fit_options.update(validation=validation,
                               val_every=max(1, steps // VALIDATIONS))
        model, seconds = commands.fit_model(run.name, train_data,
                                            commands.with_alphabet(run.name, run.options,
                                                                   corpus),
                                            steps, quiet=quiet, rng=rng, labels=labels,
                                            **fit_options)
        result = commands.evaluate(model, test, rng=rng) if run.scored else \
            samples_only(model, test, rng)
        rows.append((title, result, seconds))
        fitted[run.label] = model
        history = getattr(model, "history_", None)
        if history is not None:
            curves.append((title, history.history, history.val_losses))
        print(f"  {title}: fitted in {seconds:.1f} s", flush=True)
    return rows, fitted, curves


def samples_only(model, test, rng=0):
    """``commands.evaluate``'s result without the held-out log-likelihood: sliced Wasserstein
    and MMD of len(test) samples against ``test``."""
    S = np.asarray(model.sample(len(test), rng=rng), dtype=np.float64).reshape(len(test), -1)
    return {"log_p": None, "sw": metrics.sliced_wasserstein(S, test, rng=rng),
            "mmd": metrics.mmd(S, test), "samples": S}


def _gallery_figure(plot, rows, data, path, title):
    panels = [("data", data)] + [(label, r["samples"]) for label, r, _ in rows]
    return figures.save(plot, panels, path, title, per_panel=30), title


def _curves_figure(plot, curves, path, title):
    return plot.save(plot.training_curves(curves, title), path), title


def demo(args, options=None):
    quick, quiet, out = args.quick, args.quiet, args.out
    log = open(os.devnull, "w") if quiet else sys.stdout
    from .. import plot
    drawing = plot.available()
    sections, started = [], time.perf_counter()
    print("minigen demo: estimate the distribution behind built-in data and sample from it")

    _section("engine: an MLP classifier trained on the 8x8 digits")
    acc, n_test = engine_demo(quick, log)
    print(f"test accuracy: {acc:.3f} on {n_test} held-out digits")
    sections.append(report.Section("Engine", note=f"MLP classifier on the 8x8 digits: test "
                                   f"accuracy {acc:.3f} on {n_test} held-out digits."))

    _section("two moons: held-out log-likelihood and sample quality")
    X, Xte = moons(2000, rng=0), moons(2000, rng=1)
    rows, _, curves = run_models(MOONS, X, Xte, None, quick, quiet)
    # the floor: fresh draws of the moons against the same held-out set, as (mean, sd) over
    # draws (one draw put its points exactly half on each moon, an easier match than any
    # sampler that picks a moon per point can make)
    fresh = [moons(2000, rng=100 + k) for k in range(FLOOR_DRAWS)]
    ref = {"sw": _mean_sd([metrics.sliced_wasserstein(D, Xte, rng=k)
                           for k, D in enumerate(fresh)]),
           "mmd": _mean_sd([metrics.mmd(D, Xte) for D in fresh])}
    # the training draw scored as the samples are (2,000 points, the same directions): a
    # model that learned exactly its training points would read this, whatever the floor
    seen = {"sw": metrics.sliced_wasserstein(X, Xte, rng=0), "mmd": metrics.mmd(X, Xte)}
    table = tables.table(rows, ref, seen)
    print(table)
    figs = [_gallery_figure(plot, rows, X, os.path.join(out, "moons.png"),
                            "two moons: data and samples (budgets in the panel titles)"),
            _curves_figure(plot, curves, os.path.join(out, "moons_training.png"),
                           "two moons: training loss per step")] if drawing else []
    sections.append(report.Section("Two moons", table, figs, "log p is per point (the "
                                   "DDPM's is its variational bound); lower sliced W and MMD "
                                   "are better."))

    _section("digits: generative models of 8x8 images")
    (Xtr, ytr), (Xte, _) = load_digits("train"), load_digits("test")
    Xtr, Xte = Xtr / 16.0, Xte / 16.0
    rows, fitted, curves = run_models(DIGITS, Xtr, Xte, ytr, quick, quiet)
    Btr, Bte = (Xtr >= 0.5).astype(np.float64), (Xte >= 0.5).astype(np.float64)
    brows, _, bcurves = run_models(BINARY_DIGITS, Btr, Bte, None, quick, quiet)
    rows += [(label + " [binarised]", r, s) for label, r, s in brows]
    curves += [(label + " [binarised]", h, v) for label, h, v in bcurves]
    ref = diagnose.noise_floor(Xtr, Xte, rng=0)     # training digits against held-out ones
    table = tables.table(rows, ref)
    print(table)
    figs = []
    if drawing:
        figs.append(_gallery_figure(plot, rows, Xte, os.path.join(out, "digits.png"),
                                    "digits: held-out data and samples (budgets in the panel "
                                    "titles)"))
        ae_run = DIGITS[1]
        ae = fitted[ae_run.label]
        recon = ae.inverse_transform(ae.transform(Xte[:30]))
        title = f"held-out digits and their reconstructions by {ae_run.title(quick)}"
        figs.append((plot.save(plot.image_panels([("held-out digits", Xte[:30]),
                                                  ("reconstructions", np.clip(recon, 0, 1))],
                                                 vmin=0, vmax=1, title=title),
                               os.path.join(out, "reconstructions.png")), title))
        figs.append(_curves_figure(plot, curves, os.path.join(out, "digits_training.png"),
                                   "digits: training losses per step"))
    sections.append(report.Section(
        "Digits", table, figs, "log p: nats per image where a density exists (PCA -> GMM on "
        "[0, 1] pixels; the VAE bounds are on binarised pixels, a different space); the AE, "
        "SWAE and GAN define no density, and the DDPM's bound (T = 1,000 network calls per "
        "image) is left out."))

    _section("text: language models on Python's documentation")
    corpus = sources.load("pydoc")[:TEXT_CHARS[quick]]
    text_train, text_test = commands.split(corpus)
    rows, _, curves = run_models(TEXT, text_train, text_test[:20_000], None, quick, quiet,
                                 corpus=corpus, validation=text_test[-VALIDATION_CHARS:])
    table = tables.table(rows)
    print(table)
    for label, r, _ in rows:
        print(f"\n[{label}]\n{r['samples'][0]}")
    figs = [(figures.save(plot, [(label, r["samples"]) for label, r, _ in rows],
                          os.path.join(out, "text.png"), "generated text (budgets in brackets)"),
             "the first generated sample of each language model"),
            _curves_figure(plot, curves, os.path.join(out, "text_training.png"),
                           "text: training and held-out loss (nats per character)")] \
        if drawing else []
    sections.append(report.Section("Text", table, figs, "The validation loss is scored on "
                                   f"the last {VALIDATION_CHARS:,} held-out characters, "
                                   f"{VALIDATIONS} times per fit.",
                                   [(label, r["samples"]) for label, r, _ in rows]))

    seconds = time.perf_counter() - started
    if drawing:
        page = report.write(os.path.join(out, "report.html"), "minigen demo", sections)
        print(f"\ngallery: {out}/ (open {page} in a browser); {seconds:.0f} s in all")
    else:
        print(f"\n{seconds:.0f} s in all. For the figures and report.html: "
              "pip install 'minigen[plot]'")
    return 0
