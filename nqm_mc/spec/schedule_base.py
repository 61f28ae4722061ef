r"""What every schedule is: the two base classes and the one check of their values.

A learning-rate schedule subclasses :class:`Schedule`, a batch-size schedule
:class:`BatchSchedule`; each implements ``values(n)``. :func:`checked_values` is the one place
the engines call it (shape ``(n,)``, finite values, learning rates ``>= 0``, batch sizes
integers in ``[1, 2^53]``). The schedules themselves, and the coercions from numbers and dicts,
are in :mod:`nqm_mc.spec.schedules`, which re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from nqm_mc.spec._checks import (
    MAX_BATCH,
    MAX_STEP,
    ParameterError,
    _short,
    check_int,
    check_memory,
)

__all__ = ["Schedule", "BatchSchedule", "checked_values"]


class Schedule:
    r"""Base class of learning-rate schedules :math:`t \mapsto \alpha_t`.

    A subclass implements :meth:`values`; everything else (evaluation at one step, the
    engines, :func:`checked_values`) goes through it.
    """

    kind: str = "schedule"
    is_constant: bool = False

    def values(self, n_steps: int) -> np.ndarray:  # pragma: no cover - abstract
        """Return the learning rates of updates ``0 .. n_steps - 1``.

        Parameters
        ----------
        n_steps : int
            Number of updates.

        Returns
        -------
        ndarray, shape (n_steps,)
            Finite rates >= 0 (checked by :func:`checked_values` before use).
        """
        raise NotImplementedError

    def __call__(self, t: int) -> float:
        """Return the learning rate of update ``t`` (checked like :meth:`values`).

        Raises
        ------
        ParameterError
            If ``t`` is not an int in [0, 2^62], or the values are not valid.
        """
        owner = type(self).__name__
        t = check_int("t", t, owner, low=0, high=MAX_STEP)
        check_memory(8.0 * (t + 1), owner, f"the first {t + 1} values",
                     "Evaluate the schedule at smaller steps.")
        return float(checked_values(self, t + 1, "schedule", owner)[t])

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"kind": ..., **parameters}``.

        The input of :func:`~nqm_mc.spec.schedules.schedule_from_dict`.
        """
        d: dict[str, Any] = {"kind": self.kind}
        for k, v in self.__dict__.items():
            d[k] = v.to_dict() if isinstance(v, Schedule) else (list(v) if isinstance(v, tuple)
                                                                   else v)
        return d


def _pieces(owner: str, boundaries: Any, name: str, values: Any,
            check: Callable[[str, Any], Any]) -> tuple[tuple, tuple]:
    """Check the (boundaries, values) of a piecewise-constant schedule.

    Boundaries are strictly increasing steps; there is one more value than boundaries, each
    passing ``check``.
    """
    b = _tuple("boundaries", boundaries, owner,
               lambda n, v: check_int(n, v, owner, low=1, high=MAX_STEP))
    v = _tuple(name, values, owner, check)
    if len(v) != len(b) + 1:
        raise ParameterError(
            f"The '{name}' parameter of {owner} must have len(boundaries) + 1 = "
            f"{len(b) + 1} entries. Got {len(v)} instead.")
    if any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
        raise ParameterError(
            f"The 'boundaries' parameter of {owner} must be strictly increasing. "
            f"Got {list(b)!r} instead.")
    return b, v


def _piecewise(boundaries: tuple, values: tuple, n_steps: int) -> np.ndarray:
    """Return the values of updates 0 .. n_steps - 1 of a piecewise-constant schedule."""
    idx = np.searchsorted(np.asarray(boundaries, dtype=np.int64), np.arange(n_steps),
                          side="right")
    return np.asarray(values, dtype=np.float64)[idx]


def _tuple(name: str, values: Iterable[Any], owner: str,
           checker: Callable[[str, Any], Any]) -> tuple[Any, ...]:
    try:
        seq = tuple(values)
    except TypeError:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be a sequence. Got {values!r} instead."
        ) from None
    return tuple(checker(f"{name}[{i}]", v) for i, v in enumerate(seq))


class BatchSchedule:
    r"""Base class of batch-size schedules :math:`t \mapsto B_t` (positive integers)."""

    kind: str = "batch"
    is_constant: bool = False

    def values(self, n_steps: int) -> np.ndarray:  # pragma: no cover - abstract
        """Return the batch sizes of updates ``0 .. n_steps - 1``.

        Parameters
        ----------
        n_steps : int
            Number of updates.

        Returns
        -------
        ndarray, shape (n_steps,)
            Integers in [1, 2^53], as floats (checked by :func:`checked_values`).
        """
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"kind": ..., **parameters}``.

        The input of :func:`~nqm_mc.spec.schedules.schedule_from_dict`.
        """
        return {"kind": self.kind, **{k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in self.__dict__.items()}}



def checked_values(schedule: Schedule | BatchSchedule, n_steps: int,
                   name: str = "learning_rate", owner: str = "optimizer") -> np.ndarray:
    """``schedule.values(n_steps)`` as a contiguous float64 array, checked.

    The one place the engines call ``values``: the result must have shape exactly
    ``(n_steps,)`` and finite entries, learning rates ``>= 0``, batch sizes integers in
    ``[1, 2^53]``. ``name`` and ``owner`` say where the schedule came from (e.g. the
    'batch_size' parameter of simulate).

    Parameters
    ----------
    schedule : Schedule or BatchSchedule
        The schedule to evaluate.
    n_steps : int
        Number of values.
    name, owner : str
        Where the schedule came from, named in error messages.

    Returns
    -------
    ndarray of float64, shape (n_steps,)
        Contiguous.

    Raises
    ------
    ParameterError
        Naming the schedule and the first bad index and value.
    """
    batch = isinstance(schedule, BatchSchedule)
    if not batch and not isinstance(schedule, Schedule):
        raise ParameterError(f"The {name!r} parameter of {owner} must be a schedule. "
                             f"Got {_short(schedule)} instead.")
    what = "batch sizes" if batch else "learning rates"
    req = (f"{n_steps} integer batch sizes in [1, 2^53]" if batch
           else f"{n_steps} finite learning rates >= 0")
    head = (f"The {name!r} parameter of {owner} is the schedule {_short(schedule)}, whose "
            f"values({n_steps}) must return {req}.")
    raw = schedule.values(n_steps)
    try:
        arr = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(f"{head} Got {_short(raw)} instead.") from None
    if arr.shape != (n_steps,):
        raise ParameterError(f"{head} Got an array of shape {arr.shape} instead.")
    bad = ~np.isfinite(arr)
    if not bad.any():
        if batch:
            bad = (arr < 1) | (arr > MAX_BATCH) | (arr != np.round(arr))
        else:
            bad = arr < 0
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ParameterError(f"{head} Got {what[:-1]} {float(arr[i])!r} at index {i} "
                             "instead.")
    return np.ascontiguousarray(arr)
