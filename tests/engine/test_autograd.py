"""Engine semantics: deep graphs, accumulation, retain_graph, no_grad/enable_grad, in-place
detection, higher-order gradients (mg.grad of mg.grad, Hessian-vector products), dtypes,
seeding, tensor basics and the errors for bad input."""
import numpy as np
import pytest

import minigen as mg
import minigen.functional as F
from minigen import backend
from minigen.autograd import sum_axes
from tests.helpers import leaf


# --- backward --------------------------------------------------------------------------------
def test_chain_of_100k_ops_backpropagates_without_recursion_error():
    x = leaf(1.0)
    y = x
    for _ in range(100_000):
        y = -y
    y.backward()
    assert x.grad.item() == 1.0


def test_reused_tensor_gradients_accumulate():
    x = leaf([1.0, -2.0, 3.0])
    y = x * x + x            # x used three times
    z = (y * y).sum() + y.sum()  # y used twice (a diamond)
    z.backward()
    xv = x.numpy()
    yv = xv * xv + xv
    np.testing.assert_allclose(x.grad.numpy(), (2 * yv + 1) * (2 * xv + 1))


def test_grad_accumulates_across_backward_calls_and_zero_grad_resets():
    x = leaf([2.0, 3.0])
    (x * x).sum().backward()
    (3 * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy() + 3)
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * x.numpy())


def test_second_backward_needs_retain_graph():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        y.backward()


def test_retain_graph_allows_a_second_backward():
    x = leaf([1.0, 2.0])
    y = (x.exp() * x).sum()
    y.backward(retain_graph=True)
    first = x.grad.numpy().copy()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2 * first)
    np.testing.assert_allclose(first, np.exp(x.numpy()) * (1 + x.numpy()))


def test_backward_with_explicit_grad_for_a_non_scalar():
    x = leaf([1.0, 2.0, 3.0])
    (x * x).backward(np.array([1.0, 0.0, 2.0]))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 0.0, 12.0])


def test_intermediate_tensors_get_no_grad_and_constants_stay_untouched():
    x, c = leaf([1.0, 2.0]), mg.tensor(np.array([3.0, 4.0]))
    h = x * c
    h.sum().backward()
    assert h.grad is None and c.grad is None
    np.testing.assert_allclose(x.grad.numpy(), c.numpy())


# --- grad modes ------------------------------------------------------------------------------
def test_no_grad_builds_no_graph():
    x = leaf([1.0, 2.0])
    with mg.no_grad():
        y = (x * 2).exp().sum()
        assert not mg.is_grad_enabled()
    assert mg.is_grad_enabled()
    assert not y.requires_grad and y._ctx is None
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()


def test_no_grad_as_decorator_and_enable_grad_inside():
    x = leaf([1.0, 2.0])

    @mg.no_grad()
    def f(t):
        inner = t * 2
        with mg.enable_grad():
            tracked = t * 3
        return inner, tracked

    inner, tracked = f(x)
    assert inner._ctx is None and not inner.requires_grad
    assert tracked.requires_grad and tracked._ctx is not None

    @mg.enable_grad()
    def g(t):
        return t * 4

    with mg.no_grad():
        assert g(x).requires_grad


def test_grad_mode_is_restored_after_an_exception():
    with pytest.raises(ZeroDivisionError):
        with mg.no_grad():
            1 / 0
    assert mg.is_grad_enabled()


def test_a_decorated_no_grad_called_recursively_restores_the_mode_of_its_caller():
    @mg.no_grad()
    def f(depth):
        if depth:
            f(depth - 1)
        return mg.is_grad_enabled()

    assert not f(2)
    assert mg.is_grad_enabled()


def test_grad_mode_is_per_thread():
    """One thread inside no_grad (as every backward is) leaves another thread's graph on."""
    import threading
    inside, done, seen = threading.Event(), threading.Event(), {}

    def worker():
        with mg.no_grad():
            inside.set()
            done.wait(5)

    thread = threading.Thread(target=worker)
    thread.start()
    inside.wait(5)
    try:
        seen["mode"] = mg.is_grad_enabled()
        seen["graph"] = (leaf([1.0]) * 2)._ctx is not None
    finally:
        done.set()
        thread.join()
    assert seen == {"mode": True, "graph": True}


