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

References
----------
G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes?", NeurIPS 2019,
arXiv:1907.04164 (Theorem 1: heavy ball; Theorem 2: EMA).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.exact import _kernels as K  # noqa: F401 (the kernels, for tests and tools)
from nqm_mc.exact._crossing import first_crossing_batch, first_crossing_one
from nqm_mc.exact._linalg import KIND_HEAVY_BALL, KIND_SGD
from nqm_mc.exact._moments import curve_kernel, loss_at_kernel, steady_state_kernel
from nqm_mc.exact.lowering import REFERENCE_BISECT_HI, crossing_search, lower  # noqa: F401
from nqm_mc.spec._checks import (
    MAX_BATCH,
    MAX_STEP,
    ParameterError,
    _short,
    check_choice,
    check_int,
    check_memory,
    check_real,
    check_steps,
)
from nqm_mc.spec.codes import DIVERGED
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer
from nqm_mc.spec.schedules import BatchSchedule, as_batch_schedule, checked_values

__all__ = [
    "ExactCurve", "SteadyState", "StepsToTarget", "expected_loss", "loss_at", "steady_state",
    "steps_to_target", "steps_to_target_batch", "stability",
]

def _check_model(model: object, owner: str) -> None:
    if not isinstance(model, NQM):
        raise ParameterError(f"The 'model' parameter of {owner} must be an NQM. "
                             f"Got {type(model).__name__} instead.")


def _check_optimizer(opt: object, owner: str) -> None:
    if not isinstance(opt, Optimizer):
        raise ParameterError(f"The 'optimizer' parameter of {owner} must be an optimizer spec "
                             f"(SGD, HeavyBall, Nesterov). Got {type(opt).__name__} instead.")
    if not opt.is_linear:
        what = (f"gradient clipping (clip_norm={opt.clip_norm!r})" if opt.clip_norm is not None
                else f"{type(opt).__name__}")
        raise ParameterError(f"The 'optimizer' parameter of {owner}: the exact engine needs an "
                             f"update linear in the gradient (SGD, HeavyBall, Nesterov without "
                             f"clipping); {what} is nonlinear. Use nqm_mc.simulate.")


def _n_chunks(G: int) -> int:
    return int(max(1, min(G, 64)))


# ---------------------------------------------------------------------------- stability
@dataclass(frozen=True)
class Stability:
    """Whether every direction's linear map contracts (spectral radius < 1).

    Attributes
    ----------
    stable : bool
        True when the spectral radius is below 1.
    spectral_radius : float
        The largest spectral radius over the directions.
    reason : str
        Why the configuration diverges, in words ("" when stable).
    """

    stable: bool
    spectral_radius: float
    reason: str


def stability(model: NQM, optimizer: Optimizer,
              batch_size: int | BatchSchedule = 1) -> Stability:
    """Return the spectral radius of the per-direction maps and, when unstable, the reason.

    Divergence does not depend on the batch size (it only scales the noise), so ``batch_size``
    is accepted for symmetry (and checked like everywhere else).

    Parameters
    ----------
    model : NQM
        The model.
    optimizer : SGD, HeavyBall or Nesterov
        A linear optimizer (no gradient clipping).
    batch_size : int or BatchSchedule, default 1
        Checked, otherwise unused.

    Returns
    -------
    Stability

    Raises
    ------
    ParameterError
        If the model, optimizer or batch size is invalid, or the optimizer is nonlinear.
    """
    owner = "stability"
    _check_model(model, owner)
    _check_optimizer(optimizer, owner)
    checked_values(as_batch_schedule(batch_size, "batch_size", owner), 1, "batch_size", owner)
    form = lower(model, optimizer, None, 1, owner)
    h = form.h
    x = float(form.lr[0]) * h ** (1.0 - form.p)
    beta = form.beta
    if form.kind == KIND_SGD:
        rho = np.abs(1.0 - x)
        bound = "alpha h^(1-p) < 2"
    else:
        # the (theta, m) map's trace and determinant
        if form.kind == KIND_HEAVY_BALL:
            tr, det = 1.0 - x + beta, beta
        else:
            tr, det = 1.0 - (1.0 + beta) * x + beta, beta * (1.0 - x)
        disc = tr * tr - 4.0 * det + 0j
        rho = np.maximum(np.abs((tr + np.sqrt(disc)) / 2), np.abs((tr - np.sqrt(disc)) / 2))
        bound = ("alpha h^(1-p) < 2 (1 + beta)" if form.kind == KIND_HEAVY_BALL
                 else "alpha h^(1-p) < 2 (1 + beta) / (1 + 2 beta)")
    i = int(np.argmax(rho))
    r = float(rho[i])
    if r < 1.0:
        return Stability(True, r, "")
    reason = (f"diverges: the direction with curvature h = {h[i]:.6g} has spectral radius "
              f"{r:.6g} >= 1 (alpha h^(1-p) = {x[i]:.6g}; stability needs {bound})")
    return Stability(False, r, reason)


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


