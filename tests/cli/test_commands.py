"""The ``minigen`` command: every subcommand on tiny budgets, the files it writes and the
tables it prints; fit -> sample -> score through a checkpoint reloaded in a fresh process for
every registered model; clear one-line errors with exit status 2."""
import html.parser
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import minigen as mg
from minigen import plot
from minigen.cli import app, commands, demo
from minigen.distribution import models

# Tiny options per registered model for the round trip (data set, for_data options).
ROUND_TRIP = {
    "kde": ("moons", {}),
    "gmm": ("moons", {"n_components": 2}),
    "pca": ("moons", {"n_components": 1}),
    "latent": ("moons", {"n_components": 1, "n_mixtures": 2}),
    "ddpm": ("moons", {}),
    "ae": ("moons", {"z_dim": 2, "hidden": (8,)}),
    "supervised-ae": ("digits", {"z_dim": 2, "n_classes": 10, "hidden": (8,)}),
    "swae": ("moons", {"z_dim": 2, "hidden": (8,)}),
    "vae": ("moons", {"z_dim": 2, "hidden": (8,), "likelihood": "gaussian"}),
    "hvae": ("moons", {"z_dims": (2, 2), "hidden": (8,), "likelihood": "gaussian"}),
    "gan": ("moons", {"hidden": (8,)}),
    "wgan-gp": ("moons", {"hidden": (8,)}),
    "bigram": ("names", {"block_size": 12}),
    "mlp-lm": ("names", {"context": 3, "n_embd": 8, "n_hidden": 16, "block_size": 12}),
    "transformer-lm": ("names", {"n_layer": 1, "n_head": 2, "n_embd": 16, "block_size": 12}),
}

RELOAD = """
import json, sys
import numpy as np
import minigen as mg
from minigen.cli.commands import held_out_score
from minigen.data import sources
from minigen.distribution import NoDensityError
out = {}
for name, path, data in json.loads(sys.argv[1]):
    model = mg.load_model(path)
    s = model.sample(5, rng=0)
    try:
        score = held_out_score(model, sources.load(data))
    except NoDensityError:
        score = None
    out[name] = {"sample": s if isinstance(s, list) else np.asarray(s).tolist(), "score": score}
print(json.dumps(out))
"""


def run_cli(*argv):
    return app.main([str(a) for a in argv])


def test_every_registered_distribution_has_a_round_trip_case():
    assert set(commands.distributions("array")) | set(commands.distributions("text")) \
        == set(ROUND_TRIP)


def test_fit_sample_score_round_trip_through_a_fresh_process(tmp_path, capsys):
    jobs, here = [], {}
    for name, (data, options) in ROUND_TRIP.items():
        path = tmp_path / f"{name}.npz"
        extra = [] if getattr(models()[name], "default_steps", None) is None else ["--steps", 3]
        flags = [w for k, v in options.items() for w in (f"--{k.replace('_', '-')}", repr(v))]
        assert run_cli("fit", name, "--data", data, *extra, *flags, "-o", path, "--quiet") == 0
        assert f"fitted {name} on the training split of {data}" in capsys.readouterr().out
        model = mg.load_model(path)
        s = model.sample(5, rng=0)
        try:
            score = commands.held_out_score(model, commands.load_data(data))
        except mg.distribution.NoDensityError:
            score = None
        here[name] = {"sample": s if isinstance(s, list) else np.asarray(s).tolist(),
                      "score": score}
        jobs.append((name, str(path), data))
    out = subprocess.run([sys.executable, "-c", RELOAD, json.dumps(jobs)], capture_output=True,
                         text=True, check=True)
    there = json.loads(out.stdout)
    for name in ROUND_TRIP:
        assert there[name]["sample"] == here[name]["sample"], name
        assert there[name]["score"] == here[name]["score"], name
        assert (there[name]["score"] is None) == (not models()[name].has_density), name


