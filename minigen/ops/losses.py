"""Losses. ``reduction`` is 'mean' (default), 'sum' or 'none', as in PyTorch."""
import math

from ..autograd import Tensor
from ..backend import xp
from .activations import softplus
from .math import abs
from .nn import CrossEntropy, _kept_rows


def _reduce(loss, reduction, name):
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "none":
        return loss
    raise ValueError(f"{name}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _same_shape(name, a, b):
    if a.shape != b.shape:
        raise ValueError(f"{name}: input has shape {a.shape} but target has shape {b.shape}")


def mse_loss(input, target, reduction="mean"):
    """(input - target)^2."""
    _same_shape("mse_loss", input, target)
    d = input - target
    return _reduce(d * d, reduction, "mse_loss")


def l1_loss(input, target, reduction="mean"):
    """|input - target|."""
    _same_shape("l1_loss", input, target)
    return _reduce(abs(input - target), reduction, "l1_loss")


def binary_cross_entropy_with_logits(logits, target, reduction="mean"):
    """-[y log sigmoid(z) + (1 - y) log(1 - sigmoid(z))] = softplus(z) - y z (stable)."""
    _same_shape("binary_cross_entropy_with_logits", logits, target)
    return _reduce(softplus(logits) - target * logits, reduction,
                   "binary_cross_entropy_with_logits")


def cross_entropy(logits, targets, ignore_index=None, reduction="mean"):
    """-log softmax(logits)[target], classes on the LAST axis: logits (..., K), targets (...).

    Rows whose target equals ``ignore_index`` (e.g. padding tokens) contribute nothing, and
    'mean' divides by the number of rows that are not ignored (NaN when there are none, as
    in PyTorch).
    """
    t = targets.data if isinstance(targets, Tensor) else xp(logits.data).asarray(targets)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integer class indices, got {t.dtype}")
    if t.shape != logits.shape[:-1]:
        raise ValueError(f"cross_entropy: logits have shape {logits.shape}, so targets must have "
                         f"shape {logits.shape[:-1]}, got {t.shape}")
    k = logits.shape[-1]
    valid = t if ignore_index is None else t[t != ignore_index]
    if valid.size and (valid.min() < 0 or valid.max() >= k):
        raise ValueError(f"cross_entropy: targets must lie in [0, {k}) (or equal ignore_index)")
    flat_t = t.reshape(-1)
    loss = CrossEntropy.apply(logits.reshape(-1, k), targets=flat_t, ignore_index=ignore_index)
    if reduction == "mean":
        count = float(_kept_rows(flat_t, ignore_index, logits.dtype).sum())
        return loss.sum() * (1.0 / count if count else float("inf"))  # no rows: 0 * inf = NaN
    return _reduce(loss.reshape(t.shape), reduction, "cross_entropy")


def gaussian_nll(input, target, var, full=False, eps=1e-6, reduction="mean"):
    """0.5 (log max(var, eps) + (input - target)^2 / max(var, eps)) [+ 0.5 log 2 pi if full],
    as torch.nn.functional.gaussian_nll_loss."""
    _same_shape("gaussian_nll", input, target)
    v = var.clip(min=eps) if isinstance(var, Tensor) else max(var, eps)
    d = input - target
    loss = 0.5 * ((v.log() if isinstance(v, Tensor) else math.log(v)) + d * d / v)
    if full:
        loss = loss + 0.5 * math.log(2 * math.pi)
    return _reduce(loss, reduction, "gaussian_nll")


def kl_normal(mu_q, logvar_q, mu_p=0.0, logvar_p=0.0):
    """Elementwise KL(N(mu_q, exp(logvar_q)) || N(mu_p, exp(logvar_p))) between diagonal
    Gaussians: 0.5 (logvar_p - logvar_q + (exp(logvar_q) + (mu_q - mu_p)^2) / exp(logvar_p) - 1).
    Sum over the latent axes yourself (e.g. ``.sum(-1)``)."""
    d = mu_q - mu_p
    if isinstance(logvar_p, Tensor):
        return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + d * d) / logvar_p.exp() - 1)
    return 0.5 * (logvar_p - logvar_q + (logvar_q.exp() + d * d) * math.exp(-logvar_p) - 1)
