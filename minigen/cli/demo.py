"""``minigen demo``: the main job. Every family fitted briefly on built-in data, one comparison
table per data set, and a gallery (a figure per family and a self-contained report.html).

  * engine: an MLP classifier trained on the 8x8 digits (the autograd engine at work);
  * two moons: KDE, Gaussian mixture, DDPM and a GAN, scored on held-out points;
  * digits (pixels scaled to [0, 1]): PCA -> Gaussian mixture, the auto-encoder family, VAE and
    hierarchical VAE (on binarised digits, where their Bernoulli bound applies) and a conv GAN,
    each compared with held-out digits by sliced Wasserstein distance and MMD (the digits DDPM
    needs minutes of its own: examples/diffusion_toys.py);
  * text: bigram, MLP and Transformer language models on Python's own documentation.
Which models run, with which options and budgets, is the data below (registry names).
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
from ..train import train
from . import commands, figures, report, tables


class Run(NamedTuple):
    """One model of the demo: its table label, registry name, options for ``for_data``, its
    training budget as (steps, quick steps) (None for a closed-form or EM fit) and the options
    of ``fit``."""
    label: str
    name: str
    options: dict = {}
    steps: Optional[Tuple[int, int]] = None
    fit_options: dict = {}


MOONS = [
    Run("KDE (Scott)", "kde"),
    Run("KDE (leave-one-out CV)", "kde", {"bandwidth": "cv"}),
    Run("GaussianMixture (12, full)", "gmm", {"n_components": 12, "random_state": 0}),
    Run("DDPM (TimeMLP 3x128, T=1000)", "ddpm", steps=(2000, 400), fit_options={"lr": 2e-3}),
    Run("GAN (MLP 3x128)", "gan", steps=(1500, 400), fit_options={"lr": 1e-3}),
]
DIGITS = [
    Run("PCA(16) -> GaussianMixture(10)", "latent"),
    Run("AutoEncoder(z=8) + GMM on codes", "ae", {"z_dim": 8}, (600, 200)),
    Run("SupervisedAutoEncoder(z=8)", "supervised-ae", {"z_dim": 8, "n_classes": 10},
        (800, 200)),
    Run("SWAE(z=8, normal prior)", "swae", {"z_dim": 8}, (600, 200)),
    Run("GAN (conv)", "gan", {"image_shape": (1, 8, 8), "z_dim": 16}, (800, 100)),
]
BINARY_DIGITS = [
    Run("VAE(z=16)", "vae", {"z_dim": 16}, (1500, 300)),
    Run("HierarchicalVAE(z=16, 4)", "hvae", steps=(1500, 300)),
]
TEXT = [
    Run("Bigram", "bigram", steps=(600, 200), fit_options={"lr": 3e-2}),
    Run("MLPLM (context 8)", "mlp-lm", steps=(800, 200)),
    Run("TransformerLM (2 layers, 64 wide)", "transformer-lm",
        {"n_layer": 2, "n_head": 4, "n_embd": 64, "block_size": 64}, (300, 80)),
]

TEXT_CHARS = (300_000, 100_000)    # characters of the pydoc corpus used (full, quick)


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


def run_models(runs, train_data, test, labels, quick, quiet, rng=0, corpus=None):
    """Fit each ``Run`` and evaluate it on ``test``; rows (label, result, seconds) and the
    fitted models by label. ``corpus``: all the text, for the character models' alphabet."""
    rows, fitted = [], {}
    for run in runs:
        steps = None if run.steps is None else run.steps[1 if quick else 0]
        model, seconds = commands.fit_model(run.name, train_data,
                                            commands.with_alphabet(run.name, run.options,
                                                                   corpus),
                                            steps, quiet=quiet, rng=rng, labels=labels,
                                            **run.fit_options)
        rows.append((run.label, commands.evaluate(model, test, rng=rng), seconds))
        fitted[run.label] = model
        print(f"  {run.label}: fitted in {seconds:.1f} s", flush=True)
    return rows, fitted


