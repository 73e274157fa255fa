"""minigen.metrics: sliced Wasserstein, MMD and energy distance against brute-force sums,
closed forms and SciPy."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minigen.metrics import (energy_distance, median_bandwidth, mmd, mmd2, sliced_wasserstein,
                             wasserstein_1d)

sizes = st.integers(1, 40)


def _gram(A, B, h):
    return np.exp(-((A[:, None] - B[None]) ** 2).sum(-1) / (2 * h * h))


@settings(max_examples=25)
@given(n=st.integers(2, 40), m=st.integers(2, 40), d=st.integers(1, 4),
       h=st.floats(0.1, 3.0), seed=st.integers(0, 2 ** 16))
def test_mmd2_matches_the_full_gram_matrices(n, m, d, h, seed):
    rng = np.random.default_rng(seed)
    X, Y = rng.normal(size=(n, d)), rng.normal(0.5, 1.5, size=(m, d))
    kxx, kyy, kxy = _gram(X, X, h), _gram(Y, Y, h), _gram(X, Y, h)
    biased = kxx.mean() + kyy.mean() - 2 * kxy.mean()
    unbiased = ((kxx.sum() - n) / (n * (n - 1)) + (kyy.sum() - m) / (m * (m - 1))
                - 2 * kxy.mean())
    np.testing.assert_allclose(mmd2(X, Y, h, unbiased=False), biased, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mmd2(X, Y, h), unbiased, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(mmd(X, Y, h), np.sqrt(max(biased, 0)), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(mmd2(X, Y, [h, 2 * h]),
                               (mmd2(X, Y, h) + mmd2(X, Y, 2 * h)) / 2, rtol=1e-9, atol=1e-12)


def test_unbiased_mmd2_is_zero_in_expectation_for_equal_distributions():
    rng = np.random.default_rng(0)
    values = [mmd2(rng.normal(size=(100, 2)), rng.normal(size=(100, 2)), 1.0)
              for _ in range(200)]
    assert abs(np.mean(values)) < 4 * np.std(values) / np.sqrt(len(values))
    shifted = mmd2(rng.normal(size=(100, 2)), rng.normal(1.0, 1.0, size=(100, 2)), 1.0)
    assert shifted > np.mean(values) + 10 * np.std(values)


def test_median_bandwidth_is_the_median_pairwise_distance_over_root_two():
    Z = np.array([[0.0], [1.0], [3.0]])
    # pairwise squared distances 1, 9, 4: median 4, h = sqrt(4 / 2)
    assert median_bandwidth(Z[:2], Z[2:]) == pytest.approx(np.sqrt(2.0))


def _median_h(Z):
    """sqrt(median ||a - b||^2 / 2) over all pairs of rows of Z, by brute force."""
    i, j = np.triu_indices(len(Z), 1)
    return np.sqrt(np.median(((Z[i] - Z[j]) ** 2).sum(-1)) / 2)


def test_mmd2_without_a_bandwidth_uses_the_median_heuristic():
    rng = np.random.default_rng(5)
    X, Y = rng.normal(size=(60, 3)), rng.normal(0.3, 2.0, size=(40, 3))
    h = _median_h(np.concatenate([X, Y]))
    assert median_bandwidth(X, Y) == pytest.approx(h, rel=1e-12)
    for unbiased in (True, False):
        assert mmd2(X, Y, unbiased=unbiased) == pytest.approx(
            mmd2(X, Y, h, unbiased=unbiased), rel=1e-12)
    assert mmd(X, Y) == pytest.approx(mmd(X, Y, h), rel=1e-12)
    # the heuristic scales with the data, so the statistic does not change under X, Y -> c X, c Y
    assert mmd2(10 * X, 10 * Y) == pytest.approx(mmd2(X, Y), rel=1e-9)


def test_median_bandwidth_subsamples_the_pooled_points_without_replacement():
    rng = np.random.default_rng(6)
    X, Y = rng.normal(size=(300, 2)), rng.normal(1.0, 1.5, size=(200, 2))
    Z = np.concatenate([X, Y])
    # at most max_points of the pooled sample, drawn without replacement from rng
    pick = np.random.default_rng(7).choice(len(Z), 100, replace=False)
    assert median_bandwidth(X, Y, max_points=100, rng=7) == pytest.approx(_median_h(Z[pick]),
                                                                         rel=1e-12)
    assert median_bandwidth(X, Y, max_points=100, rng=7) == median_bandwidth(X, Y, max_points=100,
                                                                             rng=7)
    assert median_bandwidth(X, Y, max_points=500) == pytest.approx(_median_h(Z), rel=1e-12)
    assert median_bandwidth(X, Y, max_points=100, rng=8) != median_bandwidth(X, Y, max_points=100,
                                                                             rng=7)


@settings(max_examples=25)
@given(n=sizes, m=sizes, p=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
def test_wasserstein_1d_matches_scipy_and_the_sorted_form(n, m, p, seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.exponential(size=m)
    if p == 1:
        np.testing.assert_allclose(wasserstein_1d(x, y, 1), stats.wasserstein_distance(x, y),
                                   rtol=1e-9, atol=1e-12)
    # repeating each point m (resp. n) times gives equal sizes without changing the law
    xs, ys = np.repeat(np.sort(x), m), np.repeat(np.sort(y), n)
    np.testing.assert_allclose(wasserstein_1d(x, y, p),
                               np.mean(np.abs(xs - ys) ** p) ** (1 / p), rtol=1e-9, atol=1e-12)


def test_sliced_wasserstein_of_a_translation():
    """For Y = X + c every direction's W_2^2 is (theta . c)^2, whose mean over the sphere in
    d dimensions is |c|^2 / d; the Monte Carlo mean uses the same rng's directions."""
    rng = np.random.default_rng(0)
    X, c = rng.normal(size=(500, 3)), np.array([1.0, -2.0, 0.5])
    theta = np.random.default_rng(7).standard_normal((3, 4000))
    theta /= np.linalg.norm(theta, axis=0)
    got = sliced_wasserstein(X, X + c, n_projections=4000, rng=7)
    np.testing.assert_allclose(got, np.sqrt(np.mean((c @ theta) ** 2)), rtol=1e-9)
    se = np.std((c @ theta) ** 2) / np.sqrt(4000)
    assert abs(got ** 2 - c @ c / 3) < 4 * se
    assert sliced_wasserstein(X, X, rng=0) == 0.0
    np.testing.assert_allclose(sliced_wasserstein(2 * X, 2 * X + 2 * c, rng=3),
                               2 * sliced_wasserstein(X, X + c, rng=3), rtol=1e-9)


