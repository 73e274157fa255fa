"""Elementwise arithmetic, unary functions, selection and matmul: values against NumPy and
gradients against float64 central differences (minigen.testing.gradcheck), on
hypothesis-generated shapes that include broadcasting pairs and odd sizes.

Inputs are kept away from the points where an op is not differentiable (0 for abs/relu,
the clip bounds, ties in maximum/minimum) and inside the domain of log/sqrt/pow.
"""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigen as mg
import minigen.functional as F
from minigen.testing import arrays, broadcastable_shapes, gradcheck, gradgradcheck, shapes


def away_from(x, point=0.0, gap=0.1):
    """Move entries closer than ``gap`` to ``point`` out to point +- gap (keeping their side);
    others stay, so pushing away from two points 2 gap apart cannot land on the first."""
    near = np.abs(x - point) < gap
    return np.where(near, np.where(x >= point, point + gap, point - gap), x)


@st.composite
def broadcast_pair(draw, low=-2.0, high=2.0, max_dims=3):
    sa, sb = draw(broadcastable_shapes(2, max_dims=max_dims, max_side=4))
    return draw(arrays(sa, low, high)), draw(arrays(sb, low, high))


@st.composite
def separated_pair(draw, max_dims=3):
    """Broadcastable a, b with |a - b| >= 0.1 everywhere: a on even, b on odd tenths."""
    sa, sb = draw(broadcastable_shapes(2, max_dims=max_dims, max_side=4))
    ints = st.integers(-10, 10)
    a = draw(hnp.arrays(np.int64, sa, elements=ints)) * 0.2
    b = draw(hnp.arrays(np.int64, sb, elements=ints)) * 0.2 + 0.1
    return a, b


def gelu_ref(x):
    """The exact GELU, F.gelu's default (as in PyTorch): x Phi(x)."""
    return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))


