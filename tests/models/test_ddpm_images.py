"""DDPM on images: DDPM.for_data (the command line's model), flat rows diffused as images
(``shape``), data mapped to [-1, 1] (``data_range``), and the TinyUNet's GroupNorm."""
import numpy as np
import pytest

import minigen as mg
from minigen import Tensor
from minigen.data import load_digits
from minigen.models import DDPM, NoiseSchedule, TimeMLP, TinyUNet
from minigen.models.diffusion import denoisers
from minigen.models.diffusion.denoisers import group_norm
from tests.helpers import gaussian_eps, spy_denoiser

Z = 4.0   # tolerance in standard errors


# --- for_data ------------------------------------------------------------------------------
def test_for_data_builds_a_time_mlp_for_rows():
    model = DDPM.for_data(np.zeros((10, 3)), rng=0)
    assert isinstance(model.denoiser, TimeMLP) and model.denoiser.dim == 3
    assert model.schedule.kind == "linear" and model.schedule.T == 1000
    assert model.data_range is None and model.shape is None and model.prediction == "eps"


def test_for_data_builds_a_unet_on_flat_rows_in_their_range():
    X = load_digits("train", scale="unit")[0][:50]
    assert DDPM.for_data(X, image_shape=(1, 8, 8)).denoiser.channels == 16
    model = DDPM.for_data(X, image_shape=(1, 8, 8), channels=8, rng=0)
    assert isinstance(model.denoiser, TinyUNet) and model.denoiser.channels == 8
    assert model.shape == (1, 8, 8) and model.data_range == (0.0, 1.0)
    assert model.prediction == "v" and model.schedule.kind == "cosine"
    assert model.sample_steps == 100
    model = DDPM.for_data(X, image_shape=(1, 8, 8), data_range=(-1, 2), prediction="eps")
    assert model.data_range == (-1.0, 2.0) and model.prediction == "eps"
    for shape in ((1, 4, 4), (8, 8)):
        with pytest.raises(ValueError, match="DDPM.for_data: image_shape"):
            DDPM.for_data(X, image_shape=shape)


def test_for_data_image_model_trains_and_samples_rows_in_range():
    X = load_digits("train", scale="unit")[0][:256]
    model = DDPM.for_data(X, image_shape=(1, 8, 8), channels=8, schedule=NoiseSchedule(T=50),
                          rng=0)
    model.fit(X, steps=15, batch_size=32, lr=3e-3, rng=0)
    S = model.sample(6, rng=0, steps=5)
    # flat rows back, inside the data's range (x0_hat is clipped by default with data_range)
    assert S.shape == (6, 64) and S.min() >= -1e-6 and S.max() <= 1 + 1e-6
    # the loss starts at E[v^2] = 1 (the output layer starts at zero) and falls
    se = np.sqrt(2 / (32 * 64))
    assert abs(model.losses_[0] - 1) < Z * se and model.losses_[-3:].mean() < 1 - Z * se


def test_sample_steps_is_the_default_number_of_sampler_steps():
    s, eps_fn = NoiseSchedule(T=30), gaussian_eps(NoiseSchedule(T=30), 0.5, 0.2)
    model = DDPM(None, s, shape=(2,), sample_steps=5)
    S, path = model.sample(4, rng=0, eps_fn=eps_fn, return_trajectory=True)
    assert len(path) == 6
    np.testing.assert_array_equal(S, DDPM(None, s, shape=(2,)).sample(4, rng=0, steps=5,
                                                                      eps_fn=eps_fn))
    assert len(model.sample(4, rng=0, eps_fn=eps_fn, steps=30, return_trajectory=True)[1]) == 31
    with pytest.raises(ValueError, match=r"steps must be an int in \[1, 30\]"):
        DDPM(None, s, sample_steps=31)


