"""What every language model shares: p(x_1 .. x_n) = prod_i p(x_i | x_<i).

A model maps token ids (B, T) to next-token logits (B, T, V): the logits at position t are a
distribution over x_{t+1} that depends on x_1 .. x_t only. Training minimises the
cross-entropy of the true next token (ignoring padding); ``log_prob`` sums log p(x_i | x_<i)
over a sequence, so a language model is a density on strings like any other minigen
distribution.

Data: ``fit(text)`` trains on one stream (every window of block_size + 1 tokens is a row,
``data.text.stream_windows``); ``fit([doc, doc, ...])`` trains on documents, each
<bos> + text + <eos>, cut into pieces of at most block_size + 1 tokens that overlap by one
(``data.text.document_pieces``: every target once) and padded with <pad>
(``key_padding_mask`` True there). Without a tokenizer a model fits token ids: a 1-D array is
a stream, a 2-D array holds rows, and id 0 is padding (the layout of
``minigen.data.tokenizers``: 0 <pad>, 1 <bos>, 2 <eos>).

This file is over 400 lines because fitting, scoring and sampling all go through the same
token bookkeeping (rows, documents, padding, <bos>/<eos>), which reads best in one place.
"""
import math

import numpy as np

from ... import functional as F
from ..._checks import excerpt, integer, positive_int, real
from ...autograd import Tensor
from ...backend import as_rng
from ...data.text import document_pieces, pad_sequences, stream_windows
from ...data.tokenizers import BOS_ID, EOS_ID, PAD_ID, CharTokenizer, Tokenizer
from ...distribution import check_fitted, check_n_samples
from ...optim import AdamW, CosineWarmup
from ..base import DeepModel
from .sampling import check_sampling_args, sample_next

# --- training configuration (GPT-2 / nanoGPT) ------------------------------------------------
WEIGHT_DECAY = 0.1        # AdamW decay, on matrices and embeddings only
BETAS = (0.9, 0.95)
WARMUP = 0.05             # warm-up fraction of the steps, then cosine decay ...
MIN_LR = 0.1              # ... to this fraction of lr
CLIP_GRAD = 1.0           # global gradient-norm clip