def gelu_tanh_ref(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def sigmoid_ref(x):
    return 1 / (1 + np.exp(-x))


BINARY = {
    "add": (lambda a, b: a + b, np.add),
    "sub": (lambda a, b: a - b, np.subtract),
    "mul": (lambda a, b: a * b, np.multiply),
    "div": (lambda a, b: a / b, np.divide),
    "pow": (lambda a, b: a ** b, np.power),
}


@pytest.mark.parametrize("name", sorted(BINARY))
@given(pair=broadcast_pair())
def test_binary_broadcasting(name, pair):
    a, b = pair
    if name == "div":
        b = away_from(b, 0.0, 0.5)          # |b| >= 0.5
    if name == "pow":
        a = np.abs(a) + 0.5                 # a > 0, so d/db = a^b log a exists
    op, ref = BINARY[name]
    out = op(mg.tensor(a), mg.tensor(b))
    assert out.shape == np.broadcast_shapes(a.shape, b.shape)
    np.testing.assert_allclose(out.numpy(), ref(a, b), rtol=1e-12)
    gradcheck(op, [a, b])


@given(x=arrays(shapes(max_dims=3)), c=st.floats(-3, 3))
def test_python_scalar_operands_both_sides(x, c):
    for op in (lambda t: t + c, lambda t: c + t, lambda t: t - c, lambda t: c - t,
               lambda t: t * c, lambda t: c * t, lambda t: t / 2.5, lambda t: -t):
        gradcheck(op, [x])
    gradcheck(lambda t: c / (t * t + 1), [x])
    gradcheck(lambda t: t ** 3, [x])          # integer power of negative bases
    gradcheck(lambda t: 1.5 ** t, [x])        # scalar base, tensor exponent
    np.testing.assert_allclose((2.0 - mg.tensor(x)).numpy(), 2.0 - x)
    np.testing.assert_allclose((1.5 ** mg.tensor(x)).numpy(), 1.5 ** x)


@given(x=arrays(shapes(max_dims=3)))
def test_numpy_array_on_the_left_gives_a_tensor(x):
    t = mg.tensor(x, requires_grad=True)
    out = np.ones_like(x) * 3.0 + t
    assert isinstance(out, mg.Tensor)
    out.sum().backward()
    np.testing.assert_allclose(t.grad.numpy(), np.ones_like(x))


UNARY = {
    # name: (minigen op, NumPy reference, input transform that keeps it differentiable)
    "exp": (F.exp, np.exp, None),
    "log": (F.log, np.log, lambda x: np.abs(x) + 0.1),
    "sqrt": (F.sqrt, np.sqrt, lambda x: np.abs(x) + 0.1),
    "abs": (F.abs, np.abs, away_from),
    "sin": (F.sin, np.sin, None),
    "cos": (F.cos, np.cos, None),
    "tanh": (F.tanh, np.tanh, None),
    "sigmoid": (F.sigmoid, sigmoid_ref, None),
    "relu": (F.relu, lambda x: np.maximum(x, 0), away_from),
    "leaky_relu": (lambda t: F.leaky_relu(t, 0.2), lambda x: np.where(x > 0, x, 0.2 * x),
                   away_from),
    "gelu": (F.gelu, gelu_ref, None),
    "gelu_tanh": (lambda t: F.gelu(t, approximate="tanh"), gelu_tanh_ref, None),
    "silu": (F.silu, lambda x: x * sigmoid_ref(x), None),
    "softplus": (F.softplus, lambda x: np.log1p(np.exp(x)), None),
    "neg": (lambda t: -t, np.negative, None),
}


@pytest.mark.parametrize("name", sorted(UNARY))
@given(x=arrays(shapes(max_dims=4, max_side=4), -3.0, 3.0))
def test_unary(name, x):
    op, ref, transform = UNARY[name]
    x = transform(x) if transform else x
    np.testing.assert_allclose(op(mg.tensor(x)).numpy(), ref(x), rtol=1e-12, atol=1e-15)
    gradcheck(op, [x])


@pytest.mark.parametrize("name", ["exp", "log", "sqrt", "sin", "tanh", "sigmoid", "gelu",
                                  "gelu_tanh", "silu", "softplus"])
@given(x=arrays(shapes(max_dims=2, max_side=4), -2.0, 2.0))
def test_unary_second_derivative(name, x):
    op, _, transform = UNARY[name]
    gradgradcheck(op, [transform(x) if transform else x])


@pytest.mark.parametrize("name", ["silu", "gelu", "gelu_tanh"])
def test_fused_activation_third_derivative(name):
    """silu and gelu are one Function whose backward is one ActivationGrad; the gradient of
    a function of its gradient (WGAN-GP's shape) is still exact."""
    op = UNARY[name][0]

    def gradient_norm(t):
        g = mg.grad((op(t) * mg.tensor(np.cos(np.arange(t.size)))).sum(), t, create_graph=True)
        return (g * g * op(t)).sum()

    gradgradcheck(gradient_norm, [np.linspace(-3, 3, 13)])


@pytest.mark.parametrize("name, torch_name, kw", [("silu", "silu", {}), ("gelu", "gelu", {}),
                                                  ("gelu_tanh", "gelu", {"approximate": "tanh"}),
                                                  ("sigmoid", "sigmoid", {})])
@pytest.mark.parametrize("dtype, rtol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_activations_match_pytorch_on_finite_and_non_finite_inputs(name, torch_name, kw,
                                                                   dtype, rtol):
    torch = pytest.importorskip("torch")
    x = np.concatenate([np.linspace(-30, 30, 61), [-1e4, 1e4, np.inf, -np.inf, np.nan]])
    x = x.astype(dtype)
    ours = mg.tensor(x, dtype=dtype, requires_grad=True)
    with np.errstate(invalid="ignore"):
        out = UNARY[name][0](ours)
        out.sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    ref = getattr(torch.nn.functional, torch_name)(theirs, **kw)
    ref.sum().backward()
    assert out.dtype == dtype and ours.grad.dtype == dtype
    ref = ref.detach().numpy()
    if name == "gelu":   # PyTorch's float32 CPU kernel gives gelu(inf) = NaN; the limit is inf
        assert out.numpy()[x == np.inf] == np.inf
        ref = np.where(x == np.inf, np.inf, ref)
    np.testing.assert_allclose(out.numpy(), ref, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=rtol,
                               atol=10 * rtol)


def test_activations_of_empty_tensors():
    for name in ("silu", "gelu", "gelu_tanh", "sigmoid"):
        t = mg.tensor(np.zeros((0, 3)), requires_grad=True)
        UNARY[name][0](t).sum().backward()
        assert t.grad.shape == (0, 3)


def test_sigmoid_and_softplus_do_not_overflow():
    x = mg.tensor([-1000.0, 0.0, 1000.0], dtype=np.float64, requires_grad=True)
    np.testing.assert_allclose(F.sigmoid(x).numpy(), [0.0, 0.5, 1.0])
    np.testing.assert_allclose(F.softplus(x).numpy(), [0.0, math.log(2), 1000.0])
    F.softplus(x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.5, 1.0])


