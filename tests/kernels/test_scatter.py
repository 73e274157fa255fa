"""kernels.scatter.index_add_rows: the Numba kernel against NumPy's add.at, and the engine's
integer-array indexing, whose gradient runs it."""
import importlib.util

import numpy as np
import pytest

import minigen as mg
from minigen.kernels import scatter

needs_numba = pytest.mark.skipif(importlib.util.find_spec("numba") is None,
                                 reason="needs numba (the fast extra)")


def _case(rng, V, n, D, dtype, poison=False):
    out = rng.standard_normal((V, D)).astype(dtype)
    index = rng.integers(0, V, n)
    if n > 2:
        index[:3] = index[0]                       # a row hit three times
    values = rng.standard_normal((n, D)).astype(dtype)
    if poison and values.size >= 3:
        values.flat[[0, values.size // 2, values.size - 1]] = [np.nan, np.inf, -np.inf]
    return out, index, values


@needs_numba
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("V, n, D", [(7, 40, 5), (65, 4096, 128), (3, 1, 1), (5, 0, 4),
                                     (5, 6, 0), (1, 300, 130)])
@pytest.mark.parametrize("poison", [False, True])
def test_numba_equals_add_at_bit_for_bit(V, n, D, dtype, poison):
    """Each entry sees the reference's adds in the reference's order (tasks own columns, each
    walks the rows in index order), so the result is identical, NaN and inf included, on the
    serial twin (small) and the prange kernel (4096 x 128 is above PARALLEL_MIN)."""
    out, index, values = _case(np.random.default_rng(V * n + D), V, n, D, dtype, poison)
    expected = out.copy()
    np.add.at(expected, index, values)
    got = out.copy()
    with np.errstate(invalid="ignore"):
        scatter.index_add_rows(got, index, values, impl="numba")
    np.testing.assert_array_equal(got, expected)


@needs_numba
def test_strided_operands_and_unsigned_index():
    rng = np.random.default_rng(1)
    out = np.zeros((6, 10))
    values = rng.standard_normal((8, 20))[:, ::2]
    index = rng.integers(0, 6, 8).astype(np.uint16)
    expected = np.zeros((6, 10))
    np.add.at(expected, index, values)
    view = out[:, :]
    scatter.index_add_rows(view, index, values, impl="numba")
    np.testing.assert_array_equal(out, expected)


@pytest.mark.parametrize("impl", ["reference", pytest.param("numba", marks=needs_numba)])
def test_bad_arguments_raise_clear_errors(impl):
    out, index, values = np.zeros((4, 3)), np.array([0, 3]), np.ones((2, 3))
    with pytest.raises(IndexError, match=r"index must lie in \[0, 4\), got \[0, 4\]"):
        scatter.index_add_rows(out, np.array([0, 4]), values, impl=impl)
    with pytest.raises(IndexError, match=r"got \[-1, 3\]"):
        scatter.index_add_rows(out, np.array([-1, 3]), values, impl=impl)
    with pytest.raises(TypeError, match="index must hold integers"):
        scatter.index_add_rows(out, np.array([0.0, 1.0]), values, impl=impl)
    with pytest.raises(ValueError, match=r"expected out \(V, D\), index \(n,\) and values"):
        scatter.index_add_rows(out, index, np.ones((3, 3)), impl=impl)
    with pytest.raises(TypeError, match="one dtype"):
        scatter.index_add_rows(out, index, values.astype(np.float32), impl=impl)
    assert not out.any()                           # nothing written before a refusal


@pytest.mark.parametrize("index", [
    np.array([[0, 2, 2], [5, 0, 2]]),               # an embedding of a (2, 3) batch
    np.array([-1, -6, 3, -1]),                      # negative rows count from the end
    (np.array([4, 4, 1]), Ellipsis),
    (np.array([0, 0, 2]), np.array([1, 1, 3]))])     # entries, not rows: NumPy's add.at
def test_gather_gradient_accumulates_repeated_rows(index):
    rng = np.random.default_rng(2)
    w = mg.tensor(rng.standard_normal((6, 4)).astype(np.float32), requires_grad=True)
    y = w[index]
    g = rng.standard_normal(y.shape).astype(np.float32)
    (y * mg.tensor(g)).sum().backward()
    expected = np.zeros((6, 4), np.float32)
    np.add.at(expected, index, g)
    np.testing.assert_array_equal(w.grad.numpy(), expected)


def test_embedding_gradient_is_twice_differentiable():
    """The gather's gradient (a scatter) has its own backward, a gather of the cotangent."""
    from minigen import functional as F
    from minigen.testing import gradgradcheck
    idx = np.array([[1, 1, 0], [2, 1, 1]])
    w = np.random.default_rng(3).standard_normal((3, 2))
    gradgradcheck(lambda t: (F.embedding(idx, t) ** 2).sum(axis=(0, 1)), [w])
