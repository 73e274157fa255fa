"""Toy distributions for density estimation: 2-D shapes and 1-D Gaussian mixtures.

Every generator is ``f(n, noise=..., rng=None)`` and returns a float64 array of shape
``(n, 2)`` (``(n, 1)`` for the 1-D mixture). ``rng`` is a NumPy Generator, an int seed or None
(minigen's default generator). The 2-D shapes follow the benchmarks popularised by
Grathwohl et al., "FFJORD" (2019) and Johnson et al., "Composing graphical models with neural
networks" (2016, the pinwheel).
"""
import numpy as np

from .._checks import excerpt, positive_int, real
from ..backend import as_rng, check_rng


def _check(name, n, noise):
    positive_int(n, "n", name)
    real(noise, "noise", name, low=0)


def _finish(points, noise, rng):
    """Add N(0, noise^2 I) jitter and shuffle the rows."""
    points = points + noise * rng.standard_normal(points.shape)
    return points[rng.permutation(len(points))]


def moons(n, noise=0.05, rng=None):
    """Two interleaving half circles: (cos t, sin t) and (1 - cos t, 1/2 - sin t), t ~ U(0, pi)."""
    _check("moons", n, noise)
    rng = as_rng(rng, where="moons")
    upper = n // 2
    t = rng.uniform(0.0, np.pi, n)
    x = np.where(np.arange(n) < upper, np.cos(t), 1.0 - np.cos(t))
    y = np.where(np.arange(n) < upper, np.sin(t), 0.5 - np.sin(t))
    return _finish(np.stack([x, y], axis=1), noise, rng)


def circles(n, noise=0.05, factor=0.5, rng=None):
    """Two concentric circles of radius 1 and ``factor``, angles uniform."""
    _check("circles", n, noise)
    real(factor, "factor", "circles", low=0, high=1, low_open=True, high_open=True)
    rng = as_rng(rng, where="circles")
    t = rng.uniform(0.0, 2.0 * np.pi, n)
    radius = np.where(np.arange(n) < n // 2, 1.0, factor)
    return _finish(radius[:, None] * np.stack([np.cos(t), np.sin(t)], axis=1), noise, rng)


def swiss_roll(n, noise=0.1, rng=None):
    """A 2-D spiral: (t cos t, t sin t) / 5 with t = 1.5 pi (1 + 2u), u ~ U(0, 1)."""
    _check("swiss_roll", n, noise)
    rng = as_rng(rng, where="swiss_roll")
    t = 1.5 * np.pi * (1.0 + 2.0 * rng.uniform(size=n))
    return _finish(np.stack([t * np.cos(t), t * np.sin(t)], axis=1) / 5.0, noise, rng)


def eight_gaussians(n, noise=0.1, radius=2.0, rng=None):
    """Equal mixture of N(c_k, noise^2 I) with centres c_k = radius (cos 2pi k/8, sin 2pi k/8)."""
    _check("eight_gaussians", n, noise)
    rng = as_rng(rng, where="eight_gaussians")
    angles = 2.0 * np.pi * rng.integers(0, 8, n) / 8.0
    return _finish(radius * np.stack([np.cos(angles), np.sin(angles)], axis=1), noise, rng)


def twenty_five_gaussians(n, noise=0.05, rng=None):
    """Equal mixture of N(c, noise^2 I) over the 5x5 grid of centres {-2, -1, 0, 1, 2}^2."""
    _check("twenty_five_gaussians", n, noise)
    rng = as_rng(rng, where="twenty_five_gaussians")
    centres = rng.integers(-2, 3, size=(n, 2)).astype(np.float64)
    return _finish(centres, noise, rng)


def checkerboard(n, noise=0.0, rng=None):
    """Uniform on the black squares of a 4x4 checkerboard covering [-4, 4]^2 (squares of side 2)."""
    _check("checkerboard", n, noise)
    rng = as_rng(rng, where="checkerboard")
    x = rng.uniform(-2.0, 2.0, n)
    y = rng.uniform(0.0, 1.0, n) - 2.0 * rng.integers(0, 2, n) + np.floor(x) % 2
    return _finish(2.0 * np.stack([x, y], axis=1), noise, rng)


def pinwheel(n, noise=0.3, n_arms=5, tangential_std=0.1, rate=0.25, rng=None):
    """Johnson et al. (2016): arm k's points (1 + r, t) with r ~ N(0, noise^2), t ~ N(0, tang^2),
    rotated by 2 pi k / n_arms + rate * exp(1 + r)."""
    _check("pinwheel", n, noise)
    rng = as_rng(rng, where="pinwheel")
    arm = rng.integers(0, n_arms, n)
    r = 1.0 + noise * rng.standard_normal(n)
    t = tangential_std * rng.standard_normal(n)
    angle = 2.0 * np.pi * arm / n_arms + rate * np.exp(r)
    cos, sin = np.cos(angle), np.sin(angle)
    points = np.stack([cos * r - sin * t, sin * r + cos * t], axis=1)
    return points[rng.permutation(n)]


def _mixture_params(name, means, weights):
    means = np.asarray(means, dtype=np.float64).ravel()
    weights = np.full(len(means), 1.0 / len(means)) if weights is None else np.asarray(weights, float)
    if weights.shape != means.shape or np.any(weights < 0) or not np.isclose(weights.sum(), 1.0):
        raise ValueError(f"{name}: weights must be {len(means)} non-negative numbers summing to 1, "
                         f"got {excerpt(weights)}")
    return means, weights


def mixture_1d(n, noise=0.5, means=(-2.0, 0.0, 3.0), weights=None, rng=None):
    """Samples of shape (n, 1) from sum_k w_k N(mu_k, noise^2) (equal weights by default)."""
    _check("mixture_1d", n, noise)
    means, weights = _mixture_params("mixture_1d", means, weights)
    rng = as_rng(rng, where="mixture_1d")
    component = rng.choice(len(means), size=n, p=weights)
    return (means[component] + noise * rng.standard_normal(n))[:, None]


def mixture_1d_logpdf(x, noise=0.5, means=(-2.0, 0.0, 3.0), weights=None):
    """The true log density of ``mixture_1d`` at the points ``x`` (any shape; returns x.shape)."""
    means, weights = _mixture_params("mixture_1d_logpdf", means, weights)
    x = np.asarray(x, dtype=np.float64)[..., None]
    log_terms = (np.log(weights) - 0.5 * ((x - means) / noise) ** 2
                 - np.log(noise) - 0.5 * np.log(2.0 * np.pi))
    top = log_terms.max(axis=-1, keepdims=True)
    return (top + np.log(np.exp(log_terms - top).sum(axis=-1, keepdims=True)))[..., 0]


TOY_DATASETS = {f.__name__: f for f in (moons, circles, swiss_roll, eight_gaussians,
                                        twenty_five_gaussians, checkerboard, pinwheel, mixture_1d)}


def make_toy(name, n, noise=None, rng=None):
    """Draw ``n`` points of the toy set ``name`` (a key of ``TOY_DATASETS``)."""
    if name not in TOY_DATASETS:
        raise ValueError(f"make_toy: unknown data set {excerpt(name)}; expected one of "
                         f"{sorted(TOY_DATASETS)}")
    generate = TOY_DATASETS[name]
    check_rng(rng, "rng", "make_toy")
    return generate(n, rng=rng) if noise is None else generate(n, noise=noise, rng=rng)
