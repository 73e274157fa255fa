"""GAN and WGAN-GP: loss gradients against their analytic forms, the gradient penalty's
second derivative against finite differences, learning a 1-D Gaussian, reproducibility."""
import numpy as np
import pytest

import minigen as mg
from minigen import nn
from minigen.autograd import Tensor
from minigen.distribution import NoDensityError, NotFittedError
from minigen.models import GAN, WGANGP
from minigen.models.networks import MLPEncoder


def _sigmoid(a):
    return 1 / (1 + np.exp(-a))


def _linear_pair(model_cls, w, b, a, c, **kw):
    """D(x) = w x + b and G(z) = a z + c, float64: small enough for closed-form gradients."""
    g, d = nn.Linear(1, 1).double(), nn.Linear(1, 1).double()
    d.weight.data[...], d.bias.data[...] = w, b
    g.weight.data[...], g.bias.data[...] = a, c
    return model_cls(g, d, z_dim=1, **kw)


def test_nonsaturating_losses_match_their_analytic_gradients():
    rng = np.random.default_rng(0)
    x, z = rng.normal(2, 1, (16, 1)), rng.normal(size=(16, 1))
    w, b, a, c = 0.7, -0.3, 1.5, 0.4
    model = _linear_pair(GAN, w, b, a, c)
    f = a * z + c
    loss, _ = model.discriminator_loss(Tensor(x), Tensor(f))
    loss.backward()
    s_real, s_fake = _sigmoid(-(w * x + b)), _sigmoid(w * f + b)
    assert loss.item() == pytest.approx(np.mean(np.logaddexp(0, -(w * x + b)))
                                        + np.mean(np.logaddexp(0, w * f + b)), rel=1e-12)
    assert model.discriminator.weight.grad.numpy().item() == pytest.approx(
        np.mean(-s_real * x) + np.mean(s_fake * f), rel=1e-10)
    assert model.discriminator.bias.grad.numpy().item() == pytest.approx(
        np.mean(-s_real) + np.mean(s_fake), rel=1e-10)
    # L_G = mean softplus(-D(G(z))): dL/da = mean(-sigma(-D(f)) w z), dL/dc = mean(-sigma(-D(f)) w)
    g_loss = model.generator_loss(model.discriminator(model.generator(Tensor(z))))
    g_loss.backward()
    s = _sigmoid(-(w * f + b))
    assert model.generator.weight.grad.numpy().item() == pytest.approx(np.mean(-s * w * z), rel=1e-10)
    assert model.generator.bias.grad.numpy().item() == pytest.approx(np.mean(-s * w), rel=1e-10)


def test_wasserstein_generator_loss_gradient():
    z = np.random.default_rng(1).normal(size=(8, 1))
    model = _linear_pair(WGANGP, w=-1.3, b=0.2, a=0.5, c=2.0)
    model.generator_loss(model.discriminator(model.generator(Tensor(z)))).backward()
    # L_G = -mean(w (a z + c) + b): dL/da = -w mean(z), dL/dc = -w
    assert model.generator.weight.grad.numpy().item() == pytest.approx(1.3 * z.mean(), rel=1e-10)
    assert model.generator.bias.grad.numpy().item() == pytest.approx(1.3, rel=1e-12)


def test_gradient_penalty_weight_gradient_matches_finite_differences():
    rng = np.random.default_rng(2)
    critic = nn.Sequential(nn.Linear(2, 4, rng=rng), nn.Tanh(), nn.Linear(4, 1, rng=rng)).double()
    model = WGANGP(nn.Linear(3, 2, rng=rng).double(), critic, z_dim=3)
    real, fake = Tensor(rng.normal(size=(5, 2))), Tensor(rng.normal(size=(5, 2)))

    def penalty():
        model._rng = np.random.default_rng(7)     # the same interpolation weights every call
        return model.gradient_penalty(real, fake)

    penalty().backward()
    h = 1e-6
    for p in critic.parameters():
        # the last bias does not reach grad_x D, so it gets no gradient (and a zero numeric one)
        analytic = np.zeros(p.shape) if p.grad is None else p.grad.numpy().copy()
        numeric = np.zeros_like(analytic)
        for i in np.ndindex(p.shape):
            old = p.data[i]
            p.data[i] = old + h
            up = penalty().item()
            p.data[i] = old - h
            down = penalty().item()
            p.data[i] = old
            numeric[i] = (up - down) / (2 * h)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-8)
    assert np.abs(critic[0].weight.grad.numpy()).max() > 1e-3


def test_gradient_penalty_is_zero_for_a_unit_slope_critic():
    """D(x) = u . x with ||u|| = 1 has ||grad D|| = 1 everywhere: the penalty vanishes."""
    critic = nn.Linear(2, 1).double()
    critic.weight.data[...] = [[0.6, 0.8]]
    model = WGANGP(nn.Linear(2, 2).double(), critic, z_dim=2, rng=0)
    x = Tensor(np.random.default_rng(3).normal(size=(6, 2)))
    assert model.gradient_penalty(x, x * 2.0).item() == pytest.approx(0.0, abs=1e-10)
    critic.weight.data[...] = [[1.2, 1.6]]          # ||u|| = 2: penalty (2 - 1)^2 = 1
    assert model.gradient_penalty(x, x * 2.0).item() == pytest.approx(1.0, rel=1e-8)


class HalfSquaredNorm(nn.Module):
    """D(x) = ||x||^2 / 2, whose gradient is x itself."""

    def forward(self, x):
        return 0.5 * (x * x).sum(axis=1, keepdims=True)


