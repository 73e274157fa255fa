"""A GPT (Radford et al. 2018, 2019), after Karpathy's nanoGPT ``model.py``.

    x_0 = W_te[idx] + W_pe[pos]                          token + learned position embeddings
    x  <- x + Attn(LN_1(x))                              n_layer pre-LayerNorm blocks
    x  <- x + W_2 GELU(W_1 LN_2(x))
    logits = LN_f(x) W_te^T                              the output layer reuses W_te

Attn is causal multi-head self-attention softmax(Q K^T / sqrt(hs) + M) V (Vaswani et al.
2017; ``nn.attention``, with the padding mask and the key/value cache); the output layer
shares the token embedding (weight tying; Press & Wolf 2017), so W_te learns from both ends.
GELU is the tanh form 0.5 h (1 + tanh(sqrt(2/pi) (h + 0.044715 h^3))) (Hendrycks & Gimpel
2016), as GPT-2; W_1's bias add and the GELU run as one fused kernel pass each way
(``linear_act``). Shapes: B batch, T positions, C = n_embd, nh heads of hs = C / nh features.
"""
import math

import numpy as np

from ... import functional as F
from ..._checks import positive_int, real
from ...backend import shared_rng
from ...distribution import register
from ...nn import Dropout, Embedding, LayerNorm, Linear, Module, ModuleList, init
from ...nn.attention import KVCache, scaled_dot_product_attention
from .base import LanguageModel

INIT_STD = 0.02           # N(0, 0.02^2) for every weight matrix and embedding (GPT-2)