# --- shape: flat rows diffused as images ----------------------------------------------------
def test_flat_rows_reach_the_denoiser_as_images_and_come_back_as_rows():
    spy = spy_denoiser()
    model = DDPM(spy, NoiseSchedule(T=10), shape=(1, 2, 3), rng=0)
    X = np.arange(24, dtype=np.float64).reshape(4, 6) / 24
    model.fit(X, steps=1, batch_size=4, ema_decay=None)
    assert spy.seen[-1].shape == (4, 1, 2, 3) and model.shape_ == (6,)
    assert model.sample(3, rng=0, steps=2).shape == (3, 6)
    S, path = model.sample(2, rng=0, steps=3, return_trajectory=True)
    assert S.shape == (2, 6) and path.shape == (4, 2, 6)
    assert spy.seen[-1].shape == (2, 1, 2, 3)
    assert model.log_prob(X, rng=0).shape == (4,)
    with pytest.raises(ValueError, match="sample shape"):
        model.log_prob(X.reshape(4, 1, 2, 3))
    images = DDPM(spy_denoiser(), NoiseSchedule(T=10), shape=(1, 2, 3), rng=0)
    images.fit(X.reshape(4, 1, 2, 3), steps=1, batch_size=4)
    assert images.sample(3, rng=0, steps=2).shape == (3, 1, 2, 3)
    unknown = DDPM(None, NoiseSchedule(T=10)).sample(4, rng=0, eps_fn=lambda x, t: 0 * x,
                                                      shape=(2, 3))
    assert unknown.shape == (4, 2, 3)
    with pytest.raises(ValueError, match=r"DDPM.fit: X has sample shape \(5,\)"):
        DDPM(spy_denoiser(), shape=(1, 2, 3)).fit(np.zeros((4, 5)), steps=1)


# --- data_range: [lo, hi] -> [-1, 1] inside the model ----------------------------------------
@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-3.0, 5.0)])
def test_training_data_is_scaled_to_the_unit_interval(lo, hi):
    spy = spy_denoiser()
    model = DDPM(spy, NoiseSchedule(T=10), data_range=(lo, hi), rng=0)
    X = np.array([[lo], [hi], [(lo + hi) / 2]])
    data = model._check_fit_data(X, None, "test")
    np.testing.assert_allclose(data[:, 0], [-1, 1, 0], atol=1e-6)


@pytest.mark.parametrize("lo,hi", [(0.0, 1.0), (-3.0, 5.0)])
def test_samples_are_mapped_back_to_the_data_range(lo, hi):
    """With the exact denoiser of N(0, 0.3^2) in the model's [-1, 1] space, fixed_large
    ancestral samples are N(0, 0.3^2) there (test_ddpm checks the sampler), so in data space
    their mean is (lo + hi) / 2 and their std 0.3 (hi - lo) / 2."""
    s = NoiseSchedule(T=200)
    model = DDPM(None, s, shape=(1,), data_range=(lo, hi))
    S = model.sample(20000, rng=0, eps_fn=gaussian_eps(s, 0.0, 0.3), variance="fixed_large")
    sd = 0.3 * (hi - lo) / 2
    assert abs(S.mean() - (lo + hi) / 2) < Z * sd / np.sqrt(20000)
    assert abs(S.std() - sd) < Z * sd / np.sqrt(40000) + 0.01 * sd


def test_x0_is_clipped_to_the_data_range_by_default():
    s = NoiseSchedule(T=50)
    wide = gaussian_eps(s, 0.0, 3.0)       # the exact denoiser of N(0, 9): far outside [-1, 1]
    S = DDPM(None, s, shape=(1,), data_range=(2, 4)).sample(2000, rng=0, eps_fn=wide)
    assert S.min() >= 2 - 1e-9 and S.max() <= 4 + 1e-9 and S.std() > 0.5
    free = DDPM(None, s, shape=(1,), data_range=(2, 4)).sample(2000, rng=0, eps_fn=wide,
                                                               clip=np.inf)
    assert free.min() < 2 and free.max() > 4


def test_log_prob_adds_the_jacobian_of_the_scaling():
    """log p_x(x) = log p_y(y) + d log(2 / (hi - lo)) for y = 2 (x - lo) / (hi - lo) - 1."""
    s, lo, hi = NoiseSchedule(T=20), -1.0, 3.0
    X = np.random.default_rng(0).uniform(lo, hi, size=(5, 3))
    Y = 2 * (X - lo) / (hi - lo) - 1
    eps_fn = gaussian_eps(s, 0.0, 0.5)
    scaled = DDPM(None, s, shape=(3,), data_range=(lo, hi)).log_prob(X, eps_fn=eps_fn, rng=1)
    plain = DDPM(None, s, shape=(3,)).log_prob(Y, eps_fn=eps_fn, rng=1)
    np.testing.assert_allclose(scaled, plain + 3 * np.log(2 / (hi - lo)), rtol=1e-10)


