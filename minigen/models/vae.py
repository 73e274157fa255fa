"""The variational auto-encoder (Kingma & Welling 2014; Rezende et al. 2014) and the
importance-weighted bound (Burda et al. 2016).

Model: p(z) = N(0, I) and a decoder network giving p(x | z), either
    prod_j Bernoulli(x_j; sigmoid(l_j(z)))                 likelihood='bernoulli' (x in [0, 1])
    prod_j N(x_j; m_j(z), exp(s_j))                          likelihood='gaussian',
with s a learned per-feature log-variance (kept >= log 1e-4). The encoder gives
q(z | x) = N(mu(x), diag exp(logvar(x))), sampled by reparameterisation,
    z = mu + exp(logvar / 2) * eps,   eps ~ N(0, I),
so the gradient of E_q f(z) reaches mu and logvar (Kingma & Welling, section 2.4).

Training minimises the batch mean of the negative beta-ELBO (beta = 1: the ELBO; beta > 1:
Higgins et al. 2017),
    -log p(x | z) + beta KL(q(z | x) || p(z)),   one z per example,
    KL = 1/2 sum_j (mu_j^2 + exp(logvar_j) - logvar_j - 1)   (closed form; K & W, appendix B).

``log_prob(X, k)`` (= ``score_samples``) is, per example, the importance-weighted bound
    IWAE_k(x) = log (1/k) sum_{i=1..k} p(x, z_i) / q(z_i | x),   z_i ~ q(z | x),
a lower bound on log p(x) that does not decrease with k (Burda et al. theorem 1); k = 1 is the
ELBO. Values are in nats, as a NumPy array. The networks run in the parameters' dtype and the
densities in float64; a block of rows with a non-finite log weight (a network's float32
overflowed) is scored again, with the same draws, by a float64 copy of the model. Where float64
overflows too, a log weight is -inf only where that limit is certain (log p(z) = -inf while
log p(x | z) is bounded above); otherwise the call asks to rescale X. A NaN is never returned.
"""
import copy
import math

import numpy as np

from .. import _checks, backend
from .. import functional as F
from ..autograd import Tensor
from ..backend import as_rng, per_example
from ..distribution import check_fitted, check_n_samples, logsumexp, register
from ..nn import Parameter
from .code_model import CodeModel, in_unit_interval, sigmoid
from .networks import make_decoder, make_encoder

LIKELIHOODS = ("bernoulli", "gaussian")
MIN_LOG_VAR = math.log(1e-4)
LOG_2PI = math.log(2 * math.pi)


def gaussian_log_density(z, mu, logvar):
    """log N(z; mu, diag exp(logvar)) summed over the last axis (NumPy, float64). Diagonal and
    written in log-variances because the encoders output them; the full-covariance forms of
    the classical estimators live in ``minigen.density._gaussian``."""
    return -0.5 * np.sum(LOG_2PI + logvar + (z - mu) ** 2 * np.exp(-logvar), axis=-1)


def log_density_of_draw(eps, logvar):
    """log N(z; mu, diag exp(logvar)) at its own draw z = mu + exp(logvar / 2) eps:
    -1/2 sum (log 2 pi + logvar + eps^2), finite even where exp(logvar / 2) overflows."""
    return -0.5 * np.sum(LOG_2PI + logvar + eps * eps, axis=-1)


def standard_normal_log_density(z):
    """log N(z; 0, I) = -1/2 sum (log 2 pi + z^2): -inf where z overflowed to +-inf."""
    return -0.5 * np.sum(LOG_2PI + z * z, axis=-1)


def reparameterize(mu, logvar, rng=None):
    """z = mu + exp(logvar / 2) * eps with eps ~ N(0, I) from ``rng``: a draw of
    N(mu, diag exp(logvar)) that is differentiable in mu and logvar (Tensors)."""
    rng = as_rng(rng, where="reparameterize")
    eps = per_example(rng.standard_normal, mu.shape).astype(mu.dtype)
    return mu + (logvar * 0.5).exp() * Tensor(eps)


