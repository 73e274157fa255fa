"""The training loop under faults: a non-finite last update, hard interrupts at every point of
a step (each resumed exactly), custom schedules on resume, bad checkpoint paths and edited
checkpoints."""
import signal

import numpy as np
import pytest

import minigen as mg
from minigen import backend, nn, optim
from minigen import functional as F
from minigen.train import TrainingInterrupted, load_checkpoint, train


def _data(n=100, dtype=np.float64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3))
    y = x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3
    return x.astype(dtype), y.astype(dtype)


class Noisy(nn.Module):
    """float64 regression whose loss draws from its own generator and from minigen's global
    one; ``interrupt`` (a callable of the call count) may raise inside the loss."""

    def __init__(self, rng=0, interrupt=None):
        super().__init__()
        self.lin = nn.Linear(3, 1, rng=0).double()
        self.rng, self.interrupt, self.calls = np.random.default_rng(rng), interrupt, 0

    def loss(self, batch):
        self.calls += 1
        x, y = batch
        x = x + 0.1 * self.rng.standard_normal(x.shape)
        if self.interrupt is not None:
            self.interrupt(self.calls)        # after this step's draws, before its update
        y = y + 0.1 * backend.default_rng("cpu").standard_normal(y.shape)
        return F.mse_loss(self.lin(mg.tensor(x)), mg.tensor(y))


class InterruptingStepLR(optim.StepLR):
    """StepLR(30, 0.5) that raises KeyboardInterrupt after the optimiser update of step ``at``."""

    def __init__(self, optimizer, at):
        super().__init__(optimizer, 30, 0.5)
        self.at = at

    def step(self):
        super().step()
        if self.last_step == self.at:
            raise KeyboardInterrupt


@pytest.fixture
def seeded_global_rng():
    """Seed minigen's global generator for the test and restore its state afterwards."""
    gen = backend.default_rng("cpu")
    saved = gen.bit_generator.state
    yield lambda: setattr(gen.bit_generator, "state",
                          np.random.default_rng(7).bit_generator.state)
    gen.bit_generator.state = saved


@pytest.fixture
def python_sigint_handler():
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def _options(path, schedule=lambda o: optim.StepLR(o, 30, 0.5)):
    return dict(steps=40, batch_size=32, lr=0.02, rng=3, ema_decay=0.9, clip_grad=5.0,
                log_every=10, verbose=False, schedule=schedule, checkpoint=path)


def _raise_at(step):
    def interrupt(calls):
        if calls == step:
            raise KeyboardInterrupt
    return interrupt


def _two_ctrl_c_at(step):
    def interrupt(calls):
        if calls == step:
            signal.raise_signal(signal.SIGINT)       # deferred to the end of the step
            signal.raise_signal(signal.SIGINT)       # interrupts now
    return interrupt


@pytest.mark.parametrize("where", ["raise in loss", "two ctrl-c in loss", "after the update"])
def test_a_hard_interrupt_keeps_a_consistent_checkpoint_and_resumes_exactly(
        tmp_path, seeded_global_rng, python_sigint_handler, where):
    seeded_global_rng()
    whole = Noisy()
    r_whole = train(whole, _data(), **_options(tmp_path / "whole.npz"))
    seeded_global_rng()
    path = tmp_path / "cut.npz"
    if where == "after the update":
        cut, options = Noisy(), _options(path, lambda o: InterruptingStepLR(o, 23))
    else:
        how = _raise_at if where == "raise in loss" else _two_ctrl_c_at
        cut, options = Noisy(interrupt=how(23)), _options(path)
    with pytest.raises(TrainingInterrupted) as info:
        train(cut, _data(), **options)
    assert info.value.inside_step and info.value.result.steps == 22 and not cut.training
    assert load_checkpoint(path).step == 20              # the last step boundary written
    backend.default_rng("cpu").standard_normal(100)      # whatever runs in between
    resumed = Noisy(rng=99)
    r_resumed = train(resumed, _data(), resume=path, **_options(path))
    np.testing.assert_array_equal(r_resumed.losses, r_whole.losses)
    np.testing.assert_array_equal(resumed.lin.weight.numpy(), whole.lin.weight.numpy())
    np.testing.assert_array_equal(r_resumed.ema.shadow["lin.weight"],
                                  r_whole.ema.shadow["lin.weight"])


class Halving:
    """A schedule that is not an LRScheduler: halves every group's lr every 10 steps."""

    def __init__(self, optimizer):
        self.optimizer, self.count = optimizer, 0

    def step(self):
        self.count += 1
        if self.count % 10 == 0:
            self.optimizer.lr = self.optimizer.lr / 2

    def state_dict(self):
        return {"count": np.array(self.count), "lr": np.array(self.optimizer.lr)}

    def load_state_dict(self, state):
        self.count, self.optimizer.lr = int(state["count"]), float(state["lr"])


def test_a_custom_schedule_with_state_resumes(tmp_path, seeded_global_rng):
    seeded_global_rng()
    whole = Noisy()
    r_whole = train(whole, _data(), **_options(tmp_path / "w.npz", Halving))
    seeded_global_rng()
    options = _options(tmp_path / "c.npz", Halving)
    train(Noisy(), _data(), **{**options, "steps": 25})
    resumed = Noisy()
    r_resumed = train(resumed, _data(), resume=tmp_path / "c.npz", **options)
    np.testing.assert_array_equal(r_resumed.losses, r_whole.losses)
    np.testing.assert_array_equal(resumed.lin.weight.numpy(), whole.lin.weight.numpy())


