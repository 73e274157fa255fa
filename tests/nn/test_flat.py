"""nn.flat: parameters as views into one buffer per dtype and device; gradients landing in it;
a parameter that leaves (``.data`` rebound, ``Module.to``, ``deepcopy``) marks it stale."""
import copy

import numpy as np
import pytest

import minigen as mg
from minigen import functional as F
from minigen import nn
from minigen.nn.flat import FlatBuffer, flatten, grad_spans


def _net(seed=0):
    return nn.MLP([3, 5, 2], rng=seed).double()


def _loss(net, seed=1):
    x = mg.tensor(np.random.default_rng(seed).normal(size=(4, 3)))
    return F.mse_loss(net(x), mg.tensor(np.zeros((4, 2))))


def test_flatten_keeps_objects_and_values_and_puts_them_in_one_buffer():
    net = _net()
    before = {n: (p, p.numpy().copy()) for n, p in net.named_parameters()}
    (buffer,) = net.flatten_parameters()
    assert buffer.valid and buffer.data.shape == (net.num_parameters(),)
    for (n, p), (same, values) in zip(net.named_parameters(), before.values()):
        assert p is same and np.shares_memory(p.data, buffer.data)
        np.testing.assert_array_equal(p.numpy(), values)
    np.testing.assert_array_equal(buffer.data, np.concatenate([v.ravel() for _, v in
                                                                before.values()]))


def test_backward_writes_the_gradients_into_the_buffer():
    flat, plain = _net(), _net()
    (buffer,) = flat.flatten_parameters()
    for _ in range(2):                    # the second backward accumulates
        _loss(flat).backward()
        _loss(plain).backward()
    want = np.concatenate([p.grad.numpy().ravel() for p in plain.parameters()])
    np.testing.assert_array_equal(buffer.grad, want)
    for p in flat.parameters():
        assert np.shares_memory(p.grad.data, buffer.grad)
    first = next(flat.parameters())
    first.grad = None
    assert first.grad is None and not buffer.grad[:first.size].any()
    assert buffer.grad[first.size:].any()


def test_a_gradient_with_a_graph_stays_outside_the_buffer():
    net = _net()
    (buffer,) = net.flatten_parameters()
    _loss(net).backward(create_graph=True)
    p = next(net.parameters())
    assert p.grad.requires_grad and not np.shares_memory(p.grad.data, buffer.grad)
    assert not buffer.grad.any()
    with pytest.raises(ValueError, match=r"Parameter.grad: the gradient has shape \(2,\), "
                                         r"the parameter \(5, 3\)"):
        p.grad = mg.tensor(np.ones(2))


@pytest.mark.parametrize("leave", ["rebind", "to", "reflatten"])
def test_a_parameter_that_leaves_makes_the_buffer_stale(leave):
    net = _net()
    (buffer,) = net.flatten_parameters()
    p = next(net.parameters())
    if leave == "rebind":
        new = p.data.copy()
        p.data = new
        assert p.data is new and p.flat is None
    elif leave == "to":
        net.float()
        assert p.dtype == np.float32
    else:
        flatten([p])
    assert not buffer.valid
    assert buffer.index_range(list(net.parameters())) is None


def test_deepcopy_gives_a_stale_buffer_and_leaves_the_original_alone():
    net = _net()
    (buffer,) = net.flatten_parameters()
    twin = copy.deepcopy(net)
    q = next(twin.parameters())
    assert not q.flat[0].valid and buffer.valid
    np.testing.assert_array_equal(q.numpy(), next(net.parameters()).numpy())


def test_grad_spans_cover_consecutive_members_only():
    net = _net()
    params = list(net.parameters())
    net.flatten_parameters()
    _loss(net).backward()
    spans, rest = grad_spans(params)
    assert len(spans) == 1 and rest == [] and spans[0].size == net.num_parameters()
    spans, rest = grad_spans([params[0], params[2], mg.tensor(np.ones(2))])
    assert [s.size for s in spans] == [params[0].size, params[2].size] and len(rest) == 1


