"""What ``minigen compare`` flags in its table: fits that did not converge, and sample metrics
below the noise floor of the data itself.

Did not converge (the model's row):
  * the fit stopped on a non-finite loss, gradient or parameter (train's FloatingPointError);
  * an EM fit, of the model or of an estimator it holds in a public attribute (the Gaussian
    mixture on an auto-encoder's codes, on PCA codes), ended with ``converged_`` False;
  * a model trained on one loss whose curve did not go down: with L_1 .. L_n the per-step
    losses (n >= MIN_STEPS) and w = n // 10, the mean of the last w is not below the mean of
    the first w by Z_DOWN standard errors, SE = sqrt(var(first w) / w + var(last w) / w).
    Adversarial losses (a GAN's critic and generator) are exempt: they trade off against each
    other and need not fall.

Below the noise floor (a sliced W or MMD cell): an independent sample of the data
distribution, as many rows as the held-out split (n), scores a value spread around the floor.
The floor is measured FLOOR_DRAWS times, each time with another random subset of n rows of the
training split (N rows) and, for sliced W, other projections: mean m, standard deviation s'.
Subsets of one finite pool vary less than fresh samples (they miss the pool's own variation),
so the spread of one fresh sample is taken as s = s' / sqrt(1 - n / N), the finite-population
factor. Measured against 200 independent samples of moons (n = 100, ten training pools;
tests/cli/test_compare_flags.py), s is 9% below their spread for both metrics with N = 4n, the
split compare makes (s' alone: 21% below), and 16-27% below with N = 2n; a bootstrap of the
pool was no closer. So the bound below covers somewhat less than 99% of honest samples. A
model's value v, itself one such sample were the model the data distribution, is flagged when

    v < m - T_99 s sqrt(1 + 1 / FLOOR_DRAWS),

the one-sided 99% prediction bound for one more draw (Student's t). Samples that close to the
held-out rows are not an independent draw of the distribution: suspect copies of data points.
Copies of the training rows alone score like a floor draw and are not flagged.
"""
import math

import numpy as np

from .. import metrics
from ..backend import as_rng

MIN_STEPS = 20      # a shorter curve is too short to judge (10% of it is one or two steps)
Z_DOWN = 2.0        # one-sided: a flat curve of independent noise passes 2.3% of the time
FLOOR_DRAWS = 30
T_99 = 2.462        # the 99% quantile of Student's t with FLOOR_DRAWS - 1 = 29 degrees of freedom


def loss_went_down(losses):
    """(went down, the sentence that says by how much) for a per-step loss curve, or
    (True, None) when it is shorter than MIN_STEPS."""
    losses = np.asarray(losses, dtype=np.float64)
    if len(losses) < MIN_STEPS:
        return True, None
    w = len(losses) // 10
    first, last = losses[:w], losses[-w:]
    se = math.sqrt(first.var(ddof=1) / w + last.var(ddof=1) / w)
    drop = first.mean() - last.mean()
    went_down = drop > Z_DOWN * se
    return went_down, (f"the training loss did not go down: mean {last.mean():.4g} over the "
                       f"last {w} steps vs {first.mean():.4g} over the first {w} "
                       f"(a drop of {drop / se if se > 0 else 0:.1f} standard errors; "
                       f"{Z_DOWN:g} needed)")


def _em_estimators(model):
    """The model and each estimator in its public attributes that reports ``converged_``."""
    found = [("", model)] if hasattr(model, "converged_") else []
    for name, value in vars(model).items():
        if not name.startswith("_") and hasattr(value, "converged_"):
            found.append((f" ({name})", value))
    return found


def convergence(model):
    """The reasons ``model``'s fit did not converge (an empty list when it did)."""
    reasons = []
    for where, estimator in _em_estimators(model):
        if estimator.converged_ is False:
            reasons.append(f"EM{where} did not converge in {estimator.n_iter_} iterations")
    history = getattr(model, "history_", None)
    curves = getattr(history, "history", None) or {}
    if "loss" in curves:
        went_down, why = loss_went_down(curves["loss"])
        if not went_down:
            reasons.append(why)
    return reasons


def noise_floor(train, test, rng=0):
    """{'sw': (m, s), 'mmd': (m, s)}: the mean over FLOOR_DRAWS of the metric between len(test)
    random rows of ``train`` and ``test``, and the standard deviation of one fresh sample (the
    spread of the draws over the finite-population factor). A training split smaller than
    twice the held-out one is resampled with replacement (a bootstrap), with no factor."""
    gen = as_rng(rng, where="noise_floor")
    train, test = np.asarray(train, dtype=np.float64), np.asarray(test, dtype=np.float64)
    n, pool = len(test), len(train)
    subsets = pool >= 2 * n
    factor = math.sqrt(1 - n / pool) if subsets else 1.0
    values = {"sw": [], "mmd": []}
    for _ in range(FLOOR_DRAWS):
        rows = train[gen.choice(pool, n, replace=not subsets)]
        values["sw"].append(metrics.sliced_wasserstein(rows, test, rng=gen))
        values["mmd"].append(metrics.mmd(rows, test))
    return {key: (float(np.mean(v)), float(np.std(v, ddof=1)) / factor)
            for key, v in values.items()}


def below_floor(value, floor, label):
    """The sentence that flags ``value`` (a metric named ``label``) below the floor (m, s),
    or None."""
    m, s = floor
    bound = m - T_99 * s * math.sqrt(1 + 1 / FLOOR_DRAWS)
    if value is None or not np.isfinite(value) or value >= bound:
        return None
    return (f"{label} {value:.4f} is below the held-out noise floor {m:.4f} +- {s:.4f} "
            f"(the bound {bound:.4f}): closer to the held-out rows than a sample of the data "
            f"itself gets; suspect samples that copy data points")


def flags(result, model, floor):
    """[(column, reason)] for one compare row: 'model' for a fit that did not converge, 'sw'
    or 'mmd' for a cell below the floor (None: text, no floor)."""
    found = [("model", why) for why in convergence(model)]
    for key, label in (("sw", "sliced W"), ("mmd", "MMD")):
        if floor is not None:
            why = below_floor(result.get(key), floor[key], label)
            if why is not None:
                found.append((key, why))
    return found
