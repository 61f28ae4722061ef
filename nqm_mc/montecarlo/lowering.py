"""Specifications lowered to what the step kernels take: named, typed structures.

The structures are built in one place.

:func:`lower` turns (model, optimizer, batch size, noise law, seed, recording) into a
:class:`KernelInput`; the kernels read every value by name (``rule.beta``,
``schedule.learning_rate``, ``stream.seed_lo``), never by position. The structures are
``typing.NamedTuple`` classes, which numba compiles as tuples with named fields, so passing
them costs nothing.

Schedules are lowered as runs of constant hyperparameters (:class:`StepSchedule`: the first
update of each run and its learning rate and batch size), never as per-update arrays, so that
a constant schedule over 10^9 updates costs nothing; the kernels walk the runs as they step.

Dtypes: the state, the per-direction gradient coefficients and the runs' learning rates
and inverse square-root batch sizes are in the state's dtype (float32 or float64); the
curvatures used for the losses, the adaptive rules' beta2 and eps, the clipping norm and
the Student-t degrees of freedom stay float64.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, cast

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.montecarlo._rng import split_seed
from nqm_mc.spec._checks import MAX_STEP, check_choice, check_int, check_memory, check_steps
from nqm_mc.spec.codes import NOISE_FINITE
from nqm_mc.spec.schedules import BatchSchedule, as_batch_schedule, checked_pieces

if TYPE_CHECKING:
    from nqm_mc._typing import Dtype, NoiseSpec
    from nqm_mc.spec.model import NQM
    from nqm_mc.spec.noise import FiniteData
    from nqm_mc.spec.optimizers import Optimizer

__all__ = ["record_steps", "Rule", "Directions", "StepSchedule", "NoiseLaw", "Recording", "Stream",
           "KernelInput", "Statistics", "lower", "new_statistics", "HIST_BINS_PER_DECADE",
           "merged_runs", "hyper_runs"]

HIST_DECADES_BELOW, HIST_DECADES_ABOVE, HIST_BINS_PER_DECADE = 10, 4, 100


class Rule(NamedTuple):
    """The optimizer's update rule."""

    kind: int  #: optimizer code (:mod:`nqm_mc.spec.codes`)
    has_ema: bool  #: iterate averaging on
    general: bool  #: one full pass per step (adaptive rules, clipping)
    beta: np.floating  #: momentum, Adam's beta1 or RMSProp's decay (state dtype)
    gamma: np.floating  #: EMA decay (state dtype; 0 without EMA)
    beta2: float  #: Adam's beta2
    eps: float  #: the adaptive rules' epsilon
    clip: float  #: gradient clipping norm (0: off)


class Directions(NamedTuple):
    """Per direction (length d, the model expanded by its multiplicities)."""

    h: np.ndarray  #: curvatures, float64 (for the losses)
    coef_a: np.ndarray  #: h^(1-p), the gradient's coefficient of theta (state dtype)
    coef_b: np.ndarray  #: h^-p sqrt(c), the coefficient of z / sqrt(B) (state dtype)
    mu0: np.ndarray  #: initial mean (state dtype)
    sd0: np.ndarray  #: initial standard deviation (state dtype)
    band: np.ndarray  #: curvature band of each direction, int64
    single: bool  #: state in float32


class StepSchedule(NamedTuple):
    """The hyperparameters of updates t = 0 .. T - 1 as K runs of constant values.

    Run k covers updates ``start[k] <= t < start[k + 1]`` (the last run up to T); neighbouring
    runs differ in the learning rate or the batch size. A constant schedule is one run, a
    cosine decay one run per update of its decay.
    """

    start: np.ndarray  #: (K,) first update of each run, int64: start[0] = 0, increasing
    learning_rate: np.ndarray  #: (K,) state dtype
    inv_sqrt_batch: np.ndarray  #: (K,) 1 / sqrt(B), state dtype
    batch: np.ndarray  #: (K,) B, int64 (minibatch draws of the finite-data law)


