"""Auto-encoders: a learned code z = f(x) and a decoder g(z) back to the data.

AutoEncoder (Hinton & Salakhutdinov 2006; Goodfellow et al. 2016, ch. 14) minimises the
batch mean of the reconstruction loss of each example,

    L_rec(x) = sum_j (x_j - g(f(x))_j)^2                  reconstruction='mse'
    L_rec(x) = sum_j softplus(l_j) - x_j l_j,  l = g(f(x)) reconstruction='bernoulli'

(the second is -log prod_j Bernoulli(x_j; sigmoid(l_j)), binary cross-entropy on logits, for
data in [0, 1]). A plain AE defines no density, so ``log_prob`` raises ``NoDensityError``. To
generate, ``fit(..., latent_density='gmm' | 'kde')`` fits a density p(z) to the training codes
after training and ``sample(n)`` decodes z ~ p(z): the ex-post density estimation of Ghosh et
al. (2020), "From variational to deterministic autoencoders". ``transform`` and
``inverse_transform`` (NumPy in, NumPy out) make a trained AE a reducer for ``LatentDensity``.

SupervisedAutoEncoder adds a softmax classifier on the code (Le, Patterson & White 2018,
"Supervised autoencoders: improving generalization performance with unsupervised
regularizers"):

    L(x, y) = L_rec(x) - lambda log softmax(W f(x) + b)_y,   lambda = ``classifier_weight``,

and after training fits one latent density per class, p(z | y), so ``sample(n, y=c)`` draws
digits of class c.
"""
import numpy as np

from .. import _checks
from .. import functional as F
from ..autograd import Tensor
from ..backend import as_rng
from ..density import KDE, GaussianMixture
from ..distribution import (NotFittedError, check_array, check_fitted, check_n_samples,
                            register)
from ..nn import Linear
from .code_model import CodeModel, batched
from .networks import make_decoder, make_encoder

RECONSTRUCTIONS = ("mse", "bernoulli")
LATENT_DENSITIES = ("gmm", "kde", None)


def _check_latent_spec(spec, where):
    if spec in LATENT_DENSITIES or (callable(getattr(spec, "fit", None))
                                    and callable(getattr(spec, "sample", None))):
        return spec
    raise ValueError(f"{where}: latent_density must be 'gmm', 'kde', None or an estimator with "
                     f"fit and sample, got {spec!r}")


def _latent_density(spec, n, n_components, rng):
    """A fresh density for codes: a GaussianMixture ('gmm', full covariances, at most
    ``n_components`` and at most one per code), a KDE (Scott's rule) or a copy of a given
    estimator (its constructor parameters)."""
    if spec == "gmm":
        return GaussianMixture(n_components=max(1, min(n_components, n)),
                               random_state=int(rng.integers(2 ** 31)))
    if spec == "kde":
        return KDE()
    return type(spec)(**spec.get_params(deep=False))


class AutoEncoderBase(CodeModel):
    """Encoder, decoder, codes and reconstruction shared by the AE family (AutoEncoder,
    SupervisedAutoEncoder, SWAE). Subclasses store their constructor arguments and call
    ``_build``."""

    has_density = False
    density_hint = ("an auto-encoder is not a density model; draw samples with sample(n) and "
                    "compare them with minigen.metrics (or use VAE for a likelihood bound)")

    def _build(self):
        where = type(self).__name__
        _checks.positive_int(self.z_dim, "z_dim", where)
        _checks.choice(self.reconstruction, "reconstruction", where, RECONSTRUCTIONS)
        rng = as_rng(self.rng, where=where)
        self.encoder = make_encoder(self.x_dim, self.z_dim, self.hidden, self.activation,
                                    self.image_shape, self.channels, rng, where)
        self.decoder = make_decoder(self.z_dim, self.x_dim, self.hidden, self.activation,
                                    self.image_shape, self.channels, rng, where)
        self._rng, self._code_size = rng, self.z_dim

    # --- the networks on Tensors ------------------------------------------------------------
    def encode(self, x):
        """The code z = f(x), a Tensor (n, z_dim)."""
        return self.encoder(x)

    def decode(self, z):
        """g(z): logits (Bernoulli) or the reconstruction itself (MSE), a Tensor (n, x_dim)."""
        return self.decoder(z)

    def reconstruction_loss(self, x, out):
        """L_rec per example (n,) from the decoder's output (formulas in the module docstring)."""
        if self.reconstruction == "bernoulli":
            return (F.softplus(out) - x * out).sum(1)
        d = out - x
        return (d * d).sum(1)

    def _code_mean(self, x):
        return self.encode(x)

    def reconstruct(self, X):
        """inverse_transform(transform(X))."""
        return self.inverse_transform(self.transform(X))

    def reconstruction_error(self, X):
        """Per-example mean squared error between x and its reconstruction (n,)."""
        X = check_array(X, f"{type(self).__name__}.reconstruction_error", n_features=self.x_dim)
        return np.mean((self.reconstruct(X) - X) ** 2, axis=1)


