"""Ctrl-C during ``minigen fit``: a first one stops at the end of the step and keeps a
checkpoint (--checkpoint, else beside the output); the one line printed names the step, the
checkpoint and the command that resumes, and the resumed run ends with the weights of a run
never interrupted. A second Ctrl-C inside a step keeps the last good checkpoint and says so;
a model that is not trained by steps just says "interrupted"."""
import os
import shlex
import signal
import subprocess
import sys

import numpy as np
import pytest

import minigen as mg
from minigen.cli import app, commands
from minigen.models import VAE
from minigen.train import load_checkpoint
from tests.helpers import MPIEXEC, ROOT

# a VAE small enough that 1,500 steps take about 2 s
VAE_FIT = ["fit", "vae", "--data", "moons", "--hidden", "(8,)", "--z-dim", "2", "--seed", "3"]


def _env():
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))


def _launch(argv, launcher=()):
    """``python -m minigen argv`` with Python's own SIGINT handling (a job started in the
    background of a shell would otherwise inherit an ignored SIGINT)."""
    return subprocess.Popen([*launcher, sys.executable, "-m", "minigen", *argv], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def _ctrl_c_after_first_progress_line(argv, launcher=()):
    """Start the fit, wait for its first progress line (step 100), send SIGINT (to mpiexec
    under a launcher, which forwards it to every rank); (return code, stdout, stderr)."""
    proc = _launch(argv, launcher)
    first = proc.stdout.readline()
    assert " step " in first, first + proc.stderr.read()
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    return proc.returncode, first + out, err


def _run(argv):
    done = subprocess.run([sys.executable, "-m", "minigen", *argv], env=_env(),
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done


def main(*argv):
    return app.main([str(a) for a in argv])


def _same_weights(a, b):
    sa, sb = mg.load_model(a).state_dict(), mg.load_model(b).state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        np.testing.assert_array_equal(sa[key], sb[key], err_msg=key)


def test_ctrl_c_keeps_a_checkpoint_and_the_printed_command_resumes_exactly(tmp_path):
    """Through real processes: SIGINT after the first progress line; the run stops at the end
    of a step (rc 130) with a checkpoint beside the output at the step it names; the printed
    command finishes the run, removes that checkpoint, and leaves the weights of the run never
    interrupted, bit for bit."""
    cut, whole = str(tmp_path / "cut.npz"), str(tmp_path / "whole.npz")
    rc, out, err = _ctrl_c_after_first_progress_line(VAE_FIT + ["--steps", "1500", "-o", cut])
    assert rc == 130 and err.count("\n") == 1, err
    ckpt = str(tmp_path / "cut.ckpt.npz")
    step = load_checkpoint(ckpt).step
    assert 100 <= step < 1500
    head = f"minigen: interrupted after step {step} of 1500; saved the checkpoint {ckpt}; "
    assert err.startswith(head + "resume with: minigen fit vae ")
    command = shlex.split(err[len(head + "resume with: "):])
    assert command[:1] == ["minigen"] and command[-2:] == ["--resume", ckpt]
    assert not os.path.exists(cut)                   # an interrupted fit saves no model
    resumed = _run(command[1:]).stdout                # progress every 100 steps, from step
    assert resumed.count(" step ") == 15 - step // 100  # on: it went on, not from the start
    assert not os.path.exists(ckpt)
    _run(VAE_FIT + ["--steps", "1500", "-o", whole])
    assert not os.path.exists(tmp_path / "whole.ckpt.npz")
    _same_weights(cut, whole)


@pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec")
def test_ctrl_c_under_mpiexec_stops_every_rank_and_rank_0_reports(tmp_path):
    pytest.importorskip("mpi4py")
    out_path = str(tmp_path / "m.npz")
    rc, out, err = _ctrl_c_after_first_progress_line(
        VAE_FIT + ["--steps", "3000", "-o", out_path], launcher=(MPIEXEC, "-n", "2"))
    ckpt = str(tmp_path / "m.ckpt.npz")
    step = load_checkpoint(ckpt).step
    assert rc == 130 and err.count("minigen: interrupted") == 1, err
    assert (f"interrupted after step {step} of 3000; saved the checkpoint {ckpt}; resume "
            "with: mpiexec -n 2 minigen fit vae ") in err


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler, as in a fresh interpreter (a library loaded by an earlier
    test may have installed its own, which train leaves alone)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.fixture
def ctrl_c_at(monkeypatch):
    """ctrl_c_at(step, times): SIGINT sent to this process ``times`` times inside VAE.loss of
    that step (twice: the second arrives inside the step, as a second Ctrl-C would)."""
    loss = VAE.loss

    def install(step, times):
        calls = [0]

        def interrupted_loss(self, batch):
            calls[0] += 1
            if calls[0] == step:
                for _ in range(times):
                    signal.raise_signal(signal.SIGINT)     # handled before the call returns
            return loss(self, batch)
        monkeypatch.setattr(VAE, "loss", interrupted_loss)
    return install


def test_a_first_ctrl_c_in_process_stops_after_the_step_and_resumes_exactly(
        tmp_path, capsys, python_sigint_handler, ctrl_c_at, monkeypatch):
    ckpt, argv = tmp_path / "given.npz", VAE_FIT + ["--steps", "60", "--quiet"]
    ctrl_c_at(23, times=1)
    assert main(*argv, "-o", tmp_path / "cut.npz", "--checkpoint", ckpt) == 130
    err = capsys.readouterr().err
    assert err.startswith(f"minigen: interrupted after step 23 of 60; saved the checkpoint "
                          f"{ckpt}; resume with: minigen fit vae")
    assert load_checkpoint(ckpt).step == 23
    monkeypatch.undo()
    command = shlex.split(err.split("resume with: ")[1])
    assert command[-4:] == ["--checkpoint", str(ckpt), "--resume", str(ckpt)]
    loss, calls = VAE.loss, []
    monkeypatch.setattr(VAE, "loss", lambda self, batch: calls.append(1) or loss(self, batch))
    assert main(*command[1:]) == 0
    assert len(calls) == 60 - 23                     # the steps after the checkpoint's
    monkeypatch.undo()
    assert ckpt.exists()                             # a --checkpoint given is the user's
    assert main(*argv, "-o", tmp_path / "whole.npz") == 0
    _same_weights(tmp_path / "cut.npz", tmp_path / "whole.npz")


def test_a_second_ctrl_c_inside_a_step_keeps_the_last_good_checkpoint(
        tmp_path, capsys, python_sigint_handler, ctrl_c_at):
    """Checkpoints come every 100 steps (train's log_every): a second Ctrl-C inside step 150
    leaves the one of step 100; inside step 50, there is none yet."""
    out = tmp_path / "m.npz"
    ctrl_c_at(150, times=2)
    assert main(*VAE_FIT, "--steps", "300", "--quiet", "-o", out) == 130
    ckpt = tmp_path / "m.ckpt.npz"
    assert capsys.readouterr().err == (
        f"minigen: interrupted inside step 150 of 300; the last good checkpoint, {ckpt}, holds "
        f"step 100; resume with: "
        f"{shlex.join(['minigen', *VAE_FIT, '--steps', '300', '--quiet', '-o', str(out)])} "
        f"--resume {ckpt}\n")
    assert load_checkpoint(ckpt).step == 100
    os.remove(ckpt)
    ctrl_c_at(50, times=2)
    assert main(*VAE_FIT, "--steps", "300", "--quiet", "-o", out) == 130
    assert capsys.readouterr().err == ("minigen: interrupted inside step 50 of 300; no "
                                       "checkpoint was written yet, nothing to resume from\n")
    assert not ckpt.exists() and not out.exists()


def test_a_model_not_trained_by_steps_just_says_interrupted(tmp_path, capsys, monkeypatch):
    from minigen.density import KDE

    def interrupted_fit(self, X, y=None, sample_weight=None):
        raise KeyboardInterrupt
    monkeypatch.setattr(KDE, "fit", interrupted_fit)
    assert main("fit", "kde", "--data", "moons", "-o", tmp_path / "k.npz") == 130
    assert capsys.readouterr().err == "minigen: interrupted\n"
    assert os.listdir(tmp_path) == []


def test_the_resume_command_replaces_any_resume_and_names_the_launcher():
    argv = ["fit", "vae", "--data", "my data.csv", "--resume", "old.npz", "-o", "m.npz",
            "--resume=older.npz"]
    assert commands.resume_command(argv, "new ckpt.npz", 1) == (
        "minigen fit vae --data 'my data.csv' -o m.npz --resume 'new ckpt.npz'")
    assert commands.resume_command(["fit", "vae"], "c.npz", 4) == (
        "mpiexec -n 4 minigen fit vae --resume c.npz")
    assert commands.default_checkpoint("out/model.npz") == "out/model.ckpt.npz"
    assert commands.default_checkpoint("model") == "model.ckpt.npz"
