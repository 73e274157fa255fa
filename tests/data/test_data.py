"""minigen.data: the shipped digits and the toy generators."""
import numpy as np
import pytest

import minigen as mg
from minigen import data
from minigen.data import sources


def test_digits_are_the_uci_test_set():
    X, y = data.load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float64 and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 16 and np.all(X == np.round(X))
    np.testing.assert_array_equal(np.bincount(y), [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])
    images, _ = data.load_digits(flatten=False, dtype=np.uint8)
    assert images.shape == (1797, 8, 8) and images.dtype == np.uint8
    np.testing.assert_array_equal(images.reshape(1797, 64), X)


def test_digits_split_is_seeded_disjoint_and_complete():
    X, _ = data.load_digits()
    train, y_train = data.load_digits("train", test_fraction=0.25, seed=3)
    test, y_test = data.load_digits("test", test_fraction=0.25, seed=3)
    assert len(test) == round(0.25 * 1797) and len(train) + len(test) == 1797
    rows = {r.tobytes() for r in X}
    assert {r.tobytes() for r in train} | {r.tobytes() for r in test} == rows
    np.testing.assert_array_equal(data.load_digits("test", test_fraction=0.25, seed=3)[0], test)
    assert not np.array_equal(data.load_digits("test", test_fraction=0.25, seed=4)[0], test)
    with pytest.raises(ValueError, match="load_digits: split"):
        data.load_digits("validation")
    with pytest.raises(ValueError, match="test_fraction"):
        data.load_digits("train", test_fraction=1.0)


@pytest.mark.parametrize("name", sorted(data.TOY_DATASETS))
def test_toy_sets_have_shape_dtype_and_are_seeded(name):
    X = data.make_toy(name, 501, rng=0)
    assert X.shape == (501, 1 if name == "mixture_1d" else 2) and X.dtype == np.float64
    assert np.all(np.isfinite(X))
    np.testing.assert_array_equal(X, data.make_toy(name, 501, rng=0))
    assert not np.array_equal(X, data.make_toy(name, 501, rng=1))
    with pytest.raises(ValueError, match=f"{name}: n must be a positive int"):
        data.TOY_DATASETS[name](0)
    with pytest.raises(ValueError, match=f"{name}: noise must be"):
        data.TOY_DATASETS[name](5, noise=-1.0)


def test_noise_free_shapes_lie_on_their_supports():
    r = np.hypot(*data.circles(400, noise=0.0, rng=0).T)
    assert np.all(np.isclose(r, 1.0) | np.isclose(r, 0.5))
    assert np.sum(np.isclose(r, 0.5)) == 200
    P = data.eight_gaussians(400, noise=0.0, rng=0)
    angles = np.arctan2(P[:, 1], P[:, 0]) / (2 * np.pi / 8)
    assert np.allclose(np.hypot(*P.T), 2.0) and np.allclose(angles, np.round(angles))
    M = data.moons(400, noise=0.0, rng=0)
    upper = np.isclose(np.hypot(*M.T), 1.0) & (M[:, 1] >= 0)
    lower = np.isclose(np.hypot(M[:, 0] - 1, M[:, 1] - 0.5), 1.0) & (M[:, 1] <= 0.5)
    assert np.all(upper | lower)
    G = data.twenty_five_gaussians(400, noise=0.0, rng=0)
    assert set(np.unique(G)) <= {-2.0, -1.0, 0.0, 1.0, 2.0}
    C = data.checkerboard(2000, rng=0)
    assert np.all(np.abs(C) <= 4)
    assert len(np.unique((np.floor(C[:, 0] / 2) + np.floor(C[:, 1] / 2)) % 2)) == 1   # one colour


def test_mixture_1d_matches_its_density():
    means, weights, noise = (-2.0, 1.0, 4.0), (0.2, 0.5, 0.3), 0.7
    X = data.mixture_1d(40_000, noise=noise, means=means, weights=weights, rng=0)[:, 0]
    mean = np.dot(weights, means)
    var = noise ** 2 + np.dot(weights, np.square(means)) - mean ** 2
    assert abs(X.mean() - mean) < 4 * np.sqrt(var / len(X))
    grid = np.linspace(-8, 10, 4001)
    p = np.exp(data.mixture_1d_logpdf(grid, noise=noise, means=means, weights=weights))
    assert np.trapezoid(p, grid) == pytest.approx(1.0, abs=1e-8)
    assert np.trapezoid(grid * p, grid) == pytest.approx(mean, abs=1e-8)
    with pytest.raises(ValueError, match="mixture_1d: weights"):
        data.mixture_1d(5, weights=(0.5, 0.6, -0.1))
    with pytest.raises(ValueError, match="make_toy: unknown data set"):
        data.make_toy("spiral", 5)


@pytest.mark.parametrize("spec", sorted(set(sources.names()) - {"pydoc"}))
def test_built_in_sets_hold_out_a_disjoint_test_split(spec):
    train, test = sources.load(spec, split="train"), sources.load(spec, split="test")
    assert len(test) > 0 and len(train) > 2 * len(test)
    as_rows = (lambda d: set(d)) if sources.is_text(train) else (lambda d: {r.tobytes()
                                                                           for r in d})
    if spec == "digits-binary":          # binarised images repeat: check the split itself
        train, test = mg.data.load_digits("train")[0], mg.data.load_digits("test")[0]
    assert not as_rows(train) & as_rows(test)
    np.testing.assert_array_equal(np.asarray(sources.load(spec, split="test")),
                                  np.asarray(sources.load(spec, split="test")))


def test_pydoc_split_is_its_head_and_tail():
    train, test = sources.load("pydoc", split="train"), sources.load("pydoc", split="test")
    assert train + test == sources.load("pydoc") and len(test) < len(train) / 5


def test_file_errors_quote_the_path_as_an_excerpt(tmp_path):
    from minigen.data.sources import load_file
    long = tmp_path / ("d" * 200) / ("x" * 200 + ".csv")
    with pytest.raises(ValueError, match=r"^'.*dddd \.\.\.: no such file$") as err:
        load_file(long)
    assert len(str(err.value)) < 150
    long.parent.mkdir()
    long.write_text("1,2\n3\n")
    with pytest.raises(ValueError, match=r"^'.* \.\.\.: rows have different numbers of columns"):
        load_file(long)
