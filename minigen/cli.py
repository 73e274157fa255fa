"""The ``minigen`` command.

    minigen demo            the main job on built-in data: fit every estimator, compare them
    minigen demo --quick    the same with smaller budgets (about a minute on 2 cores)
    minigen info            versions and the active kernels
"""
import argparse
import sys
import time

import numpy as np

from . import functional as F
from . import kernels, metrics, nn
from .autograd import no_grad, tensor
from .data import load_digits, moons
from .density import KDE, PCA, GaussianMixture, LatentDensity
from .models import DDPM, NoiseSchedule, TimeMLP
from .train import train


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


def engine_demo(quick, log):
    """Train an MLP classifier on the 8x8 digits; return (test accuracy, test size)."""
    Xtr, ytr = load_digits("train", dtype=np.float32)
    Xte, yte = load_digits("test", dtype=np.float32)
    clf = Classifier([64, 128, 128, 10], rng=0)
    train(clf, (Xtr / 16.0, ytr), steps=300 if quick else 1500, batch_size=64, lr=1e-3,
          log_every=100 if quick else 500, rng=0, out=log)
    return float((clf.predict(Xte / 16.0) == yte).mean()), len(yte)


def density_demo(quick, log):
    """Fit each estimator to two moons; held-out log-likelihood and sample quality."""
    rng = np.random.default_rng(0)
    X, Xte = moons(2000, rng=rng), moons(2000, rng=rng)
    estimators = [
        ("KDE (Scott)", KDE("scott")),
        ("KDE (leave-one-out CV)", KDE("cv")),
        ("GaussianMixture (12, full)", GaussianMixture(12, random_state=0)),
        ("DDPM (TimeMLP 3x128, T=1000)", DDPM(TimeMLP(2, hidden=128, rng=0), NoiseSchedule())),
    ]
    rows = []
    for name, model in estimators:
        start = time.perf_counter()
        if isinstance(model, DDPM):
            steps = 1000 if quick else 4000
            model.fit(X, steps=steps, batch_size=256, lr=2e-3, rng=0, verbose=True,
                      log_every=steps // 5, out=log)
        else:
            model.fit(X)
        samples = model.sample(2000, rng=1)
        ll = model.score(Xte)
        rows.append((name, ll, metrics.mmd(samples, Xte), metrics.sliced_wasserstein(samples, Xte, rng=0),
                     time.perf_counter() - start))
        print(f"  fitted {name}", flush=True)
    baseline = np.random.default_rng(2).standard_normal((2000, 2)) * X.std(0) + X.mean(0)
    rows.append(("(reference: a Gaussian fit, sampled)", float("nan"), metrics.mmd(baseline, Xte),
                 metrics.sliced_wasserstein(baseline, Xte, rng=0), 0.0))
    return rows


def digits_demo(quick):
    """PCA -> GaussianMixture on the digits: a generative model of 64-pixel images."""
    Xtr, _ = load_digits("train")
    Xte, _ = load_digits("test")
    model = LatentDensity(PCA(16), GaussianMixture(10, random_state=0)).fit(Xtr)
    samples = model.sample(len(Xte), rng=0)
    return model.score(Xte), metrics.sliced_wasserstein(samples, Xte, rng=0), \
        metrics.sliced_wasserstein(Xtr[:len(Xte)], Xte, rng=0)


def demo(args):
    log = sys.stdout
    print("minigen demo: estimate the distribution behind built-in data and sample from it")
    _section("engine: an MLP classifier trained on the 8x8 digits")
    acc, n_test = engine_demo(args.quick, log)
    print(f"test accuracy: {acc:.3f} on {n_test} held-out digits")
    _section("two moons: held-out log-likelihood and sample quality (2000 samples)")
    rows = density_demo(args.quick, log)
    print(f"\n{'estimator':40s} {'test log p':>10s} {'MMD':>8s} {'sliced W':>9s} {'time s':>7s}")
    for name, ll, mmd, sw, secs in rows:
        ll = f"{ll:10.3f}" if np.isfinite(ll) else f"{'-':>10s}"
        print(f"{name:40s} {ll} {mmd:8.4f} {sw:9.4f} {secs:7.1f}")
    print("(DDPM's log p is its variational lower bound; lower MMD / sliced W is better)")
    _section("digits: PCA(16) -> GaussianMixture(10) as a generative model of images")
    ll, sw, sw_ref = digits_demo(args.quick)
    print(f"test log p: {ll:.1f} nats per image; sliced W of samples to test: {sw:.3f} "
          f"(real training images to test: {sw_ref:.3f})")
    return 0


def info(args):
    import minigen
    print(f"minigen {minigen.__version__}, numpy {np.__version__}")
    for name, value in kernels.info().items():
        print(f"  {name}: {value}")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="minigen", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="fit and compare every estimator on built-in data")
    p.add_argument("--quick", action="store_true", help="smaller training budgets")
    p.set_defaults(func=demo)
    sub.add_parser("info", help="versions and active kernels").set_defaults(func=info)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