@settings(max_examples=20)
@given(n=sizes, m=sizes, seed=st.integers(0, 2 ** 16))
def test_energy_distance_matches_scipy_in_one_dimension(n, m, seed):
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=n), rng.normal(1.0, 2.0, size=m)
    np.testing.assert_allclose(energy_distance(x[:, None], y[:, None]),
                               stats.energy_distance(x, y), rtol=1e-9, atol=1e-12)


def test_images_are_flattened():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(30, 1, 4, 4)), rng.normal(size=(20, 1, 4, 4))
    assert mmd2(X, Y, 2.0) == pytest.approx(mmd2(X.reshape(30, -1), Y.reshape(20, -1), 2.0))
    assert sliced_wasserstein(X, Y, rng=1) == sliced_wasserstein(X.reshape(30, -1),
                                                                 Y.reshape(20, -1), rng=1)


@pytest.mark.parametrize("call,match", [
    (lambda: mmd2(np.zeros((3, 2)), np.zeros((3, 3)), 1.0), "same number of features"),
    (lambda: mmd2(np.zeros((3, 2)), np.zeros((3, 2)), -1.0), "bandwidth"),
    (lambda: mmd2(np.zeros((1, 2)), np.zeros((3, 2)), 1.0), "at least 2"),
    (lambda: sliced_wasserstein(np.zeros((0, 2)), np.zeros((3, 2))), "non-empty"),
    (lambda: sliced_wasserstein(np.zeros((2, 2)), np.zeros((3, 2)), n_projections=0),
     "n_projections"),
    (lambda: energy_distance(np.full((2, 1), np.nan), np.zeros((3, 1))), "finite"),
])
def test_bad_input_is_named(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("metric", [mmd2, sliced_wasserstein, energy_distance])
def test_strings_are_a_type_error_naming_the_call(metric):
    words = np.array([["a", "b"], ["c", "d"]])
    with pytest.raises(TypeError, match=rf"^{metric.__name__}: X must be a numeric array, "
                                        r"got ndarray$"):
        metric(words, np.zeros((2, 2)))
