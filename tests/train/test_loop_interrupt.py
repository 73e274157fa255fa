"""What an interrupted run tells its caller about its checkpoint: ``TrainingInterrupted``
carries (path, step) of the last good checkpoint, the one written last or the one the run
resumed from, so a command can say where to resume."""
import signal

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen import nn
from minigen.train import TrainingInterrupted, load_checkpoint, train
from minigen.train import loop


class Regression(nn.Module):
    """y = x w fitted by mean squared error; KeyboardInterrupt inside the loss of ``stop``."""

    def __init__(self, stop=None):
        super().__init__()
        self.lin = nn.Linear(3, 1, rng=0).double()
        self.calls, self.stop = 0, stop

    def loss(self, batch):
        self.calls += 1
        if self.calls == self.stop:
            raise KeyboardInterrupt
        x, y = batch
        return F.mse_loss(self.lin(mg.tensor(x)), mg.tensor(y))


def _data():
    x = np.random.default_rng(0).normal(size=(64, 3))
    return x, x @ np.array([[1.0], [-2.0], [0.5]])


def _interrupted(model, **kw):
    with pytest.raises(TrainingInterrupted) as info:
        train(model, _data(), steps=40, batch_size=16, log_every=10, verbose=False, **kw)
    return info.value


def test_the_last_checkpoint_written_or_resumed_from_is_named(tmp_path):
    path, other = tmp_path / "c.npz", tmp_path / "d.npz"
    stop = _interrupted(Regression(stop=26), checkpoint=path)
    assert stop.inside_step and stop.checkpoint == (path, 20) and stop.result.steps == 25
    assert load_checkpoint(path).step == 20
    # resumed from c.npz (step 20) and stopped before d.npz was first written (step 30)
    stop = _interrupted(Regression(stop=5), checkpoint=other, resume=path)
    assert stop.checkpoint == (path, 20) and not other.exists()
    assert _interrupted(Regression(stop=5)).checkpoint is None


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler, as in a fresh interpreter."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


class CtrlC(Regression):
    """A Ctrl-C (SIGINT to this process) inside the loss of step ``at``: train stops after it."""

    def __init__(self, at):
        super().__init__()
        self.at = at

    def loss(self, batch):
        if self.calls + 1 == self.at:
            signal.raise_signal(signal.SIGINT)
        return super().loss(batch)


def test_a_ctrl_c_while_the_final_checkpoint_is_written_keeps_the_one_before(
        tmp_path, monkeypatch, python_sigint_handler):
    """A first Ctrl-C in step 25, then another while the checkpoint of step 25 is written:
    the file stays the one of step 20, and the exception says so."""
    path, write = tmp_path / "c.npz", loop.write_checkpoint

    def write_or_interrupt(where, model, run):
        if run.step == 25:
            raise KeyboardInterrupt
        write(where, model, run)

    monkeypatch.setattr(loop, "write_checkpoint", write_or_interrupt)
    stop = _interrupted(CtrlC(at=25), checkpoint=path)
    assert not stop.inside_step and stop.result.steps == 25
    assert stop.checkpoint == (path, 20) and load_checkpoint(path).step == 20
    monkeypatch.undo()
    stop = _interrupted(CtrlC(at=25), checkpoint=path)
    assert stop.checkpoint == (path, 25) and load_checkpoint(path).step == 25
