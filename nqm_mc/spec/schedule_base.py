r"""What every schedule is: the two base classes and the one check of their values.

A learning-rate schedule subclasses :class:`Schedule`, a batch-size schedule
:class:`BatchSchedule`; each implements ``values(n)``. :func:`checked_values` is the one place
the engines call it (shape ``(n,)``, finite values, learning rates ``>= 0``, batch sizes
integers in ``[1, 2^53]``).

A schedule is also a sequence of runs of constant values, :class:`Pieces`: ``pieces(n)`` gives
the first update of each run and its value. The default run-length encodes ``values(n)``; the
built-in schedules override it so that a constant or piecewise-constant schedule costs memory
per piece, not per update, and a decay held after its end is one piece there.
:func:`checked_pieces` is the pieces' counterpart of :func:`checked_values`, with the same
checks, and ``checked_pieces(s, n).expand()`` equals ``checked_values(s, n)`` bit for bit.
The schedules themselves, and the coercions from numbers and dicts,
are in :mod:`nqm_mc.spec.schedules`, which re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
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

__all__ = ["Schedule", "BatchSchedule", "Pieces", "checked_values", "checked_pieces"]


@dataclass(frozen=True, eq=False)
class Pieces:
    """A schedule as runs of constant values over its first ``n_steps`` updates.

    Run ``k`` covers updates ``starts[k] <= t < ends[k]`` (``ends[k] = starts[k + 1]``, the
    last one ``n_steps``) and has the value ``values[k]``. Neighbouring runs may share a value
    (a schedule is not obliged to merge them); a schedule that changes every update has one run
    per update.

    Attributes
    ----------
    starts : ndarray of int64, shape (K,)
        First update of each run: ``starts[0] == 0``, strictly increasing, ``< n_steps``
        (``K == 0`` exactly when ``n_steps == 0``).
    values : ndarray of float64, shape (K,)
        The value of each run.
    n_steps : int
        Number of updates covered.
    """

    starts: np.ndarray
    values: np.ndarray
    n_steps: int

    @classmethod
    def from_values(cls, values: Any, n_steps: int | None = None) -> Pieces:
        """Run-length encode per-update values.

        Parameters
        ----------
        values : array_like, shape (m,)
            Values of updates ``0 .. m - 1``.
        n_steps : int, optional
            Number of updates covered, ``>= m`` (default ``m``): the last value is held over
            updates ``m .. n_steps - 1``.

        Returns
        -------
        Pieces
        """
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        n = v.size if n_steps is None else int(n_steps)
        if n < v.size or (v.size == 0 and n > 0):
            raise ValueError(f"Pieces.from_values: {v.size} values cannot cover {n} updates.")
        if v.size == 0:
            return cls(np.zeros(0, np.int64), np.zeros(0), 0)
        # a new run where the value changes (NaN compares unequal, so each NaN is its own run)
        change = np.flatnonzero(v[1:] != v[:-1]) + 1
        starts = np.concatenate(([0], change)).astype(np.int64)
        return cls(starts, np.ascontiguousarray(v[starts]), n)

    @property
    def ends(self) -> np.ndarray:
        """One past the last update of each run (int64, shape (K,))."""
        return np.append(self.starts[1:], np.int64(self.n_steps)).astype(np.int64)

    @property
    def lengths(self) -> np.ndarray:
        """Number of updates of each run (int64, shape (K,))."""
        return self.ends - self.starts

    def __len__(self) -> int:
        return int(self.starts.size)

    def expand(self) -> np.ndarray:
        """Return the per-update values (float64, shape (n_steps,)): what ``values(n)`` gives."""
        return np.repeat(self.values, self.lengths)

    def at(self, t: Any) -> Any:
        """Return the value of update(s) ``t`` (ints in ``[0, n_steps)``), by binary search."""
        idx = np.searchsorted(self.starts, t, side="right") - 1
        return self.values[idx]

    def shifted(self, offset: int, n_steps: int) -> Pieces:
        """Return these runs moved ``offset`` updates later, out of ``n_steps`` in all.

        The first ``offset`` updates are not covered: for :meth:`concatenate` only.
        """
        return Pieces(self.starts + np.int64(offset), self.values, n_steps)

    @staticmethod
    def concatenate(parts: Iterable[Pieces], n_steps: int) -> Pieces:
        """Join runs given in order of their starts; equal neighbouring values are merged."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return Pieces(np.zeros(0, np.int64), np.zeros(0), n_steps)
        starts = np.concatenate([p.starts for p in parts])
        values = np.concatenate([p.values for p in parts])
        keep = np.ones(starts.size, dtype=bool)
        keep[1:] = values[1:] != values[:-1]
        return Pieces(np.ascontiguousarray(starts[keep]), np.ascontiguousarray(values[keep]),
                      n_steps)

    def __repr__(self) -> str:
        return f"Pieces({len(self)} runs over {self.n_steps} updates)"


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

    def pieces(self, n_steps: int) -> Pieces:
        """Return updates ``0 .. n_steps - 1`` as runs of constant values.

        The default run-length encodes :meth:`values`; a subclass may override it to avoid the
        per-update array. ``pieces(n).expand()`` must equal ``values(n)``.

        Parameters
        ----------
        n_steps : int
            Number of updates.

        Returns
        -------
        Pieces
        """
        return _default_pieces(self, n_steps)

    def __call__(self, t: int) -> float:
        """Return the learning rate of update ``t`` (checked like :meth:`values`).

        Raises
        ------
        ParameterError
            If ``t`` is not an int in [0, 2^62], or the values are not valid.
        """
        owner = type(self).__name__
        t = check_int("t", t, owner, low=0, high=MAX_STEP)
        return float(checked_pieces(self, t + 1, "schedule", owner).values[-1])

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"kind": ..., **parameters}``.

        The input of :func:`~nqm_mc.spec.schedules.schedule_from_dict`.
        """
        d: dict[str, Any] = {"kind": self.kind}
        for k, v in self.__dict__.items():
            d[k] = v.to_dict() if isinstance(v, Schedule) else (list(v) if isinstance(v, tuple)
                                                                   else v)
        return d


def _default_pieces(schedule: Schedule | BatchSchedule, n_steps: int, name: str = "schedule",
                    owner: str | None = None) -> Pieces:
    """Run-length encode ``values(n_steps)``, checked by :func:`checked_values`.

    What would not fit in memory is refused first.
    """
    owner = type(schedule).__name__ if owner is None else owner
    check_memory(8.0 * n_steps, owner, f"the values of {n_steps} updates",
                 "Ask for fewer updates (a schedule of your own can implement "
                 "pieces() to avoid the per-update array).")
    return Pieces.from_values(checked_values(schedule, n_steps, name, owner), n_steps)


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


def _piecewise_pieces(boundaries: tuple, values: tuple, n_steps: int) -> Pieces:
    """Return the runs of a piecewise-constant schedule over updates 0 .. n_steps - 1."""
    if n_steps == 0:
        return Pieces(np.zeros(0, np.int64), np.zeros(0), 0)
    b = [x for x in boundaries if x < n_steps]
    return Pieces.concatenate([Pieces(np.asarray([0, *b], dtype=np.int64),
                                      np.asarray(values[:len(b) + 1], dtype=np.float64),
                                      n_steps)], n_steps)


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

    def pieces(self, n_steps: int) -> Pieces:
        """Return updates ``0 .. n_steps - 1`` as runs of constant batch sizes.

        The default run-length encodes :meth:`values`; ``pieces(n).expand()`` must equal
        ``values(n)``.

        Parameters
        ----------
        n_steps : int
            Number of updates.

        Returns
        -------
        Pieces
        """
        return _default_pieces(self, n_steps)

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


def checked_pieces(schedule: Schedule | BatchSchedule, n_steps: int,
                   name: str = "learning_rate", owner: str = "optimizer") -> Pieces:
    """``schedule.pieces(n_steps)``, checked: the runs' counterpart of :func:`checked_values`.

    The runs must start at 0, be strictly increasing and lie below ``n_steps``; their values
    must be finite, learning rates ``>= 0``, batch sizes integers in ``[1, 2^53]``. The memory
    used is per run, so a constant schedule over ``2^62`` updates costs nothing.

    Parameters
    ----------
    schedule : Schedule or BatchSchedule
        The schedule to evaluate.
    n_steps : int
        Number of updates.
    name, owner : str
        Where the schedule came from, named in error messages.

    Returns
    -------
    Pieces
        Contiguous int64 starts and float64 values.

    Raises
    ------
    ParameterError
        Naming the schedule and the first bad update and value.
    """
    batch = isinstance(schedule, BatchSchedule)
    if not batch and not isinstance(schedule, Schedule):
        raise ParameterError(f"The {name!r} parameter of {owner} must be a schedule. "
                             f"Got {_short(schedule)} instead.")
    what = "batch size" if batch else "learning rate"
    req = ("integer batch sizes in [1, 2^53]" if batch else "finite learning rates >= 0")
    head = (f"The {name!r} parameter of {owner} is the schedule {_short(schedule)}, whose "
            f"pieces({n_steps}) must cover {n_steps} updates with {req}.")
    if type(schedule).pieces in (Schedule.pieces, BatchSchedule.pieces):
        # only values(): the default encoding, with the caller's name and owner in its errors
        return _default_pieces(schedule, n_steps, name, owner)
    p = schedule.pieces(n_steps)
    if not isinstance(p, Pieces):
        raise ParameterError(f"{head} Got {_short(p)} instead of Pieces.")
    try:
        starts = np.ascontiguousarray(np.asarray(p.starts, dtype=np.int64).reshape(-1))
        vals = np.ascontiguousarray(np.asarray(p.values, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(f"{head} Got runs that are not numbers.") from None
    if (p.n_steps != n_steps or starts.size != vals.size or (n_steps > 0) != (starts.size > 0)
            or (starts.size and (starts[0] != 0 or starts[-1] >= n_steps
                                 or np.any(np.diff(starts) <= 0)))):
        raise ParameterError(f"{head} Got {p!r} with starts that do not tile the updates.")
    bad = ~np.isfinite(vals)
    if not bad.any():
        bad = ((vals < 1) | (vals > MAX_BATCH) | (vals != np.round(vals))) if batch \
            else vals < 0
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ParameterError(f"{head} Got {what} {float(vals[k])!r} at index {int(starts[k])} "
                             "instead.")
    return Pieces(starts, vals, n_steps)
