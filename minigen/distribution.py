"""The protocol every distribution in minigen shares, in code.

Classical estimators (``minigen.density``) and deep models (``minigen.models``) alike:

    fit(X, ...) -> self
    sample(n, rng=None, *, ...) -> (n, ...) array        extras after rng are keyword-only
    score_samples(X) -> (n,) array                       per-sample log p(x), or a stated bound
    log_prob(X)                                          the same method under PyTorch's name
    score(X) -> float                                    mean of score_samples

A model with no density (a plain auto-encoder, a GAN) sets ``has_density = False`` and its
``score_samples`` / ``log_prob`` / ``score`` raise ``NoDensityError``. Fitted attributes end in
``_``; ``get_params`` / ``set_params`` come from the constructor's signature (scikit-learn's
rule: every constructor argument is stored unchanged under its own name), which is what lets
``minigen.io.save_model`` store a model as its class name, its parameters and its arrays, and
``load_model`` rebuild it from the registry of minigen's own classes.
"""
import inspect

import numpy as np

from ._checks import excerpt, integer


class NotFittedError(ValueError, AttributeError):
    """A method that needs a fitted model was called before ``fit`` (as scikit-learn's)."""


class ConvergenceWarning(UserWarning):
    """An iterative fit (EM, k-means) stopped at ``max_iter`` before meeting ``tol``."""


class NoDensityError(TypeError):
    """``log_prob`` / ``score_samples`` / ``score`` on a model that defines no density."""


# --- input checks: clear errors raised before any work --------------------------------------
def check_array(X, where, n_features=None, min_samples=1):
    """``X`` as a finite float64 ``(n, d)`` array (a 1-D array is one feature: ``(n, 1)``)."""
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{where}: X must be a numeric array, got {type(X).__name__}") from err
    if X.ndim == 1:
        X = X[:, None]
    if X.ndim != 2:
        raise ValueError(f"{where}: X must be 2-D (n_samples, n_features), got shape {X.shape}")
    if X.shape[0] < min_samples:
        raise ValueError(f"{where}: X needs at least {min_samples} sample(s), got {X.shape[0]}")
    if X.shape[1] < 1:
        raise ValueError(f"{where}: X needs at least 1 feature, got shape {X.shape}")
    if n_features is not None and X.shape[1] != n_features:
        raise ValueError(f"{where}: X has {X.shape[1]} features but the model was fitted "
                         f"with {n_features}")
    if not np.all(np.isfinite(X)):
        raise ValueError(f"{where}: X contains NaN or infinity")
    return X


