"""Language models (Bigram, MLPLM, TransformerLM) and the decoding rules."""
import math

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen.data import CharTokenizer, load_names, load_pydoc
from minigen.data.tokenizers import BOS_ID, EOS_ID, PAD_ID
from minigen.distribution import NotFittedError
from minigen.models.lm import MLPLM, Bigram, Block, TransformerLM
from minigen.models.lm.sampling import next_token_probs, sample_next
from minigen.testing import gradcheck

V = 11


def tiny_transformer(**kw):
    args = dict(vocab_size=V, block_size=8, n_layer=2, n_head=2, n_embd=16, rng=0)
    return TransformerLM(**{**args, **kw})


def tiny_models():
    bigram = Bigram(V, block_size=8)
    mg.nn.init.normal_(bigram.table.weight, rng=0)        # its table starts at zero
    return [bigram, MLPLM(V, context=3, n_embd=4, n_hidden=16, block_size=8, rng=0),
            tiny_transformer()]


def logits(model, idx, **kw):
    with model.inference():
        return model(idx, **kw).data.astype(np.float64)


# --- the forward pass -------------------------------------------------------------------------
@pytest.mark.parametrize("model", tiny_models(), ids=lambda m: type(m).__name__)
def test_causality(model):
    """Changing token j changes no logits before j (and does change the logits at j)."""
    rng = np.random.default_rng(0)
    idx = rng.integers(3, V, size=(2, 8))
    base = logits(model, idx)
    assert base.shape == (2, 8, V)
    for j in range(8):
        changed = idx.copy()
        changed[:, j] = 3 + (changed[:, j] - 2) % (V - 3)
        out = logits(model, changed)
        np.testing.assert_allclose(out[:, :j], base[:, :j], atol=1e-6)
        assert np.abs(out[:, j] - base[:, j]).max() > 1e-4


@pytest.mark.parametrize("model", tiny_models()[1:], ids=lambda m: type(m).__name__)
def test_left_padding_contents_do_not_matter(model):
    """With key_padding_mask, the tokens under the padding never reach a real position."""
    rng = np.random.default_rng(1)
    idx = rng.integers(3, V, size=(3, 8))
    mask = np.zeros((3, 8), dtype=bool)
    mask[0, :3] = mask[1, :5] = True
    other = np.where(mask, rng.integers(3, V, size=idx.shape), idx)
    a, b = logits(model, idx, key_padding_mask=mask), logits(model, other, key_padding_mask=mask)
    np.testing.assert_allclose(a[~mask], b[~mask], atol=1e-6)
    assert np.abs(logits(model, idx)[0, 3:] - logits(model, other)[0, 3:]).max() > 1e-4


@pytest.mark.parametrize("model", tiny_models(), ids=lambda m: type(m).__name__)
def test_padded_loss_equals_loss_of_each_sequence_alone(model):
    """The loss of a right-padded batch is the mean -log p over the real targets only."""
    seqs = [np.array([1, 5, 6, 7, 8, 9, 2]), np.array([1, 4, 2]), np.array([1, 3, 3, 10, 2])]
    batch = mg.data.pad_sequences(seqs, PAD_ID)[0]
    nll = []
    for s in seqs:
        lsm = F.log_softmax(mg.tensor(logits(model, s[None, :-1]))).data[0]
        nll += list(-lsm[np.arange(len(s) - 1), s[1:]])
    with model.inference():
        assert float(model.loss(batch).data) == pytest.approx(np.mean(nll), rel=1e-5)


def test_forward_errors():
    model = tiny_transformer()
    with pytest.raises(ValueError, match="9 positions exceed block_size 8"):
        model(np.zeros((1, 9), dtype=int))
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 11\)"):
        model(np.full((1, 2), V))
    with pytest.raises(ValueError, match="integer array"):
        model(np.zeros((1, 2)))
    with pytest.raises(ValueError, match="layers are not built"):
        TransformerLM(block_size=4)(np.zeros((1, 2), dtype=int))
    with pytest.raises(ValueError, match="vocab_size must be None or the tokenizer's "
                                         "vocab_size 6"):
        TransformerLM(5, tokenizer=CharTokenizer("abc"))


def test_weight_tying_and_decay_groups():
    model = tiny_transformer()
    names = [n for n, _ in model.named_parameters()]
    assert "wte.weight" in names and not any("head" in n for n in names)
    x = np.array([[3, 4, 5]])
    with model.inference():     # logits = ln_f(h) @ wte.weight.T: a zero embedding row of a
        model.wte.weight.data[7] = 0.0                  # token (not in x) zeroes its logit
        assert np.all(model(x).data[..., 7] == 0) and np.all(model(x).data[..., 6] != 0)
    opt = model.configure_optimizers(1e-3)
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim == 2 for p in decay["params"]) and all(p.ndim == 1
                                                             for p in no_decay["params"])
    assert len(decay["params"]) + len(no_decay["params"]) == len(names)