@register("ae")
class AutoEncoder(AutoEncoderBase):
    """x -> z = f(x) -> g(z), trained on L_rec; a density on the codes fitted afterwards.

    x_dim, z_dim: data and code sizes; hidden: MLP widths from the data's side (the decoder
    mirrors them); reconstruction: 'mse' or 'bernoulli' (data in [0, 1]); image_shape: e.g.
    (1, 8, 8) for the conv encoder/decoder (``channels`` per stride-2 stage); rng:
    the initial weights. Fitted: ``latent_density_`` (None if fitted with
    ``latent_density=None``), ``n_features_in_``, ``history_``.
    """

    def __init__(self, x_dim, z_dim, hidden=(256, 256), reconstruction="mse",
                 activation="relu", image_shape=None, channels=(16, 32), rng=None):
        super().__init__()
        self.x_dim, self.z_dim, self.hidden = x_dim, z_dim, hidden
        self.reconstruction, self.activation = reconstruction, activation
        self.image_shape, self.channels, self.rng = image_shape, channels, rng
        self._build()

    def loss(self, batch):
        """Batch mean of L_rec(x)."""
        x = Tensor(batch)
        return self.reconstruction_loss(x, self.decode(self.encode(x))).mean()

    def fit(self, X, y=None, *, latent_density="gmm", n_components=10, rng=None, **kwargs):
        """Train (``steps=`` or ``epochs=``, ``batch_size``, ``lr``, ``validation``, ...: see
        ``DeepModel.fit``), then fit ``latent_density`` ('gmm': a full-covariance
        GaussianMixture with ``n_components``; 'kde'; an estimator; None: no sampling) on the
        training codes."""
        where = f"{type(self).__name__}.fit"
        self._latent_spec = (_check_latent_spec(latent_density, where),
                             _checks.positive_int(n_components, "n_components", where))
        return super().fit(X, y, rng=rng, **kwargs)

    def _after_fit(self, data):
        spec, n_components = self._latent_spec
        self.latent_density_ = None
        if spec is not None:
            self.fit_latent_density(data, spec, n_components)

    def fit_latent_density(self, X, latent_density="gmm", n_components=10, rng=None):
        """Fit p(z) to the codes of X (after training, or to change the density)."""
        where = f"{type(self).__name__}.fit_latent_density"
        rng = self._rng if rng is None else as_rng(rng, where=where)
        if latent_density is None:
            raise ValueError(f"{where}: latent_density must be 'gmm', 'kde' or an estimator")
        _check_latent_spec(latent_density, where)
        n_components = _checks.positive_int(n_components, "n_components", where)
        codes = self.transform(X)
        self.latent_density_ = _latent_density(latent_density, len(codes), n_components,
                                               rng).fit(codes)
        return self

    def sample(self, n, rng=None):
        """x = inverse_transform(z), z ~ latent_density_ (decoded means, (n, x_dim))."""
        where = f"{type(self).__name__}.sample"
        n = check_n_samples(n, where)
        check_fitted(self, "n_features_in_", where)
        if getattr(self, "latent_density_", None) is None:
            raise NotFittedError(f"{where}: no latent density was fitted (fit was called with "
                                 "latent_density=None); call fit_latent_density(X) first")
        return self.inverse_transform(self.latent_density_.sample(n, rng=as_rng(rng, where=where)))


