r"""Learning-rate and batch-size schedules.

A schedule maps the update index :math:`t = 0, 1, \dots` (the update that produces
:math:`\theta(t+1)`) to a value. ``values(n)`` returns the first ``n`` values as an array;
that array is what both engines consume, so any schedule, including a user's own subclass
that implements ``values``, works everywhere.

Every decay schedule can be put behind a linear warmup with :class:`Warmup`.

The engines never use ``values(n)`` unchecked: :func:`checked_values` is the one place it is
called, and it requires an array of shape exactly ``(n,)`` of finite values, learning rates
``>= 0`` (a rate of 0 skips that update, as a cosine decay to 0 does at its end; an optimizer's
constant learning rate must still be ``> 0``) and batch sizes that are integers in
``[1, 2^53]``. A user's schedule that breaks this gets a :class:`ParameterError` naming the
schedule and the first bad index and value.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import numpy as np

from nqm_mc.spec._checks import (
    MAX_STEP,
    ParameterError,
    check_batch_size,
    check_int,
    check_memory,
    check_real,
)
from nqm_mc.spec.schedule_base import (
    BatchSchedule,
    Pieces,
    Schedule,
    _pieces,
    _piecewise,
    _piecewise_pieces,
    checked_pieces,
    checked_values,
)

__all__ = [
    "Schedule", "Constant", "PiecewiseConstant", "StepDecay", "ExponentialDecay",
    "LinearDecay", "CosineDecay", "Warmup", "BatchSchedule", "ConstantBatch",
    "PiecewiseConstantBatch", "as_schedule", "as_batch_schedule", "schedule_from_dict",
    "checked_values", "Pieces", "checked_pieces",
]


@dataclass(frozen=True)
class Constant(Schedule):
    r"""Constant learning rate :math:`\alpha_t = \text{value}`.

    Parameters
    ----------
    value : float
        The rate, finite and > 0.
    """

    value: float
    kind = "constant"
    is_constant = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", check_real("value", self.value, "Constant", low=0.0))

    def values(self, n_steps: int) -> np.ndarray:
        """Return ``value`` repeated ``n_steps`` times."""
        return np.full(n_steps, self.value)

    def pieces(self, n_steps: int) -> Pieces:
        """Return updates ``0 .. n_steps - 1`` as runs of constant values (see :class:`Pieces`)."""
        return Pieces.from_values(np.full(min(n_steps, 1), self.value), n_steps)


@dataclass(frozen=True)
class PiecewiseConstant(Schedule):
    r"""Piecewise-constant learning rate.

    :math:`\alpha_t = \text{values}[k]` for
    :math:`\text{boundaries}[k-1] \le t < \text{boundaries}[k]`.

    Parameters
    ----------
    boundaries : sequence of int
        Strictly increasing steps >= 1 at which the rate changes.
    values : sequence of float
        ``len(boundaries) + 1`` rates > 0.
    """

    boundaries: tuple[int, ...]
    values_: tuple[float, ...] = field(metadata={"name": "values"})
    kind = "piecewise_constant"

    def __init__(self, boundaries: Iterable[int], values: Iterable[float]) -> None:
        owner = "PiecewiseConstant"
        b, v = _pieces(owner, boundaries, "values", values,
                       lambda n, x: check_real(n, x, owner, low=0.0))
        object.__setattr__(self, "boundaries", b)
        object.__setattr__(self, "values_", v)

    def values(self, n_steps: int) -> np.ndarray:
        """Return the rates of updates ``0 .. n_steps - 1``."""
        return _piecewise(self.boundaries, self.values_, n_steps)

    def pieces(self, n_steps: int) -> Pieces:
        """Return updates ``0 .. n_steps - 1`` as runs of constant values (see :class:`Pieces`)."""
        return _piecewise_pieces(self.boundaries, self.values_, n_steps)

    def to_dict(self) -> dict[str, Any]:
        """Return ``{"kind", "boundaries", "values"}``."""
        return {"kind": self.kind, "boundaries": list(self.boundaries),
                "values": list(self.values_)}


@dataclass(frozen=True)
class StepDecay(Schedule):
    r"""Step decay :math:`\alpha_t = \alpha_0 f^{\lfloor t / s \rfloor}`.

    Parameters
    ----------
    initial : float
        :math:`\alpha_0 > 0`.
    factor : float
        :math:`f \in (0, 1]`.
    step_size : int
        :math:`s \ge 1` updates per step.
    """

    initial: float
    factor: float
    step_size: int
    kind = "step_decay"

    def __post_init__(self) -> None:
        o = "StepDecay"
        object.__setattr__(self, "initial", check_real("initial", self.initial, o, low=0.0))
        object.__setattr__(self, "factor", check_real("factor", self.factor, o, low=0.0,
                                                      high=1.0, closed=(False, True)))
        object.__setattr__(self, "step_size", check_int("step_size", self.step_size, o, low=1,
                                                                   high=MAX_STEP))

    def values(self, n_steps: int) -> np.ndarray:
        """Return the rates of updates ``0 .. n_steps - 1``."""
        return self.initial * self.factor ** (np.arange(n_steps) // self.step_size)

    def pieces(self, n_steps: int) -> Pieces:
        """Return updates ``0 .. n_steps - 1`` as runs of constant values (see :class:`Pieces`)."""
        # the same arithmetic as values(), once per step of the decay, up to where the rate
        # stops changing (a factor of 1, or underflow to 0 after about 1075 halvings)
        n_runs = -(-n_steps // self.step_size)
        if self.factor == 1.0:
            n_runs = min(n_runs, 1)
        else:
            zero = (math.log(5e-324) - math.log(self.initial)) / math.log(self.factor) + 4
            n_runs = min(n_runs, max(int(zero), 1))
        check_memory(16.0 * n_runs, "StepDecay", f"{n_runs} runs of its values",
                     "Ask for fewer updates, or a larger step_size.")
        k = np.arange(n_runs)
        return Pieces.concatenate([Pieces(k * self.step_size, self.initial * self.factor ** k,
                                          n_steps)], n_steps)


@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    r"""Exponential decay :math:`\alpha_t = \alpha_0 r^{t / s}`.

    Parameters
    ----------
    initial : float
        :math:`\alpha_0 > 0`.
    rate : float
        :math:`r \in (0, 1]`, the factor per ``decay_steps`` updates.
    decay_steps : int, default 1
        :math:`s \ge 1`.
    """

    initial: float
    rate: float
    decay_steps: int = 1
    kind = "exponential_decay"

    def __post_init__(self) -> None:
        o = "ExponentialDecay"
        object.__setattr__(self, "initial", check_real("initial", self.initial, o, low=0.0))
        object.__setattr__(self, "rate", check_real("rate", self.rate, o, low=0.0, high=1.0,
                                                    closed=(False, True)))
        object.__setattr__(self, "decay_steps",
                           check_int("decay_steps", self.decay_steps, o, low=1,
                                     high=MAX_STEP))

    def values(self, n_steps: int) -> np.ndarray:
        """Return the rates of updates ``0 .. n_steps - 1``."""
        return self.initial * self.rate ** (np.arange(n_steps) / self.decay_steps)


@dataclass(frozen=True)
class LinearDecay(Schedule):
    r"""Linear decay :math:`\alpha_t = \alpha_0 + (\alpha_1 - \alpha_0)\min(t/s, 1)`.

    Parameters
    ----------
    initial : float
        :math:`\alpha_0 > 0`.
    final : float
        :math:`\alpha_1 \ge 0`, held after ``decay_steps``.
    decay_steps : int
        :math:`s \ge 1`.
    """

    initial: float
    final: float
    decay_steps: int
    kind = "linear_decay"

    def __post_init__(self) -> None:
        o = "LinearDecay"
        object.__setattr__(self, "initial", check_real("initial", self.initial, o, low=0.0))
        object.__setattr__(self, "final", check_real("final", self.final, o, low=0.0,
                                                     closed=(True, False)))
        object.__setattr__(self, "decay_steps",
                           check_int("decay_steps", self.decay_steps, o, low=1,
                                     high=MAX_STEP))

    def values(self, n_steps: int) -> np.ndarray:
        """Return the rates of updates ``0 .. n_steps - 1``."""
        frac = np.minimum(np.arange(n_steps) / self.decay_steps, 1.0)
        return self.initial + (self.final - self.initial) * frac

    def pieces(self, n_steps: int) -> Pieces:
        """Return updates ``0 .. n_steps - 1`` as runs of constant values (see :class:`Pieces`)."""
        # constant from decay_steps on: per update up to there, then one run
        m = min(n_steps, self.decay_steps + 1)
        _check_per_update(m, type(self).__name__)
        return Pieces.from_values(checked_values(self, m, "schedule", type(self).__name__),
                                  n_steps)


@dataclass(frozen=True)
class CosineDecay(Schedule):
    r"""Cosine decay.

    :math:`\alpha_t = \alpha_1 + (\alpha_0 - \alpha_1)\,(1 + \cos(\pi\min(t/s, 1)))/2`.

    Parameters
    ----------
    initial : float
        :math:`\alpha_0 > 0`.
    decay_steps : int
        :math:`s \ge 1`.
    final : float, default 0.0
        :math:`\alpha_1 \ge 0` (a rate of 0 skips the update).
    """

    initial: float
    decay_steps: int
    final: float = 0.0
    kind = "cosine_decay"

    def __post_init__(self) -> None:
        o = "CosineDecay"
        object.__setattr__(self, "initial", check_real("initial", self.initial, o, low=0.0))
        object.__setattr__(self, "final", check_real("final", self.final, o, low=0.0,
                                                     closed=(True, False)))
        object.__setattr__(self, "decay_steps",
                           check_int("decay_steps", self.decay_steps, o, low=1,
                                     high=MAX_STEP))

    def values(self, n_steps: int) -> np.ndarray:
        """Return the rates of updates ``0 .. n_steps - 1``."""
        frac = np.minimum(np.arange(n_steps) / self.decay_steps, 1.0)
        return self.final + (self.initial - self.final) * 0.5 * (1.0 + np.cos(math.pi * frac))

    def pieces(self, n_steps: int) -> Pieces:
        """Return updates ``0 .. n_steps - 1`` as runs of constant values (see :class:`Pieces`)."""
        # constant from decay_steps on: per update up to there, then one run
        m = min(n_steps, self.decay_steps + 1)
        _check_per_update(m, type(self).__name__)
        return Pieces.from_values(checked_values(self, m, "schedule", type(self).__name__),
                                  n_steps)


@dataclass(frozen=True)
class Warmup(Schedule):
    """Linear warmup from ``start`` to ``schedule(0)`` over ``warmup_steps``, then ``schedule``.

    alpha_t = start + (schedule(0) - start) * (t + 1) / (warmup_steps + 1) for t < warmup_steps,
    alpha_t = schedule(t - warmup_steps) afterwards (the wrapped schedule starts after warmup).

    Parameters
    ----------
    schedule : Schedule, float or dict
        The schedule after warmup (coerced by :func:`as_schedule`).
    warmup_steps : int
        Number of warmup updates, >= 1.
    start : float, default 0.0
        Rate the ramp starts from, >= 0.
    """

    schedule: Schedule
    warmup_steps: int
    start: float = 0.0
    kind = "warmup"

    def __post_init__(self) -> None:
        o = "Warmup"
        object.__setattr__(self, "schedule", as_schedule(self.schedule, "schedule", o))
        object.__setattr__(self, "warmup_steps",
                           check_int("warmup_steps", self.warmup_steps, o, low=1,
                                     high=MAX_STEP))
        object.__setattr__(self, "start", check_real("start", self.start, o, low=0.0,
                                                     closed=(True, False)))

    def values(self, n_steps: int) -> np.ndarray:
        """Return the rates of updates ``0 .. n_steps - 1``."""
        w = self.warmup_steps
        out = np.empty(n_steps)
        peak = checked_values(self.schedule, 1, "schedule", "Warmup")[0]
        k = min(w, n_steps)
        out[:k] = self.start + (peak - self.start) * (np.arange(k) + 1) / (w + 1)
        if n_steps > w:
            out[w:] = checked_values(self.schedule, n_steps - w, "schedule", "Warmup")
        return out

    def pieces(self, n_steps: int) -> Pieces:
        """Return updates ``0 .. n_steps - 1`` as runs of constant values (see :class:`Pieces`)."""
        w = self.warmup_steps
        k = min(w, n_steps)
        _check_per_update(k, "Warmup")
        ramp = Pieces.from_values(checked_values(self, k, "schedule", "Warmup"), k)
        if n_steps <= w:
            return Pieces(ramp.starts, ramp.values, n_steps)
        after = checked_pieces(self.schedule, n_steps - w, "schedule", "Warmup")
        return Pieces.concatenate([ramp, after.shifted(w, n_steps)], n_steps)


def _check_per_update(m: int, owner: str) -> None:
    """Refuse, before allocating, ``m`` updates of a schedule that changes every update.

    Each costs about 40 bytes: the values, their run starts and the run-length encoding's
    temporaries.
    """
    check_memory(40.0 * m, owner, f"the runs of {m} updates that each change the value",
                 "Ask for fewer updates, or use a schedule that changes less often.")


# ---------------------------------------------------------------------- batch sizes
@dataclass(frozen=True)
class ConstantBatch(BatchSchedule):
    r"""Constant batch size :math:`B_t = \text{value}`.

    Parameters
    ----------
    value : int
        The batch size, in [1, 2^53].
    """

    value: int
    kind = "constant"
    is_constant = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", check_batch_size("batch_size", self.value,
                                                           "ConstantBatch"))

    def values(self, n_steps: int) -> np.ndarray:
        """Return ``value`` repeated ``n_steps`` times (as float64)."""
        return np.full(n_steps, float(self.value))

    def pieces(self, n_steps: int) -> Pieces:
        """Return updates ``0 .. n_steps - 1`` as runs of constant values (see :class:`Pieces`)."""
        return Pieces.from_values(np.full(min(n_steps, 1), float(self.value)), n_steps)


@dataclass(frozen=True)
class PiecewiseConstantBatch(BatchSchedule):
    """Piecewise-constant batch size: B_t = sizes[k] for boundaries[k-1] <= t < boundaries[k].

    Parameters
    ----------
    boundaries : sequence of int
        Strictly increasing steps >= 1 at which the batch size changes.
    sizes : sequence of int
        ``len(boundaries) + 1`` batch sizes in [1, 2^53].
    """

    boundaries: tuple[int, ...]
    sizes: tuple[int, ...]
    kind = "piecewise_constant"

    def __init__(self, boundaries: Iterable[int], sizes: Iterable[int]) -> None:
        owner = "PiecewiseConstantBatch"
        b, s = _pieces(owner, boundaries, "sizes", sizes,
                       lambda n, v: check_batch_size(n, v, owner))
        object.__setattr__(self, "boundaries", b)
        object.__setattr__(self, "sizes", s)

    def values(self, n_steps: int) -> np.ndarray:
        """Return the batch sizes of updates ``0 .. n_steps - 1`` (as float64)."""
        return _piecewise(self.boundaries, self.sizes, n_steps)

    def pieces(self, n_steps: int) -> Pieces:
        """Return updates ``0 .. n_steps - 1`` as runs of constant values (see :class:`Pieces`)."""
        return _piecewise_pieces(self.boundaries, self.sizes, n_steps)


# ---------------------------------------------------------------------- coercion
def as_schedule(value: Schedule | float | dict[str, Any], name: str = "learning_rate",
                owner: str = "optimizer") -> Schedule:
    """Coerce a learning rate to a schedule.

    Parameters
    ----------
    value : Schedule, float or dict
        A float becomes :class:`Constant`, a dict goes through :func:`schedule_from_dict`,
        a :class:`Schedule` passes through.
    name, owner : str
        The parameter and its owner, named in error messages.

    Returns
    -------
    Schedule

    Raises
    ------
    ParameterError
        If ``value`` is not a finite float > 0, a valid dict or a schedule.
    """
    if isinstance(value, Schedule):
        return value
    if isinstance(value, dict):
        return schedule_from_dict(value)
    v = check_real(name, value, owner, low=0.0)
    return Constant(v)


def as_batch_schedule(value: BatchSchedule | int | dict[str, Any], name: str = "batch_size",
                      owner: str = "simulate") -> BatchSchedule:
    """Coerce a batch size to a batch schedule.

    Parameters
    ----------
    value : BatchSchedule, int or dict
        An int becomes :class:`ConstantBatch`, a dict goes through
        :func:`schedule_from_dict` (``batch=True``), a :class:`BatchSchedule` passes through.
    name, owner : str
        The parameter and its owner, named in error messages.

    Returns
    -------
    BatchSchedule

    Raises
    ------
    ParameterError
        If ``value`` is not an integer in [1, 2^53], a valid dict or a batch schedule.
    """
    if isinstance(value, BatchSchedule):
        return value
    if isinstance(value, dict):
        return schedule_from_dict(value, batch=True)
    return ConstantBatch(check_batch_size(name, value, owner))


_LR_KINDS = {c.kind: c for c in (Constant, PiecewiseConstant, StepDecay, ExponentialDecay,
                                 LinearDecay, CosineDecay, Warmup)}
_BATCH_KINDS = {c.kind: c for c in (ConstantBatch, PiecewiseConstantBatch)}


@overload
def schedule_from_dict(d: dict[str, Any], batch: Literal[False] = ...) -> Schedule: ...
@overload
def schedule_from_dict(d: dict[str, Any], batch: Literal[True]) -> BatchSchedule: ...
@overload
def schedule_from_dict(d: dict[str, Any], batch: bool) -> Schedule | BatchSchedule: ...
def schedule_from_dict(d: dict[str, Any], batch: bool = False) -> Schedule | BatchSchedule:
    """Build a schedule from ``{"kind": ..., **params}`` (inverse of ``to_dict``).

    Parameters
    ----------
    d : dict
        The description; a :class:`Warmup`'s inner schedule may be a dict too.
    batch : bool, default False
        Build a :class:`BatchSchedule` instead of a learning-rate schedule.

    Returns
    -------
    Schedule or BatchSchedule

    Raises
    ------
    ParameterError
        If ``d`` is not a dict, its kind is unknown or its parameters are bad.
    """
    kinds = _BATCH_KINDS if batch else _LR_KINDS
    if not isinstance(d, dict):
        raise ParameterError(f"schedule_from_dict needs a dict. Got {type(d).__name__} instead.")
    d = dict(d)
    kind = d.pop("kind", None)
    if not isinstance(kind, str) or kind not in kinds:
        allowed = ", ".join(repr(k) for k in kinds)
        raise ParameterError(f"The 'kind' of a {'batch' if batch else 'learning-rate'} schedule "
                             f"must be one of {allowed}. Got {kind!r} instead.")
    cls = kinds[kind]
    if cls is Warmup and isinstance(d.get("schedule"), dict):
        d["schedule"] = schedule_from_dict(d["schedule"])
    if cls is PiecewiseConstant and "values_" in d:
        d["values"] = d.pop("values_")
    try:
        return cls(**d)
    except TypeError as err:
        raise ParameterError(f"Bad parameters for schedule {kind!r}: {err}") from None
