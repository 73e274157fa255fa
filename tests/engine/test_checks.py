"""minigen._checks: the shared argument checks accept what they promise (NumPy scalars
included) and reject the rest with a message that names the call, the argument and the value."""
import numpy as np
import pytest

from minigen import _checks as C


@pytest.mark.parametrize("value", [1, 7, np.int64(3), np.uint8(2)])
def test_positive_int_accepts_python_and_numpy_ints(value):
    assert C.positive_int(value, "n", "f") == int(value)
    assert type(C.positive_int(value, "n", "f")) is int


@pytest.mark.parametrize("value", [0, -1, 2.5, 2.0, True, np.bool_(True), "3", None, np.nan])
def test_positive_int_rejects(value):
    with pytest.raises(ValueError, match=r"^f: n must be a positive int, got "):
        C.positive_int(value, "n", "f")


def test_integer_bounds_and_optional():
    assert C.integer(0, "k", "f", low=0) == 0
    assert C.integer(None, "k", "f", low=0, optional=True) is None
    with pytest.raises(ValueError, match=r"f: k must be an int >= 0, got -1"):
        C.integer(-1, "k", "f", low=0)
    with pytest.raises(ValueError, match=r"f: k must be an int in \[0, 3\], got 4"):
        C.integer(4, "k", "f", low=0, high=3)


@pytest.mark.parametrize("value", [0.0, 0.5, np.float32(0.99), np.float16(0.25), 0])
def test_real_accepts_numpy_floats_in_the_interval(value):
    assert C.real(value, "decay", "EMA", low=0, high=1, high_open=True) == float(value)


@pytest.mark.parametrize("value", [1.0, -0.1, np.nan, np.inf, "0.5", None, True])
def test_real_rejects_outside_or_not_a_number(value):
    with pytest.raises(ValueError, match=r"EMA: decay must be a finite number in \[0, 1\)"):
        C.real(value, "decay", "EMA", low=0, high=1, high_open=True)


def test_positive_and_lower_bounds():
    assert C.positive(1e-300, "lr", "f") == 1e-300
    for bad in (0, -1.0, np.inf):
        with pytest.raises(ValueError, match="lr must be a positive finite number"):
            C.positive(bad, "lr", "f")
    with pytest.raises(ValueError, match="beta must be a finite number >= 0"):
        C.real(-1, "beta", "VAE", low=0)


def test_choice_lists_the_options():
    assert C.choice("a", "mode", "f", ("a", "b")) == "a"
    with pytest.raises(ValueError, match=r"f: mode must be one of 'a', 'b', got 'c'"):
        C.choice("c", "mode", "f", ("a", "b"))
    with pytest.raises(ValueError, match="mode must be one of"):
        C.choice(["a"], "mode", "f", ("a", "b"))   # unhashable: still a clear error


def test_int_tuple():
    assert C.int_tuple([2, np.int32(3)], "channels", "f") == (2, 3)
    assert C.int_tuple((), "channels", "f") == ()
    for bad in ("ab", (1, 0), (1.5,), 5, (True,)):
        with pytest.raises(ValueError, match="f: channels must be a tuple of positive ints"):
            C.int_tuple(bad, "channels", "f")
    with pytest.raises(ValueError, match="must be a non-empty tuple"):
        C.int_tuple((), "channels", "f", nonempty=True)
    with pytest.raises(ValueError, match="must be a 2-tuple"):
        C.int_tuple((1, 2, 3), "stride", "f", length=2)


def test_excerpt_bounds_the_length():
    text = "x" * 10_000
    assert len(C.excerpt(text)) <= 80 and C.excerpt(text).endswith("...")
    assert C.excerpt("short") == "'short'"
