"""kernels.kde: the streaming Gaussian log-sum-exp against its reference and the formula."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.kernels import kde

numba = pytest.importorskip("numba")


def _chol(kind, d, rng):
    if kind == "none":
        return None
    if kind == "scalar":
        return 0.7
    if kind == "diag":
        return rng.uniform(0.3, 2.0, d)
    A = rng.normal(size=(d, d))
    return np.linalg.cholesky(A @ A.T + d * np.eye(d))


def _direct(Q, X, chol, logw, exclude_self=False):
    """log sum_j w_j N(q_i; x_j, L L^T) from the explicit m x n matrix (small inputs only)."""
    d = X.shape[1]
    L = np.eye(d) if chol is None else np.asarray(_chol_matrix(chol, d))
    diff = Q[:, None, :] - X[None, :, :]
    z = np.linalg.solve(L, diff.reshape(-1, d).T).T.reshape(diff.shape)
    v = logw[None, :] - 0.5 * (z ** 2).sum(-1)
    if exclude_self:
        v[np.arange(len(Q)), np.arange(len(Q))] = -np.inf
    vmax = v.max(1, keepdims=True)
    out = np.log(np.exp(v - vmax).sum(1)) + vmax[:, 0]
    return out - 0.5 * d * math.log(2 * math.pi) - np.log(np.abs(np.diag(L))).sum()


def _chol_matrix(chol, d):
    c = np.asarray(chol, float)
    return c * np.eye(d) if c.ndim == 0 else (np.diag(c) if c.ndim == 1 else c)


@settings(max_examples=20)
@given(m=st.sampled_from([0, 1, 3, 37]), n=st.sampled_from([0, 1, 2, 511, 513, 1100]),
       d=st.integers(1, 9), kind=st.sampled_from(["none", "scalar", "diag", "full"]),
       weighted=st.booleans(), dtype=st.sampled_from([np.float32, np.float64]),
       seed=st.integers(0, 2 ** 16))
def test_numba_matches_reference(m, n, d, kind, weighted, dtype, seed):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(dtype)
    Q = (3 * rng.normal(size=(m, d))).astype(dtype)
    chol = _chol(kind, d, rng)
    logw = None
    if weighted and n:
        logw = np.log(rng.dirichlet(np.ones(n)))
        logw[rng.random(n) < 0.2] = -np.inf          # zero weights are legal
    ref = kde.log_kernel_sum(Q, X, chol, logw, impl="reference")
    got = kde.log_kernel_sum(Q, X, chol, logw, impl="numba")
    assert got.dtype == np.float64 and got.shape == (m,)
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    ref_out, ref_grad = kde.log_kernel_sum_grad(Q, X, chol, logw, impl="reference")
    out, grad = kde.log_kernel_sum_grad(Q, X, chol, logw, impl="numba")
    np.testing.assert_allclose(out, ref_out, rtol=1e-10, atol=1e-12)
    scale = max(1.0, float(np.abs(ref_grad).max(initial=0)))
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-10 * scale)


@pytest.mark.parametrize("impl", ["reference", "numba"])
@pytest.mark.parametrize("kind", ["none", "scalar", "diag", "full"])
def test_matches_explicit_formula(impl, kind):
    rng = np.random.default_rng(1)
    X, Q = rng.normal(size=(60, 3)), rng.normal(size=(25, 3))
    chol = _chol(kind, 3, rng)
    logw = np.log(rng.dirichlet(np.ones(60)))
    got = kde.log_kernel_sum(Q, X, chol, logw, impl=impl)
    np.testing.assert_allclose(got, _direct(Q, X, chol, logw), rtol=1e-12)
    unnormalized = kde.log_kernel_sum(Q, X, chol, logw, normalize=False, impl=impl)
    L = _chol_matrix(1.0 if chol is None else chol, 3)
    const = -1.5 * math.log(2 * math.pi) - np.log(np.diag(L)).sum()
    np.testing.assert_allclose(unnormalized + const, got, rtol=1e-12)


def test_matches_scipy_gaussian_kde():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(2)
    X, Q = rng.normal(size=(300, 2)), rng.normal(size=(50, 2))
    ref = stats.gaussian_kde(X.T)
    ours = kde.log_kernel_sum(Q, X, np.linalg.cholesky(ref.covariance),
                              np.full(300, -math.log(300)))
    np.testing.assert_allclose(ours, ref.logpdf(Q.T), rtol=1e-10)


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_leave_one_out_drops_exactly_the_self_pair(impl):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(700, 2))
    logw = rng.normal(size=700)
    loo = kde.log_kernel_sum(X, X, 0.4, logw, exclude_self=True, impl=impl)
    for i in (0, 1, 511, 512, 699):
        keep = np.arange(700) != i
        alone = kde.log_kernel_sum(X[i:i + 1], X[keep], 0.4, logw[keep], impl="reference")
        np.testing.assert_allclose(loo[i], alone[0], rtol=1e-12)
    single = kde.log_kernel_sum(X[:1], X[:1], 0.4, exclude_self=True, impl=impl)
    assert single[0] == -np.inf


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_far_queries_stay_finite_and_exact(impl):
    """exp(-0.5 * 1e8) underflows to 0, but the log density is -0.5 * dist^2 + log sum."""
    rng = np.random.default_rng(4)
    X = rng.normal(size=(1000, 2)) * 1e-3
    Q = np.array([[1e4, 0.0], [0.0, -3e4], [1e6, 1e6]])
    got = kde.log_kernel_sum(Q, X, 1.0, impl=impl)
    assert np.all(np.isfinite(got))
    np.testing.assert_allclose(got, _direct(Q, X, None, np.zeros(1000)), rtol=1e-12)
    _, grad = kde.log_kernel_sum_grad(Q, X, 1.0, impl=impl)
    v = -0.5 * ((Q[:, None, :] - X[None]) ** 2).sum(-1)
    r = np.exp(v - v.max(1, keepdims=True))
    np.testing.assert_allclose(grad, (r / r.sum(1, keepdims=True)) @ X - Q, rtol=1e-9, atol=1e-9)


U32 = 2.0 ** -24


def _float32_bound(Q, X, chol, logw):
    """The error bound of precision='float32' per query, u (2 + sum_j r_ij |a_ij|), from the
    float64 terms a_ij = v_ij - max_j v_ij and responsibilities r_ij = softmax_j(v_ij): the
    argument a_ij rounded to float32 moves the term by a relative |a_ij| u, the float32 exp
    adds at most 1.52 u (measured over [-87, 0]), float64 sums add nothing at this scale."""
    d = X.shape[1]
    L = _chol_matrix(1.0 if chol is None else chol, d)
    z = np.linalg.solve(L, (Q[:, None, :] - X[None, :, :]).reshape(-1, d).T).T
    v = logw[None, :] - 0.5 * (z.reshape(len(Q), len(X), d) ** 2).sum(-1)
    a = v - v.max(1, keepdims=True)
    r = np.exp(a)
    r /= r.sum(1, keepdims=True)
    return U32 * (2 + (r * np.abs(np.where(r > 0, a, 0.0))).sum(1))


@settings(max_examples=15)
@given(n=st.sampled_from([1, 5, 513, 1100]), d=st.integers(1, 8),
       kind=st.sampled_from(["none", "diag", "full"]), spread=st.sampled_from([0.3, 3.0, 30.0]),
       seed=st.integers(0, 2 ** 16))
def test_float32_precision_is_within_its_derived_bound(n, d, kind, spread, seed):
    """precision='float32' against float64, per query, within u (2 + sum_j r_ij |a_ij|) (plus
    float64 rounding), for queries near and far (spread) from the data; the gradient too."""
    rng = np.random.default_rng(seed)
    X, Q = rng.normal(size=(n, d)), spread * rng.normal(size=(23, d))
    chol, logw = _chol(kind, d, rng), np.log(rng.dirichlet(np.ones(n)))
    ref = kde.log_kernel_sum(Q, X, chol, logw, impl="reference")
    got = kde.log_kernel_sum(Q, X, chol, logw, impl="numba", precision="float32")
    bound = _float32_bound(Q, X, chol, logw) + 1e-12 * (1 + np.abs(ref))
    assert np.all(np.abs(got - ref) <= bound)
    assert bound.max() < 90 * U32 + 1e-12 * (1 + np.abs(ref).max())
    out, grad = kde.log_kernel_sum_grad(Q, X, chol, logw, impl="numba", precision="float32")
    ref_out, ref_grad = kde.log_kernel_sum_grad(Q, X, chol, logw, impl="reference")
    assert np.all(np.abs(out - ref) <= bound)     # the direct form (got: the product form, d >= 4)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-4 * max(1.0, spread))


@pytest.mark.parametrize("precision", ["float64", "float32"])
@pytest.mark.parametrize("d", [2, 5])
def test_nan_inf_and_empty_agree_with_the_reference_in_both_precisions(precision, d):
    """An infinite data coordinate (chol=None: no whitening to spread it) is a point
    infinitely far away, as in the reference."""
    rng = np.random.default_rng(6)
    X, Q = rng.normal(size=(700, d)), rng.normal(size=(6, d))
    Q[0, 0], Q[1, 1], Q[2, 0] = np.nan, np.inf, -np.inf
    Xnan, Xinf = X.copy(), X.copy()
    Xnan[600, 1], Xinf[600, 1] = np.nan, np.inf
    logw = np.full(700, -np.log(700))
    lw_inf = logw.copy()
    lw_inf[3] = np.inf
    for args in ((Q, X, 0.5, logw), (Q[3:], Xnan, 0.5, logw), (Q[3:], Xinf, None, logw),
                 (Q[3:], X, 0.5, lw_inf), (Q[3:], X, 0.5, np.full(700, -np.inf)),
                 (Q[:0], X, 0.5, logw), (Q[3:], X[:0], 0.5, None)):
        ref = kde.log_kernel_sum(*args, impl="reference")
        got = kde.log_kernel_sum(*args, impl="numba", precision=precision)
        assert got.shape == ref.shape
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(ref))
        np.testing.assert_allclose(got[np.isfinite(ref)], ref[np.isfinite(ref)], atol=1e-5)
    with pytest.raises(ValueError, match="precision must be one of"):
        kde.log_kernel_sum(Q, X, 0.5, precision="float16")


@pytest.mark.parametrize("offset", [0.0, 1e3, 1e6])
def test_distances_stay_exact_far_from_the_origin_and_the_data(offset):
    """d = 6: queries near the data, far from it, and near a far-off data point, all as the
    reference computes them (no ||q||^2 + ||x||^2 - 2 q.x cancellation)."""
    rng = np.random.default_rng(7)
    X = offset + rng.normal(size=(1100, 6))
    X[5] += 3000.0                                   # one far-off data point (tile 0)
    Q = np.concatenate([offset + rng.normal(size=(20, 6)), offset + 1e4 * rng.normal(size=(5, 6)),
                        X[5] + 0.1 * rng.normal(size=(3, 6))])
    logw = np.log(rng.dirichlet(np.ones(1100)))
    for precision in ("float64", "float32"):
        for chol in (0.3, None):
            ref = kde.log_kernel_sum(Q, X, chol, logw, impl="reference")
            got = kde.log_kernel_sum(Q, X, chol, logw, impl="numba", precision=precision)
            if precision == "float64":
                np.testing.assert_allclose(got, ref, rtol=1e-11, atol=1e-11)
            else:                       # within the bound of the float32 exps: 90 u at most
                assert np.all(np.abs(got - ref) <= 90 * U32 + 1e-11 * np.abs(ref))


def _product_bound(d, logw):
    """The product form's error on each v_ij, hence on out_i: (d + 2) u (|log w_j| +
    2 (||xs_j||^2 + ||qs_i||^2)) with the norms at most PRODUCT_MAX_NORM2 (u = 2^-53)."""
    finite = np.abs(logw[np.isfinite(logw)])
    return (d + 2) * 2.0 ** -53 * (finite.max(initial=0) + 2 * kde.PRODUCT_MAX_NORM2)


@pytest.mark.parametrize("d", [4, 7, 8, 12])
def test_product_form_agrees_with_the_reference(d, monkeypatch):
    """From d = 4, with finite coordinates of moderate norm, the kernel runs the product form
    (the direct core is never called): leave-one-out over several tiles, zero weights, query
    counts that are not multiples of 4, float32 exps within their bound, and the gradient."""
    rng = np.random.default_rng(d)
    n = 1300
    X, Q = rng.normal(size=(n, d)), 1.5 * rng.normal(size=(37, d))
    logw = np.log(rng.dirichlet(np.ones(n)))
    logw[::7] = -np.inf
    monkeypatch.setattr(kde, "_numba_core", None)         # calling it would raise
    bound = _product_bound(d, logw)
    loo = kde.log_kernel_sum(X, X, 0.6, logw, exclude_self=True, impl="numba")
    ref = kde.log_kernel_sum(X, X, 0.6, logw, exclude_self=True, impl="reference")
    np.testing.assert_allclose(loo, ref, rtol=1e-13, atol=bound)
    for m, precision in ((37, "float64"), (34, "float32")):
        got = kde.log_kernel_sum(Q[:m], X, 0.6, logw, impl="numba", precision=precision)
        ref = kde.log_kernel_sum(Q[:m], X, 0.6, logw, impl="reference")
        f32 = _float32_bound(Q[:m], X, 0.6, logw) if precision == "float32" else 0.0
        assert got.shape == (m,) and np.all(np.abs(got - ref) <= f32 + bound + 1e-13 * np.abs(ref))
    out, grad = kde.log_kernel_sum_grad(Q, X, 0.6, logw, impl="numba")
    ref_out, ref_grad = kde.log_kernel_sum_grad(Q, X, 0.6, logw, impl="reference")
    np.testing.assert_allclose(out, ref_out, rtol=1e-13, atol=bound)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-9, atol=1e-10 * np.abs(ref_grad).max())


def test_product_form_only_where_it_keeps_its_digits():
    """The product form's inputs are refused (None: the direct form runs) for d < 4, an empty
    side, a non-finite coordinate (inf - inf in the expansion) and norms past
    PRODUCT_MAX_NORM2; otherwise they hold 2 qs and xs^T zero-padded to multiples of 4."""
    rng = np.random.default_rng(8)
    Qs, Xs, logw = rng.normal(size=(5, 6)), rng.normal(size=(9, 6)), np.zeros(9)
    Q2, XsT, c, qq = kde._product_inputs(Qs, Xs, logw)
    assert Q2.shape == (8, 8) and XsT.shape == (8, 9) and c.shape == (9,) and qq.shape == (8,)
    np.testing.assert_array_equal(Q2[:5, :6], 2 * Qs)
    assert not Q2[5:].any() and not Q2[:, 6:].any() and not XsT[6:].any() and not qq[5:].any()
    np.testing.assert_allclose(c, -(Xs ** 2).sum(1))
    far = Xs.copy()
    far[0] = np.sqrt(kde.PRODUCT_MAX_NORM2 / 6)
    for bad in (far, np.where(np.eye(9, 6, dtype=bool), np.inf, Xs),
                np.where(np.eye(9, 6, dtype=bool), np.nan, Xs)):
        assert kde._product_inputs(Qs, bad, logw) is None
    assert kde._product_inputs(Qs[:, :3], Xs[:, :3], logw) is None
    assert kde._product_inputs(Qs[:0], Xs, logw) is None


@pytest.mark.parametrize("impl", ["reference", "numba"])
def test_gradient_matches_central_differences(impl):
    rng = np.random.default_rng(5)
    X, Q = rng.normal(size=(80, 3)), rng.normal(size=(10, 3))
    chol = _chol("full", 3, rng)
    logw = np.log(rng.dirichlet(np.ones(80)))
    _, grad = kde.log_kernel_sum_grad(Q, X, chol, logw, impl=impl)
    h = 1e-6
    for k in range(3):
        e = np.zeros(3)
        e[k] = h
        fd = (kde.log_kernel_sum(Q + e, X, chol, logw, impl=impl)
              - kde.log_kernel_sum(Q - e, X, chol, logw, impl=impl)) / (2 * h)
        np.testing.assert_allclose(grad[:, k], fd, rtol=1e-6, atol=1e-7)


def test_bad_inputs_raise_before_work():
    X = np.zeros((5, 2))
    with pytest.raises(ValueError, match="log_kernel_sum: Q and X"):
        kde.log_kernel_sum(np.zeros((3, 3)), X)
    with pytest.raises(ValueError, match="lower-triangular"):
        kde.log_kernel_sum(X, X, np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="positive diagonal"):
        kde.log_kernel_sum(X, X, -1.0)
    with pytest.raises(ValueError, match="exclude_self"):
        kde.log_kernel_sum(X[:3], X, exclude_self=True)
    with pytest.raises(ValueError, match=r"log_weights must have shape \(5,\)"):
        kde.log_kernel_sum_grad(X, X, log_weights=np.zeros(4))
    with pytest.raises(ValueError, match="impl"):
        kde.log_kernel_sum(X, X, impl="fortran")