@given(x=arrays(shapes(max_dims=3), -3.0, 3.0),
       bounds=st.sampled_from([(-1.0, 1.0), (None, 0.5), (-0.5, None)]))
def test_clip(x, bounds):
    lo, hi = bounds
    for b in bounds:
        if b is not None:
            x = away_from(x, b, 0.05)
    np.testing.assert_allclose(F.clip(mg.tensor(x), lo, hi).numpy(), np.clip(x, lo, hi))
    gradcheck(lambda t: F.clip(t, lo, hi), [x])


@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (None, 0.5), (-0.5, None), (0.25, 0.25)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_clip_gradient_includes_the_ends(lo, hi, dtype):
    """The documented rule: d clip / dx = 1 on [lo, hi], ends included, 0 outside (where
    central differences cannot decide, so gradcheck above stays away from the bounds)."""
    ends = [b for b in (lo, hi) if b is not None]
    x = np.array(ends + [min(ends) - 0.5, max(ends) + 0.5, (min(ends) + max(ends)) / 2],
                 dtype=dtype)
    expected = np.array([1] * len(ends) + [lo is None, hi is None, 1], dtype=dtype)
    t = mg.tensor(x, dtype=dtype, requires_grad=True)
    F.clip(t, lo, hi).sum().backward()
    np.testing.assert_array_equal(t.grad.numpy(), expected)
    np.testing.assert_array_equal(F.clip(t, lo, hi).numpy(), np.clip(x, lo, hi))


def test_clip_needs_a_bound():
    with pytest.raises(ValueError, match="clip"):
        F.clip(mg.tensor([1.0]))


@pytest.mark.parametrize("name", ["maximum", "minimum"])
@given(pair=separated_pair())
def test_maximum_minimum(name, pair):
    a, b = pair
    op, ref = getattr(F, name), getattr(np, name)
    np.testing.assert_allclose(op(mg.tensor(a), mg.tensor(b)).numpy(), ref(a, b))
    gradcheck(op, [a, b])


@given(pair=broadcast_pair(), data=st.data())
def test_where(pair, data):
    a, b = pair
    shape = np.broadcast_shapes(a.shape, b.shape)
    cond = data.draw(hnp.arrays(bool, data.draw(hnp.broadcastable_shapes(shape, max_dims=3))))
    out = F.where(cond, mg.tensor(a), mg.tensor(b))
    np.testing.assert_allclose(out.numpy(), np.where(cond, a, b))
    gradcheck(lambda s, t: F.where(cond, s, t), [a, b])


# --- matmul --------------------------------------------------------------------------------
@st.composite
def matmul_shapes(draw):
    """(a_shape, b_shape): batched with broadcasting batch dims, or 1-D on either side."""
    n, k, m = (draw(st.integers(1, 4)) for _ in range(3))
    batch_a, batch_b = draw(broadcastable_shapes(2, max_dims=2, max_side=3))
    kind = draw(st.sampled_from(["batched", "vec@vec", "vec@mat", "mat@vec"]))
    if kind == "vec@vec":
        return (k,), (k,)
    if kind == "vec@mat":
        return (k,), batch_b + (k, m)
    if kind == "mat@vec":
        return batch_a + (n, k), (k,)
    return batch_a + (n, k), batch_b + (k, m)


@given(data=st.data())
def test_matmul(data):
    sa, sb = data.draw(matmul_shapes())
    a, b = data.draw(arrays(sa)), data.draw(arrays(sb))
    out = mg.tensor(a) @ mg.tensor(b)
    np.testing.assert_allclose(out.numpy(), np.matmul(a, b), rtol=1e-12, atol=1e-14)
    gradcheck(lambda s, t: s @ t, [a, b])
    gradcheck(F.matmul, [a, b])


def test_matmul_second_derivative():
    rng = np.random.default_rng(0)
    gradgradcheck(lambda a, b: (a @ b) * (a @ b), [rng.standard_normal((2, 3, 4)),
                                                   rng.standard_normal((4, 2))])


