"""The training loop, batching and the command line."""
import io
import sys

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen import backend, nn, optim
from minigen.data.batching import batches, infinite_batches
from minigen.train import TrainingInterrupted, load_checkpoint, train


class Regression(nn.Module):
    """y = x w + b fitted by mean squared error; ``bad_step`` makes the loss NaN there."""

    def __init__(self, bad_step=None):
        super().__init__()
        self.lin = nn.Linear(3, 1, rng=0)
        self.calls, self.bad_step = 0, bad_step

    def loss(self, batch):
        self.calls += 1
        x, y = batch
        pred = self.lin(mg.tensor(x))
        if self.calls == self.bad_step:
            pred = pred * float("nan")
        return F.mse_loss(pred, mg.tensor(y))


def _data(n=256):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 3)).astype(np.float32)
    return x, (x @ np.array([[1.0], [-2.0], [0.5]], np.float32) + 0.3).astype(np.float32)


def test_train_fits_a_linear_model_and_reports_progress():
    out = io.StringIO()
    model = Regression()
    result = train(model, _data(), steps=400, batch_size=32, lr=0.05, log_every=100, rng=0,
                   out=out)
    assert len(result.losses) == 400 and model.calls == 400
    assert result.losses[-1] < 1e-3 * result.losses[0]
    np.testing.assert_allclose(model.lin.weight.numpy(), [[1.0, -2.0, 0.5]], atol=1e-2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4 and lines[-1].startswith("Regression  step    400/400  loss")
    assert not model.training                       # left in eval mode


def test_nan_loss_stops_with_the_step():
    with pytest.raises(FloatingPointError, match="train: loss is nan at step 7"):
        train(Regression(bad_step=7), _data(), steps=20, batch_size=32, verbose=False)


def test_checkpoint_holds_model_and_ema_in_loadable_namespaces(tmp_path):
    path = tmp_path / "ckpt.npz"
    model = Regression()
    result = train(model, _data(), steps=50, batch_size=32, lr=0.01, ema_decay=0.9,
                   log_every=25, checkpoint=path, verbose=False)
    ckpt = load_checkpoint(path)
    assert ckpt.step == 50 and list(ckpt.optimizers) == ["optimizer"]
    np.testing.assert_array_equal(ckpt.model["lin.weight"], model.lin.weight.numpy())
    np.testing.assert_array_equal(ckpt.ema["lin.weight"], result.ema.shadow["lin.weight"])
    fresh = Regression()
    fresh.load_state_dict(ckpt.model)                 # strict: exactly the module's keys
    np.testing.assert_array_equal(fresh.lin.bias.numpy(), model.lin.bias.numpy())
    fresh.load_state_dict(ckpt.ema)                   # the averaged weights, strict too
    np.testing.assert_array_equal(fresh.lin.weight.numpy(), result.ema.shadow["lin.weight"])
    assert not np.array_equal(result.ema.shadow["lin.weight"], model.lin.weight.numpy())


def test_train_rejects_bad_arguments():
    with pytest.raises(ValueError, match="train: steps must be a positive int, got 0"):
        train(Regression(), _data(), steps=0)
    with pytest.raises(TypeError, match="train: Linear has no loss"):
        train(nn.Linear(3, 1), _data(), steps=1)


def test_batches_cover_every_row_once_per_epoch():
    x = np.arange(10)
    seen = np.concatenate(list(batches(x, 3, rng=0)))
    assert sorted(seen) == list(range(10)) and not np.array_equal(seen, x)
    assert [len(b) for b in batches(x, 3, shuffle=False, drop_last=True)] == [3, 3, 3]
    xs, ys = next(batches((x, x * 2), 4, rng=1))
    np.testing.assert_array_equal(ys, xs * 2)
    with pytest.raises(ValueError, match="batches: arrays have different lengths"):
        next(batches((x, x[:5]), 2))
    stream = infinite_batches(x, 4, rng=0)
    assert all(len(next(stream)) == 4 for _ in range(7))   # reshuffles past one epoch


def test_cli_engine_demo_learns_the_digits():
    """The README's engine demo, seeded (its MLP and batches take rng=0), trains through train()
    (the info command and the rest of the CLI are tested in test_cli.py)."""
    from minigen.cli.demo import engine_demo
    accuracy, n_test = engine_demo(quick=True, log=io.StringIO(), rng=0)
    assert n_test == 359 and accuracy > 0.9          # chance is 0.1


# --- the contract: budgets, hook, optimisers, validation, progress ------------------------------
class Noisy(nn.Module):
    """float64 regression whose loss draws from its own generator (as DDPM's does) and from
    minigen's global one, so an exact resume needs both restored."""

    def __init__(self, rng=0):
        super().__init__()
        self.lin = nn.Linear(3, 1, rng=0).double()
        self.rng = np.random.default_rng(rng)

    def loss(self, batch):
        x, y = batch
        x = x + 0.1 * self.rng.standard_normal(x.shape)
        y = y + 0.1 * backend.default_rng("cpu").standard_normal(y.shape)
        return F.mse_loss(self.lin(mg.tensor(x)), mg.tensor(y))


@pytest.fixture
def global_rng():
    """Seed minigen's global generator for the test and restore its state afterwards."""
    gen = backend.default_rng("cpu")
    saved = gen.bit_generator.state
    gen.bit_generator.state = np.random.default_rng(7).bit_generator.state
    yield gen
    gen.bit_generator.state = saved


def _data64(n=100):
    x, y = _data(n)
    return x.astype(np.float64), y.astype(np.float64)


def _full_run(tmp_path, name, steps, resume=None, model_rng=0, **kw):
    model = Noisy(rng=model_rng)
    result = train(model, _data64(), steps=steps, batch_size=32, lr=0.02, rng=3,
                   ema_decay=0.9, clip_grad=5.0, schedule=lambda o: optim.StepLR(o, 30, 0.5),
                   log_every=10, checkpoint=tmp_path / name, resume=resume, verbose=False, **kw)
    return model, result


def test_resume_gives_the_same_losses_and_weights_as_one_run(tmp_path, global_rng):
    global_rng.bit_generator.state = np.random.default_rng(7).bit_generator.state
    whole, r_whole = _full_run(tmp_path, "whole.npz", 100)
    global_rng.bit_generator.state = np.random.default_rng(7).bit_generator.state
    _full_run(tmp_path, "half.npz", 50)          # 50 = 16 epochs of 3 batches + 2: mid-epoch
    global_rng.standard_normal(1000)              # whatever ran in between
    resumed, r_resumed = _full_run(tmp_path, "half.npz", 100, resume=tmp_path / "half.npz",
                                   model_rng=123)
    assert r_resumed.steps == 100 and len(r_resumed.losses) == 100
    np.testing.assert_array_equal(r_resumed.losses, r_whole.losses)
    for k, v in whole.state_dict().items():
        np.testing.assert_array_equal(resumed.state_dict()[k], v)
    for k, v in r_whole.ema.shadow.items():
        np.testing.assert_array_equal(r_resumed.ema.shadow[k], v)
    assert load_checkpoint(tmp_path / "half.npz").step == 100


def test_resume_checks_the_budget_and_the_optimisers(tmp_path):
    _full_run(tmp_path, "c.npz", 20)
    with pytest.raises(ValueError, match="is at step 20, past the budget of 10 steps"):
        _full_run(tmp_path, "c.npz", 10, resume=tmp_path / "c.npz")
    with pytest.raises(ValueError, match="optimisers"):
        train(Noisy(), _data64(), steps=30, batch_size=32, resume=tmp_path / "c.npz",
              optimizer={"a": optim.SGD(Noisy().parameters())}, verbose=False)
    model, result = _full_run(tmp_path, "c.npz", 20, resume=tmp_path / "c.npz")
    assert result.steps == 20 and len(result.losses) == 20      # nothing left to do


def test_epochs_budget_counts_whole_batches():
    model = Regression()
    result = train(model, _data(100), epochs=3, batch_size=32, verbose=False, rng=0)
    assert result.steps == 9 == model.calls                      # 3 * (100 // 32)


class FakeGAN(nn.Module):
    """Two players on two optimisers: ``a`` takes two SGD steps per training step on its loss,
    ``b`` one on its own; the hook returns both losses."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 1, rng=0).double(), nn.Linear(3, 1, rng=1).double()
        self.seen = []

    def configure_optimizers(self, lr):
        return {"a": optim.SGD(self.a.parameters(), lr=lr),
                "b": optim.SGD(self.b.parameters(), lr=2 * lr)}

    def _loss(self, net, batch):
        x, y = batch
        return F.mse_loss(net(mg.tensor(x)), mg.tensor(y))

    def train_step(self, batch, step, optimizers):
        self.seen.append(step)
        for _ in range(2):
            optimizers["a"].zero_grad()
            loss_a = self._loss(self.a, batch)
            loss_a.backward()
            optimizers["a"].step()
        optimizers["b"].zero_grad()
        loss_b = self._loss(self.b, batch)
        loss_b.backward()
        optimizers["b"].step()
        return {"a_loss": loss_a.item(), "b_loss": loss_b}


def test_two_optimizer_train_step_hook(tmp_path):
    data = _data64(64)
    out = io.StringIO()
    gan = FakeGAN()
    result = train(gan, data, steps=6, batch_size=64, lr=0.05, log_every=3, out=out,
                   checkpoint=tmp_path / "gan.npz")
    assert gan.seen == [1, 2, 3, 4, 5, 6]
    assert set(result.history) == {"a_loss", "b_loss"}
    np.testing.assert_array_equal(result.losses, result.history["a_loss"])
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "a_loss" in lines[-1] and "b_loss" in lines[-1]
    # by hand: full-batch SGD, a at lr 0.05 twice per step, b at lr 0.1 once
    ref = FakeGAN()
    for net, lr, k in ((ref.a, 0.05, 12), (ref.b, 0.1, 6)):
        opt = optim.SGD(net.parameters(), lr=lr)
        for _ in range(k):
            opt.zero_grad()
            ref._loss(net, data).backward()
            opt.step()
    for k, v in ref.state_dict().items():
        np.testing.assert_allclose(gan.state_dict()[k], v, rtol=1e-12)
    ckpt = load_checkpoint(tmp_path / "gan.npz")
    assert sorted(ckpt.optimizers) == ["a", "b"]
    assert int(ckpt.optimizers["a"]["step_count"]) == 12
    assert int(ckpt.optimizers["b"]["step_count"]) == 6


class FullBatch(nn.Module):
    """Deterministic float64 least squares (no noise), for replaying train() by hand."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 1, rng=0).double()

    def loss(self, batch):
        return F.mse_loss(self.lin(mg.tensor(batch[0])), mg.tensor(batch[1]))


def test_optimizer_schedule_and_clip_grad_are_all_used():
    """Full-batch float64 SGD with momentum, a halving schedule and clipping, replayed by hand:
    dropping any of the three changes the weights."""
    data = _data64(64)

    def by_hand(clip, gamma):
        model = FullBatch()
        opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
        for k in range(5):
            opt.zero_grad()
            model.loss(data).backward()
            if clip:
                optim.clip_grad_norm_(list(model.parameters()), clip)
            opt.lr = 0.1 * gamma ** k
            opt.step()
        return model.lin.weight.numpy()

    model = FullBatch()
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.5)
    train(model, data, steps=5, batch_size=64, optimizer=opt, clip_grad=0.3,
          schedule=lambda o: optim.StepLR(o, 1, 0.5), verbose=False)
    got = model.lin.weight.numpy()
    assert opt.lr == pytest.approx(0.1 * 0.5 ** 5)
    np.testing.assert_allclose(got, by_hand(0.3, 0.5), rtol=1e-12)
    assert not np.allclose(got, by_hand(None, 0.5), rtol=1e-6)      # the clip matters
    assert not np.allclose(got, by_hand(0.3, 1.0), rtol=1e-6)       # the schedule matters
    default = FullBatch()                                            # Adam, not the SGD given
    train(default, data, steps=5, batch_size=64, lr=0.1, clip_grad=0.3,
          schedule=lambda o: optim.StepLR(o, 1, 0.5), verbose=False)
    assert not np.allclose(got, default.lin.weight.numpy(), rtol=1e-6)


