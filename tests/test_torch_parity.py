"""Numerical parity with PyTorch (an optional test dependency; skipped cleanly without it).

Trajectories: the same MLP, small conv net and attention block (MultiheadAttention + LayerNorm
+ MLP) in both libraries, minigen's initial weights copied into torch, 20 Adam steps on the
same batches in float64: losses and final weights agree to 1e-6 relative. Then single ops
whose conventions PyTorch defines (conv geometry, pooling padding, loss formulas) forward and
backward against torch.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
import minigen.functional as F
from minigen import nn, optim

torch = pytest.importorskip("torch")
TF = torch.nn.functional
STEPS = 20


def run_trajectories(ours, theirs, pairs, batches, our_loss, their_loss, lr=1e-2):
    """Copy minigen's weights into torch, train both with Adam, compare every loss and the
    final weights. ``pairs``: (list of minigen params, torch param); the torch param is the
    concatenation of the minigen ones along axis 0 (e.g. torch's packed in_proj_weight)."""
    with torch.no_grad():
        for mine, tp in pairs:
            tp.copy_(torch.from_numpy(np.concatenate([p.numpy() for p in mine], axis=0)))
    assert sum(p.size for mine, _ in pairs for p in mine) == ours.num_parameters()
    assert sum(tp.numel() for _, tp in pairs) == sum(p.numel() for p in theirs.parameters())
    initial = [np.concatenate([p.numpy() for p in mine], axis=0) for mine, _ in pairs]
    opt_ours = optim.Adam(list(ours.parameters()), lr=lr)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=lr)
    losses_ours, losses_theirs = [], []
    for batch in batches:
        opt_ours.zero_grad()
        loss = our_loss(ours, *batch)
        loss.backward()
        opt_ours.step()
        losses_ours.append(loss.item())
        opt_theirs.zero_grad()
        tloss = their_loss(theirs, *batch)
        tloss.backward()
        opt_theirs.step()
        losses_theirs.append(tloss.item())
    np.testing.assert_allclose(losses_ours, losses_theirs, rtol=1e-6)
    moved = max(float(np.abs(np.concatenate([p.numpy() for p in mine]) - start).max())
                for (mine, _), start in zip(pairs, initial))
    assert moved > 10 * lr      # the weights did travel, so agreeing at the end means something
    for mine, tp in pairs:
        np.testing.assert_allclose(np.concatenate([p.numpy() for p in mine], axis=0),
                                   tp.detach().numpy(), rtol=1e-6, atol=1e-9)


def linear_pairs(ours, theirs):
    return [([ours.weight], theirs.weight), ([ours.bias], theirs.bias)]


def test_mlp_trajectory():
    rng = np.random.default_rng(0)
    ours = nn.MLP([6, 16, 16, 3], activation="gelu", rng=1).double()
    theirs = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(),
                                 torch.nn.Linear(16, 16), torch.nn.GELU(),
                                 torch.nn.Linear(16, 3)).double()
    pairs = [pp for i in (0, 2, 4) for pp in linear_pairs(ours[i], theirs[i])]
    batches = [(rng.standard_normal((12, 6)), rng.integers(0, 3, 12)) for _ in range(STEPS)]
    run_trajectories(
        ours, theirs, pairs, batches,
        lambda m, x, y: F.cross_entropy(m(mg.tensor(x)), y),
        lambda m, x, y: TF.cross_entropy(m(torch.from_numpy(x)), torch.from_numpy(y)))


class OurConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1, rng=0)
        self.conv2 = nn.Conv2d(4, 6, 3, stride=2, padding=1, rng=1)
        self.head = nn.Linear(6 * 2 * 2, 5, rng=2)

    def forward(self, x):
        h = F.relu(self.conv2(F.relu(self.conv1(x))))
        h = F.max_pool2d(h, 2)
        return self.head(h.reshape(h.shape[0], -1))


class TheirConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = torch.nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.head = torch.nn.Linear(6 * 2 * 2, 5)

    def forward(self, x):
        h = TF.relu(self.conv2(TF.relu(self.conv1(x))))
        h = TF.max_pool2d(h, 2)
        return self.head(h.flatten(1))


def test_conv_net_trajectory():
    rng = np.random.default_rng(1)
    ours, theirs = OurConvNet().double(), TheirConvNet().double()
    pairs = [pp for name in ("conv1", "conv2", "head")
             for pp in linear_pairs(getattr(ours, name), getattr(theirs, name))]
    batches = [(rng.standard_normal((6, 1, 8, 8)), rng.integers(0, 5, 6)) for _ in range(STEPS)]
    run_trajectories(
        ours, theirs, pairs, batches,
        lambda m, x, y: F.cross_entropy(m(mg.tensor(x)), y),
        lambda m, x, y: TF.cross_entropy(m(torch.from_numpy(x)), torch.from_numpy(y)))


