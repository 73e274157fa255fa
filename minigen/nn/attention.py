"""Multi-head scaled dot-product attention (Vaswani et al. 2017).

softmax(Q K^T / sqrt(d_head) + mask) V per head, with a causal mask (position i attends to
j <= i) and a key padding mask (True marks padding keys that nobody attends to).
"""
import math

import numpy as np

from ..autograd import Tensor
from ..backend import xp
from .layers import Linear
from .module import Module


def scaled_dot_product_attention(q, k, v, mask=None):
    """q (..., Lq, d), k (..., Lk, d), v (..., Lk, dv); ``mask`` True where attention is
    forbidden (broadcast to (..., Lq, Lk))."""
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    if mask is not None:
        bias = np.where(mask, -1e9, 0.0).astype(scores.dtype)
        scores = scores + Tensor(xp(scores.data).asarray(bias))
    return scores.softmax(-1) @ v


class MultiheadAttention(Module):
    """Inputs (batch, length, embed_dim) (batch first, as ``batch_first=True`` in PyTorch)."""

    def __init__(self, embed_dim, num_heads, bias=True, rng=None):
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"MultiheadAttention: embed_dim {embed_dim} is not divisible by "
                             f"num_heads {num_heads}")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.q_proj = Linear(embed_dim, embed_dim, bias, rng)
        self.k_proj = Linear(embed_dim, embed_dim, bias, rng)
        self.v_proj = Linear(embed_dim, embed_dim, bias, rng)
        self.out_proj = Linear(embed_dim, embed_dim, bias, rng)

    def _heads(self, x):
        b, n, _ = x.shape
        return x.reshape(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(self, query, key=None, value=None, causal=False, key_padding_mask=None):
        """``key_padding_mask`` (batch, Lk) bool, True at padding positions."""
        key = query if key is None else key
        value = key if value is None else value
        if query.ndim != 3 or query.shape[-1] != self.embed_dim:
            raise ValueError(f"MultiheadAttention: expected query (batch, length, "
                             f"{self.embed_dim}), got {query.shape}")
        b, lq, lk = query.shape[0], query.shape[1], key.shape[1]
        mask = np.zeros((1, 1, lq, lk), dtype=bool)
        if causal:
            mask = mask | np.triu(np.ones((lq, lk), dtype=bool), k=1 + lk - lq)
        if key_padding_mask is not None:
            kpm = np.asarray(key_padding_mask.data if isinstance(key_padding_mask, Tensor)
                             else key_padding_mask, dtype=bool)
            if kpm.shape != (b, lk):
                raise ValueError(f"MultiheadAttention: key_padding_mask must have shape "
                                 f"{(b, lk)}, got {kpm.shape}")
            mask = mask | kpm[:, None, None, :]
        q, k, v = (self._heads(p(x)) for p, x in
                   ((self.q_proj, query), (self.k_proj, key), (self.v_proj, value)))
        out = scaled_dot_product_attention(q, k, v, mask if mask.any() else None)
        return self.out_proj(out.transpose(1, 2).reshape(b, lq, self.embed_dim))