def test_gradient_penalty_uses_random_interpolates_of_real_and_fake():
    """With grad D(x) = x, the penalty is mean_i (||e_i x_i + (1 - e_i) f_i|| - 1)^2 for the
    model's draws e_i ~ U[0, 1]."""
    rng = np.random.default_rng(8)
    x, f = rng.normal(size=(6, 2)), rng.normal(3, 1, size=(6, 2))
    model = WGANGP(nn.Linear(2, 2).double(), HalfSquaredNorm(), z_dim=2, rng=11)
    e = np.random.default_rng(11).random((6, 1))
    expected = np.mean((np.linalg.norm(e * x + (1 - e) * f, axis=1) - 1) ** 2)
    assert model.gradient_penalty(Tensor(x), Tensor(f)).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("seed", [0, 1])
def test_gan_learns_a_gaussian(seed):
    """An affine generator G(z) = a z + c against a small tanh discriminator, trained on
    N(0.5, 0.5^2) with the weights averaged (the default EMA): its mean and scale land within 4
    standard errors of a two-sample comparison, SE(mean) = sqrt(s^2/n + s^2/m) and
    SE(std) = sqrt(s^2/2n + s^2/2m), with n training points and m generated ones."""
    n, m, mu, sigma = 2000, 4000, 0.5, 0.5
    X = np.random.default_rng(4).normal(mu, sigma, (n, 1))
    model = GAN(nn.Linear(1, 1, rng=seed), MLPEncoder(1, 1, hidden=(32,), activation="tanh",
                                                      rng=seed), z_dim=1, rng=seed)
    model.fit(X, steps=1000, batch_size=256, lr=5e-3, rng=seed)
    S = model.sample(m, rng=1)
    se_mean = np.sqrt(sigma ** 2 / n + sigma ** 2 / m)
    se_std = np.sqrt(sigma ** 2 / (2 * n) + sigma ** 2 / (2 * m))
    assert abs(S.mean() - X.mean()) < 4 * se_mean
    assert abs(S.std() - X.std()) < 4 * se_std


def test_training_reports_named_losses_and_is_reproducible():
    X = np.random.default_rng(5).normal(size=(256, 2))

    def fit():
        return WGANGP.mlp(x_dim=2, z_dim=2, hidden=(16,), rng=3).fit(X, steps=10, batch_size=64,
                                                                     rng=4)

    a, b = fit(), fit()
    assert set(a.history_.history) >= {"d_loss", "g_loss", "wasserstein", "penalty"}
    assert len(a.history_.history["d_loss"]) == 10
    np.testing.assert_array_equal(a.sample(50, rng=6), b.sample(50, rng=6))
    assert not np.array_equal(a.sample(50, rng=6), a.sample(50, rng=7))


@pytest.mark.parametrize("cls", [GAN, WGANGP])
def test_resumed_training_equals_an_unbroken_run(cls, tmp_path):
    """7 steps, then a resume to 12, give the losses and weights of 12 unbroken steps (the
    generator's loss is carried by the checkpoint; no random draw is spent on reporting)."""
    X = np.random.default_rng(9).normal(size=(64, 2))

    def model():
        return cls.mlp(x_dim=2, z_dim=2, hidden=(8,), rng=1)

    whole = model().fit(X, steps=12, batch_size=16, rng=2)
    path = tmp_path / "ckpt.npz"
    first = model().fit(X, steps=7, batch_size=16, rng=2, checkpoint=path)
    resumed = model().fit(X, steps=12, batch_size=16, rng=2, resume=path)
    for name, values in whole.history_.history.items():
        np.testing.assert_array_equal(resumed.history_.history[name][7:], values[7:], name)
        np.testing.assert_array_equal(first.history_.history[name], values[:7], name)
    for (n, p), (_, q) in zip(whole.named_parameters(), resumed.named_parameters()):
        np.testing.assert_array_equal(p.numpy(), q.numpy(), n)


def test_a_non_finite_loss_stops_before_the_update():
    model = GAN.mlp(x_dim=2, z_dim=2, hidden=(8,), rng=0)
    X = np.random.default_rng(0).normal(size=(32, 2))
    next(model.discriminator.parameters()).data[...] = np.inf     # D(x) is inf or NaN
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    with pytest.raises(FloatingPointError, match="discriminator loss is .* at step 1"):
        model.fit(X, steps=3, batch_size=32)
    for n, p in model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[n], n)


def test_protocol_errors():
    model = GAN.mlp(x_dim=2, z_dim=2, hidden=(8,), rng=0)
    with pytest.raises(NotFittedError, match="not fitted"):
        model.sample(3)
    model.fit(np.zeros((8, 2)), steps=1, batch_size=8)
    with pytest.raises(NoDensityError, match="GAN defines no density"):
        model.log_prob(np.zeros((3, 2)))
    with pytest.raises(NoDensityError):
        model.score(np.zeros((3, 2)))
    assert model.sample(0).shape == (0, 2)
    assert model.sample(5, rng=0).dtype == mg.get_default_dtype()
    with pytest.raises(ValueError, match="n_critic must be a positive int"):
        WGANGP(nn.Linear(2, 2), nn.Linear(2, 1), z_dim=2, n_critic=0)
    with pytest.raises(ValueError, match="z_dim must be a positive int"):
        GAN(nn.Linear(2, 2), nn.Linear(2, 1))
    with pytest.raises(TypeError, match="generator must be a minigen Module"):
        GAN(lambda z: z, nn.Linear(2, 1), z_dim=2)
