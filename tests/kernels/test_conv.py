"""kernels.conv: conv2d and its two gradients against the reference, torch and the adjoint."""
import contextlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.kernels import conv

numba = pytest.importorskip("numba")
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}

geometries = st.fixed_dictionaries({
    "N": st.integers(1, 3), "C": st.integers(1, 4), "O": st.integers(1, 5),
    "H": st.integers(1, 11), "W": st.integers(1, 9), "kh": st.integers(1, 3),
    "kw": st.integers(1, 3), "stride": st.tuples(st.integers(1, 3), st.integers(1, 3)),
    "padding": st.tuples(st.integers(0, 2), st.integers(0, 2)),
    "dilation": st.tuples(st.integers(1, 2), st.integers(1, 2)),
    "extra": st.tuples(st.integers(0, 2), st.integers(0, 2))})


@contextlib.contextmanager
def layouts(name, block_bytes=1):
    """Force the default route's layout choice: 'channels-first' (per-image channel-major
    patches and col2im everywhere), 'channels-last' (NHWC patches and the flipped-kernel input
    gradient wherever they apply, whatever the channel counts) or 'blocks' (channels-last, with
    every kernel larger than 1x1, strided or not, in image blocks of ``block_bytes`` of
    patches: one image per block by default, strided ones as if Numba had one thread)."""
    names = ("NHWC_MIN_CHANNELS", "FLIP_MIN_CHANNELS", "BLOCK_MIN_BYTES", "BLOCK_BYTES",
             "STRIDED_BLOCK_MIN_BYTES", "STRIDED_BLOCK_BYTES")
    saved = [getattr(conv, n) for n in names]
    last = name in ("channels-last", "blocks")
    conv.NHWC_MIN_CHANNELS = conv.FLIP_MIN_CHANNELS = 1 if last else 10 ** 9
    conv.BLOCK_MIN_BYTES = conv.STRIDED_BLOCK_MIN_BYTES = 0 if name == "blocks" else 2 ** 62
    conv.BLOCK_BYTES = conv.STRIDED_BLOCK_BYTES = block_bytes
    pool_threads = conv.numba_threads
    conv.numba_threads = lambda: 1
    try:
        yield
    finally:
        for n, value in zip(names, saved):
            setattr(conv, n, value)
        conv.numba_threads = pool_threads


def _sizes(g):
    (sh, sw), (ph, pw), (dh, dw) = g["stride"], g["padding"], g["dilation"]
    Ho = (g["H"] + 2 * ph - dh * (g["kh"] - 1) - 1) // sh + 1
    Wo = (g["W"] + 2 * pw - dw * (g["kw"] - 1) - 1) // sw + 1
    return Ho, Wo


@settings(max_examples=60)
@given(g=geometries, dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2 ** 16),
       layout=st.sampled_from(["channels-first", "channels-last", "blocks"]))
def test_numba_matches_reference_and_adjoint(g, dtype, seed, layout):
    Ho, Wo = _sizes(g)
    if Ho < 1 or Wo < 1:
        return
    rng = np.random.default_rng(seed)
    geo = (g["stride"], g["padding"], g["dilation"])
    x = rng.normal(size=(g["N"], g["C"], g["H"], g["W"])).astype(dtype)
    w = rng.normal(size=(g["O"], g["C"], g["kh"], g["kw"])).astype(dtype)
    gy = rng.normal(size=(g["N"], g["O"], Ho, Wo)).astype(dtype)
    tol = TOL[dtype]
    y = conv.conv2d(x, w, *geo, impl="reference")
    gx = conv.conv2d_input_grad(gy, w, x.shape, *geo, impl="reference")
    gw = conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl="reference")
    with layouts(layout):
        for impl in ("numba", None):
            np.testing.assert_allclose(conv.conv2d(x, w, *geo, impl=impl), y, **tol)
            np.testing.assert_allclose(conv.conv2d_input_grad(gy, w, x.shape, *geo, impl=impl),
                                       gx, **tol)
            np.testing.assert_allclose(conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl=impl),
                                       gw, **tol)
            both = conv.conv2d_gradients(x, gy, w, *geo, impl=impl)
            np.testing.assert_allclose(both[0], gx, **tol)
            np.testing.assert_allclose(both[1], gw, **tol)
            assert both[0].dtype == both[1].dtype == dtype
    assert y.dtype == gx.dtype == gw.dtype == dtype
    # <conv(x, w), gy> = <x, gx> = <w, gw>: both gradients are adjoints of the forward map
    inner = float((y.astype(float) * gy).sum())
    scale = float(np.abs(y).sum() * np.abs(gy).max()) + 1.0
    assert abs(inner - float((x.astype(float) * gx).sum())) <= 1e-5 * scale
    assert abs(inner - float((w.astype(float) * gw).sum())) <= 1e-5 * scale


