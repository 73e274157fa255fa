"""Denoising diffusion probabilistic models (Ho et al. 2020) with DDIM sampling (Song et al.
2021): a denoiser network and a ``NoiseSchedule`` (``schedule.py``, which states the
equations and the time convention: t in {0, ..., T-1} is Ho et al.'s step t + 1).

Training (Algorithm 1) regresses the denoiser on eps, x0 or v at x_t ~ q(x_t | x0); sampling
runs Algorithm 2 (all T steps of p(x_{t-1} | x_t)) or DDIM over fewer steps; ``log_prob`` is
the variational bound (eq. 5).
"""
import contextlib

import numpy as np

from ... import _checks as C
from ... import functional as F
from ...autograd import Tensor, no_grad
from ...backend import as_rng, per_example
from ...distribution import NotFittedError, check_n_samples, register
from ...kernels.diffusion import col
from ...nn import Module
from ..base import DeepModel
from .denoisers import TimeMLP, TinyUNet
from .schedule import VARIANCES, NoiseSchedule

PREDICTIONS = ("eps", "x0", "v")


def _check_scale(x0, dtype, where):
    """``x0`` (the diffused variable, float64) if the squared distances of the bound cannot
    overflow ``dtype``, the dtype it is computed in: each is a sum of d squares, so every |x|
    must stay below sqrt(max / (4 d)) (4: a difference of two such values doubles it).
    Otherwise the ValueError that asks to rescale X, as the classical estimators do."""
    d = max(x0[0].size, 1)
    limit = np.sqrt(np.finfo(dtype).max / (4 * d))
    top = float(np.max(np.abs(x0))) if x0.size else 0.0
    if not top <= limit:
        raise ValueError(f"{where}: X has entries as large as {top:.3g} in magnitude in the "
                         f"model's {np.dtype(dtype)} variable; squared distances overflow (the limit "
                         f"for {d} features is {limit:.3g}): rescale X, e.g. X / np.abs(X).max()")
    return x0


def _gauss_kl(mean1, var1, mean2, var2):
    """KL(N(mean1, var1 I) || N(mean2, var2 I)) per sample, variances of shape (n,)."""
    d = mean1[0].size
    sq = ((mean1 - mean2) ** 2).reshape(len(mean1), -1).sum(1)
    return 0.5 * (d * (np.log(var2 / var1) + var1 / var2 - 1) + sq / var2)


