"""Generative adversarial networks: the non-saturating GAN and WGAN-GP.

A generator G maps noise z ~ N(0, I) to samples; a discriminator (critic) D scores samples.
Neither gives a density, so both models sample but do not score (``NoDensityError``).

Non-saturating GAN (Goodfellow et al. 2014, section 3), with D returning a logit and
sigma the logistic function:
    L_D = -E_x log sigma(D(x)) - E_z log(1 - sigma(D(G(z))))
        =  E_x softplus(-D(x)) + E_z softplus(D(G(z)))
    L_G = -E_z log sigma(D(G(z))) = E_z softplus(-D(G(z)))       (instead of minimising
          E log(1 - sigma(D(G(z)))), whose gradient vanishes while D wins)

WGAN-GP (Gulrajani et al. 2017, Algorithm 1), with a critic D (no sigmoid):
    L_D = E_z D(G(z)) - E_x D(x) + lambda E_xh (||grad_xh D(xh)||_2 - 1)^2,
          xh = e x + (1 - e) G(z),  e ~ U[0, 1] per sample
    L_G = -E_z D(G(z))
The penalty's gradient with respect to the critic's weights is a second derivative: it runs
through ``minigen.grad(..., create_graph=True)``. The Wasserstein estimate E D(x) - E D(G(z))
is reported during training.

One training step is one discriminator update on a batch; the generator is updated on steps
1, 1 + n_critic, 1 + 2 n_critic, ... (n_critic = 5 for WGAN-GP, as in the paper; 1 for the
GAN), so ``steps=`` counts discriminator updates. Adam defaults follow each paper's toy experiments.

``data_scale`` s: the networks see x / s, and samples are G(z) s. Lambda and the target norm 1
of the penalty are in the critic's input units, so the scale of the data matters to WGAN-GP:
the paper's toy code divides the 8- and 25-Gaussians by 2.828 (per-coordinate sd 0.5) and uses
lambda 0.1. ``WGANGP.for_data`` does the same for rows of any data: s = 2 sd(X), lambda 0.1
(on the moons at ``minigen fit``'s 2,000 steps: sliced Wasserstein 0.86 -> 0.10).
"""
import contextlib

import numpy as np

from .. import _checks
from .. import functional as F
from ..autograd import Tensor, grad, no_grad
from ..backend import as_rng, per_example
from ..distributed import allreduce_scalar
from ..distribution import check_fitted, check_n_samples, register
from ..nn import Module
from ..optim import Adam
from .base import DeepModel
from .networks import ConvDecoder, ConvEncoder, MLPDecoder, MLPEncoder, check_image_shape


def _z_dim(generator, z_dim, where):
    """The noise size: ``z_dim``, or the generator's ``z_dim`` attribute when it is None; the
    two must agree when both are given."""
    takes = getattr(generator, "z_dim", None)
    if z_dim is None and takes is None:
        raise ValueError(f"{where}: z_dim must be a positive int (the generator has no z_dim "
                         "attribute to take it from), got None")
    z_dim = _checks.positive_int(takes if z_dim is None else z_dim, "z_dim", where)
    if takes is not None and z_dim != takes:
        raise ValueError(f"{where}: z_dim={z_dim} but the generator takes z_dim={takes!r}")
    return z_dim


def _check_betas(betas, where):
    """None (each model's default) or Adam's (beta1, beta2), each in [0, 1)."""
    if betas is None:
        return None
    pair = () if isinstance(betas, (str, bytes)) or not np.iterable(betas) else tuple(betas)
    if len(pair) != 2:
        raise ValueError(f"{where}: betas must be a pair (beta1, beta2) of numbers in [0, 1), "
                         f"got {_checks.excerpt(betas)}")
    return tuple(_checks.real(b, "betas", where, low=0, high=1, high_open=True) for b in pair)


def _checked(name, loss, step, rows):
    """The loss's value averaged over the ranks by their ``rows`` (itself in one process), so
    that a non-finite loss on any rank stops every rank at the same step, and the loss history
    does not depend on the number of ranks."""
    value = allreduce_scalar(loss.item(), rows)
    if not np.isfinite(value):
        raise FloatingPointError(f"GAN.train_step: the {name} is {value} at step {step}; lower "
                                 "the learning rate or check the data")
    return value


