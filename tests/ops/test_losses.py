"""Losses: mse, l1, binary cross-entropy with logits, cross_entropy (ignore_index, reductions),
gaussian_nll, kl_normal. Values against NumPy formulas (kl_normal against numerical
integration), gradients by central differences, second derivatives for cross_entropy."""
import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minigen as mg
import minigen.functional as F
from minigen.testing import arrays, gradcheck, gradgradcheck, shapes

REDUCE = {"mean": np.mean, "sum": np.sum, "none": lambda a: a}
reductions = st.sampled_from(sorted(REDUCE))


@st.composite
def same_shape_pair(draw, low=-2.0, high=2.0):
    shape = draw(shapes(max_dims=3, max_side=4))
    return draw(arrays(shape)), draw(arrays(shape, low, high))


@given(pair=same_shape_pair(), reduction=reductions)
def test_mse_loss(pair, reduction):
    x, y = pair
    out = F.mse_loss(mg.tensor(x), mg.tensor(y), reduction)
    np.testing.assert_allclose(out.numpy(), REDUCE[reduction]((x - y) ** 2), rtol=1e-12)
    gradcheck(lambda a, b: F.mse_loss(a, b, reduction), [x, y])


@given(pair=same_shape_pair(), reduction=reductions)
def test_l1_loss(pair, reduction):
    x, y = pair
    x = np.where(x - y >= 0, x + 0.1, x - 0.1)   # away from the kink at x == y
    out = F.l1_loss(mg.tensor(x), mg.tensor(y), reduction)
    np.testing.assert_allclose(out.numpy(), REDUCE[reduction](np.abs(x - y)), rtol=1e-12)
    gradcheck(lambda a, b: F.l1_loss(a, b, reduction), [x, y])


@given(pair=same_shape_pair(0.0, 1.0), reduction=reductions)
def test_binary_cross_entropy_with_logits(pair, reduction):
    z, y = pair
    p = 1 / (1 + np.exp(-z))
    expected = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    out = F.binary_cross_entropy_with_logits(mg.tensor(z), mg.tensor(y), reduction)
    np.testing.assert_allclose(out.numpy(), REDUCE[reduction](expected), rtol=1e-10)
    gradcheck(lambda a, b: F.binary_cross_entropy_with_logits(a, b, reduction), [z, y])


def test_bce_with_logits_is_stable():
    out = F.binary_cross_entropy_with_logits(mg.tensor([800.0, -800.0], dtype=np.float64),
                                             mg.tensor([0.0, 1.0], dtype=np.float64), "none")
    np.testing.assert_allclose(out.numpy(), [800.0, 800.0])


@st.composite
def classification_case(draw):
    lead = draw(shapes(min_dims=1, max_dims=2, max_side=4))
    k = draw(st.integers(1, 5))
    logits = draw(arrays(lead + (k,), -3.0, 3.0))
    targets = draw(hnp.arrays(np.int64, lead, elements=st.integers(0, k - 1)))
    ignore = draw(st.sampled_from([None, -100, 0]))
    if ignore == -100:   # mark some rows as padding
        pad = draw(hnp.arrays(bool, lead))
        targets = np.where(pad, -100, targets)
    return logits, targets, ignore


def cross_entropy_ref(logits, targets, ignore, reduction):
    m = logits.max(-1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(-1, keepdims=True))
    keep = np.ones(targets.shape, bool) if ignore is None else targets != ignore
    safe = np.where(keep, targets, 0)
    loss = -np.take_along_axis(logp, safe[..., None], -1)[..., 0] * keep
    if reduction == "mean":  # NaN when every row is ignored, as in PyTorch
        with np.errstate(invalid="ignore"):
            return loss.sum() / np.float64(keep.sum())
    return REDUCE[reduction](loss)


@given(case=classification_case(), reduction=reductions)
def test_cross_entropy(case, reduction):
    logits, targets, ignore = case
    with np.errstate(invalid="ignore"):
        out = F.cross_entropy(mg.tensor(logits), targets, ignore_index=ignore,
                              reduction=reduction)
    np.testing.assert_allclose(out.numpy(), cross_entropy_ref(logits, targets, ignore, reduction),
                               rtol=1e-10, atol=1e-14)
    if np.isnan(out.item() if out.size == 1 else 0.0):
        return  # a mean over no rows
    gradcheck(lambda z: F.cross_entropy(z, targets, ignore_index=ignore, reduction=reduction),
              [logits])


def test_cross_entropy_ignored_rows_get_no_gradient():
    z = mg.tensor(np.random.default_rng(0).standard_normal((4, 3)), requires_grad=True)
    targets = mg.tensor(np.array([0, -1, 2, -1]))
    F.cross_entropy(z, targets, ignore_index=-1).backward()
    np.testing.assert_array_equal(z.grad.numpy()[[1, 3]], 0.0)
    assert np.abs(z.grad.numpy()[[0, 2]]).min() > 0
    with np.errstate(invalid="ignore"):  # a mean over no rows is NaN, as in PyTorch
        all_ignored = F.cross_entropy(mg.tensor(np.ones((2, 3))), np.array([-1, -1]),
                                      ignore_index=-1)
    assert np.isnan(all_ignored.item())
    assert F.cross_entropy(mg.tensor(np.ones((2, 3))), np.array([-1, -1]), ignore_index=-1,
                           reduction="sum").item() == 0.0


