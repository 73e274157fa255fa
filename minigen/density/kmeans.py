"""k-means clustering (Lloyd's algorithm) with k-means++ seeding.

Lloyd (1982), "Least squares quantization in PCM": alternate
    labels_i = argmin_k ||x_i - c_k||^2   and   c_k = mean of {x_i : labels_i = k},
which never increases the inertia sum_i ||x_i - c_{labels_i}||^2. Seeding follows Arthur &
Vassilvitskii (2007), "k-means++": each new centre is drawn with probability proportional
to D(x)^2, the squared distance to the nearest centre chosen so far (greedy variant: the best
of 2 + log k candidates). Squared distances use ||x||^2 - 2 x.c + ||c||^2 (one matrix product).
A fit warns (ConvergenceWarning) when its best run stops at max_iter before meeting tol, and
when X has fewer distinct points than clusters (some centres then coincide).
"""
import warnings

import numpy as np

from .. import _checks
from ..backend import as_rng
from ..distribution import ConvergenceWarning, Configurable, register, check_array, check_fitted
from ._validate import check_scale


def _squared_distances(X, x_sq, centers):
    """||x_i - c_k||^2 for all i, k, clipped at 0 against rounding."""
    D = X @ centers.T
    D *= -2.0
    D += x_sq[:, None]
    D += np.einsum("kd,kd->k", centers, centers)
    return np.maximum(D, 0.0, out=D)


def kmeans_plusplus(X, n_clusters, rng=None):
    """Return ``(centers, indices)``: k-means++ seeds chosen among the rows of X."""
    X = check_scale(check_array(X, "kmeans_plusplus"), "kmeans_plusplus")
    _checks.positive_int(n_clusters, "n_clusters", "kmeans_plusplus")
    if n_clusters > len(X):
        raise ValueError(f"kmeans_plusplus: n_clusters={n_clusters} exceeds n_samples={len(X)}")
    rng = as_rng(rng, where="kmeans_plusplus")
    x_sq = np.einsum("ij,ij->i", X, X)
    n_trials = 2 + int(np.log(n_clusters))
    indices = [int(rng.integers(len(X)))]
    closest = _squared_distances(X, x_sq, X[indices])[:, 0]
    for _ in range(1, n_clusters):
        total = closest.sum()
        if total <= 0:                      # every point already coincides with a centre
            candidates = rng.integers(len(X), size=n_trials)
        else:
            cumulative = np.cumsum(closest)
            candidates = np.searchsorted(cumulative, rng.uniform(0, total, n_trials), side="right")
            candidates = np.minimum(candidates, len(X) - 1)
        trial = np.minimum(closest[:, None], _squared_distances(X, x_sq, X[candidates]))
        best = int(np.argmin(trial.sum(axis=0)))
        indices.append(int(candidates[best]))
        closest = trial[:, best]
    indices = np.asarray(indices)
    return X[indices].copy(), indices


def _lloyd(X, x_sq, centers, max_iter, tol):
    """Lloyd iterations from ``centers``; returns centers, labels, inertia, n_iter, converged."""
    k, converged = len(centers), False
    for n_iter in range(1, max_iter + 1):
        D = _squared_distances(X, x_sq, centers)
        labels = np.argmin(D, axis=1)
        counts = np.bincount(labels, minlength=k)
        sums = np.stack([np.bincount(labels, weights=X[:, j], minlength=k)
                         for j in range(X.shape[1])], axis=1)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], centers)
        empty = np.flatnonzero(counts == 0)
        if len(empty):                      # re-seed empty clusters at the worst-fit points
            worst = np.argsort(D[np.arange(len(X)), labels])[::-1][:len(empty)]
            new[empty] = X[worst]
        shift = np.sum((new - centers) ** 2)
        centers = new
        if shift <= tol:
            converged = True
            break
    D = _squared_distances(X, x_sq, centers)
    labels = np.argmin(D, axis=1)
    return centers, labels, float(D[np.arange(len(X)), labels].sum()), n_iter, converged


@register("kmeans")
class KMeans(Configurable):
    """k-means with k-means++ (or 'random') seeding; the best of ``n_init`` runs by inertia.

    tol: stop when the centres move by at most tol * (mean per-feature variance of X) in total
    squared distance (the scale-free rule scikit-learn uses).
    """

    def __init__(self, n_clusters=8, init="k-means++", n_init=1, max_iter=300, tol=1e-4,
                 random_state=None):
        _checks.positive_int(n_clusters, "n_clusters", "KMeans")
        _checks.positive_int(n_init, "n_init", "KMeans")
        _checks.positive_int(max_iter, "max_iter", "KMeans")
        _checks.choice(init, "init", "KMeans", ("k-means++", "random"))
        _checks.real(tol, "tol", "KMeans", low=0)
        self.n_clusters, self.init, self.n_init = n_clusters, init, n_init
        self.max_iter, self.tol, self.random_state = max_iter, tol, random_state

    def fit(self, X, y=None):
        """Best of ``n_init`` Lloyd runs by inertia (``y`` is ignored: scikit-learn's signature)."""
        X = check_scale(check_array(X, "KMeans.fit"), "KMeans.fit")
        if self.n_clusters > len(X):
            raise ValueError(f"KMeans.fit: n_clusters={self.n_clusters} exceeds n_samples={len(X)}")
        rng = as_rng(self.random_state, name="random_state", where="KMeans.fit")
        x_sq = np.einsum("ij,ij->i", X, X)
        tol = self.tol * float(np.mean(np.var(X, axis=0)))
        best = None
        for _ in range(self.n_init):
            if self.init == "k-means++":
                seeds = kmeans_plusplus(X, self.n_clusters, rng)[0]
            else:
                seeds = X[rng.choice(len(X), self.n_clusters, replace=False)]
            run = _lloyd(X, x_sq, seeds, self.max_iter, tol)
            if best is None or run[2] < best[2]:
                best = run
        self.cluster_centers_, self.labels_, self.inertia_, self.n_iter_, converged = best
        self.n_features_in_ = X.shape[1]
        if not converged:
            warnings.warn(f"KMeans.fit: Lloyd's algorithm did not converge in max_iter="
                          f"{self.max_iter} iterations (tol={self.tol}); increase max_iter or tol",
                          ConvergenceWarning, stacklevel=2)
        distinct = len(np.unique(self.labels_))
        if distinct < self.n_clusters:
            points = len(np.unique(X, axis=0))
            warnings.warn(f"KMeans.fit: found only {distinct} distinct clusters for n_clusters="
                          f"{self.n_clusters} (X has {points} distinct points); use fewer "
                          "clusters or remove duplicates", ConvergenceWarning, stacklevel=2)
        return self

    def fit_predict(self, X, y=None):
        """Fit, then the cluster of each row (``labels_``)."""
        return self.fit(X).labels_

    def predict(self, X):
        check_fitted(self, "cluster_centers_", "KMeans.predict")
        X = check_array(X, "KMeans.predict", n_features=self.n_features_in_)
        return np.argmin(_squared_distances(X, np.einsum("ij,ij->i", X, X), self.cluster_centers_), axis=1)
