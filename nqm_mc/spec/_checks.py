"""Argument checking shared by every public spec and function.

Errors follow one form, naming the parameter as the user wrote it, its owner, what is allowed
and the value received::

    The 'learning_rate' parameter of HeavyBall must be a float in (0, inf). Got -0.1 instead.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["check_real", "check_int", "check_array", "check_choice", "ParameterError"]


class ParameterError(ValueError):
    """A public argument is invalid. Subclass of ValueError so callers may catch either."""


def _interval(low, high, closed):
    lo_b = "[" if closed[0] else "("
    hi_b = "]" if closed[1] else ")"
    lo = "-inf" if low is None else f"{low:g}"
    hi = "inf" if high is None else f"{high:g}"
    return f"{lo_b}{lo}, {hi}{hi_b}"


def _in_interval(x, low, high, closed):
    if low is not None and (x < low or (x == low and not closed[0])):
        return False
    if high is not None and (x > high or (x == high and not closed[1])):
        return False
    return True


def check_real(name, value, owner, low=None, high=None, closed=(False, False)):
    """Return ``value`` as a Python float after checking it is finite and inside the interval."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        value = float(value)
        ok = math.isfinite(value) and _in_interval(value, low, high, closed)
    if not ok:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be a float in "
            f"{_interval(low, high, closed)}. Got {value!r} instead."
        )
    return value


def check_int(name, value, owner, low=None, high=None):
    """Return ``value`` as a Python int after checking it is an integer in [low, high]."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok and isinstance(value, float) and value.is_integer():
        value, ok = int(value), True
    if ok:
        value = int(value)
        ok = _in_interval(value, low, high, (True, True))
    if not ok:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be an int in "
            f"{_interval(low, high, (True, high is not None))}. Got {value!r} instead."
        )
    return value


def check_array(name, value, owner, low=None, high=None, closed=(False, False), size=None,
                ndim=1):
    """Return a read-only float64 array after checking shape, finiteness and range."""
    try:
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be an array of floats. Got {value!r} instead."
        ) from None
    if arr.ndim == 0 and size is not None:
        arr = np.full(size, float(arr))
    if arr.ndim != ndim:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be a {ndim}-d array. "
            f"Got an array of shape {arr.shape} instead."
        )
    if size is not None and arr.shape[0] != size:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must have length {size}. "
            f"Got length {arr.shape[0]} instead."
        )
    if arr.size == 0:
        raise ParameterError(f"The {name!r} parameter of {owner} must not be empty.")
    bad = ~np.isfinite(arr)
    if not bad.any():
        lo_bad = np.zeros(arr.shape, bool) if low is None else (
            arr < low if closed[0] else arr <= low)
        hi_bad = np.zeros(arr.shape, bool) if high is None else (
            arr > high if closed[1] else arr >= high)
        bad = lo_bad | hi_bad
    if bad.any():
        i = int(np.flatnonzero(bad.ravel())[0])
        raise ParameterError(
            f"The {name!r} parameter of {owner} must hold finite floats in "
            f"{_interval(low, high, closed)}. Got {arr.ravel()[i]!r} at index {i} instead."
        )
    arr.setflags(write=False)
    return arr


def check_choice(name, value, owner, choices):
    """Return ``value`` after checking it is one of ``choices``."""
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be one of {allowed}. Got {value!r} instead."
        )
    return value
