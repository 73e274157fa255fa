"""Optimizers over one flat buffer against the per-parameter path: bit-identical float64
trajectories with groups (reference kernels), one kernel call per group, state round trips,
and parameters that leave the buffer (rebound, ``Module.to``) or stop taking gradients."""
import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen import nn, optim
from minigen.kernels import optimizer as kernels
from minigen.nn.flat import grad_spans

CONFIGS = {
    "sgd": ("SGD", dict(lr=0.05, momentum=0.9), dict(lr=0.02, weight_decay=0.1)),
    "sgd-nesterov": ("SGD", dict(lr=0.03, momentum=0.8, nesterov=True),
                     dict(momentum=0.5, weight_decay=0.05)),
    "sgd-plain": ("SGD", dict(lr=0.05), dict(weight_decay=0.1)),
    "adam": ("Adam", dict(lr=0.01), dict(lr=0.03, betas=(0.8, 0.99), weight_decay=0.2)),
    "adamw": ("AdamW", dict(lr=0.01, weight_decay=0.3), dict(weight_decay=0.0, eps=1e-4)),
}


@pytest.fixture(autouse=True)
def reference_kernels(monkeypatch):
    """The reference kernels: the flat path's operations are then the per-parameter path's."""
    monkeypatch.setenv("MINIGEN_KERNELS", "reference")


def _net(seed=0):
    return nn.MLP([3, 6, 4, 2], rng=seed).double()


def _optimizer(name, net, flat):
    """Matrices in one group, vectors (biases) in another with their own hyper-parameters."""
    cls, defaults, other = CONFIGS[name]
    params = list(net.parameters())
    groups = [{"params": [p for p in params if p.ndim == 2]},
              {"params": [p for p in params if p.ndim < 2], **other}]
    return getattr(optim, cls)(groups, flat=flat, **defaults)