def check_sample_weight(sample_weight, n, where):
    """Non-negative finite weights of shape ``(n,)`` with a positive sum, normalised to sum 1;
    None means equal weights."""
    if sample_weight is None:
        return np.full(n, 1.0 / n)
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.shape != (n,):
        raise ValueError(f"{where}: sample_weight must have shape ({n},), got {w.shape}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError(f"{where}: sample_weight must be finite and non-negative")
    if w.sum() <= 0:
        raise ValueError(f"{where}: sample_weight must have a positive sum")
    return w / w.sum()


def check_n_samples(n, where):
    """The ``n`` of ``sample(n)``: an int in [0, the largest array length] (``sample(0)``
    gives an empty array; a larger n could never index an array)."""
    n = integer(n, "n", where, low=0)
    if n > np.iinfo(np.intp).max:
        raise ValueError(f"{where}: n must be at most {np.iinfo(np.intp).max} (the largest array "
                         f"length), got {n}")
    return n


def check_fitted(model, attribute, where):
    if getattr(model, attribute, None) is None:
        raise NotFittedError(f"{where}: this {type(model).__name__} is not fitted yet; "
                             "call fit(X) first")


def logsumexp(a, axis):
    """log sum exp(a) along ``axis``, shifted by the maximum for stability (-inf rows stay -inf)."""
    top = np.max(a, axis=axis, keepdims=True)
    top = np.where(np.isfinite(top), top, 0.0)
    return np.log(np.sum(np.exp(a - top), axis=axis)) + np.squeeze(top, axis=axis)


# --- the registry of minigen's own classes ----------------------------------------------------
_CLASSES = {}   # class name -> class: what load_model may rebuild (never an import path)
_MODELS = {}    # short name -> class: what the command line fits


def register(name=None):
    """Class decorator: make ``cls`` rebuildable by ``load_model``; ``name`` also lists it as a
    model the command line can fit (``minigen fit NAME``)."""
    def decorate(cls):
        _CLASSES[cls.__name__] = cls
        if name is not None:
            if name in _MODELS and _MODELS[name] is not cls:
                raise ValueError(f"register: the model name {name!r} is taken by "
                                 f"{_MODELS[name].__name__}")
            _MODELS[name] = cls
            cls.registry_name = name
        return cls
    return decorate


def registry():
    """Class name -> class, for every class ``load_model`` may rebuild."""
    return dict(_CLASSES)


def models():
    """Short name -> class, for every model the command line can fit."""
    return dict(_MODELS)


# --- constructor parameters -------------------------------------------------------------------
class Configurable:
    """``get_params`` / ``set_params`` / ``repr`` from the constructor's signature."""

    @classmethod
    def _param_names(cls):
        sig = inspect.signature(cls.__init__)
        return [p.name for p in sig.parameters.values()
                if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]

    def get_params(self, deep=True):
        """Constructor argument -> value; with ``deep``, also ``name__sub`` for nested ones."""
        params = {}
        for name in self._param_names():
            try:
                value = getattr(self, name)
            except AttributeError:
                raise AttributeError(f"{type(self).__name__}.get_params: the constructor "
                                     f"argument {name!r} is not stored as self.{name}") from None
            params[name] = value
            if deep and isinstance(value, Configurable):
                params.update((f"{name}__{k}", v) for k, v in value.get_params().items())
        return params

    def set_params(self, **params):
        """Set constructor arguments (``name__sub`` reaches a nested object) and rebuild: the
        constructor runs again, so every derived attribute agrees with the new values and a
        fitted state is discarded (fit again afterwards, as GridSearchCV does)."""
        if not params:
            return self
        own = self.get_params(deep=False)
        nested = {}
        for key, value in params.items():
            name, _, sub = key.partition("__")
            if name not in own:
                raise ValueError(f"{type(self).__name__}.set_params: unknown parameter {name!r}; "
                                 f"valid ones are {sorted(own)}")
            if sub:
                nested.setdefault(name, {})[sub] = value
            else:
                own[name] = value
        for name, sub_params in nested.items():
            if not isinstance(own[name], Configurable):
                raise ValueError(f"{type(self).__name__}.set_params: {name!r} has no parameters "
                                 f"to set ({', '.join(sub_params)})")
            own[name].set_params(**sub_params)
        fresh = type(self)(**own)
        self.__dict__.clear()
        self.__dict__.update(fresh.__dict__)
        return self

    def _non_default_params(self):
        sig = inspect.signature(type(self).__init__)
        shown = []
        for name, value in self.get_params(deep=False).items():
            default = sig.parameters[name].default
            same = default is not inspect.Parameter.empty and (
                value is default or (not isinstance(value, np.ndarray)
                                     and not isinstance(default, np.ndarray)
                                     and type(value) is type(default) and value == default))
            if not same:
                shown.append(f"{name}={value!r}")
        return ", ".join(shown)

    def __repr__(self):
        return f"{type(self).__name__}({self._non_default_params()})"

    def __sklearn_tags__(self):
        """scikit-learn >= 1.6 asks every estimator for its tags (clone, Pipeline, GridSearchCV):
        an unsupervised estimator's defaults. Imported only when scikit-learn itself asks."""
        from sklearn.utils import Tags, TargetTags
        return Tags(estimator_type=None, target_tags=TargetTags(required=False))

    # --- fitted state, for save_model ------------------------------------------------------
    _unsaved = ()   # fitted attributes that save_model leaves out (e.g. a training history)

    def _fitted_state(self):
        """Fitted attribute (name ends in ``_``, not listed in ``_unsaved``) -> value.
        ``save_model`` stores arrays, numbers, strings, None, tuples/lists/dicts of them,
        NumPy generators, an ``optim.EMA`` and registered minigen objects, and names the
        attribute in a clear error for anything else; a class holding other fitted objects
        overrides this and ``_set_fitted_state``."""
        return {name: value for name, value in vars(self).items()
                if name.endswith("_") and not name.startswith("_") and name not in self._unsaved}

    def _set_fitted_state(self, state):
        """Set the fitted attributes in ``state``, after checking every name: a public
        identifier ending in ``_``, not in ``_unsaved`` and not defined by the class itself (so
        a file can never replace a method, a property or a class constant)."""
        cls = type(self)
        for name in state:
            if not (isinstance(name, str) and name.isidentifier() and name.endswith("_")
                    and not name.startswith("_") and name not in self._unsaved
                    and not hasattr(cls, name)):
                raise ValueError(f"{cls.__name__}: {excerpt(name)} is not a fitted attribute "
                                 "name (a public name ending in '_' that the class does not "
                                 "define)")
        for name, value in state.items():
            setattr(self, name, value)


class Distribution(Configurable):
    """The protocol base: ``score_samples`` (alias ``log_prob``), ``score``, the no-density
    error, parameters and fitted state. Subclasses implement ``fit``, ``sample`` and, where a
    density or bound exists, ``score_samples``."""

    has_density = True
    density_hint = "draw samples with sample(n) and compare them with minigen.metrics"

    @classmethod
    def for_data(cls, X, **params):
        """The model for data X with the given constructor parameters, as the command line
        builds it (``minigen fit NAME --data ...``); a model whose constructor needs sizes or
        components derives them from X here."""
        return cls(**params)

    def score_samples(self, X, **kwargs):
        """Per-sample log density (or the model's stated bound) of the rows of X."""
        if not self.has_density:
            raise NoDensityError(f"{type(self).__name__} defines no density, so it has no "
                                 f"log_prob / score_samples / score; {self.density_hint}")
        raise TypeError(f"{type(self).__name__} must implement score_samples")

    def log_prob(self, X, **kwargs):
        """``score_samples`` under PyTorch's name: per-sample log p(x) (or the stated bound)."""
        return self.score_samples(X, **kwargs)

    def score(self, X, y=None, **kwargs):
        """Mean of ``score_samples(X)`` (``y`` is ignored: scikit-learn's signature)."""
        return float(np.mean(self.score_samples(X, **kwargs)))