# --- the shared part: data, loss, scoring, generation ------------------------------------------
class LanguageModel(DeepModel):
    """What every language model here shares. A subclass builds its layers in
    ``_build(vocab_size)`` and defines ``forward(idx, key_padding_mask=None)``.

    vocab_size / tokenizer: either may be None; the vocabulary then comes from the other, or,
    when both are None, from a CharTokenizer trained on the text given to the first ``fit``
    (the layers are built then). block_size: the length of a training row (and the context
    limit of a TransformerLM).
    """

    data_kind = "text"     # what the command line feeds it: a text stream or documents
    max_context = None     # positions a forward pass can see (None: unbounded)
    window = None          # tokens of history the next prediction depends on (None: all)
    _vocab_param = None    # a weight whose first axis is the vocabulary size

    def _setup(self, vocab_size, tokenizer, block_size, rng):
        """Check the shared arguments, then build the layers if the vocabulary is known.
        block_size is kept as the plain int the check returns, so sizes computed from it never
        wrap around in a small NumPy integer type."""
        name = type(self).__name__
        if tokenizer is not None and not isinstance(tokenizer, Tokenizer):
            raise TypeError(f"{name}: tokenizer must be a minigen Tokenizer or None, got "
                            f"{type(tokenizer).__name__}")
        vocab_size = positive_int(vocab_size, "vocab_size", name, optional=True)
        if tokenizer is not None and vocab_size not in (None, tokenizer.vocab_size):
            raise ValueError(f"{name}: vocab_size must be None or the tokenizer's vocab_size "
                             f"{tokenizer.vocab_size} (every id must decode), got {vocab_size}")
        self.block_size = positive_int(block_size, "block_size", name)
        self._rng = as_rng(rng, where=name)
        self._vocab = None
        size = vocab_size if vocab_size is not None else \
            tokenizer.vocab_size if tokenizer is not None else None
        if size is not None:
            self._build_vocab(size)

    def _build_vocab(self, vocab_size):
        self._vocab = int(vocab_size)
        self._build(self._vocab)

    @property
    def n_vocab(self):
        """The size of the output distribution (None until the layers are built)."""
        return self._vocab

    def _tokenizer(self):
        return getattr(self, "tokenizer_", None) or self.tokenizer

    # --- data ------------------------------------------------------------------------------
    def _rows(self, X, where, stride=1):
        """Text, documents or ids -> (rows, documents, unigram): int64 rows of at most
        block_size + 1 ids (padding is PAD_ID), whether X was a list of documents, and for a
        stream (or rows) its token frequencies (where ``sample`` draws a first token). A
        stream gives the windows of block_size + 1 tokens that start every ``stride`` tokens
        (a view, not a copy)."""
        if isinstance(X, np.ndarray) and X.ndim == 2 and X.dtype.kind in "iu":
            if self._vocab is None:
                raise ValueError(f"{where}: fitting token ids needs vocab_size or a tokenizer")
            if not 2 <= X.shape[1] <= self.block_size + 1:
                raise ValueError(f"{where}: rows of ids must have 2 .. block_size + 1 = "
                                 f"{self.block_size + 1} columns, got {X.shape[1]}")
            rows = self._check_ids(X.astype(np.int64, copy=False), where)
            empty = np.flatnonzero(np.all(rows[:, 1:] == PAD_ID, axis=1))
            if empty.size:
                raise ValueError(f"{where}: row {empty[0]} of ids has no token to predict (its "
                                 "targets are all <pad>, id 0)")
            return rows, False, np.bincount(rows[rows != PAD_ID], minlength=self._vocab) / \
                max(np.count_nonzero(rows != PAD_ID), 1)
        if isinstance(X, str):
            stream = self._tokenizer_for(X, where).encode(X)
        elif isinstance(X, np.ndarray) and X.ndim == 1 and X.dtype.kind in "iu":
            stream = X
        elif isinstance(X, (list, tuple)) and X and all(isinstance(s, str) for s in X):
            tok = self._tokenizer_for("".join(X), where)
            return self._document_rows([tok.encode(s, bos=True, eos=True) for s in X],
                                       where), True, None
        elif isinstance(X, (list, tuple)) and X and all(np.ndim(s) == 1 for s in X):
            return self._document_rows(X, where), True, None
        else:
            raise TypeError(f"{where}: X must be a str, a list of str, a 1-D int array (a "
                            f"stream of ids), a 2-D int array (rows of ids) or a list of id "
                            f"sequences; got {type(X).__name__}")
        if self._vocab is None:
            raise ValueError(f"{where}: fitting token ids needs vocab_size or a tokenizer")
        stream = self._check_ids(np.asarray(stream, dtype=np.int64), where)
        if len(stream) < self.block_size + 1:
            raise ValueError(f"{where}: the text has {len(stream)} tokens, fewer than "
                             f"block_size + 1 = {self.block_size + 1}")
        # the longest run of <pad> among the targets stream[1:]: a window inside it has
        # nothing to predict (its loss would be 0 / 0)
        targets = np.flatnonzero(stream[1:] != PAD_ID)
        gaps = np.diff(np.concatenate([[-1], targets, [len(stream) - 1]])) - 1
        if gaps.max() >= self.block_size:
            raise ValueError(f"{where}: the stream has {gaps.max()} <pad> ids (id 0) in a row, "
                             f"so a window of block_size = {self.block_size} targets has no "
                             "token to predict; id 0 is padding, not data")
        rows = stream_windows(stream, self.block_size + 1, stride)
        return rows, False, np.bincount(stream, minlength=self._vocab) / len(stream)

    def _tokenizer_for(self, text, where):
        """The tokenizer, made (a CharTokenizer of ``text``) and the layers built on first use."""
        tok = self._tokenizer()
        if tok is None:
            tok = CharTokenizer.train(text)
        if self._vocab is None:
            self._build_vocab(tok.vocab_size)
        elif tok.vocab_size != self._vocab:
            raise ValueError(f"{where}: the model has vocab_size {self._vocab} but the "
                             f"{type(tok).__name__} of this text has {tok.vocab_size} ids; "
                             "give vocab_size=None or a tokenizer of that size")
        self.tokenizer_ = tok
        return tok

    def _document_rows(self, docs, where):
        """Documents cut into pieces of at most block_size + 1 ids that overlap by one (each
        target once: ``document_pieces``), padded with PAD_ID on the right."""
        if self._vocab is None:
            raise ValueError(f"{where}: fitting token ids needs vocab_size or a tokenizer")
        pieces = []
        for doc in docs:
            doc = self._check_ids(np.asarray(doc, dtype=np.int64), where)
            pieces += document_pieces(doc, self.block_size + 1)
        if not pieces:
            raise ValueError(f"{where}: no document has a token to predict (each needs at "
                             "least 2 ids)")
        return pad_sequences(pieces, PAD_ID)[0]

    def _check_ids(self, ids, where):
        if ids.size and (ids.min() < 0 or ids.max() >= self._vocab):
            raise ValueError(f"{where}: token ids must lie in [0, {self._vocab}), got "
                             f"[{ids.min()}, {ids.max()}]")
        return ids

    def _check_idx(self, idx):
        """forward's input as an int64 (B, T) array, checked."""
        where = f"{type(self).__name__}.forward"
        if self._vocab is None:
            raise ValueError(f"{where}: the layers are not built yet (no vocab_size, no "
                             "tokenizer): fit on text first")
        idx = np.asarray(idx.data if isinstance(idx, Tensor) else idx)
        if idx.ndim != 2 or idx.dtype.kind not in "iu":
            raise ValueError(f"{where}: idx must be an integer array (batch, length), got "
                             f"{idx.dtype} {idx.shape}")
        return self._check_ids(idx.astype(np.int64, copy=False), where)

    def _check_fit_data(self, X, y, where):
        if y is not None:
            raise ValueError(f"{where}: a language model is unsupervised; got targets y")
        return self._rows(X, where)[0]

    # --- training --------------------------------------------------------------------------
    def fit(self, X, y=None, *, steps=None, epochs=None, batch_size=32, lr=1e-3,
            validation=None, warmup=WARMUP, clip_grad=CLIP_GRAD, rng=None, **train_options):
        """Train on text (one stream), a list of documents, or token ids (see the module
        docstring) with ``minigen.train``: AdamW from ``configure_optimizers``, linear warm-up
        over ``warmup`` of the steps then cosine decay to MIN_LR * lr (unless a ``schedule``
        is given), gradient-norm clipping at ``clip_grad``. An epoch visits every row once
        (for a stream, every window start). ``validation`` rows of a stream are the windows
        that start every block_size tokens (each target once, as ``evaluate`` scores it)."""
        where = f"{type(self).__name__}.fit"
        warmup = real(warmup, "warmup", where, low=0, high=1)
        batch_size = positive_int(batch_size, "batch_size", where)
        rows, documents, unigram = self._rows(X, where)
        if validation is not None:
            validation = self._rows(validation, f"{where} (validation)", self.block_size)[0]
        if (steps is None) != (epochs is None) and "schedule" not in train_options:
            total = steps if steps is not None else \
                epochs * max(len(rows) // min(batch_size, len(rows)), 1)
            train_options["schedule"] = lambda opt: CosineWarmup(
                opt, int(warmup * total), total, MIN_LR)
        self.documents_, self.unigram_ = documents, unigram
        return super().fit(rows, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr,
                           validation=validation, clip_grad=clip_grad, rng=rng, **train_options)

    def configure_optimizers(self, lr):
        """AdamW with weight decay on matrices and embeddings (ndim >= 2) and none on biases
        and LayerNorm gains, as GPT-2 / nanoGPT."""
        params = list(self.parameters())
        return AdamW([{"params": [p for p in params if p.ndim >= 2],
                       "weight_decay": WEIGHT_DECAY},
                      {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                     lr=lr, betas=BETAS)

    def loss(self, batch):
        """Mean cross-entropy of each next token, -log p(x_{t+1} | x_<=t), over the targets
        that are not padding."""
        batch = np.asarray(batch)
        x, y = batch[:, :-1], batch[:, 1:]
        pad = x == PAD_ID
        logits = self(x, key_padding_mask=pad if pad.any() else None)
        return F.cross_entropy(logits, y, ignore_index=PAD_ID)

    def loss_weight(self, batch):
        """How many targets ``loss(batch)`` averages over (those that are not padding): the
        weight data-parallel training gives each rank's loss, so the global mean is exact."""
        return int((np.asarray(batch)[:, 1:] != PAD_ID).sum())

    # --- scoring ---------------------------------------------------------------------------
    def _sequences(self, X, where):
        """Sequences to score, as id arrays: documents get <bos> ... <eos> around them."""
        check_fitted(self, "documents_", where)
        if isinstance(X, str):
            X = [X]
        if isinstance(X, np.ndarray) and X.ndim in (1, 2) and X.dtype.kind in "iu":
            X = [X] if X.ndim == 1 else list(X)
        if not isinstance(X, (list, tuple)):
            raise TypeError(f"{where}: expected a str, a list of str or token ids, got "
                            f"{type(X).__name__}")
        seqs = []
        for s in X:
            if isinstance(s, str):
                tok = self._tokenizer()
                if tok is None:
                    raise TypeError(f"{where}: this model was fitted on ids and has no "
                                    "tokenizer; give token ids")
                s = tok.encode(s, bos=self.documents_, eos=self.documents_)
            seqs.append(self._check_ids(np.asarray(s, dtype=np.int64).reshape(-1), where))
        return seqs

    def _target_log_probs(self, seqs, batch_size=64):
        """(targets, log p(target | history)) for every sequence: each is cut into pieces of
        block_size + 1 ids overlapping by one, as in training; padding targets are dropped."""
        pieces, owner = [], []
        for n, s in enumerate(seqs):
            cut = document_pieces(s, self.block_size + 1)
            pieces += cut
            owner += [n] * len(cut)
        if not pieces:
            return np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=np.int64)
        rows = pad_sequences(pieces, PAD_ID)[0]
        targets, logp = rows[:, 1:], np.zeros(rows[:, 1:].shape)
        with self.inference():
            for lo in range(0, len(rows), batch_size):
                x = rows[lo:lo + batch_size, :-1]
                pad = x == PAD_ID
                lsm = F.log_softmax(self(x, key_padding_mask=pad if pad.any() else None)).data
                t = targets[lo:lo + batch_size]
                logp[lo:lo + batch_size] = np.take_along_axis(lsm, t[..., None], -1)[..., 0]
        kept = targets != PAD_ID
        return targets[kept], logp[kept], np.repeat(owner, kept.sum(1))

    def score_samples(self, X):
        """log p(sequence) = sum_i log p(x_i | x_<i) in nats, one per sequence (NumPy float64).

        X: a str, a list of str, or token ids. A model fitted on documents scores
        <bos> text <eos> (every character and the end are predicted: a proper density over
        strings); a model fitted on a stream scores x_2 .. x_n given x_1. Sequences longer than
        block_size + 1 are scored in pieces of block_size + 1 that overlap by one token."""
        seqs = self._sequences(X, f"{type(self).__name__}.score_samples")
        _, logp, owner = self._target_log_probs(seqs)
        return np.bincount(owner, weights=logp, minlength=len(seqs))

    def evaluate(self, X):
        """Held-out metrics over every predicted token of X (as ``score_samples`` scores it):
        loss (mean nats per token), perplexity exp(loss), bits_per_token, and with a tokenizer
        bits_per_char and bits_per_byte (total bits over the characters / UTF-8 bytes that the
        predicted tokens spell; for a CharTokenizer bits_per_char is loss / ln 2 up to <eos>)."""
        seqs = self._sequences(X, f"{type(self).__name__}.evaluate")
        targets, logp, _ = self._target_log_probs(seqs)
        if not len(targets):
            raise ValueError(f"{type(self).__name__}.evaluate: X has no token to predict")
        nats = -float(logp.sum())
        loss = nats / len(targets)
        out = {"loss": loss, "perplexity": math.exp(loss), "bits_per_token": loss / math.log(2),
               "tokens": len(targets)}
        tok = self._tokenizer()
        if tok is not None:
            n_bytes = sum(len(tok.token_bytes(int(t))) for t in targets)
            out["bits_per_char"] = nats / math.log(2) / max(len(tok.decode(targets)), 1)
            out["bits_per_byte"] = nats / math.log(2) / max(n_bytes, 1)
        return out

    # --- generation ------------------------------------------------------------------------
    def generate(self, prompt, max_new_tokens, temperature=1.0, top_k=None, top_p=None,
                 rng=None, use_cache=True):
        """Continue ``prompt`` by up to ``max_new_tokens`` tokens, each drawn from
        ``sampling.next_token_probs(logits, temperature, top_k, top_p)`` (temperature 0:
        greedy).

        prompt: a str (returns prompt + continuation as a str, ending before the first <eos>;
        a model fitted on documents puts <bos> in front) or ids (T,) / (B, T) (returns the ids
        with the continuation appended; on documents, generation stops once every row has
        produced <eos>). use_cache: a TransformerLM keeps keys and values between steps; up to
        block_size tokens this gives exactly the uncached logits, past it the cache restarts
        from the last block_size // 2 tokens (learned positions cannot slide), where the
        uncached path slides a window of block_size tokens, so long continuations differ.
        """
        where = f"{type(self).__name__}.generate"
        check_sampling_args(temperature, top_k, top_p, where)
        max_new_tokens = integer(max_new_tokens, "max_new_tokens", where, low=0)
        rng = as_rng(rng, where=where)
        documents = getattr(self, "documents_", False)
        if isinstance(prompt, str):
            tok = self._tokenizer()
            if tok is None:
                raise TypeError(f"{where}: a str prompt needs a tokenizer; give token ids")
            ids = np.asarray(tok.encode(prompt, bos=documents), dtype=np.int64)[None]
            if ids.shape[1] == 0:
                raise ValueError(f"{where}: the prompt is empty; give at least one token "
                                 "(or use sample(n))")
            out = self._generate_ids(ids, max_new_tokens, temperature, top_k, top_p, rng,
                                     use_cache)
            return self._decode_row(out[0], tok)
        ids = np.asarray(prompt)
        if ids.ndim not in (1, 2) or ids.shape[-1] == 0:
            raise ValueError(f"{where}: prompt ids must have shape (T,) or (B, T) with T >= 1, "
                             f"got {ids.shape}")
        out = self._generate_ids(self._check_idx(np.atleast_2d(ids)), max_new_tokens,
                                 temperature, top_k, top_p, rng, use_cache)
        return out[0] if ids.ndim == 1 else out

    def _decode_row(self, row, tok):
        row = [int(t) for t in row]
        return tok.decode(row[:row.index(EOS_ID)] if EOS_ID in row else row)

    def _generate_ids(self, ids, max_new_tokens, temperature, top_k, top_p, rng, use_cache):
        documents = getattr(self, "documents_", False)
        done = np.zeros(len(ids), dtype=bool)
        cache = None
        with self.inference():
            for _ in range(max_new_tokens):
                if use_cache and self.max_context is not None:
                    logits, cache = self._cached_step(ids, cache)
                else:
                    recent = ids if self.window is None and self.max_context is None else \
                        ids[:, -(self.window or self.max_context):]
                    logits = self(recent)
                nxt = sample_next(logits.data[:, -1], temperature, top_k, top_p, rng)
                ids = np.concatenate([ids, nxt[:, None]], axis=1)
                done |= nxt == EOS_ID
                if documents and done.all():
                    break
        return ids

    def sample(self, n, rng=None, *, max_new_tokens=None, temperature=1.0, top_k=None,
               top_p=None):
        """n generated texts (a list of str; a list of int64 id arrays for a model without a
        tokenizer).

        A model fitted on documents starts each from <bos> and stops before <eos> (or after
        ``max_new_tokens``, default block_size); <bos> and <eos> are not part of a sample. One
        fitted on a stream draws its first token from the stream's token frequencies and makes
        ``max_new_tokens`` tokens in all (0 gives empty samples).
        """
        where = f"{type(self).__name__}.sample"
        n = check_n_samples(n, where)
        check_fitted(self, "documents_", where)
        check_sampling_args(temperature, top_k, top_p, where)
        new = integer(max_new_tokens, "max_new_tokens", where, low=0, optional=True)
        new = self.block_size if new is None else new
        rng = as_rng(rng, where=where)
        if self.documents_:
            start = np.full((n, 1), BOS_ID, dtype=np.int64)
        elif new > 0:
            start = rng.choice(self._vocab, size=(n, 1), p=self.unigram_)
            new -= 1
        else:
            start = np.zeros((n, 0), dtype=np.int64)
        ids = self._generate_ids(start, new, temperature, top_k, top_p, rng, True) \
            if n and start.shape[1] else start
        rows = [self._content(row) for row in ids]
        tok = self._tokenizer()
        return rows if tok is None else [tok.decode(row) for row in rows]

    def _content(self, row):
        """A generated row without <bos> in front and from the first <eos> on (documents)."""
        if not self.documents_:
            return row
        row = row[1:]
        ends = np.flatnonzero(row == EOS_ID)
        return row[:ends[0]] if len(ends) else row

    # --- checkpoints -----------------------------------------------------------------------
    _unsaved = DeepModel._unsaved + ("tokenizer_",)

    def _fitted_state(self):
        """The default fitted state plus the tokenizer as its JSON string."""
        state = super()._fitted_state()
        tok = getattr(self, "tokenizer_", None)
        state["tokenizer_"] = None if tok is None else tok.to_json()
        return state

    def load_state_dict(self, state, strict=True):
        """As Module's; a model whose layers wait for a vocabulary (vocab_size and tokenizer
        None) builds them first, sized by the saved weights (``_vocab_param``'s first axis)."""
        if self._vocab is None and self._vocab_param in state:
            self._build_vocab(np.shape(state[self._vocab_param])[0])
        return super().load_state_dict(state, strict)

    def _set_fitted_state(self, state):
        """As Configurable's, after checking that the state agrees with the weights: the
        tokenizer decodes every id of the output layer, ``documents_`` is a bool and a stream
        model's ``unigram_`` is a distribution over the vocabulary."""
        name = type(self).__name__
        state = dict(state)
        tok = state.pop("tokenizer_", None)
        if tok is not None:
            tok = Tokenizer.from_json(str(tok))
            if self._vocab not in (None, tok.vocab_size):
                raise ValueError(f"{name}: the saved {type(tok).__name__} has {tok.vocab_size} "
                                 f"ids but the weights have {self._vocab}")
            self.tokenizer_ = tok
            if self._vocab is None:
                self._build_vocab(tok.vocab_size)
        documents = state.get("documents_", False)
        if not isinstance(documents, (bool, np.bool_)):
            raise ValueError(f"{name}: documents_ must be True or False, got "
                             f"{excerpt(documents)}")
        if "documents_" in state and not documents:
            unigram = state.get("unigram_")
            ok = isinstance(unigram, np.ndarray) and unigram.shape == (self._vocab,) and \
                unigram.dtype.kind == "f" and np.all(unigram >= 0) and \
                abs(unigram.sum() - 1) < 1e-6
            if not ok:
                raise ValueError(f"{name}: unigram_ must be {self._vocab} probabilities summing "
                                 f"to 1, got {excerpt(unigram)}")
        super()._set_fitted_state(state)
