"""The one home of argument checks: every public function checks its arguments here, before
any work starts, so a bad value gets the same kind of message everywhere:

    "<where>: <name> must be <what was expected>, got <value!r>"

``where`` names the call (``"VAE"``, ``"train"``, ``"DDPM.sample"``). NumPy scalars count as
the Python numbers they hold (``np.float32(0.9)`` is a real, ``np.int64(3)`` an int); ``bool``
counts as neither, since ``True`` for a size or a rate is always a mistake. Each check returns
the value as a plain Python number (or tuple), so callers can store what it returns.
"""
import math
from numbers import Integral, Real

import numpy as np

__all__ = ["integer", "positive_int", "real", "positive", "choice", "int_tuple", "int_pair",
           "excerpt"]


def _interval(low, high, low_open, high_open):
    lo = "-inf" if low is None else f"{low:g}" if isinstance(low, float) else low
    hi = "inf" if high is None else f"{high:g}" if isinstance(high, float) else high
    return f"{'(' if low_open else '['}{lo}, {hi}{')' if high_open else ']'}"


def _inside(value, low, high, low_open, high_open):
    if low is not None and not (value > low if low_open else value >= low):
        return False
    return high is None or (value < high if high_open else value <= high)


def integer(value, name, where, low=None, high=None, optional=False):
    """``value`` as an int in [low, high] (either bound may be None); None passes when
    ``optional``."""
    if optional and value is None:
        return None
    ok = isinstance(value, Integral) and not isinstance(value, (bool, np.bool_))
    if not ok or not _inside(value, low, high, False, False):
        if low == 1 and high is None:
            expected = "a positive int"
        elif high is None and low is not None:
            expected = f"an int >= {low}"
        else:
            expected = f"an int in {_interval(low, high, False, False)}"
        raise ValueError(f"{where}: {name} must be {expected}, got {value!r}")
    return int(value)


def positive_int(value, name, where, optional=False):
    """``value`` as an int >= 1."""
    return integer(value, name, where, low=1, optional=optional)


def real(value, name, where, low=None, high=None, low_open=False, high_open=False,
         optional=False):
    """``value`` as a finite float in the interval from ``low`` to ``high`` (closed unless
    ``low_open``/``high_open``; None for no bound); None passes when ``optional``."""
    if optional and value is None:
        return None
    ok = isinstance(value, Real) and not isinstance(value, (bool, np.bool_))
    ok = ok and math.isfinite(value) and _inside(value, low, high, low_open, high_open)
    if not ok:
        if low == 0 and low_open and high is None:
            expected = "a positive finite number"
        elif high is None and low is not None:
            expected = f"a finite number {'>' if low_open else '>='} {low}"
        else:
            expected = f"a finite number in {_interval(low, high, low_open, high_open)}"
        raise ValueError(f"{where}: {name} must be {expected}, got {value!r}")
    return float(value)


def positive(value, name, where, optional=False):
    """``value`` as a finite float > 0."""
    return real(value, name, where, low=0, low_open=True, optional=optional)


def choice(value, name, where, options):
    """``value`` if it is one of ``options``; the error lists them."""
    if isinstance(value, str) or value is None or isinstance(value, (bool, Integral)):
        if value in options:
            return value
    raise ValueError(f"{where}: {name} must be one of {', '.join(map(repr, options))}, "
                     f"got {value!r}")


def int_tuple(values, name, where, low=1, length=None, nonempty=False):
    """``values`` (any iterable of ints, not a string) as a tuple of ints >= ``low``, of
    ``length`` items when given, and not empty when ``nonempty``."""
    bad = isinstance(values, (str, bytes)) or not np.iterable(values)
    items = () if bad else tuple(values)
    bad = bad or any(isinstance(v, (bool, np.bool_)) or not isinstance(v, Integral) or v < low
                     for v in items)
    bad = bad or (length is not None and len(items) != length) or (nonempty and not items)
    if bad:
        size = f"a {length}-" if length is not None else "a non-empty " if nonempty else "a "
        kind = "positive ints" if low == 1 else f"ints >= {low}"
        raise ValueError(f"{where}: {name} must be {size}tuple of {kind}, got {values!r}")
    return tuple(int(v) for v in items)


def int_pair(value, name, where, low=1):
    """``value`` (an int, or a pair of ints) as a pair of ints >= ``low``: a kernel size,
    stride or dilation (low 1), a padding (low 0)."""
    if isinstance(value, (str, bytes)) or not np.iterable(value):
        v = integer(value, name, where, low=low)
        return v, v
    return int_tuple(value, name, where, low=low, length=2)


def excerpt(value, limit=80):
    """``repr(value)`` cut to ``limit`` characters, for error messages that quote user data
    (a whole corpus must never land in a message)."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 4] + " ..."
