"""The Transformer against a PyTorch GPT on the same weights: logits (attention scaled by
1/sqrt(hs), as ``torch.nn.functional.scaled_dot_product_attention``) and the gradient of the
tied token embedding, which receives gradient from the input and from the output layer. Also
the one attention's masks: fully masked rows, padding, the KV cache."""
import numpy as np
import pytest

import minigen as mg
from minigen.models import TransformerLM
from minigen.nn.attention import KVCache, scaled_dot_product_attention

V, T, C, NH = 13, 6, 16, 4


def _model():
    mg.set_default_dtype(np.float64)
    try:
        return TransformerLM(V, block_size=8, n_layer=2, n_head=NH, n_embd=C, rng=0)
    finally:
        mg.set_default_dtype(np.float32)


def _torch_gpt(torch, state, idx, pad=None):
    """nanoGPT's forward written with torch ops over our state dict (float64 tensors)."""
    F = torch.nn.functional
    w = {k: torch.tensor(v, requires_grad=True) for k, v in state.items()}
    B, T_ = idx.shape
    x = w["wte.weight"][torch.tensor(idx)] + w["wpe.weight"][:T_]
    allowed = torch.ones(T_, T_, dtype=torch.bool).tril()[None, None]
    if pad is not None:
        allowed = allowed & ~torch.tensor(pad)[:, None, None, :]
    for i in range(2):
        p = f"blocks.{i}."
        h = F.layer_norm(x, (C,), w[p + "ln1.weight"], w[p + "ln1.bias"])
        q, k, v = F.linear(h, w[p + "attn.qkv.weight"], w[p + "attn.qkv.bias"]).split(C, -1)
        q, k, v = (z.view(B, T_, NH, C // NH).transpose(1, 2) for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
        y = y.transpose(1, 2).reshape(B, T_, C)
        x = x + F.linear(y, w[p + "attn.proj.weight"], w[p + "attn.proj.bias"])
        h = F.layer_norm(x, (C,), w[p + "ln2.weight"], w[p + "ln2.bias"])
        h = F.gelu(F.linear(h, w[p + "fc.weight"], w[p + "fc.bias"]), approximate="tanh")
        x = x + F.linear(h, w[p + "fc_out.weight"], w[p + "fc_out.bias"])
    x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"])
    return x @ w["wte.weight"].T, w


def test_logits_match_pytorch_scaled_dot_product_attention():
    torch = pytest.importorskip("torch")
    model = _model()
    idx = np.random.default_rng(0).integers(3, V, size=(2, T))
    with model.inference():
        ours = model(idx).data
    theirs, _ = _torch_gpt(torch, model.state_dict(), idx)
    np.testing.assert_allclose(ours, theirs.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_tied_embedding_gradient_matches_pytorch():
    """loss = cross-entropy of the next token; d loss / d W_te sums the input side (rows of
    the tokens in idx) and the output side (every row: logits = h W_te^T)."""
    torch = pytest.importorskip("torch")
    model = _model()
    idx = np.random.default_rng(1).integers(3, 8, size=(2, T + 1))     # ids 8 .. 12 absent
    model.loss(idx).backward()
    logits, w = _torch_gpt(torch, model.state_dict(), idx[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, V),
                                             torch.tensor(idx[:, 1:]).reshape(-1))
    loss.backward()
    ours = model.wte.weight.grad.numpy()
    np.testing.assert_allclose(ours, w["wte.weight"].grad.numpy(), rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(model.blocks[0].attn.qkv.weight.grad.numpy(),
                               w["blocks.0.attn.qkv.weight"].grad.numpy(), rtol=1e-8,
                               atol=1e-12)


def test_a_token_absent_from_the_input_learns_through_the_output_layer():
    """Row j of W_te for a token j never in the input still gets gradient p_j h summed over
    positions (its logit pushes probability away from it): non-zero, and equal to the
    output-side formula sum_t (softmax_j - 1[y_t = j]) LN_f(x_t) / N."""
    model = _model()
    idx = np.random.default_rng(1).integers(3, 8, size=(2, T + 1))
    model.loss(idx).backward()
    g = model.wte.weight.grad.numpy()
    absent = np.setdiff1d(np.arange(V), idx[:, :-1])
    assert len(absent) >= 5 and np.all(np.abs(g[absent]).sum(1) > 1e-6)
    with model.inference():
        x = model.wte(idx[:, :-1]) + model.wpe(np.arange(T))
        for block in model.blocks:
            x = block(x)
        h = model.ln_f(x).data.reshape(-1, C)
        p = model(idx[:, :-1]).softmax(-1).data.reshape(-1, V)
    onehot = np.eye(V)[idx[:, 1:].reshape(-1)]
    np.testing.assert_allclose(g[absent], ((p - onehot).T @ h)[absent] / len(h), rtol=1e-8,
                               atol=1e-14)


def test_padded_logits_match_pytorch_on_real_positions():
    torch = pytest.importorskip("torch")
    model = _model()
    idx = np.random.default_rng(2).integers(3, V, size=(2, T))
    pad = np.zeros((2, T), dtype=bool)
    pad[0, 4:] = True                        # right padding: every query keeps a real key
    with model.inference():
        ours = model(idx, key_padding_mask=pad).data
    theirs, _ = _torch_gpt(torch, model.state_dict(), idx, pad)
    np.testing.assert_allclose(ours[~pad], theirs.detach().numpy()[~pad], rtol=1e-10,
                               atol=1e-12)


# --- the attention's masks ---------------------------------------------------------------------
def test_a_query_with_no_visible_key_gives_zero_not_nan():
    rng = np.random.default_rng(3)
    q, k, v = (mg.tensor(rng.standard_normal((2, 1, 3, 4)), requires_grad=True)
               for _ in range(3))
    pad = np.array([[True, True, False], [False, False, False]])
    out = scaled_dot_product_attention(q, k, v, causal=True, key_padding_mask=pad)
    assert np.isfinite(out.numpy()).all()
    np.testing.assert_array_equal(out.numpy()[0, 0, :2], 0.0)    # queries 0, 1 see nothing
    out.sum().backward()
    assert all(np.isfinite(t.grad.numpy()).all() for t in (q, k, v))
    np.testing.assert_array_equal(q.grad.numpy()[0, 0, :2], 0.0)


def test_masked_keys_have_no_influence_even_with_huge_scores():
    """A masked key whose score is 1e12 (far beyond an additive -1e9) still gets weight 0."""
    q = mg.tensor(np.ones((1, 2, 4)))
    k = mg.tensor(np.array([[[1.0] * 4, [1e12] * 4]]))
    v = mg.tensor(np.array([[[1.0, 2.0], [50.0, 60.0]]]))
    out = scaled_dot_product_attention(q, k, v, mask=np.array([[False, True]]))
    np.testing.assert_array_equal(out.numpy(), [[[1.0, 2.0], [1.0, 2.0]]])


def test_kv_cache_keeps_the_padding_of_earlier_positions():
    cache = KVCache()
    rng = np.random.default_rng(4)
    k1, v1 = mg.tensor(rng.standard_normal((2, 1, 3, 4))), mg.tensor(rng.standard_normal((2, 1, 3, 4)))
    k, v, pad = cache.append(k1, v1)
    assert pad is None and cache.length == 3
    k2, v2 = mg.tensor(rng.standard_normal((2, 1, 1, 4))), mg.tensor(rng.standard_normal((2, 1, 1, 4)))
    k, v, pad = cache.append(k2, v2, np.array([[True], [False]]))
    assert k.shape == (2, 1, 4, 4) and cache.length == 4
    np.testing.assert_array_equal(pad, [[False, False, False, True], [False] * 4])
    np.testing.assert_array_equal(k.numpy()[:, :, 3:], k2.numpy())
