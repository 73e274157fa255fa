"""minigen.nn: the module tree, state dicts, train/eval, layers, initialisers, BatchNorm
against PyTorch, and MultiheadAttention's causal and padding masks (exactly zero gradients)."""
import math

import numpy as np
import pytest

import minigen as mg
import minigen.functional as F
from minigen import nn
from minigen.nn import init


def make_net(seed):
    return nn.Sequential(nn.Linear(3, 5, rng=seed), nn.ReLU(), nn.BatchNorm1d(5),
                         nn.Linear(5, 2, rng=seed + 1))


# --- the tree, state dicts ------------------------------------------------------------------
def test_parameter_count_names_and_repr():
    net = nn.MLP([3, 5, 2], activation="tanh", rng=0)
    assert net.num_parameters() == 3 * 5 + 5 + 5 * 2 + 2 == 32
    assert [n for n, _ in net.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert all(p.requires_grad for p in net.parameters())
    text = repr(net)
    assert "Linear(3, 5, bias=True)" in text and "Tanh()" in text
    assert "# 32 parameters" in text and "# 12 parameters" in text
    assert len(list(net.children())) == 3 and len(list(net.modules())) == 4


def test_shared_parameters_are_listed_once():
    layer = nn.Linear(4, 4, rng=0)
    net = nn.Sequential(layer, nn.ReLU(), layer)
    assert net.num_parameters() == 20
    x = mg.tensor(np.ones((2, 4)))
    net(x).sum().backward()
    assert layer.weight.grad.shape == (4, 4)


def test_state_dict_round_trip_includes_buffers():
    src, dst = make_net(0), make_net(10)
    x = mg.tensor(np.random.default_rng(0).standard_normal((6, 3)), dtype=np.float32)
    src(x)  # updates the BatchNorm running statistics
    state = src.state_dict()
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias", "2.running_mean",
                          "2.running_var", "3.weight", "3.bias"}
    dst.load_state_dict(state)
    src.eval(), dst.eval()
    np.testing.assert_array_equal(src(x).numpy(), dst(x).numpy())
    state["0.weight"][...] = 0.0  # a copy: the module is unaffected
    assert np.abs(src[0].weight.numpy()).sum() > 0


def test_load_state_dict_errors():
    net = make_net(0)
    state = net.state_dict()
    bad = dict(state, **{"0.weight": np.zeros((5, 4), np.float32)})
    with pytest.raises(ValueError, match=r"load_state_dict: 0.weight has shape \(5, 4\) in the "
                                         r"state dict but \(5, 3\) in the module"):
        net.load_state_dict(bad)
    before = net[0].weight.numpy().copy()
    missing = {k: v for k, v in state.items() if k != "3.bias"}
    with pytest.raises(KeyError, match=r"missing keys \['3.bias'\]"):
        net.load_state_dict(missing)
    with pytest.raises(KeyError, match=r"unexpected keys \['extra'\]"):
        net.load_state_dict(dict(state, extra=np.zeros(1)))
    np.testing.assert_array_equal(net[0].weight.numpy(), before)
    net.load_state_dict(missing, strict=False)


def test_train_eval_zero_grad_and_dtype():
    net = make_net(0)
    assert all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    x = mg.tensor(np.ones((4, 3)))
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    net.double()
    assert all(p.dtype == np.float64 for p in net.parameters())
    assert net[2].running_mean.dtype == np.float64
    assert net(x).dtype == np.float64


def test_attribute_before_init_is_a_clear_error():
    class Broken(nn.Module):
        def __init__(self):
            self.layer = nn.Linear(1, 1, rng=0)

    with pytest.raises(RuntimeError, match=r"Broken: call super\(\).__init__\(\)"):
        Broken()


def test_module_list():
    layers = nn.ModuleList([nn.Linear(2, 2, rng=i) for i in range(3)])
    assert len(layers) == 3 and layers.num_parameters() == 18
    assert [n for n, _ in layers.named_parameters()][:2] == ["0.weight", "0.bias"]