def test_matmul_gradient_of_a_constant_operand_is_not_computed():
    w = mg.tensor(np.ones((3, 2)), requires_grad=True)
    x = mg.tensor(np.ones((4, 3)))
    (x @ w).sum().backward()
    assert x.grad is None
    np.testing.assert_allclose(w.grad.numpy(), np.full((3, 2), 4.0))


def test_matmul_with_transposed_operands_keeps_the_leaf_gradient_layout():
    """x @ W.T and X.T @ Y: gradients through the transposed-layout branch are right (first
    and second order) and the gradient reaching a transposed leaf is C-contiguous."""
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((5, 4)), rng.standard_normal((3, 4))
    gradcheck(lambda x, w: x @ w.T, [x, w])
    gradgradcheck(lambda x, w: x.T.T @ w.T, [x, w])
    gradcheck(lambda x, w: x.T @ (w @ x.T).T, [x, w])
    W = mg.tensor(w, requires_grad=True)
    (mg.tensor(x) @ W.T).sum().backward()
    assert W.grad.data.flags.c_contiguous
    np.testing.assert_allclose(W.grad.numpy(), np.ones((5, 3)).T @ x)


# --- linear --------------------------------------------------------------------------------
@given(data=st.data(), bias=st.booleans())
def test_linear_matches_numpy_first_and_second_order(data, bias):
    lead = data.draw(shapes(min_dims=0, max_dims=2, max_side=3))
    n_in, n_out = data.draw(st.integers(1, 4)), data.draw(st.integers(1, 4))
    x, w = data.draw(arrays(lead + (n_in,))), data.draw(arrays((n_out, n_in)))
    b = data.draw(arrays((n_out,)))
    params = [w, b] if bias else [w]
    ref = x @ w.T + (b if bias else 0)
    np.testing.assert_allclose(F.linear(mg.tensor(x), *map(mg.tensor, params)).numpy(), ref,
                               rtol=1e-12, atol=1e-14)
    gradcheck(F.linear, [x] + params)
    gradgradcheck(lambda *ts: F.linear(*ts) * F.linear(*ts), [x] + params)


def test_linear_gradient_of_a_constant_input_is_not_computed_and_errors():
    x = mg.tensor(np.ones((4, 3)))
    w, b = mg.tensor(np.ones((2, 3)), requires_grad=True), mg.tensor(np.ones(2))
    F.linear(x, w, b).sum().backward()
    assert x.grad is None and b.grad is None
    assert w.grad.data.flags.c_contiguous
    np.testing.assert_allclose(w.grad.numpy(), np.full((2, 3), 4.0))
    out = F.linear(mg.tensor(np.ones((4, 3)), dtype=np.float32), w, b)   # mixed: promoted
    assert out.dtype == np.float64
    for bad in [(np.ones((4, 2)), np.ones((2, 3)), None), (np.ones((4, 3)), np.ones(3), None),
                (np.ones((4, 3)), np.ones((2, 3)), np.ones(3))]:
        with pytest.raises(ValueError, match=r"linear: expected x \(\.\.\., in\)"):
            F.linear(*[None if a is None else mg.tensor(a) for a in bad])


def test_relu_gradient_is_differentiable_in_the_upstream_gradient():
    """relu's backward is g (a > 0), linear in g: its own derivative with respect to g is the
    mask again (and 0 with respect to a)."""
    x = np.linspace(-2, 2, 8)               # no entry at the kinks 0 and +-1
    gradgradcheck(lambda t: F.relu(t) * t, [x])
    gradgradcheck(lambda t: F.relu(t * t - 1) * t, [x])


def test_relu_keeps_integers_and_runs_floats_fused():
    """An int tensor stays int (no float promotion); a float one runs as the fused kernel's
    one-pass Function, with the primitive's values."""
    i = F.relu(mg.tensor(np.array([-2, 0, 3])))
    assert i.dtype == np.int64 and i.numpy().tolist() == [0, 0, 3]
    x = np.array([-1.5, 0.0, 2.0, np.nan, -np.inf, np.inf], np.float32)
    y = F.relu(mg.tensor(x, requires_grad=True))
    assert type(y._ctx).__name__ == "BiasAct" and y.dtype == np.float32
    np.testing.assert_array_equal(y.detach().numpy(), np.maximum(x, 0))
