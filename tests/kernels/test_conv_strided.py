"""kernels.conv: strided convolutions in image blocks (patch rows rebuilt per block for the
weight gradient, patch-gradient rows scattered back per block for the input gradient) against
the textbook route, on the Numba path and on NumPy alone."""
import os
import subprocess
import sys

import numpy as np
import pytest

from minigen.kernels import _dispatch, conv

from tests.kernels.test_conv import conv_calls

TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-5)}
# (x shape, w shape, stride, padding, dilation): odd sizes at stride 2, unequal strides (a
# stride mixed up between the axes shows), padding 0 and 1, dilation on either axis
GEOMETRIES = [((5, 9, 7, 9), (4, 9, 3, 3), (2, 2), (1, 1), (1, 1)),
              ((5, 9, 8, 7), (3, 9, 3, 2), (2, 1), (0, 1), (1, 2)),
              ((5, 10, 11, 6), (5, 10, 2, 3), (3, 2), (0, 2), (2, 1)),
              ((5, 8, 9, 9), (2, 8, 3, 3), (1, 2), (1, 0), (1, 1))]


@pytest.fixture(params=["numba", "numpy"])
def path(request, monkeypatch):
    """The default route (impl=None) on the Numba path ('numba', forced by MINIGEN_KERNELS as
    these sizes are below its threshold: the per-block scatter is the Numba kernel) or as
    without Numba ('numpy': numba_available() False, the scatter is NumPy's slice adds),
    strided kernels in blocks from any size on."""
    if request.param == "numba":
        pytest.importorskip("numba")
        monkeypatch.setenv("MINIGEN_KERNELS", "numba")
    else:
        monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
        monkeypatch.setitem(_dispatch._state, "numba", False)
    monkeypatch.setattr(conv, "STRIDED_BLOCK_MIN_BYTES", 0)
    monkeypatch.setattr(conv, "numba_threads", lambda: 1)
    return request.param


def _two_images_per_block(monkeypatch, g, itemsize):
    image = g[13] * g[14] * g[5] * g[6] * g[1] * itemsize      # one image's patch rows
    monkeypatch.setattr(conv, "STRIDED_BLOCK_BYTES", 2 * image + 1)


def _reference(x, w, gy, geo):
    return (conv.conv2d(x, w, *geo, impl="reference"),
            conv.conv2d_input_grad(gy, w, x.shape, *geo, impl="reference"),
            conv.conv2d_weight_grad(x, gy, w.shape, *geo, impl="reference"))


@pytest.mark.parametrize("keep_channels_last", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("x_shape, w_shape, stride, padding, dilation", GEOMETRIES)
def test_strided_blocks_match_the_reference(path, monkeypatch, x_shape, w_shape, stride,
                                            padding, dilation, dtype, keep_channels_last):
    monkeypatch.setattr(conv, "KEEP_CHANNELS_LAST", keep_channels_last)
    rng = np.random.default_rng(11)
    x = rng.normal(size=x_shape).astype(dtype)
    w = rng.normal(size=w_shape).astype(dtype)
    geo = (stride, padding, dilation)
    g = conv._geometry("test", x.shape, w.shape, *geo)
    _two_images_per_block(monkeypatch, g, x.itemsize)
    assert [(a, b) for a, b, _ in conv.patch_blocks(x, g)] == [(0, 2), (2, 4), (4, 5)]
    y_ref = conv.conv2d(x, w, *geo, impl="reference")
    gy = rng.normal(size=y_ref.shape).astype(dtype)
    _, gx_ref, gw_ref = _reference(x, w, gy, geo)
    y, patches = conv.conv2d(x, w, *geo, return_patches=True)
    assert patches is None                  # the blocks ran: no patch matrix is kept
    got = {"y": y, "gx": conv.conv2d_input_grad(gy, w, x.shape, *geo),
           "gw": conv.conv2d_weight_grad(x, gy, w.shape, *geo)}
    got["both_gx"], got["both_gw"] = conv.conv2d_gradients(x, gy, w, *geo)
    # gy in channels-last memory (as a channels-last layer hands it on): its rows are a view
    gy_last = np.ascontiguousarray(gy.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    got["last_gx"], got["last_gw"] = conv.conv2d_gradients(x, gy_last, w, *geo)
    want = {"y": y_ref, "gx": gx_ref, "gw": gw_ref, "both_gx": gx_ref, "both_gw": gw_ref,
            "last_gx": gx_ref, "last_gw": gw_ref}
    for name, value in got.items():
        assert value.dtype == dtype and value.shape == want[name].shape, name
        np.testing.assert_allclose(value, want[name], err_msg=name, **TOL[dtype])


@pytest.mark.parametrize("stride", [(2, 2), (2, 1)])
def test_strided_blocks_agree_with_the_reference_on_nan_inf_and_empty(path, monkeypatch,
                                                                     stride):
    # the blocks form the same products as the textbook route (zeros for the padding in the
    # patches, the padding's gradient dropped), so NaN and inf land in the same places
    rng = np.random.default_rng(12)
    x, w = rng.normal(size=(5, 9, 7, 6)), rng.normal(size=(4, 9, 3, 3))
    x[0, 1, 2, 3], x[3, 0, 0, 0], x[4, 2, 6, 5], w[2, 1, 0, 2] = np.nan, np.inf, -np.inf, np.nan
    geo = (stride, (1, 1), (1, 1))
    _two_images_per_block(monkeypatch, conv._geometry("test", x.shape, w.shape, *geo), 8)
    gy = rng.normal(size=conv.conv2d(x, w, *geo, impl="reference").shape)
    gy[1, 1, 1, 1], gy[4, 3, 2, 0] = np.inf, np.nan
    for name, call in conv_calls(x, w, gy, geo).items():
        with np.errstate(invalid="ignore"):
            ref, got = call("reference"), call(None)
        assert got.shape == ref.shape and got.dtype == ref.dtype, name
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref), err_msg=name)
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12, err_msg=name)