def test_clip_grad_bounds_the_first_step():
    model = FullBatch()
    w0 = np.concatenate([p.numpy().ravel() for p in model.parameters()])
    train(model, _data64(64), steps=1, batch_size=64, optimizer=optim.SGD(
        model.parameters(), lr=0.1), clip_grad=1e-3, verbose=False)
    w1 = np.concatenate([p.numpy().ravel() for p in model.parameters()])
    assert np.linalg.norm(w1 - w0) == pytest.approx(0.1 * 1e-3, rel=1e-5)


# --- faults: NaN, failed writes, kills, interrupts ---------------------------------------------
class SqrtOfZero(nn.Module):
    """loss = sum sqrt(w * w) at w = 0: a finite loss (0) whose gradient is NaN at step 1."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(np.zeros(3))

    def loss(self, batch):
        return F.sqrt(self.w * self.w).sum()


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")
@pytest.mark.parametrize("clip_grad", [None, 1.0])
def test_nan_gradient_stops_before_the_update_and_writes_no_checkpoint(tmp_path, clip_grad):
    model = SqrtOfZero()
    with pytest.raises(FloatingPointError, match="train: a gradient is not finite at step 1"):
        train(model, np.zeros((8, 1)), steps=5, batch_size=4, log_every=1, clip_grad=clip_grad,
              checkpoint=tmp_path / "c.npz", verbose=False)
    np.testing.assert_array_equal(model.w.numpy(), np.zeros(3))     # not updated
    assert not (tmp_path / "c.npz").exists()
    assert not model.training


class BreaksItsWeights(nn.Module):
    """A train_step model whose step 2 makes its parameters NaN while reporting finite losses."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(np.ones(2))

    def train_step(self, batch, step, optimizers):
        if step == 2:
            with mg.no_grad():
                self.w.data[...] = np.nan
        return {"loss": 1.0}


