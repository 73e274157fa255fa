"""The fused Functions of a training step on both kernel paths (MINIGEN_KERNELS=reference and
=numba): bias_act / linear_act (minigen/ops/activations.py), layer_norm's kernel-backed
LayerNorm (minigen/ops/norm.py) and the attention's masked_softmax (minigen/ops/nn.py),
against the same maths in composite Tensor ops or NumPy, with central-difference first and
second derivatives on hypothesis shapes."""
import contextlib
import os

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
import minigen.functional as F
import minigen.ops.nn as F_nn
from minigen.ops.activations import BiasAct, BiasActBackward, bias_act, linear_act
from minigen.ops.norm import LayerNorm, LayerNormBackward
from minigen.testing import arrays, gradcheck, gradgradcheck, shapes

PATHS = ["reference", pytest.param("numba", marks=pytest.mark.skipif(
    not __import__("importlib").util.find_spec("numba"), reason="needs numba"))]
KINDS = ("relu", "silu", "gelu", "gelu_tanh")
COMPOSITE = {"relu": F.relu, "silu": lambda a: a * F.sigmoid(a),
             "gelu": lambda a: 0.5 * a * (1 + F.erf(a * 0.5 ** 0.5)),
             "gelu_tanh": lambda a: 0.5 * a * (1 + F.tanh(
                 (2 / np.pi) ** 0.5 * (a + 0.044715 * a * a * a)))}


@contextlib.contextmanager
def kernel_path(path):
    """MINIGEN_KERNELS=path for the block (a context manager: hypothesis reruns the body)."""
    old = os.environ.get("MINIGEN_KERNELS")
    os.environ["MINIGEN_KERNELS"] = path
    try:
        yield
    finally:
        if old is None:
            del os.environ["MINIGEN_KERNELS"]
        else:
            os.environ["MINIGEN_KERNELS"] = old


@st.composite
def bias_case(draw):
    """x (..., C) and b (C,) with |x + b| >= 0.05: away from relu's kink, so central
    differences with h = 1e-6 never straddle it."""
    shape = draw(shapes(min_dims=1, max_dims=3, max_side=5))
    x = draw(arrays(shape, 0.1, 2.0)) * draw(arrays(shape, -1, 1)).__ge__(0).choose(-1, 1)
    return x, draw(arrays(shape[-1:], -0.05, 0.05))


def _tensors(*arrays_):
    return [mg.tensor(a, requires_grad=True) for a in arrays_]


# --- bias + activation ---------------------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
@given(case=bias_case())
def test_bias_act_equals_the_composite_with_its_first_and_second_derivatives(path, kind, case):
    x, b = case
    with kernel_path(path):
        xt, bt = _tensors(x, b)
        fused = bias_act(xt, bt, kind)
        assert isinstance(fused._ctx, BiasAct)
        ref = COMPOSITE[kind](xt + bt)
        np.testing.assert_allclose(fused.numpy(), ref.numpy(), rtol=1e-12, atol=1e-14)
        gradcheck(lambda t, c: bias_act(t, c, kind), [x, b], rtol=1e-5, atol=1e-8)
        gradgradcheck(lambda t, c: bias_act(t, c, kind), [x, b], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
def test_bias_act_to_second_order_equals_the_composite(path, kind):
    """Value, gradient and the gradient of the squared gradient norm (WGAN-GP's penalty
    shape) through the fused op and through the composite, without a bias as well."""
    rng = np.random.default_rng(0)
    x, b = rng.standard_normal((4, 3, 7)), rng.standard_normal(7)
    pairs = {"bias": (lambda t, c: bias_act(t, c, kind), lambda t, c: COMPOSITE[kind](t + c)),
             "no bias": (lambda t, c: bias_act(t, None, kind) * c,
                         lambda t, c: COMPOSITE[kind](t) * c)}
    with kernel_path(path):
        for fused, composite in pairs.values():
            results = [_second_order(fn, x, b) for fn in (fused, composite)]
            for a, c in zip(*results):
                np.testing.assert_allclose(a, c, rtol=1e-10, atol=1e-12)


def _second_order(fn, x, b):
    """[fn, d/dx, d/db of sum(w tanh(fn)), d/dx, d/db of the gradient's squared norm]."""
    xt, bt = _tensors(x, b)
    out = fn(xt, bt)
    weights = mg.tensor(np.cos(np.arange(out.size)).reshape(out.shape))
    grads = mg.grad((F.tanh(out) * weights).sum(), [xt, bt], create_graph=True)
    second = mg.grad(sum((g * g).sum() for g in grads), [xt, bt], allow_unused=True)
    return [out.numpy()] + [g.numpy() for g in grads] + \
        [np.zeros(t.shape) if g is None else g.numpy() for t, g in zip((xt, bt), second)]


@pytest.mark.parametrize("path", PATHS)
def test_bias_act_backward_is_one_function_and_float32_stays_float32(path):
    x = mg.tensor(np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32),
                  requires_grad=True)
    b = mg.tensor(np.linspace(-1, 1, 6, dtype=np.float32), requires_grad=True)
    with kernel_path(path):
        y = bias_act(x, b, "gelu_tanh")
        assert y.dtype == np.float32
        gx, gb = mg.grad(y.sum(), [x, b], create_graph=True)
    assert isinstance(gx._ctx, BiasActBackward) and gx._ctx is gb._ctx
    assert gx.dtype == gb.dtype == np.float32
    np.testing.assert_allclose(gb.numpy(), gx.numpy().sum(0), rtol=1e-5)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("kind", KINDS)