# --- the last update ---------------------------------------------------------------------------
class Regression(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1, rng=0)
        self.calls = 0

    def loss(self, batch):
        self.calls += 1
        return F.mse_loss(self.lin(mg.tensor(batch[0])), mg.tensor(batch[1]))


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_non_finite_last_update_stops_training_before_anything_is_saved(tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(FloatingPointError, match=r"train: parameter lin\.\w+ is not finite "
                                                 r"after step 1; lower the learning rate"):
        train(Regression(), _data(dtype=np.float32), steps=1, batch_size=32, lr=1e300,
              checkpoint=path, verbose=False)
    assert not path.exists()


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_a_non_finite_last_update_stops_a_models_fit():
    from minigen.models import AutoEncoder
    X = np.random.default_rng(0).standard_normal((64, 3))
    model = AutoEncoder(3, 2, hidden=(8,), rng=0)
    with pytest.raises(FloatingPointError, match="train: parameter .* is not finite after "
                                                 "step 1"):
        model.fit(X, steps=1, batch_size=32, lr=1e300)
    assert getattr(model, "history_", None) is None


# --- arguments and checkpoints checked before training -----------------------------------------
def test_ema_decay_takes_a_numpy_float():
    result = train(Regression(), _data(dtype=np.float32), steps=3, batch_size=32,
                   ema_decay=np.float32(0.5), ema_warmup=False, verbose=False)
    assert result.ema is not None and result.ema.decay == 0.5


def test_a_checkpoint_in_a_missing_folder_or_on_a_folder_fails_before_training(tmp_path):
    model = Regression()
    with pytest.raises(ValueError, match=r"train: checkpoint=.*nowhere.*c\.npz.*: the folder "
                                         r".*nowhere.* does not exist"):
        train(model, _data(dtype=np.float32), steps=3, batch_size=32,
              checkpoint=tmp_path / "nowhere" / "c.npz", verbose=False)
    with pytest.raises(ValueError, match=r"train: checkpoint=.* is a folder"):
        train(model, _data(dtype=np.float32), steps=3, batch_size=32, checkpoint=tmp_path,
              verbose=False)
    assert model.calls == 0


class Wider(Regression):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2, rng=0)


def test_resuming_another_models_checkpoint_names_the_file(tmp_path):
    path = tmp_path / "c.npz"
    train(Regression(), _data(dtype=np.float32), steps=2, batch_size=32, checkpoint=path,
          verbose=False)
    model = Wider()
    with pytest.raises(ValueError, match=r"train: resume=.*c\.npz.* holds the weights of "
                                         r"another model .*lin\.weight"):
        train(model, _data(dtype=np.float32), steps=4, batch_size=32, resume=path,
              verbose=False)
    assert model.calls == 0


@pytest.mark.parametrize("edit, match", [
    (lambda a: a.update({"train.step": np.array(-5)}), r"train\.step must be an int >= 0, "
                                                         r"got -5"),
    (lambda a: a.update({"train.step": np.array([1, 2])}), r"train\.step must be a single int"),
    (lambda a: a.update({"rng.global": np.frombuffer(b"{not json", np.uint8)}),
     "not a usable checkpoint"),
    (lambda a: a.update({"rng.global": mg.io.json_array({"bit_generator": "MT19937"})}),
     "not a usable checkpoint"),
    (lambda a: a.update({"batches.rng": mg.io.json_array([1, 2])}), "not a usable checkpoint"),
    (lambda a: a.pop("val.values"), "not a usable checkpoint"),
    (lambda a: a.update({"history.loss": np.zeros(3)}), r"history\.loss must hold 2 numbers"),
])
def test_an_edited_checkpoint_is_a_value_error_naming_the_file(tmp_path, edit, match):
    path = tmp_path / "c.npz"
    train(Regression(), _data(dtype=np.float32), steps=2, batch_size=32, checkpoint=path,
          verbose=False)
    arrays = mg.load(path)
    edit(arrays)
    mg.save(arrays, path)
    model = Regression()
    weights = model.lin.weight.numpy().copy()
    with pytest.raises(ValueError, match=rf"c\.npz.*{match}"):
        train(model, _data(dtype=np.float32), steps=4, batch_size=32, resume=path,
              verbose=False)
    np.testing.assert_array_equal(model.lin.weight.numpy(), weights)    # nothing loaded
    assert model.calls == 0


def test_a_non_finite_validation_stops_training_with_the_step(tmp_path):
    path = tmp_path / "c.npz"
    values = iter([1.0, float("nan")])
    with pytest.raises(FloatingPointError, match="train: the validation metric is nan at "
                                                 "step 4"):
        train(Regression(), _data(dtype=np.float32), steps=6, batch_size=32, val_every=2,
              validation=_data(32, np.float32), metric=lambda m, v: next(values),
              checkpoint=path, log_every=2, verbose=False)
    assert load_checkpoint(path).step == 2
