"""Shape and indexing ops: reshape, permute/transpose, expand, squeeze/unsqueeze, concatenate,
stack, split, getitem (basic, integer-array with repeats, boolean), pad, cumsum, flip.
Values against NumPy, gradients by central differences, hypothesis-generated shapes."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigen as mg
import minigen.functional as F
from minigen.testing import arrays, gradcheck, gradgradcheck, shapes


def check(op, ref, x):
    """op(tensor) == ref(array) and op's gradient matches central differences."""
    out = op(mg.tensor(x))
    np.testing.assert_array_equal(out.numpy(), ref(x))
    gradcheck(op, [x])


@given(x=arrays(shapes(max_dims=4, max_side=4)), data=st.data())
def test_reshape(x, data):
    target = tuple(data.draw(st.permutations(x.shape)))
    check(lambda t: t.reshape(target), lambda a: a.reshape(target), x)
    check(lambda t: F.reshape(t, -1), lambda a: a.reshape(-1), x)


def test_reshape_error_names_shapes():
    with pytest.raises(ValueError, match=r"reshape: cannot reshape \(2, 3\)"):
        mg.tensor(np.ones((2, 3))).reshape(4, 2)


@given(x=arrays(shapes(min_dims=1, max_dims=4, max_side=4)), data=st.data())
def test_permute_and_transpose(x, data):
    axes = tuple(data.draw(st.permutations(range(x.ndim))))
    check(lambda t: t.permute(axes), lambda a: a.transpose(axes), x)
    i, j = (data.draw(st.integers(-x.ndim, x.ndim - 1)) for _ in range(2))
    check(lambda t: t.transpose(i, j), lambda a: np.swapaxes(a, i, j), x)
    check(lambda t: t.T, lambda a: a.T, x)


@given(x=arrays(shapes(max_dims=3, max_side=3)), data=st.data())
def test_expand(x, data):
    lead = tuple(data.draw(st.lists(st.integers(1, 3), max_size=2)))
    target = lead + tuple(data.draw(st.integers(1, 3)) if s == 1 else s for s in x.shape)
    check(lambda t: t.expand(target), lambda a: np.broadcast_to(a, target), x)
    minus_one = lead + (-1,) * x.ndim
    check(lambda t: t.expand(*minus_one), lambda a: np.broadcast_to(a, lead + x.shape), x)


def test_expand_error():
    with pytest.raises(ValueError, match=r"expand: cannot broadcast \(2, 3\) to \(4, 3\)"):
        mg.tensor(np.ones((2, 3))).expand(4, 3)


@given(x=arrays(shapes(max_dims=4, max_side=3)), data=st.data())
def test_squeeze_unsqueeze(x, data):
    axis = data.draw(st.integers(-x.ndim - 1, x.ndim))
    check(lambda t: t.unsqueeze(axis), lambda a: np.expand_dims(a, axis), x)
    check(lambda t: t.squeeze(), lambda a: np.squeeze(a), x)
    ones = [i for i, s in enumerate(x.shape) if s == 1]
    if ones:
        check(lambda t: t.squeeze(ones[0]), lambda a: np.squeeze(a, ones[0]), x)


def test_squeeze_of_a_non_unit_axis_is_an_error():
    with pytest.raises(ValueError, match="squeeze: axis 0 has size 2"):
        mg.tensor(np.ones((2, 1))).squeeze(0)


@st.composite
def joinable(draw, same_shape=False):
    """2-3 arrays whose shapes agree except (unless same_shape) along ``axis``."""
    shape = list(draw(shapes(min_dims=1, max_dims=3, max_side=4)))
    axis = draw(st.integers(-len(shape), len(shape) - 1))
    xs = []
    for _ in range(draw(st.integers(1, 3))):
        if not same_shape:
            shape[axis] = draw(st.integers(1, 3))
        xs.append(draw(arrays(tuple(shape))))
    return xs, axis


@given(case=joinable())
def test_concatenate(case):
    xs, axis = case
    out = F.concatenate([mg.tensor(x) for x in xs], axis=axis)
    np.testing.assert_array_equal(out.numpy(), np.concatenate(xs, axis=axis))
    gradcheck(lambda *ts: F.cat(list(ts), axis=axis), xs)


@given(case=joinable(same_shape=True), data=st.data())
def test_stack(case, data):
    xs, _ = case
    axis = data.draw(st.integers(-xs[0].ndim - 1, xs[0].ndim))
    out = F.stack([mg.tensor(x) for x in xs], axis=axis)
    np.testing.assert_array_equal(out.numpy(), np.stack(xs, axis=axis))
    gradcheck(lambda *ts: F.stack(list(ts), axis=axis), xs)


def test_join_shape_errors():
    with pytest.raises(ValueError, match="concatenate: shapes"):
        F.concatenate([mg.tensor(np.ones((2, 3))), mg.tensor(np.ones((2, 4)))], axis=0)
    with pytest.raises(ValueError, match="stack: all shapes must match"):
        F.stack([mg.tensor(np.ones(2)), mg.tensor(np.ones(3))])


