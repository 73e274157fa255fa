"""kernels.norm: layer and group normalisation forward and backward against the engine's
``Norm``/``NormBackward`` and across the kernel paths, NaN, inf and empty included."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigen as mg
from minigen import functional as F
from minigen.kernels import norm

from tests.helpers import run_simulator_cases, sim

EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}


def assert_close(got, want, dtype, scale):
    """Equal NaN pattern and non-finite values; finite values within 64 ulp of ``scale``.
    The reference accumulates the statistics in the input's dtype, the kernels in float64: in
    float32 the reference's mean and variance of M entries err by up to ~sqrt(M) ulp (pairwise
    sums), which x_hat and the gradients carry, times the magnitudes the callers pass."""
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    assert np.array_equal(got[~finite], want[~finite], equal_nan=True)
    np.testing.assert_allclose(got[finite], want[finite], rtol=64 * EPS[dtype],
                               atol=64 * EPS[dtype] * scale)


def data(shape, channels, dtype, seed, nonfinite):
    rng = np.random.default_rng(seed)
    x = (3 * rng.normal(size=shape) + 2).astype(dtype)
    w, b = (rng.normal(size=channels).astype(dtype) for _ in range(2))
    gy = rng.normal(size=shape).astype(dtype)
    if nonfinite and x.size >= 3:
        x.reshape(-1)[rng.choice(x.size, 2, replace=False)] = [np.nan, np.inf]
    return x, w, b, gy


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_reference_equals_engine(affine):
    x, w, b, gy = data((3, 4, 9), 9, np.float64, 0, False)
    xt, wt, bt = (mg.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.layer_norm(xt, 9, wt if affine else None, bt if affine else None, eps=1e-3)
    grads = mg.grad(y, [xt, wt, bt], grad_outputs=mg.tensor(gy), allow_unused=True)
    want_y, mu, r = norm.reference_norm(x, (12, 1, 1, 9), (1, 1, 1, 9), w if affine else None,
                                        b if affine else None, eps=1e-3)
    np.testing.assert_allclose(want_y, y.data, rtol=1e-13, atol=1e-13)
    got = norm.reference_norm_backward(x, gy, mu, r, (12, 1, 1, 9), (1, 1, 1, 9),
                                       w if affine else None)
    for g, want in zip(got, grads if affine else grads[:1]):
        np.testing.assert_allclose(g, want.data, rtol=1e-12, atol=1e-12)


def test_group_norm_reference_equals_engine():
    x, w, b, gy = data((2, 6, 3, 5), 6, np.float64, 1, False)
    xt, wt, bt = (mg.tensor(a, requires_grad=True) for a in (x, w, b))
    y = F.group_norm(xt, 3, wt, bt, eps=1e-4)
    grads = mg.grad(y, [xt, wt, bt], grad_outputs=mg.tensor(gy))
    got_y, mu, r = norm.group_norm(x, 3, w, b, eps=1e-4, impl="reference")
    np.testing.assert_allclose(got_y, y.data, rtol=1e-13, atol=1e-13)
    for g, want in zip(norm.group_norm_backward(x, gy, mu, r, 3, w, impl="reference"), grads):
        np.testing.assert_allclose(g, want.data, rtol=1e-12, atol=1e-12)


@settings(max_examples=25)
@given(shape=st.sampled_from([(0, 7), (4, 1), (5, 33), (2, 3, 127), (70, 129)]),
       dtype=st.sampled_from([np.float32, np.float64]), affine=st.booleans(),
       nonfinite=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_layer_norm_numba_matches_reference(shape, dtype, affine, nonfinite, seed):
    pytest.importorskip("numba")
    x, w, b, gy = data(shape, shape[-1], dtype, seed, nonfinite)
    w, b = (w, b) if affine else (None, None)
    with np.errstate(invalid="ignore"):
        want = norm.layer_norm(x, w, b, impl="reference")
        got = norm.layer_norm(x, w, b, impl="numba")
        for g, v in zip(got, want):
            assert_close(g, v, dtype, 4.0)       # |x_hat w + b| stays within a few units
        want_g = norm.layer_norm_backward(x, gy, *want[1:], w, impl="reference")
        got_g = norm.layer_norm_backward(x, gy, *want[1:], w, impl="numba")
    rows = max(1, x.size // max(1, shape[-1]))
    for g, v, scale in zip(got_g, want_g, (4.0, 4.0 * rows, 4.0 * rows)):   # gw, gb: row sums
        assert_close(g, v, dtype, scale)


@settings(max_examples=25)
@given(shape=st.sampled_from([(0, 4, 3), (1, 4), (3, 6, 5), (2, 8, 3, 7), (5, 4, 300),
                              (300, 4, 5)]),   # 300 groups: a task sums several
       groups=st.sampled_from([1, 2, 4]), dtype=st.sampled_from([np.float32, np.float64]),
       affine=st.booleans(), nonfinite=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_group_norm_numba_matches_reference(shape, groups, dtype, affine, nonfinite, seed):
    pytest.importorskip("numba")
    if shape[1] % groups:
        groups = 1
    x, w, b, gy = data(shape, shape[1], dtype, seed, nonfinite)
    w, b = (w, b) if affine else (None, None)
    with np.errstate(invalid="ignore"):
        want = norm.group_norm(x, groups, w, b, impl="reference")
        got = norm.group_norm(x, groups, w, b, impl="numba")
        for g, v in zip(got, want):
            assert_close(g, v, dtype, 4.0)
        want_g = norm.group_norm_backward(x, gy, *want[1:], groups, w, impl="reference")
        got_g = norm.group_norm_backward(x, gy, *want[1:], groups, w, impl="numba")
    per_channel = max(1, x.size // max(1, shape[1]))
    for g, v, scale in zip(got_g, want_g, (4.0, 4.0 * per_channel, 4.0 * per_channel)):
        assert_close(g, v, dtype, scale)


def test_bad_arguments_raise():
    x = np.zeros((2, 4, 3))
    with pytest.raises(ValueError, match="group_norm: num_groups must be a positive int"):
        norm.group_norm(x, 3)
    with pytest.raises(ValueError, match=r"layer_norm: weight must have shape \(3,\)"):
        norm.layer_norm(x, np.ones(4))
    with pytest.raises(ValueError, match="layer_norm: eps must be a finite number >= 0"):
        norm.layer_norm(x, eps=-1.0)
    with pytest.raises(ValueError, match=r"layer_norm_backward: rstd must have shape \(2, 4\)"):
        norm.layer_norm_backward(x, x, np.zeros((2, 4)), np.zeros(2))


def test_cuda_under_simulator():
    run_simulator_cases(__file__)


@sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sim_norms(dtype):
    for seed, (shape, groups) in enumerate([((0, 2, 3), 1), ((3, 4, 5), 2), ((2, 2, 7), 1)]):
        x, w, b, gy = data(shape, shape[1], dtype, seed, nonfinite=seed == 2)
        want = norm.group_norm(x, groups, w, b, impl="reference")
        for g, v in zip(norm.group_norm(x, groups, w, b, impl="cuda"), want):
            assert_close(g, v, dtype, 4.0)
        for g, v in zip(norm.group_norm_backward(x, gy, *want[1:], groups, w, impl="cuda"),
                        norm.group_norm_backward(x, gy, *want[1:], groups, w, impl="reference")):
            assert_close(g, v, dtype, 4.0 * 15)
        lw, lb = w[:1].repeat(shape[-1]), b[:1].repeat(shape[-1])
        want = norm.layer_norm(x, lw, lb, impl="reference")
        for g, v in zip(norm.layer_norm(x, lw, lb, impl="cuda"), want):
            assert_close(g, v, dtype, 4.0)
        for g, v in zip(norm.layer_norm_backward(x, gy, *want[1:], lw, impl="cuda"),
                        norm.layer_norm_backward(x, gy, *want[1:], lw, impl="reference")):
            assert_close(g, v, dtype, 4.0 * 6)


# --- group norm + shift + activation in one kernel ----------------------------------------
ACTS = [None, "relu", "silu", "gelu"]


def act_data(shape, groups, dtype, seed, nonfinite, shift_rows):
    """x, w, b, gy as ``data``, a shift of ``shift_rows`` rows ('none', 'one' or 'each')."""
    x, w, b, gy = data(shape, shape[1], dtype, seed, nonfinite)
    rows = {"none": None, "one": 1, "each": shape[0]}[shift_rows]
    shift = None if rows is None else \
        np.random.default_rng(seed + 1).normal(size=(rows, shape[1])).astype(dtype)
    return x, w, b, shift, gy


def assert_act_grads_close(got_g, want_g, size, shape, dtype, shift_rows):
    """(gx, gw, gb, gshift) against the reference's, each within ``assert_close``'s bound
    scaled by the number of terms its sums add: per (sample, channel), per channel over the
    batch, and for a one-row shift over the batch too."""
    entries = max(1, size // max(1, shape[0] * shape[1]))       # per (sample, channel)
    per_channel = entries * shape[0]
    for g, v, scale in zip(got_g, want_g, (8.0, 8.0 * per_channel, 8.0 * per_channel,
                                           8.0 * entries * (1 if shift_rows == "each"
                                                            else shape[0]))):
        if v is None:
            assert g is None and shift_rows == "none"
        else:
            assert_close(g, v, dtype, scale)


def check_act_paths(impl, shape, groups, dtype, act, shift_rows, nonfinite, seed, affine=True):
    """group_norm_act and its backward on ``impl`` against the reference: NaN positions,
    non-finite values and finite values within ``assert_close``'s bound."""
    x, w, b, shift, gy = act_data(shape, groups, dtype, seed, nonfinite, shift_rows)
    w, b = (w, b) if affine else (None, None)
    with np.errstate(invalid="ignore", over="ignore"):
        want = norm.group_norm_act(x, groups, w, b, shift, 1e-5, act, impl="reference")
        got = norm.group_norm_act(x, groups, w, b, shift, 1e-5, act, impl=impl)
        for g, v in zip(got, want):
            assert_close(g, v, dtype, 8.0)           # |a| = |x_hat w + b + shift| <~ 8
        args = (groups, w, b, shift, act)
        want_g = norm.group_norm_act_backward(x, gy, *want[1:], *args, impl="reference")
        got_g = norm.group_norm_act_backward(x, gy, *want[1:], *args, impl=impl)
    assert_act_grads_close(got_g, want_g, x.size, shape, dtype, shift_rows)


