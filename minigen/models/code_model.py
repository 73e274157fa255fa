"""What every model with a code z = f(x) shares: the auto-encoders (``ae``, ``swae``) and the
latent-variable models (``vae``, ``hvae``).

``CodeModel`` holds the data checks (a Bernoulli output needs data in [0, 1]), ``fit`` (one
generator for the batches and the model's noise), ``for_data`` (the command line's model for
an array) and the NumPy reducer pair ``transform`` (x -> the code, or the mean of q(z | x))
and ``inverse_transform`` (z -> the decoder's mean: sigmoid(logits) or the Gaussian mean).
A subclass defines ``_code_mean(x)`` and ``decode(z)`` on Tensors, stores ``_code_size``,
and names its output argument in ``_output`` ('reconstruction' or 'likelihood').
"""
import numpy as np

from ..autograd import Tensor
from ..backend import as_rng
from ..distribution import check_array, check_fitted
from .base import DeepModel


def sigmoid(a):
    """1 / (1 + exp(-a)) for a NumPy array, as 0.5 (1 + tanh(a / 2)): no overflow warning."""
    return 0.5 * (1.0 + np.tanh(0.5 * a))


def check_unit_interval(X, where, what):
    """A Bernoulli likelihood needs data in [0, 1]: a clear error instead of a cross-entropy
    on pixel counts."""
    lo, hi = float(X.min(initial=0.0)), float(X.max(initial=0.0))
    if lo < 0 or hi > 1:
        raise ValueError(f"{where}: {what} models values in [0, 1] (binary or scaled data), but "
                         f"X lies in [{lo:g}, {hi:g}]; scale it (e.g. load_digits(scale='unit') "
                         "or scale='binary') or use a Gaussian / MSE reconstruction")


def in_unit_interval(X):
    """Whether every value of X lies in [0, 1]."""
    X = np.asarray(X)
    return X.size == 0 or (float(X.min()) >= 0 and float(X.max()) <= 1)


def batched(fn, X, dtype, out_dim, batch=4096):
    """fn applied to Tensor row blocks of X under no_grad, as one float64 NumPy array."""
    if len(X) == 0:
        return np.zeros((0, out_dim))
    return np.concatenate([fn(Tensor(X[i:i + batch].astype(dtype, copy=False))).numpy()
                           for i in range(0, len(X), batch)]).astype(np.float64)


class CodeModel(DeepModel):
    """The shared base of the AE and VAE families (module docstring)."""

    _output = "reconstruction"      # the constructor argument that may be 'bernoulli'

    @classmethod
    def for_data(cls, X, **params):
        """The model for data X (n, x_dim), as the command line builds it: x_dim from X, and
        a 2-D code unless ``z_dim`` (or ``z_dims``) is given."""
        if "z_dim" in cls._param_names():
            params.setdefault("z_dim", 2)
        return cls(np.shape(X)[1], **params)

    @property
    def _bernoulli(self):
        return getattr(self, self._output) == "bernoulli"

    def fit(self, X, y=None, *, rng=None, **kwargs):
        """Train with ``DeepModel.fit``; ``rng`` draws the batches and the model's noise."""
        self._rng = as_rng(rng, where=f"{type(self).__name__}.fit")
        return super().fit(X, y, rng=self._rng, **kwargs)

    def _check_X(self, X, where):
        X = check_array(X, where, n_features=self.x_dim)
        if self._bernoulli:
            check_unit_interval(X, where, f"{self._output}='bernoulli'")
        return X

    def _check_fit_data(self, X, y, where):
        if y is not None:
            raise ValueError(f"{where}: {type(self).__name__} is unsupervised; got targets y")
        X = self._check_X(X, where)
        self.n_features_in_ = self.x_dim
        return X.astype(self.dtype, copy=False)

    # --- NumPy in, NumPy out ----------------------------------------------------------------
    def transform(self, X):
        """Codes of the rows of X: f(x) (AE) or the mean of q(z | x) (of z1 for the
        hierarchical VAE), (n, code size) float64."""
        where = f"{type(self).__name__}.transform"
        check_fitted(self, "n_features_in_", where)
        X = check_array(X, where, n_features=self.x_dim, min_samples=0)
        with self.inference():
            return batched(self._code_mean, X, self.dtype, self._code_size)

    def inverse_transform(self, Z):
        """The decoder's mean for codes Z: sigmoid(logits) for a Bernoulli output, the output
        itself otherwise, (n, x_dim) float64."""
        where = f"{type(self).__name__}.inverse_transform"
        check_fitted(self, "n_features_in_", where)
        Z = check_array(Z, where, n_features=self._code_size, min_samples=0)
        with self.inference():
            out = self._decode_numpy(Z)
        return sigmoid(out) if self._bernoulli else out

    def _decode_numpy(self, z):
        """Decoder outputs for NumPy codes (float64)."""
        return batched(self.decode, z, self.dtype, self.x_dim)
