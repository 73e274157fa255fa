"""Neural-network ops: softmax family, conv2d / conv_transpose2d (stride, padding, dilation,
output_padding), pooling, nearest upsampling, dropout, layer_norm, embedding, one_hot.
Values against direct NumPy loops, first derivatives by central differences and second
derivatives (gradgradcheck) for the kernel-backed and composite ops."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minigen as mg
import minigen.functional as F
from minigen.testing import arrays, gradcheck, gradgradcheck, shapes


def softmax_ref(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


# --- softmax family ------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@given(x=arrays(shapes(min_dims=1, max_dims=3, max_side=5), -4.0, 4.0), data=st.data())
def test_softmax_family(name, x, data):
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    op = getattr(F, name)
    expected = softmax_ref(x, axis)
    expected = np.log(expected) if name == "log_softmax" else expected
    np.testing.assert_allclose(op(mg.tensor(x), axis).numpy(), expected, rtol=1e-10, atol=1e-14)
    gradcheck(lambda t: op(t, axis), [x])


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_family_second_derivative(name, axis):
    x = np.random.default_rng(0).standard_normal((3, 4))
    gradgradcheck(lambda t: getattr(F, name)(t, axis), [x])


def test_softmax_is_stable_for_large_logits():
    x = mg.tensor([[1000.0, 1000.0, -1000.0]], dtype=np.float64)
    np.testing.assert_allclose(F.softmax(x).numpy(), [[0.5, 0.5, 0.0]])
    np.testing.assert_allclose(F.log_softmax(x).numpy()[0, :2], [-math.log(2)] * 2)


# --- convolution ---------------------------------------------------------------------------
def conv2d_ref(x, w, stride, padding, dilation):
    """Direct sum over kernel offsets:
    y[n, o, i, j] = sum_{c, a, b} w[o, c, a, b] xpad[n, c, i sh + a dh, j sw + b dw]."""
    (sh, sw), (ph, pw), (dh, dw) = stride, padding, dilation
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    kh, kw = w.shape[2:]
    ho = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    wo = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((x.shape[0], w.shape[0], ho, wo))
    for a in range(kh):
        for b in range(kw):
            patch = xp[:, :, a * dh: a * dh + sh * (ho - 1) + 1: sh,
                       b * dw: b * dw + sw * (wo - 1) + 1: sw]
            y += np.einsum("nchw,oc->nohw", patch, w[:, :, a, b])
    return y


def conv_transpose2d_ref(x, w, stride, padding, output_padding, dilation):
    """Scatter each input pixel times the kernel into the (padded) output, then crop."""
    (sh, sw), (ph, pw), (oph, opw), (dh, dw) = stride, padding, output_padding, dilation
    n, _, h, wd = x.shape
    kh, kw = w.shape[2:]
    hp = (h - 1) * sh + dh * (kh - 1) + 1 + oph
    wp = (wd - 1) * sw + dw * (kw - 1) + 1 + opw
    y = np.zeros((n, w.shape[1], hp, wp))
    for a in range(kh):
        for b in range(kw):
            rows = slice(a * dh, a * dh + sh * (h - 1) + 1, sh)
            cols = slice(b * dw, b * dw + sw * (wd - 1) + 1, sw)
            y[:, :, rows, cols] += np.einsum("nchw,co->nohw", x, w[:, :, a, b])
    return y[:, :, ph: hp - ph, pw: wp - pw]


@st.composite
def conv_case(draw, transpose=False):
    def pair(lo, hi):
        return draw(st.integers(lo, hi)), draw(st.integers(lo, hi))

    n, c, o = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    k, s, d = pair(1, 3), pair(1, 3), pair(1, 2)
    p = pair(0, 2)
    if transpose:
        op = tuple(draw(st.integers(0, max(si, di) - 1)) for si, di in zip(s, d))
        # output size (h-1) s - 2p + d (k-1) + op + 1 must be >= 1
        lows = [max(1, (2 * pi - di * (ki - 1) - opi) // si + 1)
                for si, pi, di, ki, opi in zip(s, p, d, k, op)]
        hw = [draw(st.integers(lo, lo + 3)) for lo in lows]
        x = draw(arrays((n, c) + tuple(hw)))
        w = draw(arrays((c, o) + k))
        return x, w, s, p, op, d
    hw = [max(1, di * (ki - 1) + 1 - 2 * pi) + draw(st.integers(0, 4))
          for pi, di, ki in zip(p, d, k)]
    x = draw(arrays((n, c) + tuple(hw)))
    w = draw(arrays((o, c) + k))
    return x, w, s, p, None, d


@given(case=conv_case(), bias=st.booleans())
def test_conv2d(case, bias):
    x, w, s, p, _, d = case
    b = np.linspace(-1, 1, w.shape[0]) if bias else None
    out = F.conv2d(mg.tensor(x), mg.tensor(w), None if b is None else mg.tensor(b), s, p, d)
    expected = conv2d_ref(x, w, s, p, d) + (0 if b is None else b.reshape(1, -1, 1, 1))
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-10, atol=1e-12)
    if b is None:
        gradcheck(lambda xt, wt: F.conv2d(xt, wt, None, s, p, d), [x, w])
    else:
        gradcheck(lambda xt, wt, bt: F.conv2d(xt, wt, bt, s, p, d), [x, w, b])


@given(case=conv_case(transpose=True))
def test_conv_transpose2d(case):
    x, w, s, p, op, d = case
    out = F.conv_transpose2d(mg.tensor(x), mg.tensor(w), None, s, p, op, d)
    np.testing.assert_allclose(out.numpy(), conv_transpose2d_ref(x, w, s, p, op, d),
                               rtol=1e-10, atol=1e-12)
    gradcheck(lambda xt, wt: F.conv_transpose2d(xt, wt, None, s, p, op, d), [x, w])


def test_conv_transpose2d_is_the_adjoint_of_conv2d():
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((2, 3, 7, 6)), rng.standard_normal((4, 3, 3, 2))
    y = F.conv2d(mg.tensor(x), mg.tensor(w), stride=2, padding=1, dilation=(1, 2))
    g = rng.standard_normal(y.shape)
    xt = F.conv_transpose2d(mg.tensor(g), mg.tensor(w), stride=2, padding=1, dilation=(1, 2),
                            output_padding=(0, 1))
    assert xt.shape == x.shape
    np.testing.assert_allclose((y.numpy() * g).sum(), (x * xt.numpy()).sum(), rtol=1e-12)


@pytest.mark.parametrize("geometry", [dict(stride=1, padding=0), dict(stride=2, padding=1),
                                      dict(stride=(2, 1), padding=(0, 1), dilation=2)])
def test_conv2d_second_derivative(geometry):
    rng = np.random.default_rng(4)
    x, w = rng.standard_normal((1, 2, 5, 5)), rng.standard_normal((2, 2, 2, 2))
    gradgradcheck(lambda xt, wt: F.conv2d(xt, wt, **geometry), [x, w])
    b = rng.standard_normal(2)
    # tanh after the biased convolution: its gy depends on x, w and b, so a bias gradient cut
    # off the graph under create_graph would show
    gradgradcheck(lambda xt, wt, bt: F.tanh(F.conv2d(xt, wt, bt, **geometry)), [x, w, b])


def test_biased_conv2d_is_one_node_with_the_bias_gradient():
    # the bias rides in the Conv2d Function: gb = sum over (n, h, w) of gy, also when only
    # some inputs want a gradient
    from minigen.ops.nn import Conv2d
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((4, 3, 3, 3)), \
        rng.standard_normal(4)
    g = rng.standard_normal((2, 4, 5, 4))
    for wants in [(True, True, True), (False, False, True), (True, False, True),
                  (False, True, False)]:
        xt, wt, bt = (mg.tensor(a, requires_grad=r) for a, r in zip((x, w, b), wants))
        y = F.conv2d(xt, wt, bt, padding=1)
        assert type(y._ctx) is Conv2d
        np.testing.assert_allclose(y.numpy(), conv2d_ref(x, w, (1, 1), (1, 1), (1, 1))
                                   + b.reshape(1, -1, 1, 1), rtol=1e-12, atol=1e-12)
        y.backward(mg.tensor(g))
        if wants[2]:
            np.testing.assert_allclose(bt.grad.numpy(), g.sum(axis=(0, 2, 3)), rtol=1e-12)
        else:
            assert bt.grad is None
        assert (xt.grad is not None) == wants[0] and (wt.grad is not None) == wants[1]


def test_conv2d_bias_of_another_dtype_promotes_as_an_add():
    rng = np.random.default_rng(8)
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    b = rng.standard_normal(3)                                  # float64
    y = F.conv2d(mg.tensor(x), mg.tensor(w), mg.tensor(b))
    assert y.dtype == np.float64
    np.testing.assert_allclose(y.numpy(), conv2d_ref(x, w, (1, 1), (0, 0), (1, 1))
                               + b.reshape(1, -1, 1, 1), rtol=1e-5, atol=1e-5)


def test_conv2d_in_image_blocks_differentiates_twice(monkeypatch):
    # every stride-1 kernel in blocks of one image (kernels.conv.patch_blocks): the weight
    # gradient rebuilds its patches, and the double backward runs through the same routes
    from minigen.kernels import conv as kconv
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    for name, value in (("NHWC_MIN_CHANNELS", 1), ("FLIP_MIN_CHANNELS", 1),
                        ("BLOCK_MIN_BYTES", 0), ("BLOCK_BYTES", 1)):
        monkeypatch.setattr(kconv, name, value)
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((3, 2, 4, 5)), rng.standard_normal((2, 2, 3, 2))
    y = F.conv2d(mg.tensor(x), mg.tensor(w), padding=1)
    np.testing.assert_allclose(y.numpy(), conv2d_ref(x, w, (1, 1), (1, 1), (1, 1)),
                               rtol=1e-10, atol=1e-12)
    gradcheck(lambda xt, wt: F.conv2d(xt, wt, padding=1), [x, w])         # conv2d_gradients
    gradgradcheck(lambda xt, wt: F.conv2d(xt, wt, padding=1), [x, w])


def test_conv_transpose2d_second_derivative():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((1, 2, 3, 3)), rng.standard_normal((2, 2, 2, 2))
    gradgradcheck(lambda xt, wt: F.conv_transpose2d(xt, wt, stride=2, padding=1,
                                                    output_padding=1), [x, w])


def test_conv_bad_input_names_function_and_argument():
    x, w = mg.tensor(np.ones((1, 3, 5, 5))), mg.tensor(np.ones((2, 4, 3, 3)))
    with pytest.raises(ValueError, match="conv2d: input has 3 channels but weight expects 4"):
        F.conv2d(x, w)
    with pytest.raises(ValueError, match=r"conv2d: expected input \(N, C, H, W\)"):
        F.conv2d(mg.tensor(np.ones((3, 5, 5))), w)
    with pytest.raises(ValueError, match="conv2d: stride"):
        F.conv2d(x, mg.tensor(np.ones((2, 3, 3, 3))), stride=0)
    with pytest.raises(ValueError, match="conv2d: kernel"):
        F.conv2d(x, mg.tensor(np.ones((2, 3, 7, 7))))
    with pytest.raises(ValueError, match="conv_transpose2d: output_padding"):
        F.conv_transpose2d(x, mg.tensor(np.ones((3, 2, 3, 3))), stride=2, output_padding=2)


# --- pooling and upsampling ----------------------------------------------------------------
def pool_ref(x, k, s, p, reduce, fill):
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0]), (p[1], p[1])), constant_values=fill)
    ho = (xp.shape[2] - k[0]) // s[0] + 1
    wo = (xp.shape[3] - k[1]) // s[1] + 1
    out = np.empty(x.shape[:2] + (ho, wo))
    for i in range(ho):
        for j in range(wo):
            win = xp[:, :, i * s[0]: i * s[0] + k[0], j * s[1]: j * s[1] + k[1]]
            out[:, :, i, j] = reduce(win, axis=(2, 3))
    return out


@pytest.mark.parametrize("name", ["max_pool2d", "avg_pool2d"])
@given(data=st.data())
def test_pooling(name, data):
    k = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    s = (data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3)))
    p = tuple(data.draw(st.integers(0, ki // 2)) for ki in k)
    shape = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)),
             data.draw(st.integers(max(1, k[0] - 2 * p[0]), 6)),
             data.draw(st.integers(max(1, k[1] - 2 * p[1]), 6)))
    seed = data.draw(st.integers(0, 2 ** 16))
    # distinct values: max pooling has a unique arg-max in every window
    x = np.random.default_rng(seed).permutation(int(np.prod(shape))).reshape(shape) * 0.1
    op = getattr(F, name)
    ref = pool_ref(x, k, s, p, np.max if name == "max_pool2d" else np.mean,
                   -np.inf if name == "max_pool2d" else 0.0)
    np.testing.assert_allclose(op(mg.tensor(x), k, s, p).numpy(), ref, rtol=1e-12)
    gradcheck(lambda t: op(t, k, s, p), [x])


def test_pooling_default_stride_is_the_kernel():
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    np.testing.assert_array_equal(F.max_pool2d(mg.tensor(x), 2).numpy(), [[[[5, 7], [13, 15]]]])
    np.testing.assert_array_equal(F.avg_pool2d(mg.tensor(x), 2).numpy(),
                                  [[[[2.5, 4.5], [10.5, 12.5]]]])


@given(x=arrays(st.tuples(*(st.integers(1, 3) for _ in range(4)))), s=st.integers(1, 3))
def test_upsample_nearest(x, s):
    out = F.upsample_nearest(mg.tensor(x), s)
    np.testing.assert_array_equal(out.numpy(), x.repeat(s, axis=2).repeat(s, axis=3))
    gradcheck(lambda t: F.upsample_nearest(t, s), [x])


# --- dropout, layer_norm, embedding, one_hot ----------------------------------------------
@given(x=arrays(shapes(max_dims=3)), p=st.sampled_from([0.1, 0.5, 0.9]), seed=st.integers(0, 99))
def test_dropout_gradient_with_fixed_rng(x, p, seed):
    def f(t):
        return F.dropout(t, p, rng=np.random.default_rng(seed))
    out = f(mg.tensor(x)).numpy()
    kept = out != 0
    np.testing.assert_allclose(out[kept], x[kept] / (1 - p), rtol=1e-12)
    gradcheck(f, [x])


def test_dropout_statistics_eval_and_reproducibility():
    n, p = 200_000, 0.3
    x = mg.ones(n, dtype=np.float64)
    out = F.dropout(x, p, rng=np.random.default_rng(0)).numpy()
    frac_zero = (out == 0).mean()
    assert abs(frac_zero - p) < 5 * math.sqrt(p * (1 - p) / n)
    assert abs(out.mean() - 1.0) < 5 * math.sqrt(p / (1 - p) / n)
    assert F.dropout(x, p, training=False) is x
    mg.manual_seed(7)
    a = F.dropout(x, p).numpy()
    mg.manual_seed(7)
    np.testing.assert_array_equal(a, F.dropout(x, p).numpy())
    with pytest.raises(ValueError, match=r"dropout: p must be a finite number in \[0, 1\)"):
        F.dropout(x, 1.0)


@given(data=st.data(), affine=st.booleans())
def test_layer_norm(data, affine):
    shape = data.draw(shapes(min_dims=1, max_dims=3, min_side=2, max_side=4))
    k = data.draw(st.integers(1, len(shape)))
    normalized = shape[len(shape) - k:]
    x = data.draw(arrays(shape))
    axes = tuple(range(len(shape) - k, len(shape)))
    ref = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + 1e-5)
    if affine:
        w, b = data.draw(arrays(normalized)), data.draw(arrays(normalized))
        np.testing.assert_allclose(
            F.layer_norm(mg.tensor(x), normalized, mg.tensor(w), mg.tensor(b)).numpy(),
            ref * w + b, rtol=1e-10, atol=1e-12)
        gradcheck(lambda t, wt, bt: F.layer_norm(t, normalized, wt, bt), [x, w, b])
    else:
        np.testing.assert_allclose(F.layer_norm(mg.tensor(x), normalized).numpy(), ref,
                                   rtol=1e-10, atol=1e-12)
        gradcheck(lambda t: F.layer_norm(t, normalized), [x])


def test_layer_norm_second_derivative_and_shape_error():
    rng = np.random.default_rng(6)
    x, w, b = rng.standard_normal((3, 4)), rng.standard_normal(4), rng.standard_normal(4)
    gradgradcheck(lambda t, wt, bt: F.layer_norm(t, 4, wt, bt), [x, w, b])
    with pytest.raises(ValueError, match="layer_norm: input shape"):
        F.layer_norm(mg.tensor(x), 3)


@given(data=st.data())
def test_embedding_with_repeated_indices(data):
    num, dim = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 4))
    weight = data.draw(arrays((num, dim)))
    idx = data.draw(arrays(shapes(min_dims=1, max_dims=2, max_side=5), 0, num - 1)).round()
    idx = idx.astype(np.int64)
    np.testing.assert_array_equal(F.embedding(idx, mg.tensor(weight)).numpy(), weight[idx])
    gradcheck(lambda w: F.embedding(idx, w), [weight])
    w = mg.tensor(weight, requires_grad=True)
    F.embedding(mg.tensor(idx), w).sum().backward()
    counts = np.bincount(idx.ravel(), minlength=num)
    np.testing.assert_allclose(w.grad.numpy(), np.repeat(counts[:, None], dim, axis=1))


def test_embedding_bad_indices():
    w = mg.tensor(np.ones((3, 2)))
    with pytest.raises(TypeError, match="embedding: indices must be integers"):
        F.embedding(np.array([0.0, 1.0]), w)
    with pytest.raises(IndexError, match=r"embedding: indices must lie in \[0, 3\)"):
        F.embedding(np.array([0, 3]), w)


def test_one_hot():
    out = F.one_hot(np.array([[0, 2], [1, 1]]), 3)
    np.testing.assert_array_equal(out.numpy(), np.eye(3)[[[0, 2], [1, 1]]])
    assert not out.requires_grad
    with pytest.raises(TypeError, match="one_hot: indices must be integers"):
        F.one_hot(np.array([0.5]), 3)
    with pytest.raises(ValueError, match=r"one_hot: indices must lie in \[0, 3\)"):
        F.one_hot(np.array([3]), 3)


SECOND_ORDER = {
    # composite ops whose backward is built from Tensor ops: second derivatives for free
    "max_pool2d": (lambda t: F.max_pool2d(t, 2, 1, 1) ** 2, (1, 2, 3, 3)),
    "avg_pool2d": (lambda t: F.avg_pool2d(t, 2, 1, 1) ** 2, (1, 2, 3, 3)),
    "upsample_nearest": (lambda t: F.upsample_nearest(t, 2) ** 3, (1, 1, 2, 3)),
    "embedding": (lambda t: F.embedding(np.array([0, 2, 2]), t) ** 2, (3, 2)),
    "pad+concatenate": (lambda t: F.cat([F.pad(t, 1), F.pad(t, 1) * 2], axis=0) ** 2, (2, 3)),
    "bce_with_logits": (lambda t: F.binary_cross_entropy_with_logits(t, t.detach() * 0 + 0.3),
                        (2, 3)),
    "gaussian_nll": (lambda t: F.gaussian_nll(t, t.detach() * 0, t.exp()), (2, 3)),
    "kl_normal": (lambda t: F.kl_normal(t, t * 0.5, 0.2, t.sin()), (2, 3)),
    "attention": (lambda t: mg.nn.scaled_dot_product_attention(t, t * 0.5, t.tanh()), (2, 3, 2)),
}


@pytest.mark.parametrize("name", sorted(SECOND_ORDER))
def test_composite_second_derivatives(name):
    fn, shape = SECOND_ORDER[name]
    x = np.random.default_rng(7).permutation(int(np.prod(shape))).reshape(shape) * 0.13 - 0.4
    gradgradcheck(fn, [x])


@pytest.mark.parametrize("call, message", [
    (lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=-1),
     "conv_transpose2d: output_padding must be an int >= 0, got -1"),
    (lambda x, w: F.conv_transpose2d(x, w, stride=2, output_padding=(0, -1)),
     r"conv_transpose2d: output_padding must be a 2-tuple of ints >= 0, got \(0, -1\)"),
    (lambda x, w: F.conv_transpose2d(x, w, padding=-1),
     "conv_transpose2d: padding must be an int >= 0, got -1"),
    (lambda x, w: F.conv_transpose2d(x, w, stride=0), "conv_transpose2d: stride must be a "
                                                      "positive int, got 0"),
    (lambda x, w: F.conv2d(x, w.swapaxes(0, 1), dilation=(1, 2.0)),
     "conv2d: dilation must be a 2-tuple of positive ints"),
    (lambda x, w: F.max_pool2d(x, 2, padding=-1), "max_pool2d: padding must be an int >= 0"),
])
def test_conv_geometry_errors_name_the_argument(call, message):
    x, w = mg.tensor(np.zeros((1, 2, 4, 4))), mg.tensor(np.zeros((2, 3, 3, 3)))
    with pytest.raises(ValueError, match=message):
        call(x, w)