def _gallery_figure(plot, rows, data, path, title):
    panels = [("data", data)] + [(label, r["samples"]) for label, r, _ in rows]
    return figures.save(plot, panels, path, title, per_panel=30)


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
    sections.append(("Engine", None, [], f"MLP classifier on the 8x8 digits: test accuracy "
                                         f"{acc:.3f} on {n_test} held-out digits."))

    _section("two moons: held-out log-likelihood and sample quality")
    X, Xte = moons(2000, rng=0), moons(2000, rng=1)
    rows, _ = run_models(MOONS, X, Xte, None, quick, quiet)
    ref = {"sw": metrics.sliced_wasserstein(moons(2000, rng=2), Xte, rng=0),
           "mmd": metrics.mmd(moons(2000, rng=2), Xte)}
    table = tables.table(rows, ref)
    print(table)
    figs = [_gallery_figure(plot, rows, X, os.path.join(out, "moons.png"),
                            "two moons: data and samples")] if drawing else []
    sections.append(("Two moons", table, figs, "log p is per point (the DDPM's is its "
                     "variational bound); lower sliced W and MMD are better."))

    _section("digits: generative models of 8x8 images")
    (Xtr, ytr), (Xte, _) = load_digits("train"), load_digits("test")
    Xtr, Xte = Xtr / 16.0, Xte / 16.0
    rows, fitted = run_models(DIGITS, Xtr, Xte, ytr, quick, quiet)
    Btr, Bte = (Xtr >= 0.5).astype(np.float64), (Xte >= 0.5).astype(np.float64)
    brows, _ = run_models(BINARY_DIGITS, Btr, Bte, None, quick, quiet)
    rows += [(label + " [binarised]", r, s) for label, r, s in brows]
    ref = {"sw": metrics.sliced_wasserstein(Xtr[:len(Xte)], Xte, rng=0),
           "mmd": metrics.mmd(Xtr[:len(Xte)], Xte)}
    table = tables.table(rows, ref)
    print(table)
    figs = []
    if drawing:
        figs.append(_gallery_figure(plot, rows, Xte, os.path.join(out, "digits.png"),
                                    "digits: held-out data and samples"))
        ae = fitted[DIGITS[1].label]
        recon = ae.inverse_transform(ae.transform(Xte[:30]))
        figs.append(plot.save(plot.image_panels([("held-out digits", Xte[:30]),
                                                 ("auto-encoder reconstructions",
                                                  np.clip(recon, 0, 1))], vmin=0, vmax=1),
                              os.path.join(out, "reconstructions.png")))
    sections.append(("Digits", table, figs, "log p: nats per image where a density exists "
                     "(PCA -> GMM on [0, 1] pixels; the VAE bounds are on binarised pixels, a "
                     "different space); the AE, SWAE and GAN define no density."))

    _section("text: language models on Python's documentation")
    corpus = sources.load("pydoc")[:TEXT_CHARS[quick]]
    text_train, text_test = commands.split(corpus)
    rows, _ = run_models(TEXT, text_train, text_test[:20_000], None, quick, quiet, corpus=corpus)
    table = tables.table(rows)
    excerpts = [f"[{label}]\n{r['samples'][0]}" for label, r, _ in rows]
    print(table)
    for excerpt in excerpts:
        print("\n" + excerpt)
    figs = [figures.save(plot, [(label, r["samples"]) for label, r, _ in rows],
                         os.path.join(out, "text.png"), "generated text")] if drawing else []
    sections.append(("Text", table, figs, None))

    seconds = time.perf_counter() - started
    if drawing:
        page = report.write(os.path.join(out, "report.html"), "minigen demo", sections)
        print(f"\ngallery: {out}/ (open {page} in a browser); {seconds:.0f} s in all")
    else:
        print(f"\n{seconds:.0f} s in all. For the figures and report.html: "
              "pip install 'minigen[plot]'")
    return 0