@settings(max_examples=15)
@given(g=geometries, seed=st.integers(0, 2 ** 16))
def test_matches_torch_including_output_padding(g, seed):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    Ho, Wo = _sizes(g)
    if Ho < 1 or Wo < 1:
        return
    rng = np.random.default_rng(seed)
    geo = (g["stride"], g["padding"], g["dilation"])
    x = rng.normal(size=(g["N"], g["C"], g["H"], g["W"]))
    w = rng.normal(size=(g["O"], g["C"], g["kh"], g["kw"]))
    xt, wt = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
    yt = F.conv2d(xt, wt, stride=geo[0], padding=geo[1], dilation=geo[2])
    gy = rng.normal(size=tuple(yt.shape))
    yt.backward(torch.tensor(gy))
    for impl, layout in ROUTES:
        with layouts(layout):
            np.testing.assert_allclose(conv.conv2d(x, w, *geo, impl=impl), yt.detach().numpy(),
                                       rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(conv.conv2d_input_grad(gy, w, x.shape, *geo, impl=impl),
                                       xt.grad.numpy(), rtol=1e-10, atol=1e-12)
            np.testing.assert_allclose(conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl=impl),
                                       wt.grad.numpy(), rtol=1e-10, atol=1e-12)
    # conv_transpose2d(gy) with output_padding = the input gradient on a larger x_shape
    op = tuple(min(e, s - 1) for e, s in zip(g["extra"], g["stride"]))
    size = [(i - 1) * s - 2 * p + d * (k - 1) + o + 1 for i, s, p, d, k, o in
            zip((Ho, Wo), g["stride"], g["padding"], g["dilation"], (g["kh"], g["kw"]), op)]
    if min(size) < 1:
        return
    ref = F.conv_transpose2d(torch.tensor(gy), wt.detach(), stride=geo[0], padding=geo[1],
                             dilation=geo[2], output_padding=op).numpy()
    for impl, layout in ROUTES:
        with layouts(layout):
            got = conv.conv2d_input_grad(gy, w, ref.shape, *geo, impl=impl)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


ROUTES = [("reference", None), ("numba", "channels-first"), ("numba", "channels-last"),
          (None, "channels-last"), (None, "blocks")]


def conv_calls(x, w, gy, geo):
    """Every public convolution kernel on x, w and gy of geometry ``geo``, and on an empty
    batch, as {name: impl -> array}."""
    def gradients(x, gy, impl):
        return np.concatenate([a.ravel() for a in conv.conv2d_gradients(x, gy, w, *geo,
                                                                         impl=impl)])
    return {"conv2d": lambda impl: conv.conv2d(x, w, *geo, impl=impl),
            "input_grad": lambda impl: conv.conv2d_input_grad(gy, w, x.shape, *geo, impl=impl),
            "weight_grad": lambda impl: conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl=impl),
            "gradients": lambda impl: gradients(x, gy, impl),
            "empty": lambda impl: conv.conv2d(x[:0], w, *geo, impl=impl),
            "empty_input_grad": lambda impl: conv.conv2d_input_grad(gy[:0], w, x[:0].shape,
                                                                    *geo, impl=impl),
            "empty_weight_grad": lambda impl: conv.conv2d_weight_grad(x[:0], gy[:0], w.shape,
                                                                      *geo, impl=impl),
            "empty_gradients": lambda impl: gradients(x[:0], gy[:0], impl)}


@pytest.mark.parametrize("layout", ["channels-first", "channels-last", "blocks"])
@pytest.mark.parametrize("stride", [(1, 1), (2, 1)])
def test_layouts_agree_with_the_reference_on_nan_inf_and_empty(layout, stride):
    rng = np.random.default_rng(1)
    x, w = rng.normal(size=(2, 3, 6, 5)), rng.normal(size=(4, 3, 3, 3))
    x[0, 1, 2, 3], x[1, 0, 0, 0], x[1, 2, 5, 4], w[2, 1, 0, 2] = np.nan, np.inf, -np.inf, np.nan
    geo = (stride, (1, 1), (1, 1))
    gy = rng.normal(size=conv.conv2d(x, w, *geo, impl="reference").shape)
    gy[0, 1, 1, 1], gy[1, 3, 2, 0] = np.inf, np.nan
    for name, call in conv_calls(x, w, gy, geo).items():
        ref = call("reference")
        with layouts(layout), np.errstate(invalid="ignore"):
            got = call(None)
        assert got.shape == ref.shape and got.dtype == ref.dtype, name
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=name)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12, err_msg=name)