@given(data=st.data())
def test_linear_act_equals_the_activation_of_linear(path, kind, data):
    lead = data.draw(shapes(min_dims=0, max_dims=2, max_side=4))
    n_in, n_out = data.draw(st.integers(1, 5)), data.draw(st.integers(1, 5))
    x, w, b = (data.draw(arrays(s)) for s in (lead + (n_in,), (n_out, n_in), (n_out,)))
    with kernel_path(path):
        out = linear_act(*_tensors(x, w, b), kind=kind)
        ref = COMPOSITE[kind](F.linear(*_tensors(x, w, b)))
        np.testing.assert_allclose(out.numpy(), ref.numpy(), rtol=1e-12, atol=1e-14)
        if kind != "relu":              # x W^T + b may land on relu's kink: the others only
            gradcheck(lambda *t: linear_act(*t, kind=kind), [x, w, b], rtol=1e-5, atol=1e-8)


def test_bias_act_and_linear_act_errors_name_the_call_and_argument():
    x = mg.tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="bias_act: kind must be one of"):
        bias_act(x, None, "tanh")
    with pytest.raises(ValueError, match=r"bias_act: bias must have shape \(3,\)"):
        bias_act(x, mg.tensor(np.zeros(2)), "relu")
    with pytest.raises(ValueError, match="bias_act: x must have at least one axis"):
        bias_act(mg.tensor(1.0), None, "relu")
    with pytest.raises(ValueError, match="linear_act: kind must be one of"):
        linear_act(x, mg.tensor(np.zeros((4, 3))), None, "swish")
    with pytest.raises(ValueError, match=r"linear_act: expected x \(\.\.\., in\)"):
        linear_act(x, mg.tensor(np.zeros((4, 2))), mg.tensor(np.zeros(4)), "relu")


# --- layer norm through kernels.norm -------------------------------------------------------
@pytest.mark.parametrize("path", PATHS)
@given(data=st.data(), affine=st.sampled_from([(True, True), (True, False), (False, True),
                                               (False, False)]))
