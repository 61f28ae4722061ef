r"""The exact engine: expected losses, their variance, steady states and steps to target.

Every optimizer of :mod:`nqm_mc.optimizers` is linear in its state with additive Gaussian
noise. Per direction, with state :math:`x = (\theta[, m][, e])`,

.. math::

    x(t+1) = A_t x(t) + b_t \xi(t), \quad \xi \sim N(0, c / B_t), \qquad
    \mu(t+1) = A_t \mu(t), \quad S(t+1) = A_t S(t) A_t^T + \tfrac{c}{B_t} b_t b_t^T,

and the readout :math:`r` (:math:`\theta`, or the EMA :math:`e`) gives
:math:`E[\ell_i] = \tfrac12 h_i S_{rr}`. The readout is Gaussian and directions are independent,
so one run's loss has variance :math:`\sum_i n_i h_i^2 (v_i^2/2 + m_i^2 v_i)`.

The (A, b) of each optimizer are built in :func:`nqm_mc.exact._linalg.fill_linear_form`
from the optimizer's linear form, never from the Monte Carlo kernels, so that the validation
suite compares two independent computations.

This module holds the curves (:func:`expected_loss`, :func:`loss_at`) and re-exports the
rest of the public functions: :func:`stability` and :func:`steady_state` from
:mod:`nqm_mc.exact.stability`, :func:`steps_to_target` and :func:`steps_to_target_batch` from
:mod:`nqm_mc.exact.targets`.

References
----------
G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes?", NeurIPS 2019,
arXiv:1907.04164 (Theorem 1: heavy ball; Theorem 2: EMA).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc._chunks import run_chunks
from nqm_mc.exact import _kernels as K  # noqa: F401 (the kernels, for tests and tools)
from nqm_mc.exact._args import _check_model, _check_optimizer, _constant_hparams, _n_chunks
from nqm_mc.exact._moments import curve_chunk, loss_at_kernel
from nqm_mc.exact.lowering import REFERENCE_BISECT_HI, crossing_search, lower  # noqa: F401
from nqm_mc.exact.stability import Stability as Stability  # re-exported, as before
from nqm_mc.exact.stability import SteadyState, stability, steady_state
from nqm_mc.exact.targets import StepsToTarget, steps_to_target, steps_to_target_batch
from nqm_mc.spec._checks import (
    MAX_STEP,
    ParameterError,
    _short,
    check_int,
    check_memory,
    check_steps,
)
from nqm_mc.spec.codes import DIVERGED
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer
from nqm_mc.spec.schedules import BatchSchedule, as_batch_schedule

__all__ = [
    "ExactCurve", "SteadyState", "StepsToTarget", "expected_loss", "loss_at", "steady_state",
    "steps_to_target", "steps_to_target_batch", "stability",
]

# ---------------------------------------------------------------------------- curves
@dataclass(frozen=True)
class ExactCurve:
    """Exact moments of the loss at the recorded steps.

    Attributes
    ----------
    steps : ndarray of int
        The recorded steps.
    mean : ndarray
        E[L(t)] at the readout (the EMA when the optimizer has one).
    variance : ndarray
        Var[L(t)] of one run.
    mean_theta : ndarray
        E[L(t)] at theta (equal to ``mean`` without EMA).
    group_mean, group_second_moment : ndarray (R, G) or None
        Per group, the readout's mean and uncentred second moment.
    diverged : bool
        True when the configuration diverges.
    reason : str
        Why it diverges, in words ("" otherwise).
    """

    steps: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    mean_theta: np.ndarray
    group_mean: np.ndarray | None = None
    group_second_moment: np.ndarray | None = None
    diverged: bool = False
    reason: str = ""

    @property
    def std(self) -> np.ndarray:
        """Standard deviation of L(t) over runs (the square root of ``variance``)."""
        return np.sqrt(self.variance)

    def standard_error(self, n_runs: int) -> np.ndarray:
        """Return the exact standard error of a Monte Carlo mean over independent runs.

        Parameters
        ----------
        n_runs : int
            Number of independent runs averaged.

        Returns
        -------
        ndarray
            ``sqrt(variance / n_runs)`` at each recorded step.
        """
        return np.sqrt(self.variance / n_runs)


def _record_steps(n_steps: int | None, record_every: int,
                  record: ArrayLike | None) -> np.ndarray:
    owner = "expected_loss"
    if record is not None:
        return check_steps("record", record, owner)
    n_steps = check_int("n_steps", n_steps, owner, low=0, high=MAX_STEP)
    record_every = check_int("record_every", record_every, owner, low=1, high=MAX_STEP)
    n_rec = n_steps // record_every + 2
    check_memory(8.0 * 4 * n_rec, owner, f"{n_rec} recorded steps",
                 _SPARSE_HINT)
    steps = np.arange(0, n_steps + 1, record_every, dtype=np.int64)
    if steps[-1] != n_steps:
        steps = np.append(steps, n_steps)
    return steps


_SPARSE_HINT = ("Record a sparse set of steps (record=, e.g. log-spaced) or fewer of them "
                "(record_every=); for constant hyperparameters loss_at evaluates any step up to "
                "2^62 in O(log t).")


def _curve_bytes(R: int, nc: int, G: int, group_moments: bool) -> float:
    """Return the bytes expected_loss allocates besides the schedules' runs.

    Per-record statistics (per chunk of groups) and, when asked for, per-group moments. The
    runs of the schedules cost memory per run (a constant schedule is one run whatever the
    horizon); a schedule refuses, before allocating, runs that would not fit.
    """
    return 8.0 * (R * (3 * nc + 2) + (2 * R * G if group_moments else 0))


def expected_loss(model: NQM, optimizer: Optimizer, batch_size: int | BatchSchedule,
                  n_steps: int | None = None, *, record_every: int = 1,
                  record: ArrayLike | None = None, group_moments: bool = False) -> ExactCurve:
    """Compute the exact E[L(t)] and Var[L(t)] for t = 0..n_steps by the per-step recurrences.

    Works for every linear optimizer, learning-rate schedule and batch-size schedule, parallel
    over groups of directions. The schedules are read as runs of constant hyperparameters
    (:meth:`~nqm_mc.spec.schedules.Schedule.pieces`), never as per-step arrays: inside a run,
    a gap of 64 steps or more to the next record is jumped by repeated squaring, so sparse
    records on piecewise-constant hyperparameters cost O(G (R + K) log t) for R records and
    K runs (a constant learning rate to step 10^12 takes milliseconds); steps of schedules
    that change every step cost O(G) each, one vectorised loop over the groups per step.

    ``n_steps = 0`` returns the statistics at t = 0 alone. A call that would allocate more
    than half of physical memory (per-record statistics, or a schedule's runs) is refused
    with a ParameterError stating the size before anything is allocated.

    Parameters
    ----------
    model : NQM
        The model.
    optimizer : SGD, HeavyBall or Nesterov
        A linear optimizer (no gradient clipping); any learning-rate schedule.
    batch_size : int or BatchSchedule
        The batch size, or a batch-size schedule.
    n_steps : int, optional
        Last step; statistics at ``0, record_every, 2 record_every, ..., n_steps``.
    record_every : int, default 1
        Spacing of the recorded steps when ``n_steps`` is given.
    record : array_like of int, optional
        Explicit steps to record instead (e.g. log-spaced); sorted, repeated steps kept once.
    group_moments : bool, default False
        Also return per-group means and second moments of the readout.

    Returns
    -------
    ExactCurve

    Raises
    ------
    ParameterError
        If an argument is invalid, neither ``n_steps`` nor ``record`` is given, the optimizer
        is nonlinear, or the call would need too much memory.
    """
    owner = "expected_loss"
    _check_model(model, owner)
    _check_optimizer(optimizer, owner)
    if n_steps is None and record is None:
        raise ParameterError("expected_loss needs 'n_steps' or 'record'.")
    steps = _record_steps(n_steps, record_every, record)
    T = int(steps[-1])
    batch = as_batch_schedule(batch_size, "batch_size", owner)
    G = model.n_groups
    nc = _n_chunks(G)
    R = steps.size
    check_memory(_curve_bytes(R, nc, G, group_moments), owner, f"{R} recorded steps",
                 _SPARSE_HINT)
    form = lower(model, optimizer, batch, T, owner)  # schedules checked there
    om, ov, ot = (np.zeros((nc, R)) for _ in range(3))
    gm1 = np.zeros((R, G)) if group_moments else np.zeros((0, 0))
    gm2 = np.zeros((R, G)) if group_moments else np.zeros((0, 0))
    with np.errstate(over="ignore", invalid="ignore"):
        heff = form.h * form.hp
        run_chunks(lambda ch: curve_chunk(form, steps, nc, ch, heff, om, ov, ot, gm1, gm2), nc)
    mean, var, mth = om.sum(0), ov.sum(0), ot.sum(0)
    diverged, reason = False, ""
    bad = ~(mean < DIVERGED)  # overflowed, or not finite
    if bad.any():
        diverged = True
        first = int(steps[np.argmax(bad)])
        st = stability(model, optimizer)
        reason = (st.reason if not st.stable else "diverges") + \
            f"; the expected loss overflows at step {first}"
        mean = np.where(bad, np.inf, mean)
        var = np.where(bad | ~np.isfinite(var), np.inf, var)
        mth = np.where(~np.isfinite(mth), np.inf, mth)
    elif optimizer.is_constant and isinstance(batch_size, (int, np.integer)) or \
            (optimizer.is_constant and batch.is_constant):
        st = stability(model, optimizer)
        if not st.stable:
            diverged, reason = True, st.reason
    return ExactCurve(steps, mean, var, mth, gm1 if group_moments else None,
                      gm2 if group_moments else None, diverged, reason)


def _check_times(t: ArrayLike, owner: str) -> np.ndarray:
    """Return ``t`` of loss_at (an int or an array of ints in [0, 2^62]) as int64."""
    msg = (f"The 't' parameter of {owner} must be int(s) in [0, 2^62]. "
           f"Got {_short(t)} instead.")
    try:
        ts = np.asarray(t)
    except (TypeError, ValueError, OverflowError):
        raise ParameterError(msg) from None
    if ts.size == 0 and ts.dtype.kind in "fiu":  # an empty list
        return ts.astype(np.int64)
    if ts.dtype.kind == "O":
        flat = ts.ravel().tolist()
        if not all(isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))
                   and 0 <= x <= MAX_STEP for x in flat):
            raise ParameterError(msg)
        return np.array(flat, dtype=np.int64).reshape(ts.shape)
    if ts.dtype.kind not in "iu" or (ts.size and (ts.min() < 0 or ts.max() > MAX_STEP)):
        raise ParameterError(msg)
    return ts.astype(np.int64)


def loss_at(model: NQM, optimizer: Optimizer, batch_size: int | BatchSchedule,
            t: ArrayLike) -> tuple[Any, ...]:
    """Compute the exact E[L(t)], Var[L(t)] and E[L_theta(t)] at arbitrary steps in O(G log t).

    Constant hyperparameters only.

    Parameters
    ----------
    model : NQM
        The model.
    optimizer : SGD, HeavyBall or Nesterov
        A linear optimizer with a constant learning rate.
    batch_size : int or BatchSchedule
        A constant batch size.
    t : int or array_like of int
        Steps in [0, 2^62].

    Returns
    -------
    mean, variance, mean_theta : float or ndarray
        Three arrays of the shape of ``t`` (floats for scalar ``t``). A diverging
        configuration gives ``inf`` (never NaN) from the step at which its expected loss
        overflows, as :func:`expected_loss` does; :func:`stability` says why it diverges.

    Raises
    ------
    ParameterError
        If an argument is invalid, a hyperparameter is not constant, or the call would need
        too much memory.
    """
    owner = "loss_at"
    _check_model(model, owner)
    _check_optimizer(optimizer, owner)
    _constant_hparams(optimizer, batch_size, owner)
    shape = np.shape(t)
    ts = np.ascontiguousarray(_check_times(t, owner).ravel())
    G = model.n_groups
    check_memory(8.0 * 3 * G * ts.size, owner, f"{ts.size} steps x {G} groups",
                 "Ask for fewer steps per call.")
    om, ov, ot = (np.zeros((G, ts.size)) for _ in range(3))
    form = lower(model, optimizer, batch_size, 1, owner)
    with np.errstate(over="ignore", invalid="ignore"):
        loss_at_kernel(form, ts, om, ov, ot)
    mean, var, mth = om.sum(0), ov.sum(0), ot.sum(0)
    bad = ~(mean < DIVERGED)  # overflowed (a diverging configuration), as in expected_loss
    out = (np.where(bad, np.inf, mean), np.where(bad | ~np.isfinite(var), np.inf, var),
           np.where(~np.isfinite(mth), np.inf, mth))
    if len(shape) == 0:
        return tuple(float(x[0]) for x in out)
    return tuple(x.reshape(shape) for x in out)
