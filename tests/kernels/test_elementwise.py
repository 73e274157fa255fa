"""kernels.elementwise: bias + activation forward and backward against the engine's composite
(x + b, then relu / silu / gelu) and across the kernel paths, NaN, inf and empty included."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigen as mg
from minigen import functional as F
from minigen.kernels import elementwise as ew
from minigen.kernels._dispatch import channels_last, to_channels_last
from minigen.ops.activations import Relu

from tests.helpers import run_simulator_cases, sim

EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}
ENGINE = {"relu": Relu.apply, "silu": F.silu, "gelu": F.gelu,
          "gelu_tanh": lambda a: F.gelu(a, approximate="tanh")}


def assert_close(got, want, dtype, scale):
    """Equal NaN pattern and non-finite values; finite values within 16 ulp of ``scale``
    (f and f' are evaluated in a different order, each step adding an ulp-sized error
    relative to the magnitudes |a|, |g| the formulas multiply)."""
    assert got.dtype == want.dtype and got.shape == want.shape
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    assert np.array_equal(got[~finite], want[~finite], equal_nan=True)
    np.testing.assert_allclose(got[finite], want[finite], rtol=16 * EPS[dtype],
                               atol=16 * EPS[dtype] * scale)


def inputs(shape, dtype, seed, nonfinite):
    rng = np.random.default_rng(seed)
    x = (4 * rng.normal(size=shape)).astype(dtype)
    b = rng.normal(size=shape[-1:]).astype(dtype)
    gy = rng.normal(size=shape).astype(dtype)
    if nonfinite and x.size >= 4:
        x.reshape(-1)[rng.choice(x.size, 4, replace=False)] = [np.nan, np.inf, -np.inf, 0]
    return x, b, gy


@pytest.mark.parametrize("kind", ew.KINDS)
@pytest.mark.parametrize("with_bias", [True, False])
def test_reference_equals_engine(kind, with_bias):
    x, b, gy = inputs((3, 4, 7), np.float64, 0, False)
    xt, bt = mg.tensor(x, requires_grad=True), mg.tensor(b, requires_grad=True)
    y = ENGINE[kind](xt + bt if with_bias else xt)
    gx, gb = mg.grad(y, [xt, bt], grad_outputs=mg.tensor(gy), allow_unused=True)
    bias = b if with_bias else None
    np.testing.assert_allclose(ew.reference_bias_act(x, bias, kind), y.data, rtol=1e-14,
                               atol=1e-15)
    ref_gx, ref_gb = ew.reference_bias_act_backward(x, gy, bias, kind)
    np.testing.assert_allclose(ref_gx, gx.data, rtol=1e-13, atol=1e-14)
    if with_bias:
        np.testing.assert_allclose(ref_gb, gb.data, rtol=1e-13, atol=1e-14)
    else:
        assert ref_gb is None


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("kind", ew.KINDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_no_bias_runs_a_channels_last_x_in_its_own_layout(kind, impl, dtype):
    """Without a bias the map is element by element: a channels-last x (a convolution's
    output) gives y and gx in its layout (the reference: where NumPy keeps it, i.e. when gy
    shares it), with the values of the NCHW computation, gy in either layout; NaN and inf
    included."""
    if impl == "numba":
        pytest.importorskip("numba")
    x, _, gy = inputs((3, 5, 4, 28), dtype, 7, True)
    xl = to_channels_last(x)
    with np.errstate(invalid="ignore"):
        want = ew.bias_act(x, None, kind, impl="reference")
        want_gx = ew.bias_act_backward(x, gy, None, kind, impl="reference")[0]
        y = ew.bias_act(xl, None, kind, impl=impl)
        assert channels_last(y)
        assert_close(y, want, dtype, 16.0)
        for g in (gy, to_channels_last(gy)):
            gx, gb = ew.bias_act_backward(xl, g, None, kind, impl=impl)
            assert gb is None
            assert channels_last(gx) or (impl == "reference" and not channels_last(g))
            assert_close(gx, want_gx, dtype, 16.0)


@settings(max_examples=25)
@given(shape=st.sampled_from([(0, 5), (3, 0), (1,), (7, 33), (2, 3, 511), (40, 513)]),
       kind=st.sampled_from(ew.KINDS), dtype=st.sampled_from([np.float32, np.float64]),
       with_bias=st.booleans(), nonfinite=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_numba_matches_reference(shape, kind, dtype, with_bias, nonfinite, seed):
    pytest.importorskip("numba")
    x, b, gy = inputs(shape, dtype, seed, nonfinite)
    bias = b if with_bias else None
    with np.errstate(invalid="ignore"):
        want = ew.bias_act(x, bias, kind, impl="reference")
        want_gx, want_gb = ew.bias_act_backward(x, gy, bias, kind, impl="reference")
    scale = 16.0                                    # |a| up to ~4 sigma of 4 N(0, 1), plus b
    assert_close(ew.bias_act(x, bias, kind, impl="numba"), want, dtype, scale)
    gx, gb = ew.bias_act_backward(x, gy, bias, kind, impl="numba")
    assert_close(gx, want_gx, dtype, scale)
    if with_bias:
        # gb sums R rows of gx: its rounding error grows like R ulp of the largest |gx|
        rows = max(1, x.size // max(1, x.shape[-1]))
        assert_close(gb, want_gb, dtype, scale * rows)
    else:
        assert gb is None


def test_gelu_derivative_against_central_differences():
    """f' of every kind against (f(a + h) - f(a - h)) / 2h in float64: the central difference
    errs by h^2 f''' / 6 + eps f / h, about 1e-10 at h = 1e-5 for these smooth f."""
    pytest.importorskip("numba")
    a = np.linspace(-5, 5, 1001).reshape(7, 143) + 1e-3     # no a = 0 (relu's kink)
    h = 1e-5
    for kind in ew.KINDS:
        fd = (ew.bias_act(a + h, kind=kind, impl="numba")
              - ew.bias_act(a - h, kind=kind, impl="numba")) / (2 * h)
        gx, _ = ew.bias_act_backward(a, np.ones_like(a), kind=kind, impl="numba")
        np.testing.assert_allclose(gx, fd, rtol=0, atol=1e-8, err_msg=kind)


def test_bad_arguments_raise():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match="bias_act: kind must be one of 'relu'"):
        ew.bias_act(x, kind="tanh")
    with pytest.raises(ValueError, match=r"bias_act: bias must have shape \(3,\)"):
        ew.bias_act(x, np.zeros(2))
    with pytest.raises(ValueError, match=r"bias_act_backward: gy must have x's shape"):
        ew.bias_act_backward(x, np.zeros((3, 2)))
    with pytest.raises(TypeError, match="bias_act: x must be a float32 or float64 array"):
        ew.bias_act(np.zeros((2, 3), np.int64))


def test_cuda_under_simulator():
    run_simulator_cases(__file__)


@sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sim_bias_act(dtype):
    for seed, shape in enumerate([(0, 3), (2, 5), (3, 2, 4), (2, 3, 2, 4)]):
        x, b, gy = inputs(shape, dtype, seed, nonfinite=True)
        for kind in ew.KINDS:
            for bias, xl, gl in ((b, x, gy), (None, x, gy),
                                 (None, to_channels_last(x), to_channels_last(gy))):
                assert_close(ew.bias_act(xl, bias, kind, impl="cuda"),
                             ew.bias_act(x, bias, kind, impl="reference"), dtype, 16.0)
                gx, gb = ew.bias_act_backward(xl, gl, bias, kind, impl="cuda")
                want_gx, want_gb = ew.bias_act_backward(x, gy, bias, kind, impl="reference")
                assert_close(gx, want_gx, dtype, 16.0)
                if bias is not None:
                    assert_close(gb, want_gb, dtype, 16.0 * 6)


# ------------------------------------------------------------------ float32 error bounds
EPS32, TINY32 = 2.0 ** -23, float(np.finfo(np.float32).tiny)


def _f32_grid():
    """float32 pre-activations: a dense grid over [-12, 12] and both signs of 1e-6 ... 1e3."""
    logs = np.geomspace(1e-6, 1e3, 20_001)
    return np.concatenate([np.linspace(-12, 12, 200_001), logs, -logs]).astype(np.float32)


def test_erf_f32_error_bound():
    """erf_f32 against scipy's float64 erf.  Bound: the float32-rounded coefficients err by
    0.44 eps32 (exact evaluation); Horner with one rounding per FMA adds 6 u for P and 5 u
    for Q (u = eps32 / 2, terms of one sign up to a negligible top coefficient), z * p and
    / q one u each: 0.44 + 13 / 2 < 7 eps32, absolute since |erf| <= 1 (measured: 2.5)."""
    numba = pytest.importorskip("numba")
    special = pytest.importorskip("scipy.special")
    erf32 = numba.njit(fastmath=ew._math.FASTMATH, error_model="numpy")(ew.erf_f32)

    @numba.njit(fastmath=ew._math.FASTMATH, error_model="numpy")
    def apply(z, out):
        for i in range(z.size):
            out[i] = erf32(z[i])

    z = np.concatenate([np.linspace(-6, 6, 2_000_001), [np.inf, -np.inf, np.nan]])
    z = z.astype(np.float32)
    got = np.empty_like(z)
    apply(z, got)
    want = special.erf(z[:-3].astype(np.float64))
    assert np.max(np.abs(got[:-3] - want)) <= 7 * EPS32
    assert got[-3] == 1 and got[-2] == -1 and np.isnan(got[-1])
    assert np.all(got[np.abs(z) >= ew.ERF_SAT] == np.sign(z[np.abs(z) >= ew.ERF_SAT]))


def _largest_terms(kind, a):
    """(forward, backward at g = 1) magnitude of the largest term each formula adds, float64;
    a factor formed by cancellation (1 - s, 1 - t^2, with s, t rounded near 1) counts at its
    operands' size 1, since its absolute error is an ulp of 1."""
    s, phi = 1 / (1 + np.exp(-a)), np.exp(-0.5 * a * a) / np.sqrt(2 * np.pi)
    dw = 2 * ew.TANH_C * (1 + 3 * ew.TANH_K * a * a)     # d/da of w = 2u, gelu_tanh = a s(w)
    forward = {"relu": np.abs(a), "silu": np.abs(a * s), "gelu": np.abs(a),
               "gelu_tanh": np.abs(a)}[kind]
    backward = {"relu": np.ones_like(a), "silu": s * (1 + np.abs(a)),
                "gelu": 1 + np.abs(a) * phi, "gelu_tanh": 1 + np.abs(a) * dw}[kind]
    return forward, backward


@pytest.mark.parametrize("kind", ew.KINDS)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_float32_kernel_error_bound(kind):
    """The float32 Numba kernel against the float64 formula at the same float32 a, per element
    within K eps32 T + TINY32 (1 + |a|), T the largest term (``_largest_terms``; the second
    term because float32 flushes below its normal range: the sigmoid 1 / (1 + exp(-a)) is 0
    once exp(-a) overflows, s < 2^-128, an error up to |a| 2^-128 in silu = a s).
    Forward K = 5: gelu errs by |a| (erf / 2 + eps / 2 for 1/2 + erf/2, eps / 4 for
    z = a / sqrt 2, eps / 2 for the product) <= |a| (3.5 + 1.25) eps with erf's 7 eps; silu
    and gelu_tanh (a s(w), w = 2u) by exp's 1 ulp, the roundings of 1 + e, the division and
    the product (relative to |f|), plus for gelu_tanh the 3 roundings of w, which move s by
    at most s (1 - s) |w| 3 eps / 2 <= 0.42 eps; relu is exact.  Backward K = 6: the same plus
    one rounding of each added term and of the product with g (measured: 1.7 forward, 1.9
    backward, gelu)."""
    pytest.importorskip("numba")
    a = _f32_grid()
    a64 = a.astype(np.float64)
    fwd_T, bwd_T = _largest_terms(kind, a64)
    y = ew.bias_act(a[None], None, kind, impl="numba")[0]
    gx = ew.bias_act_backward(a[None], np.ones((1, a.size), np.float32), None, kind,
                              impl="numba")[0][0]
    want_y = ew.reference_bias_act(a64, None, kind)
    want_gx = ew.reference_bias_act_backward(a64, np.ones_like(a64), None, kind)[0]
    assert y.dtype == gx.dtype == np.float32
    flush = TINY32 * (1 + np.abs(a64))
    assert np.all(np.abs(y - want_y) <= 5 * EPS32 * fwd_T + flush)
    assert np.all(np.abs(gx - want_gx) <= 6 * EPS32 * bwd_T + flush)


# ------------------------------------------------------------------ NaN and the infinities
# f and f' (with g = 1) at +inf, -inf and NaN, as the reference and PyTorch give them: each
# smooth activation is a product a s(a) with s(-inf) = 0, so f(-inf) = -inf * 0 = NaN, and
# f'(+inf) adds a term a phi(a) = inf * 0; relu's gradient is 0 at NaN (NaN > 0 is False).
LIMITS = {"relu": ((np.inf, 0.0, np.nan), (1.0, 0.0, 0.0)),
          "silu": ((np.inf, np.nan, np.nan), (np.nan, np.nan, np.nan)),
          "gelu": ((np.inf, np.nan, np.nan), (np.nan, np.nan, np.nan)),
          "gelu_tanh": ((np.inf, np.nan, np.nan), (np.nan, np.nan, np.nan))}


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ew.KINDS)
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_nan_and_infinite_limits(kind, dtype, impl):
    if impl == "numba":
        pytest.importorskip("numba")
    x = np.array([[np.inf, -np.inf, np.nan, 1.0]], dtype)
    y = ew.bias_act(x, None, kind, impl=impl)
    gx, _ = ew.bias_act_backward(x, np.ones_like(x), None, kind, impl=impl)
    want_y, want_gx = LIMITS[kind]
    np.testing.assert_array_equal(y[0, :3], np.array(want_y, dtype))
    np.testing.assert_array_equal(gx[0, :3], np.array(want_gx, dtype))
    assert np.isfinite(y[0, 3]) and np.isfinite(gx[0, 3])