@pytest.mark.parametrize("ignore", [None, 1])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_cross_entropy_second_derivative(ignore, reduction):
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((2, 3, 4))
    targets = np.array([[0, 1, 3], [2, 1, 0]])
    gradgradcheck(lambda z: F.cross_entropy(z, targets, ignore_index=ignore,
                                            reduction=reduction), [logits])


def test_cross_entropy_bad_targets():
    z = mg.tensor(np.zeros((2, 3)))
    with pytest.raises(TypeError, match="cross_entropy: targets must be integer class indices, "
                                        "got float"):
        F.cross_entropy(z, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"cross_entropy: .*targets must have shape \(2,\)"):
        F.cross_entropy(z, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"cross_entropy: targets must lie in \[0, 3\)"):
        F.cross_entropy(z, np.array([0, 3]))
    with pytest.raises(ValueError, match="cross_entropy: reduction must be"):
        F.cross_entropy(z, np.array([0, 1]), reduction="avg")


@given(data=st.data(), full=st.booleans(), reduction=reductions)
def test_gaussian_nll(data, full, reduction):
    shape = data.draw(shapes(max_dims=3, max_side=4))
    x, y = data.draw(arrays(shape)), data.draw(arrays(shape))
    var = data.draw(arrays(shape, 0.2, 3.0))
    expected = 0.5 * (np.log(var) + (x - y) ** 2 / var) + (0.5 * math.log(2 * math.pi) if full
                                                            else 0.0)
    out = F.gaussian_nll(mg.tensor(x), mg.tensor(y), mg.tensor(var), full=full,
                         reduction=reduction)
    np.testing.assert_allclose(out.numpy(), REDUCE[reduction](expected), rtol=1e-10)
    gradcheck(lambda a, b, v: F.gaussian_nll(a, b, v, full=full, reduction=reduction),
              [x, y, var])
    gradcheck(lambda a: F.gaussian_nll(a, mg.tensor(y), 0.7, reduction=reduction), [x])


def test_gaussian_nll_clamps_the_variance():
    out = F.gaussian_nll(mg.tensor([0.0]), mg.tensor([0.0]), mg.tensor([0.0]), eps=1e-3)
    assert out.item() == pytest.approx(0.5 * math.log(1e-3), rel=1e-6)


@given(data=st.data())
def test_kl_normal_gradients(data):
    shape = data.draw(shapes(max_dims=2, max_side=4))
    mq, lq, mp, lp = (data.draw(arrays(shape, -1.5, 1.5)) for _ in range(4))
    gradcheck(F.kl_normal, [mq, lq, mp, lp])
    gradcheck(lambda a, b: F.kl_normal(a, b), [mq, lq])
    gradcheck(lambda a, b: F.kl_normal(a, b, 0.3, -0.4), [mq, lq])


@pytest.mark.parametrize("mq, lq, mp, lp", [(0.0, 0.0, 0.0, 0.0), (0.7, -0.5, 0.0, 0.0),
                                            (-1.0, 0.8, 0.5, -0.3)])
def test_kl_normal_matches_numerical_integration(mq, lq, mp, lp):
    sq, sp = math.exp(0.5 * lq), math.exp(0.5 * lp)
    z = np.linspace(mq - 12 * sq, mq + 12 * sq, 200_001)
    log_q = -0.5 * ((z - mq) / sq) ** 2 - math.log(sq * math.sqrt(2 * math.pi))
    log_p = -0.5 * ((z - mp) / sp) ** 2 - math.log(sp * math.sqrt(2 * math.pi))
    integrand = np.exp(log_q) * (log_q - log_p)
    numeric = float(((integrand[1:] + integrand[:-1]) / 2 * np.diff(z)).sum())
    as_tensors = F.kl_normal(mg.tensor([mq]), mg.tensor([lq]), mg.tensor([mp]), mg.tensor([lp]))
    as_floats = F.kl_normal(mg.tensor([mq], dtype=np.float64), mg.tensor([lq], dtype=np.float64),
                            mp, lp)
    assert as_tensors.item() == pytest.approx(numeric, abs=1e-6)
    assert as_floats.item() == pytest.approx(numeric, abs=1e-9)


@pytest.mark.parametrize("loss", [F.mse_loss, F.l1_loss, F.binary_cross_entropy_with_logits,
                                  lambda a, b: F.gaussian_nll(a, b, 1.0)])
def test_shape_mismatch_names_the_loss(loss):
    with pytest.raises(ValueError, match=r"input has shape \(3,\) but target has shape \(2,\)"):
        loss(mg.tensor(np.zeros(3)), mg.tensor(np.zeros(2)))


def test_unknown_reduction():
    with pytest.raises(ValueError, match="mse_loss: reduction must be 'mean', 'sum' or 'none'"):
        F.mse_loss(mg.tensor([1.0]), mg.tensor([1.0]), reduction="avg")