class CausalSelfAttention(Module):
    """Multi-head causal self-attention with one fused q, k, v projection."""

    def __init__(self, n_embd, n_head, dropout=0.0, rng=None):
        super().__init__()
        rng = shared_rng(rng, "CausalSelfAttention")
        self.n_head = n_head
        self.qkv = Linear(n_embd, 3 * n_embd, rng=rng)
        self.proj = Linear(n_embd, n_embd, rng=rng)
        self.attn_drop = Dropout(dropout, rng)
        self.resid_drop = Dropout(dropout, rng)

    def forward(self, x, key_padding_mask=None, cache=None):
        """x (B, T, C); with ``cache`` (a KVCache) the queries also see the cached positions."""
        B, T, C = x.shape
        q, k, v = (z.reshape(B, T, self.n_head, C // self.n_head).transpose(1, 2)
                   for z in F.split(self.qkv(x), 3, axis=-1))            # (B, nh, T, hs)
        if cache is not None:
            k, v, key_padding_mask = cache.append(k, v, key_padding_mask)  # (B, nh, L, hs)
        y = scaled_dot_product_attention(q, k, v, causal=True, key_padding_mask=key_padding_mask,
                                         dropout=self.attn_drop)          # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)                           # heads side by side
        return self.resid_drop(self.proj(y))


class Block(Module):
    """x + Attn(LN_1(x)), then + Dropout(W_2 GELU(W_1 LN_2(x))), W_1: C -> 4C."""

    def __init__(self, n_embd, n_head, dropout=0.0, rng=None):
        super().__init__()
        rng = shared_rng(rng, "Block")
        self.ln1 = LayerNorm(n_embd)
        self.attn = CausalSelfAttention(n_embd, n_head, dropout, rng)
        self.ln2 = LayerNorm(n_embd)
        self.fc = Linear(n_embd, 4 * n_embd, rng=rng)
        self.fc_out = Linear(4 * n_embd, n_embd, rng=rng)
        self.drop = Dropout(dropout, rng)

    def forward(self, x, key_padding_mask=None, cache=None):
        """x (B, T, C) -> (B, T, C)."""
        x = x + self.attn(self.ln1(x), key_padding_mask, cache)
        hidden = F.linear_act(self.ln2(x), self.fc.weight, self.fc.bias, "gelu_tanh")
        return x + self.drop(self.fc_out(hidden))


@register("transformer-lm")
class TransformerLM(LanguageModel):
    """GPT (see the module docstring): vocab_size, block_size (context length), n_layer
    blocks of n_head heads over n_embd features, dropout on the embeddings, the attention
    weights and each residual branch. Weights N(0, 0.02^2), the residual projections
    N(0, (0.02 / sqrt(2 n_layer))^2) (GPT-2), biases 0."""

    _vocab_param = "wte.weight"

    def __init__(self, vocab_size=None, block_size=128, n_layer=4, n_head=4, n_embd=128,
                 dropout=0.0, tokenizer=None, rng=None):
        n_layer = positive_int(n_layer, "n_layer", "TransformerLM")
        n_head = positive_int(n_head, "n_head", "TransformerLM")
        n_embd = positive_int(n_embd, "n_embd", "TransformerLM")
        if n_embd % n_head:
            raise ValueError(f"TransformerLM: n_embd must be a multiple of n_head = {n_head}, "
                             f"got {n_embd}")
        real(dropout, "dropout", "TransformerLM", low=0, high=1, high_open=True)
        super().__init__()
        self.vocab_size, self.block_size, self.n_layer, self.n_head, self.n_embd = \
            vocab_size, block_size, n_layer, n_head, n_embd
        self.dropout, self.tokenizer, self.rng = dropout, tokenizer, rng
        self._setup(vocab_size, tokenizer, block_size, rng)

    @property
    def max_context(self):
        return self.block_size

    def _build(self, vocab_size):
        rng = self._rng
        self.wte = Embedding(vocab_size, self.n_embd, rng=rng)
        self.wpe = Embedding(self.block_size, self.n_embd, rng=rng)
        self.drop = Dropout(self.dropout, rng)
        self.blocks = ModuleList([Block(self.n_embd, self.n_head, self.dropout, rng)
                                  for _ in range(self.n_layer)])
        self.ln_f = LayerNorm(self.n_embd)
        for name, p in self.named_parameters():
            if name.endswith(("proj.weight", "fc_out.weight")):
                init.normal_(p, 0.0, INIT_STD / math.sqrt(2 * self.n_layer), rng)
            elif p.ndim == 2:
                init.normal_(p, 0.0, INIT_STD, rng)
            elif name.endswith("bias"):
                init.zeros_(p)

    def new_cache(self):
        """An empty key/value cache for ``forward(..., cache=...)``: one KVCache per block."""
        return [KVCache() for _ in self.blocks]

    def forward(self, idx, key_padding_mask=None, cache=None):
        """Logits (B, T, V). With ``cache``, idx holds the positions after the cached ones."""
        idx = self._check_idx(idx)
        B, T = idx.shape
        start = cache[0].length if cache else 0
        if start + T > self.block_size:
            raise ValueError(f"TransformerLM.forward: {start + T} positions exceed "
                             f"block_size {self.block_size}")
        pad = None if key_padding_mask is None else np.asarray(key_padding_mask, dtype=bool)
        if pad is not None and pad.shape != (B, T):
            raise ValueError(f"TransformerLM.forward: key_padding_mask must have shape "
                             f"{(B, T)}, got {pad.shape}")
        x = self.drop(self.wte(idx) + self.wpe(np.arange(start, start + T)))   # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, pad, None if cache is None else cache[i])
        return F.linear(self.ln_f(x), self.wte.weight)                        # (B, T, V)

    def _cached_step(self, ids, cache):
        """Logits for the next token, feeding only the newest token through the key/value
        cache; when the cache holds block_size positions, it restarts from the last
        block_size // 2 tokens (the positions are learned, so the window cannot slide one
        token at a time)."""
        if cache is not None and cache[0].length < self.block_size:
            return self(ids[:, -1:], cache=cache), cache
        keep = self.block_size if cache is None else max(self.block_size // 2, 1)
        cache = self.new_cache()
        return self(ids[:, -keep:], cache=cache), cache
