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
from dataclasses import dataclass, field

import numpy as np

from nqm_mc.spec._checks import (
    MAX_BATCH,
    MAX_STEP,
    ParameterError,
    _short,
    check_batch_size,
    check_int,
    check_memory,
    check_real,
)

__all__ = [
    "Schedule", "Constant", "PiecewiseConstant", "StepDecay", "ExponentialDecay",
    "LinearDecay", "CosineDecay", "Warmup", "BatchSchedule", "ConstantBatch",
    "PiecewiseConstantBatch", "as_schedule", "as_batch_schedule", "schedule_from_dict",
    "checked_values",
]


class Schedule:
    """Base class of learning-rate schedules."""

    kind = "schedule"
    is_constant = False

    def values(self, n_steps):  # pragma: no cover - abstract
        raise NotImplementedError

    def __call__(self, t):
        owner = type(self).__name__
        t = check_int("t", t, owner, low=0, high=MAX_STEP)
        check_memory(8.0 * (t + 1), owner, f"the first {t + 1} values",
                     "Evaluate the schedule at smaller steps.")
        return float(checked_values(self, t + 1, "schedule", owner)[t])

    def to_dict(self):
        d = {"kind": self.kind}
        for k, v in self.__dict__.items():
            d[k] = v.to_dict() if isinstance(v, Schedule) else (list(v) if isinstance(v, tuple)
                                                                   else v)
        return d


def _tuple(name, values, owner, checker):
    try:
        seq = tuple(values)
    except TypeError:
        raise ParameterError(
            f"The {name!r} parameter of {owner} must be a sequence. Got {values!r} instead."
        ) from None
    return tuple(checker(f"{name}[{i}]", v) for i, v in enumerate(seq))


@dataclass(frozen=True)
class Constant(Schedule):
    """alpha_t = value."""

    value: float
    kind = "constant"
    is_constant = True

    def __post_init__(self):
        object.__setattr__(self, "value", check_real("value", self.value, "Constant", low=0.0))

    def values(self, n_steps):
        return np.full(n_steps, self.value)


@dataclass(frozen=True)
class PiecewiseConstant(Schedule):
    """alpha_t = values[k] for boundaries[k-1] <= t < boundaries[k] (boundaries increasing)."""

    boundaries: tuple
    values_: tuple = field(metadata={"name": "values"})
    kind = "piecewise_constant"

    def __init__(self, boundaries, values):
        owner = "PiecewiseConstant"
        b = _tuple("boundaries", boundaries, owner,
                   lambda n, v: check_int(n, v, owner, low=1, high=MAX_STEP))
        v = _tuple("values", values, owner, lambda n, x: check_real(n, x, owner, low=0.0))
        if len(v) != len(b) + 1:
            raise ParameterError(
                f"The 'values' parameter of {owner} must have len(boundaries) + 1 = "
                f"{len(b) + 1} entries. Got {len(v)} instead.")
        if any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
            raise ParameterError(
                f"The 'boundaries' parameter of {owner} must be strictly increasing. "
                f"Got {list(b)!r} instead.")
        object.__setattr__(self, "boundaries", b)
        object.__setattr__(self, "values_", v)

    def values(self, n_steps):
        idx = np.searchsorted(np.asarray(self.boundaries, dtype=np.int64),
                              np.arange(n_steps), side="right")
        return np.asarray(self.values_, dtype=np.float64)[idx]

    def to_dict(self):
        return {"kind": self.kind, "boundaries": list(self.boundaries),
                "values": list(self.values_)}


