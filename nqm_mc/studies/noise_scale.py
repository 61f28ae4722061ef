r"""The gradient noise scale of McCandlish et al. (2018), exactly, and its critical batch size.

McCandlish et al. take one SGD step with a learning rate chosen optimally for the current
gradient and find that a batch of size :math:`B` makes a fraction :math:`1 / (1 + B_{noise}/B)`
of the progress of the full gradient, with

.. math::

    B_{noise} = \frac{\operatorname{tr}(H C)}{G^T H G}, \qquad
    B_{simple} = \frac{\operatorname{tr}(C)}{|G|^2}

(:math:`G` the true gradient, :math:`H` the Hessian, :math:`C` the per-example gradient
covariance; :math:`B_{simple}` is the same with :math:`H` replaced by the identity). Summed over
a run this gives :math:`S(B) = S_{min}(1 + B_{crit}/B)` with :math:`B_{crit} \approx B_{noise}`:
the noise scale predicts the critical batch size.

On the NQM everything is diagonal in the eigenbasis: :math:`G_i = h_i \theta_i` and
:math:`C = \operatorname{diag}(c_i)`, so with multiplicities :math:`n_i`

.. math::

    B_{simple}(t) = \frac{\sum_i n_i c_i}{\sum_i n_i h_i^2 E[\theta_i(t)^2]}, \qquad
    B_{noise}(t) = \frac{\sum_i n_i h_i c_i}{\sum_i n_i h_i^3 E[\theta_i(t)^2]}.

These are ratios of expectations (the expected squared gradient norm in the denominator), not
expectations of the ratio; they are what a large-sample estimate of the two terms converges to.
:math:`E[\theta_i(t)^2]` comes from the exact engine, at the iterate :math:`\theta` (never the
EMA, which does not feed back into the gradient).

Preconditioning. The optimizer with power :math:`p` steps along :math:`M g` with
:math:`M = H^{-p}`. ``basis="raw"`` uses the model's :math:`H` and :math:`C` (what one measures
from raw per-example gradients); ``basis="preconditioned"`` uses the coordinates
:math:`\phi = M^{-1/2}\theta` in which the optimizer is plain SGD:
:math:`H' = M^{1/2} H M^{1/2} = H^{1-p}`, :math:`C' = M^{1/2} C M^{1/2} = C H^{-p}`,
:math:`G' = M^{1/2} G`, hence

.. math::

    B'_{simple} = \frac{\sum_i n_i c_i h_i^{-p}}{\sum_i n_i h_i^{2-p} E[\theta_i^2]}, \qquad
    B'_{noise} = \frac{\sum_i n_i h_i^{1-2p} c_i}{\sum_i n_i h_i^{3-2p} E[\theta_i^2]}

(McCandlish et al.'s :math:`\operatorname{tr}(MHMC) / (G^T M H M G)`, their preconditioned
form). The two agree at :math:`p = 0`.

References
----------
.. [1] S. McCandlish, J. Kaplan, D. Amodei and the OpenAI Dota Team, "An Empirical Model of
   Large-Batch Training", arXiv:1812.06162, 2018.
.. [2] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes? Insights From a
   Noisy Quadratic Model", NeurIPS 2019, arXiv:1907.04164.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.exact._args import _check_model, _check_optimizer
from nqm_mc.exact._moments import loss_at_kernel
from nqm_mc.exact.engine import expected_loss
from nqm_mc.exact.lowering import lower
from nqm_mc.spec._checks import ParameterError, check_choice, check_real, check_steps
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer
from nqm_mc.spec.schedules import BatchSchedule, as_batch_schedule, checked_values
from nqm_mc.studies.scaling import FAMILIES, Family, ScalingResult, optimizer_for, tune

__all__ = ["NoiseScale", "CriticalComparison", "noise_scale", "noise_scale_critical_batch",
           "noise_scale_from_moments"]

Basis = Literal["raw", "preconditioned"]
BASES = ("raw", "preconditioned")


@dataclass(frozen=True)
class NoiseScale:
    """The gradient noise scale along a run, exactly.

    Attributes
    ----------
    steps : ndarray of int64
        The steps.
    b_simple : ndarray
        tr(C) / E|G|^2 at each step (inf where the expected gradient vanishes).
    b_noise : ndarray
        tr(HC) / E[G^T H G] at each step.
    loss : ndarray
        E[L(t)] at the iterate theta.
    basis : str
        "raw" (the model's H and C) or "preconditioned" (H^(1-p), C H^(-p)).
    preconditioning : float
        The optimizer's power p.
    """

    steps: np.ndarray
    b_simple: np.ndarray
    b_noise: np.ndarray
    loss: np.ndarray
    basis: str
    preconditioning: float


def _weights(model: NQM, p: float, basis: str) -> tuple[np.ndarray, ...]:
    """Return the per-group weights (tr C, tr HC, |G|^2, G^T H G) of the chosen basis."""
    h, c, n = model.curvatures, model.noise_variances, model.multiplicities.astype(float)
    q = p if basis == "preconditioned" else 0.0
    hq = h ** (-q)
    return n * c * hq, n * h * c * hq * hq, n * h * h * hq, n * h ** 3 * hq * hq


def noise_scale_from_moments(model: NQM, second_moments: ArrayLike, *,
                             preconditioning: float = 0.0,
                             basis: Basis = "raw") -> tuple[np.ndarray, np.ndarray]:
    """Return (B_simple, B_noise) from per-group second moments E[theta_g^2].

    Parameters
    ----------
    model : NQM
        The model (its curvatures, noise variances and multiplicities).
    second_moments : array_like, shape (..., G)
        E[theta_g^2] per group (the last axis runs over groups), e.g. Monte Carlo estimates.
    preconditioning : float in [0, 1], default 0
        The power p (used by ``basis="preconditioned"`` only).
    basis : {"raw", "preconditioned"}
        Which H and C (module docstring).

    Returns
    -------
    b_simple, b_noise : ndarray, shape (...)
        The two noise scales (inf where the denominator is 0).

    Raises
    ------
    ParameterError
        If an argument is invalid or ``second_moments`` has the wrong last axis.
    """
    owner = "noise_scale_from_moments"
    _check_model(model, owner)
    p = check_real("preconditioning", preconditioning, owner, low=0.0, high=1.0,
                   closed=(True, True))
    basis = check_choice("basis", basis, owner, BASES)
    try:
        m2 = np.asarray(second_moments, dtype=np.float64)
    except (TypeError, ValueError):
        m2 = np.full(0, np.nan)
    if m2.ndim < 1 or m2.shape[-1] != model.n_groups or not np.all(m2 >= 0):
        raise ParameterError(f"The 'second_moments' parameter of {owner} must be an array of "
                             f"non-negative numbers with last axis of length {model.n_groups} "
                             f"(one per group). Got shape {np.shape(m2)} instead.")
    w_c, w_hc, w_g, w_hg = _weights(model, p, basis)
    with np.errstate(divide="ignore", invalid="ignore"):
        den_s = m2 @ w_g
        den_n = m2 @ w_hg
        b_simple = np.where(den_s > 0, w_c.sum() / den_s, np.inf)
        b_noise = np.where(den_n > 0, w_hc.sum() / den_n, np.inf)
    return b_simple, b_noise


def theta_second_moments(model: NQM, optimizer: Optimizer,
                         batch_size: int | BatchSchedule, steps: np.ndarray,
                         owner: str = "theta_second_moments") -> np.ndarray:
    """Return E[theta_g(t)^2] per recorded step and group, shape (R, G).

    Constant hyperparameters take O(G log t) per step (any horizon up to 2^62); schedules run
    the per-step recurrences up to the last step. The EMA, if any, is left out: it does not
    change the trajectory of theta.
    """
    opt = optimizer.with_(ema=None) if optimizer.ema is not None else optimizer
    batch = as_batch_schedule(batch_size, "batch_size", owner)
    if opt.is_constant and batch.is_constant:
        b0 = float(checked_values(batch, 1, "batch_size", owner)[0])
        form = lower(model, opt, b0, 1, owner)
        G, R = model.n_groups, steps.size
        om, ov, ot = (np.zeros((G, R)) for _ in range(3))
        with np.errstate(over="ignore", invalid="ignore"):
            loss_at_kernel(form, np.ascontiguousarray(steps, dtype=np.int64), om, ov, ot)
        h = model.curvatures
        n = model.multiplicities.astype(float)
        return np.asarray((2.0 * ot / (n * h)[:, None]).T)
    curve = expected_loss(model, opt, batch_size, record=steps, group_moments=True)
    assert curve.group_second_moment is not None
    return np.asarray(curve.group_second_moment)


def noise_scale(model: NQM, optimizer: Optimizer, batch_size: int | BatchSchedule,
                steps: ArrayLike, *, basis: Basis = "raw") -> NoiseScale:
    r"""Return the exact gradient noise scales B_simple(t) and B_noise(t) along a run.

    .. math::

        B_{simple}(t) = \frac{\sum_i n_i c_i}{\sum_i n_i h_i^2 E[\theta_i(t)^2]}, \qquad
        B_{noise}(t) = \frac{\sum_i n_i h_i c_i}{\sum_i n_i h_i^3 E[\theta_i(t)^2]}

    (``basis="raw"``; see the module docstring for ``"preconditioned"``), ratios of
    expectations computed from the exact engine's second moments of theta.

    Parameters
    ----------
    model : NQM
        The model.
    optimizer : SGD, HeavyBall or Nesterov
        A linear optimizer (any schedule, preconditioning; an EMA is ignored since the
        gradient is taken at theta).
    batch_size : int or BatchSchedule
        The batch size of the run (it shapes E[theta^2]; the noise scale's formula does not
        contain it).
    steps : array_like of int
        Steps at which to evaluate (sorted, repeated steps kept once). With constant
        hyperparameters any step up to 2^62 costs O(G log t); with schedules the recurrences
        run up to the last step.
    basis : {"raw", "preconditioned"}, default "raw"
        "raw": the model's H and C; "preconditioned": H^(1-p) and C H^(-p), the coordinates
        in which the preconditioned optimizer is plain SGD.

    Returns
    -------
    NoiseScale

    Raises
    ------
    ParameterError
        If an argument is invalid or the optimizer is nonlinear.

    References
    ----------
    .. [1] S. McCandlish et al., "An Empirical Model of Large-Batch Training",
       arXiv:1812.06162, 2018.

    Examples
    --------
    >>> from nqm_mc import NQM, SGD
    >>> model = NQM([1.0, 0.1], [1.0, 0.1])      # theta(0) ~ N(0, I)
    >>> ns = noise_scale(model, SGD(0.5), 1, [0])
    >>> round(float(ns.b_noise[0]), 4)          # (1 + 0.01) / (1 + 0.001)
    1.0090
    """
    owner = "noise_scale"
    _check_model(model, owner)
    _check_optimizer(optimizer, owner)
    basis = check_choice("basis", basis, owner, BASES)
    batch = as_batch_schedule(batch_size, "batch_size", owner)
    st = check_steps("steps", steps, owner)
    checked_values(batch, 1, "batch_size", owner)
    m2 = theta_second_moments(model, optimizer, batch, st, owner)
    p = optimizer.preconditioning
    b_simple, b_noise = noise_scale_from_moments(model, m2, preconditioning=p, basis=basis)
    loss = 0.5 * m2 @ (model.multiplicities * model.curvatures)
    return NoiseScale(st, np.asarray(b_simple), np.asarray(b_noise), np.asarray(loss), basis, p)


# ---------------------------------------------------------------------------- critical batch
@dataclass(frozen=True)
class CriticalComparison:
    """The noise scale's critical batch size beside the NQM's exact one.

    Attributes
    ----------
    family : str
        "sgd", "heavy_ball" or "ema".
    preconditioning : float
        The power p.
    target : float
        The loss target.
    basis : str
        "raw" or "preconditioned".
    batch_sizes : ndarray of int64
        The batch sizes tuned.
    steps : ndarray
        The NQM's tuned steps to target per batch size (inf where unreachable).
    b_simple_at_target, b_noise_at_target : ndarray
        The noise scales of each tuned run at the step it reaches the target (nan where the
        target is not reached).
    predicted : float
        The noise scale's prediction of the critical batch size: B_noise at the target on the
        tuned run at the smallest batch size (the measurement a practitioner makes in the
        small-batch regime).
    predicted_simple : float
        The same with B_simple.
    nqm_fit, nqm_doubling : float or None
        The NQM's exact critical batch size: B_crit of S(B) = S_min (1 + B_crit / B) fitted
        to the tuned steps (the definition the noise scale predicts), and the smallest B
        whose steps exceed twice perfect scaling from the smallest B (None if never).
    scaling : ScalingResult
        The tuned steps (from :func:`nqm_mc.studies.scaling.tune`).
    """

    family: str
    preconditioning: float
    target: float
    basis: str
    batch_sizes: np.ndarray
    steps: np.ndarray
    b_simple_at_target: np.ndarray
    b_noise_at_target: np.ndarray
    predicted: float
    predicted_simple: float
    nqm_fit: float | None
    nqm_doubling: float | None
    scaling: ScalingResult = field(repr=False)

    @property
    def ratio(self) -> float:
        """Noise-scale prediction over the NQM's fitted critical batch size (nan if none)."""
        if self.nqm_fit is None or not np.isfinite(self.predicted):
            return float("nan")
        return self.predicted / self.nqm_fit

    def to_row(self) -> dict[str, Any]:
        """Return a dict of the scalar results (one table row)."""
        return {"family": self.family, "p": self.preconditioning, "target": self.target,
                "basis": self.basis, "b_simple": self.predicted_simple,
                "b_noise": self.predicted, "nqm_fit": self.nqm_fit,
                "nqm_doubling": self.nqm_doubling, "ratio": self.ratio}


def noise_scale_critical_batch(model: NQM, target: float, *, family: Family = "sgd",
                               preconditioning: float = 0.0,
                               batch_sizes: ArrayLike | None = None, basis: Basis = "raw",
                               search: Literal["grid", "refine"] = "grid",
                               grid_size: tuple[int, int] | None = None) -> CriticalComparison:
    """Compare the noise scale's prediction of the critical batch size with the NQM's.

    The family is tuned at every batch size (:func:`nqm_mc.studies.scaling.tune`, exact first
    crossings); the NQM's critical batch size is read off the tuned steps. Along each tuned run
    the exact noise scales are evaluated at the step where it reaches the target; the
    prediction is B_noise there on the smallest batch size's run.

    Parameters
    ----------
    model : NQM
        The model.
    target : float
        Loss target, > 0.
    family : {"sgd", "heavy_ball", "ema"}, default "sgd"
        The optimizer family tuned.
    preconditioning : float in [0, 1], default 0
        The power p.
    batch_sizes : array_like of int, optional
        Batch sizes (default 2^0, 2^2, ..., 2^20).
    basis : {"raw", "preconditioned"}, default "raw"
        The H and C of the noise scale (see :func:`noise_scale`).
    search : {"grid", "refine"}, default "grid"
        Passed to :func:`~nqm_mc.studies.scaling.tune`.
    grid_size : (int, int), optional
        Passed to :func:`~nqm_mc.studies.scaling.tune`.

    Returns
    -------
    CriticalComparison

    Raises
    ------
    ParameterError
        If an argument is invalid.
    """
    owner = "noise_scale_critical_batch"
    _check_model(model, owner)
    target = check_real("target", target, owner, low=0.0)
    family = check_choice("family", family, owner, FAMILIES)
    basis = check_choice("basis", basis, owner, BASES)
    p = check_real("preconditioning", preconditioning, owner, low=0.0, high=1.0,
                   closed=(True, True))
    if batch_sizes is None:
        batch_sizes = 2 ** np.arange(0, 21, 2)
    res = tune(model, family, batch_sizes, target, preconditioning=p, search=search,
               grid_size=grid_size)
    nb = res.batch_sizes.size
    bs_at, bn_at = np.full(nb, np.nan), np.full(nb, np.nan)
    for i in range(nb):
        if not np.isfinite(res.steps[i]):
            continue
        opt = optimizer_for(res, i)
        ns = noise_scale(model, opt, int(res.batch_sizes[i]), [int(res.steps[i])], basis=basis)
        bs_at[i], bn_at[i] = ns.b_simple[0], ns.b_noise[0]
    crit = res.critical_batch_size()
    fit, dbl = crit["fit"], crit["doubling"]
    return CriticalComparison(family, p, target, basis, res.batch_sizes, res.steps, bs_at,
                              bn_at, float(bn_at[0]), float(bs_at[0]),
                              None if fit is None else float(fit),
                              None if dbl is None else float(dbl), res)

