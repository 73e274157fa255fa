"""The noise schedule of denoising diffusion (Ho et al. 2020) and its DDIM steps (Song et al.
2021).

Time convention (every method, and every ``eps_fn(x_t, t)``): an integer t in {0, ..., T-1}
indexes the schedule's arrays and stands for Ho et al.'s 1-based step t + 1. So ``betas[t]`` is
the variance of the t-th transition (t = 0 is the first noising step), ``alpha_bars[t]`` =
prod_{s<=t} (1 - beta_s), and "x_t" is the latent after t + 1 transitions; the data is x0 and
ᾱ_{-1} := 1 (``alpha_bars_prev[0] = 1``). In this convention (Ho et al. eqs. 2, 4, 6, 7, 11):

    q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)                 (q_step)
    q(x_t | x0)      = N(sqrt(abar_t) x0, (1 - abar_t) I)                     (q_sample)
    q(x_{t-1} | x_t, x0) = N(c0_t x0 + c1_t x_t, beta~_t I),                  (q_posterior)
        c0_t = beta_t sqrt(abar_{t-1}) / (1 - abar_t),
        c1_t = sqrt(alpha_t) (1 - abar_{t-1}) / (1 - abar_t),
        beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t)
    p(x_{t-1} | x_t) = N(c0_t x0_hat + c1_t x_t, sigma_t^2 I),                (p_step)
        x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t),
        sigma_t^2 = beta~_t ('fixed_small') or beta_t ('fixed_large'); no noise at t = 0.

and one DDIM step (Song et al. 2021, eq. 12), from t to t_prev < t (abar_{-1} := 1):

    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z.   (ddim_step)

Without clipping, p_step is Ho et al.'s eq. 11,

    x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_hat) + sigma_t z.

The fused per-element updates run in ``minigen.kernels.diffusion``; ``reference_p_step`` and
``reference_ddim_step`` below are these two equations in NumPy, the reference the fused
kernels must match.
"""
import numpy as np

from ... import _checks as C
from ...distribution import Configurable, register
from ...kernels import diffusion as kd
from ...kernels.diffusion import col

VARIANCES = ("fixed_small", "fixed_large")
KINDS = ("linear", "cosine", "sigmoid", "custom")


