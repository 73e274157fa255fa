"""n-gram language models: the next token depends on the last n - 1 tokens only.

    Bigram   p(x_{t+1} | x_t) = softmax(W[x_t]): a V x V table of logits
    MLPLM    Bengio et al. 2003, "A Neural Probabilistic Language Model": the embeddings of
             the last ``context`` tokens, concatenated, through a tanh hidden layer (without
             the paper's optional direct input-output connections)
"""
import numpy as np

from ..._checks import positive_int, real
from ...distribution import register
from ...nn import Dropout, Embedding, Linear, init
from ...optim import AdamW
from .base import BETAS, LanguageModel


@register("bigram")
class Bigram(LanguageModel):
    """p(x_{t+1} | x_t) = softmax(W[x_t]), W a V x V table of logits starting at zero
    (uniform). Trained without weight decay, its probabilities converge to the normalised
    bigram counts: the maximum-likelihood estimate."""

    window = 1
    _vocab_param = "table.weight"

    def __init__(self, vocab_size=None, block_size=128, tokenizer=None, rng=None):
        super().__init__()
        self.vocab_size, self.block_size, self.tokenizer, self.rng = \
            vocab_size, block_size, tokenizer, rng
        self._setup(vocab_size, tokenizer, block_size, rng)

    def _build(self, vocab_size):
        self.table = Embedding(vocab_size, vocab_size)
        init.zeros_(self.table.weight)

    def forward(self, idx, key_padding_mask=None):
        return self.table(self._check_idx(idx))

    def configure_optimizers(self, lr):
        """AdamW without weight decay (decay on the table would smooth the counts)."""
        return AdamW(self.parameters(), lr=lr, betas=BETAS, weight_decay=0.0)


@register("mlp-lm")
class MLPLM(LanguageModel):
    """Bengio et al. 2003: h = tanh(H [e(x_{t-n+1}); ...; e(x_t)] + d), logits = U h + b,
    with n = ``context``. Positions before the start of a row, and padding, read a learned
    "nothing here" embedding (row V of the table), so padding never changes a prediction."""

    _vocab_param = "out.bias"

    def __init__(self, vocab_size=None, context=8, n_embd=32, n_hidden=256, block_size=128,
                 dropout=0.0, tokenizer=None, rng=None):
        context, n_embd, n_hidden = (positive_int(value, name, "MLPLM") for name, value in
                                     (("context", context), ("n_embd", n_embd),
                                      ("n_hidden", n_hidden)))
        dropout = real(dropout, "dropout", "MLPLM", low=0, high=1, high_open=True)
        super().__init__()
        self.vocab_size, self.context, self.n_embd, self.n_hidden = \
            vocab_size, context, n_embd, n_hidden
        self.block_size, self.dropout, self.tokenizer, self.rng = \
            block_size, dropout, tokenizer, rng
        self._setup(vocab_size, tokenizer, block_size, rng)

    @property
    def window(self):
        return self.context

    def _build(self, vocab_size):
        self.wte = Embedding(vocab_size + 1, self.n_embd, rng=self._rng)
        self.hidden = Linear(self.context * self.n_embd, self.n_hidden, rng=self._rng)
        self.drop = Dropout(self.dropout, self._rng)
        self.out = Linear(self.n_hidden, vocab_size, rng=self._rng)

    def forward(self, idx, key_padding_mask=None):
        idx = self._check_idx(idx)
        b, t = idx.shape
        if key_padding_mask is not None:
            idx = np.where(key_padding_mask, self._vocab, idx)
        padded = np.pad(idx, ((0, 0), (self.context - 1, 0)), constant_values=self._vocab)
        windows = np.lib.stride_tricks.sliding_window_view(padded, self.context, axis=1)
        e = self.wte(windows).reshape(b * t, self.context * self.n_embd)
        return self.out(self.drop(self.hidden(e).tanh())).reshape(b, t, self._vocab)
