"""The engine's answers to bad input and faults: in-place changes of tensors in a
graph, gradient dtypes, integer tensors that ask for gradients, rejected inputs, random
generators of the wrong type, and the layers' degenerate cases. Every failure is loud and
names its cause."""
import numpy as np
import pytest

import minigen as mg
import minigen.functional as F
from minigen import backend, nn
from tests.helpers import leaf


# --- in-place changes of tensors that are part of a graph ----------------------------------
@pytest.mark.parametrize("change", [
    lambda y: y.mul_(3), lambda y: y.add_(1.0), lambda y: y.copy_(np.zeros(3)),
    lambda y: y.__setitem__(0, 5.0), lambda y: y.fill_(0.0), lambda y: y.zero_(),
])
def test_in_place_change_of_a_non_leaf_raises_naming_its_producer(change):
    x = leaf([1.0, 2.0, 3.0])
    y = x * 2
    with pytest.raises(RuntimeError, match=r"in-place change of a tensor \(shape \(3,\)\) "
                                           r"made by Mul, which is part of a graph"):
        change(y)


def test_in_place_changes_that_would_corrupt_a_gradient_raise():
    x = leaf([1.0, 2.0, 3.0])
    y = x * 2
    with pytest.raises(RuntimeError, match="mul_"):
        y.mul_(3)          # unrecorded, it would leave dy/dx = 2 instead of 6
    y = x * 1
    with pytest.raises(RuntimeError, match="__setitem__"):
        y[0] = 5.0         # unrecorded, it would give [10, 4, 6] instead of [0, 4, 6]
    out = F.where(np.array([True, False, False]), 5.0, x * 1)  # the out-of-place form
    np.testing.assert_array_equal(mg.grad((out * out).sum(), x).numpy(), [0.0, 4.0, 6.0])


def test_change_under_no_grad_is_caught_by_the_producer_at_backward():
    x = leaf([1.0, 2.0, 3.0])
    y = x * 2
    loss = (y * 1.0).sum()
    with mg.no_grad():
        y[0] = 5.0
    with pytest.raises(RuntimeError, match=r"Mul.backward: (input|output) \d .* modified in place"):
        loss.backward()
    z = x * 1
    with mg.no_grad():
        z[0] = 5.0      # changed before any consumer saw it: only the producer can tell
    loss = (z * z).sum()
    with pytest.raises(RuntimeError, match=r"Mul.backward: output 0 \(shape \(3,\)\) was "
                                           r"modified in place"):
        loss.backward()


def test_views_share_the_version_counter():
    x = leaf([1.0, 2.0, 3.0, 4.0])
    y = x * 2
    loss = (y.reshape(2, 2) * 1.0).sum()
    with mg.no_grad():
        view = y[1:3]                # a NumPy view into y's data
        view.fill_(0.0)
    assert y._version == 1
    with pytest.raises(RuntimeError, match="modified in place"):
        loss.backward()
    d = x.detach()
    loss = (x * x).sum()
    d.add_(1.0)                      # detach shares data and version, as in PyTorch
    with pytest.raises(RuntimeError, match="Mul.backward: input 0"):
        loss.backward()


def test_writing_a_value_that_requires_grad_in_place_raises():
    buf = mg.zeros(3, dtype=np.float64)
    w = leaf([2.0])
    with pytest.raises(RuntimeError, match="__setitem__: the value requires grad"):
        buf[0] = w * 3
    with pytest.raises(RuntimeError, match="copy_: the value requires grad"):
        buf.copy_(w.expand(3) * 1)
    buf[0:1] = (w * 3).detach()
    assert buf.numpy()[0] == 6.0


def test_in_place_outside_any_graph_still_works():
    t = mg.tensor([1.0, 2.0])
    t.mul_(2).add_(1.0)
    t[1] = 0.0
    np.testing.assert_array_equal(t.numpy(), [3.0, 0.0])
    with mg.no_grad():
        y = leaf([1.0]) * 2
        y.mul_(2)
    assert y.item() == 4.0


