"""group_norm and layer_norm (minigen/ops/norm.py): one Function each with a closed-form
backward, checked against the same normalisation written in composite Tensor ops (float64:
values, gradients, second and third derivatives), against NumPy and PyTorch, on NaN, inf and
empty inputs, and for their errors."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
import minigen.functional as F
from minigen.nn.layers import GroupNorm
from minigen.ops.norm import Norm, NormBackward
from minigen.testing import arrays, gradcheck, gradgradcheck


def composite_norm(x, axes, weight=None, bias=None, eps=1e-5, wshape=None):
    """(x - mean) / sqrt(var + eps) * weight + bias in plain Tensor ops (the reference)."""
    d = x - x.mean(axes, keepdims=True)
    y = d / ((d * d).mean(axes, keepdims=True) + eps).sqrt()
    if weight is not None:
        y = y * weight.reshape(wshape)
    return y if bias is None else y + bias.reshape(wshape)


def composite_group_norm(x, groups, weight=None, bias=None, eps=1e-5):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    g = composite_norm(g, -1, eps=eps).reshape(x.shape)
    wshape = (1, c) + (1,) * (x.ndim - 2)
    if weight is not None:
        g = g * weight.reshape(wshape)
    return g if bias is None else g + bias.reshape(wshape)


def numpy_group_norm(x, groups, w, b, eps=1e-5):
    n, c = x.shape[:2]
    g = x.reshape(n, groups, -1)
    g = (g - g.mean(-1, keepdims=True)) / np.sqrt(g.var(-1, keepdims=True) + eps)
    wshape = (1, c) + (1,) * (x.ndim - 2)
    return g.reshape(x.shape) * w.reshape(wshape) + b.reshape(wshape)


@st.composite
def group_norm_case(draw):
    """x (N, C, *trailing) with C = G K, a weight and a bias (C,)."""
    n, groups, k = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    trailing = tuple(draw(st.lists(st.integers(1, 4), max_size=2)))
    shape = (n, groups * k) + trailing
    if np.prod(shape) // (n * groups) < 2:       # a group of one entry has no spread
        shape = shape + (2,)
    x = draw(arrays(shape))
    return x, groups, draw(arrays((groups * k,))), draw(arrays((groups * k,)))


AFFINE = {"none": (False, False), "weight": (True, False), "bias": (False, True),
          "both": (True, True)}


def _pick(affine, w, b):
    use_w, use_b = AFFINE[affine]
    return [a for a, use in ((w, use_w), (b, use_b)) if use]


def _gn(groups, affine):
    use_w, use_b = AFFINE[affine]

    def fn(t, *params):
        params = iter(params)
        return F.group_norm(t, groups, next(params) if use_w else None,
                            next(params) if use_b else None)
    return fn


# --- values and gradients ------------------------------------------------------------------
@given(case=group_norm_case())
def test_group_norm_matches_numpy_and_its_gradient_central_differences(case):
    x, groups, w, b = case
    out = F.group_norm(mg.tensor(x), groups, mg.tensor(w), mg.tensor(b))
    np.testing.assert_allclose(out.numpy(), numpy_group_norm(x, groups, w, b), rtol=1e-10,
                               atol=1e-12)
    gradcheck(lambda t, wt, bt: F.group_norm(t, groups, wt, bt), [x, w, b], rtol=1e-4,
              atol=1e-7)


def _all_grads(fn, inputs, create_graph=False):
    """The gradients of sum(c tanh(fn(inputs))): through tanh the output gradient gy
    depends on the inputs too, so its own derivatives are exercised."""
    ts = [mg.tensor(a, dtype=np.float64, requires_grad=True) for a in inputs]
    out = fn(*ts)
    weights = mg.tensor(np.cos(np.arange(out.size)).reshape(out.shape))
    return ts, out, mg.grad((F.tanh(out) * weights).sum(), ts, create_graph=create_graph)


@pytest.mark.parametrize("affine", sorted(AFFINE))
def test_group_norm_equals_the_composite_to_second_order(affine):
    """Fused and composite agree on the value, the gradient and the gradient of a function
    of the gradient (the shape of WGAN-GP's penalty), for every affine combination."""
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((3, 6, 2, 3)), rng.standard_normal(6), rng.standard_normal(6)
    inputs = [x] + _pick(affine, w, b)
    fused = _gn(3, affine)
    use_w, use_b = AFFINE[affine]

    def composite(t, *params):
        params = iter(params)
        return composite_group_norm(t, 3, next(params) if use_w else None,
                                    next(params) if use_b else None)

    results = []
    for fn in (fused, composite):
        ts, out, grads = _all_grads(fn, inputs, create_graph=True)
        penalty = sum((g * g).sum() for g in grads)
        second = mg.grad(penalty, ts, allow_unused=True)  # the bias's gradient is sum gy
        results.append([v.numpy() for v in [out, *grads]] +
                       [np.zeros(t.shape) if g is None else g.numpy() for t, g in zip(ts, second)])
    for a, c in zip(*results):
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("affine", sorted(AFFINE))
def test_group_norm_second_derivatives_central_differences(affine):
    rng = np.random.default_rng(2)
    x, w, b = rng.standard_normal((2, 4, 3)), rng.standard_normal(4), rng.standard_normal(4)
    gradgradcheck(_gn(2, affine), [x] + _pick(affine, w, b), rtol=1e-4, atol=1e-7)


def test_layer_norm_second_and_third_derivatives_central_differences():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((3, 2, 4)), rng.standard_normal((2, 4)), \
        rng.standard_normal((2, 4))
    gradgradcheck(lambda t, wt, bt: F.layer_norm(t, (2, 4), wt, bt), [x, w, b], rtol=1e-4,
                  atol=1e-7)

    def gradient_norm(t, wt, bt):   # a function of the first derivatives, differentiated twice
        out = (F.layer_norm(t, (2, 4), wt, bt) * mg.tensor(np.sin(np.arange(x.size))
                                                            .reshape(x.shape))).sum()
        return sum((g * g).sum() for g in mg.grad(out, [t, wt, bt], create_graph=True))

    gradgradcheck(gradient_norm, [x, w, b], rtol=1e-4, atol=1e-7)


def test_gradient_penalty_through_group_norm_matches_the_composite():
    """WGAN-GP's shape: a critic with a GroupNorm, the penalty (|d critic / d x| - 1)^2
    differentiated with respect to the critic's parameters."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((4, 4, 3, 3))
    w1, w, b = rng.standard_normal((4, 4)), rng.standard_normal(4), rng.standard_normal(4)
    results = []
    for norm in (lambda h, wt, bt: F.group_norm(h, 2, wt, bt),
                 lambda h, wt, bt: composite_group_norm(h, 2, wt, bt)):
        xt = mg.tensor(x, requires_grad=True)
        params = [mg.tensor(a, requires_grad=True) for a in (w1, w, b)]
        h = (xt.permute(0, 2, 3, 1) @ params[0]).permute(0, 3, 1, 2)
        critic = F.silu(norm(h, params[1], params[2])).sum()
        (gx,) = mg.grad(critic, [xt], create_graph=True)
        norms = (gx * gx).reshape(4, -1).sum(-1).sqrt()
        penalty = ((norms - 1) * (norms - 1)).mean()
        results.append([penalty] + mg.grad(penalty, params))
    for a, c in zip(*results):
        np.testing.assert_allclose(a.numpy(), c.numpy(), rtol=1e-9, atol=1e-11)


def test_float32_stays_float32_and_mixed_dtypes_promote():
    x = mg.tensor(np.random.default_rng(5).standard_normal((2, 4, 3)), dtype=np.float32,
                  requires_grad=True)
    out = F.group_norm(x, 2, mg.ones(4), mg.zeros(4))
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32
    assert F.group_norm(x, 2, mg.ones(4, dtype=np.float64)).dtype == np.float64
    assert F.layer_norm(x, 3).dtype == np.float32


# --- against PyTorch -----------------------------------------------------------------------
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-10), (np.float32, 2e-4)])
def test_group_norm_and_layer_norm_match_pytorch_with_double_backward(dtype, rtol):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 8, 4, 5)).astype(dtype)
    w, b = rng.standard_normal(8).astype(dtype), rng.standard_normal(8).astype(dtype)
    wl, bl = rng.standard_normal((4, 5)).astype(dtype), rng.standard_normal((4, 5)).astype(dtype)
    gy = rng.standard_normal(x.shape).astype(dtype)
    cases = [(lambda t, p, q: F.group_norm(t, 4, p, q),
              lambda t, p, q: torch.nn.functional.group_norm(t, 4, p, q), w, b),
             (lambda t, p, q: F.layer_norm(t, (4, 5), p, q),
              lambda t, p, q: torch.nn.functional.layer_norm(t, (4, 5), p, q), wl, bl)]
    for ours, theirs, wa, ba in cases:
        results = []
        for fn, lib in ((ours, "minigen"), (theirs, "torch")):
            if lib == "minigen":
                ts = [mg.tensor(a, requires_grad=True) for a in (x, wa, ba)]
                out = fn(*ts)
                grads = mg.grad((out * mg.tensor(gy)).sum(), ts, create_graph=True)
                second = mg.grad(sum((g * g).sum() for g in grads), ts, allow_unused=True)
            else:
                ts = [torch.tensor(a, requires_grad=True) for a in (x, wa, ba)]
                out = fn(*ts)
                grads = torch.autograd.grad((out * torch.tensor(gy)).sum(), ts,
                                            create_graph=True)
                second = torch.autograd.grad(sum((g * g).sum() for g in grads), ts,
                                             allow_unused=True)
            second = [np.zeros(t.shape) if v is None else v for t, v in zip(ts, second)]
            results.append([np.asarray(v.detach() if lib == "torch" and not
                                       isinstance(v, np.ndarray) else v)
                            for v in [out, *grads, *second]])
        for a, c in zip(*results):
            np.testing.assert_allclose(a, c, rtol=rtol, atol=rtol * np.abs(c).max())


def test_group_norm_module_matches_pytorch():
    torch = pytest.importorskip("torch")
    ours, theirs = GroupNorm(3, 6), torch.nn.GroupNorm(3, 6)
    assert ours.num_parameters() == 12
    assert GroupNorm(3, 6, affine=False).num_parameters() == 0
    x = np.random.default_rng(7).standard_normal((2, 6, 5)).astype(np.float32)
    np.testing.assert_allclose(ours(mg.tensor(x)).numpy(),
                               theirs(torch.from_numpy(x)).detach().numpy(), atol=1e-5)
    with pytest.raises(ValueError, match=r"GroupNorm: num_groups \(4\) must divide"):
        GroupNorm(4, 6)


# --- NaN, inf and empty inputs -------------------------------------------------------------
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_non_finite_entry_spoils_its_group_only_as_in_the_composite(bad):
    x = np.random.default_rng(8).standard_normal((2, 4, 3))
    x[0, 1, 2] = bad                          # sample 0, group 0 (channels 0-1 of 2 groups)
    w, b = np.ones(4), np.zeros(4)
    with np.errstate(invalid="ignore"):
        out = F.group_norm(mg.tensor(x), 2, mg.tensor(w), mg.tensor(b)).numpy()
        ref = composite_group_norm(mg.tensor(x), 2, mg.tensor(w), mg.tensor(b)).numpy()
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    assert np.isnan(out[0, :2]).all() and np.isfinite(out[0, 2:]).all()
    assert np.isfinite(out[1]).all()
    np.testing.assert_allclose(out[1], ref[1], rtol=1e-12)


@pytest.mark.parametrize("shape, groups", [((0, 4, 3), 2), ((2, 4, 0), 2), ((2, 0, 3), 1)])
def test_empty_inputs_give_empty_outputs_and_zero_parameter_gradients(shape, groups):
    c = shape[1]
    x = mg.tensor(np.zeros(shape), requires_grad=True)
    w, b = mg.ones(c, dtype=np.float64, requires_grad=True), \
        mg.zeros(c, dtype=np.float64, requires_grad=True)
    out = F.group_norm(x, groups, w, b)
    assert out.shape == shape
    out.sum().backward()
    assert x.grad.shape == shape
    np.testing.assert_array_equal(w.grad.numpy(), np.zeros(c))
    np.testing.assert_array_equal(b.grad.numpy(), np.zeros(c))
    assert F.layer_norm(mg.tensor(np.zeros((0, 3))), 3).shape == (0, 3)


# --- errors --------------------------------------------------------------------------------
def test_bad_inputs_are_errors_that_name_the_function_and_argument():
    x = mg.tensor(np.zeros((2, 6, 3)))
    with pytest.raises(ValueError, match=r"group_norm: expected input \(N, C, \*\)"):
        F.group_norm(mg.tensor(np.zeros(6)), 2)
    for groups in (0, -2, 2.0, True):
        with pytest.raises(ValueError, match="group_norm: num_groups must be a positive int"):
            F.group_norm(x, groups)
    with pytest.raises(ValueError, match="group_norm: num_groups must divide the 6 channels"):
        F.group_norm(x, 4)
    with pytest.raises(ValueError, match=r"group_norm: weight must have shape \(6,\)"):
        F.group_norm(x, 2, mg.ones(3))
    with pytest.raises(ValueError, match=r"group_norm: bias must have shape \(6,\)"):
        F.group_norm(x, 2, None, mg.ones(6, 1))
    for eps in (-1.0, float("nan"), "0.1"):
        with pytest.raises(ValueError, match="group_norm: eps must be a finite number >= 0"):
            F.group_norm(x, 2, eps=eps)
    with pytest.raises(ValueError, match="layer_norm: input shape"):
        F.layer_norm(x, 4)
    with pytest.raises(ValueError, match="layer_norm: input shape"):
        F.layer_norm(x, ())
    with pytest.raises(ValueError, match=r"layer_norm: weight must have shape \(6, 3\)"):
        F.layer_norm(x, (6, 3), mg.ones(3))


def test_double_backward_runs_through_norm_backward():
    """The first-order backward is one NormBackward (a raw-array kernel), and the gradient's
    graph runs through it, so the second order differentiates NormBackward itself."""
    x = mg.tensor(np.random.default_rng(9).standard_normal((2, 4, 3)), requires_grad=True)
    out = F.group_norm(x, 2)
    assert isinstance(out._ctx, Norm)
    (gx,) = mg.grad((out * out * out).sum(), [x], create_graph=True)
    seen, stack = {}, [gx._ctx]
    while stack:
        fn = stack.pop()
        if fn is not None and id(fn) not in seen:
            seen[id(fn)] = fn
            stack.extend(t._ctx for t in fn.inputs)
    assert any(isinstance(fn, NormBackward) for fn in seen.values())


# --- group_norm_act: group norm, per-(sample, channel) shift and activation fused ---------
ACTS = {None: lambda a: a, "relu": F.relu, "silu": lambda a: a * F.sigmoid(a),
        "gelu": lambda a: 0.5 * a * (1 + F.erf(a / np.sqrt(2))),
        "gelu_tanh": lambda a: 0.5 * a * (1 + F.tanh(np.sqrt(2 / np.pi)
                                                      * (a + 0.044715 * a * a * a)))}


def _gna(groups, act, affine, shift):
    """(fused, composite, operands picker) for group_norm_act with these options."""
    use_w, use_b = AFFINE[affine]

    def split(params):
        params = iter(params)
        return [next(params) if used else None for used in (use_w, use_b, shift)]

    def fused(t, *params):
        w, b, s = split(params)
        return F.group_norm_act(t, groups, w, b, 1e-5, s, act)

    def composite(t, *params):
        w, b, s = split(params)
        a = composite_group_norm(t, groups, w, b)
        if s is not None:
            a = a + s.reshape(s.shape + (1,) * (t.ndim - 2))
        return ACTS[act](a)
    return fused, composite


@pytest.mark.parametrize("path", ["numba", "reference"])
@pytest.mark.parametrize("act", sorted(ACTS, key=str))
@pytest.mark.parametrize("affine, shift_rows", [("both", 3), ("both", 1), ("none", 3),
                                                ("weight", 0)])
def test_group_norm_act_equals_the_composite_to_second_order(path, act, affine, shift_rows,
                                                             monkeypatch):
    """The value, the gradient, and the gradient of a function of the gradient (WGAN-GP's
    shape) of the fused op against silu(group_norm(x) + shift) etc. in primitive ops, on the
    Numba kernel and on the NumPy reference."""
    if path == "numba":
        pytest.importorskip("numba")
    monkeypatch.setenv("MINIGEN_KERNELS", path)
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((3, 6, 2, 3)), rng.standard_normal(6), rng.standard_normal(6)
    shift = rng.standard_normal((shift_rows, 6)) if shift_rows else None
    inputs = [x] + _pick(affine, w, b) + ([shift] if shift_rows else [])
    results = []
    for fn in _gna(3, act, affine, bool(shift_rows)):
        ts, out, grads = _all_grads(fn, inputs, create_graph=True)
        penalty = sum((g * g).sum() for g in grads)
        second = mg.grad(penalty, ts, allow_unused=True)
        results.append([v.numpy() for v in [out, *grads]] +
                       [np.zeros(t.shape) if g is None else g.numpy() for t, g in zip(ts, second)])
    for a, c in zip(*results):
        np.testing.assert_allclose(a, c, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("act", ["silu", "relu", None])
@pytest.mark.parametrize("shift_rows", [2, 1])
def test_group_norm_act_gradcheck_and_gradgradcheck(act, shift_rows):
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((2, 4, 3)), rng.standard_normal(4), rng.standard_normal(4)
    shift = rng.standard_normal((shift_rows, 4))
    fused = _gna(2, act, "both", True)[0]
    assert gradcheck(fused, [x, w, b, shift], rtol=1e-4, atol=1e-7)
    assert gradgradcheck(fused, [x, w, b, shift], rtol=1e-4, atol=1e-7)


def test_group_norm_act_third_derivative_central_differences():
    """The backward's backward is Tensor ops through Functions that differentiate again:
    d/dx of a second-order quantity checked by central differences."""
    rng = np.random.default_rng(8)
    x, w, b = rng.standard_normal((2, 4, 3)), rng.standard_normal(4), rng.standard_normal(4)
    shift = rng.standard_normal((2, 4))

    def gradient_norm_act(t, wt, bt, st):
        (g,) = mg.grad((F.group_norm_act(t, 2, wt, bt, 1e-5, st) ** 2).sum(), [t],
                       create_graph=True)
        return g * g
    assert gradgradcheck(gradient_norm_act, [x, w, b, shift], rtol=1e-4, atol=1e-7,
                         max_elementwise=0, n_directions=2)


def test_group_norm_act_float32_and_mixed_dtypes():
    rng = np.random.default_rng(9)
    x = mg.tensor(rng.standard_normal((2, 4, 3)), dtype=np.float32, requires_grad=True)
    w, b = (mg.tensor(rng.standard_normal(4), dtype=np.float32) for _ in range(2))
    s = mg.tensor(rng.standard_normal((1, 4)), dtype=np.float32, requires_grad=True)
    y = F.group_norm_act(x, 2, w, b, shift=s)
    gx, gs = mg.grad(y.sum(), [x, s])
    assert y.dtype == gx.dtype == gs.dtype == np.float32 and gs.shape == (1, 4)
    assert F.group_norm_act(x, 2, w, b, shift=mg.tensor(s.data, dtype=np.float64)).dtype \
        == np.float64


def test_group_norm_act_errors_name_the_function_and_argument():
    x = mg.tensor(np.zeros((2, 4, 3)))
    with pytest.raises(ValueError, match="group_norm_act: activation"):
        F.group_norm_act(x, 2, activation="tanh")
    with pytest.raises(ValueError, match=r"group_norm_act: shift must have shape \(2, 4\) or "
                                         r"\(1, 4\), got \(4,\)"):
        F.group_norm_act(x, 2, shift=mg.tensor(np.zeros(4)))
    with pytest.raises(ValueError, match="group_norm_act: num_groups must divide"):
        F.group_norm_act(x, 3)
    with pytest.raises(ValueError, match=r"group_norm_act: weight must have shape \(4,\)"):
        F.group_norm_act(x, 2, mg.tensor(np.ones(3)))
