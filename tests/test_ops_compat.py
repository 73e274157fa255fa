"""The engine against what NumPy and PyTorch users expect (issue 18, engine parts of issue 13):
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


# --- sort ---------------------------------------------------------------------------------
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