def test_image_model_round_trips_through_save_model(tmp_path):
    X = load_digits("train", scale="unit")[0][:64]
    model = DDPM.for_data(X, image_shape=(1, 8, 8), channels=4, schedule=NoiseSchedule(T=20),
                          rng=0).fit(X, steps=2, batch_size=16, rng=0)
    mg.save_model(model, tmp_path / "ddpm.npz")
    loaded = mg.load_model(tmp_path / "ddpm.npz")
    assert loaded.shape == (1, 8, 8) and loaded.data_range == (0.0, 1.0)
    assert loaded.denoiser.groups == model.denoiser.groups
    np.testing.assert_array_equal(loaded.sample(3, rng=0, steps=4), model.sample(3, rng=0, steps=4))


@pytest.mark.parametrize("data_range,match", [((1, 1), "lo < hi"), ((0, np.inf), "finite"),
                                              ("ab", "pair"), (3, "pair")])
def test_bad_data_range_is_named(data_range, match):
    with pytest.raises((TypeError, ValueError), match=f"DDPM: data_range.*{match}"):
        DDPM(None, data_range=data_range)


# --- GroupNorm ---------------------------------------------------------------------------------
def test_group_norm_normalises_each_group_then_scales_each_channel():
    x = np.random.default_rng(0).normal(2.0, 3.0, size=(2, 6, 3, 3))
    norm = group_norm(6, groups=3).double()
    norm.weight.data[:] = np.arange(1, 7)
    norm.bias.data[:] = -np.arange(6)
    y = norm(Tensor(x)).numpy()
    g = x.reshape(2, 3, -1)
    expected = ((g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + 1e-5))
    expected = expected.reshape(x.shape) * np.arange(1, 7)[:, None, None] \
        - np.arange(6)[:, None, None]
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)
    assert group_norm(12, groups=8).num_groups == 4    # gcd(8, 12)
    assert group_norm(12, groups=0).num_parameters() == 0  # no norm


def test_group_norm_matches_pytorch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(1).normal(size=(3, 8, 4, 4))
    ours = group_norm(8, groups=4).double()
    ours.weight.data[:] = np.linspace(0.5, 2, 8)
    ours.bias.data[:] = np.linspace(-1, 1, 8)
    theirs = torch.nn.GroupNorm(4, 8).double()
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(ours.weight.data))
        theirs.bias.copy_(torch.tensor(ours.bias.data))
    np.testing.assert_allclose(ours(Tensor(x)).numpy(),
                               theirs(torch.tensor(x)).detach().numpy(), rtol=1e-9, atol=1e-9)



def _unet_output_and_gradients(net, x, t):
    out = net(x, t)
    grads = mg.grad((out * out).sum(), list(net.parameters()))
    return [out.numpy()] + [g.numpy() for g in grads]


@pytest.mark.parametrize("activation", ["silu", "relu"])
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-11), (np.float32, 5e-5)])
@pytest.mark.parametrize("same_t", [False, True])
def test_tiny_unet_fused_norm_act_equals_the_unfused_modules(activation, dtype, tol, same_t,
                                                             monkeypatch):
    """group_norm_act in the ResBlocks and before conv_out gives the output and every
    parameter's gradient of norm, + U e, act as separate modules, with one time-embedding
    row for the batch (equal t, as in sampling) and one per sample; the state dict keeps its
    keys.  float32: sums in another order move the last bits (eps32 1.2e-7 times sums over
    hundreds of entries)."""
    rng = np.random.default_rng(5)
    net = TinyUNet(1, 16, 16, activation, 8, rng=0)
    if dtype == np.float64:
        net = net.double()
    for p in net.parameters():          # conv_out starts at zero: give it weights
        p.data[...] = rng.standard_normal(p.shape).astype(p.dtype) / 4
    x = mg.tensor(rng.standard_normal((4, 1, 8, 8)).astype(dtype))
    t = np.full(4, 7) if same_t else np.array([1, 50, 400, 999])
    fused = _unet_output_and_gradients(net, x, t)
    monkeypatch.setattr(denoisers, "KINDS", ())      # no kind fuses: the modules in turn
    unfused = _unet_output_and_gradients(net, x, t)
    for a, b in zip(fused, unfused):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    assert "down.norm1.weight" in net.state_dict() and "norm_out.bias" in net.state_dict()