# --- gradient dtypes -----------------------------------------------------------------------
def test_a_float32_leaf_gets_a_float32_grad_from_float64_math():
    w = leaf([1.0, 2.0], dtype=np.float32)
    (w * mg.tensor(np.array([3.0, 4.0]))).sum().backward()
    assert w.grad.dtype == np.float32
    np.testing.assert_array_equal(w.grad.numpy(), [3.0, 4.0])
    g, = mg.grad(((w * mg.tensor(np.array([0.5, 0.5]))) ** 2).sum(), [w], create_graph=True)
    assert g.dtype == np.float32
    assert mg.grad(g.sum(), w).dtype == np.float32


def test_integer_tensors_cannot_require_grad():
    with pytest.raises(TypeError, match="Tensor: requires_grad needs a floating dtype, got int64"):
        mg.Tensor(np.array([1, 2]), requires_grad=True)
    with pytest.raises(TypeError, match="requires_grad needs a floating dtype"):
        mg.tensor([1, 2], requires_grad=True)
    with pytest.raises(TypeError, match="requires_grad_: needs a floating dtype"):
        mg.tensor([1, 2]).requires_grad_()


# --- inputs that are not numbers, and Tensor on Python data --------------------------------
@pytest.mark.parametrize("bad", [["a"], None, [object()], {"a": 1}])
def test_tensor_rejects_non_numbers(bad):
    with pytest.raises(TypeError, match="tensor: expected numbers"):
        mg.tensor(bad)


def test_tensor_constructor_takes_python_data():
    t = mg.Tensor([1.0, 2.0])
    assert t.dtype == mg.get_default_dtype()
    np.testing.assert_array_equal((t * 2).numpy(), [2.0, 4.0])
    assert mg.Tensor(3).dtype == np.int64 and mg.Tensor(np.float64(2.5)).shape == ()
    with pytest.raises(TypeError, match="Tensor: expected numbers"):
        mg.Tensor("abc")


def test_np_asarray_gives_the_values():
    t = leaf([1.0, 2.0]) * 3
    arr = np.asarray(t)
    assert isinstance(arr, np.ndarray) and arr.dtype == np.float64
    np.testing.assert_array_equal(arr, [3.0, 6.0])
    np.testing.assert_array_equal(np.asarray(t, dtype=np.float32), [3.0, 6.0])
    assert np.array(t, copy=True) is not t.data
    out = np.ones(2) + t  # NumPy still defers to the Tensor's operator: the graph is kept
    assert isinstance(out, mg.Tensor) and out.requires_grad
    w = leaf([1.0, 2.0], dtype=np.float32)
    for out in (np.float64(2.0) * w, w - np.float64(1.0), np.int64(2) + w):
        assert isinstance(out, mg.Tensor) and out.requires_grad and out.dtype == np.float32
    np.testing.assert_array_equal(mg.tensor([t, t]).numpy(), [[3.0, 6.0], [3.0, 6.0]])


# --- random generators ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["abc", 1.5, True, [1, 2]])
def test_as_rng_rejects_other_types_naming_the_argument(bad):
    with pytest.raises(TypeError, match="as_rng: rng must be None, an int seed"):
        backend.as_rng(bad)
    with pytest.raises(TypeError, match="as_rng: random_state must be"):
        backend.as_rng(bad, name="random_state")


def test_as_rng_accepts_a_legacy_random_state_deterministically():
    a = backend.as_rng(np.random.RandomState(3))
    b = backend.as_rng(np.random.RandomState(3))
    assert isinstance(a, np.random.Generator)
    np.testing.assert_array_equal(a.standard_normal(4), b.standard_normal(4))
    c = backend.as_rng(np.random.RandomState(4))
    assert not np.array_equal(backend.as_rng(np.random.RandomState(3)).random(4), c.random(4))
    rs = np.random.RandomState(3)
    first, second = backend.as_rng(rs).random(3), backend.as_rng(rs).random(3)
    assert not np.array_equal(first, second)  # the RandomState advances, as after any draw
    g = backend.as_rng(np.random.RandomState(0))
    for method, args in [("integers", (5,)), ("permutation", (4,)), ("choice", (4, 2)),
                         ("random", (2,)), ("normal", (0, 1, 2)), ("uniform", (0, 1, 2))]:
        getattr(g, method)(*args)
    assert mg.randn(2, rng=np.random.RandomState(1)).shape == (2,)


