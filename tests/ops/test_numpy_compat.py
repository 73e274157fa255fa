"""The engine against what NumPy and PyTorch users expect:
sort, the pow gradient at 0, where with scalars, 0-d tensors, degenerate reductions,
elementwise ==, dtype promotion, tie splitting in maximum/minimum, AxisError, and the ops
std, prod, erf, gelu. Values against NumPy (and PyTorch where installed), gradients by central
differences on hypothesis shapes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigen as mg
import minigen.functional as F
from minigen.testing import arrays, gradcheck, gradgradcheck, shapes


# --- sort ----------------------------------------------------------------------------------
def distinct_arrays(shape):
    """Arrays whose entries differ by at least 1/8, so central differences never cross a tie
    (where sort is not differentiable)."""
    return hnp.arrays(np.float64, shape, unique=True,
                      elements=st.integers(-80, 80).map(lambda k: k / 8))


@given(x=distinct_arrays(shapes(min_dims=1, max_dims=3, max_side=5)), data=st.data())
def test_sort_values_and_gradients(x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    descending = data.draw(st.booleans())
    want = np.sort(x, axis=axis)
    if descending:
        want = np.flip(want, axis=axis)
    np.testing.assert_array_equal(F.sort(mg.tensor(x), axis, descending).numpy(), want)
    gradcheck(lambda t: F.sort(t, axis=axis, descending=descending), [x])
    gradgradcheck(lambda t: F.sort(t * t * t, axis=axis, descending=descending), [x])


def test_sort_gradient_goes_back_through_the_permutation():
    x = mg.tensor([3.0, 1.0, 2.0], requires_grad=True)
    (F.sort(x) * mg.tensor([1.0, 10.0, 100.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [100.0, 1.0, 10.0])
    x.grad = None
    (F.sort(x, descending=True) * mg.tensor([1.0, 10.0, 100.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 100.0, 10.0])


def test_sort_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).standard_normal((4, 7))
    w = np.random.default_rng(1).standard_normal((4, 7))
    for axis in (0, 1):
        for descending in (False, True):
            t = mg.tensor(x, requires_grad=True)
            (F.sort(t, axis, descending) * mg.tensor(w)).sum().backward()
            tt = torch.tensor(x, requires_grad=True)
            (torch.sort(tt, axis, descending).values * torch.tensor(w)).sum().backward()
            np.testing.assert_allclose(t.grad.numpy(), tt.grad.numpy())


def test_sort_axis_error_names_the_op():
    with pytest.raises(IndexError, match="sort: axis 2"):
        F.sort(mg.tensor(np.ones((2, 3))), axis=2)


# --- the gradient of ** where the base is 0 ------------------------------------------------
def test_pow_gradient_is_zero_where_pytorch_says_so():
    x = mg.tensor([0.0, 1.0], requires_grad=True)
    np.testing.assert_array_equal(mg.grad((x ** 0.0).sum(), x).numpy(), [0.0, 0.0])
    y = mg.tensor([1.0, 2.0], requires_grad=True)
    np.testing.assert_array_equal(mg.grad((0 ** y).sum(), y).numpy(), [0.0, 0.0])
    a = mg.tensor([0.0], requires_grad=True)
    b = mg.tensor([0.0], requires_grad=True)
    ga, gb = mg.grad((a ** b).sum(), [a, b])
    assert ga.item() == 0.0 and gb.item() == 0.0


def test_pow_gradient_at_zero_matches_torch():
    torch = pytest.importorskip("torch")
    a = np.array([0.0, 0.0, 0.0, 1.5, 2.0, 0.0])
    b = np.array([0.0, 1.0, 2.0, 0.0, -1.0, 3.0])
    x, y = mg.tensor(a, requires_grad=True), mg.tensor(b, requires_grad=True)
    ours = mg.grad((x ** y).sum(), [x, y])
    xt, yt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    theirs = torch.autograd.grad((xt ** yt).sum(), [xt, yt])
    for o, t in zip(ours, theirs):
        np.testing.assert_allclose(o.numpy(), t.numpy())


def test_pow_second_derivatives_at_zero_are_finite_and_exact():
    gradgradcheck(lambda t: t ** 2.0, [np.array([0.0, 0.5, -1.0])])
    gradgradcheck(lambda e: mg.tensor([0.0, 0.5, 2.0], dtype=np.float64) ** e,
                  [np.array([0.5, 1.5, 2.0])])
    x = mg.tensor([0.0, 2.0], dtype=np.float64, requires_grad=True)
    g, = mg.grad((x ** 0.0).sum(), [x], create_graph=True)
    np.testing.assert_array_equal(mg.grad(g.sum(), x).numpy(), [0.0, 0.0])


@given(shapes_=st.sampled_from([((3,), (3,)), ((2, 3), (3,)), ((2, 1), (1, 3))]),
       data=st.data())
def test_pow_gradchecks_on_positive_bases(shapes_, data):
    a = data.draw(arrays(shapes_[0], low=0.5, high=2.0))
    b = data.draw(arrays(shapes_[1], low=-1.5, high=1.5))
    gradcheck(lambda x, y: x ** y, [a, b])
    gradgradcheck(lambda x, y: x ** y, [a, b])


# --- where with two Python scalars; mismatched shapes --------------------------------------
def test_where_with_two_scalars():
    out = F.where(np.array([True, False]), 4, 2)
    np.testing.assert_array_equal(out.numpy(), [4, 2])
    assert out.dtype == np.int64  # as torch.where(cond, 4, 2)
    assert F.where(mg.tensor([True, False]), 1.5, 2).dtype == mg.get_default_dtype()


def test_where_names_mismatched_shapes():
    with pytest.raises(ValueError, match=r"where: cannot broadcast cond \(3,\), a \(2,\)"):
        F.where(np.array([True, False, True]), mg.tensor([1.0, 2.0]), 0.0)


# --- 0-d tensors ---------------------------------------------------------------------------
def test_zero_dim_tensors_in_flatten_softmax_log_softmax():
    x = mg.tensor(1.5, requires_grad=True)
    np.testing.assert_array_equal(F.flatten(x).numpy(), [1.5])
    assert F.softmax(x).item() == 1.0 and F.softmax(x).shape == ()
    assert F.log_softmax(x).item() == 0.0 and F.log_softmax(x, axis=0).shape == ()
    gradcheck(lambda t: F.flatten(t) * 3.0, [np.array(0.7)])
    with pytest.raises(IndexError, match="softmax: axis 1"):
        F.softmax(x, axis=1)


def test_softmax_axis_is_validated_not_wrapped():
    x = mg.tensor(np.ones((2, 3)))
    with pytest.raises(np.exceptions.AxisError if hasattr(np, "exceptions") else np.AxisError,
                       match="log_softmax: axis 7"):
        F.log_softmax(x, axis=7)


# --- degenerate reductions follow NumPy ----------------------------------------------------
def test_degenerate_reductions_follow_numpy():
    row = np.arange(1.0, 6.0).reshape(1, 5)
    x = mg.tensor(row)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_array_equal(F.var(x, axis=0, ddof=1).numpy(), np.var(row, 0, ddof=1))
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        np.testing.assert_array_equal(F.var(x, axis=1, ddof=5).numpy(), np.var(row, 1, ddof=5))
    assert F.var(x, axis=1, ddof=5).item() == np.inf
    empty = mg.tensor(np.zeros((0, 3)))
    with np.errstate(all="ignore"):
        assert np.isnan(F.mean(empty, axis=0).numpy()).all()
        assert np.isnan(F.mean(empty).item())
        assert np.isnan(F.std(empty).item())
    assert F.prod(empty).item() == 1.0
    assert F.logsumexp(empty, axis=0).numpy().tolist() == [-np.inf] * 3


def test_losses_on_an_empty_batch_are_nan():
    with np.errstate(all="ignore"):
        assert np.isnan(F.mse_loss(mg.zeros(0, 2), mg.zeros(0, 2)).item())
        logits, targets = mg.zeros(0, 4), np.zeros(0, dtype=np.int64)
        assert np.isnan(F.cross_entropy(logits, targets).item())


@pytest.mark.parametrize("op", ["max", "min"])
def test_max_of_nothing_raises_naming_the_op(op):
    with pytest.raises(ValueError, match=f"{op}: cannot reduce over an empty axis"):
        getattr(F, op)(mg.tensor(np.zeros((0, 3))), axis=0)
    assert getattr(F, op)(mg.tensor(np.zeros((0, 3))), axis=1).shape == (0,)


# --- elementwise == and != -----------------------------------------------------------------
def test_eq_and_ne_are_elementwise_and_tensors_stay_hashable():
    a, b = mg.tensor([1.0, 2.0, 3.0]), mg.tensor([1.0, 0.0, 3.0])
    np.testing.assert_array_equal((a == b).numpy(), [True, False, True])
    np.testing.assert_array_equal((a != b).numpy(), [False, True, False])
    np.testing.assert_array_equal((2.0 == a).numpy(), [False, True, False])
    np.testing.assert_array_equal(F.where(a == b, a, -a).numpy(), [1.0, -2.0, 3.0])
    assert len({a, b, a}) == 2 and {a: 1}[a] == 1
    with pytest.raises(RuntimeError, match="ambiguous"):
        bool(a == b)
    assert bool(mg.tensor(2.0) == 2.0)


# --- type promotion ------------------------------------------------------------------------
F32, F64, I32, I64 = np.float32, np.float64, np.int32, np.int64


@pytest.mark.parametrize("make, dtype", [
    (lambda: mg.tensor([1, 2]) / mg.tensor([2, 2]), F32),
    (lambda: mg.tensor([1, 2]) * 0.5, F32),
    (lambda: mg.tensor([1, 2]) * 2, I64),
    (lambda: mg.tensor([1.0], dtype=F32) * mg.tensor([2], dtype=I32), F32),
    (lambda: mg.tensor([1.0], dtype=F32) + mg.tensor([2], dtype=I64), F32),
    (lambda: mg.tensor([1.0], dtype=F32) * 2.5, F32),
    (lambda: mg.tensor([1.0], dtype=F32) + np.float64(2.5), F32),
    (lambda: mg.tensor([1.0], dtype=F32) + mg.tensor([1.0], dtype=F64), F64),
    (lambda: mg.tensor([1.0], dtype=F64) * 2, F64),
    (lambda: mg.tensor([True]) + 1, I64),
    (lambda: F.exp(mg.tensor([1, 2])), F32),
    (lambda: F.cos(mg.tensor([1, 2])), F32),
    (lambda: F.softmax(mg.tensor([1, 2])), F32),
    (lambda: mg.tensor([2]) ** 0.5, F32),
    (lambda: mg.tensor([1, 2]).mean(), F32),
    (lambda: mg.arange(0.5, 2.5), F32),
    (lambda: mg.arange(3), I64),
    (lambda: mg.full((2,), 4), I64),
    (lambda: mg.full((2,), 4.0), F32),
    (lambda: mg.full((2,), True), np.bool_),
    (lambda: F.maximum(mg.tensor([1]), 0.5), F32),
    (lambda: F.where(np.array([True]), mg.tensor([1], dtype=I32), 0.5), F32),
    (lambda: mg.tensor(np.ones((1, 2), dtype=F32)) @ mg.tensor(np.ones((2, 1), dtype=I64)), F32),
])
def test_promotion_table(make, dtype):
    assert make().dtype == dtype


def test_promotion_table_matches_torch():
    torch = pytest.importorskip("torch")
    cases = [(np.array([1, 2]), np.array([2, 2]), "div"), (np.array([1, 2]), 0.5, "mul"),
             (np.array([1.0], dtype=F32), np.array([2], dtype=I32), "mul"),
             (np.array([1.0], dtype=F32), np.array([2.0]), "add"), (np.array([3]), 2, "mul")]
    for a, b, op in cases:
        ours = getattr(F, op)(mg.tensor(a), mg.tensor(b) if isinstance(b, np.ndarray) else b)
        tb = torch.tensor(b) if isinstance(b, np.ndarray) else b
        theirs = getattr(torch, op)(torch.tensor(a), tb)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")


def test_float32_model_stays_float32_end_to_end():
    layer = mg.nn.Linear(3, 2, rng=0)
    x = mg.tensor(np.arange(6).reshape(2, 3))  # int64 input, as from a token or count array
    out = F.gelu(layer(x * 0.5) / 3 + 1) ** 2
    loss = (out - mg.arange(2)).abs().mean() + F.softmax(out).std()
    assert out.dtype == loss.dtype == np.float32
    loss.backward()
    assert layer.weight.grad.dtype == np.float32


# --- ties in maximum / minimum split the gradient ------------------------------------------
def test_maximum_minimum_split_ties_like_torch():
    a = mg.tensor([1.0, 2.0, 3.0], requires_grad=True)
    b = mg.tensor([1.0, 5.0, 0.0], requires_grad=True)
    ga, gb = mg.grad(F.maximum(a, b).sum(), [a, b])
    np.testing.assert_array_equal(ga.numpy(), [0.5, 0.0, 1.0])
    np.testing.assert_array_equal(gb.numpy(), [0.5, 1.0, 0.0])
    ga, gb = mg.grad(F.minimum(a, b).sum(), [a, b])
    np.testing.assert_array_equal(ga.numpy(), [0.5, 1.0, 0.0])
    np.testing.assert_array_equal(gb.numpy(), [0.5, 0.0, 1.0])
    x = mg.tensor([0.0, 1.0], requires_grad=True)
    np.testing.assert_array_equal(mg.grad(F.maximum(x, 0).sum(), x).numpy(), [0.5, 1.0])
    np.testing.assert_array_equal(mg.grad(F.relu(x).sum(), x).numpy(), [0.0, 1.0])


def test_maximum_keeps_nan_and_inf():
    out = F.maximum(mg.tensor([np.nan, 1.0, -np.inf]), mg.tensor([0.0, np.inf, -np.inf]))
    np.testing.assert_array_equal(out.numpy(), [np.nan, np.inf, -np.inf])


def test_maximum_minimum_match_torch_with_ties():
    torch = pytest.importorskip("torch")
    a = np.array([[1.0, 2.0, 0.0], [3.0, 3.0, -1.0]])
    b = np.array([1.0, 2.5, 0.0])
    for name in ("maximum", "minimum"):
        x, y = mg.tensor(a, requires_grad=True), mg.tensor(b, requires_grad=True)
        ours = mg.grad((getattr(F, name)(x, y) ** 2).sum(), [x, y])
        xt, yt = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        theirs = torch.autograd.grad((getattr(torch, name)(xt, yt) ** 2).sum(), [xt, yt])
        for o, t in zip(ours, theirs):
            np.testing.assert_allclose(o.numpy(), t.numpy())


@given(shapes_=st.sampled_from([((3,), (3,)), ((2, 3), (3,)), ((2, 1), (1, 3))]),
       data=st.data())
def test_maximum_minimum_gradchecks(shapes_, data):
    a = data.draw(distinct_arrays(shapes_[0]))
    b = data.draw(distinct_arrays(shapes_[1])) + 1 / 16  # never tied with a
    for op in (F.maximum, F.minimum):
        gradcheck(lambda x, y: op(x, y) * x, [a, b])
        gradgradcheck(lambda x, y: op(x, y) * x, [a, b])


# --- AxisError is a ValueError and an IndexError -------------------------------------------
@pytest.mark.parametrize("call", [
    lambda x: F.sum(x, axis=2), lambda x: F.mean(x, axis=-3), lambda x: F.var(x, axis=5),
    lambda x: F.std(x, axis=2), lambda x: F.prod(x, axis=2), lambda x: F.max(x, axis=2),
    lambda x: F.logsumexp(x, axis=2), lambda x: F.softmax(x, axis=2),
    lambda x: F.log_softmax(x, axis=-3), lambda x: F.transpose(x, 0, 2),
    lambda x: F.squeeze(x, 2), lambda x: F.unsqueeze(x, 4), lambda x: F.flatten(x, 0, 3),
    lambda x: F.cat([x, x], axis=2), lambda x: F.stack([x, x], axis=4),
    lambda x: F.split(x, 1, axis=2), lambda x: F.cumsum(x, axis=2), lambda x: F.flip(x, 2),
    lambda x: F.permute(x, (0, 2)), lambda x: F.sort(x, axis=2), lambda x: x.argmax(2),
])
def test_axis_errors_are_axis_errors_naming_the_op(call):
    x = mg.tensor(np.ones((2, 3)))
    with pytest.raises(ValueError) as err:
        call(x)
    assert isinstance(err.value, IndexError)
    assert err.type.__name__ == "AxisError" and ": axis" in str(err.value)


# --- std, prod, erf, gelu ------------------------------------------------------------------
@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=4)), data=st.data())
def test_std_values_and_gradients(x, data):
    axis = data.draw(st.sampled_from([None] + list(range(-x.ndim, x.ndim))))
    ddof = data.draw(st.integers(0, 1))
    keepdims = data.draw(st.booleans())
    with np.errstate(all="ignore"):
        want = np.std(x, axis=axis, ddof=ddof, keepdims=keepdims)
    got = F.std(mg.tensor(x), axis=axis, ddof=ddof, keepdims=keepdims).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    spread = x + np.arange(x.size).reshape(x.shape)  # no constant slice: std > 0
    n = spread.size if axis is None else spread.shape[axis]
    if n >= 2 and n - ddof > 0:  # std > 0 (at std = 0 the gradient is 0/0, as in torch)
        gradcheck(lambda t: F.std(t, axis=axis, ddof=ddof, keepdims=keepdims), [spread])
        gradgradcheck(lambda t: F.std(t, axis=axis, ddof=ddof, keepdims=keepdims), [spread])


@given(x=hnp.arrays(np.float64, shapes(max_dims=3, max_side=4),
                   elements=st.integers(-12, 12).map(lambda k: k / 8)), data=st.data())
def test_prod_values_and_gradients(x, data):
    """Multiples of 1/8 (zeros included): out / a, the path without zeros, loses accuracy
    when a factor is near underflow (1e-276), as PyTorch's does."""
    axes = data.draw(st.sampled_from([None] + list(range(x.ndim)) +
                                     ([(0, x.ndim - 1)] if x.ndim > 1 else [])))
    keepdims = data.draw(st.booleans())
    np.testing.assert_allclose(F.prod(mg.tensor(x), axis=axes, keepdims=keepdims).numpy(),
                               np.prod(x, axis=axes, keepdims=keepdims), rtol=1e-12)
    gradcheck(lambda t: F.prod(t, axis=axes, keepdims=keepdims), [x])
    gradgradcheck(lambda t: F.prod(t, axis=axes, keepdims=keepdims), [x])