def test_bad_inputs_raise():
    x, w = np.zeros((1, 2, 5, 5)), np.zeros((3, 2, 3, 3))
    with pytest.raises(ValueError, match="conv2d: x has 3 channels but w expects 2"):
        conv.conv2d(np.zeros((1, 3, 5, 5)), w, (1, 1), (0, 0), (1, 1))
    with pytest.raises(TypeError, match="stride must be a 2-tuple"):
        conv.conv2d(x, w, 1, (0, 0), (1, 1))
    with pytest.raises(ValueError, match="does not fit"):
        conv.conv2d(x, w, (1, 1), (0, 0), (3, 3))
    with pytest.raises(ValueError, match=r"gy must have shape \(1, 3, 3, 3\)"):
        conv.conv2d_input_grad(np.zeros((1, 3, 4, 4)), w, x.shape, (1, 1), (0, 0), (1, 1))
    with pytest.raises(TypeError, match="same dtype"):
        conv.conv2d(x.astype(np.float32), w, (1, 1), (0, 0), (1, 1))


def test_patches_from_the_forward_give_the_weight_gradient(monkeypatch):
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)   # =reference builds no patch routes
    rng = np.random.default_rng(2)
    x, w = rng.normal(size=(3, 9, 7, 6)), rng.normal(size=(5, 9, 3, 2))
    geo = ((2, 1), (1, 0), (1, 2))
    y, patches = conv.conv2d(x, w, *geo, return_patches=True)
    assert patches is not None and patches.shape == (3 * y.shape[2] * y.shape[3], 9 * 3 * 2)
    gy = rng.normal(size=y.shape)
    ref = conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl="reference")
    np.testing.assert_allclose(conv.conv2d_weight_grad(x, gy, w.shape, *geo, patches=patches),
                               ref, rtol=1e-10, atol=1e-12)
    # patches of another geometry are not used
    np.testing.assert_allclose(conv.conv2d_weight_grad(x, gy, w.shape, *geo, patches=patches[1:]),
                               ref, rtol=1e-10, atol=1e-12)
    with layouts("channels-first"):     # per-image patches, reused the same way
        y, patches = conv.conv2d(x, w, *geo, return_patches=True)
        assert patches.shape == (3, 9 * 3 * 2, y.shape[2] * y.shape[3])
        np.testing.assert_allclose(conv.conv2d_weight_grad(x, gy, w.shape, *geo,
                                                           patches=patches),
                                   ref, rtol=1e-10, atol=1e-12)
    assert conv.conv2d(x, w, *geo, impl="reference", return_patches=True)[1] is None


def test_autograd_conv_with_many_channels_matches_torch():
    torch = pytest.importorskip("torch")
    from minigen import functional as F
    from minigen import tensor
    rng = np.random.default_rng(3)
    x, w, b = rng.normal(size=(2, 40, 6, 5)), rng.normal(size=(12, 40, 3, 3)), rng.normal(size=12)
    gy = rng.normal(size=(2, 12, 6, 5))
    xs, ws, bs = (tensor(a, requires_grad=True) for a in (x, w, b))
    F.conv2d(xs, ws, bs, padding=1).backward(tensor(gy))
    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, w, b))
    torch.nn.functional.conv2d(xt, wt, bt, padding=1).backward(torch.tensor(gy))
    for ours, theirs in ((xs, xt), (ws, wt), (bs, bt)):
        np.testing.assert_allclose(ours.grad.numpy(), theirs.grad.numpy(), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("geo", [((2, 2), (1, 1), (1, 1)), ((2, 1), (1, 0), (1, 2)),
                                 ((1, 3), (2, 1), (2, 1))])
def test_numba_channels_last_gather_and_scatter_match_the_reference(geo, dtype):
    # 9 channels: the channels-last patch rows (a Numba gather from NCHW x) and, for strides
    # above 1, the input gradient scattered back from channels-last rows (a Numba scatter)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 9, 7, 8)).astype(dtype)
    w = rng.normal(size=(5, 9, 3, 2)).astype(dtype)
    y = conv.conv2d(x, w, *geo, impl="reference")
    gy = rng.normal(size=y.shape).astype(dtype)
    tol = TOL[dtype]
    np.testing.assert_allclose(conv.conv2d(x, w, *geo, impl="numba"), y, **tol)
    np.testing.assert_allclose(conv.conv2d_input_grad(gy, w, x.shape, *geo, impl="numba"),
                               conv.conv2d_input_grad(gy, w, x.shape, *geo, impl="reference"),
                               **tol)
    np.testing.assert_allclose(conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl="numba"),
                               conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl="reference"),
                               **tol)