@register("supervised-ae")
class SupervisedAutoEncoder(AutoEncoder):
    """An AutoEncoder with a classifier head softmax(W z + b) on the code, trained on
    L_rec + classifier_weight * cross-entropy (module docstring); ``fit(X, y)`` with integer
    labels in 0..n_classes-1. Fitted: ``latent_density_`` (all codes) and
    ``class_densities_`` (one per class, None for a class absent from the data)."""

    needs_labels = True     # fit(X, y): the command line passes the data's labels

    def __init__(self, x_dim, z_dim, n_classes, hidden=(256, 256), reconstruction="mse",
                 classifier_weight=1.0, activation="relu", image_shape=None, channels=(16, 32),
                 rng=None):
        _checks.integer(n_classes, "n_classes", "SupervisedAutoEncoder", low=2)
        _checks.real(classifier_weight, "classifier_weight", "SupervisedAutoEncoder", low=0)
        super().__init__(x_dim, z_dim, hidden, reconstruction, activation, image_shape,
                         channels, rng)
        self.n_classes, self.classifier_weight = n_classes, classifier_weight
        self.head = Linear(z_dim, n_classes, rng=self._rng)

    def _check_fit_data(self, X, y, where):
        if y is None:
            raise ValueError(f"{where}: SupervisedAutoEncoder needs class labels y")
        X = self._check_X(X, where)
        y = np.asarray(y)
        if y.shape != (len(X),) or y.dtype.kind not in "iu":
            raise ValueError(f"{where}: y must be integer labels of shape ({len(X)},), got "
                             f"{y.dtype} {y.shape}")
        if len(y) and (y.min() < 0 or y.max() >= self.n_classes):
            raise ValueError(f"{where}: labels must lie in 0..{self.n_classes - 1}, got "
                             f"{y.min()}..{y.max()}")
        self.n_features_in_ = self.x_dim
        return X.astype(self.dtype, copy=False), y.astype(np.int64)

    def loss(self, batch):
        """Batch mean of L_rec(x) - classifier_weight * log softmax(W z + b)_y."""
        x, y = Tensor(batch[0]), batch[1]
        z = self.encode(x)
        rec = self.reconstruction_loss(x, self.decode(z)).mean()
        return rec + self.classifier_weight * F.cross_entropy(self.head(z), y)

    def fit_latent_density(self, X, latent_density="gmm", n_components=10, rng=None):
        """p(z) on all codes and p(z | y = c) on the codes of each class (X is (X, y))."""
        where = f"{type(self).__name__}.fit_latent_density"
        if not isinstance(X, tuple) or len(X) != 2:
            raise ValueError(f"{where}: give the data as a tuple (X, y)")
        if latent_density is None:
            raise ValueError(f"{where}: latent_density must be 'gmm', 'kde' or an estimator")
        _check_latent_spec(latent_density, where)
        X, y = self._check_fit_data(X[0], X[1], where)
        rng = self._rng if rng is None else as_rng(rng, where=where)
        codes = self.transform(X)
        self.latent_density_ = _latent_density(latent_density, len(codes), n_components,
                                               rng).fit(codes)
        per_class = max(1, n_components // self.n_classes)
        self.class_densities_ = [
            _latent_density(latent_density, int(np.sum(y == c)), per_class, rng)
            .fit(codes[y == c]) if np.any(y == c) else None for c in range(self.n_classes)]
        return self

    def predict_proba(self, X):
        """Class probabilities softmax(W f(x) + b), (n, n_classes)."""
        where = f"{type(self).__name__}.predict_proba"
        check_fitted(self, "n_features_in_", where)
        X = check_array(X, where, n_features=self.x_dim, min_samples=0)
        with self.inference():
            return batched(lambda x: F.softmax(self.head(self.encode(x)), axis=-1), X,
                           self.dtype, self.n_classes)

    def predict(self, X):
        """The most probable class of each row (n,)."""
        return np.argmax(self.predict_proba(X), axis=1)

    def sample(self, n, rng=None, *, y=None):
        """Decoded draws from p(z) (y=None) or from p(z | y): y an int (every draw of that
        class) or an int array of shape (n,)."""
        if y is None:
            return super().sample(n, rng)
        where = f"{type(self).__name__}.sample"
        n = check_n_samples(n, where)
        check_fitted(self, "class_densities_", where)
        labels = np.broadcast_to(np.asarray(y), (n,)) if np.ndim(y) == 0 else np.asarray(y)
        if labels.shape != (n,) or labels.dtype.kind not in "iu" or \
                (n and (labels.min() < 0 or labels.max() >= self.n_classes)):
            raise ValueError(f"{where}: y must be an int in 0..{self.n_classes - 1} or such ints "
                             f"of shape ({n},), got {y!r}")
        rng = as_rng(rng, where=where)
        Z = np.zeros((n, self.z_dim))
        for c in np.unique(labels):
            if self.class_densities_[c] is None:
                raise ValueError(f"{where}: class {c} had no training examples")
            Z[labels == c] = self.class_densities_[c].sample(int(np.sum(labels == c)), rng=rng)
        return self.inverse_transform(Z)
