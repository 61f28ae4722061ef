"""The validation cases: one per feature. Adding an optimizer or a feature means adding a case.

A case names a model, an optimizer, a batch size (or batch schedule), a horizon and the number
of trajectories for the quick and full suites, and how to build its deliberately wrong
reference for the power check (``wrong``: "lr" = learning rate 5 % high, "momentum" = the
momentum term dropped, "batch" = the batch size halved).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nqm_mc import NQM, SGD, HeavyBall, Nesterov
from nqm_mc.spec import schedules as S
from nqm_mc.spec.noise import FiniteData, StudentT
from nqm_mc.spec.rotated import RotatedNQM

# a small model with multiplicities, a spread of curvatures and noise not equal to curvature
SMALL = NQM(np.array([1.0, 0.4, 0.1, 0.03, 0.01]), np.array([0.6, 0.5, 0.2, 0.05, 0.02]),
            multiplicities=[1, 2, 4, 8, 16], name="small")
SHIFTED = NQM(SMALL.curvatures, SMALL.noise_variances, SMALL.multiplicities,
              initial_mean=[1.0, -0.5, 2.0, 0.0, 1.5], initial_variance=0.5, name="shifted")
DETERMINISTIC = NQM(SMALL.curvatures, SMALL.noise_variances, SMALL.multiplicities,
                    initial_mean=1.0, initial_variance=0.0, name="deterministic start")
BINNED = NQM.binned(dim=2000, n_bins=30)
PAPER = NQM.paper(dim=1000)
SKIP = NQM.binned(dim=200, n_bins=20)
SKIPKW: dict[str, Any] = {"method": "skip", "log_records": 50, "nq": 1000, "nf": 5000}
# 64 directions in 8 groups of equal size: a loss with many effective degrees of freedom, so
# that a 5 % change of the learning rate moves its law far for the step kernel's cost
FLAT = NQM(np.geomspace(1, 0.1, 8), np.geomspace(1, 0.1, 8), multiplicities=[8] * 8,
           name="flat")

# pairs (s, t) of the joint-law cases: short lags (t, t + 1), (t, t + 5) and long ones (t, 2t)
_LAGS_STEP = ((5, 10), (20, 40), (40, 80), (10, 11), (40, 41), (60, 65), (2, 80))
_LAGS_SKIP = ((20, 40), (100, 200), (500, 1000), (1000, 1001), (1000, 1010), (5000, 5100),
              (20, 100_000), (99_000, 100_000))


@dataclass(frozen=True)
class Case:
    """One validation case.

    Attributes
    ----------
    name, feature : str
        Short name, and the feature it covers.
    model : NQM or RotatedNQM
        A RotatedNQM runs on the dense engines.
    optimizer : optimizer spec
        A linear optimizer.
    batch_size : int or BatchSchedule
        Batch size.
    n_steps : int
        Horizon.
    runs_quick, runs_full : int
        Trajectories in the quick and full suites (raised by the power design if needed).
    wrong : str
        The deliberately wrong reference: "lr", "momentum", "batch" or "aligned".
    dtype : str
        State precision.
    diverges : bool
        Both engines must call it divergent.
    quick : bool
        Part of the quick suite.
    tags : tuple
        Free labels.
    noise : noise law, optional
        A non-Gaussian law: only the means are tested (with sample standard errors).
    preconditioner : str, optional
        The diagonal of a fixed preconditioner ("jacobi") for a rotated model.
    """

    name: str
    feature: str
    model: Any
    optimizer: Any
    batch_size: Any
    n_steps: int
    runs_quick: int
    runs_full: int
    wrong: str = "lr"
    dtype: str = "float64"
    diverges: bool = False
    quick: bool = True
    tags: tuple[str, ...] = field(default_factory=tuple)
    noise: Any = None  # a non-Gaussian law: only the means are tested (with sample SEs)
    # a RotatedNQM runs on the dense engines; preconditioner: the diagonal of a fixed P
    preconditioner: Any = None
    # the Monte Carlo sampler: "step" (every update) or "skip" (exact transitions between
    # recorded steps); always passed explicitly, so "auto" never picks for a case
    method: str = "step"
    # about this many log-spaced recorded steps (0 = 25 evenly spaced)
    log_records: int = 0
    # a skip-against-step two-sample case: KS of the loss at this many recorded steps
    two_sample: bool = False
    compare_records: int = 4
    # a joint-law case: pairs of recorded steps (s, t) whose loss covariance and correlation
    # are tested against the exact engine (validation/joint.py)
    lag_pairs: tuple[tuple[int, int], ...] = ()


def _c(name: str, feature: str, model: Any, opt: Any, batch: Any, T: int, nq: int = 2000,
       nf: int = 20000, **kw: Any) -> Case:
    return Case(name, feature, model, opt, batch, T, nq, nf, **kw)


CASES = [
    _c("sgd", "SGD", SMALL, SGD(0.8), 4, 60),
    _c("sgd_p025", "preconditioning p = 0.25", SMALL, SGD(0.6, preconditioning=0.25), 4, 60,
       quick=False),
    _c("sgd_p05", "preconditioning p = 0.5", SMALL, SGD(0.4, preconditioning=0.5), 4, 60),
    _c("sgd_p1", "preconditioning p = 1", SMALL, SGD(0.3, preconditioning=1.0), 4, 40,
       quick=False),
    _c("heavy_ball", "heavy-ball momentum", SMALL, HeavyBall(0.1, 0.9), 4, 80, wrong="momentum"),
    _c("nesterov", "Nesterov momentum", SMALL, Nesterov(0.1, 0.8), 4, 80, wrong="momentum"),
    _c("sgd_ema", "EMA of iterates", SMALL, SGD(0.8, ema=0.9), 4, 60),
    _c("hb_ema_p", "momentum + EMA + preconditioning", SMALL,
       HeavyBall(0.08, 0.8, preconditioning=0.5, ema=0.95), 4, 80, wrong="momentum",
       quick=False),
    _c("piecewise", "piecewise-constant schedule", SMALL,
       SGD(S.PiecewiseConstant([20, 40], [0.9, 0.3, 0.1])), 4, 60),
    _c("step_decay", "step decay", SMALL, SGD(S.StepDecay(0.9, 0.5, 15)), 4, 60, quick=False),
    _c("exp_decay", "exponential decay", SMALL, SGD(S.ExponentialDecay(0.9, 0.97)), 4, 60,
       quick=False),
    _c("linear_decay", "linear decay", SMALL, HeavyBall(S.LinearDecay(0.15, 0.01, 60), 0.8), 4,
       60, quick=False),
    _c("cosine_warmup", "cosine decay behind linear warmup", SMALL,
       SGD(S.Warmup(S.CosineDecay(0.9, 50), 10)), 4, 60),
    _c("batch_schedule", "batch-size schedule", SMALL, SGD(0.6),
       S.PiecewiseConstantBatch([20, 40], [2, 8, 32]), 60, wrong="batch"),
    _c("initial_mean", "nonzero initial mean", SHIFTED, HeavyBall(0.1, 0.7), 4, 60),
    _c("deterministic", "deterministic start", DETERMINISTIC, SGD(0.7), 4, 60),
    _c("binned", "binned spectrum with multiplicities", BINNED, HeavyBall(0.3, 0.9), 16, 100,
       nq=1000, nf=8000, wrong="momentum"),
    _c("paper", "the paper's model (d = 1000)", PAPER, SGD(1.0), 64, 100, nq=500, nf=5000,
       quick=False),
    _c("batch_1", "small batch (B = 1)", SMALL, SGD(0.3), 1, 60),
    _c("batch_large", "large batch (B = 10^4)", SMALL, HeavyBall(0.2, 0.9), 10_000, 60,
       wrong="momentum", quick=False),
    _c("float32", "float32 state", SMALL, HeavyBall(0.1, 0.9, ema=0.9), 4, 80, dtype="float32",
       wrong="momentum"),
    # sqrt(beta) = 0.9: the h = 0.5 direction would be critically damped at alpha = 0.02;
    # h = 0.4 sits at alpha h = 0.008 and the top direction near its own critical point
    _c("near_critical", "near-critically damped momentum", SMALL, HeavyBall(0.0101, 0.81), 4,
       150, wrong="momentum"),
    # non-Gaussian noise with the model's covariance: the exact mean still holds (it depends on
    # second moments only); nu = 5 keeps the loss's variance finite, so the z-test applies
    _c("student_t", "Student-t noise (nu = 5)", SMALL, HeavyBall(0.1, 0.9), 4, 80,
       wrong="momentum", noise=StudentT(5.0)),
    _c("student_t_sgd", "Student-t noise (nu = 4.5), SGD + EMA", SMALL, SGD(0.8, ema=0.9), 4,
       60, noise=StudentT(4.5), quick=False),
    _c("finite_data", "finite dataset (n = 32), batches without replacement", SMALL, SGD(0.8),
       4, 60, noise=FiniteData(32, seed=1)),
    _c("finite_data_hb", "finite dataset (n = 20, B = 12), heavy ball", SMALL,
       HeavyBall(0.1, 0.8), 12, 80, wrong="momentum", noise=FiniteData(20, seed=2),
       quick=False),
    # non-aligned H and C (d = 31): the dense Monte Carlo against the full covariance
    # recurrence; "aligned" = the wrong reference that ignores the rotation (noise variances c
    # in H's basis instead of diag(U_H^T C U_H))
    _c("rotated_noise", "rotated noise covariance, P = H^0.5 (commutes with H)",
       RotatedNQM.from_nqm(SMALL, "noise", seed=1), SGD(0.5, preconditioning=0.5), 4, 60,
       wrong="aligned"),
    _c("rotated_both_hb", "rotated H and C, heavy ball + EMA",
       RotatedNQM.from_nqm(SMALL, "both", seed=2), HeavyBall(0.1, 0.9, ema=0.9), 4, 80,
       wrong="aligned", quick=False),
    _c("rotated_diag_precond", "rotated H, fixed diagonal preconditioner (does not commute)",
       RotatedNQM.from_nqm(SMALL, "hessian", seed=3), SGD(0.4), 4, 60,
       preconditioner="jacobi"),
    # skip-ahead sampler (method="skip"): the state drawn at about 50 log-spaced recorded
    # steps only, from its exact Gaussian transition, over long horizons (d = 500, 18 groups)
    _c("skip_sgd", "skip-ahead: SGD, T = 10^5", SKIP, SGD(1.0), 4, 100_000, **SKIPKW),
    _c("skip_sgd_1e6", "skip-ahead: SGD, T = 10^6", SKIP, SGD(1.0), 4, 1_000_000, quick=False,
       **SKIPKW),
    # a schedule that changes at every step: the transitions are built step by step
    _c("skip_cosine", "skip-ahead: cosine decay behind linear warmup, T = 2 10^4", SKIP,
       SGD(S.Warmup(S.CosineDecay(1.0, 20_000), 500)), 4, 20_000, **SKIPKW),
    _c("skip_cosine_2e5", "skip-ahead: cosine decay behind linear warmup, T = 2 10^5", SKIP,
       SGD(S.Warmup(S.CosineDecay(1.0, 200_000), 2000)), 4, 200_000, quick=False, **SKIPKW),
    _c("skip_batch", "skip-ahead: batch-size schedule", SKIP, SGD(0.5),
       S.PiecewiseConstantBatch([1000, 10_000], [4, 16, 64]), 100_000, wrong="batch",
       **SKIPKW),
    _c("skip_hb_ema", "skip-ahead: heavy ball + EMA", SKIP, HeavyBall(0.1, 0.9, ema=0.99), 4,
       100_000, wrong="momentum", **SKIPKW),
    _c("skip_nesterov_p", "skip-ahead: Nesterov + EMA + preconditioning p = 0.25", SKIP,
       Nesterov(0.05, 0.9, preconditioning=0.25, ema=0.999), 4, 100_000, wrong="momentum",
       quick=False, **SKIPKW),
    # sqrt(beta) = 0.9995: the lowest band (h = 0.002) is critically damped at alpha h =
    # (1 - sqrt(beta))^2, i.e. alpha = 1.25e-4; the others are underdamped
    _c("skip_near_critical", "skip-ahead: near-critical momentum (beta = 0.999)", SKIP,
       HeavyBall(1.25e-4, 0.999), 4, 100_000, wrong="momentum", **SKIPKW),
    _c("skip_float32", "skip-ahead: float32 state, heavy ball + EMA", SKIP,
       HeavyBall(0.1, 0.9, ema=0.9), 4, 100_000, dtype="float32", wrong="momentum", **SKIPKW),
    _c("skip_p05", "skip-ahead: preconditioning p = 0.5", SKIP, SGD(0.5, preconditioning=0.5),
       4, 100_000, **SKIPKW),
    # the skip-ahead sampler against the step kernel on one configuration (no exact engine in
    # the comparison): two-sample KS of the loss at 4 recorded steps and two-sample z of the
    # means; power: a step run with the learning rate 5 % high must be told apart
    # and two-sample z of the lag covariances of the kept paths (short lags at (50, 51),
    # (50, 55)); power also: the planted fresh-draw sampler against the step run
    _c("skip_vs_step", "skip-ahead against step: two-sample KS, means and lag covariances",
       FLAT, HeavyBall(0.2, 0.8), 4, 100, method="skip", log_records=20, two_sample=True,
       lag_pairs=((50, 51), (50, 55))),
    _c("skip_vs_step_ema", "skip-ahead against step with EMA: KS, means, lag covariances",
       FLAT, SGD(0.5, ema=0.9), 4, 100, method="skip", log_records=20, two_sample=True,
       lag_pairs=((50, 51), (50, 60))),
    # the joint law across records: sample covariance and correlation of the loss at pairs
    # of steps against loss_covariance, at short and long lags; power: the planted
    # fresh-draw sampler (every record drawn anew from the start; exact marginals)
    _c("joint_step", "joint law, step kernel: heavy ball + EMA, lag covariances", SMALL,
       HeavyBall(0.1, 0.9, ema=0.9), 4, 80, nq=20_000, nf=50_000,
       lag_pairs=_LAGS_STEP),
    _c("joint_step_schedule", "joint law, step kernel: Nesterov, cosine warmup, batch schedule",
       SHIFTED, Nesterov(S.Warmup(S.CosineDecay(0.15, 80), 10), 0.8),
       S.PiecewiseConstantBatch([30], [4, 16]), 80, nq=20_000, nf=50_000, quick=False,
       lag_pairs=_LAGS_STEP),
    _c("skip_joint", "joint law, skip-ahead: heavy ball + EMA, lag covariances to T = 10^5",
       SKIP, HeavyBall(0.1, 0.9, ema=0.99), 4, 100_000, method="skip", nq=10_000,
       nf=50_000, lag_pairs=_LAGS_SKIP),
    _c("skip_joint_sgd", "joint law, skip-ahead: SGD, lag covariances (the issue's t, 2t)",
       SKIP, SGD(1.0), 4, 1000, method="skip", nq=20_000, nf=50_000, quick=False,
       lag_pairs=((20, 40), (100, 200), (500, 1000), (20, 21), (500, 510))),
    _c("unstable", "unstable configuration (must diverge in both engines)", SMALL, SGD(3.0), 4,
       600, nq=64, nf=256, diverges=True),
]


def get_cases(quick: bool = True, names: list[str] | None = None) -> list[Case]:
    """Return the quick subset or all cases, optionally filtered by name substrings.

    Parameters
    ----------
    quick : bool, default True
        Only the cases of the quick suite.
    names : list of str, optional
        Keep cases whose name contains one of these.

    Returns
    -------
    list of Case
    """
    out = [c for c in CASES if (c.quick or not quick)]
    if names:
        out = [c for c in out if any(n in c.name for n in names)]
    return out