def test_non_finite_weights_are_never_checkpointed(tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(FloatingPointError, match="parameter w is not finite after step 2"):
        train(BreaksItsWeights(), np.zeros((4, 1)), steps=3, batch_size=2, log_every=1,
              checkpoint=path, verbose=False)
    assert load_checkpoint(path).step == 1
    np.testing.assert_array_equal(load_checkpoint(path).model["w"], [1.0, 1.0])


def test_a_failed_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "c.npz"
    train(Regression(), _data(), steps=4, batch_size=32, log_every=2, checkpoint=path,
          verbose=False)
    before = path.read_bytes()

    def crash(f, **arrays):
        f.write(b"PK\x03\x04 half an archive")
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez_compressed", crash)
    with pytest.raises(OSError, match="disk full"):
        train(Regression(), _data(), steps=4, batch_size=32, log_every=2, checkpoint=path,
              verbose=False)
    assert path.read_bytes() == before and load_checkpoint(path).step == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]   # no temporary left


_KILLED_WRITER = """
import sys, numpy as np, minigen as mg
big = np.random.default_rng(0).standard_normal(8_000_000)
while True:
    mg.save({"w": big}, sys.argv[1])
"""


def test_a_killed_writer_leaves_the_previous_checkpoint(tmp_path):
    """SIGKILL a process while it rewrites a checkpoint: the file still loads, unchanged."""
    import os
    import signal
    import subprocess
    import time
    path = tmp_path / "c.npz"
    mg.save({"w": np.arange(3.0)}, path)
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, str(path)])
    try:
        deadline = time.monotonic() + 60
        while not any(p.name.endswith(".tmp") for p in tmp_path.iterdir()):
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.005)
        time.sleep(0.05)                                   # mid-write
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    state = mg.load(path)
    if state["w"].size == 3:        # killed during the first rewrite: the original is intact
        np.testing.assert_array_equal(state["w"], np.arange(3.0))
    else:                           # or a complete later version, never a torn one
        assert state["w"].shape == (8_000_000,)