# --- layers ---------------------------------------------------------------------------------
def test_linear_matches_formula_and_checks_features():
    layer = nn.Linear(3, 2, rng=0)
    x = np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(mg.tensor(x)).numpy(),
                               x @ layer.weight.numpy().T + layer.bias.numpy(), rtol=1e-6)
    assert np.abs(layer.weight.numpy()).max() <= 1 / math.sqrt(3)
    with pytest.raises(ValueError, match=r"Linear: input has 4 features .* expected 3"):
        layer(mg.tensor(np.ones((2, 4))))
    assert nn.Linear(3, 2, bias=False, rng=0).bias is None


def test_conv_layers_shapes():
    x = mg.tensor(np.ones((2, 3, 9, 8)), dtype=np.float32)
    conv = nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=0)
    assert conv(x).shape == (2, 4, 5, 4)
    assert conv.num_parameters() == 4 * 3 * 9 + 4
    up = nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1, rng=0)
    assert up(conv(x)).shape == (2, 3, 10, 8)
    assert up.weight.shape == (4, 3, 4, 4)


def test_embedding_layer_and_activations():
    emb = nn.Embedding(10, 4, rng=0)
    assert emb(np.array([[1, 2], [3, 1]])).shape == (2, 2, 4)
    x = mg.tensor(np.linspace(-2, 2, 7))
    for module, fn in [(nn.ReLU(), F.relu), (nn.GELU(), F.gelu), (nn.SiLU(), F.silu),
                       (nn.Tanh(), F.tanh), (nn.Sigmoid(), F.sigmoid), (nn.Softplus(), F.softplus),
                       (nn.LeakyReLU(0.3), lambda t: F.leaky_relu(t, 0.3)),
                       (nn.Identity(), lambda t: t)]:
        np.testing.assert_array_equal(module(x).numpy(), fn(x).numpy())
    with pytest.raises(ValueError, match="MLP: unknown activation 'swish'"):
        nn.MLP([2, 2, 2], activation="swish")
    with pytest.raises(ValueError, match="MLP: sizes needs at least"):
        nn.MLP([2])


def test_layer_norm_module():
    ln = nn.LayerNorm(4)
    x = np.random.default_rng(0).standard_normal((3, 4))
    out = ln(mg.tensor(x)).numpy()
    np.testing.assert_allclose(out.mean(-1), 0, atol=1e-6)
    np.testing.assert_allclose(out.var(-1), 1 / (1 + 1e-5 / x.var(-1)), rtol=1e-5)
    assert ln.num_parameters() == 8
    assert nn.LayerNorm(4, elementwise_affine=False).num_parameters() == 0


def test_dropout_module_train_and_eval():
    drop = nn.Dropout(0.5, rng=np.random.default_rng(0))
    x = mg.ones(1000, dtype=np.float64)
    out = drop(x).numpy()
    assert set(np.unique(out)) == {0.0, 2.0}
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())


@pytest.mark.parametrize("cls, shape", [("BatchNorm1d", (8, 3)), ("BatchNorm2d", (4, 3, 5, 2))])
def test_batchnorm_matches_torch_in_train_and_eval(cls, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = getattr(nn, cls)(3, momentum=0.2).double()
    theirs = getattr(torch.nn, cls)(3, momentum=0.2).double()
    weight, bias = rng.standard_normal(3), rng.standard_normal(3)
    ours.load_state_dict({"weight": weight, "bias": bias}, strict=False)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(weight))
        theirs.bias.copy_(torch.tensor(bias))
    for step in range(3):
        x = rng.standard_normal(shape) * (1 + step) + step
        np.testing.assert_allclose(ours(mg.tensor(x)).numpy(),
                                   theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10,
                                   atol=1e-12)
    np.testing.assert_allclose(ours.running_mean, theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var, theirs.running_var.numpy(), rtol=1e-12)
    ours.eval(), theirs.eval()
    x = rng.standard_normal(shape)
    np.testing.assert_allclose(ours(mg.tensor(x)).numpy(),
                               theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-12)


def test_batchnorm_statistics_and_errors():
    bn = nn.BatchNorm1d(2, momentum=0.1)
    x = np.array([[1.0, 2.0], [3.0, 6.0]])
    out = bn(mg.tensor(x)).numpy()
    np.testing.assert_allclose(out, [[-1, -1], [1, 1]], rtol=1e-4)
    np.testing.assert_allclose(bn.running_mean, 0.1 * x.mean(0), rtol=1e-6)
    np.testing.assert_allclose(bn.running_var, 0.9 + 0.1 * x.var(0, ddof=1), rtol=1e-6)
    with pytest.raises(ValueError, match="BatchNorm1d: expected input with 2 dims and 2 channels"):
        bn(mg.tensor(np.ones((2, 3))))