@settings(max_examples=40)
@given(shape=st.sampled_from([(0, 4, 3), (2, 0, 5), (3, 4, 0), (1, 4), (3, 6, 5),
                              (2, 8, 3, 7), (5, 4, 300), (130, 4, 2, 3)]),
       groups=st.sampled_from([1, 2, 4]), dtype=st.sampled_from([np.float32, np.float64]),
       act=st.sampled_from(ACTS), shift_rows=st.sampled_from(["none", "one", "each"]),
       affine=st.booleans(), nonfinite=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_group_norm_act_numba_matches_reference(shape, groups, dtype, act, shift_rows,
                                                affine, nonfinite, seed):
    pytest.importorskip("numba")
    if shape[1] % groups:
        groups = 1
    check_act_paths("numba", shape, groups, dtype, act, shift_rows, nonfinite, seed, affine)


@pytest.mark.parametrize("parallel_min", [(0, 0), (1 << 40, 1 << 40)])
def test_group_norm_act_prange_kernels_and_serial_twins_match_reference(parallel_min,
                                                                        monkeypatch):
    """Both compiled forms of each kernel, whichever the size threshold picks by default."""
    pytest.importorskip("numba")
    monkeypatch.setattr(norm, "PARALLEL_MIN", parallel_min)
    for seed, (shape, act, rows) in enumerate([((130, 4, 2, 3), "silu", "each"),
                                               ((5, 4, 30), "gelu", "one"),
                                               ((3, 6, 5), None, "none")]):
        for dtype in (np.float32, np.float64):
            check_act_paths("numba", shape, 2, dtype, act, rows, seed == 0, seed)


def test_group_norm_act_reference_is_the_unfused_sequence():
    """The reference: group_norm, + shift[n, c], then the activation, each as it runs alone;
    its backward is bias_act's backward, then group_norm's, and the per-(n, c) sums."""
    from minigen.kernels import elementwise
    x, w, b, shift, gy = act_data((3, 4, 5), 2, np.float64, 0, False, "each")
    y, mu, r = norm.group_norm_act(x, 2, w, b, shift, 1e-5, "silu", impl="reference")
    z, mu_, r_ = norm.group_norm(x, 2, w, b, 1e-5, impl="reference")
    a = z + shift[:, :, None]
    np.testing.assert_array_equal(y, elementwise.bias_act(a, None, "silu", impl="reference"))
    np.testing.assert_array_equal(mu, mu_)
    gx, gw, gb, gs = norm.group_norm_act_backward(x, gy, mu, r, 2, w, b, shift, "silu",
                                                  impl="reference")
    ga = elementwise.bias_act_backward(a, gy, None, "silu", impl="reference")[0]
    for got, want in zip((gx, gw, gb), norm.group_norm_backward(x, ga, mu, r, 2, w,
                                                                impl="reference")):
        np.testing.assert_allclose(got, want, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(gs, ga.sum(axis=2), rtol=1e-14, atol=1e-14)
    one = norm.group_norm_act_backward(x, gy, mu, r, 2, w, b, shift[:1], "silu",
                                       impl="reference")[3]
    assert one.shape == (1, 4)


def test_group_norm_act_bad_arguments_raise():
    x = np.zeros((2, 4, 3))
    with pytest.raises(ValueError, match=r"group_norm_act: shift must have shape \(2, 4\) or "
                                         r"\(1, 4\), got \(2, 3\)"):
        norm.group_norm_act(x, 2, shift=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="group_norm_act: activation must be None or one of"):
        norm.group_norm_act(x, 2, activation="tanh")
    with pytest.raises(TypeError, match="group_norm_act: shift must be a float32 or float64"):
        norm.group_norm_act(x, 2, shift=np.zeros((2, 4), int))
    with pytest.raises(ValueError, match=r"group_norm_act_backward: mu must have shape \(2, 2\)"):
        norm.group_norm_act_backward(x, x, np.zeros(2), np.zeros((2, 2)), 2)


@sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sim_group_norm_act(dtype):
    # several samples and groups, so a wrong sample or group index reads another's w, b, shift
    cases = [((0, 2, 3), 1, "silu", "each", False), ((3, 4, 5), 2, "silu", "each", False),
             ((2, 6, 2, 2), 3, "relu", "one", False), ((3, 4, 5), 2, None, "each", False),
             ((2, 4, 7), 2, "gelu", "none", False), ((3, 4, 5), 2, "silu", "each", True)]
    for seed, (shape, groups, act, shift_rows, nonfinite) in enumerate(cases):
        check_act_paths("cuda", shape, groups, dtype, act, shift_rows, nonfinite, seed)


# --- group_norm_act on channels-last memory -----------------------------------------------
def check_channels_last(impl, shape, groups, dtype, act, shift_rows, nonfinite, seed,
                        affine=True, gy_last=True):
    """group_norm_act and its backward on x laid out channels-last (and gy channels-last or
    NCHW) against the reference on the NCHW x: the same values within ``assert_close``'s
    bound, and y and gx laid out as x."""
    x, w, b, shift, gy = act_data(shape, groups, dtype, seed, nonfinite, shift_rows)
    w, b = (w, b) if affine else (None, None)
    x_last = norm.to_channels_last(x)
    assert norm.channels_last(x_last) or x.size == 0
    with np.errstate(invalid="ignore", over="ignore"):
        want = norm.group_norm_act(x, groups, w, b, shift, 1e-5, act, impl="reference")
        got = norm.group_norm_act(x_last, groups, w, b, shift, 1e-5, act, impl=impl)
        args = (groups, w, b, shift, act)
        want_g = norm.group_norm_act_backward(x, gy, *want[1:], *args, impl="reference")
        got_g = norm.group_norm_act_backward(x_last, norm.to_channels_last(gy) if gy_last
                                             else gy, *want[1:], *args, impl=impl)
    for y in (got[0], got_g[0]):
        assert y.shape == x.shape and (norm.channels_last(y) or x.size == 0)
    for g, v in zip(got, want):
        assert_close(g, v, dtype, 8.0)
    assert_act_grads_close(got_g, want_g, x.size, shape, dtype, shift_rows)


@settings(max_examples=40)
@given(shape=st.sampled_from([(0, 4, 3, 2), (2, 8, 0, 3), (3, 6, 5, 1), (2, 8, 3, 7),
                              (4, 16, 4, 4), (5, 4, 2, 3, 2)]),
       groups=st.sampled_from([1, 2, 4]), dtype=st.sampled_from([np.float32, np.float64]),
       act=st.sampled_from(ACTS + ["gelu_tanh"]),
       shift_rows=st.sampled_from(["none", "one", "each"]), affine=st.booleans(),
       nonfinite=st.booleans(), gy_last=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_group_norm_act_channels_last_numba_matches_reference(shape, groups, dtype, act,
                                                              shift_rows, affine, nonfinite,
                                                              gy_last, seed):
    pytest.importorskip("numba")
    if shape[1] % groups:
        groups = 1
    check_channels_last("numba", shape, groups, dtype, act, shift_rows, nonfinite, seed,
                        affine, gy_last)


@pytest.mark.parametrize("parallel_min", [(0, 0), (1 << 40, 1 << 40)])
def test_group_norm_act_channels_last_prange_kernels_and_serial_twins(parallel_min,
                                                                     monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setattr(norm, "PARALLEL_MIN", parallel_min)
    # 8 channels in 4 groups, so a group that reads its neighbour's channels is caught
    for seed, (shape, act, rows) in enumerate([((9, 8, 3, 5), "silu", "each"),
                                               ((5, 8, 4, 2), "gelu", "one"),
                                               ((3, 8, 5, 3), None, "none")]):
        for dtype in (np.float32, np.float64):
            check_channels_last("numba", shape, 4, dtype, act, rows, seed == 0, seed)


def test_group_norm_act_reference_keeps_the_layout():
    """The reference hands y and gx back in x's layout (its reshapes may view channels-last
    x in another order, so the sums may round differently: ``assert_close``)."""
    x, w, b, shift, gy = act_data((3, 8, 4, 5), 4, np.float64, 0, False, "each")
    y, mu, r = norm.group_norm_act(x, 4, w, b, shift, impl="reference")
    y_last, mu_last, r_last = norm.group_norm_act(norm.to_channels_last(x), 4, w, b, shift,
                                                  impl="reference")
    assert norm.channels_last(y_last) and y.flags.c_contiguous
    for got, want in ((y_last, y), (mu_last, mu), (r_last, r)):
        assert_close(got, want, np.float64, 8.0)
    grads = norm.group_norm_act_backward(x, gy, mu, r, 4, w, b, shift, impl="reference")
    grads_last = norm.group_norm_act_backward(norm.to_channels_last(x), gy, mu, r, 4, w, b,
                                              shift, impl="reference")
    assert norm.channels_last(grads_last[0])
    for g, g_last, scale in zip(grads, grads_last, (8.0, 8.0 * 60, 8.0 * 60, 8.0 * 20)):
        assert_close(g_last, g, np.float64, scale)


def test_channels_last_detection():
    x = np.zeros((2, 3, 4, 5))
    assert not norm.channels_last(x)
    assert norm.channels_last(norm.to_channels_last(x))
    assert not norm.channels_last(x.transpose(0, 1, 3, 2))
    # one channel, or one entry per channel: both layouts at once, NCHW wins
    assert not norm.channels_last(norm.to_channels_last(np.zeros((2, 1, 4, 5))))
    assert not norm.channels_last(norm.to_channels_last(np.zeros((2, 3, 1, 1))))
    assert not norm.channels_last(np.zeros((2, 3)))


@sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sim_group_norm_act_channels_last(dtype):
    cases = [((0, 2, 3, 1), 1, "silu", "each", False), ((3, 4, 2, 3), 2, "silu", "each", False),
             ((2, 6, 2, 2), 3, "relu", "one", False), ((3, 4, 3, 2), 2, None, "each", False),
             ((2, 4, 7, 1), 2, "gelu", "none", False), ((3, 4, 2, 3), 2, "silu", "each", True)]
    for seed, (shape, groups, act, shift_rows, nonfinite) in enumerate(cases):
        check_channels_last("cuda", shape, groups, dtype, act, shift_rows, nonfinite, seed)