def test_sample_writes_every_format_and_score_reports(tmp_path, capsys):
    path = tmp_path / "gmm.npz"
    assert run_cli("fit", "gmm", "--data", "moons", "--n-components", 3, "-o", path) == 0
    for ext in ("npy", "txt"):
        assert run_cli("sample", path, "-n", 7, "-o", tmp_path / f"s.{ext}") == 0
    assert np.load(tmp_path / "s.npy").shape == (7, 2)
    assert len(np.loadtxt(tmp_path / "s.txt")) == 7
    capsys.readouterr()
    if plot.available():
        assert run_cli("sample", path, "-n", 7, "-o", tmp_path / "s.png") == 0
        assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"
    else:       # NumPy alone: a one-line error that names the extra, and no file
        assert run_cli("sample", path, "-n", 7, "-o", tmp_path / "s.png") == 2
        assert "minigen[plot]" in capsys.readouterr().err
        assert not (tmp_path / "s.png").exists()
    capsys.readouterr()
    assert run_cli("score", path, "--data", "moons") == 0
    value = float(capsys.readouterr().out.split(":")[-1].split()[0])
    held_out = commands.load_data("moons", split="test")
    assert value == pytest.approx(commands.held_out_score(mg.load_model(path), held_out),
                                  abs=5e-5)
    gan = tmp_path / "gan.npz"
    run_cli("fit", "gan", "--data", "moons", "--steps", 2, "--hidden", "(4,)", "-o", gan)
    assert run_cli("score", gan, "--data", "moons") == 1
    assert "defines no density" in capsys.readouterr().out


def test_data_files_are_read_and_checked(tmp_path, capsys):
    good = tmp_path / "good.csv"
    good.write_text("a,b\n" + "\n".join(f"{i},{i * i % 7}" for i in range(30)))
    assert run_cli("fit", "kde", "--data", good, "-o", tmp_path / "k.npz") == 0
    np.save(tmp_path / "good.npy", np.random.default_rng(0).normal(size=(40, 3)))
    assert run_cli("fit", "gmm", "--data", tmp_path / "good.npy", "-o", tmp_path / "g.npz") == 0
    capsys.readouterr()
    cases = {"nan.csv": "1,2\n3,nan\n", "ragged.csv": "1,2\n3\n", "empty.csv": "",
             "words.csv": "1,2\nx,y\n", "empty.txt": ""}
    for fname, text in cases.items():
        (tmp_path / fname).write_text(text)
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    np.save(tmp_path / "3d.npy", np.zeros((2, 2, 2)))
    for fname, message in [("nan.csv", "NaN"), ("ragged.csv", "different numbers of columns"),
                           ("empty.csv", "no data rows"), ("words.csv", "not a number"),
                           ("obj.npy", "not a readable .npy"), ("3d.npy", "2-D"),
                           ("missing.npy", "no such file"), ("empty.txt", "empty")]:
        model = "bigram" if fname.endswith(".txt") else "kde"
        assert run_cli("fit", model, "--data", tmp_path / fname, "-o", tmp_path / "x.npz") == 2
        err = capsys.readouterr().err
        assert err.startswith("minigen: ") and fname in err and message in err, (fname, err)
        assert err.count("\n") == 1 and "Traceback" not in err


def test_usage_errors_are_one_line_with_status_2(tmp_path, capsys, monkeypatch):
    for argv, message in [(("fit", "nope", "--data", "moons", "-o", "x.npz"), "unknown model 'nope'"),
                          (("fit", "kde", "--data", "nope", "-o", "x.npz"), "unknown data set"),
                          (("fit", "kde", "--data", "moons", "--foo", "1", "-o", "x.npz"), "foo"),
                          (("fit", "kde", "--data", "moons", "--steps", "3", "-o", "x.npz"),
                           "not trained by steps"),
                          (("fit", "supervised-ae", "--data", "moons", "--n-classes", "2",
                            "-o", "x.npz"), "labelled"),
                          (("score", str(tmp_path / "none.npz"), "--data", "moons"), "none.npz")]:
        assert run_cli(*argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)
    monkeypatch.setenv("MINIGEN_KERNELS", "bogus")
    assert run_cli("info") == 2
    assert "MINIGEN_KERNELS" in capsys.readouterr().err