def _curve_bytes(T: int, R: int, nc: int, G: int, group_moments: bool) -> float:
    """Return the bytes expected_loss allocates.

    Per-step learning rates, batch sizes and ends of runs of constant hyperparameters (with
    the temporaries a schedule's ``values`` makes) and per-record statistics.
    """
    return 8.0 * (6 * max(T, 1) + R * (3 * nc + 2) + (2 * R * G if group_moments else 0))


def expected_loss(model: NQM, optimizer: Optimizer, batch_size: int | BatchSchedule,
                  n_steps: int | None = None, *, record_every: int = 1,
                  record: ArrayLike | None = None, group_moments: bool = False) -> ExactCurve:
    """Compute the exact E[L(t)] and Var[L(t)] for t = 0..n_steps by the per-step recurrences.

    Works for every linear optimizer, learning-rate schedule and batch-size schedule. Cost
    O(G n_steps) (G groups of directions), parallel over groups.

    ``n_steps = 0`` returns the statistics at t = 0 alone. A call that would allocate more
    than half of physical memory (per-step schedules of ``n_steps`` values, per-record
    statistics) is refused with a ParameterError stating the size before anything is
    allocated.

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
    check_memory(_curve_bytes(T, R, nc, G, group_moments), owner,
                 f"{T} steps of schedules and {R} recorded steps",
                 _SPARSE_HINT if R > T // 4 else
                 f"The learning rates and batch sizes of every step up to {T} take most of "
                 "it: use a shorter horizon, or for constant hyperparameters loss_at, which "
                 "evaluates any step up to 2^62 in O(log t).")
    form = lower(model, optimizer, batch, T, owner)  # schedules checked there
    om, ov, ot = (np.zeros((nc, R)) for _ in range(3))
    gm1 = np.zeros((R, G)) if group_moments else np.zeros((0, 0))
    gm2 = np.zeros((R, G)) if group_moments else np.zeros((0, 0))
    with np.errstate(over="ignore", invalid="ignore"):
        curve_kernel(form, steps, nc, om, ov, ot, gm1, gm2, _run_end(form.lr, form.batch, T))
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


def _run_end(lr: np.ndarray, batch: np.ndarray, T: int) -> np.ndarray:
    """Return, for every step t < T, the first later step whose hyperparameters differ.

    That is the first step after t whose learning rate or batch size differs from step t's (T
    when none does before T).
    """
    n = max(T, 1)
    change = np.flatnonzero((np.diff(lr[:n]) != 0) | (np.diff(batch[:n]) != 0)) + 1
    nxt = np.append(change, T).astype(np.int64)
    return np.ascontiguousarray(nxt[np.searchsorted(change, np.arange(n), side="right")])


def _constant_hparams(optimizer: Optimizer, batch_size: int | BatchSchedule,
                      owner: str) -> tuple[float, float]:
    if not optimizer.is_constant:
        raise ParameterError(f"{owner} needs a constant learning rate; use expected_loss for "
                             f"schedules. Got {optimizer.learning_rate!r} instead.")
    batch = as_batch_schedule(batch_size, "batch_size", owner)
    if not batch.is_constant:
        raise ParameterError(f"{owner} needs a constant batch size; use expected_loss for "
                             f"batch-size schedules. Got {batch!r} instead.")
    return (optimizer.base_learning_rate,
            float(checked_values(batch, 1, "batch_size", owner)[0]))


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
        Three arrays of the shape of ``t`` (floats for scalar ``t``).

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
    out = (om.sum(0), ov.sum(0), ot.sum(0))
    if len(shape) == 0:
        return tuple(float(x[0]) for x in out)
    return tuple(x.reshape(shape) for x in out)


# ---------------------------------------------------------------------------- steady state
@dataclass(frozen=True)
class SteadyState:
    """Steady-state expected loss (the readout's), per-group second moments and stability.

    Attributes
    ----------
    loss : float
        lim E[L(t)] (inf when unstable).
    group_second_moment : ndarray
        Per group, the readout's steady-state second moment.
    stable : bool
        True when the configuration converges.
    reason : str
        Why it diverges, in words ("" when stable).
    """

    loss: float
    group_second_moment: np.ndarray
    stable: bool
    reason: str = ""


def steady_state(model: NQM, optimizer: Optimizer,
                 batch_size: int | BatchSchedule) -> SteadyState:
    """Return the fixed point of the second-moment recurrence: lim E[L(t)].

    Computed by doubling the series sum_j A^j Q A^jT (positive terms only, accurate at critical
    damping); closed forms (docs/theory.md, section 3.5) are tests of it. An unstable
    configuration returns ``stable=False``, ``loss=inf`` and the reason.

    Parameters
    ----------
    model : NQM
        The model.
    optimizer : SGD, HeavyBall or Nesterov
        A linear optimizer with a constant learning rate.
    batch_size : int or BatchSchedule
        A constant batch size.

    Returns
    -------
    SteadyState

    Raises
    ------
    ParameterError
        If an argument is invalid or a hyperparameter is not constant.
    """
    owner = "steady_state"
    _check_model(model, owner)
    _check_optimizer(optimizer, owner)
    _constant_hparams(optimizer, batch_size, owner)
    form = lower(model, optimizer, batch_size, 1, owner)
    m2 = np.zeros(model.n_groups)
    stable = np.zeros(model.n_groups, dtype=np.bool_)
    steady_state_kernel(form, m2, stable)
    if not stable.all():
        return SteadyState(np.inf, m2, False, stability(model, optimizer).reason)
    return SteadyState(float(0.5 * np.sum(form.n * form.h * m2)), m2, True, "")


# ---------------------------------------------------------------------------- steps to target
@dataclass(frozen=True)
class StepsToTarget:
    """Steps to reach E[L(t)] < target.

    ``steps`` is an int when reachable; None otherwise with ``status`` one of "reached",
    "unreachable" (steady state >= target: ``steady_state_loss`` says by how much),
    "diverges" or "beyond-horizon" (more than 2^62 steps).

    Attributes
    ----------
    steps : int or None
        The first step t with E[L(t)] < target, or None.
    status : str
        "reached", "unreachable", "diverges" or "beyond-horizon".
    steady_state_loss : float
        lim E[L(t)] (inf when divergent).
    target : float
        The target loss.
    method : str
        The search method ("exact", "bisect" or "reference").
    reason : str
        Why the target is not reached, in words ("" when reached).
    evaluations : int
        Loss evaluations the search made (not compared).
    """

    steps: int | None
    status: str
    steady_state_loss: float
    target: float
    method: str
    reason: str = ""
    evaluations: int = field(default=0, compare=False)

    @property
    def reached(self) -> bool:
        """True when the target is reached."""
        return self.status == "reached"

    def __int__(self) -> int:
        if self.steps is None:
            raise ValueError(f"target {self.target} not reached: {self.status} ({self.reason})")
        return self.steps


_STATUS = {-1: "unreachable", -2: "diverges", -3: "beyond-horizon"}


_METHODS = ("exact", "bisect", "reference")


def _method_code(method: str, owner: str) -> int:
    check_choice("method", method, owner, _METHODS)
    return 0 if method == "exact" else 1


def _float_array(name: str, value: ArrayLike, owner: str) -> np.ndarray:
    """Return a float64 array of numbers (no strings, bools or objects).

    Range checks are the caller's.
    """
    try:
        arr = np.asarray(value)
        ok = arr.dtype.kind in "iuf"
        if ok and not isinstance(value, np.ndarray) and np.ndim(value) > 0:
            # a bool inside a list is coerced to 0 or 1 by numpy: refuse it
            ok = not any(isinstance(x, (bool, np.bool_))
                         for x in np.asarray(value, dtype=object).ravel().tolist())
        if ok:
            arr = arr.astype(np.float64)
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok:
        raise ParameterError(f"The {name!r} parameter of {owner} must be a number or an array "
                             f"of numbers. Got {_short(value)} instead.")
    return arr


def steps_to_target_batch(model: NQM, optimizer: Optimizer, target: float,
                          batch_sizes: ArrayLike, learning_rates: ArrayLike,
                          momenta: ArrayLike | None = None, ema_decays: ArrayLike | None = None,
                          *, method: str = "exact", caps: ArrayLike | None = None) -> np.ndarray:
    """Return the steps to target for many configurations of one optimizer family at once.

    The configuration arrays broadcast against each other; the result (an int64 array of the
    broadcast shape) holds steps, or -1 unreachable, -2 divergent, -3 beyond 2^62 steps,
    -4 not before its cap (see ``caps``).
    ``optimizer`` supplies the family, the preconditioning power and whether EMA is on; its own
    learning rate, momentum and EMA decay are replaced by the arrays. Runs in parallel over
    configurations.

    With ``method="reference"`` the reference notebook's bisection is used: it returns one
    less than a crossing, 1 at least for plain SGD, and the notebook's 1e-8 term in SGD's
    steady state. Use it only to reproduce the notebook's numbers.

    ``caps`` (exact method only; broadcasts like the configurations; 0 = none) stops the
    search at that many steps: a configuration that does not cross before its cap gets -4
    (so does one with a negative cap, which is skipped).
    A search for the best of many configurations passes the best count found so far.

    Parameters
    ----------
    model : NQM
        The model.
    optimizer : SGD, HeavyBall or Nesterov
        Supplies the family, the preconditioning power and whether EMA is on.
    target : float
        The loss to get below (>= 0).
    batch_sizes, learning_rates : array_like
        Integer batch sizes in [1, 2^53] and learning rates > 0.
    momenta, ema_decays : array_like, optional
        Momenta and EMA decays in [0, 1) (default: the optimizer's).
    method : {"exact", "bisect", "reference"}, default "exact"
        The search method.
    caps : array_like of int, optional
        Per-configuration step caps (exact method only; 0 = none).

    Returns
    -------
    ndarray of int64
        Steps or the negative codes above, of the broadcast shape.

    Raises
    ------
    ParameterError
        If an argument is invalid, the arrays do not broadcast together, or the call would
        need too much memory.
    """
    owner = "steps_to_target_batch"
    _check_model(model, owner)
    _check_optimizer(optimizer, owner)
    target = check_real("target", target, owner, low=0.0)
    code = _method_code(method, owner)
    form = lower(model, optimizer, None, 1, owner)
    beta0, gamma0 = form.beta, form.gamma
    lrs = _float_array("learning_rates", learning_rates, owner)
    bs = _float_array("batch_sizes", batch_sizes, owner)
    betas = _float_array("momenta", beta0 if momenta is None else momenta, owner)
    gammas = _float_array("ema_decays", gamma0 if ema_decays is None else ema_decays, owner)
    for name, arr, lo, hi, lo_closed in (("learning_rates", lrs, 0.0, np.inf, False),
                                         ("momenta", betas, 0.0, 1.0, True),
                                         ("ema_decays", gammas, 0.0, 1.0, True)):
        ok = np.isfinite(arr) & (arr < hi) & ((arr >= lo) if lo_closed else (arr > lo))
        if not ok.all():
            bad = arr.ravel()[np.flatnonzero(~ok.ravel())[0]]
            raise ParameterError(f"The {name!r} parameter of {owner} must hold floats in "
                                 f"{'[' if lo_closed else '('}{lo:g}, {hi:g}). Got {bad!r} "
                                 "instead.")
    ok = np.isfinite(bs) & (bs >= 1) & (bs <= MAX_BATCH) & (bs == np.round(bs))
    if not ok.all():
        bad = bs.ravel()[np.flatnonzero(~ok.ravel())[0]]
        raise ParameterError(f"The 'batch_sizes' parameter of {owner} must hold integer batch "
                             f"sizes in [1, 2^53]. Got {bad!r} instead.")
    if momenta is not None and not optimizer.has_momentum:
        raise ParameterError(f"The 'momenta' parameter of {owner} needs a momentum optimizer; "
                             f"got {optimizer.name!r}.")
    if ema_decays is not None and optimizer.ema is None:
        raise ParameterError(f"The 'ema_decays' parameter of {owner} needs an optimizer with "
                             "ema set (any value).")
    if caps is None:
        cap_arr = np.zeros((), np.int64)
    else:
        if code != 0:
            raise ParameterError(f"The 'caps' parameter of {owner} needs method='exact'.")
        try:
            cap_arr = np.asarray(caps)
        except (TypeError, ValueError, OverflowError):
            cap_arr = np.asarray(None)
        if cap_arr.dtype.kind not in "iuf" or (cap_arr.dtype.kind == "f" and not (
                np.all(np.isfinite(cap_arr)) and np.all(cap_arr == np.round(cap_arr)))) or (
                cap_arr.size and np.abs(cap_arr).max() > MAX_STEP):
            raise ParameterError(f"The 'caps' parameter of {owner} must hold integers in "
                                 f"[-2^62, 2^62]. Got {_short(caps)} instead.")
        cap_arr = cap_arr.astype(np.int64)
    try:
        shape = np.broadcast_shapes(lrs.shape, bs.shape, betas.shape, gammas.shape,
                                    cap_arr.shape)
    except ValueError:
        raise ParameterError(f"The configuration arrays of {owner} must broadcast together. "
                             f"Got shapes {lrs.shape} (learning_rates), {bs.shape} "
                             f"(batch_sizes), {betas.shape} (momenta), {gammas.shape} "
                             f"(ema_decays), {cap_arr.shape} (caps) instead.") from None
    size = int(np.prod(shape, dtype=np.float64))
    check_memory(8.0 * 10 * size, owner, f"{size} configurations",
                 "Evaluate fewer configurations per call.")
    flat = [np.ascontiguousarray(np.broadcast_to(a, shape).ravel())
            for a in (lrs, bs, betas, gammas)]
    cap_flat = np.ascontiguousarray(np.broadcast_to(cap_arr, shape).ravel())
    out = np.zeros(flat[0].size, dtype=np.int64)
    stats = np.zeros((flat[0].size, 4))
    search = crossing_search(form, target, method)
    with np.errstate(over="ignore", invalid="ignore"):
        first_crossing_batch(form, *flat, search, out, stats, cap_flat)
    out = _bisect_convention(out, method, search.ref_bias, stats[:, 1])
    return out.reshape(shape)


def _bisect_convention(out: np.ndarray, method: str, ref_bias: bool,
                       t0_reached: np.ndarray) -> np.ndarray:
    """Map the kernel's bisection answer ``lo`` to the method's convention."""
    if method == "reference" and ref_bias:
        return np.where(out >= 0, np.maximum(out, 1), out)
    if method == "bisect":
        # lo is the last t with E[L] >= target on the path; the crossing is lo + 1, except
        # when E[L(0)] < target already (the kernel returned 0 before bisecting)
        return np.where((out >= 0) & (t0_reached == 1), out + 1, out)
    return out


def steps_to_target(model: NQM, optimizer: Optimizer, batch_size: int | BatchSchedule,
                    target: float, *, method: str = "exact") -> StepsToTarget:
    """Return the smallest t >= 0 with E[L(t)] < target, exactly.

    E[L(t)] need not be monotone (under-damped momentum oscillates; directions starting below
    their steady state rise), so plain bisection may return a later crossing. The exact method
    brackets the crossing with a monotone upper envelope and scans from t = 0 with jumps over
    which the loss is proven to stay above the target (see
    :func:`nqm_mc.exact._crossing.first_crossing_one`); it handles targets 10^9 steps away in
    milliseconds. ``method="bisect"`` is plain bisection on the exact curve (the same answer
    when E[L] is monotone, possibly a later crossing otherwise); ``method="reference"``
    reproduces the reference notebook's bisection (its bracket, one less than the crossing, at
    least 1 for plain SGD, and its 1e-8 term in SGD's steady state).

    Parameters
    ----------
    model : NQM
        The model.
    optimizer : SGD, HeavyBall or Nesterov
        A linear optimizer with a constant learning rate.
    batch_size : int or BatchSchedule
        A constant batch size.
    target : float
        The loss to get below (>= 0).
    method : {"exact", "bisect", "reference"}, default "exact"
        The search method.

    Returns
    -------
    StepsToTarget

    Raises
    ------
    ParameterError
        If an argument is invalid or a hyperparameter is not constant.
    """
    owner = "steps_to_target"
    _check_model(model, owner)
    _check_optimizer(optimizer, owner)
    target = check_real("target", target, owner, low=0.0)
    _method_code(method, owner)
    _constant_hparams(optimizer, batch_size, owner)
    form = lower(model, optimizer, batch_size, 1, owner)
    search = crossing_search(form, target, method)
    stats = np.zeros(4)
    with np.errstate(over="ignore", invalid="ignore"):
        t = int(first_crossing_one(form, form.lr[0], form.batch[0], form.beta, form.gamma,
                                   search, stats))
    if t >= 0:
        t = int(_bisect_convention(np.array([t]), method, search.ref_bias, stats[None, 1])[0])
        return StepsToTarget(t, "reached", float(stats[0]), target, method,
                             evaluations=int(stats[2]))
    status = _STATUS[t]
    if status == "diverges":
        reason = stability(model, optimizer).reason
        return StepsToTarget(None, status, np.inf, target, method, reason)
    if status == "unreachable":
        reason = (f"the steady-state loss {stats[0]:.6g} is not below the target {target:g}")
    else:
        reason = "the target lies beyond 2^62 steps"
    return StepsToTarget(None, status, float(stats[0]), target, method, reason)