class InterruptAt:
    """A schedule whose step() interrupts training at one step: by raising KeyboardInterrupt
    inside the step, or by sending this process SIGINT (a Ctrl-C, which train defers to the
    end of the step)."""

    def __init__(self, at, how):
        self.at, self.how, self.calls = at, how, 0

    def __call__(self, optimizer):
        return self

    def step(self):
        self.calls += 1
        if self.calls == self.at:
            if self.how == "raise":
                raise KeyboardInterrupt
            import os
            import signal
            signal.raise_signal(signal.SIGINT)      # to this thread, not any thread

    def state_dict(self):
        return {"calls": np.array(self.calls)}

    def load_state_dict(self, state):
        self.calls = int(state["calls"])


def test_interrupt_inside_a_step_restores_eval_mode_keeps_the_checkpoint_and_reraises(
        tmp_path):
    path = tmp_path / "c.npz"
    model = Regression()
    with pytest.raises(KeyboardInterrupt) as info:
        train(model, _data(), steps=50, batch_size=32, log_every=5, checkpoint=path,
              schedule=InterruptAt(7, "raise"), verbose=False)
    assert isinstance(info.value, TrainingInterrupted) and info.value.result.steps == 6
    assert info.value.inside_step and "inside step 7" in str(info.value)
    assert not model.training and load_checkpoint(path).step == 5


