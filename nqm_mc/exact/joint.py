r"""The joint law of the loss at two steps: exact two-time covariances.

The marginal moments of :func:`~nqm_mc.exact.engine.expected_loss` say nothing about how the
loss at one recorded step relates to the loss at another; paths, hitting times and anything
computed from kept paths depend on that joint law. For the linear optimizers the state of a
direction is a linear Gaussian system, so the pair of readouts at steps :math:`s \le t` is
jointly Gaussian with

.. math::

    \mathrm{Cov}(x(t), x(s)) = \Phi(t, s)\, P(s), \qquad \Phi(t, s) = A_{t-1} \cdots A_s,

:math:`P(s)` the state's covariance at :math:`s`. With :math:`c` the readout entry of that
matrix and :math:`m_s, m_t` the readout's means, Isserlis' theorem gives
:math:`\mathrm{Cov}(x_s^2, x_t^2) = 2c^2 + 4 m_s m_t c` per direction, and directions are
independent:

.. math::

    \mathrm{Cov}(L_s, L_t) = \sum_g n_g \frac{h_g^2}{4}
    \bigl(2 c_g^2 + 4 m_{s,g} m_{t,g} c_g\bigr).

See ``docs/theory.md``, section 3.8.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.exact._args import _check_model, _check_optimizer, _n_chunks
from nqm_mc.exact._joint import loss_covariance_const_kernel, loss_covariance_kernel
from nqm_mc.exact.lowering import lower
from nqm_mc.exact.stability import stability
from nqm_mc.spec._checks import MAX_STEP, ParameterError, _short, check_memory
from nqm_mc.spec.codes import DIVERGED
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer
from nqm_mc.spec.schedules import BatchSchedule, as_batch_schedule

__all__ = ["LossCovariance", "loss_covariance"]


@dataclass(frozen=True)
class LossCovariance:
    """Exact covariances of the loss between pairs of steps.

    Attributes
    ----------
    pairs : ndarray of int64, shape (P, 2)
        The pairs (s, t) as given.
    covariance : ndarray, shape (P,)
        Cov(L_s, L_t) of one run (inf where the configuration overflows).
    correlation : ndarray, shape (P,)
        Corr(L_s, L_t); nan where a variance is zero (a deterministic step, such as step 0
        of a deterministic start) or infinite.
    mean : ndarray, shape (P, 2)
        E[L_s] and E[L_t].
    variance : ndarray, shape (P, 2)
        Var[L_s] and Var[L_t].
    diverged : bool
        True when the configuration diverges.
    reason : str
        Why it diverges, in words ("" otherwise).
    """

    pairs: np.ndarray
    covariance: np.ndarray
    correlation: np.ndarray
    mean: np.ndarray
    variance: np.ndarray
    diverged: bool = False
    reason: str = ""


def _check_pairs(pairs: ArrayLike, owner: str) -> np.ndarray:
    """Return ``pairs`` as an int64 array of shape (P, 2) with steps in [0, 2^62]."""
    msg = (f"The 'pairs' parameter of {owner} must be pairs of int steps (s, t) in [0, 2^62], "
           f"shape (P, 2) or (2,). Got {_short(pairs)} instead.")
    if isinstance(pairs, (str, bytes, dict)) or pairs is None:
        raise ParameterError(msg)
    try:
        arr = np.asarray(pairs, dtype=object if not isinstance(pairs, np.ndarray) else None)
    except (TypeError, ValueError):
        raise ParameterError(msg) from None
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr.reshape(1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ParameterError(msg)
    out = np.empty(arr.shape, np.int64)
    for i, v in enumerate(arr.ravel().tolist()):
        if isinstance(v, (bool, np.bool_)) or not (
                isinstance(v, (int, np.integer))
                or (isinstance(v, (float, np.floating)) and np.isfinite(v)
                    and float(v).is_integer())) or not 0 <= int(v) <= MAX_STEP:
            raise ParameterError(
                f"The 'pairs' parameter of {owner} must hold int steps in [0, 2^62]. Got "
                f"{v!r} at pair {i // 2} instead.")
        out.flat[i] = int(v)
    return out


def _plan(pairs: np.ndarray) -> tuple[np.ndarray, ...]:
    """Return the kernel's index arrays for ``pairs`` (see :func:`loss_covariance_kernel`)."""
    lo = pairs.min(axis=1)
    hi = pairs.max(axis=1)
    steps = np.unique(np.concatenate([lo, hi]))
    i_lo = np.searchsorted(steps, lo)
    i_hi = np.searchsorted(steps, hi)
    src = np.unique(i_lo)
    pair_src = np.searchsorted(src, i_lo)
    src_last = np.full(src.size, -1, np.int64)
    np.maximum.at(src_last, pair_src, i_hi)
    return (steps.astype(np.int64), src.astype(np.int64), src_last,
            pair_src.astype(np.int64), i_hi.astype(np.int64))


