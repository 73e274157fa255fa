"""kernels.elementwise: bias + activation forward and backward against the engine's composite
(x + b, then relu / silu / gelu) and across the kernel paths, NaN, inf and empty included."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigen as mg
from minigen import functional as F
from minigen.kernels import elementwise as ew

UNDER_SIM = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
sim = pytest.mark.skipif(not UNDER_SIM, reason="runs in the simulator subprocess")
EPS = {np.float32: float(np.finfo(np.float32).eps), np.float64: float(np.finfo(np.float64).eps)}
ENGINE = {"relu": F.relu, "silu": F.silu, "gelu": F.gelu,
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
    if UNDER_SIM:
        pytest.skip("this is the simulator subprocess")
    pytest.importorskip("numba.cuda")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-k", "sim_", __file__], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout


@sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_sim_bias_act(dtype):
    for seed, shape in enumerate([(0, 3), (2, 5), (3, 2, 4)]):
        x, b, gy = inputs(shape, dtype, seed, nonfinite=True)
        for kind in ew.KINDS:
            for bias in (b, None):
                assert_close(ew.bias_act(x, bias, kind, impl="cuda"),
                             ew.bias_act(x, bias, kind, impl="reference"), dtype, 16.0)
                gx, gb = ew.bias_act_backward(x, gy, bias, kind, impl="cuda")
                want_gx, want_gb = ew.bias_act_backward(x, gy, bias, kind, impl="reference")
                assert_close(gx, want_gx, dtype, 16.0)
                if bias is not None:
                    assert_close(gb, want_gb, dtype, 16.0 * 6)
