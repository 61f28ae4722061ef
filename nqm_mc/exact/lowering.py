"""Lowering of specifications to the exact engine's kernel inputs.

The exact kernels never see a model or an optimizer object: :func:`lower` reads once what they
need (the optimizer family, momentum, EMA decay, preconditioning power, the per-step learning
rates and batch sizes, the groups' curvatures, noise, multiplicities and initial moments) into
a :class:`LinearForm`, a ``typing.NamedTuple`` that numba takes as one argument.

Schedules reach the kernels as runs of constant hyperparameters, never as per-step arrays: the
runs of the learning rate and of the batch size (:func:`~nqm_mc.spec.schedules.checked_pieces`)
are merged into runs over which both are constant (:func:`joint_runs`), so that the memory is
per run and a constant schedule over ``2^62`` steps is one run.
:func:`crossing_search` does the same for the settings of a steps-to-target search.

No argument is checked here: the public functions of :mod:`nqm_mc.exact.engine` check theirs
before lowering.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nqm_mc.exact._linalg import KIND_HEAVY_BALL, KIND_NESTEROV, KIND_SGD
from nqm_mc.spec.schedules import Pieces, as_batch_schedule, checked_pieces

__all__ = ["LinearForm", "CrossingSearch", "lower", "crossing_search", "joint_runs",
           "REFERENCE_BISECT_HI"]

# the reference notebook's bisection brackets, by family (EMA: its own)
REFERENCE_BISECT_HI = {"sgd": 10**9, "heavy_ball": 10**7, "nesterov": 10**7, "ema": 10**7}
_FAMILY = {KIND_SGD: "sgd", KIND_HEAVY_BALL: "heavy_ball", KIND_NESTEROV: "nesterov"}


class LinearForm(NamedTuple):
    """Everything the exact kernels read about one (model, optimizer, batch size) triple.

    Per group of directions the update is x(t+1) = A_t x(t) + b_t xi(t), xi ~ N(0, c / B_t),
    with (A_t, b_t) built from (kind, has_ema, h, hp, lr_t, beta, gamma) by
    :func:`~nqm_mc.exact._linalg.fill_linear_form`. The learning rate and batch size are
    given per run: steps ``starts[j] <= t < starts[j + 1]`` (the last run up to ``n_steps``)
    have ``lr_t = lr[j]`` and ``B_t = batch[j]``; ``lr[0]`` and ``batch[0]`` are step 0's.

    Batch sizes are kept as they are (not inverted): the kernels divide by them, and
    ``c / B`` and ``c * (1 / B)`` differ in the last bit.
    """

    kind: int  # KIND_SGD, KIND_HEAVY_BALL or KIND_NESTEROV
    has_ema: bool  # the loss is read at the EMA of theta
    beta: float  # momentum (0 for SGD)
    gamma: float  # EMA decay (0 without EMA)
    p: float  # preconditioning power: the gradient is scaled by h^-p
    lr: np.ndarray  # (K,) float64: the learning rate of each run
    batch: np.ndarray  # (K,) float64: the batch size of each run ((0,) when not given)
    h: np.ndarray  # (G,) float64: curvature of each group
    hp: np.ndarray  # (G,) float64: h^-p
    c: np.ndarray  # (G,) float64: gradient-noise variance per unit batch
    n: np.ndarray  # (G,) float64: multiplicity (directions in the group)
    mu0: np.ndarray  # (G,) float64: initial mean of theta
    v0: np.ndarray  # (G,) float64: initial variance of theta
    starts: np.ndarray  # (K,) int64: the first step of each run (starts[0] = 0, increasing)
    n_steps: int  # the steps covered (runs end there)


class CrossingSearch(NamedTuple):
    """The settings of a steps-to-target search.

    See :func:`~nqm_mc.exact._crossing.first_crossing_one`.
    """

    target: float  # the loss to get below
    method: int  # 0 exact first crossing, 1 bisection
    bisect_hi: int  # the bisection's upper bracket
    ref_bias: bool  # the reference notebook's 1e-8 in SGD's steady state


def lower(model, optimizer, batch_size=None, n_steps=1, owner="the exact engine"):
    """Return the :class:`LinearForm` of ``optimizer`` on ``model`` for steps 0..n_steps - 1.

    ``batch_size`` is an int, a BatchSchedule, or None when no noise scale is needed; at least
    one step is lowered.

    The model and optimizer are assumed checked (an NQM; SGD, HeavyBall or Nesterov without
    clipping).
    """
    T = max(int(n_steps), 1)
    h = np.ascontiguousarray(model.curvatures)
    p = optimizer.preconditioning
    lr_runs = checked_pieces(optimizer.learning_rate, T, "learning_rate", owner)
    if batch_size is None:
        starts, lr, _ = joint_runs(lr_runs, lr_runs)
        batch = np.zeros(0)
    else:
        starts, lr, batch = joint_runs(lr_runs, checked_pieces(
            as_batch_schedule(batch_size, "batch_size", owner), T, "batch_size", owner))
    return LinearForm(
        kind=int(optimizer.kind_code),
        has_ema=optimizer.ema is not None,
        beta=float(getattr(optimizer, "momentum", 0.0)),
        gamma=float(optimizer.ema) if optimizer.ema is not None else 0.0,
        p=float(p),
        lr=lr,
        batch=batch,
        h=h,
        hp=h ** (-p),
        c=np.ascontiguousarray(model.noise_variances),
        n=model.multiplicities.astype(np.float64),
        mu0=np.ascontiguousarray(model.initial_mean),
        v0=np.ascontiguousarray(model.initial_variance),
        starts=starts,
        n_steps=T,
    )


def joint_runs(lr: Pieces, batch: Pieces) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Merge the runs of a learning rate and a batch size into runs where both are constant.

    A run starts wherever either schedule has a run start and the pair (learning rate, batch
    size) differs from the previous step's; equal neighbours are one run. The cost is per
    run, never per step.

    Parameters
    ----------
    lr, batch : Pieces
        The runs of the two schedules over the same number of steps (checked).

    Returns
    -------
    starts : ndarray of int64, shape (K,)
        The first step of each merged run (``starts[0] == 0``).
    lr_values, batch_values : ndarray of float64, shape (K,)
        The learning rate and batch size of each merged run.
    """
    starts = np.union1d(lr.starts, batch.starts).astype(np.int64)
    lv = lr.values[np.searchsorted(lr.starts, starts, side="right") - 1]
    bv = batch.values[np.searchsorted(batch.starts, starts, side="right") - 1]
    keep = np.ones(starts.size, dtype=bool)
    keep[1:] = (lv[1:] != lv[:-1]) | (bv[1:] != bv[:-1])
    return (np.ascontiguousarray(starts[keep]), np.ascontiguousarray(lv[keep], np.float64),
            np.ascontiguousarray(bv[keep], np.float64))


def crossing_search(form, target, method):
    """Return the :class:`CrossingSearch` for ``method``.

    ``method`` is "exact", "bisect" or "reference" (checked by the caller): the reference
    method uses the notebook's bracket for the family and, for plain SGD, its 1e-8 term.
    """
    bisect_hi = REFERENCE_BISECT_HI["ema" if form.has_ema else _FAMILY[form.kind]]
    ref_bias = method == "reference" and form.kind == KIND_SGD and not form.has_ema
    return CrossingSearch(float(target), 0 if method == "exact" else 1, int(bisect_hi),
                          bool(ref_bias))
