"""What ``minigen compare`` flags: a fit that did not converge (a non-finite loss, EM that did
not converge, a loss curve that did not go down) and a sample metric below the held-out noise
floor; each flag a footnote marker in the table and a line under it."""
import warnings

import numpy as np
import pytest

from minigen import metrics
from minigen.cli import app, diagnose, tables
from minigen.data import moons
from minigen.density import GaussianMixture, LatentDensity, PCA
from minigen.train import TrainResult


class Trained:
    """A stand-in for a trained model: only the ``history_`` that ``convergence`` reads."""

    def __init__(self, history):
        self.history_ = TrainResult(history, [], None, None, 0.0, len(next(iter(
            history.values()))))


def test_a_falling_loss_passes_a_flat_or_rising_one_is_flagged():
    rng = np.random.default_rng(0)
    t = np.arange(2000)
    noise = 0.05 * rng.standard_normal(2000)
    assert diagnose.loss_went_down(1 / (1 + 0.01 * t) + noise)[0]
    flat, why = diagnose.loss_went_down(1 + noise)
    assert not flat and "did not go down" in why and "last 200 steps" in why
    assert not diagnose.loss_went_down(1 + 1e-4 * t + noise)[0]
    assert diagnose.loss_went_down(np.ones(diagnose.MIN_STEPS - 1)) == (True, None)


