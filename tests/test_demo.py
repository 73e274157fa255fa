"""`minigen demo --quick`, the README's main job, end to end: the command runs, prints its
three parts, and each number in its table clears a limit that a broken estimator would miss.

The one change to the command: the DDPM on the two moons trains 50 steps on a 50-step schedule
instead of 1000 on 1000 (its full budget costs 90 CPU seconds; tests/test_ddpm.py trains and
checks diffusion models). Every other number is the demo's own. Limits are derived from
baselines computed here and their standard errors, with Z = 4 as in the other statistical tests.
"""
import re

import numpy as np

from minigen import cli, metrics
from minigen.data import load_digits, moons
from minigen.density import PCA
from minigen.models import DDPM, NoiseSchedule

Z = 4.0
ESTIMATORS = ("KDE (Scott)", "KDE (leave-one-out CV)", "GaussianMixture (12, full)")


def table_row(text, name):
    """The numbers after ``name`` in the demo's table: test log p, MMD, sliced W, seconds."""
    line = next(line for line in text.splitlines() if line.startswith(name))
    return [np.nan if v == "-" else float(v) for v in line.split()[-4:]]


def test_demo_quick_runs_the_main_job_end_to_end(monkeypatch, capsys):
    fit = DDPM.fit
    monkeypatch.setattr(DDPM, "fit",
                        lambda self, X, *args, steps=None, **kw: fit(self, X, *args, steps=50, **kw))
    monkeypatch.setattr(cli, "NoiseSchedule", lambda: NoiseSchedule(T=50))
    assert cli.main(["demo", "--quick"]) == 0
    out = capsys.readouterr().out

    # engine: measured 0.964 on the 359 held-out digits; a classifier that had learned less
    # than that by Z binomial standard errors fails (chance is 0.1).
    accuracy = float(re.search(r"test accuracy: ([\d.]+) on 359 held-out digits", out).group(1))
    assert accuracy > 0.964 - Z * np.sqrt(0.964 * 0.036 / 359)

    # two moons: every classical estimator beats the Gaussian with the data's mean and
    # covariance, in held-out log-likelihood (by Z standard errors of the Gaussian's mean log
    # density) and in sample quality (by Z standard deviations of MMD and sliced W between
    # fresh draws of the data and the same test set).
    rng = np.random.default_rng(0)                      # the demo's data
    X, Xte = moons(2000, rng=rng), moons(2000, rng=rng)
    mean, cov = X.mean(0), np.cov(X.T)
    diff = Xte - mean
    gaussian_logp = -0.5 * (np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff)
                            + np.log(np.linalg.det(2 * np.pi * cov)))
    ll_limit = gaussian_logp.mean() + Z * gaussian_logp.std() / np.sqrt(len(Xte))
    fresh = [moons(2000, rng=seed) for seed in range(10, 15)]
    mmd_sd = np.std([metrics.mmd(F, Xte) for F in fresh], ddof=1)
    sw_sd = np.std([metrics.sliced_wasserstein(F, Xte, rng=0) for F in fresh], ddof=1)
    _, ref_mmd, ref_sw, _ = table_row(out, "(reference: a Gaussian fit, sampled)")
    for name in ESTIMATORS:
        ll, mmd, sw, _ = table_row(out, name)
        assert ll > ll_limit, (name, ll, ll_limit)
        assert mmd < ref_mmd - Z * mmd_sd and sw < ref_sw - Z * sw_sd, (name, mmd, sw)
    ddpm = table_row(out, "DDPM")
    assert len(ddpm) == 4 and np.all(np.isfinite(ddpm))

    # digits: PCA(16) -> GaussianMixture(10) scores held-out images above PCA(16) alone (the
    # same code with one Gaussian), by Z standard errors, and its samples are as close to the
    # test images as real training images are, within Z standard deviations of that distance.
    found = re.search(r"test log p: (-?[\d.]+) nats per image; sliced W of samples to test: "
                      r"([\d.]+) \(real training images to test: ([\d.]+)\)", out)
    ll, sw, sw_real = (float(v) for v in found.groups())
    Xtr, Xte = load_digits("train")[0], load_digits("test")[0]
    ppca = PCA(16).fit(Xtr).score_samples(Xte)
    assert ll > ppca.mean() + Z * ppca.std() / np.sqrt(len(Xte))
    pick = np.random.default_rng(1)
    real = [metrics.sliced_wasserstein(Xtr[pick.choice(len(Xtr), len(Xte), replace=False)], Xte,
                                       rng=0) for _ in range(5)]
    assert sw < sw_real + Z * np.std(real, ddof=1)