class NoiseLaw(NamedTuple):
    """The law of the gradient noise."""

    code: int  #: noise code (:mod:`nqm_mc.spec.codes`)
    nu: float  #: Student-t degrees of freedom (0 otherwise)
    data: np.ndarray  #: finite data: the per-example rows, n x d (empty otherwise)


class Recording(NamedTuple):
    """What is recorded."""

    steps: np.ndarray  #: recorded steps, increasing, int64; the last is T
    target: float  #: loss target of the hitting times (-inf: none)
    n_bands: int  #: number of curvature bands
    hist_lo: float  #: log10 of the loss histogram's lower edge
    hist_inv_width: float  #: histogram bins per decade


class Stream(NamedTuple):
    """The seed's two 32-bit halves (Philox key and counter word)."""

    seed_lo: int
    seed_hi: int


class KernelInput(NamedTuple):
    """Everything the step kernels need besides the range of trajectories."""

    rule: Rule
    directions: Directions
    schedule: StepSchedule
    noise: NoiseLaw
    recording: Recording
    stream: Stream


class Statistics(NamedTuple):
    """A kernel call's outputs: per block b and record r unless said otherwise."""

    count: np.ndarray  # type: ignore[assignment]  #: (nb, R) finite losses (shadows tuple.count)
    mean: np.ndarray  #: (nb, R) their mean
    m2: np.ndarray  #: (nb, R) sum of squared deviations
    theta_mean: np.ndarray  #: (nb, R) mean loss at theta (differs from mean with EMA)
    band: np.ndarray  #: (nb, R, n_bands) sums of the readout's square per band
    hist: np.ndarray  #: (nb, R, n_hist) histogram of log10(loss), int64
    diverged: np.ndarray  #: (nb, R) diverged trajectories, int64
    hits: np.ndarray  #: (trajectories,) hitting times, int64
    paths: np.ndarray  #: (keep_paths, R) recorded losses of the first trajectories
    records: np.ndarray  #: (trajectories,) records reached (R when finished), int64


def n_hist_bins() -> int:
    """Return the number of bins of the loss histogram (log10 scale)."""
    return (HIST_DECADES_BELOW + HIST_DECADES_ABOVE) * HIST_BINS_PER_DECADE