def test_in_place_change_of_a_saved_tensor_is_detected():
    x = leaf([1.0, 2.0])
    a = x * 2
    b = (a * a).sum()
    with mg.no_grad():  # with grad on, the change itself raises (tests/engine/test_autograd_faults.py)
        a.mul_(3)
    with pytest.raises(RuntimeError, match="Mul.backward: input .* modified in place"):
        b.backward()
    w = leaf([1.0, 2.0])
    loss = (w.exp()).sum()
    with mg.no_grad():
        w.add_(1.0)
    with pytest.raises(RuntimeError, match="modified in place after the forward pass"):
        loss.backward()


def test_changing_a_weight_between_forward_and_backward_is_detected():
    layer = mg.nn.Linear(3, 2, rng=0)
    loss = layer(mg.tensor(np.ones((4, 3), dtype=np.float32))).sum()
    with mg.no_grad():
        layer.weight.mul_(2.0)   # e.g. an optimiser step on a graph that is still in use
    with pytest.raises(RuntimeError, match="modified in place after the forward pass"):
        loss.backward()


def test_in_place_change_of_an_output_used_by_backward_is_detected():
    x = leaf([0.5, 1.0])
    y = x.exp()
    (y * 2.0).sum()  # another consumer that does not matter
    z = y.sum()
    with mg.no_grad():
        y.fill_(0.0)
    with pytest.raises(RuntimeError, match="modified in place"):
        z.backward()


def test_in_place_on_a_leaf_that_requires_grad_needs_no_grad():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="Tensor.add_: in-place change of a leaf"):
        x.add_(1.0)
    with mg.no_grad():
        x.add_(1.0)
        x[0] = 5.0
    np.testing.assert_array_equal(x.numpy(), [5.0, 3.0])


# --- higher order -----------------------------------------------------------------------------
def test_second_derivative_of_cube_is_6x():
    x = leaf([-1.5, 0.5, 2.0])
    (d1,) = mg.grad((x ** 3).sum(), [x], create_graph=True)
    np.testing.assert_allclose(d1.numpy(), 3 * x.numpy() ** 2)
    d2 = mg.grad(d1.sum(), x)
    np.testing.assert_allclose(d2.numpy(), 6 * x.numpy())
    assert x.grad is None


def test_third_derivative_through_nested_grads():
    x = leaf([0.3, -0.7])
    g1 = mg.grad(x.sin().sum(), x, create_graph=True)
    g2 = mg.grad(g1.sum(), x, create_graph=True)
    g3 = mg.grad(g2.sum(), x)
    np.testing.assert_allclose(g3.numpy(), -np.cos(x.numpy()), rtol=1e-12)


def _mlp_loss(params, x, y):
    w1, b1, w2, b2 = params
    h = F.tanh(x @ w1 + b1)
    return F.mse_loss(F.softplus(h @ w2 + b2), y)


def test_hessian_vector_product_of_a_small_mlp_matches_finite_differences():
    rng = np.random.default_rng(0)
    x, y = mg.tensor(rng.standard_normal((8, 3))), mg.tensor(rng.standard_normal((8, 2)))
    arrays = [rng.standard_normal(s) * 0.7 for s in [(3, 5), (5,), (5, 2), (2,)]]
    v = [rng.standard_normal(a.shape) for a in arrays]
    params = [leaf(a) for a in arrays]
    grads = mg.grad(_mlp_loss(params, x, y), params, create_graph=True)
    dot = sum((g * mg.tensor(vi)).sum() for g, vi in zip(grads, v))
    hvp = [h.numpy() for h in mg.grad(dot, params)]

    def gradient(shift):
        ps = [leaf(a + shift * vi) for a, vi in zip(arrays, v)]
        return [g.numpy() for g in mg.grad(_mlp_loss(ps, x, y), ps)]

    eps = 1e-5
    plus, minus = gradient(eps), gradient(-eps)
    for h, gp, gm in zip(hvp, plus, minus):
        np.testing.assert_allclose(h, (gp - gm) / (2 * eps), rtol=1e-6, atol=1e-9)


def test_grad_does_not_touch_dot_grad_and_supports_grad_outputs():
    x, w = leaf([1.0, 2.0]), leaf([3.0, 4.0])
    gx, gw = mg.grad(x * w, [x, w], grad_outputs=mg.tensor(np.array([1.0, -1.0])))
    np.testing.assert_allclose(gx.numpy(), [3.0, -4.0])
    np.testing.assert_allclose(gw.numpy(), [1.0, -2.0])
    assert x.grad is None and w.grad is None


