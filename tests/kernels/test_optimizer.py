"""kernels.optimizer: SGD, Adam and AdamW over one flat buffer, against minigen.optim's
updates (after several steps, bias correction included) and across the kernel paths."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minigen as mg
from minigen import optim
from minigen.kernels import optimizer as ko

from tests.helpers import run_simulator_cases, sim

EPS = {np.float32: np.finfo(np.float32).eps, np.float64: np.finfo(np.float64).eps}
SHAPES = [(3, 4), (5,), (2, 3, 2)]          # three parameters, laid end to end
SIZE = 29


def _engine_run(make_opt, grads, dtype):
    """Parameters after len(grads) steps of minigen.optim, laid end to end."""
    rng = np.random.default_rng(1)
    params = [mg.tensor(rng.normal(size=s).astype(dtype), requires_grad=True) for s in SHAPES]
    opt = make_opt(params)
    for g in grads:
        offset = 0
        for p in params:
            p.grad = mg.tensor(g[offset:offset + p.data.size].reshape(p.shape))
            offset += p.data.size
        opt.step()
    return np.concatenate([p.data.ravel() for p in params])


def _flat_start(dtype):
    rng = np.random.default_rng(1)
    return np.concatenate([rng.normal(size=s).astype(dtype).ravel() for s in SHAPES])


def _grads(dtype, steps=5):
    rng = np.random.default_rng(2)
    return [rng.normal(size=SIZE).astype(dtype) for _ in range(steps)]


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("decoupled,wd", [(False, 0.0), (False, 0.1), (True, 0.1)])
def test_adam_equals_minigen_optim(impl, dtype, decoupled, wd):
    if impl == "numba":
        pytest.importorskip("numba")
    grads = _grads(dtype)
    cls = optim.AdamW if decoupled else optim.Adam
    want = _engine_run(lambda ps: cls(ps, lr=0.05, betas=(0.8, 0.9), eps=1e-6,
                                      weight_decay=wd), grads, dtype)
    p = _flat_start(dtype)
    m, v = np.zeros_like(p), np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        ko.adam_step(p, g, m, v, t, 0.05, 0.8, 0.9, 1e-6, wd, decoupled, impl=impl)
    # each step's rounding differs from the engine's by a few ulp of its O(lr) change; over 5
    # steps the error stays below 5 * 8 ulp of max|p|
    np.testing.assert_allclose(p, want, rtol=0, atol=40 * EPS[dtype] * np.abs(want).max())


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.01),
                                                   (0.9, True, 0.0)])
def test_sgd_equals_minigen_optim(impl, momentum, nesterov, wd):
    if impl == "numba":
        pytest.importorskip("numba")
    grads = _grads(np.float64)
    want = _engine_run(lambda ps: optim.SGD(ps, lr=0.1, momentum=momentum, nesterov=nesterov,
                                            weight_decay=wd), grads, np.float64)
    p, v = _flat_start(np.float64), np.zeros(SIZE)
    for t, g in enumerate(grads):
        ko.sgd_step(p, g, v, 0.1, momentum, wd, nesterov, first=t == 0, impl=impl)
    np.testing.assert_allclose(p, want, rtol=1e-14, atol=1e-14)


def _assert_same(got, want, dtype):
    assert got.dtype == want.dtype
    assert np.array_equal(np.isnan(got), np.isnan(want))
    finite = np.isfinite(want)
    assert np.array_equal(got[~finite], want[~finite], equal_nan=True)
    scale = max(1.0, float(np.abs(want[finite]).max(initial=0)))
    np.testing.assert_allclose(got[finite], want[finite], rtol=8 * EPS[dtype],
                               atol=8 * EPS[dtype] * scale)


def _buffers(n, dtype, seed, nonfinite):
    rng = np.random.default_rng(seed)
    p, g, m = (rng.normal(size=n).astype(dtype) for _ in range(3))
    v = rng.random(n).astype(dtype)
    if nonfinite and n >= 3:
        g[rng.integers(0, n, 3)] = [np.nan, np.inf, -np.inf]
    return p, g, m, v


@settings(max_examples=20)
@given(n=st.sampled_from([0, 1, 7, 16_385, 40_001]), dtype=st.sampled_from([np.float32, np.float64]),
       step=st.integers(1, 50), wd=st.sampled_from([0.0, 0.05]), decoupled=st.booleans(),
       nonfinite=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_adam_numba_matches_reference(n, dtype, step, wd, decoupled, nonfinite, seed):
    pytest.importorskip("numba")
    ref = _buffers(n, dtype, seed, nonfinite)
    got = tuple(a.copy() for a in ref)
    with np.errstate(invalid="ignore"):
        ko.adam_step(*ref, step, 1e-3, 0.9, 0.999, 1e-8, wd, decoupled, impl="reference")
    ko.adam_step(*got, step, 1e-3, 0.9, 0.999, 1e-8, wd, decoupled, impl="numba")
    for a, b in zip(got, ref):
        _assert_same(a, b, dtype)


@settings(max_examples=20)
@given(n=st.sampled_from([0, 1, 7, 16_385]), dtype=st.sampled_from([np.float32, np.float64]),
       momentum=st.sampled_from([0.0, 0.9]), nesterov=st.booleans(), first=st.booleans(),
       nonfinite=st.booleans(), seed=st.integers(0, 2 ** 16))
def test_sgd_numba_matches_reference(n, dtype, momentum, nesterov, first, nonfinite, seed):
    pytest.importorskip("numba")
    nesterov = nesterov and momentum > 0
    p, g, _, v = _buffers(n, dtype, seed, nonfinite)
    ref, got = (p, g, v), tuple(a.copy() for a in (p, g, v))
    with np.errstate(invalid="ignore"):
        ko.sgd_step(*ref, 0.1, momentum, 0.01, nesterov, first, impl="reference")
    ko.sgd_step(*got, 0.1, momentum, 0.01, nesterov, first, impl="numba")
    for a, b in zip(got, ref):
        _assert_same(a, b, dtype)


def _matches_reference(impl, n, dtype, seed, nonfinite):
    """An AdamW step and a Nesterov SGD step on ``impl`` against the reference's, from the
    same buffers (NaN and inf in the gradients when ``nonfinite``)."""
    ref = _buffers(n, dtype, seed, nonfinite)
    got = tuple(a.copy() for a in ref)
    with np.errstate(invalid="ignore"):
        ko.adam_step(*ref, 3, 1e-2, 0.9, 0.99, 1e-8, 0.1, True, impl="reference")
        ko.adam_step(*got, 3, 1e-2, 0.9, 0.99, 1e-8, 0.1, True, impl=impl)
    for a, b in zip(got, ref):
        _assert_same(a, b, dtype)
    p, g, _, v = _buffers(n, dtype, seed + 100, nonfinite)
    ref, got = (p, g, v), (p.copy(), g.copy(), v.copy())
    with np.errstate(invalid="ignore"):
        ko.sgd_step(*ref, 0.1, 0.9, 0.01, True, False, impl="reference")
        ko.sgd_step(*got, 0.1, 0.9, 0.01, True, False, impl=impl)
    for a, b in zip(got, ref):
        _assert_same(a, b, dtype)


@pytest.mark.parametrize("parallel_min", [0, 1 << 40])
def test_prange_kernels_and_serial_twins_match_reference(parallel_min, monkeypatch):
    """Both compiled forms of each update, whichever the size threshold picks by default:
    sizes around the prange tasks' BLOCK, with NaN and inf in the gradients."""
    pytest.importorskip("numba")
    monkeypatch.setattr(ko, "PARALLEL_MIN", parallel_min)
    for seed, n in enumerate([0, 5, ko.BLOCK - 1, ko.BLOCK + 3, 3 * ko.BLOCK]):
        for dtype in (np.float32, np.float64):
            _matches_reference("numba", n, dtype, seed, nonfinite=seed % 2 == 1)