def test_buffer_arguments_are_checked():
    a = nn.Parameter(np.ones(2))
    with pytest.raises(ValueError, match="FlatBuffer: needs at least one parameter, each at "
                                         "most once"):
        FlatBuffer([a, a])
    with pytest.raises(ValueError, match="FlatBuffer: every parameter must be float64 on cpu, "
                                         "got float32 on cpu"):
        FlatBuffer([a, nn.Parameter(np.ones(2, np.float32))])
    with pytest.raises(TypeError, match="flatten: only Parameters can live in a flat buffer, "
                                        "got Tensor"):
        flatten([mg.tensor(np.ones(2), requires_grad=True)])


def test_backward_writes_a_linear_weight_gradient_into_its_slot_without_a_copy(monkeypatch):
    net = _net()
    (buffer,) = net.flatten_parameters()
    copies = []
    real = np.copyto
    monkeypatch.setattr(np, "copyto", lambda dst, *a, **k: (copies.append(dst), real(dst, *a,
                                                                                       **k)))
    _loss(net).backward()
    monkeypatch.undo()
    # every Linear's weight and bias gradient was computed in place: nothing copied in
    assert not any(np.shares_memory(dst, buffer.grad) for dst in copies)
    plain = _net()
    _loss(plain).backward()
    np.testing.assert_array_equal(
        buffer.grad, np.concatenate([p.grad.numpy().ravel() for p in plain.parameters()]))


def test_grad_destination_only_for_a_first_order_backward_into_grad():
    net = _net()
    net.flatten_parameters()
    w = next(net.parameters())
    seen = []
    real = mg.autograd.grad_destination

    def spy(t, fn):
        out = real(t, fn)
        if t is w:
            seen.append(out)
        return out
    from minigen.ops import math as ops_math
    ops_math.grad_destination, saved = spy, ops_math.grad_destination
    try:
        mg.autograd.grad(_loss(net), [w])                          # grad(): no .grad touched
        _loss(net).backward(create_graph=True)                     # a gradient with a graph
        net.zero_grad()
        _loss(net).backward()                                      # the one case with a home
        _loss(net).backward()                                      # w already has a gradient
    finally:
        ops_math.grad_destination = saved
    assert [s is not None for s in seen] == [False, False, True, False]


def test_a_leaf_used_twice_by_one_function_is_not_written_over():
    # linear(W, W): W is x and weight; its gradient is g W + g^T W, not twice either one
    # (c is not symmetric, so neither is g)
    rng = np.random.default_rng(0)
    w = nn.Parameter(rng.normal(size=(3, 3)))
    c = mg.tensor(rng.normal(size=(3, 3)))
    plain = mg.tensor(w.numpy().copy(), requires_grad=True)
    flatten([w])
    for t in (w, plain):
        (F.linear(t, t) * c).sum().backward()
    np.testing.assert_allclose(w.grad.numpy(), plain.grad.numpy(), rtol=1e-12)


def test_a_member_left_without_a_gradient_reads_as_zeros_after_zero_grad():
    net = _net()
    opt = mg.optim.SGD(net.parameters(), lr=0.1, flat=True)
    _loss(net).backward()
    opt.step()
    opt.zero_grad()                              # drops the gradients, fills nothing yet
    last = list(net.parameters())[-1]            # the output bias: no gradient this time
    x = mg.tensor(np.random.default_rng(2).normal(size=(4, 3)))
    (net[0](x).sum() + (net[2].weight ** 2).sum()).backward()
    assert last.grad is None
    (span,), rest = grad_spans(list(net.parameters()))
    stop = span.size
    np.testing.assert_array_equal(span[stop - last.size:], 0)
    total = mg.optim.clip_grad_norm_(net.parameters(), 1e9)
    want = np.sqrt(sum(float((p.grad.numpy() ** 2).sum()) for p in net.parameters()
                       if p.grad is not None))
    np.testing.assert_allclose(total, want, rtol=1e-12)


@pytest.mark.parametrize("cls", [mg.optim.SGD, mg.optim.Adam, mg.optim.AdamW])
def test_optimizers_lay_parameters_out_flat_by_default(cls):
    net = _net()
    opt = cls(net.parameters(), lr=0.1)
    assert opt.flat
    (buffer,) = {p.flat[0] for p in net.parameters()}
    assert buffer.valid and buffer.data.size == net.num_parameters()
    assert not cls(_net().parameters(), lr=0.1, flat=False).flat