# --- the default dtype ----------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, "float64", np.dtype("float64")])
def test_default_dtype_sets_new_tensors_and_parameters_and_is_restored(dtype):
    """Python numbers, factories and new layers take the default dtype; NumPy arrays keep
    theirs; integers stay integers."""
    saved = mg.get_default_dtype()
    assert np.dtype(saved) == np.float32                    # the documented default
    try:
        mg.set_default_dtype(dtype)
        assert np.dtype(mg.get_default_dtype()) == np.float64
        made = [mg.tensor([1.0, 2.0]), mg.zeros(2), mg.ones(2), mg.randn(2, rng=0),
                nn.Linear(2, 3, rng=0).weight, nn.Conv2d(1, 2, 3, rng=0).weight]
        assert all(t.dtype == np.float64 for t in made)
        assert mg.tensor(np.ones(2, np.float32)).dtype == np.float32
        assert mg.tensor([1, 2]).dtype.kind == "i"
        mg.set_default_dtype(np.float32)
        assert nn.Linear(2, 3, rng=0).weight.dtype == np.float32
        assert mg.tensor([1.0]).dtype == np.float32 and mg.tensor(np.ones(2)).dtype == np.float64
        for bad in (np.int32, np.float16, "complex128"):
            with pytest.raises(ValueError, match="set_default_dtype: expected float32 or float64"):
                mg.set_default_dtype(bad)
            assert np.dtype(mg.get_default_dtype()) == np.float32      # unchanged by the error
    finally:
        mg.set_default_dtype(saved)


# --- initialisers ---------------------------------------------------------------------------
def assert_fills_the_interval(w, bound):
    """w looks like n draws of U(-bound, bound): none outside, and the spread reaches the
    bound. For n uniform draws, P(max |w| < (1 - c/n) bound) = (1 - c/n)^n < e^-c, and the mean
    and variance b^2/3 are within 4 standard errors (Var w^2 = 4 b^4 / 45)."""
    n, top = w.size, float(np.abs(w).max())
    assert top <= bound
    assert top > (1 - 20 / n) * bound, f"max |w| = {top}, bound {bound}"   # p < e^-20
    assert abs(w.mean()) < 4 * bound / math.sqrt(3 * n)
    assert abs((w * w).mean() - bound ** 2 / 3) < 4 * bound ** 2 * math.sqrt(4 / 45 / n)


def test_initialisers():
    rng = np.random.default_rng(0)
    p = nn.Parameter(np.zeros((400, 300)))
    a = math.sqrt(6 / 700)
    assert_fills_the_interval(init.xavier_uniform_(p, rng=rng).numpy(), a)
    n = p.size
    std = init.kaiming_normal_(p, rng=rng).numpy().std()
    target = math.sqrt(2 / 300)
    assert abs(std - target) < 5 * target / math.sqrt(2 * n)
    std = init.xavier_normal_(p, gain=2.0, rng=rng).numpy().std()
    target = 2 * math.sqrt(2 / 700)
    assert abs(std - target) < 5 * target / math.sqrt(2 * n)
    b = init.kaiming_uniform_(p, a=math.sqrt(5), rng=rng).numpy()
    assert_fills_the_interval(b, 1 / math.sqrt(300))
    assert (init.zeros_(p).numpy() == 0).all() and (init.ones_(p).numpy() == 1).all()
    conv_w = nn.Parameter(np.zeros((8, 4, 3, 3)))
    assert_fills_the_interval(init.kaiming_uniform_(conv_w, rng=rng).numpy(), math.sqrt(6 / 36))
    assert_fills_the_interval(init.uniform_(conv_w, -0.3, 0.3, rng=rng).numpy(), 0.3)
    with pytest.raises(ValueError, match=r"init: fan in/out need a weight with >= 2 dims"):
        init.xavier_uniform_(nn.Parameter(np.zeros(3)))


# --- attention ------------------------------------------------------------------------------
def test_scaled_dot_product_attention_matches_numpy():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 5, 3)),
               rng.standard_normal((2, 5, 2)))
    s = q @ k.transpose(0, 2, 1) / math.sqrt(3)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    out = nn.scaled_dot_product_attention(mg.tensor(q), mg.tensor(k), mg.tensor(v))
    np.testing.assert_allclose(out.numpy(), p @ v, rtol=1e-12)