class CtrlC(Noisy):
    """Noisy, with a SIGINT (what Ctrl-C sends) to this process inside the loss of one step."""

    def __init__(self, at):
        super().__init__()
        self.at, self.calls = at, 0

    def loss(self, batch):
        import os
        import signal
        self.calls += 1
        if self.calls == self.at:
            signal.raise_signal(signal.SIGINT)      # to this thread, not any thread
        return super().loss(batch)


@pytest.fixture
def python_sigint_handler():
    """Python's own SIGINT handler, as in a fresh interpreter (a library loaded by an earlier
    test, e.g. distributed, may have installed its own, which train leaves alone)."""
    import signal
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_finishes_the_step_and_the_run_resumes_exactly(tmp_path, global_rng,
                                                             python_sigint_handler):
    options = dict(batch_size=32, lr=0.02, rng=3, ema_decay=0.9, log_every=10, verbose=False,
                   schedule=lambda o: optim.StepLR(o, 30, 0.5), checkpoint=tmp_path / "c.npz")
    global_rng.bit_generator.state = np.random.default_rng(7).bit_generator.state
    whole = Noisy()
    r_whole = train(whole, _data64(), steps=40, **options)
    global_rng.bit_generator.state = np.random.default_rng(7).bit_generator.state
    cut = CtrlC(at=23)
    with pytest.raises(TrainingInterrupted) as info:
        train(cut, _data64(), steps=40, **options)
    assert info.value.result.steps == 23 == load_checkpoint(tmp_path / "c.npz").step
    assert not cut.training
    resumed = Noisy(rng=99)
    r_resumed = train(resumed, _data64(), steps=40, resume=tmp_path / "c.npz", **options)
    np.testing.assert_array_equal(r_resumed.losses, r_whole.losses)
    np.testing.assert_array_equal(resumed.lin.weight.numpy(), whole.lin.weight.numpy())


def test_interrupted_fit_keeps_the_model_usable():
    from minigen.models import DDPM, NoiseSchedule, TimeMLP
    X = np.random.default_rng(0).standard_normal((64, 2))
    model = DDPM(TimeMLP(2, hidden=8, rng=0), NoiseSchedule(T=10), rng=0)
    with pytest.raises(KeyboardInterrupt):
        model.fit(X, steps=20, batch_size=32, schedule=InterruptAt(5, "raise"))
    assert not model.training and model.history_.steps == 4 and len(model.losses_) == 4
    assert model.ema_ is not None and model.sample(3, rng=0).shape == (3, 2)


# --- validation, early stopping, progress, arguments -------------------------------------------
class Probe(Regression):
    """Records the mode and grad mode its loss runs in."""

    def __init__(self):
        super().__init__()
        self.modes = []

    def loss(self, batch):
        self.modes.append((self.training, mg.is_grad_enabled()))
        return super().loss(batch)


def test_validation_runs_under_eval_and_no_grad():
    model = Probe()
    x, y = _data(96)
    result = train(model, (x[:64], y[:64]), steps=4, batch_size=32, val_every=2,
                   validation=(x[64:], y[64:]), verbose=False)
    # steps 1, 2 | the validation batch | steps 3, 4 | the validation batch
    assert model.modes == [(True, True)] * 2 + [(False, False)] + [(True, True)] * 2 \
        + [(False, False)]
    assert [s for s, _ in result.val_losses] == [2, 4]
    model.eval()
    with mg.no_grad():
        expected = np.mean([model.loss((x[64:96], y[64:96])).item()])
    assert result.val_losses[-1][1] == pytest.approx(expected, rel=1e-6)