def test_grad_of_an_unreached_input():
    x, unused = leaf([1.0]), leaf([2.0])
    with pytest.raises(RuntimeError, match="grad: input 1 .* is not reached"):
        mg.grad((x * 2).sum(), [x, unused])
    gx, gu = mg.grad((x * 2).sum(), [x, unused], allow_unused=True)
    assert gu is None and gx.item() == 2.0


def test_op_without_double_backward_names_itself():
    class ScaleRaw(mg.Function):
        differentiable = False

        def forward(self, a):
            return 2 * a

        def backward(self, g):
            return mg.Tensor(2 * g.data)

    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match="ScaleRaw: double backward is not supported"):
        mg.grad(ScaleRaw.apply(x * x).sum(), x, create_graph=True)
    np.testing.assert_allclose(mg.grad(ScaleRaw.apply(x * x).sum(), x).numpy(), 4 * x.numpy())


# --- dtypes, seeding, tensor basics ---------------------------------------------------------
FLOAT32_OPS = {
    "scalar arithmetic": lambda t: ((2.0 * t + 1) / 3.0 - 0.5) ** 2,
    "reverse pow": lambda t: 1.5 ** t,
    "mean/var": lambda t: t.var(0) + t.mean(),
    "softmax": lambda t: F.softmax(t * 0.5),
    "log_softmax": lambda t: F.log_softmax(t),
    "activations": lambda t: F.gelu(t) + F.silu(t) + F.sigmoid(t) + F.softplus(t) + F.tanh(t),
    "layer_norm": lambda t: F.layer_norm(t, 3),
    "logsumexp": lambda t: F.logsumexp(t, 1),
    "where/clip": lambda t: F.where(t.data > 0, t, 0.1) + t.clip(-0.5, 0.5),
    "cross_entropy": lambda t: F.cross_entropy(t, np.array([0, 2])),
    "bce": lambda t: F.binary_cross_entropy_with_logits(t, t.detach() * 0 + 1),
}


@pytest.mark.parametrize("name", sorted(FLOAT32_OPS))
def test_float32_stays_float32_with_python_scalars(name):
    x = mg.tensor(np.array([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]]), dtype=np.float32,
                  requires_grad=True)
    out = FLOAT32_OPS[name](x)
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32


def test_default_dtype_and_tensor_construction():
    assert mg.tensor([1.0, 2.0]).dtype == np.float32
    assert mg.tensor([1, 2]).dtype.kind == "i"
    assert mg.tensor(np.array([1.0]), dtype=np.float64).dtype == np.float64
    assert mg.zeros(2, 3).shape == (2, 3) and mg.ones((2,)).dtype == np.float32
    assert mg.randn(4, dtype=np.float64).dtype == np.float64
    src = np.array([1.0, 2.0])
    t = mg.tensor(src)
    src[0] = 9.0
    assert t.numpy()[0] == 1.0  # tensor() copies
    with pytest.raises(TypeError, match="tensor: requires_grad needs a floating dtype"):
        mg.tensor([1, 2], requires_grad=True)


def test_tensor_basics():
    x = leaf([[1.0, 2.0, 3.0]])
    assert x.shape == (1, 3) and x.ndim == 2 and x.size == 3 and len(x) == 1
    assert x.is_leaf and x.device == "cpu"
    d = (x * 2).detach()
    assert not d.requires_grad and d.is_leaf
    assert mg.tensor(2.5).item() == 2.5
    assert x.T.shape == (3, 1)
    assert "requires_grad=True" in repr(x) and "float64" in repr(x)
    assert x.tolist() == [[1.0, 2.0, 3.0]]


def test_manual_seed_reproducibility():
    def draw():
        return (mg.randn(5).numpy(), mg.rand(3).numpy(),
                mg.nn.Linear(3, 2).weight.numpy().copy())

    mg.manual_seed(123)
    first = draw()
    mg.manual_seed(123)
    second = draw()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    mg.manual_seed(124)
    assert not np.array_equal(mg.randn(5).numpy(), first[0])
    rng_draw = mg.randn(3, rng=np.random.default_rng(5)).numpy()
    np.testing.assert_array_equal(rng_draw, mg.randn(3, rng=5).numpy())


# --- bad input ----------------------------------------------------------------------------------
def test_matmul_shape_mismatch_names_op_and_shapes():
    with pytest.raises(ValueError, match=r"matmul: inner dimensions differ: a has shape \(2, 3\), "
                                         r"b has shape \(4, 5\)"):
        mg.tensor(np.ones((2, 3))) @ mg.tensor(np.ones((4, 5)))
    with pytest.raises(ValueError, match="matmul: operands must have ndim >= 1"):
        F.matmul(mg.tensor(2.0), mg.tensor(np.ones(2)))
    with pytest.raises(ValueError, match="matmul: cannot broadcast"):
        mg.tensor(np.ones((2, 2, 3))) @ mg.tensor(np.ones((3, 3, 1)))


