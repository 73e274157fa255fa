"""Learning-rate schedules: each sets every parameter group's lr = base_lr * factor(step)
when ``step()`` is called, and has ``state_dict`` / ``load_state_dict`` for exact resume."""
import math

import numpy as np

from .._checks import integer, positive, positive_int, real


class LRScheduler:
    """Sets every group's ``lr = base_lr * factor(step)`` each time ``step()`` is called
    (``base_lr`` is the group's lr when the schedule is created)."""

    def __init__(self, optimizer):
        self.optimizer, self.last_step = optimizer, 0
        self.base_lrs = [g["lr"] for g in optimizer.param_groups]
        self._apply()

    def _apply(self):
        factor = self.factor(self.last_step)
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * factor

    def step(self):
        self.last_step += 1
        self._apply()

    def state_dict(self):
        return {"last_step": np.array(self.last_step), "base_lrs": np.array(self.base_lrs)}

    def load_state_dict(self, state):
        where = f"{type(self).__name__}.load_state_dict"
        base_lrs = [float(v) for v in np.asarray(state["base_lrs"]).reshape(-1)]
        if len(base_lrs) != len(self.optimizer.param_groups):
            raise ValueError(f"{where}: the state has {len(base_lrs)} groups, the optimiser "
                             f"{len(self.optimizer.param_groups)}")
        self.base_lrs, self.last_step = base_lrs, int(state["last_step"])
        self._apply()


class StepLR(LRScheduler):
    """lr = base_lr * gamma^(floor(step / step_size))."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size = positive_int(step_size, "step_size", "StepLR")
        self.gamma = positive(gamma, "gamma", "StepLR")
        super().__init__(optimizer)

    def factor(self, step):
        return self.gamma ** (step // self.step_size)


class CosineWarmup(LRScheduler):
    """Linear warm-up over ``warmup`` steps, then cosine decay to ``min_factor`` at ``total``:
    factor = min_factor + (1 - min_factor) (1 + cos(pi progress)) / 2."""

    def __init__(self, optimizer, warmup, total, min_factor=0.0):
        self.total = positive_int(total, "total", "CosineWarmup")
        self.warmup = integer(warmup, "warmup", "CosineWarmup", low=0, high=self.total - 1)
        self.min_factor = real(min_factor, "min_factor", "CosineWarmup", low=0, high=1)
        super().__init__(optimizer)

    def factor(self, step):
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * progress))
