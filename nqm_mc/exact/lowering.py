"""Lowering of specifications to the exact engine's kernel inputs.

The exact kernels never see a model or an optimizer object: :func:`lower` reads once what they
need (the optimizer family, momentum, EMA decay, preconditioning power, the per-step learning
rates and batch sizes, the groups' curvatures, noise, multiplicities and initial moments) into
a :class:`LinearForm`, a ``typing.NamedTuple`` that numba takes as one argument.
:func:`crossing_search` does the same for the settings of a steps-to-target search.

No argument is checked here: the public functions of :mod:`nqm_mc.exact.engine` check theirs
before lowering.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from nqm_mc.exact._linalg import KIND_HEAVY_BALL, KIND_NESTEROV, KIND_SGD
from nqm_mc.spec.schedules import as_batch_schedule, checked_values

__all__ = ["LinearForm", "CrossingSearch", "lower", "crossing_search", "REFERENCE_BISECT_HI"]

# the reference notebook's bisection brackets, by family (EMA: its own)
REFERENCE_BISECT_HI = {"sgd": 10**9, "heavy_ball": 10**7, "nesterov": 10**7, "ema": 10**7}
_FAMILY = {KIND_SGD: "sgd", KIND_HEAVY_BALL: "heavy_ball", KIND_NESTEROV: "nesterov"}


class LinearForm(NamedTuple):
    """Everything the exact kernels read about one (model, optimizer, batch size) triple.

    Per group of directions the update is x(t+1) = A_t x(t) + b_t xi(t), xi ~ N(0, c / batch[t]),
    with (A_t, b_t) built from (kind, has_ema, h, hp, lr[t], beta, gamma) by
    :func:`~nqm_mc.exact._linalg.fill_linear_form`.

    Batch sizes are kept as they are (not inverted): the kernels divide by them, and
    ``c / B`` and ``c * (1 / B)`` differ in the last bit.
    """

    kind: int  # KIND_SGD, KIND_HEAVY_BALL or KIND_NESTEROV
    has_ema: bool  # the loss is read at the EMA of theta
    beta: float  # momentum (0 for SGD)
    gamma: float  # EMA decay (0 without EMA)
    p: float  # preconditioning power: the gradient is scaled by h^-p
    lr: np.ndarray  # (T,) float64: the learning rate of steps 0..T-1
    batch: np.ndarray  # (T,) float64: the batch size of steps 0..T-1 ((0,) when not given)
    h: np.ndarray  # (G,) float64: curvature of each group
    hp: np.ndarray  # (G,) float64: h^-p
    c: np.ndarray  # (G,) float64: gradient-noise variance per unit batch
    n: np.ndarray  # (G,) float64: multiplicity (directions in the group)
    mu0: np.ndarray  # (G,) float64: initial mean of theta
    v0: np.ndarray  # (G,) float64: initial variance of theta


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
    if batch_size is None:
        batch = np.zeros(0)
    else:
        batch = np.ascontiguousarray(checked_values(
            as_batch_schedule(batch_size, "batch_size", owner), T, "batch_size", owner),
            dtype=np.float64)
    return LinearForm(
        kind=int(optimizer.kind_code),
        has_ema=optimizer.ema is not None,
        beta=float(getattr(optimizer, "momentum", 0.0)),
        gamma=float(optimizer.ema) if optimizer.ema is not None else 0.0,
        p=float(p),
        lr=np.ascontiguousarray(checked_values(optimizer.learning_rate, T, "learning_rate",
                                               owner), dtype=np.float64),
        batch=batch,
        h=h,
        hp=h ** (-p),
        c=np.ascontiguousarray(model.noise_variances),
        n=model.multiplicities.astype(np.float64),
        mu0=np.ascontiguousarray(model.initial_mean),
        v0=np.ascontiguousarray(model.initial_variance),
    )


def crossing_search(form, target, method):
    """Return the :class:`CrossingSearch` for ``method``.

    ``method`` is "exact", "bisect" or "reference" (checked by the caller): the reference
    method uses the notebook's bracket for the family and, for plain SGD, its 1e-8 term.
    """
    bisect_hi = REFERENCE_BISECT_HI["ema" if form.has_ema else _FAMILY[form.kind]]
    ref_bias = method == "reference" and form.kind == KIND_SGD and not form.has_ema
    return CrossingSearch(float(target), 0 if method == "exact" else 1, int(bisect_hi),
                          bool(ref_bias))
