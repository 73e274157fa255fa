"""The ``minigen`` command on bad input: every mistake is one line ``minigen: ...`` with exit
status 2, raised before any work (an unwritable output path before a model is trained), and
an error quotes at most a short excerpt of the user's data."""
import numpy as np
import pytest

import minigen as mg
from minigen.cli import app, commands


def run_cli(*argv):
    return app.main([str(a) for a in argv])


@pytest.fixture
def kde_file(tmp_path):
    path = tmp_path / "kde.npz"
    assert run_cli("fit", "kde", "--data", "moons", "-o", path) == 0
    return path


def one_line_error(capsys):
    captured = capsys.readouterr()
    err = captured.err
    assert err.startswith("minigen: ") and err.count("\n") == 1, err[:300]
    assert "Traceback" not in err and len(err) < 400, err[:300]
    return err


def test_bad_numbers_on_the_command_line(tmp_path, kde_file, capsys):
    capsys.readouterr()
    cases = [(("fit", "kde", "--data", "moons", "--seed", -1, "-o", tmp_path / "m.npz"),
              "fit: --seed must be an int >= 0, got -1"),
             (("sample", kde_file, "-n", -3, "-o", tmp_path / "s.npy"),
              "sample: -n must be an int >= 0, got -3"),
             (("sample", kde_file, "--seed", -2, "-o", tmp_path / "s.npy"), "--seed"),
             (("score", kde_file, "--data", "moons", "--seed", -1), "--seed"),
             (("fit", "gan", "--data", "moons", "--steps", 0, "-o", tmp_path / "g.npz"),
              "fit: --steps must be a positive int, got 0")]
    for argv, message in cases:
        assert run_cli(*argv) == 2, argv
        assert message in one_line_error(capsys), argv


def test_output_paths_are_checked_before_training(tmp_path, kde_file, capsys, monkeypatch):
    def no_training(*args, **kwargs):
        raise AssertionError("a model was trained before the output path was checked")

    monkeypatch.setattr(commands, "fit_model", no_training)
    (tmp_path / "folder").mkdir()
    capsys.readouterr()
    for argv, message in [
            (("fit", "gan", "--data", "moons", "-o", tmp_path / "folder"), "is a folder"),
            (("fit", "gan", "--data", "moons", "-o", tmp_path / "missing" / "m.npz"),
             "does not exist"),
            (("sample", kde_file, "-o", tmp_path / "missing" / "s.npy"), "does not exist"),
            (("sample", kde_file, "-o", tmp_path / "folder"), "unsupported output type"),
            (("sample", kde_file, "-o", tmp_path / "s.csv"), "unsupported output type")]:
        assert run_cli(*argv) == 2, argv
        err = one_line_error(capsys)
        assert message in err and ".tmp" not in err, (argv, err)
    assert not (tmp_path / "missing").exists()


def test_data_of_the_wrong_kind_is_named_not_quoted(tmp_path, capsys):
    ok = tmp_path / "ok.csv"
    ok.write_text("a,b\n1,2\n3,4\n5,6\n")
    vae = tmp_path / "vae.npz"
    assert run_cli("fit", "vae", "--data", "moons", "--steps", 1, "--hidden", "(4,)",
                   "-o", vae, "--quiet") == 0
    capsys.readouterr()
    for argv, message in [
            (("fit", "transformer-lm", "--data", ok, "-o", tmp_path / "t.npz"),
             "TransformerLM models text, but"),
            (("fit", "vae", "--data", "names", "-o", tmp_path / "v.npz"),
             "VAE models numeric rows, but 'names' holds text"),
            (("fit", "kde", "--data", "pydoc", "-o", tmp_path / "k.npz"),
             "KDE models numeric rows, but 'pydoc' holds text"),
            (("score", vae, "--data", "names"), "VAE models numeric rows")]:
        assert run_cli(*argv) == 2, argv
        assert message in one_line_error(capsys), argv


def test_a_file_that_is_not_utf8_is_named(tmp_path, capsys):
    for name in ("latin1.txt", "latin1.csv"):
        (tmp_path / name).write_bytes("caf\xe9,1\n2,3\n".encode("latin-1"))
        model = "bigram" if name.endswith(".txt") else "kde"
        assert run_cli("fit", model, "--data", tmp_path / name, "-o", tmp_path / "m.npz") == 2
        err = one_line_error(capsys)
        assert name in err and "not UTF-8" in err, err


def test_a_long_bad_value_is_quoted_as_an_excerpt(tmp_path, capsys):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2\n" + "x" * 5000 + ",3\n")
    assert run_cli("fit", "kde", "--data", bad, "-o", tmp_path / "m.npz") == 2
    err = one_line_error(capsys)
    assert "not a number" in err and "xxxx ..." in err


def test_a_misspelt_model_option_names_the_nearest(tmp_path, capsys):
    assert run_cli("fit", "gmm", "--data", "moons", "--n-componnts", 3,
                   "-o", tmp_path / "m.npz") == 2
    err = one_line_error(capsys)
    assert "unknown option --n-componnts; did you mean --n-components?" in err
    assert "minigen fit gmm --help" in err


def test_fit_model_help_lists_the_models_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        run_cli("fit", "--data", "moons", "gmm", "--help")
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "options of gmm (GaussianMixture)" in out
    for option, default in [("--n-components", "default 1"),
                            ("--covariance-type", "default 'full'")]:
        line = next(line for line in out.splitlines() if line.strip().startswith(option))
        assert default in line
    with pytest.raises(SystemExit):
        run_cli("fit", "ae", "-h")
    out = capsys.readouterr().out
    assert "--z-dim" in out and "AutoEncoder.for_data" in out


@pytest.mark.filterwarnings("ignore:KDE.fit. the data covariance is singular")
def test_score_uses_the_split_that_fit_kept_out(tmp_path, capsys):
    path = tmp_path / "kde.npz"
    assert run_cli("fit", "kde", "--data", "digits", "-o", path) == 0
    assert "training split of digits (1438 rows)" in capsys.readouterr().out
    train = mg.data.load_digits("train")[0] / 16.0
    test = mg.data.load_digits("test")[0] / 16.0
    model = mg.load_model(path)
    np.testing.assert_array_equal(model.data_, train)
    assert run_cli("score", path, "--data", "digits") == 0
    out = capsys.readouterr().out
    assert "the held-out split of digits (359 rows)" in out
    value = float(out.split(":")[-1].split()[0])
    assert value == pytest.approx(model.score(test), abs=5e-5)
    assert value != pytest.approx(model.score(train), abs=1.0)


def test_score_on_a_file_says_it_scored_all_of_it(tmp_path, kde_file, capsys):
    points = tmp_path / "points.npy"
    np.save(points, mg.data.moons(50, rng=3))
    capsys.readouterr()
    assert run_cli("score", kde_file, "--data", points) == 0
    out = capsys.readouterr().out
    assert "all of" in out and "points.npy' (50 rows)" in out and "no held-out split" in out
