"""Optimisers, learning-rate schedules, gradient clipping and an EMA of parameters.

Updates run on raw arrays in place (no graph), so a step costs a few vectorised NumPy ops
per parameter.
"""
import math

from .autograd import no_grad
from .backend import xp


class Optimizer:
    def __init__(self, params, lr, defaults):
        self.params = [p for p in params]
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if lr <= 0:
            raise ValueError(f"{type(self).__name__}: lr must be > 0, got {lr}")
        self.lr = lr
        self.state = [dict() for _ in self.params]
        for k, v in defaults.items():
            setattr(self, k, v)
        self.step_count = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        self.step_count += 1
        with no_grad():
            for p, state in zip(self.params, self.state):
                if p.grad is not None:
                    self._update(p.data, p.grad.data, state)
                    p._version += 1

    def state_dict(self):
        flat = {"step_count": self.step_count, "lr": self.lr}
        for i, state in enumerate(self.state):
            for k, v in state.items():
                flat[f"{i}.{k}"] = v
        return flat

    def load_state_dict(self, flat):
        self.step_count, self.lr = int(flat["step_count"]), float(flat["lr"])
        for key, v in flat.items():
            if "." in key:
                i, k = key.split(".", 1)
                self.state[int(i)][k] = xp(self.params[int(i)].data).asarray(v)


class SGD(Optimizer):
    """v <- momentum v + g (+ weight_decay p); p <- p - lr v (Nesterov: p - lr (g + momentum v))."""

    def __init__(self, params, lr=1e-2, momentum=0.0, nesterov=False, weight_decay=0.0):
        if nesterov and momentum <= 0:
            raise ValueError("SGD: nesterov needs momentum > 0")
        super().__init__(params, lr, dict(momentum=momentum, nesterov=nesterov,
                                          weight_decay=weight_decay))

    def _update(self, p, g, state):
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            if "v" not in state:
                state["v"] = g.copy()
            else:
                v = state["v"]
                v *= self.momentum
                v += g
            g = g + self.momentum * state["v"] if self.nesterov else state["v"]
        p -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015): m <- b1 m + (1-b1) g; v <- b2 v + (1-b2) g^2;
    p <- p - lr m_hat / (sqrt(v_hat) + eps), m_hat = m/(1-b1^t), v_hat = v/(1-b2^t).
    ``weight_decay`` adds weight_decay * p to g (L2, coupled)."""
    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr, dict(betas=betas, eps=eps, weight_decay=weight_decay))

    def _update(self, p, g, state):
        b1, b2 = self.betas
        if self.weight_decay:
            if self.decoupled:
                p *= 1 - self.lr * self.weight_decay
            else:
                g = g + self.weight_decay * p
        if "m" not in state:
            state["m"], state["v"] = xp(p).zeros_like(p), xp(p).zeros_like(p)
        m, v = state["m"], state["v"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * (g * g)
        t = self.step_count
        update = xp(p).sqrt(v)          # in place from here: one temporary per step
        update *= 1 / math.sqrt(1 - b2 ** t)
        update += self.eps
        xp(p).divide(m, update, out=update)
        update *= self.lr / (1 - b1 ** t)
        p -= update


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): p <- p (1 - lr wd) first."""
    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)


def clip_grad_norm_(params, max_norm):
    """Scale all gradients so their global L2 norm is at most ``max_norm``; return the norm."""
    grads = [p.grad.data for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = math.sqrt(sum(float((g * g).sum()) for g in grads))
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for g in grads:
            g *= scale
    return total


class LRScheduler:
    """Sets ``optimizer.lr = base_lr * factor(step)`` each time ``step()`` is called."""

    def __init__(self, optimizer):
        self.optimizer, self.base_lr, self.last_step = optimizer, optimizer.lr, 0
        optimizer.lr = self.base_lr * self.factor(0)

    def step(self):
        self.last_step += 1
        self.optimizer.lr = self.base_lr * self.factor(self.last_step)


class StepLR(LRScheduler):
    """lr = base_lr * gamma^(floor(step / step_size))."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def factor(self, step):
        return self.gamma ** (step // self.step_size)


class CosineWarmup(LRScheduler):
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_factor`` at ``total``:
    factor = min_factor + (1 - min_factor) (1 + cos(pi progress)) / 2."""

    def __init__(self, optimizer, warmup, total, min_factor=0.0):
        if not 0 <= warmup < total:
            raise ValueError(f"CosineWarmup: need 0 <= warmup < total, got {warmup}, {total}")
        self.warmup, self.total, self.min_factor = warmup, total, min_factor
        super().__init__(optimizer)

    def factor(self, step):
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """Exponential moving average of a module's parameters: s <- decay s + (1 - decay) p.

    ``copy_to(module)`` loads the averages (e.g. for sampling); ``state_dict`` saves them.
    """

    def __init__(self, module, decay=0.999):
        if not 0 <= decay < 1:
            raise ValueError(f"EMA: decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = {n: p.data.copy() for n, p in module.named_parameters()}

    def update(self, module):
        for n, p in module.named_parameters():
            s = self.shadow[n]
            s *= self.decay
            s += (1 - self.decay) * p.data

    def copy_to(self, module):
        module.load_state_dict(self.shadow, strict=False)

    def state_dict(self):
        return dict(self.shadow)
