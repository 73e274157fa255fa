"""minigen.testing checks itself: gradcheck and gradgradcheck must catch wrong first and
second derivatives (elementwise and along random directions), and the hypothesis strategies
must produce what they promise."""
import numpy as np
import pytest
from hypothesis import given

import minigen as mg
from minigen.testing import arrays, broadcastable_shapes, gradcheck, gradgradcheck, shapes


class WrongSquare(mg.Function):
    """x^2 with a backward that is off by 1% (2.02 x instead of 2 x)."""

    def forward(self, a):
        return a * a

    def backward(self, g):
        return g * self.inputs[0] * 2.02


class ConstantSlopeSquare(mg.Function):
    """x^2 with a correct first derivative that hides x from the graph (2 x taken as a
    constant), so every second derivative through it is wrong."""

    def forward(self, a):
        return a * a

    def backward(self, g):
        return g * mg.Tensor(2 * self.inputs[0].data)


@pytest.mark.parametrize("size", [5, 300])   # elementwise and random-direction paths
def test_gradcheck_catches_a_wrong_gradient(size):
    x = np.linspace(-1, 2, size)
    assert gradcheck(lambda t: t * t, [x])
    with pytest.raises(AssertionError, match=r"gradcheck: input 0 \(shape"):
        gradcheck(WrongSquare.apply, [x])


def test_gradcheck_names_the_wrong_input():
    x, y = np.linspace(0.5, 1, 4), np.linspace(-1, 1, 4)
    with pytest.raises(AssertionError, match="input 1"):
        gradcheck(lambda a, b: a * WrongSquare.apply(b), [x, y])


def test_gradcheck_of_an_output_that_ignores_an_input():
    x, y = np.ones(3), np.ones(3)
    assert gradcheck(lambda a, b: a * 2, [x, y])


def test_gradgradcheck_catches_a_wrong_second_derivative():
    x = np.linspace(-1, 2, 6)
    assert gradcheck(ConstantSlopeSquare.apply, [x])
    assert gradgradcheck(lambda t: t * t * t, [x])
    with pytest.raises(AssertionError, match="gradcheck"):
        gradgradcheck(lambda t: ConstantSlopeSquare.apply(t) * t, [x])


@given(shape=shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
def test_shapes_respect_bounds(shape):
    assert 1 <= len(shape) <= 3 and all(2 <= s <= 4 for s in shape)


@given(pair=broadcastable_shapes(2, max_dims=3, max_side=4))
def test_broadcastable_shapes_broadcast(pair):
    a, b = pair
    assert len(a) <= 3 and len(b) <= 3
    np.broadcast_shapes(a, b)


@given(x=arrays(shapes(max_dims=3), low=-0.5, high=1.5))
def test_arrays_are_finite_float64_within_bounds(x):
    assert x.dtype == np.float64 and np.isfinite(x).all()
    assert x.size == 0 or (x.min() >= -0.5 and x.max() <= 1.5)
