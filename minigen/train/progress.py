"""What a person sees and does while ``train`` runs: the progress line and Ctrl-C.

On a terminal one line is redrawn in place at most 10 times a second; elsewhere (a log file,
a notebook cell) a plain line is written every ``log_every`` steps. A first Ctrl-C is deferred
to the end of the current step, so the run stops at a step boundary; a second one interrupts
at once.
"""
import contextlib
import signal
import threading
import time

import numpy as np


class Progress:
    """``<model>  step  k/total  <loss> <mean of the last log_every values> ...  val v  r steps/s
    ETA``, then ``N ranks`` for a data-parallel run; nothing when not ``verbose``."""

    def __init__(self, out, total, log_every, verbose, first_step, ranks=1, label=""):
        self.out, self.total, self.log_every, self.verbose = out, total, log_every, verbose
        self.ranks, self.label = ranks, label
        isatty = getattr(out, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.first_step, self.start, self.drawn = first_step, time.perf_counter(), 0.0

    def update(self, step, history, val_losses, force=False):
        if not self.verbose:
            return
        now = time.perf_counter()
        last = step == self.total or force
        due = now - self.drawn >= 0.1 if self.tty else step % self.log_every == 0
        if not (due or last):
            return
        self.drawn = now
        window = min(self.log_every, step)
        parts = [self.label] if self.label else []
        parts.append(f"step {step:>6}/{self.total}")
        parts += [f"{name} {np.mean(values[-window:]):.4f}" for name, values in history.items()]
        if val_losses:
            parts.append(f"val {val_losses[-1][1]:.4f}")
        rate = (step - self.first_step) / max(now - self.start, 1e-9)
        parts.append(f"{rate:.1f} steps/s")
        if step < self.total and rate > 0:
            eta = int((self.total - step) / rate)
            parts.append(f"ETA {eta // 3600}:{eta // 60 % 60:02d}:{eta % 60:02d}")
        if self.ranks > 1:
            parts.append(f"{self.ranks} ranks")
        line = "  ".join(parts)
        if self.tty:
            self.out.write("\r" + line + "\x1b[K" + ("\n" if last else ""))
        else:
            self.out.write(line + "\n")
        self.out.flush()

    def close(self):
        if self.verbose and self.tty:
            self.out.write("\n")
            self.out.flush()


@contextlib.contextmanager
def deferred_interrupt():
    """Yield a list that a first Ctrl-C (SIGINT) appends to instead of interrupting; the loop
    checks it at the end of each step. A second Ctrl-C raises KeyboardInterrupt at once.
    Active only in the main thread and where Python's default handler is installed (a notebook
    or a library with its own handler keeps it)."""
    requested = []
    if threading.current_thread() is not threading.main_thread() \
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        yield requested
        return

    def handler(signum, frame):
        if requested:
            raise KeyboardInterrupt
        requested.append(signum)

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield requested
    finally:
        signal.signal(signal.SIGINT, previous)
