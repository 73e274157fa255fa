"""A VAE with two stochastic layers (Burda et al. 2016, section 5; Sønderby et al. 2016).

Generative model:  p(z2) = N(0, I),  p(z1 | z2) = N(m(z2), diag exp(v(z2))),  p(x | z1)
(Bernoulli or Gaussian, as in ``vae``). Inference model:  q(z1 | x) = N(mu1(x), diag
exp(lv1(x))),  q(z2 | z1) = N(mu2(z1), diag exp(lv2(z1))), both reparameterised. Per example,

    ELBO = E_q [log p(x | z1) + log p(z1 | z2) + log p(z2) - log q(z1 | x) - log q(z2 | z1)]
         = E_q log p(x | z1) - KL1 - KL2,
    KL1 = E_q [log q(z1 | x) - log p(z1 | z2)]   (the entropy of q(z1 | x) in closed form,
                                                   log p(z1 | z2) from one draw of z1, z2)
    KL2 = KL(q(z2 | z1) || N(0, I))              (closed form given z1).

Training minimises  mean(-log p(x | z1)) + w_t R,  with
  * KL warm-up (Sønderby et al. 2016, section 2.3; Bowman et al. 2016): w_t = beta min(1,
    t / warmup_steps) at training step t (w_t = beta when warmup_steps = 0); the step count
    is the buffer ``kl_step``, so it is saved in checkpoints and a resumed fit continues the
    warm-up where it stopped (a fresh ``fit`` starts it again);
  * free bits (Kingma et al. 2016, IAF, eq. 15): R = sum_j max(lambda, mean_batch KL_j)
    over every latent dimension j of both layers, lambda = ``free_bits`` nats (R = the batch
    mean of KL1 + KL2 when free_bits = 0).
The validation loss (``loss`` in eval mode) uses w = beta, the full objective, so that early
stopping compares like with like during the warm-up. ``log_prob(X, k)`` is the
importance-weighted bound of ``vae`` with the weights
p(x, z1, z2) / q(z1, z2 | x).
"""
import numpy as np

from .. import _checks
from .. import functional as F
from ..autograd import Tensor
from ..backend import as_rng
from ..distribution import register
from .networks import MLPEncoder, make_decoder, make_encoder
from .vae import (LatentVariableModel, gaussian_log_density, log_density_of_draw,
                  reparameterize, standard_normal_log_density)


def _split(h, d):
    return h[:, :d], h[:, d:]