def test_prod_gradient_with_zeros_is_exact():
    x = np.array([[2.0, 0.0, 3.0, 0.5], [0.0, 0.0, 4.0, 1.0], [1.0, 2.0, 3.0, 4.0]])
    t = mg.tensor(x, requires_grad=True)
    g = mg.grad(F.prod(t, axis=1).sum(), t).numpy()
    want = [[0.0, 3.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [24.0, 12.0, 8.0, 6.0]]
    np.testing.assert_array_equal(g, want)
    gradcheck(lambda u: F.prod(u, axis=1), [x])
    gradgradcheck(lambda u: F.prod(u, axis=1), [x])


def test_erf_matches_math_erf():
    import math
    x = np.linspace(-4, 4, 41)
    np.testing.assert_allclose(F.erf(mg.tensor(x)).numpy(), [math.erf(v) for v in x],
                               rtol=1e-15, atol=1e-16)
    assert F.erf(mg.tensor(x, dtype=np.float32)).dtype == np.float32


def test_erf_without_scipy_gives_the_same_values(monkeypatch):
    import sys
    x = np.linspace(-3, 3, 13)
    with_scipy = F.erf(mg.tensor(x)).numpy()
    monkeypatch.setitem(sys.modules, "scipy.special", None)  # import fails
    np.testing.assert_allclose(F.erf(mg.tensor(x)).numpy(), with_scipy, rtol=3e-16, atol=0)


@given(x=arrays(shapes(max_dims=2, max_side=4), low=-3.0, high=3.0))
def test_erf_and_gelu_gradients(x):
    gradcheck(F.erf, [x])
    gradgradcheck(F.erf, [x])
    for approximate in ("none", "tanh"):
        gradcheck(lambda t: F.gelu(t, approximate=approximate), [x])
        gradgradcheck(lambda t: F.gelu(t, approximate=approximate), [x])


def test_gelu_forms_match_torch():
    torch = pytest.importorskip("torch")
    x = np.linspace(-5, 5, 101)
    for approximate in ("none", "tanh"):
        t = mg.tensor(x, requires_grad=True)
        tt = torch.tensor(x, requires_grad=True)
        y = F.gelu(t, approximate=approximate)
        yt = torch.nn.functional.gelu(tt, approximate=approximate)
        np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(mg.grad(y.sum(), t).numpy(),
                                   torch.autograd.grad(yt.sum(), tt)[0].numpy(), rtol=1e-12,
                                   atol=1e-14)
    close = dict(rtol=1e-12, atol=1e-14)  # 1 + erf(x/sqrt 2) cancels for x << 0
    np.testing.assert_allclose(F.gelu(mg.tensor(x)).numpy(),
                               torch.nn.functional.gelu(torch.tensor(x)).numpy(), **close)
    np.testing.assert_allclose(mg.nn.GELU()(mg.tensor(x)).numpy(),
                               torch.nn.GELU()(torch.tensor(x)).numpy(), **close)
    np.testing.assert_allclose(mg.nn.GELU(approximate="tanh")(mg.tensor(x)).numpy(),
                               torch.nn.GELU(approximate="tanh")(torch.tensor(x)).numpy(),
                               **close)


def test_gelu_rejects_unknown_forms():
    with pytest.raises(ValueError, match="gelu: approximate must be one of 'none', 'tanh', got 'exact'"):
        F.gelu(mg.tensor([1.0]), approximate="exact")
