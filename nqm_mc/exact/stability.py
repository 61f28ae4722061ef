"""Where an optimizer settles: its stability and its steady state.

:func:`stability` says whether every direction's linear map contracts (its largest spectral
radius, and in words why not when it does not); :func:`steady_state` gives the limit of the
loss's moments when it does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nqm_mc.exact._args import _check_model, _check_optimizer, _constant_hparams
from nqm_mc.exact._linalg import KIND_HEAVY_BALL, KIND_SGD
from nqm_mc.exact._moments import steady_state_kernel
from nqm_mc.exact.lowering import lower
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer
from nqm_mc.spec.schedules import BatchSchedule, as_batch_schedule, checked_values

__all__ = ["Stability", "SteadyState", "stability", "steady_state"]


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