@pytest.mark.parametrize("op, name", [(lambda a, b: a + b, "add"), (lambda a, b: a - b, "sub"),
                                      (lambda a, b: a * b, "mul"), (lambda a, b: a / b, "div"),
                                      (lambda a, b: a ** b, "pow")])
def test_non_broadcastable_shapes_name_the_op(op, name):
    with pytest.raises(ValueError, match=rf"{name}: cannot broadcast shapes \(2, 3\) and \(4,\)"):
        op(mg.tensor(np.ones((2, 3))), mg.tensor(np.ones(4)))


def test_backward_of_a_non_scalar_without_grad():
    x = leaf([1.0, 2.0])
    with pytest.raises(RuntimeError, match=r"backward: output has shape \(2,\).*pass grad="):
        (x * 2).backward()
    with pytest.raises(ValueError, match=r"backward: grad has shape \(3,\), expected \(2,\)"):
        (x * 2).backward(np.ones(3))


def test_unknown_device():
    with pytest.raises(ValueError, match="tensor: unknown device 'tpu'; expected 'cpu' or 'cuda'"):
        mg.tensor([1.0], device="tpu")
    with pytest.raises(ValueError, match="Tensor.to: unknown device 'gpu'"):
        mg.tensor([1.0]).to("gpu")
    with pytest.raises(ValueError, match="zeros: unknown device"):
        mg.zeros(2, device="mps")


@pytest.mark.skipif(backend.cupy() is not None, reason="CuPy and a GPU are present")
def test_cuda_without_cupy_is_a_clear_error():
    with pytest.raises(RuntimeError, match="tensor: device 'cuda' needs CuPy and a visible GPU"):
        mg.tensor([1.0], device="cuda")
    with pytest.raises(RuntimeError, match="Tensor.to: device 'cuda' needs CuPy"):
        mg.tensor([1.0]).to("cuda")
    with pytest.raises(RuntimeError, match="Linear.to: device 'cuda' needs CuPy"):
        mg.nn.Linear(2, 2).to("cuda")



@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128, np.int64, bool])
@pytest.mark.parametrize("shape, axes", [
    ((6, 3, 4, 2, 4, 2), (3, 5)),           # a nearest upsample's 2 x 2 copies
    ((5, 3, 4, 5), (0, 2, 3)),              # short axes beside a long one, outer axis summed
    ((4, 5), (0,)), ((2, 7), (1,)), ((3, 1, 2), (1, 2)), ((2, 0, 3), (0, 2)), ((4,), (0,))])
def test_sum_axes_matches_numpy_sum(shape, axes, dtype):
    """sum_axes, which sums short axes as slice adds, equals ndarray.sum for every layout,
    dtype (bool counts, it does not OR) and keepdims, NaN and inf included."""
    a = np.random.default_rng(0).standard_normal(shape) * 3
    if a.size > 3:
        a.flat[[0, 1, 3]] = [np.nan, np.inf, -np.inf]
    a = (a > 0) if dtype is bool else a.astype(dtype) if dtype is not np.int64 else \
        np.nan_to_num(a, posinf=7, neginf=-7).astype(np.int64)
    for keepdims in (True, False):
        expected = a.sum(axis=axes, keepdims=keepdims)
        with np.errstate(invalid="ignore"):
            got = sum_axes(a, axes, keepdims)
        assert got.shape == expected.shape and got.dtype == expected.dtype
        if a.dtype.kind not in "fc":
            np.testing.assert_array_equal(got, expected)
            continue
        # rounding of at most n adds, each within eps of the running sum of |terms|
        finite = np.where(np.isfinite(a), a, 0)
        n = int(np.prod([a.shape[ax] for ax in axes]))
        bound = n * np.finfo(a.dtype).eps * np.abs(finite).sum(axis=axes, keepdims=keepdims)
        np.testing.assert_array_equal(np.isfinite(got), np.isfinite(expected))
        np.testing.assert_array_equal(got[~np.isfinite(got)], expected[~np.isfinite(expected)])
        ok = np.isfinite(expected)
        assert np.all(np.abs(got[ok] - expected[ok]) <= bound[ok])