def _train(net, opt, steps, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = mg.tensor(rng.normal(size=(5, 3)))
        opt.zero_grad()
        F.mse_loss(net(x), mg.tensor(np.ones((5, 2)))).backward()
        opt.step()
    return np.concatenate([p.numpy().ravel() for p in net.parameters()])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_flat_trajectory_equals_the_per_parameter_one_to_the_last_bit(name):
    nets = [_net(), _net()]
    opts = [_optimizer(name, net, flat) for net, flat in zip(nets, (True, False))]
    start = _train(nets[0], opts[0], 0)
    for _ in range(3):
        flat, plain = (_train(net, opt, 2) for net, opt in zip(nets, opts))
        np.testing.assert_array_equal(flat, plain)
    assert not np.array_equal(flat, start)
    a, b = (opt.state_dict() for opt in opts)
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("name, kernel", [("adam", "adam_step"), ("sgd", "sgd_step")])
def test_one_kernel_call_per_group(name, kernel, monkeypatch):
    calls = []
    real = getattr(kernels, kernel)
    monkeypatch.setattr(kernels, kernel, lambda p, *a, **k: calls.append(p.size) or
                        real(p, *a, **k))
    net = _net()
    opt = _optimizer(name, net, True)
    _train(net, opt, 2)
    sizes = [sum(p.size for p in g["params"]) for g in opt.param_groups]
    assert calls == sizes + sizes


def test_state_round_trip_continues_identically_and_loads_into_the_buffers():
    net = _net()
    opt = _optimizer("adam", net, True)
    _train(net, opt, 3)
    twin = _net(seed=5)
    twin_opt = _optimizer("adam", twin, True)
    _train(twin, twin_opt, 1, seed=9)            # moments of its own, to be overwritten
    twin.load_state_dict(net.state_dict())
    twin_opt.load_state_dict({k: v.copy() for k, v in opt.state_dict().items()})
    np.testing.assert_array_equal(_train(twin, twin_opt, 3, seed=4), _train(net, opt, 3, seed=4))


@pytest.mark.parametrize("name", ["adam", "sgd"])
def test_rebound_and_moved_parameters_are_laid_out_afresh(name):
    """One parameter's data rebound, later all of them: the flat optimizer keeps updating
    the parameters, its state carried over, exactly as the per-parameter one."""
    nets = [_net(), _net()]
    opts = [_optimizer(name, net, flat) for net, flat in zip(nets, (True, False))]
    results = []
    for net, opt in zip(nets, opts):
        _train(net, opt, 2)
        w = next(net.parameters())
        w.data = w.data.copy()
        _train(net, opt, 2, seed=1)
        for p in net.parameters():
            p.data = p.data.copy()
        results.append(_train(net, opt, 2, seed=2))
    np.testing.assert_array_equal(*results)


def test_module_to_after_flattening_keeps_training():
    nets = [nn.MLP([3, 6, 2], rng=0), nn.MLP([3, 6, 2], rng=0)]   # float32
    opts = [optim.Adam(net.parameters(), lr=0.01, flat=flat)
            for net, flat in zip(nets, (True, False))]
    for net in nets:
        net.double()
    results = [_train(net, opt, 3) for net, opt in zip(nets, opts)]
    assert results[0].dtype == np.float64
    np.testing.assert_array_equal(*results)
    assert not np.array_equal(results[0], np.concatenate(
        [p.ravel() for p in nn.MLP([3, 6, 2], rng=0).double().state_dict().values()]))


def test_frozen_parameters_and_plain_tensors_beside_the_buffer():
    nets = [_net(), _net()]
    extra = [mg.tensor(np.ones(3), requires_grad=True) for _ in nets]
    results = []
    for net, t, flat in zip(nets, extra, (True, False)):
        opt = optim.Adam(list(net.parameters()) + [t], lr=0.05, flat=flat)
        _train(net, opt, 1)
        frozen = list(net.parameters())[2]
        frozen.requires_grad_(False)
        before = frozen.numpy().copy()
        opt.zero_grad()
        (F.mse_loss(net(mg.tensor(np.ones((2, 3)))), mg.tensor(np.zeros((2, 2))))
         + (t * t).sum()).backward()
        opt.step()
        np.testing.assert_array_equal(frozen.numpy(), before)
        results.append(np.concatenate([p.numpy().ravel() for p in net.parameters()]
                                      + [t.numpy()]))
    np.testing.assert_array_equal(*results)


def test_clip_grad_norm_over_the_buffer_matches_the_per_parameter_path():
    nets = [_net(), _net()]
    norms, grads = [], []
    for net, flat in zip(nets, (True, False)):
        opt = optim.SGD(net.parameters(), lr=0.1, flat=flat)
        opt.zero_grad()
        F.mse_loss(net(mg.tensor(np.ones((2, 3)))), mg.tensor(np.zeros((2, 2)))).backward()
        norms.append(optim.clip_grad_norm_(net.parameters(), 1e-3))
        grads.append(np.concatenate([p.grad.numpy().ravel() for p in net.parameters()]))
    # the same sum of squares in another order: float64 rounding, relative 1e-15 per term
    assert norms[0] == pytest.approx(norms[1], rel=1e-12) and norms[0] > 1e-3
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12)
    assert np.sqrt((grads[0] ** 2).sum()) == pytest.approx(1e-3, rel=1e-5)


def test_ema_and_zero_grad_on_a_flat_module():
    net = _net()
    opt = optim.Adam(net.parameters(), lr=0.05, flat=True)
    start = {n: v.copy() for n, v in net.state_dict().items()}
    ema = optim.EMA(net, decay=0.5)
    _train(net, opt, 1)
    trained = {n: v.copy() for n, v in net.state_dict().items()}
    ema.update(net)
    with ema.applied(net):
        for n, p in net.named_parameters():
            np.testing.assert_array_equal(p.numpy(), 0.5 * start[n] + 0.5 * trained[n])
    for n, p in net.named_parameters():
        np.testing.assert_array_equal(p.numpy(), trained[n])
        assert p.flat is not None and p.flat[0].valid         # swapped in place
    opt.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    (span,), rest = grad_spans(list(net.parameters()))    # the stretch reads as zeros
    assert not rest and span.size == net.num_parameters() and not span.any()
