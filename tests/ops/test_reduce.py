"""Reductions (sum, mean, var, max, min, logsumexp) over hypothesis-generated axes with and
without keepdims: values against NumPy/SciPy, gradients by central differences."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
import minigen.functional as F
from minigen.testing import arrays, gradcheck, gradgradcheck, shapes


@st.composite
def axis_args(draw, shape):
    """None, one axis (possibly negative) or a tuple of distinct axes."""
    ndim = len(shape)
    if ndim == 0:
        return None
    kind = draw(st.sampled_from(["none", "int", "tuple"]))
    if kind == "none":
        return None
    if kind == "int":
        return draw(st.integers(-ndim, ndim - 1))
    return tuple(draw(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim,
                               unique=True)))


@st.composite
def reduction_case(draw, distinct=False):
    shape = draw(shapes(max_dims=4, max_side=4))
    if distinct:   # no ties: a permutation of evenly spaced values
        seed = draw(st.integers(0, 2 ** 16))
        x = np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.1
    else:
        x = draw(arrays(shape))
    return x, draw(axis_args(shape)), draw(st.booleans())


@pytest.mark.parametrize("name", ["sum", "mean", "var"])
@given(case=reduction_case())
def test_sum_mean_var(name, case):
    x, axis, keepdims = case
    op = getattr(F, name)
    out = op(mg.tensor(x), axis=axis, keepdims=keepdims)
    expected = getattr(np, name)(x, axis=axis, keepdims=keepdims)
    assert out.shape == np.shape(expected)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-14)
    gradcheck(lambda t: op(t, axis=axis, keepdims=keepdims), [x])


@pytest.mark.parametrize("name", ["max", "min"])
@given(case=reduction_case(distinct=True))
def test_max_min(name, case):
    x, axis, keepdims = case
    out = getattr(F, name)(mg.tensor(x), axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.numpy(), getattr(np, name)(x, axis=axis, keepdims=keepdims))
    gradcheck(lambda t: getattr(F, name)(t, axis=axis, keepdims=keepdims), [x])


def test_max_shares_the_gradient_among_ties():
    x = mg.tensor([1.0, 3.0, 3.0, 2.0], dtype=np.float64, requires_grad=True)
    x.max().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.5, 0.5, 0.0])


@given(case=reduction_case())
def test_logsumexp(case):
    special = pytest.importorskip("scipy.special")
    x, axis, keepdims = case
    out = F.logsumexp(mg.tensor(x), axis=axis, keepdims=keepdims)
    np.testing.assert_allclose(out.numpy(), special.logsumexp(x, axis=axis, keepdims=keepdims),
                               rtol=1e-12)
    gradcheck(lambda t: F.logsumexp(t, axis=axis, keepdims=keepdims), [x])


def test_logsumexp_is_stable_for_large_inputs():
    x = mg.tensor([1000.0, 1000.0], dtype=np.float64)
    assert F.logsumexp(x).item() == pytest.approx(1000.0 + np.log(2.0))


@pytest.mark.parametrize("name", ["var", "logsumexp", "mean"])
def test_reduction_second_derivative(name):
    x = np.random.default_rng(1).standard_normal((3, 4))
    gradgradcheck(lambda t: getattr(F, name)(t, axis=1, keepdims=True) ** 2, [x])


def test_var_ddof():
    x = np.random.default_rng(2).standard_normal((5, 3))
    np.testing.assert_allclose(F.var(mg.tensor(x), axis=0, ddof=1).numpy(),
                               np.var(x, axis=0, ddof=1))
    gradcheck(lambda t: F.var(t, axis=0, ddof=1), [x])


@pytest.mark.parametrize("name", ["sum", "mean", "var", "max", "min", "logsumexp"])
def test_axis_out_of_range_names_the_op(name):
    with pytest.raises(ValueError, match=f"{name}: axis 2 is out of range"):
        getattr(F, name)(mg.tensor(np.ones((2, 3))), axis=2)
