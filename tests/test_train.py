"""The training loop, batching and the command line."""
import io

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen import nn
from minigen.data.batching import batches, infinite_batches
from minigen.train import load_checkpoint, train


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
    assert len(lines) == 4 and lines[-1].startswith("step    400/400  loss")
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
    from minigen.cli import engine_demo
    accuracy, n_test = engine_demo(quick=True, log=io.StringIO())
    assert n_test == 359 and accuracy > 0.9          # chance is 0.1


def test_cli_info_lists_the_kernels(capsys):
    from minigen.cli import main
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"minigen {mg.__version__}") and "log_kernel_sum" in text