def test_convergence_names_em_that_did_not_converge_and_a_flat_loss():
    X = moons(400, rng=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # the ConvergenceWarning of max_iter=1
        stuck = GaussianMixture(4, max_iter=1, random_state=0).fit(X)
        latent = LatentDensity(PCA(1), GaussianMixture(4, max_iter=1, random_state=0)).fit(X)
    assert diagnose.convergence(stuck) == ["EM did not converge in 1 iterations"]
    assert diagnose.convergence(latent) == ["EM (density) did not converge in 1 iterations"]
    assert diagnose.convergence(GaussianMixture(2, random_state=0).fit(X)) == []
    noise = np.random.default_rng(1).standard_normal(100)
    assert "did not go down" in diagnose.convergence(Trained({"loss": 1 + noise}))[0]
    assert diagnose.convergence(Trained({"loss": np.linspace(2, 1, 100) + 0.01 * noise})) == []
    # adversarial losses trade off against each other: not judged by whether they fall
    assert diagnose.convergence(Trained({"d_loss": 1 + noise, "g_loss": 1 + noise})) == []


def test_the_noise_floor_flags_copies_of_the_held_out_rows_not_fresh_samples():
    """40 fresh samples of the distribution against the 99% one-sided prediction bound: the
    number flagged is binomial(40, 0.01) per metric, mean 0.4, and 3 or more has probability
    0.008. Copies of the held-out rows (exact, or jittered by 1% of the data's scale) score far
    below the floor; copies of the training rows score like a floor draw."""
    train, test = moons(800, rng=0), moons(200, rng=1)
    floor = diagnose.noise_floor(train, test, rng=0)
    fresh = [moons(200, rng=100 + i) for i in range(40)]
    for key, metric in (("sw", lambda S: metrics.sliced_wasserstein(S, test, rng=0)),
                        ("mmd", lambda S: metrics.mmd(S, test))):
        flagged = sum(diagnose.below_floor(metric(S), floor[key], key) is not None
                      for S in fresh)
        assert flagged <= 2, (key, flagged)
        jitter = test + 0.01 * np.random.default_rng(2).standard_normal(test.shape)
        for copy in (test, jitter):
            why = diagnose.below_floor(metric(copy), floor[key], key)
            assert why is not None and "below the held-out noise floor" in why
        assert diagnose.below_floor(metric(train[:200]), floor[key], key) is None
    assert diagnose.below_floor(None, floor["sw"], "sliced W") is None


def test_the_table_marks_each_flag_and_explains_it_under_the_table():
    rows = [("kde", {"log_p": -1.2, "sw": 0.08, "mmd": 0.03, "flags": []}, 0.0),
            ("vae", {"log_p": None, "sw": None, "mmd": None,
                     "flags": [("model", "did not converge: loss is nan at step 4")]}, 1.0),
            ("copy", {"log_p": None, "sw": 0.0, "mmd": 0.001,
                      "flags": [("sw", "sliced W too low"), ("mmd", "MMD too low")]}, 0.5)]
    text = tables.table(rows, {"sw": (0.0664, 0.012), "mmd": (0.0479, 0.0089)})
    lines = text.splitlines()
    assert "| kde | -1.200 | 0.0800 | 0.0300 | 0.0 |" in lines
    assert "| vae [1] | - | - | - | 1.0 |" in lines
    assert "| copy | - | 0.0000 [2] | 0.0010 [3] | 0.5 |" in lines
    assert "| (held-out data itself) | - | 0.0664 +- 0.0120 | 0.0479 +- 0.0089 | - |" in lines
    assert lines[-4:] == ["", "[1] vae: did not converge: loss is nan at step 4",
                          "[2] copy: sliced W too low", "[3] copy: MMD too low"]
    assert tables.table(rows[:1], {"sw": 0.07, "mmd": 0.05}).splitlines()[-1] == \
        "| (held-out data itself) | - | 0.0700 | 0.0500 | - |"
    assert tables.table(rows[:1], {"sw": 0.07, "mmd": 0.05},
                        {"sw": 0.045, "mmd": 0.036}).splitlines()[-2:] == [
        "| (the training data itself) | - | 0.0450 | 0.0360 | - |",
        "| (held-out data itself) | - | 0.0700 | 0.0500 | - |"]
    text_rows = [("bigram", {"log_p": None, "bits_per_char": None, "perplexity": None,
                             "flags": [("model", "did not converge: loss is inf")]}, 0.1)]
    assert tables.table(text_rows).splitlines()[2:] == [
        "| bigram [1] | - | - | - | 0.1 |", "", "[1] bigram: did not converge: loss is inf"]


def test_compare_flags_a_diverged_fit_and_a_flat_loss_and_goes_on(tmp_path, capsys,
                                                                  monkeypatch):
    """vae's loss turns NaN at its 4th step (train stops it); ae's loss is made flat noise
    with no gradient (its curve cannot go down); kde is fitted as usual."""
    from minigen import functional as F
    from minigen.creation import tensor
    from minigen.models import VAE, AutoEncoder
    vae_loss, ae_loss, calls = VAE.loss, AutoEncoder.loss, {"vae": 0}
    noise = np.random.default_rng(0)

    def diverging(self, batch):
        calls["vae"] += 1
        return vae_loss(self, batch) * (float("nan") if calls["vae"] >= 4 else 1.0)

    def flat(self, batch):
        return F.sum(ae_loss(self, batch) * 0.0) + tensor(1.0 + 0.1 * noise.standard_normal())

    monkeypatch.setattr(VAE, "loss", diverging)
    monkeypatch.setattr(AutoEncoder, "loss", flat)
    assert app.main(["compare", "--data", "moons", "--models", "kde", "vae", "ae", "--steps",
                     "40", "--out", str(tmp_path), "--quiet"]) == 0
    out = capsys.readouterr().out
    md = (tmp_path / "compare.md").read_text()
    for text in (out, md):
        assert "| vae [1] | - | - | - |" in text and "| ae [2] |" in text
        assert "[1] vae: did not converge: train: loss is nan at step 4" in text
        assert "[2] ae: the training loss did not go down" in text
        assert next(line for line in text.splitlines() if line.startswith("| kde")).count(
            "[") == 0


def test_the_floor_spread_estimates_the_spread_of_one_independent_sample():
    """s (the floor's spread over the finite-population factor) against the standard deviation
    of the metric over 200 independent samples (rows drawn at random from 200,000 points of
    moons, not moons(n), which puts exactly n / 2 on each moon); ten training pools of N = 4n
    rows, compare's split; z = (mean log s - log sd) / SE with SE^2 = var(log s) / 10 +
    1 / (2 * 199), the second term the variance of the log standard deviation of 200 normal
    values."""
    big, gen = moons(200_000, rng=5), np.random.default_rng(9)

    def iid(n):
        return big[gen.choice(len(big), n, replace=False)]
    test = iid(100)
    fresh = [iid(100) for _ in range(200)]
    floors = [diagnose.noise_floor(iid(400), test, rng=k) for k in range(10)]
    for key, metric in (("sw", lambda S, i: metrics.sliced_wasserstein(S, test, rng=i)),
                        ("mmd", lambda S, i: metrics.mmd(S, test))):
        spread = np.std([metric(S, i) for i, S in enumerate(fresh)], ddof=1)
        log_s = np.log([floor[key][1] for floor in floors])
        se = np.sqrt(log_s.var(ddof=1) / len(log_s) + 1 / (2 * 199))
        z = (log_s.mean() - np.log(spread)) / se
        assert -3 < z < 3, (key, z)