def test_version_info_and_a_closed_pipe():
    out = subprocess.run([sys.executable, "-m", "minigen", "--version"], capture_output=True,
                         text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"minigen {mg.__version__}"
    shell = subprocess.run(f"{sys.executable} -m minigen info | head -1", shell=True,
                           capture_output=True, text=True)
    assert shell.stdout.startswith("minigen ") and "Error" not in shell.stderr


def test_info_names_every_kernel_and_why(capsys):
    assert run_cli("info") == 0
    out = capsys.readouterr().out
    for name in mg.kernels.info():
        assert f"  {name}: numpy -> " in out
    assert "GPU through CuPy" in out


def test_bench_quick_prints_ratios(capsys):
    pytest.importorskip("numba")
    assert run_cli("bench", "--quick") == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    assert len(rows) >= 4 and all(line.rstrip(" |").endswith("x") for line in rows[1:])


def test_fit_seed_reproduces_and_different_seeds_differ(tmp_path):
    """One --seed gives the same weights twice; another seed gives other initial weights
    (so other samples through the same sampling seed)."""
    for run, seed in (("a", 5), ("b", 5), ("c", 6)):
        assert run_cli("fit", "gan", "--data", "moons", "--steps", 2, "--hidden", "(4,)",
                       "--seed", seed, "-o", tmp_path / f"{run}.npz", "--quiet") == 0
    a, b, c = (mg.load_model(tmp_path / f"{run}.npz") for run in ("a", "b", "c"))
    np.testing.assert_array_equal(a.sample(20, rng=0), b.sample(20, rng=0))
    assert not np.allclose(a.sample(20, rng=0), c.sample(20, rng=0))


def test_a_model_that_rejects_the_data_is_a_one_line_error(tmp_path, capsys):
    assert run_cli("fit", "ae", "--data", "moons", "--reconstruction", "bernoulli", "--steps", 2,
                   "-o", tmp_path / "x.npz") == 2
    err = capsys.readouterr().err
    assert err.startswith("minigen: ae: ") and "[0, 1]" in err and err.count("\n") == 1


def test_compare_runs_every_array_model_and_writes_its_table_and_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    assert run_cli("compare", "--data", "moons", "--steps", 2, "--out", tmp_path,
                   "--quiet") == 0
    out = capsys.readouterr().out
    md = (tmp_path / "compare.md").read_text()
    names = [n for n in commands.distributions("array")
             if not getattr(models()[n], "needs_labels", False)]
    assert len(names) >= 10
    for name in names + ["(held-out data itself)"]:
        assert f"| {name} |" in out and f"| {name} |" in md
    kde_row = next(line for line in md.splitlines() if line.startswith("| kde |"))
    assert np.isfinite(float(kde_row.split("|")[2]))                     # a density: log p
    wgan_row = next(line for line in md.splitlines() if line.startswith("| wgan-gp |"))
    assert wgan_row.split("|")[2].strip() == "-"                          # no density
    assert (tmp_path / "compare.png").read_bytes()[:4] == b"\x89PNG"


class _Images(html.parser.HTMLParser):
    """The report's images (alt, start of src), its table count, and its generated text:
    heading -> the texts of the <pre> blocks that follow an <h3>."""

    def __init__(self):
        super().__init__()
        self.images, self.tables, self.generated = [], 0, {}
        self._tag, self._heading = None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append((attrs["alt"], attrs["src"][:22]))
        self.tables += tag == "table"
        self._tag = tag

    def handle_data(self, data):
        if self._tag == "h3":
            self._heading = data
        elif self._tag == "pre" and self._heading is not None:
            self.generated.setdefault(self._heading, []).append(data)

    def handle_endtag(self, tag):
        self._tag = None
        if tag in ("h2", "body"):
            self._heading = None


def test_demo_writes_its_tables_gallery_and_report(tmp_path, monkeypatch, capsys):
    """The demo on tiny budgets (3 steps per deep model; the classical fits as they are).
    Every section prints its table; each classical estimator beats the Gaussian with the data's
    mean and covariance in held-out log-likelihood (by Z standard errors of the Gaussian's mean
    log density) and in sample quality (by Z standard deviations of MMD and sliced W between
    fresh draws of the data and the same test set); PCA(16) -> GMM(10) scores the digits above
    PPCA(16) alone by Z standard errors; report.html parses and embeds every figure written."""
    pytest.importorskip("matplotlib")
    Z = 4.0
    for name in ("MOONS", "DIGITS", "BINARY_DIGITS", "TEXT"):
        monkeypatch.setattr(demo, name, [run if run.steps is None else run._replace(steps=(3, 3))
                                         for run in getattr(demo, name)])
    monkeypatch.setattr(demo, "engine_demo", lambda quick, log, rng=0: (0.5, 359))
    monkeypatch.setattr(demo, "TEXT_CHARS", (20_000, 20_000))
    from minigen import plot
    drawn = []                                   # the panels of every training-curve figure
    draw_curves = plot.training_curves
    monkeypatch.setattr(plot, "training_curves",
                        lambda panels, title=None: drawn.extend(panels) or draw_curves(panels,
                                                                                       title))
    assert run_cli("demo", "--quick", "--out", tmp_path, "--quiet") == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        if line.startswith("| ") and "---" not in line:
            cells = [c.strip() for c in line.strip("|").split("|")]
            rows[cells[0]] = [np.nan if c == "-" else float(c) for c in cells[1:]
                              if c.replace(".", "").replace("-", "").isdigit() or c == "-"]
    for runs in (demo.MOONS, demo.DIGITS, demo.TEXT):
        for run in runs:
            assert run.title(quick=True) in rows, run.title(quick=True)
    _check_training_curves(drawn)

    X, Xte = mg.data.moons(2000, rng=0), mg.data.moons(2000, rng=1)      # the demo's data
    seen = rows["(the training data itself)"]          # the training draw, scored as samples
    assert seen[1] == pytest.approx(mg.metrics.sliced_wasserstein(X, Xte, rng=0), abs=5e-5)
    assert seen[2] == pytest.approx(mg.metrics.mmd(X, Xte), abs=5e-5)
    mean, cov = X.mean(0), np.cov(X.T)
    diff = Xte - mean
    gaussian_logp = -0.5 * (np.einsum("ij,jk,ik->i", diff, np.linalg.inv(cov), diff)
                            + np.log(np.linalg.det(2 * np.pi * cov)))
    G = np.random.default_rng(2).multivariate_normal(mean, cov, 2000)
    fresh = [mg.data.moons(2000, rng=seed) for seed in range(10, 15)]
    sw_sd = np.std([mg.metrics.sliced_wasserstein(F, Xte, rng=0) for F in fresh], ddof=1)
    mmd_sd = np.std([mg.metrics.mmd(F, Xte) for F in fresh], ddof=1)
    for label in ("KDE (Scott)", "KDE (leave-one-out CV)", "GaussianMixture (12, full)"):
        ll, sw, mmd, _ = rows[label]
        assert ll > gaussian_logp.mean() + Z * gaussian_logp.std() / np.sqrt(len(Xte)), label
        assert sw < mg.metrics.sliced_wasserstein(G, Xte, rng=0) - Z * sw_sd, label
        assert mmd < mg.metrics.mmd(G, Xte) - Z * mmd_sd, label

    Xtr, Xdt = mg.data.load_digits("train")[0] / 16, mg.data.load_digits("test")[0] / 16
    ppca = mg.density.PCA(16).fit(Xtr).score_samples(Xdt)
    assert rows["PCA(16) -> GaussianMixture(10)"][0] > ppca.mean() + Z * ppca.std() / np.sqrt(
        len(Xdt))
    for run in demo.TEXT:
        nats, bpc, perplexity, _ = rows[run.title(quick=True)]
        assert bpc == pytest.approx(nats / np.log(2), rel=0.1) and perplexity > 1

    parser = _Images()
    parser.feed((tmp_path / "report.html").read_text())
    written = sorted(f for f in os.listdir(tmp_path) if f.endswith(".png"))
    assert sorted(alt for alt, _ in parser.images) == written and len(written) >= 4
    assert all(src == "data:image/png;base64," for _, src in parser.images)
    assert parser.tables == 3
    assert {"moons_training.png", "digits_training.png", "text_training.png"} <= set(written)
    for run in demo.TEXT:                        # a few generated lines of every LM
        samples = parser.generated.get(run.title(quick=True), [])
        assert len(samples) == 3 and all(s.strip() for s in samples), run.label


def _check_training_curves(panels):
    """One curve panel per model trained by steps, titled with its budget, holding every step
    of its loss; the language models' panels also hold their held-out losses."""
    by_title = {title: (history, validation) for title, history, validation in panels}
    assert len(by_title) == len(panels)
    for runs, suffix in ((demo.MOONS, ""), (demo.DIGITS, ""), (demo.BINARY_DIGITS,
                                                               " [binarised]"), (demo.TEXT, "")):
        for run in runs:
            title = run.title(quick=True) + suffix
            if run.steps is None:
                assert title not in by_title, title
                continue
            history, validation = by_title[title]
            assert history and all(len(v) == run.budget(quick=True) for v in history.values())
            assert all(np.isfinite(v).all() for v in history.values()), title
            if run in demo.TEXT:
                assert [step for step, _ in validation] == list(range(1, 4)), title
