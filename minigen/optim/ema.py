"""An exponential moving average of a module's parameters, and a lock per module so that
swapping the averages in (``EMA.applied``) is safe from several threads."""
import contextlib
import threading
import weakref

import numpy as np

from .._checks import real
from ..backend import xp


_SWAP_LOCKS = weakref.WeakKeyDictionary()     # module -> the lock held while EMA weights are in it
_SWAP_LOCKS_GUARD = threading.Lock()


def _swap_lock(module):
    """The one re-entrant lock per module that every ``EMA.applied`` on it holds."""
    with _SWAP_LOCKS_GUARD:
        lock = _SWAP_LOCKS.get(module)
        if lock is None:
            lock = _SWAP_LOCKS[module] = threading.RLock()
        return lock


class EMA:
    """Exponential moving average of a module's parameters: s <- decay s + (1 - decay) p.

    ``applied(module)`` swaps the averages in for a ``with`` block (sampling, evaluation) and
    the trained weights back afterwards; blocks on the same module from different threads run
    one after another, so no thread ever takes the averages for the trained weights.
    ``copy_to(module)`` loads them for good; ``state_dict`` / ``load_state_dict`` save and
    restore them.
    """

    def __init__(self, module, decay=0.999):
        self.decay = self._checked_decay(decay)
        self.shadow = {n: p.data.copy() for n, p in module.named_parameters()}

    @staticmethod
    def _checked_decay(decay):
        return real(decay, "decay", "EMA", low=0, high=1, high_open=True)

    @classmethod
    def from_state_dict(cls, state, decay):
        """An EMA holding the averages ``state`` (name -> array), with no module needed."""
        ema = cls.__new__(cls)
        ema.decay = cls._checked_decay(decay)
        ema.shadow = {n: np.array(v, copy=True) for n, v in state.items()}
        return ema

    def update(self, module):
        for n, p in module.named_parameters():
            s = self.shadow[n]
            s *= self.decay
            s += (1 - self.decay) * p.data

    def copy_to(self, module):
        module.load_state_dict(self.shadow, strict=False)

    @contextlib.contextmanager
    def applied(self, module):
        """Within the block the module holds the averaged weights; on exit (also on an
        exception) its own weights are restored. The module's swap lock is held throughout."""
        with _swap_lock(module):
            saved = {n: p.data.copy() for n, p in module.named_parameters()}
            self.copy_to(module)
            try:
                yield module
            finally:
                module.load_state_dict(saved, strict=False)
    def state_dict(self):
        return {n: s.copy() for n, s in self.shadow.items()}

    def load_state_dict(self, state):
        """Restore averages saved by ``state_dict`` (same names and shapes, checked first)."""
        missing = sorted(set(self.shadow) - set(state))
        unexpected = sorted(set(state) - set(self.shadow))
        if missing or unexpected:
            raise KeyError(f"EMA.load_state_dict: missing keys {missing}, unexpected keys "
                           f"{unexpected}")
        for n, s in self.shadow.items():
            if np.shape(state[n]) != s.shape:
                raise ValueError(f"EMA.load_state_dict: {n} has shape {np.shape(state[n])}, "
                                 f"expected {s.shape}")
        self.shadow = {n: xp(s).asarray(state[n], dtype=s.dtype).copy()
                       for n, s in self.shadow.items()}