@register("gan")
class GAN(DeepModel):
    """Non-saturating GAN: ``generator`` (n, z_dim) -> samples, ``discriminator`` samples ->
    (n, 1) logits. ``GAN.mlp(x_dim, z_dim)`` and ``GAN.conv(image_shape, z_dim)`` build both
    networks from sizes. Defaults: Adam lr 2e-4, betas (0.5, 0.999) (Radford et al. 2016)."""

    has_density = False
    density_hint = ("a GAN only samples: compare sample(n) with held-out data through "
                    "minigen.metrics (sliced_wasserstein, mmd)")
    default_lr, default_betas, default_n_critic = 2e-4, (0.5, 0.999), 1

    def __init__(self, generator, discriminator, z_dim=None, n_critic=None, betas=None,
                 data_scale=None, rng=None):
        super().__init__()
        where = type(self).__name__
        for name, net in (("generator", generator), ("discriminator", discriminator)):
            if not isinstance(net, Module):
                raise TypeError(f"{where}: {name} must be a minigen Module, "
                                f"got {type(net).__name__}")
        n = _checks.positive_int(n_critic, "n_critic", where, optional=True)
        _check_betas(betas, where)
        _checks.positive(data_scale, "data_scale", where, optional=True)
        self.generator, self.discriminator = generator, discriminator
        self.data_scale = data_scale
        self.z_dim, self.n_critic, self.betas, self.rng = z_dim, n_critic, betas, rng
        self._z_dim = _z_dim(generator, z_dim, where)
        self._n_critic = self.default_n_critic if n is None else n
        self._rng = as_rng(rng, where=where)
        self.ema_ = None
        # the generator loss of its latest update, reported at every step; a buffer, so a
        # checkpoint carries it and a resumed run reports (and draws) exactly as an unbroken one
        self.register_buffer("g_loss", np.zeros((), dtype=np.float64))

    # --- networks from sizes ---------------------------------------------------------------
    @classmethod
    def mlp(cls, x_dim, z_dim=2, hidden=(128, 128, 128), rng=None, **kwargs):
        """MLP generator and discriminator with ``hidden`` ReLU layers (the WGAN-GP paper's
        toy networks use three layers of 512)."""
        where = f"{cls.__name__}.mlp"
        _checks.positive_int(x_dim, "x_dim", where)
        _checks.positive_int(z_dim, "z_dim", where)
        _checks.int_tuple(hidden, "hidden", where)
        init = as_rng(rng, where=where)
        return cls(MLPDecoder(z_dim, x_dim, hidden=hidden, rng=init),
                   MLPEncoder(x_dim, 1, hidden=hidden, rng=init), z_dim=z_dim, rng=rng,
                   **kwargs)

    @classmethod
    def conv(cls, image_shape=(1, 8, 8), z_dim=16, channels=(16, 32), rng=None, **kwargs):
        """Small conv generator and discriminator for images flattened to rows (DCGAN-like:
        strided convolutions down with LeakyReLU in the discriminator, transposed convolutions
        up with ReLU in the generator; Radford et al. 2016). ``channels`` per stride-2 stage.
        Sliced Wasserstein distance to the held-out 8x8 digits (seed 0): 0.142 with a ReLU
        discriminator at lr 2e-4 (800 steps), 0.086 with LeakyReLU at lr 1e-3, 0.069 with
        channels (32, 64) and 1,200 steps (the demo's recipe)."""
        where = f"{cls.__name__}.conv"
        _checks.positive_int(z_dim, "z_dim", where)
        channels = _checks.int_tuple(channels, "channels", where, nonempty=True)
        check_image_shape(image_shape, len(channels), where)   # one halving per stage
        init = as_rng(rng, where=where)
        return cls(ConvDecoder(z_dim, image_shape, channels=channels, rng=init),
                   ConvEncoder(1, image_shape, channels=channels, activation="leaky_relu",
                               rng=init), z_dim=z_dim, rng=rng, **kwargs)

    @classmethod
    def for_data(cls, X, image_shape=None, **params):
        """MLP networks for rows of X, or conv networks when ``image_shape`` is given."""
        if image_shape is not None:
            return cls.conv(image_shape=tuple(image_shape), **params)
        return cls.mlp(np.shape(X)[1], **params)

    def configure_optimizers(self, lr):
        betas = self.default_betas if self.betas is None else self.betas
        return {"discriminator": Adam(self.discriminator.parameters(), lr=lr, betas=betas),
                "generator": Adam(self.generator.parameters(), lr=lr, betas=betas)}

    def fit(self, X, y=None, *, lr=None, ema_decay=0.999, **kwargs):
        """Train on X (n, x_dim); ``steps=`` counts discriminator updates (see the module
        docstring). ``ema_decay``: sample from an exponential moving average of the weights,
        which damps the oscillation of adversarial training around its equilibrium (Yazici et
        al. 2019; None turns it off). Other keywords as ``DeepModel.fit``."""
        return super().fit(X, y, lr=self.default_lr if lr is None else lr,
                           ema_decay=ema_decay, **kwargs)

    def _after_fit(self, data):
        self.ema_ = self.history_.ema

    # --- one step ----------------------------------------------------------------------------
    def _noise(self, n):
        z = per_example(self._rng.standard_normal, (n, self._z_dim))
        return Tensor(z.astype(self.dtype))

    def discriminator_loss(self, real, fake):
        """L_D for a batch of real rows and generated rows (Tensors); also returns the dict
        of values reported in the progress line."""
        d_real, d_fake = self.discriminator(real), self.discriminator(fake)
        loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
        return loss, {"d_loss": loss.item()}

    def generator_loss(self, d_fake):
        return F.softplus(-d_fake).mean()

    def train_step(self, batch, step, optimizers):
        """One discriminator update; a generator update too on steps 1, 1 + n_critic, ...
        (after the first, n_critic discriminator updates come between generator updates).
        A non-finite loss stops training before the update it would poison."""
        real = np.asarray(batch, dtype=self.dtype)
        real = Tensor(real if self.data_scale is None else real / real.dtype.type(self.data_scale))
        with no_grad():
            fake = self.generator(self._noise(len(batch)))
        optimizers["discriminator"].zero_grad()
        d_loss, report = self.discriminator_loss(real, fake)
        _checked("discriminator loss", d_loss, step, len(batch))
        d_loss.backward()
        optimizers["discriminator"].step()
        if (step - 1) % self._n_critic == 0:
            optimizers["generator"].zero_grad()
            g_loss = self.generator_loss(self.discriminator(self.generator(
                self._noise(len(batch)))))
            g_value = _checked("generator loss", g_loss, step, len(batch))
            g_loss.backward()
            optimizers["generator"].step()
            self.g_loss[...] = g_value
        report["g_loss"] = float(self.g_loss)
        return report

    # --- the protocol -----------------------------------------------------------------------
    def sample(self, n, rng=None):
        """G(z) s for n draws z ~ N(0, I) (s: ``data_scale``, else 1), as a NumPy array
        (n, x_dim)."""
        where = f"{type(self).__name__}.sample"
        check_fitted(self, "n_features_in_", where)
        n = check_n_samples(n, where)
        z = as_rng(rng, where=where).standard_normal((n, self._z_dim)).astype(self.dtype)
        averaged = self.ema_.applied(self) if self.ema_ is not None else contextlib.nullcontext()
        with self.inference(), averaged:
            x = self.generator(Tensor(z)).numpy()
        return x if self.data_scale is None else x * x.dtype.type(self.data_scale)