def test_strided_blocks_run_from_strided_block_min_bytes_on_one_thread(monkeypatch):
    monkeypatch.delenv("MINIGEN_KERNELS", raising=False)
    monkeypatch.setattr(conv, "numba_threads", lambda: 1)
    x = np.zeros((4, 16, 9, 9), np.float32)
    patch_bytes = 4 * 5 * 5 * 16 * 9 * 4             # 3x3, stride 2, padding 1: 5x5 outputs
    cases = [((16, 16, 3, 3), 2, patch_bytes, True), ((16, 16, 3, 3), 2, patch_bytes + 1, False),
             ((16, 16, 1, 1), 2, 0, False),         # a 1x1 kernel's patches are x subsampled
             ((16, 16, 3, 3), 1, 0, False)]         # stride 1 follows BLOCK_MIN_BYTES
    for w_shape, stride, block_min, blocked in cases:
        monkeypatch.setattr(conv, "STRIDED_BLOCK_MIN_BYTES", block_min)
        patches = conv.conv2d(x, np.zeros(w_shape, np.float32), (stride, stride), (1, 1),
                              return_patches=True)[1]
        assert (patches is None) == blocked, (w_shape, stride, block_min)
    monkeypatch.setattr(conv, "STRIDED_BLOCK_MIN_BYTES", 0)
    w = np.zeros((16, 16, 3, 3), np.float32)
    monkeypatch.setattr(conv, "numba_threads", lambda: 2)     # two threads: the whole matrix
    assert conv.conv2d(x, w, (2, 2), (1, 1), return_patches=True)[1] is not None
    monkeypatch.setattr(conv, "numba_threads", lambda: 1)
    monkeypatch.setattr(conv, "NHWC_MIN_CHANNELS", 17)     # fewer channels: per-image patches
    assert conv.conv2d(x, w, (2, 2), (1, 1), return_patches=True)[1] is not None


def test_pool_threads_is_numbas_thread_count():
    numba = pytest.importorskip("numba")
    assert conv.numba_threads() == numba.get_num_threads()


def test_asking_the_thread_count_first_keeps_the_workqueue_layer():
    """A strided convolution asks Numba's thread count before any kernel is built; that
    starts Numba's threads, so the threading layer must be chosen before (workqueue: an idle
    OpenMP pool spins and starves OpenBLAS)."""
    pytest.importorskip("numba")
    code = ("import numpy as np, numba\n"
            "from minigen.kernels import conv\n"
            "x, w = np.ones((128, 32, 28, 28), np.float32), np.ones((64, 32, 3, 3), np.float32)\n"
            "conv.conv2d(x, w, (2, 2), (1, 1))\n"
            "print(numba.threading_layer())\n")
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_THREADING_LAYER", "MINIGEN_KERNELS")}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split()[-1] == "workqueue"


def test_the_textbook_route_stays_textbook(monkeypatch):
    # MINIGEN_KERNELS=reference: no blocks, whatever the thresholds
    monkeypatch.setenv("MINIGEN_KERNELS", "reference")
    monkeypatch.setattr(conv, "STRIDED_BLOCK_MIN_BYTES", 0)
    calls = []
    monkeypatch.setattr(conv, "_strided_gradients", lambda *a, **k: calls.append(a))
    monkeypatch.setattr(conv, "patch_blocks", lambda *a, **k: calls.append(a))
    rng = np.random.default_rng(13)
    x, w = rng.normal(size=(3, 9, 7, 7)), rng.normal(size=(4, 9, 3, 3))
    y = conv.conv2d(x, w, (2, 2), (1, 1))
    gx, gw = conv.conv2d_gradients(x, np.ones_like(y), w, (2, 2), (1, 1))
    assert not calls and gx.shape == x.shape and gw.shape == w.shape


@pytest.mark.parametrize("stride, dilation", [((2, 2), (1, 1)), ((2, 3), (2, 1))])
def test_strided_blocks_differentiate_twice(path, monkeypatch, stride, dilation):
    # Conv2d.backward takes conv2d_gradients (both blocked gradients at once); the double
    # backward goes through conv2d_input_grad / conv2d_weight_grad, each blocked on its own
    from minigen import functional as F
    from minigen.testing import gradcheck, gradgradcheck
    monkeypatch.setattr(conv, "NHWC_MIN_CHANNELS", 1)
    monkeypatch.setattr(conv, "STRIDED_BLOCK_BYTES", 1)       # one image per block
    rng = np.random.default_rng(14)
    x, w = rng.standard_normal((3, 2, 7, 6)), rng.standard_normal((2, 2, 3, 2))
    geo = dict(stride=stride, padding=1, dilation=dilation)

    def conv_net(xt, wt):
        return F.conv2d(xt, wt, **geo)
    gradcheck(conv_net, [x, w])
    gradgradcheck(conv_net, [x, w])
