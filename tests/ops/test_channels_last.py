"""Channels-last activations (minigen/kernels/conv.py, ops/nn.py, ops/norm.py): an (N, C, H, W)
array may carry NHWC strides; every result equals the C-contiguous NCHW path's, values and
gradients, to every derivative order, and the layout survives conv -> GroupNorm -> SiLU ->
conv."""
import importlib.util

import numpy as np
import pytest

import minigen as mg
import minigen.functional as F
from minigen.kernels import conv as kconv
from minigen.models.diffusion.denoisers import TinyUNet
from minigen.testing import gradcheck, gradgradcheck

GEOMETRIES = [((1, 1), (1, 1), (1, 1)), ((2, 2), (1, 0), (1, 1)), ((1, 1), (0, 0), (1, 1)),
              ((1, 1), (2, 1), (2, 1))]


def nhwc(a):
    """The same values as a (N, C, H, W), laid out NHWC in memory."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def is_nhwc(a):
    return a.transpose(0, 2, 3, 1).flags.c_contiguous


def filled(rng, shape, fill):
    x = rng.standard_normal(shape)
    if fill and x.size:
        x.flat[rng.integers(0, x.size, 3)] = fill
    return x


@pytest.fixture(autouse=True)
def keep_channels_last(monkeypatch):
    """Every test starts with the channels-last routes keeping NHWC, and with them allowed:
    MINIGEN_KERNELS=reference turns them off (the textbook route), so it is cleared here."""
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    monkeypatch.setattr(kconv, "KEEP_CHANNELS_LAST", True)


@pytest.fixture
def layout(monkeypatch, request):
    """Run a test with the channels-last routes keeping NHWC (True) or copying to NCHW."""
    monkeypatch.setattr(kconv, "KEEP_CHANNELS_LAST", request.param)
    return request.param


@pytest.mark.parametrize("fill", [None, np.nan, np.inf])
@pytest.mark.parametrize("n", [3, 0])
@pytest.mark.parametrize("kernel", [(3, 2), (1, 1)])
@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_kernels_on_nhwc_inputs_equal_the_nchw_path(geometry, kernel, n, fill):
    rng = np.random.default_rng(0)
    stride, padding, dilation = geometry
    x = filled(rng, (n, 16, 7, 6), fill)
    w = filled(rng, (16, 16) + kernel, fill)
    y = kconv.conv2d(x, w, *geometry)
    y_last = kconv.conv2d(nhwc(x), w, *geometry)
    assert is_nhwc(y) and is_nhwc(y_last) and y.shape == y_last.shape
    # the same patch matrix and the same GEMM: equal to the bit, NaN where NaN
    np.testing.assert_array_equal(y_last, y)
    np.testing.assert_allclose(y, kconv.conv2d(x, w, *geometry, impl="reference"),
                               rtol=1e-12, atol=1e-12)
    gy = filled(rng, y.shape, fill)
    gx = kconv.conv2d_input_grad(gy, w, x.shape, *geometry)
    np.testing.assert_array_equal(kconv.conv2d_input_grad(nhwc(gy), w, x.shape, *geometry), gx)
    np.testing.assert_allclose(gx, kconv.conv2d_input_grad(gy, w, x.shape, *geometry,
                                                           impl="reference"),
                               rtol=1e-12, atol=1e-12)
    gw = kconv.conv2d_weight_grad(x, gy, w.shape, *geometry)
    np.testing.assert_array_equal(kconv.conv2d_weight_grad(nhwc(x), nhwc(gy), w.shape,
                                                           *geometry), gw)
    np.testing.assert_allclose(gw, kconv.conv2d_weight_grad(x, gy, w.shape, *geometry,
                                                            impl="reference"),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("layout", [True, False], indirect=True)
def test_layout_switch_decides_the_result_layout(layout):
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 8, 5, 4)), rng.standard_normal((4, 8, 3, 3))
    y = kconv.conv2d(x, w, (1, 1), (1, 1), (1, 1))
    assert is_nhwc(y) == layout and y.flags.c_contiguous != layout
    # one input channel takes the channel-major route, which returns NCHW either way
    assert kconv.conv2d(x[:, :1], w[:, :1], (1, 1), (1, 1), (1, 1)).flags.c_contiguous


def block(x, w1, b1, g, beta, w2):
    """conv -> GroupNorm -> SiLU -> conv, the TinyUNet's chain: every array between the
    convolutions stays NHWC."""
    h = F.conv2d(x, w1, b1, padding=1)
    return F.conv2d(F.silu(F.group_norm(h, 4, g, beta)), w2, padding=1)


def block_inputs(rng, n=2, c=16, size=(4, 3), fill=None):
    return [filled(rng, (n, c) + size, fill), rng.standard_normal((c, c, 3, 3)) / 12,
            rng.standard_normal(c), 1 + rng.standard_normal(c) / 4, rng.standard_normal(c),
            rng.standard_normal((8, c, 3, 3)) / 12]


def value_and_grads(arrays):
    ts = [mg.tensor(a, requires_grad=True) for a in arrays]
    y = block(*ts)
    y.backward(mg.tensor(np.cos(np.arange(y.size)).reshape(y.shape)))
    return y.data, [t.grad.data for t in ts]


@pytest.mark.parametrize("fill", [None, np.nan, np.inf])
@pytest.mark.parametrize("n", [2, 0])
def test_chain_equals_the_nchw_path_values_and_gradients(monkeypatch, fill, n):
    rng = np.random.default_rng(2)
    arrays = block_inputs(rng, n=n, fill=fill)
    h = F.group_norm(F.conv2d(mg.tensor(arrays[0]), mg.tensor(arrays[1]), padding=1), 4)
    assert n == 0 or is_nhwc(h.data)        # the layout survives the norm
    y, grads = value_and_grads(arrays)
    monkeypatch.setattr(kconv, "KEEP_CHANNELS_LAST", False)
    y_ref, grads_ref = value_and_grads(arrays)
    # the convolutions agree to the bit; GroupNorm's sums run in another memory order, so
    # float64 rounding (eps 2.2e-16, times sums of a few hundred terms) is allowed
    np.testing.assert_allclose(y, y_ref, rtol=1e-12, atol=1e-12)
    for g, g_ref in zip(grads, grads_ref):
        np.testing.assert_allclose(g, g_ref, rtol=1e-11, atol=1e-11)


def test_chain_gradients_and_second_derivatives_on_nhwc_activations():
    rng = np.random.default_rng(3)
    arrays = block_inputs(rng, n=1, c=16, size=(3, 3))
    assert gradcheck(block, arrays)
    b1, g, beta = (mg.tensor(a) for a in arrays[2:5])
    assert gradgradcheck(lambda x, w1, w2: block(x, w1, b1, g, beta, w2),
                         [arrays[0], arrays[1], arrays[5]], max_elementwise=0, n_directions=2)


def test_tiny_unet_outputs_do_not_depend_on_the_layout(monkeypatch):
    rng = np.random.default_rng(4)
    net = TinyUNet(1, 16, 16, "silu", 4, rng=0)
    for p in net.parameters():          # conv_out starts at zero: give it weights
        p.data[...] = rng.standard_normal(p.shape).astype(p.dtype) / 8
    x = mg.tensor(rng.standard_normal((3, 1, 8, 8)).astype(np.float32))
    t = np.array([1, 50, 999])
    out = net(x, t).data
    monkeypatch.setattr(kconv, "KEEP_CHANNELS_LAST", False)
    # float32 (eps 1.2e-7): GroupNorm's sums in another order move the last bits only
    np.testing.assert_allclose(out, net(x, t).data, rtol=1e-5, atol=1e-5)


def nhwc_tensor(x):
    """x (N, C, H, W) as a Tensor op whose result lies channels-last: flattening the permuted
    view copies it into NHWC order."""
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n, h * w * c)
    return rows.reshape(n, h, w, c).permute(0, 3, 1, 2)


def norm_act(x, w, b, shift, act="silu"):
    return F.group_norm_act(x, 4, w, b, shift=shift, activation=act)


def norm_act_inputs(rng, n=3, c=8, size=(4, 5), fill=None):
    return [filled(rng, (n, c) + size, fill), 1 + rng.standard_normal(c) / 4,
            rng.standard_normal(c), rng.standard_normal((n, c))]


def norm_act_value_and_grads(arrays, last, act="silu"):
    ts = [mg.tensor(a, requires_grad=True) for a in arrays]
    y = norm_act(nhwc_tensor(ts[0]) if last else ts[0], *ts[1:], act=act)
    y.backward(mg.tensor(np.cos(np.arange(y.size)).reshape(y.shape)))
    return y.data, [t.grad.data for t in ts]


@pytest.mark.parametrize("act", ["silu", "gelu", None])
@pytest.mark.parametrize("fill", [None, np.nan, np.inf])
@pytest.mark.parametrize("n", [3, 0])
def test_group_norm_act_on_nhwc_memory_equals_nchw(n, fill, act):
    rng = np.random.default_rng(5)
    arrays = norm_act_inputs(rng, n=n, fill=fill)
    with np.errstate(invalid="ignore", over="ignore"):
        y_last, grads_last = norm_act_value_and_grads(arrays, True, act)
        y, grads = norm_act_value_and_grads(arrays, False, act)
    assert n == 0 or (is_nhwc(y_last) and y.flags.c_contiguous)
    # the same sums in another order: float64 rounding (eps 2.2e-16) times sums of 80 terms
    np.testing.assert_allclose(y_last, y, rtol=1e-12, atol=1e-12)
    for g_last, g in zip(grads_last, grads):
        np.testing.assert_allclose(g_last, g, rtol=1e-11, atol=1e-11)


def test_group_norm_act_float32_nhwc_memory_equals_nchw():
    rng = np.random.default_rng(6)
    arrays = [a.astype(np.float32) for a in norm_act_inputs(rng, n=4, c=16, size=(8, 8))]
    y_last, grads_last = norm_act_value_and_grads(arrays, True)
    y, grads = norm_act_value_and_grads(arrays, False)
    assert is_nhwc(y_last)
    # float32 eps 1.2e-7; the float64 statistics differ in their last bits only, and the
    # sums over 64 x 128 entries (w, b) carry ~sqrt(8192) ulps of their magnitude (~100)
    eps = float(np.finfo(np.float32).eps)
    np.testing.assert_allclose(y_last, y, rtol=16 * eps, atol=16 * eps)
    for g_last, g, scale in zip(grads_last, grads, (1, 100, 100, 10)):
        np.testing.assert_allclose(g_last, g, rtol=64 * eps, atol=64 * eps * scale)


def test_group_norm_act_gradients_and_second_derivatives_on_nhwc_memory():
    rng = np.random.default_rng(7)
    arrays = norm_act_inputs(rng, n=2, c=8, size=(2, 3))
    seen = []

    def f(x, w, b, shift):
        x = nhwc_tensor(x)
        seen.append(is_nhwc(x.data))
        return norm_act(x, w, b, shift)
    assert gradcheck(f, arrays)
    assert gradgradcheck(f, arrays, max_elementwise=0, n_directions=2)
    assert all(seen)


@pytest.mark.parametrize("layout", [True, False], indirect=True)
def test_bias_gradient_upsample_and_concat_keep_the_layout(layout):
    """The conv bias gradient, upsample_nearest and the channel concatenation on NHWC
    memory: the NCHW path's values to the bit, and NHWC results for NHWC inputs."""
    rng = np.random.default_rng(8)
    x, skip = rng.standard_normal((2, 8, 3, 4)), rng.standard_normal((2, 8, 6, 8))
    w, b = rng.standard_normal((8, 8, 3, 3)) / 8, rng.standard_normal(8)
    results = []
    for last in (True, False):
        ts = [mg.tensor(a, requires_grad=True) for a in (x, skip, w, b)]
        h = F.conv2d(nhwc_tensor(ts[0]) if last else ts[0], ts[2], ts[3], padding=1)
        up = F.upsample_nearest(h, 2)
        cat = F.concatenate([up, nhwc_tensor(ts[1]) if last else ts[1]], axis=1)
        assert is_nhwc(h.data) == is_nhwc(up.data) == layout     # whatever x's layout
        assert is_nhwc(cat.data) == (layout or last)    # channels-last when any input is
        cat.backward(mg.tensor(np.cos(np.arange(cat.size)).reshape(cat.shape)))
        results.append([cat.data] + [t.grad.data for t in ts])
    for got, want in zip(*results):
        np.testing.assert_array_equal(got, want)