def test_layer_norm_kernels_equal_the_composite_with_second_derivatives(path, data, affine):
    shape = data.draw(shapes(min_dims=1, max_dims=3, min_side=2, max_side=5))
    x = data.draw(arrays(shape))
    params = [data.draw(arrays(shape[-1:])) for used in affine if used]

    def fn(t, *p):
        p = iter(p)
        return F.layer_norm(t, shape[-1], next(p) if affine[0] else None,
                            next(p) if affine[1] else None)

    def composite(t, *p):
        p = iter(p)
        d = t - t.mean(-1, keepdims=True)
        y = d / ((d * d).mean(-1, keepdims=True) + 1e-5).sqrt()
        y = y * next(p) if affine[0] else y
        return y + next(p) if affine[1] else y

    with kernel_path(path):
        out = fn(*_tensors(x, *params))
        assert isinstance(out._ctx, LayerNorm)
        np.testing.assert_allclose(out.numpy(), composite(*_tensors(x, *params)).numpy(),
                                   rtol=1e-10, atol=1e-12)
        gradcheck(fn, [x] + params, rtol=1e-5, atol=1e-8)
        gradgradcheck(fn, [x] + params, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("path", PATHS)
def test_layer_norm_backward_is_one_kernel_function(path):
    x = mg.tensor(np.random.default_rng(2).standard_normal((3, 4, 8)), requires_grad=True)
    w, b = mg.tensor(np.linspace(0.5, 2, 8), requires_grad=True), \
        mg.tensor(np.zeros(8), requires_grad=True)
    with kernel_path(path):
        gx, gw, gb = mg.grad((F.layer_norm(x, 8, w, b) ** 3).sum(), [x, w, b],
                             create_graph=True)
    assert isinstance(gx._ctx, LayerNormBackward) and gx._ctx is gw._ctx is gb._ctx


# --- the attention's masked softmax --------------------------------------------------------
def numpy_masked_softmax(x, mask):
    """exp(x - M) over the unmasked entries of each row, divided by their sum; 0 elsewhere."""
    keep = ~np.broadcast_to(mask, x.shape)
    shifted = np.where(keep, x, -np.inf)
    top = shifted.max(-1, keepdims=True)
    e = np.where(keep, np.exp(x - np.where(np.isfinite(top), top, 0)), 0)
    total = e.sum(-1, keepdims=True)
    return np.divide(e, total, out=np.zeros_like(e), where=total > 0)


@st.composite
def masked_case(draw):
    """x (..., K) and a boolean mask of a shape that broadcasts to x's (size-1 axes drawn)."""
    shape = draw(shapes(min_dims=1, max_dims=3, max_side=5))
    mshape = tuple(draw(st.sampled_from([1, s])) for s in shape)
    mask = draw(arrays(mshape, 0, 1)) > 0.6
    return draw(arrays(shape)), mask


@pytest.mark.parametrize("path", PATHS)
@given(case=masked_case())
def test_masked_softmax_matches_numpy_with_first_and_second_derivatives(path, case):
    x, mask = case
    with kernel_path(path):
        out = F_nn.masked_softmax(mg.tensor(x), mask)
        np.testing.assert_allclose(out.numpy(), numpy_masked_softmax(x, mask), rtol=1e-12,
                                   atol=1e-15)
        gradcheck(lambda t: F_nn.masked_softmax(t, mask), [x], rtol=1e-5, atol=1e-8)
        gradgradcheck(lambda t: F_nn.masked_softmax(t, mask), [x], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("path", PATHS)
def test_masked_entries_and_empty_rows_get_zero_weight_and_zero_gradient(path):
    """Huge logits at masked keys change nothing; a fully masked row is 0 and passes no
    gradient; the unmasked entries equal the softmax of the unmasked logits alone."""
    x = np.array([[1e30, 0.5, -1.0, 2.0], [3.0, 1.0, 1e30, -2.0], [1.0, 2.0, 3.0, 4.0]])
    mask = np.array([[True, False, False, False], [False, False, True, False],
                     [True, True, True, True]])
    t = mg.tensor(x, requires_grad=True)
    with kernel_path(path):
        y = F_nn.masked_softmax(t, mask)
        (y * mg.tensor(np.arange(12.0).reshape(3, 4))).sum().backward()
    assert (y.numpy()[mask] == 0).all() and (t.grad.numpy()[mask] == 0).all()
    for r in range(2):
        np.testing.assert_allclose(y.numpy()[r, ~mask[r]],
                                   F.softmax(mg.tensor(x[r, ~mask[r]])).numpy(), rtol=1e-14)


def test_masked_softmax_errors_name_the_call():
    x = mg.tensor(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="masked_softmax: mask must be a boolean array"):
        F_nn.masked_softmax(x, np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"masked_softmax: mask of shape \(2, 2\) does not "):
        F_nn.masked_softmax(x, np.zeros((2, 2), bool))