class LatentVariableModel(CodeModel):
    """What VAE and HierarchicalVAE share: the likelihood p(x | z), sampling from the prior and
    the importance-weighted bound (data checks, ``fit``, ``transform`` / ``inverse_transform``
    come from ``CodeModel``). Subclasses define ``_log_weights(x, k, rng)`` -> (k, n)
    log p(x, z_i) / q(z_i | x) and ``_prior_decode(n, rng)`` -> decoder outputs."""

    _output = "likelihood"

    @classmethod
    def for_data(cls, X, **params):
        """As ``CodeModel.for_data``, with likelihood='gaussian' (unless given) when X lies
        outside [0, 1], where a Bernoulli likelihood is undefined (the 2-D toys)."""
        if not in_unit_interval(X):
            params.setdefault("likelihood", "gaussian")
        return super().for_data(X, **params)

    def _build_likelihood(self):
        """Check ``likelihood`` and ``beta`` (a finite KL weight >= 0); a Gaussian likelihood
        gets its per-feature log-variance s."""
        where = type(self).__name__
        _checks.choice(self.likelihood, "likelihood", where, LIKELIHOODS)
        _checks.real(self.beta, "beta", where, low=0)
        if self.likelihood == "gaussian":
            self.log_var = Parameter(np.zeros(self.x_dim, dtype=backend.get_default_dtype()))

    def nll(self, x, out):
        """-log p(x | z) per example (n,) from the decoder output ``out`` (logits or means):
        sum_j softplus(l_j) - x_j l_j (Bernoulli) or 1/2 sum_j (log 2 pi + s_j + (x_j - m_j)^2
        exp(-s_j)) (Gaussian)."""
        if self.likelihood == "bernoulli":
            return (F.softplus(out) - x * out).sum(1)
        s = self.log_var.clip(min=MIN_LOG_VAR)
        d = x - out
        return 0.5 * (LOG_2PI + s + d * d * (-s).exp()).sum(1)

    # --- the protocol ---------------------------------------------------------------------
    def score_samples(self, X, k=1, rng=None, batch_size=None):
        """IWAE_k(x) per row of X (nats; k = 1 is the ELBO), drawing the z_i from ``rng``;
        rows are processed ``batch_size`` at a time (default: about 8192 / k). Overflow is
        handled as the module docstring says."""
        where = f"{type(self).__name__}.score_samples"
        check_fitted(self, "n_features_in_", where)
        k = _checks.positive_int(k, "k", where)
        rows = _checks.positive_int(batch_size, "batch_size", where, optional=True)
        X = self._check_X(X, where)
        rng = as_rng(rng, where=where)
        rows = rows or max(1, 8192 // k)
        out = np.empty(len(X))
        wide = None                     # the float64 copy, made when first needed
        with self.inference(), np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            for i in range(0, len(X), rows):
                block, draws = X[i:i + rows], copy.deepcopy(rng)
                log_w = self._log_weights(block, k, rng)
                if not np.isfinite(log_w).all() and self.dtype != np.float64:
                    if wide is None:
                        wide = copy.deepcopy(self).double()
                    log_w = wide._log_weights(block, k, draws)   # the same z draws
                undefined = np.flatnonzero(np.isnan(log_w).any(axis=0))
                if len(undefined):
                    row = block[undefined[0]]
                    raise ValueError(f"{where}: the bound of row {i + undefined[0]} of X (entries "
                                     f"up to {np.abs(row).max():.3g} in magnitude) overflows "
                                     "float64 in the networks; rescale X to the scale of the "
                                     "training data")
                out[i:i + rows] = logsumexp(log_w, axis=0) - math.log(k)
        return out

    def sample(self, n, rng=None, *, mean=False):
        """x ~ p(x | z) with z from the prior, (n, x_dim); ``mean=True`` returns the decoder's
        mean instead of a draw (pixel probabilities for a Bernoulli likelihood)."""
        where = f"{type(self).__name__}.sample"
        n = check_n_samples(n, where)
        check_fitted(self, "n_features_in_", where)
        rng = as_rng(rng, where=where)
        with self.inference():
            out = self._prior_decode(n, rng)
        if self.likelihood == "bernoulli":
            p = sigmoid(out)
            return p if mean else (rng.random(p.shape) < p).astype(np.float64)
        if mean:
            return out
        sd = np.exp(0.5 * np.maximum(self.log_var.numpy().astype(np.float64), MIN_LOG_VAR))
        return out + sd * rng.standard_normal(out.shape)

    # --- helpers for subclasses -------------------------------------------------------------
    def _log_weight(self, x, out, log_prior, log_q):
        """log p(x | z) + log p(z) - log q(z | x) in float64, for NumPy data x (m, x_dim),
        decoder outputs ``out`` and the (m,) log densities; -inf where log p(z) = -inf and
        log q(z | x) is finite, since log p(x | z) is bounded above (by 0, or by
        -1/2 sum_j (log 2 pi + s_j))."""
        log_lik = -self.nll(Tensor(x.astype(np.float64)), Tensor(out)).numpy()
        certain = (log_prior == -np.inf) & np.isfinite(log_q)
        return np.where(certain, -np.inf, log_lik + log_prior - log_q)


@register("vae")
class VAE(LatentVariableModel):
    """A VAE (module docstring): x_dim, z_dim; hidden: MLP widths from the data's side (the
    decoder mirrors them); likelihood: 'bernoulli' or 'gaussian'; beta: the KL weight;
    image_shape, e.g. (1, 8, 8), switches to the conv encoder/decoder; rng: the
    initial weights."""

    def __init__(self, x_dim, z_dim, hidden=(256, 256), likelihood="bernoulli", beta=1.0,
                 activation="relu", image_shape=None, channels=(16, 32), rng=None):
        super().__init__()
        self.x_dim, self.z_dim, self.hidden, self.likelihood = x_dim, z_dim, hidden, likelihood
        self.beta, self.activation = beta, activation
        self.image_shape, self.channels, self.rng = image_shape, channels, rng
        z_dim = _checks.positive_int(z_dim, "z_dim", "VAE")
        self._build_likelihood()
        rng = as_rng(rng, where=type(self).__name__)
        self.encoder = make_encoder(x_dim, 2 * z_dim, hidden, activation, image_shape, channels,
                                    rng, "VAE")
        self.decoder = make_decoder(z_dim, x_dim, hidden, activation, image_shape, channels,
                                    rng, "VAE")
        self._rng, self._code_size = rng, z_dim

    def encode(self, x):
        """(mu, logvar) of q(z | x), Tensors (n, z_dim) each."""
        h = self.encoder(x)
        return h[:, :self.z_dim], h[:, self.z_dim:]

    def decode(self, z):
        """Decoder output: Bernoulli logits or Gaussian means (n, x_dim)."""
        return self.decoder(z)

    def _code_mean(self, x):
        return self.encode(x)[0]

    def loss(self, batch):
        """Batch mean of -log p(x | z) + beta KL(q(z | x) || N(0, I)), z reparameterised."""
        x = Tensor(batch)
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, self._rng)
        kl = F.kl_normal(mu, logvar).sum(1)
        return (self.nll(x, self.decode(z)) + (kl if self.beta == 1 else self.beta * kl)).mean()

    def _log_weights(self, x, k, rng):
        mu, logvar = (t.numpy().astype(np.float64) for t in self.encode(Tensor(x.astype(self.dtype))))
        eps = rng.standard_normal((k,) + mu.shape)
        z = (mu + np.exp(0.5 * logvar) * eps).reshape(-1, self.z_dim)
        x_rep = np.broadcast_to(x, (k,) + x.shape).reshape(-1, self.x_dim)
        log_w = self._log_weight(x_rep, self._decode_numpy(z), standard_normal_log_density(z),
                                 log_density_of_draw(eps, logvar).reshape(-1))
        return log_w.reshape(k, len(x))

    def _prior_decode(self, n, rng):
        return self._decode_numpy(rng.standard_normal((n, self.z_dim)))