def record_steps(n_steps: int, record: Literal["all", "log"] | int | ArrayLike = "all",
                 n_records: int = 100) -> np.ndarray:
    """Return the steps at which statistics are recorded.

    Parameters
    ----------
    n_steps : int
        Number of updates.
    record : "all", "log", int or array_like of int, default "all"
        "all" every step, "log" about ``n_records`` log-spaced steps, an int k every k steps,
        or explicit steps (sorted, repeated steps kept once, each in [0, n_steps]). The
        strings and the int always include 0 and ``n_steps``.
    n_records : int, default 100
        Number of log-spaced steps for ``record="log"``.

    Returns
    -------
    ndarray of int64
        Increasing steps.

    Raises
    ------
    ParameterError
        If ``record`` is invalid or the records would not fit in memory.
    """
    if isinstance(record, str):
        check_choice("record", record, "simulate", ("all", "log"))
        if record == "all":
            check_memory(_RECORD_BYTES * (n_steps + 1), "simulate",
                         f"{n_steps + 1} recorded steps (record='all')", _RECORD_HINT)
            steps = np.arange(n_steps + 1)
        else:
            steps = np.unique(np.concatenate([[0], np.geomspace(1, max(n_steps, 1), n_records)
                                              .round().astype(np.int64), [n_steps]]))
            steps = steps[steps <= n_steps]  # n_steps = 0: step 0 only
    elif isinstance(record, (int, np.integer)):
        k = check_int("record", record, "simulate", low=1, high=MAX_STEP)
        check_memory(_RECORD_BYTES * (n_steps // k + 2), "simulate",
                     f"{n_steps // k + 2} recorded steps (record={k})", _RECORD_HINT)
        steps = np.unique(np.append(np.arange(0, n_steps + 1, k), n_steps))
    else:
        steps = check_steps("record", record, "simulate", high=n_steps)
    return np.ascontiguousarray(steps, dtype=np.int64)


# a recorded step costs at least its histogram row of the accumulator (int64 bins)
_RECORD_BYTES = 8 * n_hist_bins()
_RECORD_HINT = ("Record a sparse set of steps (record='log', an int k for every k steps, or an "
                "array of steps).")


def merged_runs(columns: Sequence[tuple[np.ndarray, np.ndarray]]
                ) -> tuple[np.ndarray, list[np.ndarray]]:
    """Merge the runs of constant values of several schedules over the same updates.

    Parameters
    ----------
    columns : sequence of (starts, values)
        Each schedule's runs: increasing int64 first updates (the first 0) and one value each
        (a :class:`~nqm_mc.spec.schedules.Pieces`' ``starts`` and ``values``, or values
        derived from them, such as ``1 / sqrt(B)``).

    Returns
    -------
    starts : ndarray of int64
        The first update of each merged run: where any column's value changes.
    values : list of ndarray
        Each column's value on each merged run.
    """
    starts = columns[0][0]
    for st, _ in columns[1:]:
        starts = np.union1d(starts, st)
    starts = np.asarray(starts, np.int64)
    vals = [np.asarray(v)[np.searchsorted(st, starts, side="right") - 1] for st, v in columns]
    keep = np.ones(starts.size, dtype=bool)
    if starts.size > 1:
        keep[1:] = np.any([v[1:] != v[:-1] for v in vals], axis=0)
    return (np.ascontiguousarray(starts[keep]),
            [np.ascontiguousarray(v[keep]) for v in vals])


def hyper_runs(optimizer: Optimizer, batch_size: Any, n_steps: int,
               owner: str = "simulate") -> tuple[np.ndarray, list[np.ndarray]]:
    """Return the learning rate and ``1 / sqrt(B)`` of updates ``0 .. n_steps - 1`` as runs.

    Parameters
    ----------
    optimizer : Optimizer
        Its ``learning_rate`` schedule (checked by
        :func:`~nqm_mc.spec.schedules.checked_pieces`).
    batch_size : int or BatchSchedule
        The batch size or its schedule (checked likewise).
    n_steps : int
        Number of updates, ``>= 1``.
    owner : str
        Named in error messages.

    Returns
    -------
    starts : ndarray of int64
        The first update of each run (0 first).
    values : [learning_rate, inv_sqrt_batch]
        float64 per run; neighbouring runs differ in one of them.

    Raises
    ------
    ParameterError
        If a schedule returns invalid runs or values.
    """
    rates = checked_pieces(optimizer.learning_rate, n_steps, "learning_rate", owner)
    sizes = checked_pieces(as_batch_schedule(batch_size, "batch_size", owner), n_steps,
                           "batch_size", owner)
    return merged_runs([(rates.starts, rates.values),
                        (sizes.starts, 1.0 / np.sqrt(sizes.values))])


def new_statistics(n_blocks: int, n_records: int, n_bands: int, n_trajectories: int,
                   keep_paths: int) -> Statistics:
    """Allocate zeroed outputs for a kernel call over ``n_blocks`` groups.

    Parameters
    ----------
    n_blocks : int
        Number of groups of trajectories (statistics are kept per group, merged later).
    n_records : int
        Number of recorded steps R.
    n_bands : int
        Number of curvature bands.
    n_trajectories : int
        Number of trajectories the call runs (hitting times, records reached).
    keep_paths : int
        Number of trajectories whose recorded losses are kept.

    Returns
    -------
    Statistics
        Zeros, except hitting times of -1 (never hit).
    """
    nb, R = n_blocks, n_records
    return Statistics(
        count=np.zeros((nb, R)), mean=np.zeros((nb, R)), m2=np.zeros((nb, R)),
        theta_mean=np.zeros((nb, R)), band=np.zeros((nb, R, n_bands)),
        hist=np.zeros((nb, R, n_hist_bins()), np.int64), diverged=np.zeros((nb, R), np.int64),
        hits=np.full(n_trajectories, -1, np.int64), paths=np.zeros((keep_paths, R)),
        records=np.zeros(n_trajectories, np.int64))


def lower(model: NQM, optimizer: Optimizer, batch_size: int | BatchSchedule, n_steps: int,
          dtype: Dtype, noise: NoiseSpec,
          seed: int, steps: ArrayLike, target: float | None,
          n_bands: int) -> tuple[KernelInput, np.ndarray]:
    r"""Build the kernels' input for checked specifications, plus the band edges.

    Parameters
    ----------
    model, optimizer, batch_size, n_steps, dtype, noise, seed, target, n_bands
        As in :func:`nqm_mc.simulate`, already validated (the schedules' runs are checked
        here, by :func:`~nqm_mc.spec.schedules.checked_pieces`).
    steps : array_like of int
        The recorded steps, increasing; the last is ``n_steps``.

    Returns
    -------
    KernelInput
        The kernels' input.
    band_edges : ndarray
        Curvature band edges, for the result.

    Raises
    ------
    ParameterError
        If a schedule returns invalid values.

    Notes
    -----
    The preconditioned gradient :math:`h^{-p}(h\theta + \sqrt{c/B_t}\,z)` is evaluated as
    :math:`a\theta + b\,B_t^{-1/2} z` with :math:`a = h^{1-p}` and :math:`b = h^{-p}\sqrt c`
    precomputed here in the state's dtype (``docs/theory.md``, section 2.1).
    """
    ft = np.float32 if dtype == "float32" else np.float64
    T = max(n_steps, 1)
    h, c, mu0, v0 = model.expand()
    p = optimizer.preconditioning
    hp = h ** (-p)
    labels, edges = model.curvature_groups(n_bands)
    directions = Directions(
        h=np.ascontiguousarray(h, dtype=np.float64),
        coef_a=np.ascontiguousarray(hp * h, dtype=ft),
        coef_b=np.ascontiguousarray(hp * np.sqrt(c), dtype=ft),
        mu0=np.ascontiguousarray(mu0, dtype=ft),
        sd0=np.ascontiguousarray(np.sqrt(v0), dtype=ft),
        band=np.repeat(labels, model.multiplicities).astype(np.int64),
        single=dtype == "float32")
    batch = as_batch_schedule(batch_size, "batch_size", "simulate")
    sizes = checked_pieces(batch, T, "batch_size", "simulate")  # whole numbers in [1, 2^53]
    rates = checked_pieces(optimizer.learning_rate, T, "learning_rate", "simulate")
    start, (lr_r, b_r) = merged_runs([(rates.starts, rates.values),
                                      (sizes.starts, sizes.values)])
    schedule = StepSchedule(
        start=start, learning_rate=np.ascontiguousarray(lr_r, ft),
        inv_sqrt_batch=np.ascontiguousarray(1.0 / np.sqrt(b_r), ft),
        batch=b_r.astype(np.int64))
    beta, beta2, eps = optimizer.kernel_params
    rule = Rule(kind=int(optimizer.kind_code), has_ema=optimizer.ema is not None,
                general=not optimizer.is_linear, beta=ft(beta),
                gamma=ft(optimizer.ema if optimizer.ema is not None else 0.0),
                beta2=float(beta2), eps=float(eps), clip=float(optimizer.clip_norm or 0.0))
    data = (cast("FiniteData", noise).examples(directions.h.size, ft) if noise.code == NOISE_FINITE
            else np.zeros((0, 0), ft))
    law = NoiseLaw(code=int(noise.code), nu=float(getattr(noise, "nu", 0.0)), data=data)
    L0 = min(max(model.initial_loss(), 1e-300), 1e300)  # a finite histogram range
    recording = Recording(steps=np.ascontiguousarray(steps, np.int64),
                          target=-np.inf if target is None else float(target),
                          n_bands=int(n_bands),
                          hist_lo=float(np.log10(L0) - HIST_DECADES_BELOW),
                          hist_inv_width=float(HIST_BINS_PER_DECADE))
    lo, hi = split_seed(seed)
    return KernelInput(rule, directions, schedule, law, recording,
                       Stream(int(lo), int(hi))), edges