E, HEADS, LENGTH = 8, 2, 5


class OurBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(E), nn.LayerNorm(E)
        self.attn = nn.MultiheadAttention(E, HEADS, rng=3)
        self.mlp = nn.MLP([E, 16, E], activation="gelu", rng=4)
        self.head = nn.Linear(E, 1, rng=5)

    def forward(self, x, pad):
        h = x + self.attn(self.ln1(x), causal=True, key_padding_mask=pad)
        h = h + self.mlp(self.ln2(h))
        return self.head(h)


class TheirBlock(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.ln1, self.ln2 = torch.nn.LayerNorm(E), torch.nn.LayerNorm(E)
        self.attn = torch.nn.MultiheadAttention(E, HEADS, batch_first=True)
        self.mlp = torch.nn.Sequential(torch.nn.Linear(E, 16), torch.nn.GELU(),
                                       torch.nn.Linear(16, E))
        self.head = torch.nn.Linear(E, 1)

    def forward(self, x, pad):
        a = self.ln1(x)
        causal = torch.triu(torch.ones(x.shape[1], x.shape[1], dtype=torch.bool), diagonal=1)
        h = x + self.attn(a, a, a, attn_mask=causal, key_padding_mask=pad, need_weights=False)[0]
        h = h + self.mlp(self.ln2(h))
        return self.head(h)


def test_attention_block_trajectory():
    rng = np.random.default_rng(2)
    ours, theirs = OurBlock().double(), TheirBlock().double()
    a, ta = ours.attn, theirs.attn
    pairs = [([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight], ta.in_proj_weight),
             ([a.q_proj.bias, a.k_proj.bias, a.v_proj.bias], ta.in_proj_bias)]
    pairs += linear_pairs(a.out_proj, ta.out_proj)
    pairs += [pp for mine, their in ((ours.ln1, theirs.ln1), (ours.ln2, theirs.ln2),
                                     (ours.mlp[0], theirs.mlp[0]), (ours.mlp[2], theirs.mlp[2]),
                                     (ours.head, theirs.head))
              for pp in linear_pairs(mine, their)]
    batches = []
    for _ in range(STEPS):
        pad = np.zeros((3, LENGTH), dtype=bool)
        pad[1, 3:] = True            # a padded sequence (position 0 is never padded)
        pad[2, rng.integers(1, LENGTH)] = True
        batches.append((rng.standard_normal((3, LENGTH, E)), rng.standard_normal((3, LENGTH, 1)),
                        pad))
    run_trajectories(
        ours, theirs, pairs, batches,
        lambda m, x, y, pad: F.mse_loss(m(mg.tensor(x), pad), mg.tensor(y)),
        lambda m, x, y, pad: TF.mse_loss(m(torch.from_numpy(x), torch.from_numpy(pad)),
                                         torch.from_numpy(y)))


# --- single ops against torch: forward and input/weight gradients ------------------------------
def _grads_match(our_out, their_out, ours_in, theirs_in, seed=0):
    np.testing.assert_allclose(our_out.numpy(), their_out.detach().numpy(), rtol=1e-10,
                               atol=1e-12)
    g = np.random.default_rng(seed).standard_normal(our_out.shape)
    ours = mg.grad(our_out, ours_in, grad_outputs=mg.tensor(g))
    theirs = torch.autograd.grad(their_out, theirs_in, torch.from_numpy(g))
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-12)


def _pair_of_tensors(*arrays):
    return ([mg.tensor(a, requires_grad=True) for a in arrays],
            [torch.tensor(a, requires_grad=True) for a in arrays])