@register()
class NoiseSchedule(Configurable):
    """The forward process: T variances beta_t and everything derived from them.

    kind: 'linear' (beta_t evenly spaced from beta_start to beta_end; Ho et al. 2020),
    'cosine' (abar(t) = f(t)/f(0), f(t) = cos^2(pi/2 (t/T + s)/(1 + s)), s = 0.008,
    beta_t = 1 - abar(t+1)/abar(t) clipped at 0.999; Nichol & Dhariwal 2021, eq. 17),
    'sigmoid' (beta_t = beta_start + (beta_end - beta_start) sigmoid(-6 + 12 t/(T-1))) or
    'custom' with the given ``betas`` (values in (0, 1); ``NoiseSchedule.from_betas(betas)``).
    """

    def __init__(self, T=1000, kind="linear", beta_start=1e-4, beta_end=0.02, betas=None):
        T = C.positive_int(T, "T", "NoiseSchedule")
        kind = C.choice(kind, "kind", "NoiseSchedule", KINDS)
        beta_start = C.real(beta_start, "beta_start", "NoiseSchedule", low=0, high=1,
                            low_open=True, high_open=True)
        beta_end = C.real(beta_end, "beta_end", "NoiseSchedule", low=0, high=1, low_open=True,
                          high_open=True)
        if beta_start > beta_end:
            raise ValueError(f"NoiseSchedule: need 0 < beta_start <= beta_end < 1, got "
                             f"{beta_start}, {beta_end}")
        if (kind == "custom") != (betas is not None):
            raise ValueError("NoiseSchedule: betas= goes with kind='custom' "
                             "(NoiseSchedule.from_betas(betas) builds one)")
        if kind == "linear":
            betas = np.linspace(beta_start, beta_end, T)
        elif kind == "cosine":
            s = 0.008
            f = np.cos(0.5 * np.pi * (np.arange(T + 1) / T + s) / (1 + s)) ** 2
            betas = np.minimum(1 - f[1:] / f[:-1], 0.999)
        elif kind == "sigmoid":
            u = np.linspace(-6.0, 6.0, T) if T > 1 else np.zeros(1)
            betas = beta_start + (beta_end - beta_start) / (1 + np.exp(-u))
        else:
            betas = np.asarray(betas, dtype=np.float64)
            if betas.ndim != 1 or betas.size == 0 or not np.all((betas > 0) & (betas < 1)):
                raise ValueError("NoiseSchedule.from_betas: betas must be a non-empty 1-D "
                                 "array of values in (0, 1)")
            if len(betas) != T:
                raise ValueError(f"NoiseSchedule: T={T} but {len(betas)} betas were given")
        self.kind, self.beta_start, self.beta_end = kind, beta_start, beta_end
        self._set(betas)

    @classmethod
    def from_betas(cls, betas):
        """A schedule with the given variances (a 1-D array of values in (0, 1))."""
        betas = np.asarray(betas, dtype=np.float64)
        return cls(T=max(len(betas), 1) if betas.ndim == 1 else 1, kind="custom", betas=betas)

    def get_params(self, deep=True):
        """The constructor's arguments; ``betas`` only for a 'custom' schedule (the other
        kinds derive them from T, beta_start and beta_end)."""
        params = super().get_params(deep)
        params["betas"] = self.betas if self.kind == "custom" else None
        return params

    def _set(self, betas):
        self.T = len(betas)
        self.betas = betas
        self.alphas = 1.0 - betas
        self.alpha_bars = np.cumprod(self.alphas)
        self.alpha_bars_prev = np.append(1.0, self.alpha_bars[:-1])
        ab, abp = self.alpha_bars, self.alpha_bars_prev
        self.sqrt_alpha_bars = np.sqrt(ab)
        self.sqrt_one_minus_alpha_bars = np.sqrt(1 - ab)
        self.sqrt_recip_alpha_bars = np.sqrt(1 / ab)
        self.sqrt_recipm1_alpha_bars = np.sqrt(1 / ab - 1)
        self.posterior_variance = betas * (1 - abp) / (1 - ab)
        self.posterior_coef_x0 = betas * np.sqrt(abp) / (1 - ab)
        self.posterior_coef_xt = np.sqrt(self.alphas) * (1 - abp) / (1 - ab)

    def __repr__(self):
        return f"NoiseSchedule(T={self.T}, kind={self.kind!r})"

    # --- indexing ----------------------------------------------------------------------
    def _t(self, t, n, where):
        """t (an int or an int array of shape (n,)) as an int array of shape (n,)."""
        t = np.asarray(t)
        if t.dtype.kind not in "iu":
            raise TypeError(f"{where}: t must be integers, got dtype {t.dtype}")
        t = np.broadcast_to(t, (n,)) if t.ndim == 0 else t
        if t.shape != (n,):
            raise ValueError(f"{where}: t must be an int or have shape ({n},), got {t.shape}")
        if n and (t.min() < 0 or t.max() >= self.T):
            raise ValueError(f"{where}: t must lie in 0..{self.T - 1}, got {t.min()}..{t.max()}")
        return t

    def sigma(self, t, variance="fixed_small"):
        """The reverse-step standard deviation sigma_t (0 at t = 0, as in Algorithm 2)."""
        C.choice(variance, "variance", "NoiseSchedule.sigma", VARIANCES)
        var = self.posterior_variance if variance == "fixed_small" else self.betas
        return np.where(t > 0, np.sqrt(var[t]), 0.0)

    # --- forward process ---------------------------------------------------------------
    def q_sample(self, x0, t, noise):
        """x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) noise, a draw of q(x_t | x0) (eq. 4)."""
        t = self._t(t, len(x0), "NoiseSchedule.q_sample")
        return kd.q_sample(x0, noise, sqrt_abar=self.sqrt_alpha_bars[t],
                           sqrt_one_minus_abar=self.sqrt_one_minus_alpha_bars[t])

    def q_step(self, x_prev, t, noise):
        """x_t = sqrt(1 - beta_t) x_{t-1} + sqrt(beta_t) noise, one transition (eq. 2)."""
        t = self._t(t, len(x_prev), "NoiseSchedule.q_step")
        return kd.q_sample(x_prev, noise, sqrt_abar=np.sqrt(self.alphas[t]),
                           sqrt_one_minus_abar=np.sqrt(self.betas[t]))

    def q_posterior(self, x0, xt, t):
        """(mean, variance) of q(x_{t-1} | x_t, x0) (eqs. 6-7); variance has shape (n,)."""
        t = self._t(t, len(x0), "NoiseSchedule.q_posterior")
        if np.shape(x0) != np.shape(xt):
            raise ValueError(f"NoiseSchedule.q_posterior: x0 {np.shape(x0)} and xt "
                             f"{np.shape(xt)} must have the same shape")
        mean = col(self.posterior_coef_x0[t], x0) * x0 + col(self.posterior_coef_xt[t], xt) * xt
        return mean, self.posterior_variance[t]

    # --- reverse process ---------------------------------------------------------------
    def p_mean(self, xt, t, eps_hat, clip=None):
        """The mean of p(x_{t-1} | x_t): c0_t x0_hat + c1_t x_t (eq. 7 with x0 -> x0_hat)."""
        t = self._t(t, len(xt), "NoiseSchedule.p_mean")
        return self._ddpm_step(xt, t, eps_hat, None, np.zeros(len(xt)), clip)

    def p_step(self, xt, t, eps_hat, noise, variance="fixed_small", clip=None):
        """x_{t-1} = c0_t x0_hat + c1_t x_t + sigma_t noise (Algorithm 2 line 4, eq. 11), with
        x0_hat from ``eps_hat`` clipped to [-clip, clip] when ``clip`` is given. ``noise`` may
        be None where sigma_t = 0 (t = 0)."""
        t = self._t(t, len(xt), "NoiseSchedule.p_step")
        return self._ddpm_step(xt, t, eps_hat, noise, self.sigma(t, variance), clip)

    def _ddpm_step(self, xt, t, eps_hat, noise, sigma, clip):
        return kd.ddpm_step(xt, eps_hat, noise, sqrt_recip_abar=self.sqrt_recip_alpha_bars[t],
                            sqrt_recipm1_abar=self.sqrt_recipm1_alpha_bars[t],
                            coef_x0=self.posterior_coef_x0[t], coef_xt=self.posterior_coef_xt[t],
                            sigma=sigma, clip=clip)

    def ddim_timesteps(self, steps):
        """``steps`` increasing indices spread evenly over 0..T-1 (ending at T-1)."""
        steps = C.integer(steps, "steps", "NoiseSchedule.ddim_timesteps", low=1, high=self.T)
        return np.round(np.linspace(self.T - 1, 0, steps)[::-1]).astype(np.int64)

    def ddim_step(self, xt, t, t_prev, eps_hat, noise, eta=0.0, clip=None):
        """One DDIM step x_t -> x_{t_prev} (Song et al. 2021, eqs. 12, 16), t_prev < t or -1:

            x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z,
            sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev).

        eta = 0 is deterministic; eta = 1 over every step is DDPM with 'fixed_small'. With
        ``clip``, x0_hat is clipped and eps_hat re-derived from it, eps_hat = (x_t - sqrt(abar_t)
        x0_hat)/sqrt(1 - abar_t), so both terms describe the same x_t (as diffusers' DDIM)."""
        n = len(xt)
        t = self._t(t, n, "NoiseSchedule.ddim_step")
        t_prev = np.broadcast_to(np.asarray(t_prev), (n,))
        if np.any(t_prev >= t) or np.any(t_prev < -1):
            raise ValueError("NoiseSchedule.ddim_step: need -1 <= t_prev < t")
        ab = self.alpha_bars[t]
        ab_prev = np.where(t_prev >= 0, self.alpha_bars[np.maximum(t_prev, 0)], 1.0)
        sigma = eta * np.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
        dir_coef = np.sqrt(np.maximum(1 - ab_prev - sigma ** 2, 0.0))
        return kd.ddim_step(xt, eps_hat, noise, sqrt_abar=np.sqrt(ab),
                            sqrt_one_minus_abar=np.sqrt(1 - ab), sqrt_abar_prev=np.sqrt(ab_prev),
                            dir_coef=dir_coef, sigma=sigma, clip=clip)