def test_early_stopping_restores_the_best_weights():
    scores = iter([3.0, 2.0, 1.0, 1.5, 2.5, 0.5])
    seen = {}

    def metric(model, validation):
        seen[len(seen) + 1] = model.lin.weight.numpy().copy()
        return next(scores)

    model = Regression()
    result = train(model, _data(), steps=60, batch_size=32, val_every=5, patience=2,
                   validation=_data(64), metric=metric, verbose=False)
    assert result.steps == 25 and result.best_step == 15
    assert [v for _, v in result.val_losses] == [3.0, 2.0, 1.0, 1.5, 2.5]
    np.testing.assert_array_equal(model.lin.weight.numpy(), seen[3])
    assert not np.array_equal(seen[3], seen[5])


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_on_a_terminal_redraws_one_line():
    out = FakeTerminal()
    train(Regression(), _data(), steps=30, batch_size=32, validation=_data(64), val_every=10,
          out=out)
    text = out.getvalue()
    assert text.startswith("\r") and text.endswith("\n") and text.count("\n") == 1
    last = text.split("\r")[-1]
    assert "step     30/30" in last and "loss" in last and "val" in last and "steps/s" in last
    partial = text.split("\r")[1]
    assert "ETA" in partial or partial.startswith("Regression  step     30")


def test_verbose_false_prints_nothing():
    out = io.StringIO()
    train(Regression(), _data(), steps=5, batch_size=32, out=out, verbose=False)
    assert out.getvalue() == ""


class ScalarLosses(Regression):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def loss(self, batch):
        loss = super().loss(batch)
        return loss.item() if self.kind == "float" else mg.tensor(np.ones(3)) * loss


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(steps=3.5), ValueError, "train: steps must be a positive int, got 3.5"),
    (dict(steps="10"), ValueError, "train: steps must be a positive int, got '10'"),
    (dict(steps=10, epochs=2), ValueError, "exactly one of steps= or epochs="),
    (dict(), ValueError, "exactly one of steps= or epochs="),
    (dict(steps=5, log_every=0), ValueError, "train: log_every must be a positive int, got 0"),
    (dict(steps=5, schedule="cosine"), TypeError, "train: schedule must be a callable"),
    (dict(steps=5, clip_grad=0), ValueError, "train: clip_grad must be a positive finite number"),
    (dict(steps=5, clip_grad=-1.0), ValueError, "train: clip_grad must be a positive finite"),
    (dict(steps=5, patience=3), ValueError, "train: patience= needs a validation= set"),
    (dict(steps=5, lr=float("nan")), ValueError, "train: lr must be a positive finite number, got nan"),
    (dict(steps=5, ema_decay=1.0), ValueError,
     r"train: ema_decay must be a finite number in \[0, 1\), got 1.0"),
    (dict(steps=5, optimizer="adam"), TypeError, "train: optimizer must be an Optimizer"),
])
def test_arguments_are_checked_before_any_step(kwargs, error, match):
    model = Regression()
    with pytest.raises(error, match=match):
        train(model, _data(), batch_size=32, verbose=False, **kwargs)
    assert model.calls == 0


@pytest.mark.parametrize("kind, error, match", [
    ("float", TypeError, "train: model.loss must return a scalar Tensor .* got float at step 1"),
    ("vector", ValueError, r"scalar float Tensor, got shape \(3,\)"),
])
def test_the_loss_must_be_a_scalar_tensor(kind, error, match):
    with pytest.raises(error, match=match):
        train(ScalarLosses(kind), _data(), steps=3, batch_size=32, verbose=False)


def test_hook_models_reject_options_they_would_ignore():
    with pytest.raises(ValueError, match="clip_grad applies to the default step; FakeGAN"):
        train(FakeGAN(), _data64(64), steps=2, batch_size=32, clip_grad=1.0)
    gan = FakeGAN()
    with pytest.raises(ValueError, match=r"optimizer names must be .* got \['a/b'\]"):
        train(gan, _data64(64), steps=2, batch_size=32,
              optimizer={"a/b": optim.SGD(gan.parameters())})
    assert gan.seen == []


class Chatty(nn.Module):
    def __init__(self, value):
        super().__init__()
        self.w, self.value = nn.Parameter(np.ones(2)), value

    def train_step(self, batch, step, optimizers):
        return self.value


@pytest.mark.parametrize("value, error, match", [
    ({"loss": "low"}, TypeError, "Chatty.train_step returned loss='low'; expected a number"),
    (0.5, TypeError, "Chatty.train_step must return a non-empty dict name -> loss, got float"),
    ({}, TypeError, "must return a non-empty dict"),
    ({"loss": float("inf")}, FloatingPointError, "train: loss is inf at step 1"),
])
def test_train_step_results_are_checked(value, error, match):
    with pytest.raises(error, match=match):
        train(Chatty(value), np.zeros((4, 1)), steps=2, batch_size=2, verbose=False)