@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=6)), data=st.data())
def test_split(x, data):
    axis = data.draw(st.integers(0, x.ndim - 1))
    n = x.shape[axis]
    points = sorted(data.draw(st.lists(st.integers(0, n), max_size=3)))
    parts = F.split(mg.tensor(x), points, axis=axis)
    for p, r in zip(parts, np.split(x, points, axis=axis)):
        np.testing.assert_array_equal(p.numpy(), r)
    # weight the parts differently; skipping a part leaves a None gradient for it
    used = data.draw(st.lists(st.booleans(), min_size=len(parts), max_size=len(parts)))
    if not any(used):
        used[0] = True

    def f(t):
        outs = F.split(t, points, axis=axis)
        return sum((o * (k + 1.0)).sum() for k, (o, u) in enumerate(zip(outs, used)) if u)
    gradcheck(f, [x])


def test_split_into_equal_sections():
    x = np.arange(12.0).reshape(6, 2)
    parts = F.split(mg.tensor(x), 3)
    assert [p.shape for p in parts] == [(2, 2)] * 3
    with pytest.raises(ValueError, match="split: axis 0 of size 6 is not divisible into 4"):
        F.split(mg.tensor(x), 4)


# --- indexing ------------------------------------------------------------------------------
@given(x=arrays(shapes(min_dims=1, max_dims=4, max_side=5)), data=st.data())
def test_getitem_basic(x, data):
    index = data.draw(hnp.basic_indices(x.shape, allow_newaxis=True, allow_ellipsis=True))
    check(lambda t: t[index], lambda a: a[index], x)


@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=4)), data=st.data())
def test_getitem_integer_arrays_with_repeats(x, data):
    index = data.draw(hnp.integer_array_indices(
        x.shape, result_shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=6)))
    check(lambda t: t[index], lambda a: a[index], x)


def test_getitem_repeated_indices_accumulate():
    x = mg.tensor(np.arange(4.0), requires_grad=True)
    x[np.array([0, 2, 2, 2, 3, 0])].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [2.0, 0.0, 3.0, 1.0])


@given(x=arrays(shapes(min_dims=2, max_dims=3, max_side=4)), data=st.data())
def test_getitem_mixed_and_boolean(x, data):
    rows = data.draw(hnp.arrays(np.int64, st.integers(1, 5),
                                elements=st.integers(-x.shape[1], x.shape[1] - 1)))
    check(lambda t: t[:, rows], lambda a: a[:, rows], x)
    mask = data.draw(hnp.arrays(bool, x.shape))
    check(lambda t: t[mask], lambda a: a[mask], x)
    index_tensor = mg.tensor(rows)
    np.testing.assert_array_equal(mg.tensor(x)[:, index_tensor].numpy(), x[:, rows])


def test_getitem_second_derivative_with_repeats():
    x = np.random.default_rng(0).standard_normal((4, 3))
    idx = np.array([1, 1, 3, 0, 1])
    gradgradcheck(lambda t: t[idx] ** 2, [x])


def test_getitem_out_of_range_names_op_and_shape():
    with pytest.raises(IndexError, match=r"getitem: .*\(tensor shape \(3,\)\)"):
        mg.tensor(np.ones(3))[5]


@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=4)), data=st.data(),
       value=st.floats(-2, 2))
def test_pad(x, data, value):
    width = tuple((data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
                  for _ in range(x.ndim))
    check(lambda t: F.pad(t, width, value), lambda a: np.pad(a, width, constant_values=value), x)
    check(lambda t: F.pad(t, 1), lambda a: np.pad(a, 1), x)


def test_pad_rejects_negative_width():
    with pytest.raises(ValueError, match="pad: pad_width"):
        F.pad(mg.tensor(np.ones((2, 2))), ((0, -1), (0, 0)))


@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=5)), data=st.data())
def test_cumsum_and_flip(x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    out = F.cumsum(mg.tensor(x), axis)
    np.testing.assert_allclose(out.numpy(), np.cumsum(x, axis), rtol=1e-12, atol=1e-14)
    gradcheck(lambda t: F.cumsum(t, axis), [x])
    check(lambda t: F.flip(t, axis), lambda a: np.flip(a, axis), x)


def test_cumsum_second_derivative():
    gradgradcheck(lambda t: F.cumsum(t, 0) ** 2, [np.linspace(-1, 1, 5)])


@given(big=shapes(max_dims=3, max_side=3), data=st.data())
def test_sum_to_undoes_broadcasting(big, data):
    keep = data.draw(st.integers(0, len(big)))
    small = tuple(1 if data.draw(st.booleans()) else s for s in big[len(big) - keep:])
    g = data.draw(arrays(big))
    out = F.sum_to(mg.tensor(g), small)
    assert out.shape == small
    expected = g.sum(axis=tuple(range(len(big) - keep)))
    for i, s in enumerate(small):
        if s == 1:
            expected = expected.sum(axis=i, keepdims=True)
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-12, atol=1e-14)
    gradcheck(lambda t: F.sum_to(t, small), [g])