def reference_p_step(schedule, xt, t, eps_hat, noise, variance="fixed_small"):
    """Ho et al.'s eq. 11 in NumPy, the reference for ``NoiseSchedule.p_step`` (no clipping):
    x_{t-1} = 1/sqrt(alpha_t) (x_t - beta_t / sqrt(1 - abar_t) eps_hat) + sigma_t z."""
    alpha, beta, abar = (col(a[t], xt) for a in (schedule.alphas, schedule.betas,
                                                 schedule.alpha_bars))
    mean = (xt - beta / np.sqrt(1 - abar) * eps_hat) / np.sqrt(alpha)
    return mean + col(schedule.sigma(t, variance), xt) * noise


def reference_ddim_step(schedule, xt, t, t_prev, eps_hat, noise, eta=0.0):
    """Song et al.'s eq. 12 in NumPy, the reference for ``NoiseSchedule.ddim_step`` (no
    clipping): x0_hat = (x_t - sqrt(1 - abar_t) eps_hat) / sqrt(abar_t),
    x_prev = sqrt(abar_prev) x0_hat + sqrt(1 - abar_prev - sigma^2) eps_hat + sigma z,
    sigma = eta sqrt((1 - abar_prev)/(1 - abar_t)) sqrt(1 - abar_t/abar_prev)."""
    abar = col(schedule.alpha_bars[t], xt)
    abar_prev = col(np.where(t_prev >= 0, schedule.alpha_bars[np.maximum(t_prev, 0)], 1.0), xt)
    sigma = eta * np.sqrt((1 - abar_prev) / (1 - abar) * (1 - abar / abar_prev))
    x0_hat = (xt - np.sqrt(1 - abar) * eps_hat) / np.sqrt(abar)
    return np.sqrt(abar_prev) * x0_hat + np.sqrt(1 - abar_prev - sigma ** 2) * eps_hat \
        + sigma * noise
