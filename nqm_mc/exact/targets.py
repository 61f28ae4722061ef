"""Steps to a loss target: the exact first crossing of E[L(t)] below a target.

:func:`steps_to_target` for one configuration (a learning rate and batch size, constant),
:func:`steps_to_target_batch` for a whole grid of learning rates, batch sizes, momenta and EMA
decays at once; both return :class:`StepsToTarget`. The search itself (envelopes, jumps,
bisection) is in :mod:`nqm_mc.exact._crossing`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc._chunks import run_ranges
from nqm_mc.exact._args import _check_model, _check_optimizer, _constant_hparams
from nqm_mc.exact._crossing import first_crossing_one, first_crossing_range
from nqm_mc.exact.lowering import crossing_search, lower
from nqm_mc.exact.stability import stability
from nqm_mc.spec._checks import (
    MAX_BATCH,
    MAX_STEP,
    ParameterError,
    _short,
    check_choice,
    check_memory,
    check_real,
)
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer
from nqm_mc.spec.schedules import BatchSchedule

__all__ = ["StepsToTarget", "steps_to_target", "steps_to_target_batch"]


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
    # fresh writable copies: a read-only view (a broadcast that needed no copy) would be
    # another numba type, hence another compilation of the kernel
    flat = [np.array(np.broadcast_to(a, shape), order="C").ravel()
            for a in (lrs, bs, betas, gammas)]
    cap_flat = np.array(np.broadcast_to(cap_arr, shape), order="C").ravel()
    out = np.zeros(flat[0].size, dtype=np.int64)
    stats = np.zeros((flat[0].size, 4))
    search = crossing_search(form, target, method)
    # several ranges of configurations per thread: their costs differ widely
    run_ranges(lambda lo, hi: first_crossing_range(form, *flat, search, out, stats, cap_flat,
                                                   lo, hi), out.size, per_thread=8)
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
        # cap 0 (none) passed, not defaulted: the signature first_crossing_range compiles
        t = int(first_crossing_one(form, form.lr[0], form.batch[0], form.beta, form.gamma,
                                   search, stats, 0))
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
