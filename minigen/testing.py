"""Gradient checks and hypothesis strategies for testing ops.

``gradcheck`` compares the engine's gradient with float64 central differences
(f(x + h e) - f(x - h e)) / 2h: elementwise for small inputs, along random directions v
(checking <grad, v> against the directional derivative) for large ones.
"""
import numpy as np

from .autograd import Tensor, grad


def _as64(inputs):
    return [Tensor(np.array(x.data if isinstance(x, Tensor) else x, dtype=np.float64),
                   requires_grad=True) for x in inputs]


def _scalarise(out, weights):
    """Reduce the output to a scalar with fixed random weights, so every entry matters."""
    return (out * Tensor(weights)).sum()


def _numeric_directional(f, arrays, i, v, eps):
    plus = [a.copy() for a in arrays]
    minus = [a.copy() for a in arrays]
    plus[i] += eps * v
    minus[i] -= eps * v
    return (f(plus) - f(minus)) / (2 * eps)


def gradcheck(fn, inputs, eps=1e-6, rtol=1e-5, atol=1e-8, max_elementwise=64, n_directions=3,
              seed=0):
    """Check the gradient of ``fn(*tensors) -> Tensor`` at ``inputs`` (arrays or Tensors).

    Runs in float64. Raises AssertionError naming the input and the worst entry on failure;
    returns True otherwise.
    """
    rng = np.random.default_rng(seed)
    xs = _as64(inputs)
    out = fn(*xs)
    weights = rng.standard_normal(out.shape)
    scalar = _scalarise(out, weights)
    # an output that does not depend on the inputs through the graph has zero gradient
    analytic = grad(scalar, xs, allow_unused=True) if scalar.requires_grad else [None] * len(xs)
    arrays = [x.data for x in xs]

    def f(arrs):
        return float(_scalarise(fn(*[Tensor(a, requires_grad=True) for a in arrs]), weights).data)

    for i, (a, g) in enumerate(zip(arrays, analytic)):
        g = np.zeros_like(a) if g is None else g.data
        if a.size <= max_elementwise:
            num = np.empty_like(a)
            for k in range(a.size):
                e = np.zeros_like(a)
                e.flat[k] = 1
                num.flat[k] = _numeric_directional(f, arrays, i, e, eps)
            bad = ~np.isclose(g, num, rtol=rtol, atol=atol)
            if bad.any():
                k = int(np.flatnonzero(bad)[0])
                raise AssertionError(f"gradcheck: input {i} (shape {a.shape}) entry {k}: "
                                     f"analytic {g.flat[k]:.8g} vs numeric {num.flat[k]:.8g}")
        else:
            for _ in range(n_directions):
                v = rng.standard_normal(a.shape)
                num = _numeric_directional(f, arrays, i, v, eps)
                ana = float((g * v).sum())
                if not np.isclose(ana, num, rtol=rtol, atol=atol * np.sqrt(a.size)):
                    raise AssertionError(f"gradcheck: input {i} (shape {a.shape}) along a random "
                                         f"direction: analytic {ana:.8g} vs numeric {num:.8g}")
    return True


def gradgradcheck(fn, inputs, **kw):
    """Check second derivatives: gradcheck of x -> <grad fn(x), w> built with create_graph."""
    rng = np.random.default_rng(kw.get("seed", 0) + 1)
    xs = _as64(inputs)
    weights = rng.standard_normal(fn(*xs).shape)

    def first_derivative(*ts):
        out = _scalarise(fn(*ts), weights)
        gs = grad(out, list(ts), create_graph=True, allow_unused=True)
        total = None
        for g in gs:
            if g is not None:
                term = (g * Tensor(np.cos(np.arange(g.size)).reshape(g.shape))).sum()
                total = term if total is None else total + term
        return total

    return gradcheck(first_derivative, [x.data for x in xs], **kw)


# --- hypothesis strategies ----------------------------------------------------------------
def shapes(min_dims=0, max_dims=4, min_side=1, max_side=5):
    """Array shapes, odd sizes included."""
    from hypothesis.extra import numpy as hnp
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side,
                            max_side=max_side)


def broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=5):
    """Tuples of shapes that broadcast together (as in NumPy)."""
    from hypothesis.extra import numpy as hnp
    return hnp.mutually_broadcastable_shapes(num_shapes=num_shapes, min_dims=min_dims,
                                             max_dims=max_dims, max_side=max_side).map(
        lambda r: r.input_shapes)


def arrays(shape, low=-2.0, high=2.0, dtype=np.float64):
    """Float arrays of ``shape`` (a shape or a strategy of shapes) with finite bounded values."""
    from hypothesis.extra import numpy as hnp
    from hypothesis import strategies as st
    elements = st.floats(low, high, allow_nan=False, allow_infinity=False, width=64)
    return hnp.arrays(dtype, shape, elements=elements)