def test_attention_block_gradcheck():
    mg.set_default_dtype(np.float64)
    try:
        block = Block(n_embd=4, n_head=2, rng=0)
    finally:
        mg.set_default_dtype(np.float32)
    pad = np.array([[True, False, False], [False, False, True]])
    x = np.random.default_rng(0).standard_normal((2, 3, 4))     # (B, T, C)
    assert gradcheck(lambda t: block(t, pad), [x])


# --- the key/value cache ----------------------------------------------------------------------
def test_kv_cache_logits_equal_full_recomputation():
    model = tiny_transformer()
    ids = np.random.default_rng(2).integers(3, V, size=(2, 8))
    cache = model.new_cache()
    with model.inference():
        steps = [model(ids[:, :3], cache=cache).data[:, -1]]
        steps += [model(ids[:, t:t + 1], cache=cache).data[:, -1] for t in range(3, 8)]
        for t, step in zip(range(3, 9), steps):
            np.testing.assert_allclose(step, model(ids[:, :t]).data[:, -1], atol=1e-5)


def test_generate_with_and_without_cache_agree():
    model = tiny_transformer()
    prompt = np.array([[3, 4], [5, 6]])
    for kw in (dict(temperature=0), dict(temperature=1.0, top_k=5)):
        a = model.generate(prompt, 5, rng=0, use_cache=True, **kw)
        b = model.generate(prompt, 5, rng=0, use_cache=False, **kw)
        np.testing.assert_array_equal(a, b)
    long = model.generate(prompt, 20, temperature=0, rng=0)      # past block_size: restarts
    assert long.shape == (2, 22) and long.min() >= 0 and long.max() < V


def test_greedy_generation_is_argmax():
    model = tiny_transformer()
    out = model.generate(np.array([3, 4, 5]), 4, temperature=0)
    for t in range(3, 7):
        assert out[t] == logits(model, out[None, :t])[0, -1].argmax()


# --- decoding rules ---------------------------------------------------------------------------
def test_temperature_zero_is_argmax():
    z = np.random.default_rng(3).standard_normal((50, 7))
    np.testing.assert_array_equal(sample_next(z, temperature=0), z.argmax(-1))
    np.testing.assert_array_equal(next_token_probs(z, 0), np.eye(7)[z.argmax(-1)])


def test_temperature_scales_logits():
    z = np.array([1.0, 2.0, 0.5])
    p = next_token_probs(z, temperature=0.5)
    np.testing.assert_allclose(p, np.exp(2 * z) / np.exp(2 * z).sum())


def test_top_k_never_leaves_the_k_most_likely():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((200, 20))
    draws = sample_next(z, top_k=3, rng=rng)
    top3 = np.argsort(-z, axis=-1)[:, :3]
    assert all(d in row for d, row in zip(draws, top3))
    p = next_token_probs(z, top_k=3)
    assert ((p > 0).sum(-1) == 3).all()


def test_top_p_nucleus_and_frequencies():
    """p = (.4, .3, .15, .1, .05), top_p = .8: the nucleus is the first three tokens (mass .85);
    their frequencies match (.4, .3, .15) / .85 by a chi-square test (2 dof)."""
    probs = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
    z = np.log(probs)
    q = next_token_probs(z, top_p=0.8)
    np.testing.assert_allclose(q, np.where(probs >= 0.15, probs, 0) / 0.85)
    n = 20000
    draws = sample_next(np.tile(z, (n, 1)), top_p=0.8, rng=0)
    counts = np.bincount(draws, minlength=5)
    assert counts[0] == counts[2] == 0
    expected = n * q[[1, 3, 4]]
    chi2 = float(((counts[[1, 3, 4]] - expected) ** 2 / expected).sum())
    assert chi2 < 13.82        # the 0.999 quantile of chi-square with 2 degrees of freedom


def test_sampling_argument_errors():
    with pytest.raises(ValueError, match="temperature must be a finite number >= 0"):
        sample_next(np.zeros(3), temperature=-1)
    with pytest.raises(ValueError, match="top_k must be a positive int, got 0"):
        next_token_probs(np.zeros(3), top_k=0)
    with pytest.raises(ValueError, match=r"top_p must be a finite number in \(0, 1\]"):
        next_token_probs(np.zeros(3), top_p=1.5)


# --- training, scoring, sampling ----------------------------------------------------------------
def test_trained_bigram_equals_normalised_counts():
    """block_size=1: every bigram of the stream is one row, so maximum likelihood (no weight
    decay) gives the normalised counts; after training they agree to the optimiser's residual."""
    rng = np.random.default_rng(5)
    stream = rng.choice(np.arange(3, 8), size=400, p=[0.4, 0.3, 0.15, 0.1, 0.05])
    model = Bigram(8, block_size=1).fit(stream, steps=300, batch_size=len(stream), lr=0.2)
    counts = np.zeros((8, 8))
    np.add.at(counts, (stream[:-1], stream[1:]), 1)
    seen = counts.sum(1) > 0
    with model.inference():
        p = model(np.arange(8)[:, None]).softmax(-1).data[:, 0]
    np.testing.assert_allclose(p[seen], (counts / counts.sum(1, keepdims=True).clip(1))[seen],
                               atol=0.01)