def _mha(seed=0):
    return nn.MultiheadAttention(8, 2, rng=seed).double()


def test_causal_mask_future_tokens_have_exactly_zero_influence():
    mha = _mha()
    x = mg.tensor(np.random.default_rng(1).standard_normal((2, 5, 8)), requires_grad=True)
    out = mha(x, causal=True)
    for i in range(5):
        (g,) = mg.grad(out[:, i].sum(), [x], retain_graph=True)
        g = g.numpy()
        assert (g[:, i + 1:] == 0).all()
        assert np.abs(g[:, :i + 1]).min() > 0
    # without the mask the future does matter
    (g,) = mg.grad(mha(x)[:, 0].sum(), [x])
    assert np.abs(g.numpy()[:, 1:]).min() > 0


@pytest.mark.parametrize("lq", [1, 2, 4])
def test_causal_mask_with_fewer_queries_than_keys_aligns_the_last_query_with_the_last_key(lq):
    """With a cache of earlier keys (Lq < Lk), query i sits at position Lk - Lq + i: it sees
    keys 0..Lk - Lq + i, so the last Lq rows of full causal self-attention come out again."""
    mha, lk = _mha(), 5
    x = mg.tensor(np.random.default_rng(4).standard_normal((2, lk, 8)), requires_grad=True)
    full = mha(x, causal=True).numpy()
    tail = mha(x[:, lk - lq:], x, x, causal=True)
    np.testing.assert_allclose(tail.numpy(), full[:, lk - lq:], rtol=1e-12, atol=1e-12)
    for i in range(lq):
        (g,) = mg.grad(tail[:, i].sum(), [x], retain_graph=True)
        seen = lk - lq + i + 1
        assert (g.numpy()[:, seen:] == 0).all() and np.abs(g.numpy()[:, :seen]).min() > 0


def test_padding_mask_padded_keys_have_exactly_zero_influence():
    mha = _mha()
    rng = np.random.default_rng(2)
    q = mg.tensor(rng.standard_normal((2, 3, 8)), requires_grad=True)
    kv = mg.tensor(rng.standard_normal((2, 6, 8)), requires_grad=True)
    pad = np.zeros((2, 6), dtype=bool)
    pad[0, 4:] = True
    pad[1, 1] = True
    out = mha(q, kv, kv, key_padding_mask=pad)
    (g,) = mg.grad(out.sum(), [kv])
    g = g.numpy()
    assert (g[pad] == 0).all()
    assert (np.abs(g[~pad]).sum(-1) > 0).all()
    # changing the padded keys changes nothing
    kv2 = kv.numpy().copy()
    kv2[pad] = 100.0
    np.testing.assert_array_equal(mha(q, mg.tensor(kv2), mg.tensor(kv2),
                                      key_padding_mask=pad).numpy(), out.numpy())


def test_causal_and_padding_masks_combine():
    mha = _mha()
    x = mg.tensor(np.random.default_rng(3).standard_normal((1, 4, 8)), requires_grad=True)
    pad = np.array([[False, True, False, False]])
    out = mha(x, causal=True, key_padding_mask=pad)
    (g,) = mg.grad(out[:, 2].sum(), [x])
    g = g.numpy()[0]
    assert (g[3] == 0).all()                      # future
    assert np.abs(g[0]).sum() > 0 and np.abs(g[2]).sum() > 0
    # output 2 uses query 2 and keys/values 0 and 2 only: padded token 1 has no influence
    assert (g[1] == 0).all()


def test_multihead_attention_errors():
    with pytest.raises(ValueError, match="MultiheadAttention: embed_dim 6 is not divisible by "
                                         "num_heads 4"):
        nn.MultiheadAttention(6, 4)
    mha = _mha()
    with pytest.raises(ValueError,
                       match=r"MultiheadAttention: expected query \(batch, length, 8\)"):
        mha(mg.tensor(np.ones((2, 3, 4))))
    with pytest.raises(ValueError, match=r"key_padding_mask must have shape \(2, 3\)"):
        mha(mg.tensor(np.ones((2, 3, 8))), key_padding_mask=np.zeros((2, 4), dtype=bool))