@register("wgan-gp")
class WGANGP(GAN):
    """WGAN-GP: ``critic`` returns an unbounded score; ``gp_weight`` is lambda, ``n_critic``
    the critic updates per generator update. Defaults from the paper's toy experiments: Adam
    lr 1e-4, betas (0.5, 0.9), lambda 10, n_critic 5."""

    default_lr, default_betas, default_n_critic = 1e-4, (0.5, 0.9), 5

    def __init__(self, generator, critic, z_dim=None, gp_weight=10.0, n_critic=None,
                 betas=None, data_scale=None, rng=None):
        _checks.real(gp_weight, "gp_weight", "WGANGP", low=0)
        super().__init__(generator, critic, z_dim=z_dim, n_critic=n_critic, betas=betas,
                         data_scale=data_scale, rng=rng)
        self.gp_weight = gp_weight

    @classmethod
    def for_data(cls, X, image_shape=None, **params):
        """As ``GAN.for_data``; for rows, the toy recipe's scale unless given: data_scale
        = 2 sd(X) over all coordinates (so the critic sees sd 0.5) and gp_weight 0.1."""
        if image_shape is None:
            sd = float(np.std(np.asarray(X, dtype=np.float64)))
            if np.isfinite(sd) and sd > 0:
                params.setdefault("data_scale", 2 * sd)
                params.setdefault("gp_weight", 0.1)
        return super().for_data(X, image_shape=image_shape, **params)

    @property
    def critic(self):
        return self.discriminator

    def gradient_penalty(self, real, fake):
        """E (||grad_xh D(xh)||_2 - 1)^2 on xh = e x + (1 - e) G(z), e ~ U[0, 1] per row; the
        gradient keeps its graph, so the penalty can be differentiated by the weights."""
        e = per_example(self._rng.random, (len(real.data),) + (1,) * (real.ndim - 1)).astype(
            self.dtype)
        xh = Tensor(e * real.data + (1 - e) * fake.data, requires_grad=True)
        g = grad(self.discriminator(xh).sum(), xh, create_graph=True)
        norm = F.sqrt((g * g).reshape(len(real.data), -1).sum(axis=1) + 1e-12)
        return ((norm - 1.0) ** 2).mean()

    def discriminator_loss(self, real, fake):
        d_real, d_fake = self.discriminator(real).mean(), self.discriminator(fake).mean()
        penalty = self.gradient_penalty(real, fake)
        loss = d_fake - d_real + self.gp_weight * penalty
        return loss, {"d_loss": loss.item(), "wasserstein": (d_real - d_fake).item(),
                      "penalty": penalty.item()}

    def generator_loss(self, d_fake):
        return -d_fake.mean()