@register("hvae")
class HierarchicalVAE(LatentVariableModel):
    """Two latent layers z1 (near the data) and z2 (the top), sizes ``z_dims``. ``hidden``:
    widths of the x <-> z1 networks; ``latent_hidden``: widths of the z1 <-> z2 networks;
    ``warmup_steps`` and ``free_bits`` as in the module docstring; the rest as ``VAE``."""

    def __init__(self, x_dim, z_dims=(16, 4), hidden=(256, 256), latent_hidden=(64,),
                 likelihood="bernoulli", beta=1.0, warmup_steps=0, free_bits=0.0,
                 activation="relu", image_shape=None, channels=(16, 32), rng=None):
        super().__init__()
        where = "HierarchicalVAE"
        d1, d2 = self.z1, self.z2 = _checks.int_tuple(z_dims, "z_dims", where, length=2)
        latent = _checks.int_tuple(latent_hidden, "latent_hidden", where)
        _checks.integer(warmup_steps, "warmup_steps", where, low=0)
        _checks.real(free_bits, "free_bits", where, low=0)
        self.x_dim, self.z_dims, self.hidden, self.latent_hidden = x_dim, z_dims, hidden, latent_hidden
        self.likelihood, self.beta = likelihood, beta
        self.warmup_steps, self.free_bits, self.activation = warmup_steps, free_bits, activation
        self.image_shape, self.channels, self.rng = image_shape, channels, rng
        self._build_likelihood()
        rng = as_rng(rng, where=type(self).__name__)
        self.encoder = make_encoder(x_dim, 2 * d1, hidden, activation, image_shape, channels,
                                    rng, "HierarchicalVAE")
        self.encoder2 = MLPEncoder(d1, 2 * d2, latent, activation, rng)
        self.prior1 = MLPEncoder(d2, 2 * d1, latent, activation, rng)
        self.decoder = make_decoder(d1, x_dim, hidden, activation, image_shape, channels,
                                    rng, "HierarchicalVAE")
        self._rng, self._code_size = rng, d1
        self.register_buffer("kl_step", np.zeros((), dtype=np.int64))   # training steps taken

    def fit(self, X, y=None, **kwargs):
        """``LatentVariableModel.fit``; a fresh fit restarts the KL warm-up, a fit with
        ``resume=`` continues it from the checkpoint's ``kl_step``."""
        if kwargs.get("resume") is None:
            self.kl_step[...] = 0
        return super().fit(X, y, **kwargs)

    def decode(self, z1):
        """Decoder output for z1: Bernoulli logits or Gaussian means (n, x_dim)."""
        return self.decoder(z1)

    def _code_mean(self, x):
        return self.encoder(x)[:, :self.z1]

    def kl_weight(self, step):
        """w_t = beta min(1, t / warmup_steps) (beta when warmup_steps = 0)."""
        if not self.warmup_steps:
            return self.beta
        return self.beta * min(1.0, step / self.warmup_steps)

    def kl_terms(self, x, rng=None):
        """One draw z1 ~ q(z1 | x), z2 ~ q(z2 | z1) per row of the Tensor x: the decoder
        output for z1 and the per-dimension KL estimates (module docstring), Tensors (n, z1)
        and (n, z2):
            KL1_j = 1/2 (lvp_j - lv1_j - 1 + (z1_j - mp_j)^2 exp(-lvp_j))
                  = E_{q(z1_j|x)} log q(z1_j | x) - log p(z1_j | z2)   (entropy in closed form)
            KL2_j = KL(N(mu2_j, exp(lv2_j)) || N(0, 1)).
        """
        rng = self._rng if rng is None else rng
        mu1, lv1 = _split(self.encoder(x), self.z1)
        z1 = reparameterize(mu1, lv1, rng)
        mu2, lv2 = _split(self.encoder2(z1), self.z2)
        z2 = reparameterize(mu2, lv2, rng)
        mp, lvp = _split(self.prior1(z2), self.z1)
        d = z1 - mp
        kl1 = 0.5 * (lvp - lv1 - 1 + d * d * (-lvp).exp())
        return self.decode(z1), kl1, F.kl_normal(mu2, lv2)

    def loss(self, batch):
        """mean(-log p(x | z1)) + w R (module docstring), one draw of z1 and z2; w = w_t in
        training (t counted in ``kl_step``), w = beta in eval mode (validation)."""
        if self.training:
            self.kl_step[...] += 1
        x = Tensor(batch)
        out, kl1, kl2 = self.kl_terms(x)
        rec = self.nll(x, out).mean()
        kl1, kl2 = kl1.mean(0), kl2.mean(0)          # batch means per latent dimension
        if self.free_bits:
            kl1, kl2 = kl1.clip(min=self.free_bits), kl2.clip(min=self.free_bits)
        weight = self.kl_weight(max(int(self.kl_step), 1)) if self.training else self.beta
        return rec + weight * (kl1.sum() + kl2.sum())

    def _log_weights(self, x, k, rng):
        n = len(x)
        mu1, lv1 = (a.astype(np.float64) for a in
                    _split(self.encoder(Tensor(x.astype(self.dtype))).numpy(), self.z1))
        eps1 = rng.standard_normal((k, n, self.z1))
        z1 = (mu1 + np.exp(0.5 * lv1) * eps1).reshape(k * n, self.z1)
        h2 = self.encoder2(Tensor(z1.astype(self.dtype))).numpy().astype(np.float64)
        mu2, lv2 = _split(h2, self.z2)
        eps2 = rng.standard_normal(mu2.shape)
        z2 = mu2 + np.exp(0.5 * lv2) * eps2
        mp, lvp = _split(self.prior1(Tensor(z2.astype(self.dtype))).numpy().astype(np.float64),
                         self.z1)
        log_q = (log_density_of_draw(eps1, lv1).reshape(-1) + log_density_of_draw(eps2, lv2))
        log_p = gaussian_log_density(z1, mp, lvp) + standard_normal_log_density(z2)
        x_rep = np.broadcast_to(x, (k,) + x.shape).reshape(-1, self.x_dim)
        return self._log_weight(x_rep, self._decode_numpy(z1), log_p, log_q).reshape(k, n)

    def _prior_decode(self, n, rng):
        z2 = rng.standard_normal((n, self.z2))
        mp, lvp = _split(self.prior1(Tensor(z2.astype(self.dtype))).numpy().astype(np.float64),
                         self.z1)
        z1 = mp + np.exp(0.5 * lvp) * rng.standard_normal(mp.shape)
        return self._decode_numpy(z1)