@given(data=st.data())
def test_conv2d_and_conv_transpose2d_match_torch(data):
    def ints(lo, hi):
        return data.draw(st.integers(lo, hi)), data.draw(st.integers(lo, hi))

    k, s, p, d = ints(1, 3), ints(1, 3), ints(0, 2), ints(1, 2)
    rng = np.random.default_rng(data.draw(st.integers(0, 2 ** 16)))
    size = tuple(max(1, di * (ki - 1) + 1 - 2 * pi) + data.draw(st.integers(0, 4))
                 for ki, pi, di in zip(k, p, d))
    x, w = rng.standard_normal((2, 3) + size), rng.standard_normal((4, 3) + k)
    b = rng.standard_normal(4)
    (xo, wo, bo), (xt, wt, bt) = _pair_of_tensors(x, w, b)
    _grads_match(F.conv2d(xo, wo, bo, s, p, d),
                 TF.conv2d(xt, wt, bt, stride=s, padding=p, dilation=d), [xo, wo, bo], [xt, wt, bt])
    op = tuple(data.draw(st.integers(0, max(si, di) - 1)) for si, di in zip(s, d))
    y = rng.standard_normal((2, 4) + tuple(data.draw(st.integers(2, 4)) for _ in range(2)))
    wT = rng.standard_normal((4, 3) + k)
    try:
        expected = TF.conv_transpose2d(torch.from_numpy(y), torch.from_numpy(wT), stride=s,
                                       padding=p, output_padding=op, dilation=d)
    except RuntimeError:   # torch: output size would be < 1
        return
    (yo, wTo), (yt, wTt) = _pair_of_tensors(y, wT)
    _grads_match(F.conv_transpose2d(yo, wTo, None, s, p, op, d),
                 TF.conv_transpose2d(yt, wTt, stride=s, padding=p, output_padding=op, dilation=d),
                 [yo, wTo], [yt, wTt])
    assert expected.shape == F.conv_transpose2d(yo, wTo, None, s, p, op, d).shape


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("k, s, p", [(2, None, 0), (3, 2, 1), ((3, 2), (1, 2), (1, 0))])
def test_pooling_matches_torch(kind, k, s, p):
    x = np.random.default_rng(0).standard_normal((2, 3, 7, 6))
    (xo,), (xt,) = _pair_of_tensors(x)
    ours = getattr(F, f"{kind}_pool2d")(xo, k, s, p)
    theirs = getattr(TF, f"{kind}_pool2d")(xt, k, s, p)
    _grads_match(ours, theirs, [xo], [xt])


def test_losses_match_torch():
    rng = np.random.default_rng(0)
    z, y, v = rng.standard_normal((6, 4)), rng.random((6, 4)), rng.random((6, 4)) + 0.1
    t = np.array([0, 3, -100, 2, 1, -100])
    (zo, yo, vo), (zt, yt, vt) = _pair_of_tensors(z, y, v)
    for reduction in ("mean", "sum", "none"):
        _grads_match(F.cross_entropy(zo, t, ignore_index=-100, reduction=reduction),
                     TF.cross_entropy(zt, torch.from_numpy(t), ignore_index=-100,
                                      reduction=reduction), [zo], [zt])
        _grads_match(F.binary_cross_entropy_with_logits(zo, yo, reduction),
                     TF.binary_cross_entropy_with_logits(zt, yt, reduction=reduction),
                     [zo, yo], [zt, yt])
        _grads_match(F.gaussian_nll(zo, yo, vo, full=True, reduction=reduction),
                     TF.gaussian_nll_loss(zt, yt, vt, full=True, reduction=reduction),
                     [zo, yo, vo], [zt, yt, vt])
        _grads_match(F.mse_loss(zo, yo, reduction), TF.mse_loss(zt, yt, reduction=reduction),
                     [zo, yo], [zt, yt])
        _grads_match(F.l1_loss(zo, yo, reduction), TF.l1_loss(zt, yt, reduction=reduction),
                     [zo, yo], [zt, yt])


def test_kl_normal_matches_torch_distributions():
    rng = np.random.default_rng(1)
    mq, lq, mp, lp = (rng.standard_normal((3, 4)) for _ in range(4))
    q = torch.distributions.Normal(torch.from_numpy(mq), torch.from_numpy(np.exp(0.5 * lq)))
    p = torch.distributions.Normal(torch.from_numpy(mp), torch.from_numpy(np.exp(0.5 * lp)))
    ours = F.kl_normal(*(mg.tensor(a) for a in (mq, lq, mp, lp)))
    np.testing.assert_allclose(ours.numpy(), torch.distributions.kl_divergence(q, p).numpy(),
                               rtol=1e-12)


def test_elementwise_and_normalisation_ops_match_torch():
    x = np.random.default_rng(2).standard_normal((3, 5)) * 3
    (xo,), (xt,) = _pair_of_tensors(x)
    cases = [(F.gelu(xo), TF.gelu(xt)), (F.silu(xo), TF.silu(xt)),
             (F.softplus(xo), TF.softplus(xt)), (F.leaky_relu(xo, 0.1), TF.leaky_relu(xt, 0.1)),
             (F.log_softmax(xo, 0), TF.log_softmax(xt, 0)), (F.softmax(xo), TF.softmax(xt, -1)),
             (F.logsumexp(xo, 1), torch.logsumexp(xt, 1)),
             (F.layer_norm(xo, 5), TF.layer_norm(xt, (5,))),
             (xo.var(0, ddof=1), xt.var(0)), (F.cumsum(xo, 1), torch.cumsum(xt, 1))]
    for k, (ours, theirs) in enumerate(cases):
        _grads_match(ours, theirs, [xo], [xt], seed=k)