def _constant(model: NQM, optimizer: Optimizer, batch: BatchSchedule, pairs: np.ndarray,
              owner: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (cov, mean, var) of the pairs by repeated squaring (constant hyperparameters)."""
    lo = np.ascontiguousarray(pairs.min(axis=1))
    hi = np.ascontiguousarray(pairs.max(axis=1))
    G, n_pairs = model.n_groups, pairs.shape[0]
    check_memory(8.0 * 5 * G * n_pairs, owner, f"{n_pairs} pairs x {G} groups",
                 "Ask for fewer pairs per call.")
    form = lower(model, optimizer, batch, 1, owner)
    ocov = np.zeros((G, n_pairs))
    omean = np.zeros((G, n_pairs, 2))
    ovar = np.zeros((G, n_pairs, 2))
    with np.errstate(over="ignore", invalid="ignore"):
        loss_covariance_const_kernel(form, lo, hi, ocov, omean, ovar)
    return ocov.sum(0), omean.sum(0), ovar.sum(0)


def _per_step(model: NQM, optimizer: Optimizer, batch: BatchSchedule, pairs: np.ndarray,
              owner: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (cov, mean, var) of the pairs by the recurrence along the runs (any schedule)."""
    steps, src, src_last, pair_src, pair_t = _plan(pairs)
    T = int(steps[-1])
    nc = _n_chunks(model.n_groups)
    check_memory(8.0 * (2 * nc * (steps.size + pairs.shape[0])
                        + nc * src.size * (steps.size + 3)), owner,
                 f"{pairs.shape[0]} pairs at {steps.size} distinct steps",
                 "Ask for fewer distinct earlier steps per call.")
    form = lower(model, optimizer, batch, T, owner)
    ocov = np.zeros((nc, pairs.shape[0]))
    omean = np.zeros((nc, steps.size))
    ovar = np.zeros((nc, steps.size))
    with np.errstate(over="ignore", invalid="ignore"):
        loss_covariance_kernel(form, steps, src, src_last, pair_src, pair_t, nc, ocov, omean,
                               ovar)
    cov, mean_u, var_u = ocov.sum(0), omean.sum(0), ovar.sum(0)
    i_lo = src[pair_src]
    return (cov, np.stack([mean_u[i_lo], mean_u[pair_t]], axis=1),
            np.stack([var_u[i_lo], var_u[pair_t]], axis=1))


def loss_covariance(model: NQM, optimizer: Optimizer, batch_size: int | BatchSchedule,
                    pairs: ArrayLike) -> LossCovariance:
    r"""Compute the exact covariance of one run's loss between two steps, Cov(L_s, L_t).

    Works for every linear optimizer (SGD, heavy ball, Nesterov; any preconditioning power,
    with or without EMA), learning-rate schedule and batch-size schedule, with Gaussian noise
    and a Gaussian start. The loss is the reported one (at the EMA when the optimizer has
    one), as in :func:`~nqm_mc.expected_loss` and the kept paths of :func:`~nqm_mc.simulate`.
    With a constant learning rate and batch size, any step up to 2^62 is reached by repeated
    squaring in O(G P log t) for P pairs. Otherwise the schedules are followed run by run:
    inside a run of constant hyperparameters, gaps of 64 steps or more between the steps
    named by the pairs are jumped by repeated squaring, shorter ones stepped, so
    piecewise-constant schedules cost O(G (U + K) (1 + J) log t) for U distinct steps, K runs
    and J distinct earlier steps, and schedules that change every step O(G T (1 + J)) for T
    the latest step. Parallel over groups.

    Parameters
    ----------
    model : NQM
        The model.
    optimizer : SGD, HeavyBall or Nesterov
        A linear optimizer (no gradient clipping); any learning-rate schedule.
    batch_size : int or BatchSchedule
        The batch size, or a batch-size schedule.
    pairs : array_like of int, shape (P, 2) or (2,)
        The pairs of steps (s, t); the covariance is symmetric, so their order within a pair
        does not matter, and (t, t) gives Var[L(t)].

    Returns
    -------
    LossCovariance
        Covariances, correlations and the marginal means and variances, per pair.

    Raises
    ------
    ParameterError
        If an argument is invalid, the optimizer is nonlinear, or the call would need too
        much memory.

    Notes
    -----
    Per group the state :math:`x = (\theta[, m][, e])` follows
    :math:`x(t+1) = A_t x(t) + b_t \xi(t)`. The mean and centred covariance run forward,
    :math:`\mu' = A\mu`, :math:`P' = APA^T + (c/B_t)\, bb^T`; at each earlier step :math:`s`
    of a pair the column :math:`u = P(s) e_r` (:math:`e_r` the readout) starts and moves as
    :math:`u' = A_t u`, so that :math:`u(t) = \mathrm{Cov}(x(t), x_r(s))` and its readout
    entry is :math:`c = \mathrm{Cov}(x_r(s), x_r(t))`. Isserlis' theorem for the jointly
    Gaussian pair gives :math:`\mathrm{Cov}(x_r(s)^2, x_r(t)^2) = 2c^2 + 4 m_s m_t c`, hence

    .. math::

        \mathrm{Cov}(L_s, L_t) = \sum_g n_g h_g^2 \left(\tfrac12 c_g^2
        + m_{s,g}\, m_{t,g}\, c_g\right),

    which reduces to :math:`\mathrm{Var}[L(t)]` at :math:`s = t` (``docs/theory.md``,
    section 3.8).

    Examples
    --------
    >>> from nqm_mc import NQM, SGD, loss_covariance
    >>> cov = loss_covariance(NQM.paper(dim=100), SGD(0.5), 8, [(10, 11), (10, 100), (5, 5)])
    >>> bool(cov.correlation[0] > cov.correlation[1] > 0), float(cov.correlation[2])
    (True, 1.0)
    """
    owner = "loss_covariance"
    _check_model(model, owner)
    _check_optimizer(optimizer, owner)
    pairs = _check_pairs(pairs, owner)
    batch = as_batch_schedule(batch_size, "batch_size", owner)
    constant = optimizer.is_constant and batch.is_constant
    if constant:
        cov, mean, var = _constant(model, optimizer, batch, pairs, owner)
    else:
        cov, mean, var = _per_step(model, optimizer, batch, pairs, owner)
    # each pair's own order: (s, t) as given
    swap = pairs[:, 0] > pairs[:, 1]
    mean[swap] = mean[swap][:, ::-1]
    var[swap] = var[swap][:, ::-1]
    diverged, reason = False, ""
    bad = ~(np.abs(cov) < DIVERGED) | ~(mean < DIVERGED).all(axis=1) | \
        ~(var < DIVERGED).all(axis=1)
    if bad.any():
        diverged = True
        st = stability(model, optimizer)
        first = int(pairs.max(axis=1)[bad].min())
        reason = (st.reason if not st.stable else "diverges") + \
            f"; the loss's moments overflow by step {first}"
        cov = np.where(bad, np.inf, cov)
        mean = np.where(np.isfinite(mean) & (mean < DIVERGED), mean, np.inf)
        var = np.where(np.isfinite(var) & (var < DIVERGED), var, np.inf)
    elif constant:
        st = stability(model, optimizer)
        if not st.stable:
            diverged, reason = True, st.reason
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        denom = np.sqrt(var[:, 0] * var[:, 1])
        ok = (denom > 0) & np.isfinite(denom) & ~bad
        corr = np.full(cov.shape, np.nan)
        corr[ok] = np.clip(cov[ok] / denom[ok], -1.0, 1.0)
    return LossCovariance(pairs, cov, corr, mean, var, diverged, reason)