@register("ddpm")
class DDPM(DeepModel):
    """A diffusion model: a denoiser(x_t, t) -> prediction, and a NoiseSchedule.

    prediction: what the denoiser outputs, 'eps' (the noise, Ho et al. eq. 14), 'x0' (the
    data) or 'v' = sqrt(abar_t) eps - sqrt(1 - abar_t) x0 (Salimans & Ho 2022). Every
    sampler converts it to eps_hat. ``DDPM(None, schedule, shape=...)`` carries no network:
    pass ``eps_fn`` to ``sample`` / ``log_prob`` instead. ``fit`` trains with an EMA of the
    weights (``ema_``), which ``sample`` and ``log_prob`` then use. ``rng`` is the generator
    of the training noise (t and eps in ``loss``).

    shape: the denoiser's sample shape, e.g. (1, 8, 8) for a TinyUNet. The data may come as
    arrays of that shape or as flat rows of as many entries (n, 64); the model diffuses
    x.reshape(n, *shape), and ``sample`` / ``log_prob`` use the data's own layout
    (``shape_``, the fitted sample shape). Default: the data's shape.
    data_range: (lo, hi), the interval the data lives in (pixels in [0, 1], say). The model
    diffuses y = 2 (x - lo) / (hi - lo) - 1, in [-1, 1] where the schedule's unit-variance
    noise is at the data's scale (Ho et al. 2020, sec. 3.3); samples are mapped back, x0_hat
    is clipped to [-1, 1] by default (inside the range), and ``log_prob`` adds the Jacobian
    d log(2 / (hi - lo)). None: the data is diffused as given.
    standardize: diffuse z = (x - mean_) / scale_, each feature at mean 0 and standard deviation
    1 over the training data (a feature with none keeps scale 1), so that the data has the
    unit variance the schedule's signal-to-noise ratios abar_t / (1 - abar_t) assume (the
    noise at t reaches the data's spread where abar_t = 1/2 for every feature); samples are
    mapped back and ``log_prob`` adds the Jacobian -sum_j log scale_j. Not with data_range.
    sample_steps: ``sample``'s default ``steps`` (None: all T, Algorithm 2; fewer: DDIM),
    so a caller that passes none (the command line) gets the cheaper sampler.
    """

    def __init__(self, denoiser, schedule=None, prediction="eps", shape=None, data_range=None,
                 standardize=False, sample_steps=None, rng=None):
        super().__init__()
        C.choice(prediction, "prediction", "DDPM", PREDICTIONS)
        if data_range is not None:
            try:
                lo, hi = (float(v) for v in data_range)
            except (TypeError, ValueError):
                raise TypeError(f"DDPM: data_range must be a pair (lo, hi), got "
                                f"{data_range!r}") from None
            if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
                raise ValueError(f"DDPM: data_range must be finite with lo < hi, got "
                                 f"{data_range!r}")
            data_range = (lo, hi)
        if not isinstance(standardize, (bool, np.bool_)):
            raise TypeError(f"DDPM: standardize must be True or False, got {standardize!r}")
        if standardize and data_range is not None:
            raise ValueError("DDPM: give data_range or standardize=True, not both (each sets "
                             "the scale of the diffused variable)")
        if denoiser is not None and not isinstance(denoiser, Module):
            raise TypeError(f"DDPM: denoiser must be a minigen Module or None, "
                            f"got {type(denoiser).__name__}")
        schedule = NoiseSchedule() if schedule is None else schedule
        if not isinstance(schedule, NoiseSchedule):
            raise TypeError(f"DDPM: schedule must be a NoiseSchedule, "
                            f"got {type(schedule).__name__}")
        self.denoiser, self.schedule, self.prediction = denoiser, schedule, prediction
        self.shape = None if shape is None else tuple(int(s) for s in shape)
        self.shape_ = self.shape
        self.data_range, self.standardize = data_range, bool(standardize)
        if sample_steps is not None:
            schedule.ddim_timesteps(sample_steps)          # checks 1 <= sample_steps <= T
        self.sample_steps = sample_steps
        self.rng = rng                  # as given (a constructor argument)
        # the working generator (training batches and noise), saved
        self.rng_ = as_rng(rng, where=type(self).__name__)
        self.ema_ = self.losses_ = self.mean_ = self.scale_ = None

    def forward(self, x, t):
        """The denoiser's raw prediction for a Tensor x_t and int array t."""
        return self.denoiser(x, t)

    # --- training (Algorithm 1) ---------------------------------------------------------
    def loss(self, batch):
        """Algorithm 1: t ~ U{0..T-1}, eps ~ N(0, I), x_t = sqrt(abar_t) x0 + sqrt(1-abar_t) eps,
        loss = mean ||target - denoiser(x_t, t)||^2 with target eps, x0 or v."""
        if self.denoiser is None:
            raise TypeError("DDPM.loss: this DDPM has no denoiser (DDPM(None, ...))")
        x0 = np.asarray(batch.data if isinstance(batch, Tensor) else batch, dtype=self.dtype)
        n = len(x0)
        t = per_example(self.rng_.integers, (n,), 0, self.schedule.T)
        eps = per_example(self.rng_.standard_normal, x0.shape).astype(x0.dtype)
        xt = self.schedule.q_sample(x0, t, eps)
        if self.prediction == "eps":
            target = eps
        elif self.prediction == "x0":
            target = x0
        else:
            s = self.schedule
            target = (col(s.sqrt_alpha_bars[t], eps) * eps
                      - col(s.sqrt_one_minus_alpha_bars[t], x0) * x0).astype(x0.dtype)
        return F.mse_loss(self.denoiser(Tensor(xt), t), Tensor(target))

    @classmethod
    def for_data(cls, X, image_shape=None, channels=16, rng=None, **params):
        """The DDPM the command line fits to X: for rows (n, d), DDPM(TimeMLP(d),
        NoiseSchedule()) diffusing the standardized features (``standardize``, unless a
        data_range is given); with ``image_shape`` (C, H, W), a TinyUNet(C, channels) on the rows
        reshaped to it, with the cosine schedule, v-prediction and the data's range mapped to
        [-1, 1] (``data_range`` = (X.min(), X.max()) unless given) and 100-step DDIM as
        ``sample``'s default (``sample_steps``): the digits recipe of benchmarks/README.md
        ("DDPM on the digits"), where 16 channels learn about as much per second of CPU as 32
        at half the cost per step. ``params`` go to DDPM."""
        where = "DDPM.for_data"
        X = np.asarray(X, dtype=np.float64)
        if X.ndim < 2 or len(X) == 0:
            raise ValueError(f"{where}: X must have shape (n, ...) with n >= 1, got {X.shape}")
        rng = as_rng(rng, where=where)
        if image_shape is None:
            params.setdefault("standardize", params.get("data_range") is None)
            return cls(TimeMLP(int(np.prod(X.shape[1:])), rng=rng), rng=rng, **params)
        image_shape = tuple(int(s) for s in image_shape)
        if len(image_shape) != 3 or int(np.prod(image_shape)) != int(np.prod(X.shape[1:])):
            raise ValueError(f"{where}: image_shape must be (C, H, W) with as many entries as "
                             f"a sample of X {X.shape[1:]}, got {image_shape}")
        params.setdefault("schedule", NoiseSchedule(kind="cosine"))
        params.setdefault("prediction", "v")
        params.setdefault("data_range", (float(X.min()), float(X.max())))
        params.setdefault("sample_steps", min(100, params["schedule"].T))
        return cls(TinyUNet(image_shape[0], channels=channels, rng=rng), shape=image_shape,
                   rng=rng, **params)

    def fit(self, X, y=None, *, steps=None, epochs=None, batch_size=256, lr=1e-3,
            ema_decay=0.999, rng=None, verbose=False, **train_options):
        """Train on X (n, ...) with ``minigen.train.train`` (``steps=`` or ``epochs=``, exactly
        one; other keywords go to ``train``) and an EMA of the weights (``ema_decay``); keeps
        ``losses_``, ``ema_`` and ``history_``. ``rng`` reseeds the model's generator, which
        draws the batches and the training noise."""
        if self.denoiser is None:
            raise TypeError("DDPM.fit: this DDPM has no denoiser (DDPM(None, ...))")
        if rng is not None:
            self.rng_ = as_rng(rng, where="DDPM.fit")
        self.mean_ = self.scale_ = None     # the training data's, set by _check_fit_data
        return super().fit(X, y, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr,
                           ema_decay=ema_decay, rng=self.rng_, verbose=verbose, **train_options)

    def _check_fit_data(self, X, y, where):
        if self.shape is not None:
            self.shape_ = None
            X = self._check_X(X, where)
            if X.shape[1:] not in (self.shape, (int(np.prod(self.shape)),)):
                raise ValueError(f"{where}: X has sample shape {X.shape[1:]}; the model's "
                                 f"shape is {self.shape} (or flat rows of "
                                 f"{int(np.prod(self.shape))})")
        else:
            X = self._check_X(X, where)
        if y is not None:
            raise ValueError(f"{where}: DDPM is unsupervised; got targets y")
        self.shape_ = X.shape[1:]
        if self.standardize and self.mean_ is None:     # the training data, not validation
            sd = X.std(axis=0)
            self.mean_, self.scale_ = X.mean(axis=0), np.where(sd > 0, sd, 1.0)
        return self._to_model(X)

    def _to_model(self, X, dtype=None):
        """Data (n, *shape_) -> the diffused variable (n, *shape): in [-1, 1] with data_range,
        standardized with ``standardize``; in ``dtype`` (default: the model's)."""
        if self.data_range is not None:
            lo, hi = self.data_range
            X = 2 * (X - lo) / (hi - lo) - 1
        elif self.mean_ is not None:
            X = (X - self.mean_) / self.scale_
        return X.reshape((len(X),) + self._model_shape()).astype(dtype or self.dtype)

    def _from_model(self, x):
        """The diffused variable (..., n, *shape) -> data (..., n, *shape_)."""
        if self.data_range is not None:
            lo, hi = self.data_range
            x = (lo + (x + 1) * ((hi - lo) / 2)).astype(x.dtype, copy=False)
        lead = x.shape[:x.ndim - len(self._model_shape())]
        x = x.reshape(lead + tuple(self.shape_))
        if self.mean_ is not None:
            x = (self.mean_ + x * self.scale_).astype(x.dtype, copy=False)
        return x

    def _model_shape(self):
        return self.shape if self.shape is not None else tuple(self.shape_)

    def _after_fit(self, data):
        self.losses_, self.ema_ = self.history_.losses, self.history_.ema

    def _check_X(self, X, where):
        """X as a finite float array of shape (n, *shape_) with n >= 1."""
        try:
            X = np.asarray(X, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"{where}: X must be a numeric array, got "
                            f"{type(X).__name__}") from None
        if X.ndim < 2 or len(X) == 0:
            raise ValueError(f"{where}: X must have shape (n, ...) with n >= 1 samples, got "
                             f"shape {X.shape}")
        if self.shape_ is not None and X.shape[1:] != self.shape_:
            raise ValueError(f"{where}: X has sample shape {X.shape[1:]}, the model expects "
                             f"{self.shape_}")
        if not np.all(np.isfinite(X)):
            raise ValueError(f"{where}: X contains NaN or infinity")
        return X

    def _weights(self, eps_fn):
        """The EMA weights swapped in (if trained with one) for a sampler or the bound."""
        if self.ema_ is None or eps_fn is not None:
            return contextlib.nullcontext()
        return self.ema_.applied(self)

    def predict_eps(self, xt, t):
        """eps_hat(x_t, t) from the denoiser, converted from x0 or v predictions:
        eps = (x_t - sqrt(abar) x0_hat)/sqrt(1 - abar), eps = sqrt(abar) v + sqrt(1 - abar) x_t."""
        if self.denoiser is None:
            raise TypeError("DDPM.predict_eps: this DDPM has no denoiser; pass eps_fn")
        with no_grad():
            out = self.denoiser(Tensor(xt), t).data
        return self._as_eps(xt, t, out)

    def _as_eps(self, xt, t, out):
        """The denoiser's output ``out`` converted to eps_hat (see ``predict_eps``)."""
        if self.prediction == "eps":
            return out
        s = self.schedule
        sqrt_ab = col(s.sqrt_alpha_bars[t], xt)
        sqrt_1mab = col(s.sqrt_one_minus_alpha_bars[t], xt)
        eps = (xt - sqrt_ab * out) / sqrt_1mab if self.prediction == "x0" \
            else sqrt_ab * out + sqrt_1mab * xt
        return eps.astype(xt.dtype, copy=False)

    def _eps_predictor(self, n):
        """``predict_eps`` for a loop of denoiser calls on n samples (a sampler, the bound):
        a denoiser with a ``runner(n)`` (a ReLU TimeMLP: no graph, buffers reused across
        calls) runs through it, any other through ``predict_eps``."""
        make = getattr(self.denoiser, "runner", None)
        runner = make(n) if make is not None and self.dtype == np.float32 else None
        if runner is None:
            return self.predict_eps
        return lambda xt, t: self._as_eps(xt, t, runner(xt, t))

    # --- sampling (Algorithm 2, DDIM) ----------------------------------------------------
    def _check_sampling(self, where, eps_fn, shape):
        if eps_fn is None and self.denoiser is None:
            raise TypeError(f"{where}: DDPM(None, ...) needs eps_fn")
        if eps_fn is not None and not callable(eps_fn):
            raise TypeError(f"{where}: eps_fn must be callable (x_t, t) -> eps")
        if eps_fn is None and self.losses_ is None:
            raise NotFittedError(f"{where}: this DDPM is not fitted yet; call fit(X) first "
                                 "(or pass eps_fn)")
        if shape is not None:
            return tuple(shape)
        if self.shape_ is None:
            raise ValueError(f"{where}: the sample shape is unknown; fit first or pass shape=")
        return self._model_shape()

    def sample(self, n, rng=None, *, steps=None, eta=None, eps_fn=None, return_trajectory=False,
               variance="fixed_small", clip=None, shape=None):
        """n samples of shape (n, *shape_): x_T ~ N(0, I), then T steps of Algorithm 2, or
        DDIM over ``steps`` evenly spaced timesteps when steps < T or eta is given (eta
        default 0). With return_trajectory, also the (len(timesteps)+1, n, ...) path x_T..x_0.
        ``eps_fn(x_t, t)`` replaces the denoiser (both in the diffused variable: ``shape``,
        scaled by ``data_range``); ``clip`` bounds x0_hat to [-clip, clip] there (default: 1
        with a data_range, else none; ``clip=np.inf`` turns it off); ``variance``
        ('fixed_small': sigma^2 = beta~, 'fixed_large': beta) is Algorithm 2's (DDIM's sigma
        follows from eta). Samples come back in the data's layout and range."""
        where = "DDPM.sample"
        n = check_n_samples(n, where)
        shape = self._check_sampling(where, eps_fn, shape)
        C.choice(variance, "variance", where, VARIANCES)
        eta = C.real(eta, "eta", where, low=0, optional=True)
        s = self.schedule
        steps = self.sample_steps if steps is None else steps
        timesteps = s.ddim_timesteps(s.T if steps is None else steps)
        ddim = eta is not None or len(timesteps) < s.T
        eta = 0.0 if eta is None else float(eta)
        if clip is None and self.data_range is not None:
            clip = 1.0
        weights = self._weights(eps_fn)
        rng = as_rng(rng, where=where)
        eps_fn = eps_fn or self._eps_predictor(n)
        x = rng.standard_normal((n,) + shape).astype(self.dtype)
        if n == 0:
            path = [x] * (len(timesteps) + 1) if return_trajectory else None
            return self._sampled(x, path, shape)
        path = [x] if return_trajectory else None
        with self.inference(), weights:
            for i in range(len(timesteps) - 1, -1, -1):
                t = np.full(n, timesteps[i])
                eps = np.asarray(eps_fn(x, t), dtype=x.dtype)
                noisy = i > 0 and (not ddim or eta > 0)
                z = rng.standard_normal(x.shape).astype(x.dtype) if noisy else None
                if ddim:
                    x = s.ddim_step(x, t, timesteps[i - 1] if i > 0 else -1, eps, z, eta, clip)
                else:
                    x = s.p_step(x, t, eps, z, variance, clip)
                if return_trajectory:
                    path.append(x)
        return self._sampled(x, path, shape)

    def _sampled(self, x, path, shape):
        """The samples (and path) in the data's layout and range; as drawn when the caller
        gave its own ``shape``."""
        convert = self._from_model if self.shape_ is not None and shape == self._model_shape() \
            else (lambda a: a)
        return convert(x) if path is None else (convert(x), convert(np.stack(path)))

    # --- likelihood bound ---------------------------------------------------------------
    def score_samples(self, X, *, eps_fn=None, variance="fixed_large", rng=None):
        """Per-sample variational lower bound on log p(x) in nats (Ho et al. eq. 5), also
        ``log_prob``:

            log p(x0) >= -(L_T + sum_{t=1}^{T-1} L_{t-1} + L_0),
            L_T = KL(q(x_{T-1} | x0) || N(0, I)),
            L_{t-1} = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)),  x_t ~ q(x_t | x0),
            L_0 = -log N(x0; x0_hat(x_0idx), sigma_0^2 I),  x_0idx ~ q(x_0idx | x0),

        each L estimated with one draw of x_t (unbiased, not exact). L_0 is a Gaussian decoder
        with sigma_0^2 = beta_0 ('fixed_large') or beta~_1 ('fixed_small', as beta~_0 = 0;
        Nichol & Dhariwal's clipped log-variance). Costs T denoiser calls on X."""
        where = "DDPM.log_prob"
        C.choice(variance, "variance", where, VARIANCES)
        X = self._check_X(X, where)
        self._check_sampling(where, eps_fn, X.shape[1:])
        weights = self._weights(eps_fn)
        s, rng, n = self.schedule, as_rng(rng, where=where), len(X)
        dtype = self.dtype if eps_fn is None else np.float64
        x0 = self._to_model(X, np.float64) if self.shape_ is not None else X
        x0 = _check_scale(x0, dtype, where).astype(dtype)
        eps_fn = eps_fn or self._eps_predictor(n)
        ab_T = s.alpha_bars[-1]
        bound = _gauss_kl(s.sqrt_alpha_bars[-1] * x0, np.full(n, 1 - ab_T), 0 * x0, np.ones(n))
        with self.inference(), weights:
            for t in range(s.T):
                tt = np.full(n, t)
                xt = s.q_sample(x0, tt, rng.standard_normal(x0.shape).astype(x0.dtype))
                eps = np.asarray(eps_fn(xt, tt), dtype=x0.dtype)
                mean_p = s.p_mean(xt, tt, eps)
                if t > 0:
                    mean_q, var_q = s.q_posterior(x0, xt, tt)
                    var_p = s.sigma(tt, variance) ** 2
                    bound += _gauss_kl(mean_q, var_q, mean_p, var_p)
                else:
                    var0 = s.betas[0] if variance == "fixed_large" or s.T == 1 \
                        else s.posterior_variance[1]
                    sq = ((x0 - mean_p) ** 2).reshape(n, -1).sum(1)
                    d = x0[0].size
                    bound += 0.5 * (sq / var0 + d * np.log(2 * np.pi * var0))
        if self.data_range is not None:     # change of variables x -> y = 2 (x - lo)/(hi - lo) - 1
            lo, hi = self.data_range
            bound -= x0[0].size * np.log(2 / (hi - lo))
        elif self.mean_ is not None:        # z = (x - mean_) / scale_
            bound += np.log(self.scale_).sum()
        return -bound
