"""Density estimation in a learned low-dimensional code: the generative model x = g(z).

Fit: z = reducer.transform(x), then fit ``density`` to the codes. Sample: z ~ density,
x = reducer.inverse_transform(z) (plus the reducer's residual noise where it has one).
With PCA as the reducer the map x -> (z, r) is a rotation (a scaling too when whitening),
so the density in x is exact:
    log p(x) = log p_code(W (x - mu)) + log N(r; 0, sigma^2 I_{d-k})   (PPCA residual r),
cf. Tipping & Bishop (1999) with a non-Gaussian code density. Any reducer with
``transform``/``inverse_transform`` (a trained auto-encoder, say) can sample; scoring needs
the reducer's ``residual_log_prob``.
"""
import numpy as np

from ..backend import as_rng
from ..distribution import Distribution, register, check_fitted, check_n_samples


@register("latent")
class LatentDensity(Distribution):
    """``reducer`` (fit/transform/inverse_transform) followed by ``density`` on its codes.

    fit_reducer: fit the reducer on X in ``fit`` (False for an already trained reducer).
    The fitted reducer and density stay the constructor's objects (so ``save_model`` stores
    them, fitted state included, as nested parameters); ``codes_`` holds the training codes.
    """

    def __init__(self, reducer, density, fit_reducer=True):
        for name, obj, methods in (("reducer", reducer, ("transform", "inverse_transform")),
                                   ("density", density, ("fit", "sample"))):
            missing = [m for m in methods if not callable(getattr(obj, m, None))]
            if missing:
                raise TypeError(f"LatentDensity: {name} must have {' and '.join(methods)}; "
                                f"{type(obj).__name__} lacks {', '.join(missing)}")
        if fit_reducer and not callable(getattr(reducer, "fit", None)):
            raise TypeError("LatentDensity: fit_reducer=True needs a reducer with fit")
        self.reducer, self.density, self.fit_reducer = reducer, density, fit_reducer

    @classmethod
    def for_data(cls, X, n_components=None, n_mixtures=10, random_state=0, **params):
        """PCA(k) -> GaussianMixture(n_mixtures) for data X (n, d), k = min(16, d - 1) unless
        given: the command line's "latent" model."""
        from .mixture import GaussianMixture
        from .pca import PCA
        d = np.shape(X)[1]
        k = max(1, min(16, d - 1)) if n_components is None else n_components
        return cls(PCA(k), GaussianMixture(n_mixtures, random_state=random_state), **params)

    def fit(self, X, y=None, **density_fit_kwargs):
        """Fit the reducer (if ``fit_reducer``), then the density to the codes (``y`` ignored)."""
        if self.fit_reducer:
            self.reducer.fit(X)
        self.codes_ = self.reducer.transform(X)
        self.density.fit(self.codes_, **density_fit_kwargs)
        return self

    def score_samples(self, X):
        """log p_code(transform(x)) + reducer.residual_log_prob(x)."""
        residual = getattr(self.reducer, "residual_log_prob", None)
        if residual is None or not callable(getattr(self.density, "score_samples", None)):
            raise TypeError("LatentDensity.score_samples: needs a reducer with residual_log_prob "
                            f"(got {type(self.reducer).__name__}) and a density with score_samples "
                            f"(got {type(self.density).__name__})")
        check_fitted(self, "codes_", "LatentDensity.score_samples")
        return self.density.score_samples(self.reducer.transform(X)) + residual(X)

    def sample(self, n, rng=None, *, residual=True):
        """x = inverse_transform(z), z ~ density; plus reducer.sample_residual when ``residual``
        (the PPCA noise outside the principal subspace) and the reducer has one."""
        check_fitted(self, "codes_", "LatentDensity.sample")
        n = check_n_samples(n, "LatentDensity.sample")
        rng = as_rng(rng, where="LatentDensity.sample")
        X = self.reducer.inverse_transform(self.density.sample(n, rng=rng))
        add_noise = getattr(self.reducer, "sample_residual", None)
        return X + add_noise(n, rng) if residual and add_noise is not None else X
