"""Optimisers with parameter groups, learning-rate schedules, gradient clipping and an EMA of
parameters, each with ``state_dict`` / ``load_state_dict`` (flat name -> array dicts that
``minigen.io.save`` writes as they are): ``optimizers.py`` (SGD, Adam, AdamW, clipping, the
flat-buffer updates), ``schedules.py``, ``ema.py``."""
from .ema import EMA
from .optimizers import SGD, Adam, AdamW, Optimizer, clip_grad_norm_
from .schedules import CosineWarmup, LRScheduler, StepLR

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "clip_grad_norm_", "LRScheduler", "StepLR",
           "CosineWarmup", "EMA"]