def test_log_prob_is_sum_of_next_token_log_probs():
    text = "abcab cabba " * 10
    model = TransformerLM(block_size=8, n_layer=1, n_head=2, n_embd=8, rng=0)
    model.fit(text, steps=2, batch_size=4)
    tok = model.tokenizer_
    assert isinstance(tok, CharTokenizer) and model.n_vocab == tok.vocab_size
    s = "abcabcabbacab"       # 13 tokens: two pieces of block_size + 1, overlapping by one
    ids = np.array(tok.encode(s))
    expected = 0.0
    for lo in (0, 8):
        piece = ids[lo:lo + 9]
        lsm = F.log_softmax(mg.tensor(logits(model, piece[None, :-1]))).data[0]
        expected += lsm[np.arange(len(piece) - 1), piece[1:]].sum()
    got = model.log_prob([s, "ab"])
    assert got.shape == (2,) and got[0] == pytest.approx(expected, rel=1e-5)
    metrics = model.evaluate(s)
    assert metrics["loss"] == pytest.approx(-expected / 12, rel=1e-5)
    assert metrics["bits_per_char"] == pytest.approx(metrics["loss"] / math.log(2), rel=1e-9)
    assert metrics["perplexity"] == pytest.approx(math.exp(metrics["loss"]))


@pytest.mark.parametrize("cls", [Bigram, MLPLM, TransformerLM])
def test_fit_generate_score_sample_on_documents(cls, tmp_path):
    names = load_names()
    model = cls(block_size=12, rng=0, **({"n_layer": 1, "n_embd": 32} if cls is TransformerLM
                                          else {}))
    model.fit(names, steps=60, batch_size=64, lr=0.1 if cls is Bigram else 1e-2, rng=0)
    assert model.documents_ and model.history_.losses[-1] < model.history_.losses[0] - 0.5
    samples = model.sample(5, rng=0, max_new_tokens=12)
    assert len(samples) == 5 and all(set(s) <= set("abcdefghijklmnopqrstuvwxyz")
                                     for s in samples)
    assert samples == model.sample(5, rng=0, max_new_tokens=12)
    lp = model.log_prob(["emma", "qzxv"])
    assert lp[0] > lp[1] and np.all(lp < 0)
    assert model.generate("em", 10, temperature=0).startswith("em")
    path = tmp_path / "lm.npz"
    mg.io.save_model(model, path)
    back = mg.io.load_model(path)
    assert type(back) is cls and back.tokenizer_ == model.tokenizer_
    np.testing.assert_allclose(back.log_prob(["emma", "qzxv"]), lp, rtol=1e-6)


def test_fit_on_text_with_bpe_and_validation():
    text = load_pydoc()[:6000]
    tok = mg.data.BPETokenizer.train(text, 300)
    model = TransformerLM(block_size=16, n_layer=1, n_head=2, n_embd=16, tokenizer=tok, rng=0)
    model.fit(text[:5000], steps=20, batch_size=16, lr=3e-3, validation=text[5000:],
              val_every=10, rng=0)
    assert model.n_vocab == 300 and not model.documents_
    assert len(model.history_.val_losses) == 2
    out = model.generate("The ", 8, top_p=0.9, rng=0)
    assert out.startswith("The ") and len(out) > 4
    assert len(model.sample(2, rng=0, max_new_tokens=5)) == 2
    assert 0 < model.evaluate(text[5000:])["bits_per_byte"] < 9


def test_fit_and_sample_errors():
    model = tiny_transformer()
    with pytest.raises(NotFittedError):
        model.sample(2)
    with pytest.raises(ValueError, match="exactly one of steps= or epochs="):
        model.fit(np.arange(3, 11).repeat(3), batch_size=4)
    with pytest.raises(ValueError, match="fewer than block_size"):
        model.fit(np.arange(3, 8), steps=1)
    with pytest.raises(TypeError, match="X must be a str"):
        model.fit(3.5, steps=1)
    with pytest.raises(ValueError, match="not in the alphabet"):
        TransformerLM(tokenizer=CharTokenizer("ab"), block_size=2).fit("abc", steps=1)
    with pytest.raises(ValueError, match="max_new_tokens must be an int >= 0"):
        model.generate(np.array([3]), -1)
    model.fit([[1, 3, 4, 2], [1, 5, 2]], steps=1)     # documents of ids
    assert model.sample(2, rng=0, max_new_tokens=3)[0].dtype.kind == "i"
    with pytest.raises(TypeError, match="has no tokenizer"):
        model.log_prob("abc")
    assert BOS_ID == 1 and EOS_ID == 2
