"""Multi-head scaled dot-product attention (Vaswani et al. 2017), the one attention of minigen.

    Attention(Q, K, V) = softmax(Q K^T / sqrt(d_head) + M) V,   per head,

with M_ij = -inf where query i may not attend to key j: the causal mask (query i sits at key
position Lk - Lq + i and sees keys j <= Lk - Lq + i) and the key padding mask (True marks
padding keys, PyTorch's convention). A masked key gets weight exp(-inf) = 0 exactly, whatever
the scale of the scores (an additive -1e9 is exact only while the scores stay far below 1e9).
A query with no visible key at all (a padding query of a left-padded row) would make its
softmax row exp(-inf) / 0 = NaN; such a row gets weights 0, so its output is 0 and nothing
flows back through it.  The scale 1 / sqrt(d_head) multiplies Q (Lq d entries, not the Lq Lk
scores), and the mask and the softmax are one Function (``masked_softmax``) whose backward
is the softmax's alone (its weights are exactly 0 at masked keys). ``KVCache`` keeps the keys and values
of earlier positions, so decoding one more token costs one query against the cached keys.
"""
import math

import numpy as np

from .. import functional as F
from ..backend import shared_rng
from ..autograd import Tensor
from .layers import Linear
from .module import Module


def attention_mask(lq, lk, causal=False, key_padding_mask=None):
    """Boolean (B or 1, 1, lq, lk) mask, True where attention is forbidden, or None when
    nothing is: query i may not see key j > lk - lq + i (``causal``) nor a padding key."""
    mask = None
    if causal:
        mask = np.triu(np.ones((lq, lk), dtype=bool), k=1 + lk - lq)[None, None]
    if key_padding_mask is not None:
        pad = np.asarray(key_padding_mask, dtype=bool)[:, None, None, :]
        mask = pad if mask is None else mask | pad
    return mask if mask is not None and mask.any() else None


def scaled_dot_product_attention(q, k, v, mask=None, causal=False, key_padding_mask=None,
                                 dropout=None):
    """softmax(q k^T / sqrt(d) + M) v for q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv).

    mask: True where attention is forbidden (broadcast to (..., Lq, Lk)); ``causal`` and
    ``key_padding_mask`` (B, Lk) add to it as in ``attention_mask`` (q then (B, nh, Lq, d)).
    dropout: applied to the attention weights (a ``Dropout`` module, or None)."""
    scores = (q * (1.0 / math.sqrt(q.shape[-1]))) @ k.transpose(-2, -1)
    if causal or key_padding_mask is not None:
        extra = attention_mask(q.shape[-2], k.shape[-2], causal, key_padding_mask)
        mask = extra if mask is None else mask if extra is None else mask | extra
    weights = scores.softmax(-1) if mask is None else \
        F.masked_softmax(scores, np.asarray(mask, dtype=bool))
    if dropout is not None:
        weights = dropout(weights)
    return weights @ v


class KVCache:
    """The keys and values (B, nh, T, hs) of the positions one attention layer has seen, and
    their key padding mask. ``append`` adds the new positions' and returns all of them."""

    def __init__(self):
        self.keys = self.values = self.padding = None
        self.length = 0

    def append(self, k, v, key_padding_mask=None):
        """(keys, values, key_padding_mask) of every position so far; the mask is None while no
        position is padding."""
        b, t = k.shape[0], k.shape[-2]
        if self.keys is not None:
            k = F.cat([Tensor(self.keys), k], axis=2)
            v = F.cat([Tensor(self.values), v], axis=2)
        if self.padding is not None or key_padding_mask is not None:
            old = self.padding if self.padding is not None else \
                np.zeros((b, self.length), dtype=bool)
            new = np.zeros((b, t), dtype=bool) if key_padding_mask is None else \
                np.asarray(key_padding_mask, dtype=bool)
            self.padding = np.concatenate([old, new], axis=1)
        self.keys, self.values, self.length = k.data, v.data, self.length + t
        return k, v, self.padding


class MultiheadAttention(Module):
    """Inputs (batch, length, embed_dim) (batch first, as ``batch_first=True`` in PyTorch);
    separate q, k, v projections (PyTorch's ``in_proj_weight`` split in three rows)."""

    def __init__(self, embed_dim, num_heads, bias=True, rng=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} is not divisible by "
                             f"num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        rng = shared_rng(rng, "MultiheadAttention")
        self.q_proj = Linear(embed_dim, embed_dim, bias, rng)
        self.k_proj = Linear(embed_dim, embed_dim, bias, rng)
        self.v_proj = Linear(embed_dim, embed_dim, bias, rng)
        self.out_proj = Linear(embed_dim, embed_dim, bias, rng)

    def _heads(self, x):
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, -1).transpose(1, 2)     # (B, nh, T, hs)

    def forward(self, query, key=None, value=None, causal=False, key_padding_mask=None,
                cache=None):
        """``key_padding_mask`` (batch, Lk) bool, True at padding positions. With ``cache`` (a
        ``KVCache``), key and value are appended to the cached ones first."""
        key = query if key is None else key
        value = key if value is None else value
        if query.ndim != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention: expected query (batch, length, "
                             f"{self.embed_dim}), got {query.shape}")
        b, lq, lk = query.shape[0], query.shape[1], key.shape[1]
        kpm = None
        if key_padding_mask is not None:
            kpm = np.asarray(key_padding_mask.data if isinstance(key_padding_mask, Tensor)
                             else key_padding_mask, dtype=bool)
            if kpm.shape != (b, lk):
                raise ValueError(f"MultiheadAttention: key_padding_mask must have shape "
                                 f"{(b, lk)}, got {kpm.shape}")
        q, k, v = (self._heads(p(x)) for p, x in
                   ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        if cache is not None:
            k, v, kpm = cache.append(k, v, kpm)
        out = scaled_dot_product_attention(q, k, v, causal=causal, key_padding_mask=kpm)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, self.embed_dim))
