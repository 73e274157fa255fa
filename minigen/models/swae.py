"""The sliced-Wasserstein auto-encoder (Kolouri, Pope, Martin & Rohde 2019).

An auto-encoder whose codes are pushed towards a chosen prior p(z) during training, so that
decoding prior draws generates data without a density fitted afterwards. Per batch
{x_1..x_B} with codes z_b = f(x_b) and B prior draws zt_b ~ p(z):

    L = (1/B) sum_b L_rec(x_b) + lambda SW_p^p({z_b}, {zt_b}),
    SW_p^p = (1/L) sum_l int_0^1 |F_l^-1(u) - G_l^-1(u)|^p du       (Kolouri et al. eq. 11),

over L = ``n_projections`` random directions theta_l ~ U(S^{d-1}) redrawn every step, with
F_l, G_l the empirical distributions of theta_l . z_b and theta_l . zt_b (sorted projections:
``minigen.metrics.sliced_wasserstein_loss``); L_rec as in ``ae``; lambda = ``sw_weight``.

Priors: 'normal' N(0, I); 'uniform' U[-1, 1]^d; 'ring' r u with u uniform on the unit sphere
S^{d-1} and r ~ N(1, 0.1^2) (a circle of radius 1 in 2-D, the paper's "circle" prior).
Like a plain AE it defines no density (``log_prob`` raises ``NoDensityError``).
"""
import numpy as np

from .. import _checks
from ..autograd import Tensor
from ..backend import as_rng, per_example
from ..distribution import check_fitted, check_n_samples, register
from ..metrics import sliced_wasserstein_loss
from .ae import AutoEncoderBase

PRIORS = ("normal", "uniform", "ring")


@register("swae")
class SWAE(AutoEncoderBase):
    """A sliced-Wasserstein AE (module docstring): prior 'normal', 'uniform' or 'ring';
    n_projections and p of the sliced distance; sw_weight its weight lambda; the other
    arguments as ``AutoEncoder``."""

    def __init__(self, x_dim, z_dim, prior="normal", hidden=(256, 256), reconstruction="mse",
                 sw_weight=10.0, n_projections=50, p=2, activation="relu", image_shape=None,
                 channels=(16, 32), rng=None):
        super().__init__()
        _checks.choice(prior, "prior", "SWAE", PRIORS)
        _checks.real(sw_weight, "sw_weight", "SWAE", low=0)
        _checks.positive_int(n_projections, "n_projections", "SWAE")
        _checks.real(p, "p", "SWAE", low=1)
        self.x_dim, self.z_dim, self.prior, self.hidden = x_dim, z_dim, prior, hidden
        self.reconstruction, self.sw_weight = reconstruction, sw_weight
        self.n_projections, self.p, self.activation = n_projections, p, activation
        self.image_shape, self.channels, self.rng = image_shape, channels, rng
        self._build()

    def sample_prior(self, n, rng=None):
        """n draws of p(z), (n, z_dim) float64."""
        rng = as_rng(rng, where=f"{type(self).__name__}.sample_prior")
        if self.prior == "normal":
            return rng.standard_normal((n, self.z_dim))
        if self.prior == "uniform":
            return rng.uniform(-1.0, 1.0, (n, self.z_dim))
        u = rng.standard_normal((n, self.z_dim))
        u /= np.linalg.norm(u, axis=1, keepdims=True)
        return u * (1.0 + 0.1 * rng.standard_normal((n, 1)))

    def loss(self, batch):
        """Batch mean of L_rec + sw_weight SW_p^p(codes, prior draws)."""
        x = Tensor(batch)
        z = self.encode(x)
        prior = Tensor(per_example(lambda size: self.sample_prior(size[0], self._rng),
                                   (len(batch), self.z_dim)).astype(z.dtype))
        sw = sliced_wasserstein_loss(z, prior, self.n_projections, self.p, rng=self._rng)
        return self.reconstruction_loss(x, self.decode(z)).mean() + self.sw_weight * sw

    def sample(self, n, rng=None):
        """Decoded prior draws, (n, x_dim) (pixel probabilities for a Bernoulli decoder)."""
        n = check_n_samples(n, "SWAE.sample")
        check_fitted(self, "n_features_in_", "SWAE.sample")
        return self.inverse_transform(self.sample_prior(n, as_rng(rng, where="SWAE.sample")))
