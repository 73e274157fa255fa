"""The deep-model base: an ``nn.Module`` that follows the distribution protocol.

A deep model defines ``loss(batch) -> scalar Tensor`` (one optimiser, one loss), or
``train_step(batch, step, optimizers) -> {name: float}`` when a step is more than one loss (a
GAN's critic and generator updates), plus ``sample`` and, where a density or bound exists,
``score_samples``. ``fit`` checks the data, runs the one training loop (``minigen.train``) and
returns the model; the budget is ``steps=`` or ``epochs=``, exactly one.
"""
import contextlib

import numpy as np

from ..autograd import no_grad
from ..backend import check_rng
from ..distribution import Distribution, check_array
from ..nn import Module
from ..optim import Adam
from ..train import TrainingInterrupted, train


class DeepModel(Module, Distribution):
    """``Module`` + the protocol. Subclasses store every constructor argument under its own
    name (so ``get_params`` and ``save_model`` work) and call ``super().__init__()`` first."""

    default_steps = 2000    # the command line's budget when it is given neither steps nor epochs

    def fit(self, X, y=None, *, steps=None, epochs=None, batch_size=128, lr=1e-3,
            validation=None, rng=None, verbose=False, **train_options):
        """Train on X (and targets y where the model uses them) with ``minigen.train.train``.

        steps / epochs: the budget, exactly one (steps count optimiser steps; an epoch is
        len(X) // batch_size of them). validation: held-out X (or (X, y)) whose loss is
        reported every ``val_every`` steps. Other keywords (schedule, clip_grad, ema_decay,
        patience, checkpoint, resume, log_every, ...) go to ``train``. Keeps ``history_``.
        """
        where = f"{type(self).__name__}.fit"
        check_rng(rng, "rng", where)
        data = self._check_fit_data(X, y, where)
        if (steps is None) == (epochs is None):
            raise ValueError(f"{where}: give exactly one of steps= or epochs= "
                             f"(got steps={steps!r}, epochs={epochs!r})")
        if validation is not None:
            val = validation if isinstance(validation, tuple) else (validation, None)
            validation = self._check_fit_data(*val, f"{where} (validation)")
        n = len(data[0] if isinstance(data, tuple) else data)
        try:
            self.history_ = train(self, data, steps=steps, epochs=epochs,
                                  batch_size=min(batch_size, n), lr=lr, validation=validation,
                                  rng=rng, verbose=verbose, **train_options)
        except TrainingInterrupted as interrupt:   # keep what was learned usable, re-raise
            self.history_ = interrupt.result
            if interrupt.result.steps:
                self._after_fit(data)
            raise
        self._after_fit(data)
        return self

    _unsaved = ("history_",)

    # --- hooks a subclass may override --------------------------------------------------------
    def _check_fit_data(self, X, y, where):
        """The data handed to ``train``: by default X as a finite 2-D array in the parameters'
        dtype, with the feature count fixed by the first fit."""
        X = check_array(X, where, n_features=getattr(self, "n_features_in_", None))
        if y is not None:
            raise ValueError(f"{where}: this model is unsupervised; got targets y")
        self.n_features_in_ = X.shape[1]
        return X.astype(self.dtype, copy=False)

    def _after_fit(self, data):
        """Work after training, with ``history_`` set (e.g. fitting a latent density on the
        codes, keeping the EMA); also runs when training is interrupted, so the model stays
        usable."""

    def configure_optimizers(self, lr):
        """The optimiser(s) ``train`` uses: one, or a dict name -> Optimizer for a
        ``train_step`` model."""
        return Adam(self.parameters(), lr=lr)

    # --- helpers ----------------------------------------------------------------------------
    @property
    def dtype(self):
        """The parameters' dtype (float32 by default): the dtype of batches and samples."""
        for p in self.parameters():
            return p.dtype
        return np.dtype(np.float64)

    @contextlib.contextmanager
    def inference(self):
        """Evaluation mode and no graph for the duration (sampling, scoring); the training mode
        is restored afterwards."""
        was_training = self.training
        self.eval()
        try:
            with no_grad():
                yield
        finally:
            self.train(was_training)