def test_tiny_unet_gradients_do_not_depend_on_the_layout(monkeypatch):
    rng = np.random.default_rng(9)
    net = TinyUNet(1, 16, 16, "silu", 4, rng=0)
    for p in net.parameters():
        p.data[...] = rng.standard_normal(p.shape).astype(p.dtype) / 8
    x = rng.standard_normal((3, 1, 8, 8)).astype(np.float32)
    t = np.array([1, 50, 999])

    def grads():
        net.zero_grad()
        F.mse_loss(net(mg.tensor(x), t), mg.tensor(np.ones_like(x))).backward()
        return [p.grad.data.copy() for p in net.parameters()]
    last = grads()
    monkeypatch.setattr(kconv, "KEEP_CHANNELS_LAST", False)
    # float32 (eps 1.2e-7): sums in another order move the last bits; a gradient sums up to
    # 3 x 64 entries of O(1), so its error is a few hundred ulps of 1
    eps = float(np.finfo(np.float32).eps)
    for g_last, g in zip(last, grads()):
        np.testing.assert_allclose(g_last, g, rtol=1e-4, atol=512 * eps)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (64, 32, 16, 16)])   # below / above Numba's
def test_relu_keeps_channels_last_and_its_gradient(shape):             # relu threshold
    """relu of a channels-last activation is channels-last, its gradient too (the kernel:
    gy in either layout; NumPy's reference keeps it when gy shares it), with the NCHW values
    exactly: max(a, 0) and g (a > 0)."""
    kernel = importlib.util.find_spec("numba") is not None and shape[0] > 2
    rng = np.random.default_rng(5)
    x = filled(rng, shape, np.nan).astype(np.float32)
    g = rng.standard_normal(shape).astype(np.float32)
    for gy in (g, nhwc(g)):
        t = mg.Tensor(nhwc(x), requires_grad=True)        # no copy: the layout as given
        y = F.relu(t)
        (gx,) = mg.grad(y, [t], grad_outputs=mg.Tensor(gy))     # gy as laid out
        assert is_nhwc(y.data)
        assert is_nhwc(gx.data) or not (kernel or gy is not g)
        np.testing.assert_array_equal(y.numpy(), np.maximum(x, 0))
        np.testing.assert_array_equal(gx.numpy(), g * (x > 0))
