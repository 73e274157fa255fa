"""The Dask half of ``KDE``: the data-dependent steps of the fit, scoring and sampling, block by
block; ``KDE.fit`` itself chooses the bandwidth, as in memory. Results equal the in-memory ones
to float64 rounding.

* Moments in two passes: the weighted mean m = sum_j w_j x_j (constant columns centred
  exactly), then Sigma = sum_j w_j (x_j - m)(x_j - m)^T / (1 - sum_j w_j^2) about it.
* Scores, the score function and the leave-one-out likelihood of 'cv' are
  ``blockwise.log_kernel_sum`` (a log-sum-exp tree over block pairs).
* Sampling decomposes the mixture over data blocks: n_b ~ Multinomial(n, W_b) points from block
  b (W_b its weight), each block drawing j with probability w_j / W_b and adding L u.
"""
import numpy as np

from ..backend import as_rng
from ..blockwise import _da, _rows, _spawn, _weights, is_dask, log_kernel_sum
from ..distribution import check_fitted, check_n_samples
from ._validate import check_scale_blocks


def checked(X, sample_weight, where):
    """(X, w): the Dask data (n, d), checked finite and of a safe scale (one pass), and the
    normalised weights in X's row chunks."""
    X = _rows(X, where)
    check_scale_blocks(X, where)
    return X, _weights(sample_weight, X, where)


def weight_summary(w):
    """(n_eff, number of positive weights): n_eff = 1 / sum_j w_j^2 (Kish 1965)."""
    import dask
    sum_w2, positive = dask.compute((w ** 2).sum(), (w > 0).sum())
    return 1.0 / float(sum_w2), int(positive)


def data_covariance(X, w):
    """The weighted data covariance Sigma (d, d), a NumPy array (module docstring)."""
    import dask
    mean, low, high, sum_w2 = dask.compute(w @ X, X.min(axis=0), X.max(axis=0), (w ** 2).sum())
    mean = np.where(low == high, low, mean)        # constant columns centre exactly
    Xc = X - mean
    return ((Xc.T * w) @ Xc).compute() / (1.0 - sum_w2)


def loo_log_likelihood(X, w, chol, where):
    """sum_i w_i log[sum_{j != i} w_j N(x_i; x_j, L L^T) / (1 - w_i)], block-wise ('cv')."""
    da = _da()
    loo = log_kernel_sum(X, X, chol, w, exclude_self=True, where=where)
    with np.errstate(divide="ignore"):
        terms = da.where(w > 0, w * (loo - da.log1p(-w)), 0.0)
    return float(terms.sum().compute())


def _query(model, Q, where):
    check_fitted(model, "cholesky_", where)
    X = _rows(model.data_, where, "data_")
    Q = _rows(Q, where, n_features=model.n_features_in_, chunks=max(X.chunks[0]))
    return Q, X, _da().asarray(model.weights_).rechunk((X.chunks[0],))


def score_samples(model, Q):
    """``KDE.score_samples``: a Dask (m,) array for a Dask Q, else a NumPy array."""
    where = "KDE.score_samples"
    Qd, X, w = _query(model, Q, where)
    out = log_kernel_sum(Qd, X, model.cholesky_, w, where=where)
    return out if is_dask(Q) else out.compute()


def score_function(model, Q):
    """``KDE.score_function``: grad log p = sum_b softmax_b(l_b) g_b over data blocks b."""
    where = "KDE.score_function"
    Qd, X, w = _query(model, Q, where)
    out = log_kernel_sum(Qd, X, model.cholesky_, w, want_grad=True, where=where)[:, 1:]
    return out if is_dask(Q) else out.compute()


def _sample_block(x, w, count, chol, seed):
    if count == 0:
        return np.empty((0, x.shape[1]))
    rng = np.random.default_rng(seed)
    index = rng.choice(len(x), size=count, p=w / w.sum())
    return x[index] + rng.standard_normal((count, x.shape[1])) @ chol.T


def sample(model, n, rng=None):
    """``KDE.sample`` on Dask data, a Dask array (module docstring); block b draws from child
    stream b of ``rng``'s SeedSequence."""
    import dask
    da = _da()
    n = check_n_samples(n, "KDE.sample")
    X = _rows(model.data_, "KDE.sample", "data_")
    w = da.asarray(model.weights_).rechunk((X.chunks[0],))
    totals = np.array(dask.compute(*[b.sum() for b in w.to_delayed()]))
    rng = as_rng(rng, where="KDE.sample")
    counts = rng.multinomial(n, totals / totals.sum())
    blocks = [da.from_delayed(dask.delayed(_sample_block)(x, wb, int(c), model.cholesky_, child),
                              shape=(int(c), X.shape[1]), dtype=np.float64)
              for x, wb, c, child in zip(X.to_delayed()[:, 0], w.to_delayed(), counts,
                                         _spawn(rng, len(counts)))]
    return da.concatenate(blocks)
