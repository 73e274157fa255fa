"""Optimisers against torch.optim on the same float64 quadratic (1e-10), gradient clipping,
learning-rate schedules, EMA, optimiser state round trip and bad arguments."""
import math

import numpy as np
import pytest

import minigen as mg
from minigen import nn, optim


def quadratic_problem(seed=0):
    """f(W, b) = 0.5 tr(W^T A W) - <B, W> + |b - c|^2 |b|^2 / 4: a convex quadratic in W
    and a non-convex quartic in b, so the optimisers' paths are not trivial."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((4, 4))
    return dict(A=m @ m.T + np.eye(4), B=rng.standard_normal((4, 3)), c=rng.standard_normal(3),
                W0=rng.standard_normal((4, 3)), b0=rng.standard_normal(3))


def loss_of(W, b, prob, lib):
    A, B, c = (lib(prob[k]) for k in ("A", "B", "c"))
    quad = 0.5 * ((A @ W) * W).sum() - (B * W).sum()
    d = b - c
    return quad + 0.25 * (d * d).sum() * (b * b).sum()


def run(tensor, make_opt, prob, steps):
    """Train (W, b) with the optimiser ``make_opt`` makes; ``tensor`` is mg.tensor or
    torch.tensor, so the same code drives both libraries."""
    W, b = (tensor(prob[k], requires_grad=True) for k in ("W0", "b0"))
    opt = make_opt([W, b])
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(W, b, prob, tensor)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return W.detach().numpy(), b.detach().numpy(), losses


CONFIGS = {
    "sgd": ("SGD", "SGD", dict(lr=0.05)),
    "sgd-momentum": ("SGD", "SGD", dict(lr=0.05, momentum=0.9)),
    "sgd-nesterov-wd": ("SGD", "SGD", dict(lr=0.03, momentum=0.8, nesterov=True,
                                           weight_decay=0.1)),
    "sgd-wd": ("SGD", "SGD", dict(lr=0.05, weight_decay=0.05)),
    "adam": ("Adam", "Adam", dict(lr=0.1)),
    "adam-wd": ("Adam", "Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1)),
    "adamw": ("AdamW", "AdamW", dict(lr=0.05, weight_decay=0.3)),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_optimizer_matches_torch(name):
    torch = pytest.importorskip("torch")
    ours, theirs, kw = CONFIGS[name]
    prob = quadratic_problem()
    W1, b1, l1 = run(mg.tensor, lambda ps: getattr(optim, ours)(ps, **kw), prob, 12)
    W2, b2, l2 = run(torch.tensor, lambda ps: getattr(torch.optim, theirs)(ps, **kw), prob, 12)
    np.testing.assert_allclose(l1, l2, rtol=1e-10)
    np.testing.assert_allclose(W1, W2, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b1, b2, rtol=1e-10, atol=1e-12)
    assert l1[-1] < l1[0]


def test_sgd_by_hand():
    p = mg.tensor(np.array([1.0, -2.0]), requires_grad=True)
    opt = optim.SGD([p], lr=0.1, momentum=0.5)
    # v1 = g1 = p0, p1 = 0.9 p0; v2 = 0.5 v1 + g2 = 1.4 p0, p2 = p1 - 0.14 p0 = 0.76 p0
    for expected in ([0.9, -1.8], [0.76, -1.52]):
        opt.zero_grad()
        (0.5 * (p * p).sum()).backward()
        opt.step()
        np.testing.assert_allclose(p.numpy(), expected, rtol=1e-12)


def test_adam_first_step_moves_every_coordinate_by_lr():
    p = mg.tensor(np.array([3.0, -0.5, 50.0]), requires_grad=True)
    opt = optim.Adam([p], lr=0.01)
    (p * p).sum().backward()
    opt.step()
    np.testing.assert_allclose(p.numpy(), [2.99, -0.49, 49.99], rtol=1e-7)


def test_parameters_without_grad_are_skipped():
    a, b = (mg.tensor(np.ones(2), requires_grad=True) for _ in range(2))
    opt = optim.Adam([a, b], lr=0.1)
    (a * 2).sum().backward()
    opt.step()
    np.testing.assert_array_equal(b.numpy(), [1.0, 1.0])
    assert (a.numpy() < 1).all()


def test_optimizer_state_round_trip_continues_identically():
    prob = quadratic_problem(1)
    W, b = (mg.tensor(prob[k], requires_grad=True) for k in ("W0", "b0"))
    opt = optim.Adam([W, b], lr=0.05)

    def step(o, W, b):
        o.zero_grad()
        loss_of(W, b, prob, mg.tensor).backward()
        o.step()

    for _ in range(3):
        step(opt, W, b)
    W2, b2 = (mg.tensor(t.numpy(), requires_grad=True) for t in (W, b))
    opt2 = optim.Adam([W2, b2], lr=1.0)
    opt2.load_state_dict({k: np.array(v, copy=True) for k, v in opt.state_dict().items()})
    assert opt2.lr == 0.05 and opt2.step_count == 3
    for _ in range(2):
        step(opt, W, b)
        step(opt2, W2, b2)
    np.testing.assert_array_equal(W.numpy(), W2.numpy())
    np.testing.assert_array_equal(b.numpy(), b2.numpy())


def test_optimizer_bad_arguments():
    p = mg.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match="SGD: got an empty parameter list"):
        optim.SGD([])
    with pytest.raises(ValueError, match=r"Adam: lr must be a finite number in \(0, inf\), got 0"):
        optim.Adam([p], lr=0)
    with pytest.raises(ValueError, match="SGD: nesterov needs momentum > 0"):
        optim.SGD([p], nesterov=True)


# --- clipping --------------------------------------------------------------------------------
def test_clip_grad_norm():
    a, b = (mg.tensor(np.zeros(s), requires_grad=True) for s in ((3,), (2, 2)))
    a.grad, b.grad = mg.tensor(np.array([3.0, 0.0, 0.0])), mg.tensor(np.full((2, 2), 2.0))
    total = optim.clip_grad_norm_([a, b], 1.0)
    assert total == pytest.approx(5.0)
    new_norm = math.sqrt((a.grad.numpy() ** 2).sum() + (b.grad.numpy() ** 2).sum())
    assert new_norm == pytest.approx(1.0, rel=1e-6)
    np.testing.assert_allclose(a.grad.numpy(), [3.0 / 5.0, 0, 0], rtol=1e-6)
    assert optim.clip_grad_norm_([a, b], 10.0) == pytest.approx(1.0, rel=1e-6)
    assert new_norm == pytest.approx(math.sqrt((a.grad.numpy() ** 2).sum()
                                               + (b.grad.numpy() ** 2).sum()))
    assert optim.clip_grad_norm_([mg.tensor(np.ones(2), requires_grad=True)], 1.0) == 0.0


def test_clip_grad_norm_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal(s) for s in ((3, 4), (5,))]
    ours = [mg.tensor(np.zeros_like(g), requires_grad=True) for g in grads]
    theirs = [torch.zeros(g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
    for o, t, g in zip(ours, theirs, grads):
        o.grad, t.grad = mg.tensor(g.copy()), torch.tensor(g.copy())
    assert optim.clip_grad_norm_(ours, 0.7) == pytest.approx(
        float(torch.nn.utils.clip_grad_norm_(theirs, 0.7)), rel=1e-12)
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.grad.numpy(), t.grad.numpy(), rtol=1e-12)


# --- schedules and EMA -----------------------------------------------------------------------
def _lrs(scheduler_factory, steps, lr=1.0):
    opt = optim.SGD([mg.tensor(np.ones(1), requires_grad=True)], lr=lr)
    sched = scheduler_factory(opt)
    lrs = [opt.lr]
    for _ in range(steps):
        sched.step()
        lrs.append(opt.lr)
    return lrs


def test_step_lr_values():
    lrs = _lrs(lambda o: optim.StepLR(o, step_size=3, gamma=0.5), 7, lr=0.2)
    np.testing.assert_allclose(lrs, [0.2] * 3 + [0.1] * 3 + [0.05] * 2)


def test_cosine_warmup_values():
    lrs = _lrs(lambda o: optim.CosineWarmup(o, warmup=4, total=12, min_factor=0.1), 14, lr=2.0)
    expected = [2.0 * (s + 1) / 4 for s in range(4)]
    expected += [2.0 * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min((s - 4) / 8, 1))))
                 for s in range(4, 15)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-12)
    assert lrs[4] == pytest.approx(2.0) and lrs[12] == pytest.approx(0.2)
    assert lrs[14] == pytest.approx(0.2)   # held at min_factor after ``total``
    with pytest.raises(ValueError, match="CosineWarmup: need 0 <= warmup < total"):
        optim.CosineWarmup(optim.SGD([mg.tensor(np.ones(1), requires_grad=True)]), 5, 5)


def test_cosine_warmup_matches_torch_lambda_lr():
    torch = pytest.importorskip("torch")
    p = torch.zeros(1, requires_grad=True)
    ref = torch.optim.SGD([p], lr=0.3)
    lam = optim.CosineWarmup(optim.SGD([mg.tensor(np.ones(1), requires_grad=True)], lr=1.0),
                             warmup=3, total=10, min_factor=0.05).factor
    sched = torch.optim.lr_scheduler.LambdaLR(ref, lam)
    theirs = []
    for _ in range(12):
        theirs.append(ref.param_groups[0]["lr"])
        ref.step()
        sched.step()
    ours = _lrs(lambda o: optim.CosineWarmup(o, warmup=3, total=10, min_factor=0.05), 11, 0.3)
    np.testing.assert_allclose(ours, theirs, rtol=1e-12)


def test_ema():
    net = nn.Linear(2, 2, rng=0).double()
    w0 = net.weight.numpy().copy()
    ema = optim.EMA(net, decay=0.9)
    targets = []
    for k in range(1, 4):
        with mg.no_grad():
            net.weight.fill_(float(k))
        ema.update(net)
        targets.append(float(k))
    expected = w0
    for t in targets:
        expected = 0.9 * expected + 0.1 * t
    np.testing.assert_allclose(ema.state_dict()["weight"], expected, rtol=1e-12)
    ema.copy_to(net)
    np.testing.assert_allclose(net.weight.numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match=r"EMA: decay must lie in \[0, 1\)"):
        optim.EMA(net, decay=1.0)
