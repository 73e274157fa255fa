"""Function.apply takes one, two or more inputs and gives one or several outputs, each case
on its own code path: every path records the versions of its inputs and outputs, so an
in-place change after the forward pass raises at backward, and a view's output shares its
input's version counter."""
import numpy as np
import pytest

import minigen as mg
import minigen.functional as F
from tests.helpers import leaf


def _changed(t):
    with mg.no_grad():
        t.add_(1.0)


@pytest.mark.parametrize("build, name", [
    (lambda x, c: F.exp(c), "Exp: input 0"),                                  # one input
    (lambda x, c: x * c, "Mul: input 1"),                                      # two inputs
    (lambda x, c: F.linear(x.reshape(1, 3), x.reshape(1, 3), c[:1] * 1.0),
     "Linear: input 2"),                                                       # three inputs
])
def test_each_arity_detects_a_changed_input(build, name):
    x = leaf([1.0, 2.0, 3.0])
    c = x * 1.0                       # a non-leaf, so it can be changed in place
    out = build(x, c)
    changed = out._ctx.inputs[-1]     # the last input, and only it
    _changed(changed)
    fn, which = name.split(": ")
    with pytest.raises(RuntimeError, match=rf"{fn}.backward: {which} .* modified in place"):
        out.sum().backward()


def test_a_multi_output_function_detects_a_changed_output():
    x = leaf([1.0, 2.0, 3.0, 4.0])
    first, second = F.split(x * 1.0, 2)
    loss = (first * second).sum()
    assert first._versions is second._versions    # views of one array share one counter
    _changed(second)
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()


def test_the_paths_give_the_same_gradients_as_the_formulas():
    x = leaf([1.0, 2.0, 3.0])
    w = leaf([[0.5, -1.0, 2.0]])
    b = leaf([0.25])
    with mg.no_grad():
        x.add_(0.0)                   # version 1: each path must record the current version
    loss = (F.exp(x) * x).sum() + F.linear(x.reshape(1, 3), w, b).sum()
    loss = loss + sum(p.sum() for p in F.split(x * x, 3))
    loss.backward()
    xd = x.numpy()
    np.testing.assert_allclose(x.grad.numpy(), np.exp(xd) * (1 + xd) + w.numpy()[0] + 2 * xd)
    np.testing.assert_allclose(w.grad.numpy(), [xd])
    np.testing.assert_allclose(b.grad.numpy(), [1.0])


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64, np.int32, np.bool_])
def test_a_full_reduction_keeps_its_dtype_as_a_0d_array(dtype):
    ones = np.ones(5, dtype=dtype)
    t = mg.tensor(ones)
    for out, expected in ((t.sum(), ones.sum()), (t.max(), ones.max())):
        assert out.shape == () and isinstance(out.data, np.ndarray)
        assert out.dtype == expected.dtype          # NumPy's: int32 sums to int64
        assert out.item() == expected.item()
