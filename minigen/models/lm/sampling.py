"""Decoding rules for any autoregressive model: temperature, top-k and nucleus (top-p).

From next-token logits z (one row per sequence, V columns):

    temperature t > 0:   p = softmax(z / t)           (t < 1 sharpens, t > 1 flattens)
    temperature t = 0:   the argmax (greedy decoding; the first of tied maxima)
    top_k = k:           keep the k largest logits, renormalise (Fan et al. 2018)
    top_p = q:           keep the smallest set of most likely tokens whose probability sums to
                         at least q, renormalise (nucleus sampling: Holtzman et al. 2020, "The
                         Curious Case of Neural Text Degeneration")

top-k is applied before top-p, both after the temperature, as in Hugging Face's ``generate``.
Everything here runs on NumPy arrays outside the autograd graph, in float64.
"""
import numpy as np

from ..._checks import positive_int, real
from ...backend import as_rng


def check_sampling_args(temperature, top_k, top_p, where):
    """Clear errors for the three decoding arguments, before any work: temperature a finite
    number >= 0 (0 is greedy), top_k None or an int >= 1, top_p None or a number in (0, 1]."""
    real(temperature, "temperature", where, low=0)
    positive_int(top_k, "top_k", where, optional=True)
    real(top_p, "top_p", where, low=0, high=1, low_open=True, optional=True)


def next_token_probs(logits, temperature=1.0, top_k=None, top_p=None):
    """The distribution tokens are drawn from: (..., V) logits -> (..., V) probabilities that
    sum to 1, zero outside the top-k / nucleus. Temperature 0 gives a one-hot argmax."""
    check_sampling_args(temperature, top_k, top_p, "next_token_probs")
    z = np.asarray(logits, dtype=np.float64)
    if temperature == 0:
        probs = np.zeros_like(z)
        np.put_along_axis(probs, z.argmax(-1)[..., None], 1.0, axis=-1)
        return probs
    z = z / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = np.partition(z, -top_k, axis=-1)[..., -top_k, None]
        z = np.where(z >= kth, z, -np.inf)
    probs = np.exp(z - z.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = np.argsort(-probs, axis=-1, kind="stable")
        sorted_p = np.take_along_axis(probs, order, axis=-1)
        before = np.cumsum(sorted_p, axis=-1) - sorted_p     # mass of the more likely tokens
        keep = np.zeros(probs.shape, dtype=bool)
        np.put_along_axis(keep, order, before < top_p, axis=-1)
        probs = np.where(keep, probs, 0.0)
        probs /= probs.sum(-1, keepdims=True)
    return probs


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None):
    """Draw one token per row of ``logits`` (..., V) -> int64 (...,), by inverse-CDF sampling
    from ``next_token_probs`` with u ~ Uniform(0, 1] (a zero-probability token is never drawn)."""
    probs = next_token_probs(logits, temperature, top_k, top_p)
    if temperature == 0:
        return probs.argmax(-1)
    cdf = np.cumsum(probs, axis=-1)
    u = 1.0 - as_rng(rng, where="sample_next").random(probs.shape[:-1] + (1,))
    return (cdf < u * cdf[..., -1:]).sum(-1).astype(np.int64)   # u * total <= total: idx < V