def test_backward_rows_is_gy_in_channels_last_memory_where_the_weight_gradient_reads_rows(
        monkeypatch):
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)    # impl=None: the default routes
    rng = np.random.default_rng(5)
    for channels, impl, moved in ((9, None, True), (9, "reference", False), (3, None, False)):
        x = rng.normal(size=(2, channels, 6, 6)).astype(np.float32)
        gy = rng.normal(size=(2, 4, 6, 6)).astype(np.float32)
        got = conv.backward_rows(x, gy, (4, channels, 3, 3), impl=impl)
        np.testing.assert_array_equal(got, gy)
        assert got.transpose(0, 2, 3, 1).flags.c_contiguous == moved
        assert (got is gy) != moved


@pytest.mark.parametrize("keep_channels_last", [False, True])
def test_blocks_of_several_images_and_a_shorter_last_one_match_the_reference(
        monkeypatch, keep_channels_last):
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    monkeypatch.setattr(conv, "KEEP_CHANNELS_LAST", keep_channels_last)
    rng = np.random.default_rng(6)
    x, w = rng.normal(size=(5, 9, 6, 7)), rng.normal(size=(4, 9, 3, 2))
    geo = ((1, 1), (1, 0), (2, 1))
    g = conv._geometry("test", x.shape, w.shape, *geo)
    y = conv.conv2d(x, w, *geo, impl="reference")
    gy = rng.normal(size=y.shape)
    image_bytes = g[13] * g[14] * 9 * 3 * 2 * x.itemsize        # one image's patch rows
    with layouts("blocks", block_bytes=2 * image_bytes + 1):
        assert [(a, b) for a, b, _ in conv.patch_blocks(x, g)] == [(0, 2), (2, 4), (4, 5)]
        got, patches = conv.conv2d(x, w, *geo, return_patches=True)
        assert patches is None          # the weight gradient rebuilds its blocks
        gx = conv.conv2d_input_grad(gy, w, x.shape, *geo)
        gw = conv.conv2d_weight_grad(x, gy, w.shape, *geo)
        both = conv.conv2d_gradients(x, gy, w, *geo)
    assert got.transpose(0, 2, 3, 1).flags.c_contiguous == keep_channels_last
    assert both[0].transpose(0, 2, 3, 1).flags.c_contiguous == keep_channels_last
    np.testing.assert_allclose(got, y, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gx, conv.conv2d_input_grad(gy, w, x.shape, *geo, impl="reference"),
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gw, conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl="reference"),
                               rtol=1e-10, atol=1e-12)
    for a, b in zip(both, (gx, gw)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_blocks_run_where_the_patch_matrix_would_reach_block_min_bytes(monkeypatch):
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    x, w = np.zeros((4, 16, 8, 8), np.float32), np.zeros((16, 16, 3, 3), np.float32)
    patch_bytes = 4 * 8 * 8 * 16 * 9 * 4
    for block_min, stride, blocked in ((patch_bytes, 1, True), (patch_bytes + 1, 1, False),
                                       (0, 2, False)):
        monkeypatch.setattr(conv, "BLOCK_MIN_BYTES", block_min)
        patches = conv.conv2d(x, w, (stride, stride), (1, 1), return_patches=True)[1]
        assert (patches is None) == blocked


def test_gradients_share_the_patch_rows_of_gy_only_where_x_and_gy_are_finite(monkeypatch):
    # the shared-patch route multiplies x by gy's zero padding: an inf in x there must not
    # make a nan that the reference (which never forms that product) does not have
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    rng = np.random.default_rng(7)
    x, w = rng.normal(size=(2, 3, 5, 5)), rng.normal(size=(4, 3, 3, 3))
    geo = ((1, 1), (1, 1), (1, 1))
    gy = rng.normal(size=(2, 4, 5, 5))
    x[1, 2, 0, 4] = np.inf
    ref = (conv.conv2d_input_grad(gy, w, x.shape, *geo, impl="reference"),
           conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl="reference"))
    with layouts("blocks"), np.errstate(invalid="ignore"):
        got = conv.conv2d_gradients(x, gy, w, *geo)
    for a, b in zip(got, ref):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