@dataclass(frozen=True)
class StepDecay(Schedule):
    """alpha_t = initial * factor ** floor(t / step_size)."""

    initial: float
    factor: float
    step_size: int
    kind = "step_decay"

    def __post_init__(self):
        o = "StepDecay"
        object.__setattr__(self, "initial", check_real("initial", self.initial, o, low=0.0))
        object.__setattr__(self, "factor", check_real("factor", self.factor, o, low=0.0,
                                                      high=1.0, closed=(False, True)))
        object.__setattr__(self, "step_size", check_int("step_size", self.step_size, o, low=1,
                                                                   high=MAX_STEP))

    def values(self, n_steps):
        return self.initial * self.factor ** (np.arange(n_steps) // self.step_size)


@dataclass(frozen=True)
class ExponentialDecay(Schedule):
    """alpha_t = initial * rate ** (t / decay_steps)."""

    initial: float
    rate: float
    decay_steps: int = 1
    kind = "exponential_decay"

    def __post_init__(self):
        o = "ExponentialDecay"
        object.__setattr__(self, "initial", check_real("initial", self.initial, o, low=0.0))
        object.__setattr__(self, "rate", check_real("rate", self.rate, o, low=0.0, high=1.0,
                                                    closed=(False, True)))
        object.__setattr__(self, "decay_steps",
                           check_int("decay_steps", self.decay_steps, o, low=1,
                                     high=MAX_STEP))

    def values(self, n_steps):
        return self.initial * self.rate ** (np.arange(n_steps) / self.decay_steps)


@dataclass(frozen=True)
class LinearDecay(Schedule):
    """alpha_t = initial + (final - initial) * min(t / decay_steps, 1)."""

    initial: float
    final: float
    decay_steps: int
    kind = "linear_decay"

    def __post_init__(self):
        o = "LinearDecay"
        object.__setattr__(self, "initial", check_real("initial", self.initial, o, low=0.0))
        object.__setattr__(self, "final", check_real("final", self.final, o, low=0.0,
                                                     closed=(True, False)))
        object.__setattr__(self, "decay_steps",
                           check_int("decay_steps", self.decay_steps, o, low=1,
                                     high=MAX_STEP))

    def values(self, n_steps):
        frac = np.minimum(np.arange(n_steps) / self.decay_steps, 1.0)
        return self.initial + (self.final - self.initial) * frac


@dataclass(frozen=True)
class CosineDecay(Schedule):
    """alpha_t = final + (initial - final) * (1 + cos(pi * min(t / decay_steps, 1))) / 2."""

    initial: float
    decay_steps: int
    final: float = 0.0
    kind = "cosine_decay"

    def __post_init__(self):
        o = "CosineDecay"
        object.__setattr__(self, "initial", check_real("initial", self.initial, o, low=0.0))
        object.__setattr__(self, "final", check_real("final", self.final, o, low=0.0,
                                                     closed=(True, False)))
        object.__setattr__(self, "decay_steps",
                           check_int("decay_steps", self.decay_steps, o, low=1,
                                     high=MAX_STEP))

    def values(self, n_steps):
        frac = np.minimum(np.arange(n_steps) / self.decay_steps, 1.0)
        return self.final + (self.initial - self.final) * 0.5 * (1.0 + np.cos(math.pi * frac))


@dataclass(frozen=True)
class Warmup(Schedule):
    """Linear warmup from ``start`` to ``schedule(0)`` over ``warmup_steps``, then ``schedule``.

    alpha_t = start + (schedule(0) - start) * (t + 1) / (warmup_steps + 1) for t < warmup_steps,
    alpha_t = schedule(t - warmup_steps) afterwards (the wrapped schedule starts after warmup).
    """

    schedule: Schedule
    warmup_steps: int
    start: float = 0.0
    kind = "warmup"

    def __post_init__(self):
        o = "Warmup"
        object.__setattr__(self, "schedule", as_schedule(self.schedule, "schedule", o))
        object.__setattr__(self, "warmup_steps",
                           check_int("warmup_steps", self.warmup_steps, o, low=1,
                                     high=MAX_STEP))
        object.__setattr__(self, "start", check_real("start", self.start, o, low=0.0,
                                                     closed=(True, False)))

    def values(self, n_steps):
        w = self.warmup_steps
        out = np.empty(n_steps)
        peak = checked_values(self.schedule, 1, "schedule", "Warmup")[0]
        k = min(w, n_steps)
        out[:k] = self.start + (peak - self.start) * (np.arange(k) + 1) / (w + 1)
        if n_steps > w:
            out[w:] = checked_values(self.schedule, n_steps - w, "schedule", "Warmup")
        return out


# ---------------------------------------------------------------------- batch sizes
class BatchSchedule:
    """Base class of batch-size schedules (values are positive integers)."""

    kind = "batch"
    is_constant = False

    def values(self, n_steps):  # pragma: no cover - abstract
        raise NotImplementedError

    def to_dict(self):
        return {"kind": self.kind, **{k: (list(v) if isinstance(v, tuple) else v)
                                      for k, v in self.__dict__.items()}}


@dataclass(frozen=True)
class ConstantBatch(BatchSchedule):
    """B_t = value."""

    value: int
    kind = "constant"
    is_constant = True

    def __post_init__(self):
        object.__setattr__(self, "value", check_batch_size("batch_size", self.value,
                                                           "ConstantBatch"))

    def values(self, n_steps):
        return np.full(n_steps, float(self.value))


@dataclass(frozen=True)
class PiecewiseConstantBatch(BatchSchedule):
    """B_t = values[k] for boundaries[k-1] <= t < boundaries[k]."""

    boundaries: tuple
    sizes: tuple
    kind = "piecewise_constant"

    def __init__(self, boundaries, sizes):
        owner = "PiecewiseConstantBatch"
        b = _tuple("boundaries", boundaries, owner,
                   lambda n, v: check_int(n, v, owner, low=1, high=MAX_STEP))
        s = _tuple("sizes", sizes, owner, lambda n, v: check_batch_size(n, v, owner))
        if len(s) != len(b) + 1:
            raise ParameterError(
                f"The 'sizes' parameter of {owner} must have len(boundaries) + 1 = "
                f"{len(b) + 1} entries. Got {len(s)} instead.")
        if any(b[i] >= b[i + 1] for i in range(len(b) - 1)):
            raise ParameterError(
                f"The 'boundaries' parameter of {owner} must be strictly increasing. "
                f"Got {list(b)!r} instead.")
        object.__setattr__(self, "boundaries", b)
        object.__setattr__(self, "sizes", s)

    def values(self, n_steps):
        idx = np.searchsorted(np.asarray(self.boundaries, dtype=np.int64),
                              np.arange(n_steps), side="right")
        return np.asarray(self.sizes, dtype=np.float64)[idx]


# ---------------------------------------------------------------------- coercion
def as_schedule(value, name="learning_rate", owner="optimizer"):
    """A float becomes :class:`Constant`; a :class:`Schedule` passes through."""
    if isinstance(value, Schedule):
        return value
    if isinstance(value, dict):
        return schedule_from_dict(value)
    v = check_real(name, value, owner, low=0.0)
    return Constant(v)


def as_batch_schedule(value, name="batch_size", owner="simulate"):
    """An int becomes :class:`ConstantBatch`; a :class:`BatchSchedule` passes through."""
    if isinstance(value, BatchSchedule):
        return value
    if isinstance(value, dict):
        return schedule_from_dict(value, batch=True)
    return ConstantBatch(check_batch_size(name, value, owner))


def checked_values(schedule, n_steps, name="learning_rate", owner="optimizer"):
    """``schedule.values(n_steps)`` as a contiguous float64 array, checked.

    The one place the engines call ``values``: the result must have shape exactly
    ``(n_steps,)`` and finite entries, learning rates ``>= 0``, batch sizes integers in
    ``[1, 2^53]``. ``name`` and ``owner`` say where the schedule came from (e.g. the
    'batch_size' parameter of simulate). Raises ParameterError naming the schedule and the
    first bad index and value.
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


_LR_KINDS = {c.kind: c for c in (Constant, PiecewiseConstant, StepDecay, ExponentialDecay,
                                 LinearDecay, CosineDecay, Warmup)}
_BATCH_KINDS = {c.kind: c for c in (ConstantBatch, PiecewiseConstantBatch)}


def schedule_from_dict(d, batch=False):
    """Build a schedule from ``{"kind": ..., **params}`` (inverse of ``to_dict``)."""
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
