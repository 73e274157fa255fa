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
    with pytest.raises(ValueError, match=r"Adam: lr must be a positive finite number, got 0"):
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
    with pytest.raises(ValueError, match=r"CosineWarmup: warmup must be an int in \[0, 4\], got 5"):
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
    with pytest.raises(ValueError, match=r"EMA: decay must be a finite number in \[0, 1\), got 1.0"):
        optim.EMA(net, decay=1.0)


# --- parameter groups and state --------------------------------------------------------------
GROUPS = {
    "sgd": ("SGD", dict(lr=0.05, momentum=0.9),
            [dict(lr=0.02, weight_decay=0.1), dict(momentum=0.5, nesterov=True)]),
    "adam": ("Adam", dict(lr=0.1), [dict(lr=0.03, betas=(0.8, 0.99)), dict(weight_decay=0.2)]),
    "adamw": ("AdamW", dict(lr=0.05, weight_decay=0.3), [dict(weight_decay=0.0), dict(eps=1e-4)]),
}


def grouped(lib_optim, name, params):
    cls, defaults, overrides = GROUPS[name]
    groups = [{"params": [p], **o} for p, o in zip(params, overrides)]
    return getattr(lib_optim, cls)(groups, **defaults)


def run_scheduled(tensor, make_opt, make_sched, prob, steps, W=None, b=None, opt=None, sched=None):
    """Like ``run`` with a schedule stepped after each optimiser step; can continue a run."""
    if W is None:
        W, b = (tensor(prob[k], requires_grad=True) for k in ("W0", "b0"))
        opt = make_opt([W, b])
        sched = make_sched(opt)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_of(W, b, prob, tensor)
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    return W, b, opt, sched, losses


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_parameter_groups_and_schedules_match_torch(name):
    torch = pytest.importorskip("torch")
    prob = quadratic_problem(2)
    W1, b1, _, _, l1 = run_scheduled(mg.tensor, lambda ps: grouped(optim, name, ps),
                                     lambda o: optim.StepLR(o, 4, 0.5), prob, 12)
    W2, b2, _, _, l2 = run_scheduled(torch.tensor, lambda ps: grouped(torch.optim, name, ps),
                                     lambda o: torch.optim.lr_scheduler.StepLR(o, 4, 0.5),
                                     prob, 12)
    np.testing.assert_allclose(l1, l2, rtol=1e-10)
    np.testing.assert_allclose(W1.numpy(), W2.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(b1.numpy(), b2.detach().numpy(), rtol=1e-10, atol=1e-12)
    assert l1[-1] < l1[0]


@pytest.mark.parametrize("name", sorted(GROUPS))
def test_state_round_trip_through_a_file_continues_identically(name, tmp_path):
    """3 steps, save optimiser and schedule state, restore into fresh objects, 4 more steps:
    bit-identical to 7 uninterrupted steps (and to torch's 7 steps within 1e-10)."""
    prob = quadratic_problem(3)

    def make(ps):
        return grouped(optim, name, ps)

    def sched(o):
        return optim.CosineWarmup(o, warmup=2, total=7, min_factor=0.1)

    W, b, opt, sch, first = run_scheduled(mg.tensor, make, sched, prob, 3)
    mg.save(opt.state_dict(), tmp_path / "opt.npz")
    mg.save(sch.state_dict(), tmp_path / "sched.npz")
    W2, b2 = (mg.tensor(t.numpy(), requires_grad=True) for t in (W, b))
    opt2 = grouped(optim, name, [W2, b2])
    opt2.lr = 123.0                                   # overwritten by the load
    sch2 = sched(opt2)
    opt2.load_state_dict(mg.load(tmp_path / "opt.npz"))
    sch2.load_state_dict(mg.load(tmp_path / "sched.npz"))
    assert [g["lr"] for g in opt2.param_groups] == [g["lr"] for g in opt.param_groups]
    *_, rest = run_scheduled(mg.tensor, None, None, prob, 4, W2, b2, opt2, sch2)
    *_, whole = run_scheduled(mg.tensor, make, sched, prob, 7)
    np.testing.assert_array_equal(first + rest, whole)
    torch = pytest.importorskip("torch")
    *_, theirs = run_scheduled(torch.tensor, lambda ps: grouped(torch.optim, name, ps),
                               lambda o: torch.optim.lr_scheduler.LambdaLR(
                                   o, optim.CosineWarmup(optim.SGD(
                                       [mg.tensor(np.ones(1), requires_grad=True)]),
                                       warmup=2, total=7, min_factor=0.1).factor), prob, 7)
    np.testing.assert_allclose(whole, theirs, rtol=1e-10)


def test_load_state_dict_checks_everything_before_changing_anything():
    p, q = (mg.tensor(np.ones(s), requires_grad=True) for s in ((2,), (3,)))
    opt = optim.Adam([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1)
    (p.sum() + q.sum()).backward()
    opt.step()
    state = opt.state_dict()
    other = optim.Adam([p, q], lr=0.1)
    with pytest.raises(ValueError, match=r"groups of sizes \[1, 1\], this optimiser \[2\]"):
        other.load_state_dict(state)
    bad = dict(state)
    bad["state.1.m"] = np.zeros(5)
    fresh = optim.Adam([{"params": [p]}, {"params": [q], "lr": 0.5}], lr=0.1)
    with pytest.raises(ValueError, match=r"state.1.m has shape \(5,\), parameter 1 has \(3,\)"):
        fresh.load_state_dict(bad)
    assert fresh.step_count == 0 and fresh.state == [{}, {}]


def test_group_errors():
    p = mg.tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match=r"unknown hyper-parameter\(s\) \['momentum'\]"):
        optim.Adam([{"params": [p], "momentum": 0.9}])
    with pytest.raises(ValueError, match="a parameter appears more than once"):
        optim.SGD([{"params": [p]}, {"params": [p]}])
    with pytest.raises(TypeError, match="a parameter group must be a dict"):
        optim.SGD([{"params": [p]}, [p]])
    with pytest.raises(ValueError, match="SGD: lr must be"):
        optim.SGD([{"params": [p], "lr": -1.0}])


@pytest.mark.parametrize("make, match", [
    (lambda p: optim.Adam([p], betas=(1, 1)),
     r"Adam: betas\[0\] must be a finite number in \[0, 1\)"),
    (lambda p: optim.Adam([p], betas=(0.9, 1.0)),
     r"betas\[1\] must be a finite number in \[0, 1\)"),
    (lambda p: optim.Adam([p], betas=0.9), r"Adam: betas must be a pair"),
    (lambda p: optim.SGD([p], lr=float("inf")), r"SGD: lr must be a positive finite number, got inf"),
    (lambda p: optim.SGD([p], momentum=-5),
     r"SGD: momentum must be a finite number >= 0, got -5"),
    (lambda p: optim.Adam([p], lr=float("nan")), r"Adam: lr must be a positive finite number, got nan"),
    (lambda p: optim.AdamW([p], eps=0), r"AdamW: eps must be a positive finite number, got 0"),
    (lambda p: optim.SGD([p], weight_decay=-0.1), r"SGD: weight_decay must be"),
    (lambda p: optim.SGD([p], lr="0.1"), r"SGD: lr must be a positive finite number, got '0.1'"),
])
def test_hyper_parameters_are_checked(make, match):
    with pytest.raises(ValueError, match=match):
        make(mg.tensor(np.ones(2), requires_grad=True))


def test_clip_grad_norm_rejects_non_positive_max_norm_and_survives_huge_float32():
    p = mg.tensor(np.zeros(4, dtype=np.float32), requires_grad=True)
    p.grad = mg.tensor(np.full(4, 1e19, dtype=np.float32))
    for bad in (0, -1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="clip_grad_norm_: max_norm must be a positive finite number"):
            optim.clip_grad_norm_([p], bad)
    np.testing.assert_array_equal(p.grad.numpy(), np.full(4, 1e19, dtype=np.float32))
    total = optim.clip_grad_norm_([p], 1.0)
    assert total == pytest.approx(2e19, rel=1e-6)            # sqrt(4 * 1e38), no overflow
    np.testing.assert_allclose(p.grad.numpy(), np.full(4, 0.5), rtol=1e-5)
    p.grad = mg.tensor(np.array([np.nan, 1, 1, 1], dtype=np.float32))
    assert math.isnan(optim.clip_grad_norm_([p], 1.0))
    np.testing.assert_array_equal(p.grad.numpy()[1:], [1, 1, 1])   # left for train to report


def test_ema_applied_swaps_in_and_back_also_on_error():
    net = nn.Linear(2, 2, rng=0).double()
    ema = optim.EMA(net, decay=0.5)
    with mg.no_grad():
        net.weight.fill_(1.0)
    ema.update(net)
    trained = net.weight.numpy().copy()
    with ema.applied(net) as inside:
        assert inside is net
        np.testing.assert_array_equal(net.weight.numpy(), ema.shadow["weight"])
        assert not np.array_equal(net.weight.numpy(), trained)
    np.testing.assert_array_equal(net.weight.numpy(), trained)
    with pytest.raises(RuntimeError):
        with ema.applied(net):
            raise RuntimeError
    np.testing.assert_array_equal(net.weight.numpy(), trained)
    again = optim.EMA.from_state_dict(ema.state_dict(), 0.5)
    np.testing.assert_array_equal(again.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(KeyError, match=r"EMA.load_state_dict: missing keys \['bias'\]"):
        again.load_state_dict({"weight": trained})


def test_group_values_keep_their_own_types_through_a_round_trip():
    p, q = (mg.tensor(np.ones(2), requires_grad=True) for _ in range(2))
    opt = optim.SGD([{"params": [p]}, {"params": [q], "momentum": 0.9, "nesterov": True}],
                    lr=1, momentum=0)                      # int defaults, float overrides
    again = optim.SGD([{"params": [p]}, {"params": [q], "momentum": 0.5}], lr=1, momentum=0)
    again.load_state_dict(opt.state_dict())
    assert again.param_groups[1]["momentum"] == 0.9 and again.param_groups[1]["nesterov"] is True
    adam = optim.Adam([{"params": [p], "betas": [0.5, 0.6]}])     # a list, as in torch
    assert adam.param_groups[0]["betas"] == (0.5, 0.6)
    adam.load_state_dict(adam.state_dict())
    assert adam.param_groups[0]["betas"] == (0.5, 0.6)


def test_adam_scratch_buffer_serves_parameters_of_every_size_and_dtype():
    """Adam's update runs in one reused buffer per dtype: parameters of growing sizes and two
    dtypes in one optimiser still follow the formula, step by step."""
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(s).astype(d) for s, d in
              [((2,), np.float32), ((5, 3), np.float32), ((3, 4), np.float64), ((1,), np.float64)]]
    params = [mg.tensor(a, requires_grad=True) for a in arrays]
    opt = optim.Adam(params, lr=0.1, betas=(0.8, 0.9), eps=1e-3)
    ref = [a.astype(np.float64) for a in arrays]
    m, v = [np.zeros_like(a) for a in ref], [np.zeros_like(a) for a in ref]
    for t in range(1, 4):
        opt.zero_grad()
        sum((p * p * p).sum() for p in params).backward()
        opt.step()
        for i, p in enumerate(ref):
            g = 3 * p * p
            m[i] = 0.8 * m[i] + 0.2 * g
            v[i] = 0.9 * v[i] + 0.1 * g * g
            p -= 0.1 * (m[i] / (1 - 0.8 ** t)) / (np.sqrt(v[i] / (1 - 0.9 ** t)) + 1e-3)
        for p, r in zip(params, ref):
            np.testing.assert_allclose(p.numpy(), r, rtol=2e-5 if p.dtype == np.float32
                                       else 1e-12)
