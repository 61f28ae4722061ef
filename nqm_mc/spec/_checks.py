"""Argument checking shared by every public spec and function.

Errors follow one form, naming the parameter as the user wrote it, its owner, what is allowed
and the value received::

    The 'learning_rate' parameter of HeavyBall must be a float in (0, inf). Got -0.1 instead.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

_T = TypeVar("_T")

__all__ = ["check_real", "check_int", "check_array", "check_choice", "check_batch_size",
           "check_steps", "check_memory", "ParameterError", "MAX_BATCH", "MAX_STEP"]

#: Largest batch size anywhere: batch sizes reach the kernels as float64 (exact up to 2^53) and
#: int64 (FiniteData), so every integer up to 2^53 is held exactly by both.
MAX_BATCH = 2 ** 53
#: Largest step index anywhere: the kernels count steps in int64 and take powers A^(2^j) for
#: j <= 62, so horizons up to 2^62 are representable.
MAX_STEP = 2 ** 62
#: Fraction of physical memory a single call may plan to allocate before it is refused.
MEMORY_FRACTION = 0.5


class ParameterError(ValueError):
    """A public argument is invalid. Subclass of ValueError so callers may catch either."""


def _interval(low: float | None, high: float | None, closed: tuple[bool, bool]) -> str:
    lo_b = "[" if closed[0] else "("
    hi_b = "]" if closed[1] else ")"
    lo = "-inf" if low is None else _bound(low)
    hi = "inf" if high is None else _bound(high)
    return f"{lo_b}{lo}, {hi}{hi_b}"


def _bound(x: float) -> str:
    """Interval ends as people write them: 2^53 and 2^64 - 1 rather than 9.0072e+15."""
    if isinstance(x, int) and not isinstance(x, bool) and x >= 2 ** 20:
        if x & (x - 1) == 0:
            return f"2^{x.bit_length() - 1}"
        if (x + 1) & x == 0:
            return f"2^{x.bit_length()} - 1"
        return str(x)
    return f"{x:g}"


def _in_interval(x: float, low: float | None, high: float | None,
                 closed: tuple[bool, bool]) -> bool:
    if low is not None and (x < low or (x == low and not closed[0])):
        return False
    if high is not None and (x > high or (x == high and not closed[1])):
        return False
    return True


def check_real(name: str, value: Any, owner: str, low: float | None = None,
               high: float | None = None, closed: tuple[bool, bool] = (False, False)) -> float:
    """Return ``value`` as a Python float after checking it is finite and inside the interval."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))
    if ok:
        try:
            value = float(value)
        except OverflowError:  # an int past float64's range
            ok = False
        else:
            ok = math.isfinite(value) and _in_interval(value, low, high, closed)
    if not ok:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be a float in "
            f"{_interval(low, high, closed)}. Got {_short(value)} instead."
        )
    return value


def check_int(name: str, value: Any, owner: str, low: int | None = None,
              high: int | None = None) -> int:
    """Return ``value`` as a Python int after checking it is an integer in [low, high]."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))
    if not ok and isinstance(value, (float, np.floating)) and math.isfinite(value) \
            and float(value).is_integer():
        value, ok = int(value), True
    if ok:
        value = int(value)
        ok = _in_interval(value, low, high, (True, True))
    if not ok:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be an int in "
            f"{_interval(low, high, (True, high is not None))}. Got {_short(value)} instead."
        )
    return value


def check_batch_size(name: str, value: Any, owner: str, high: int = MAX_BATCH) -> int:
    """Return an integer batch size in [1, high] as a Python int.

    Accepts ints (Python or numpy) and floats with no fractional part; refuses bools, strings,
    fractional floats, NaN and anything past ``high`` (2^53 by default: the largest integer
    float64 holds exactly, and below int64's limit).
    """
    return check_int(name, value, owner, low=1, high=high)


def _is_int_like(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, numbers.Integral):
        return True
    return isinstance(v, (float, np.floating)) and math.isfinite(v) and float(v).is_integer()


def check_steps(name: str, value: Any, owner: str, low: int = 0,
                high: int = MAX_STEP) -> np.ndarray:
    """Return a sorted, de-duplicated, non-empty 1-d int64 array of steps in [low, high].

    Elements must be ints (or floats with no fractional part); bools, strings, NaN and values
    outside [low, high] are refused, naming the first bad index. Unsorted input is sorted and
    repeated steps are kept once (the returned steps label the statistics).
    """
    if isinstance(value, (str, bytes, dict)) or value is None:
        ok = False
    else:
        try:
            arr = np.asarray(value, dtype=object if not isinstance(value, np.ndarray)
                             else None)
            ok = arr.ndim == 1
        except (TypeError, ValueError):
            ok = False
    if not ok:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be a 1-d sequence of int steps. "
            f"Got {_short(value)} instead.")
    if arr.size == 0:
        raise ParameterError(f"The {name!r} parameter of {owner} must not be empty.")
    if arr.dtype.kind in "iu":  # fast path for integer arrays
        bad = (arr < low) | (arr > high)
        if not bad.any():
            return np.unique(arr.astype(np.int64))
        flat = [arr[int(np.flatnonzero(bad)[0])]]
        offset = int(np.flatnonzero(bad)[0])
    else:
        flat, offset = arr.tolist(), 0
    for i, v in enumerate(flat):
        if isinstance(v, np.generic):
            v = v.item()
        if not _is_int_like(v) or not low <= int(v) <= high:
            raise ParameterError(
                f"The {name!r} parameter of {owner} must hold int steps in "
                f"[{_bound(low)}, {_bound(high)}]. Got {v!r} at index {i + offset} instead.")
    return np.unique(np.array([int(v) for v in flat], dtype=np.int64))


def _short(value: Any, n: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= n else r[:n - 3] + "..."


def physical_memory() -> int | None:
    """Bytes of physical memory (None when the platform does not say)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
        return None


def check_memory(nbytes: float, owner: str, what: str, hint: str,
                 limit: float | None = None) -> None:
    """Refuse a call that would allocate more than ``limit`` bytes (default: half of physical
    memory) before allocating anything. ``what`` names what takes the memory, ``hint`` says how
    to ask for less."""
    if limit is None:
        phys = physical_memory()
        if phys is None:  # pragma: no cover
            return
        limit = MEMORY_FRACTION * phys
    if nbytes > limit:
        raise ParameterError(
            f"{owner} would need about {nbytes / 1e9:.3g} GB for {what}, more than the "
            f"{limit / 1e9:.3g} GB it may use (half of physical memory). {hint}")


def check_array(name: str, value: Any, owner: str, low: float | None = None,
                high: float | None = None, closed: tuple[bool, bool] = (False, False),
                size: int | None = None, ndim: int = 1) -> np.ndarray:
    """Return a read-only float64 array after checking shape, finiteness and range."""
    try:
        if isinstance(value, (str, bytes)):
            raise TypeError
        arr = np.array(value, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be an array of floats. "
            f"Got {_short(value)} instead."
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


def check_choice(name: str, value: _T, owner: str, choices: Sequence[Any]) -> _T:
    """Return ``value`` after checking it is one of ``choices``."""
    try:
        ok = bool(value in choices)
    except (TypeError, ValueError):  # e.g. an array compared with strings
        ok = False
    if not ok:
        allowed = ", ".join(repr(c) for c in choices)
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be one of {allowed}. "
            f"Got {_short(value)} instead."
        )
    return value
