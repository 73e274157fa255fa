"""kernels.softmax: softmax, log_softmax and fused cross-entropy against reference and torch."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.kernels import softmax as sm

numba = pytest.importorskip("numba")
TOL = {np.float64: dict(rtol=1e-10, atol=1e-12), np.float32: dict(rtol=1e-5, atol=1e-6)}

shapes = st.tuples(st.sampled_from([(), (0,), (1,), (3,), (2, 5)]),
                   st.sampled_from([1, 2, 255, 256, 257, 600]))


@settings(max_examples=25)
@given(shape=shapes, scale=st.sampled_from([1.0, 30.0, 1e4]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_numba_matches_reference(shape, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    lead, K = shape
    x = (scale * rng.normal(size=lead + (K,))).astype(dtype)
    gy = rng.normal(size=x.shape).astype(dtype)
    y = sm.softmax(x, impl="reference")
    ly = sm.log_softmax(x, impl="reference")
    tol = TOL[dtype]
    for name, ref in (("softmax", y), ("log_softmax", ly)):
        got = getattr(sm, name)(x, impl="numba")
        assert got.dtype == dtype and got.shape == x.shape
        atol = tol["atol"] * max(1.0, float(np.abs(ref).max(initial=0)))
        np.testing.assert_allclose(got, ref, rtol=tol["rtol"], atol=atol)
    for name, out in (("softmax_backward", y), ("log_softmax_backward", ly)):
        ref = getattr(sm, name)(out, gy, impl="reference")
        got = getattr(sm, name)(out, gy, impl="numba")
        atol = tol["atol"] * max(1.0, float(np.abs(ref).max(initial=0)))
        np.testing.assert_allclose(got, ref, rtol=tol["rtol"], atol=atol)


@settings(max_examples=25)
@given(N=st.sampled_from([0, 1, 7, 64]), K=st.sampled_from([1, 3, 257]),
       scale=st.sampled_from([1.0, 1e4]), ignore=st.sampled_from([None, -100, 0]),
       dtype=st.sampled_from([np.float32, np.float64]), seed=st.integers(0, 2 ** 16))
def test_cross_entropy_numba_matches_reference(N, K, scale, ignore, dtype, seed):
    rng = np.random.default_rng(seed)
    z = (scale * rng.normal(size=(N, K))).astype(dtype)
    t = rng.integers(0, K, N)
    if ignore == -100:
        t[rng.random(N) < 0.3] = -100
    g = rng.normal(size=N).astype(dtype)
    tol = TOL[dtype]
    ref = sm.cross_entropy(z, t, ignore, impl="reference")
    got = sm.cross_entropy(z, t, ignore, impl="numba")
    assert got.dtype == dtype
    np.testing.assert_allclose(got, ref, rtol=tol["rtol"],
                               atol=tol["atol"] * max(1.0, float(np.abs(ref).max(initial=0))))
    if ignore is not None:
        assert np.all(got[t == ignore] == 0)
    ref_g = sm.cross_entropy_backward(z, t, g, ignore, impl="reference")
    got_g = sm.cross_entropy_backward(z, t, g, ignore, impl="numba")
    np.testing.assert_allclose(got_g, ref_g, **tol)
    if ignore is not None:
        assert np.all(got_g[t == ignore] == 0)


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_extreme_logits(impl):
    z = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4], [1e4, 1e4 - 1, -1e4]])
    y = sm.softmax(z, impl=impl)
    np.testing.assert_allclose(y[0], [1, 0, 0])
    np.testing.assert_allclose(y[1], [1 / 3] * 3)
    np.testing.assert_allclose(y[2, :2], [1 / (1 + np.exp(-1)), 1 / (1 + np.exp(1))])
    ly = sm.log_softmax(z, impl=impl)
    assert np.all(np.isfinite(ly))
    np.testing.assert_allclose(ly[0], [0, -2e4, -1e4])
    loss = sm.cross_entropy(z, np.array([1, 0, 0]), impl=impl)
    # logsumexp - z_t cancels terms of size 1e4: the error scale is 1e4 * machine epsilon
    np.testing.assert_allclose(loss, [2e4, np.log(3), np.log1p(np.exp(-1))],
                               rtol=1e-12, atol=1e4 * 8 * np.finfo(float).eps)


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_matches_torch(impl):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(40, 300)) * 5
    t = rng.integers(0, 300, 40)
    t[::5] = -100
    gy = rng.normal(size=z.shape)
    zt = torch.tensor(z, requires_grad=True)
    yt = torch.softmax(zt, -1)
    yt.backward(torch.tensor(gy))
    y = sm.softmax(z, impl=impl)
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(sm.softmax_backward(y, gy, impl=impl), zt.grad.numpy(),
                               rtol=1e-10, atol=1e-14)
    zt.grad = None
    lt = torch.log_softmax(zt, -1)
    lt.backward(torch.tensor(gy))
    ly = sm.log_softmax(z, impl=impl)
    np.testing.assert_allclose(ly, lt.detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(sm.log_softmax_backward(ly, gy, impl=impl), zt.grad.numpy(),
                               rtol=1e-10, atol=1e-12)
    zt.grad = None
    g = rng.normal(size=40)
    ct = torch.nn.functional.cross_entropy(zt, torch.tensor(t), ignore_index=-100,
                                           reduction="none")
    ct.backward(torch.tensor(g))
    np.testing.assert_allclose(sm.cross_entropy(z, t, -100, impl=impl), ct.detach().numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(sm.cross_entropy_backward(z, t, g, -100, impl=impl),
                               zt.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_bad_inputs_raise():
    z = np.zeros((3, 4))
    with pytest.raises(TypeError, match="softmax: x must be a float32 or float64"):
        sm.softmax(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="softmax_backward: y and gy"):
        sm.softmax_backward(z, np.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"cross_entropy: targets must be an integer array"):
        sm.cross_entropy(z, np.zeros(3))
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\)"):
        sm.cross_entropy(z, np.array([0, 4, 1]))
    with pytest.raises(ValueError, match=r"g must have shape \(3,\)"):
        sm.cross_entropy_backward(z, np.array([0, 1, 2]), np.zeros(2))


def masks(rng, b, h, t):
    """The masks attention builds, as (name, boolean mask broadcastable to (b, h, t, t))."""
    causal = np.triu(np.ones((t, t), bool), 1)[None, None]
    pad = rng.random((b, 1, 1, t)) < 0.4
    pad[0] = True                                     # a batch row with every key padding
    return [("causal", causal), ("padding", pad), ("both", causal | pad),
            ("per query", rng.random((b, 1, t, 1)) < 0.3),        # the last axis broadcast
            ("full", rng.random((b, h, t, t)) < 0.5), ("none", np.zeros(t, bool))]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("t", [1, 5, 300])
def test_masked_softmax_numba_matches_reference(dtype, t):
    rng = np.random.default_rng(t)
    x = (5 * rng.normal(size=(3, 2, t, t))).astype(dtype)
    for name, mask in masks(rng, 3, 2, t):
        ref = sm.masked_softmax(x, mask, impl="reference")
        got = sm.masked_softmax(x, mask, impl="numba")
        assert got.dtype == dtype and got.shape == x.shape, name
        np.testing.assert_allclose(got, ref, **TOL[dtype], err_msg=name)
        full = np.broadcast_to(mask, x.shape)
        assert np.all(got[full] == 0), name                # masked weights are exactly 0
        rows = ~full.all(-1)
        np.testing.assert_allclose(got.sum(-1)[rows], 1, rtol=1e-5)


def test_masked_softmax_nonfinite_and_empty_rows_match_reference():
    x = np.array([[np.nan, 1.0, 2.0, 3.0],        # NaN kept: the row is NaN
                  [1.0, np.nan, 2.0, 3.0],        # NaN masked: ignored
                  [np.inf, 0.0, 1.0, 2.0],        # +inf kept: NaN, as exp(inf - inf)
                  [-np.inf, -np.inf, 5.0, 1.0],   # -inf kept among finite: weight 0
                  [-np.inf, -np.inf, 5.0, 1.0],   # every kept entry -inf: NaN
                  [3.0, 2.0, 1.0, 0.0]],          # every entry masked: 0
                 dtype=np.float32)
    mask = np.array([[0, 0, 0, 1], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 1],
                     [1, 1, 1, 1]], bool)
    ref = sm.masked_softmax(x, mask, impl="reference")
    got = sm.masked_softmax(x, mask, impl="numba")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[~np.isnan(ref)], ref[~np.isnan(ref)], rtol=1e-6)
    assert np.isnan(got[0]).all() and np.isnan(got[2]).all() and np.isnan(got[4]).all()
    np.testing.assert_array_equal(got[5], 0)
    for impl in ("reference", "numba"):
        empty = sm.masked_softmax(np.zeros((0, 3), np.float32), np.zeros(3, bool), impl=impl)
        assert empty.shape == (0, 3) and empty.dtype == np.float32


def test_masked_softmax_rejects_a_mask_that_does_not_broadcast():
    with pytest.raises(ValueError, match=r"masked_softmax: mask of shape \(3,\) does not"):
        sm.masked_softmax(np.zeros((2, 4)), np.zeros(3, bool))


@pytest.mark.parametrize("K", [3, sm.SHORT_ROW, sm.SHORT_ROW + 1])
def test_short_and_long_rows_take_their_kernels_and_agree(K, monkeypatch):
    """Rows up to SHORT_ROW go through the four-pass (masked) kernel, longer ones through
    the online one; both agree with the reference."""
    rng = np.random.default_rng(K)
    x = (10 * rng.normal(size=(3, K))).astype(np.float32)
    x[1, K // 2] = np.nan
    calls = []
    real = sm.masked_softmax
    monkeypatch.setattr(sm, "masked_softmax", lambda *a, **k: calls.append(1) or real(*a, **k))
    got = sm.softmax(x, impl="numba")
    assert calls == ([1] if K <= sm.SHORT_ROW else [])
    ref = sm.softmax(x, impl="reference")
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    np.testing.assert_allclose(got[[0, 2]], ref[[0, 2]], rtol=1e-5, atol=1e-7)