# --- layers --------------------------------------------------------------------------------
def test_batchnorm_in_training_needs_more_than_one_value_per_channel():
    bn = nn.BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"BatchNorm1d: training needs more than one value per "
                                         r"channel .* shape \(1, 3\)"):
        bn(mg.tensor(np.ones((1, 3), dtype=np.float32)))
    np.testing.assert_array_equal(bn.running_mean, 0.0)  # nothing was updated
    bn.eval()
    assert bn(mg.tensor(np.ones((1, 3), dtype=np.float32))).shape == (1, 3)
    bn2 = nn.BatchNorm2d(2)
    with pytest.raises(ValueError, match="BatchNorm2d: training needs more than one value"):
        bn2(mg.tensor(np.ones((1, 2, 1, 1), dtype=np.float32)))
    assert bn2(mg.tensor(np.ones((1, 2, 2, 1), dtype=np.float32))).shape == (1, 2, 2, 1)


def test_batchnorm_matches_torch_on_the_batch_of_one():
    torch = pytest.importorskip("torch")
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        torch.nn.BatchNorm1d(3)(torch.ones(1, 3))


@pytest.mark.parametrize("make, arg", [
    (lambda: nn.Conv2d(3, 0, 3), "out_channels"), (lambda: nn.Conv2d(0, 2, 3), "in_channels"),
    (lambda: nn.Conv2d(3, 2, 0), "kernel_size"),
    (lambda: nn.ConvTranspose2d(3, 0, 3), "out_channels"),
])
def test_conv_layers_reject_empty_sizes(make, arg):
    with pytest.raises(ValueError, match=f"Conv.*2d: {arg} must be a positive int"):
        make()


def test_gelu_module_rejects_unknown_forms():
    with pytest.raises(ValueError, match="GELU: approximate must be one of 'none', 'tanh', got 'erf'"):
        nn.GELU("erf")


def test_top_level_exports():
    assert mg.AxisError.__mro__[1:3] == (ValueError, IndexError)
    x = mg.tensor([3.0, 1.0, 2.0])
    assert mg.sort(x).tolist() == [1.0, 2.0, 3.0] and mg.prod(x).item() == 6.0
    assert mg.std(x).item() == pytest.approx(np.std([3.0, 1.0, 2.0]))
    assert mg.erf(mg.tensor([0.0])).item() == 0.0


def test_the_engine_imports_nothing_above_it():
    """autograd sits below ops/functional (ARCHITECTURE.md): it imports only backend."""
    import ast
    import inspect
    from minigen import autograd
    tree = ast.parse(inspect.getsource(autograd))
    local = {node.module for node in ast.walk(tree)
             if isinstance(node, ast.ImportFrom) and node.level > 0}
    assert local <= {None, "backend"}, local


@pytest.mark.parametrize("op, weight", [("conv2d", (0, 1, 3, 3)), ("conv2d", (2, 1, 0, 3)),
                                        ("conv_transpose2d", (1, 0, 3, 3))])
def test_functional_conv_with_an_empty_weight_is_a_clear_error(op, weight):
    x = mg.tensor(np.zeros((1, 1, 5, 5), dtype=np.float32))
    with pytest.raises(ValueError, match=f"{op}: the weight needs at least one channel"):
        getattr(F, op)(x, mg.tensor(np.zeros(weight, dtype=np.float32)))


@pytest.mark.parametrize("rng, error, match", [
    (-1, ValueError, "as_rng: rng must be an int >= 0, got -1"),
    (np.int64(-5), ValueError, r"as_rng: rng must be an int >= 0, got np.int64\(-5\)"),
    ("seed" * 100, TypeError, r"as_rng: rng must be None, an int seed >= 0.* \.\.\.$"),
])
def test_as_rng_rejects_negative_seeds_and_quotes_only_an_excerpt(rng, error, match):
    with pytest.raises(error, match=match):
        backend.as_rng(rng)