def test_bad_arguments_raise():
    p = np.zeros(4)
    with pytest.raises(ValueError, match="adam_step: m must be a contiguous float64 array"):
        ko.adam_step(p, p.copy(), np.zeros(4, np.float32), p.copy(), 1, 1e-3)
    with pytest.raises(ValueError, match=r"adam_step: beta2 must be a finite number in \[0, 1\)"):
        ko.adam_step(p, p.copy(), p.copy(), p.copy(), 1, 1e-3, beta2=1.0)
    with pytest.raises(ValueError, match="adam_step: step must be an int >= 1, got 0"):
        ko.adam_step(p, p.copy(), p.copy(), p.copy(), 0, 1e-3)
    with pytest.raises(ValueError, match="sgd_step: p must be a 1-D contiguous array"):
        ko.sgd_step(np.zeros((2, 2)), p, p, 0.1)
    with pytest.raises(ValueError, match="sgd_step: nesterov must be False"):
        ko.sgd_step(p, p.copy(), p.copy(), 0.1, nesterov=True)


def test_cuda_under_simulator():
    run_simulator_cases(__file__)


@sim
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sim_optimizer(dtype):
    for seed, (n, nonfinite) in enumerate([(0, False), (1, False), (37, True)]):
        _matches_reference("cuda", n, dtype, seed, nonfinite)
