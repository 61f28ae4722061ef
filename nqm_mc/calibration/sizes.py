r"""Final losses over model size, batch size and steps: a size-aware NQM fitted to a table.

The family (``docs/theory.md``, "Model size") is one shared power-law spectrum. Direction
:math:`i` has curvature :math:`h_i = h_1 i^{-a}` (times the learning rate: :math:`x_i =
\alpha h_i`), initial loss :math:`e_i = A i^{-g}` (:math:`g > 1`) and per-example gradient noise
:math:`\alpha c_i = S i^{-b}`. A model with N parameters trains the leading
:math:`d(N) = d_{\rm ref} (N / N_{\rm ref})^{\rho}` directions; the rest keep their initial
loss (approximation error). After K steps of SGD at batch size B the expected loss is, in closed
form,

.. math::

    L = L_\infty + \sum_{i \le d(N)} \Big[e_i (1 - x_i)^{2K}
        + \frac{S i^{-b}}{2 B (2 - x_i)} \big(1 - (1 - x_i)^{2K}\big)\Big]
        + \sum_{i > d(N)} e_i .

The first ``N_EXACT`` directions are summed one by one, the rest over log-spaced bins
(``BINS_PER_DECADE``, each represented by its geometric midpoint; real-valued d: a partial bin
carries its fraction), and the tail in closed form,
:math:`\sum_{i > d} e_i \approx A (d + 1/2)^{1-g} / (g - 1)`. Nested variants fix the dimension
law to :math:`\rho = 1`, the noise to the curvature (:math:`b = a`) or the floor to 0; the
``"perfect"`` variant has no noise and a loss that depends on B and K only through B K (perfect
batch scaling). Uncertainty comes from cross-validation: the model's own out-of-sample error on
held-out budgets and sizes sets the width of the bands (split-conformal).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import optimize

from nqm_mc.calibration.size_model import (
    _D_MAX,
    _FLOOR_MAX,
    COORDS,
    FAMILIES,
    TableFit,
    TablePrediction,
    _Data,
    _data,
    _Model,
    predict_final_loss,
)
from nqm_mc.calibration.size_model import BINS_PER_DECADE as BINS_PER_DECADE  # re-exported
from nqm_mc.calibration.size_model import N_EXACT as N_EXACT  # re-exported
from nqm_mc.calibration.size_plans import critical_batch_sizes, plan
from nqm_mc.calibration.table import LossTable, make_table
from nqm_mc.spec._checks import ParameterError, check_choice, check_int, check_real

__all__ = ["FAMILIES", "TableFit", "TablePrediction", "fit_table", "cross_validate",
           "conformal_width", "predict_final_loss", "plan", "critical_batch_sizes",
           "group_folds"]


# ------------------------------------------------------------------ fitting
def _bounds(model: _Model, lr_max: float) -> tuple[np.ndarray, np.ndarray]:
    ub_tau = math.log(2.0 / lr_max) - 1e-9 if not model.spec["perfect"] else 10.0
    lo = np.array([-40.0, 0.02, -40.0, 1.0005, -60.0, -2.0, 0.0, 0.05, 0.0])
    hi = np.array([ub_tau, 4.0, 40.0, 6.0, 60.0, 6.0, math.log(_D_MAX), 3.0,
                   0.0 if model.spec["floor"] == "zero" else _FLOOR_MAX])
    return lo, hi


class _Problem:
    def __init__(self, model: _Model, data: _Data, scale: float) -> None:
        self.model = model
        self.data = data
        self.scale = scale

    def residuals(self, z: np.ndarray) -> np.ndarray:
        x = self.model.full(z)
        d = self.data
        with np.errstate(all="ignore"):
            r = d.logy - np.log(self.model.loss(x, d.N, d.B, d.K, d.lr, self.scale))
        r[~np.isfinite(r)] = 30.0
        return r

    def linear(self, x: np.ndarray) -> np.ndarray | None:
        """Set log A, log S and the floor by non-negative least squares in relative error."""
        d = self.data
        with np.errstate(all="ignore"):
            learned, noise, approx = self.model.parts(x, d.N, d.B, d.K, d.lr)
        y = np.exp(d.logy)
        cols = [learned + approx]
        if self.model.free[4]:
            cols.append(noise)
        if self.model.free[8]:
            cols.append(np.full(y.size, self.scale))
        M = np.column_stack(cols) / y[:, None]
        if not np.all(np.isfinite(M)):
            return None
        coef, _ = optimize.nnls(M, np.ones(y.size))
        out = x.copy()
        out[2] = math.log(max(coef[0], 1e-30))
        k = 1
        if self.model.free[4]:
            out[4] = math.log(max(coef[k], 1e-30))
            k += 1
        if self.model.free[8]:
            out[8] = min(coef[k], _FLOOR_MAX * 0.999)
        return out


def _lsq(problem: _Problem, z0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
         max_nfev: int | None, tol: float = 1e-9) -> Any:
    return optimize.least_squares(problem.residuals, np.clip(z0, lo, hi), bounds=(lo, hi),
                                  method="trf", x_scale=1.0, diff_step=1e-7, ftol=tol,
                                  xtol=tol, gtol=tol, max_nfev=max_nfev)


def _fit_coords(problem: _Problem, lo9: np.ndarray, hi9: np.ndarray, n_starts: int,
                rng: np.random.Generator, warm: Sequence[np.ndarray] = ()) -> Any:
    model = problem.model
    free = model.free
    lo, hi = lo9[free], hi9[free]
    cands: list[tuple[float, np.ndarray]] = []
    for xw in warm:
        z = np.clip(np.asarray(xw)[free], lo, hi)
        r = problem.residuals(z)
        cands.append((float(r @ r), z))
    if n_starts == 0 and cands:  # a warm start only (fold refits)
        z0 = min(cands, key=lambda c: c[0])[1]
        return _lsq(problem, z0, lo, hi, 60, 1e-6)
    for _ in range(8 * n_starts):
        x = np.zeros(9)
        x[0] = min(hi9[0], math.log(2.0)) - rng.uniform(0.05, 8.0)
        x[1] = rng.uniform(0.3, 2.0)
        x[3] = rng.uniform(1.05, 2.5)
        x[5] = x[1] + rng.uniform(-0.5, 1.0)
        x[6] = rng.uniform(math.log(30.0), math.log(1e7))
        x[7] = rng.uniform(0.3, 1.5)
        x = model.full(np.clip(x, lo9, hi9)[free])
        xs = problem.linear(x)
        if xs is None:
            continue
        z = np.clip(xs[free], lo, hi)
        r = problem.residuals(z)
        cands.append((float(r @ r), z))
    if not cands:
        raise ParameterError("no start could be evaluated")
    cands.sort(key=lambda c: c[0])
    scouts = []
    for _, z in cands[:max(n_starts, len(warm))]:
        try:
            scouts.append(_lsq(problem, z, lo, hi, 25))
        except (ValueError, np.linalg.LinAlgError):
            continue
    scouts.sort(key=lambda f: f.cost)
    best = None
    for f in scouts[:2]:
        try:
            g = _lsq(problem, f.x, lo, hi, None)
        except (ValueError, np.linalg.LinAlgError):
            continue
        if best is None or g.cost < best.cost:
            best = g
    return best if best is not None else scouts[0]


def _prepare(table: LossTable, family: str, n_ref: float | None = None,
             lr_ref: float | None = None) -> tuple[_Model, _Data, float, float]:
    if n_ref is None:
        n_ref = float(np.exp(np.mean(np.log(table.N)))) if table.has_sizes else 1.0
    if lr_ref is None:
        lr_ref = float(np.exp(np.mean(np.log(table.learning_rate)))) \
            if table.has_learning_rates else 1.0
    model = _Model(family, n_ref)
    data = _data(table, n_ref, lr_ref)
    return model, data, n_ref, lr_ref


def _fit_once(table: LossTable, family: str, n_starts: int, seed: int,
              warm: Sequence[np.ndarray] = (), n_ref: float | None = None,
              lr_ref: float | None = None,
              scale: float | None = None) -> tuple[np.ndarray, Any, float, float, float]:
    """Fit one table; folds pass the reference size, rate and loss unit of the full fit."""
    model, data, n_ref, lr_ref = _prepare(table, family, n_ref, lr_ref)
    lowest = float(np.min(table.loss))
    scale = lowest if scale is None else scale
    problem = _Problem(model, data, scale)
    lo, hi = _bounds(model, float(np.max(data.lr)))
    hi[8] = min(hi[8], _FLOOR_MAX * lowest / scale)
    best = _fit_coords(problem, lo, hi, n_starts, np.random.default_rng(seed), warm)
    return model.full(best.x), best, n_ref, lr_ref, scale


def group_folds(table: LossTable, by: str) -> list[np.ndarray]:
    """Index arrays of the folds that leave one budget (``by="budget"``) or size out.

    Budgets are the ``C`` column when given, else N B K; values within 1 % are one budget.
    """
    by = check_choice("by", by, "group_folds", ("budget", "size"))
    if by == "size":
        if not table.has_sizes:
            return []
        v = table.N
    else:
        v = table.budgets
    key = np.round(np.log(v) / math.log(1.01)).astype(np.int64)
    return [np.flatnonzero(key == k) for k in np.unique(key)]


def cross_validate(table: LossTable, predictor: Callable[[LossTable, LossTable], np.ndarray],
                   by: Sequence[str] = ("budget", "size")) -> dict[str, Any]:
    """Out-of-fold log residuals of any model: leave one budget out and/or one size out.

    Parameters
    ----------
    table : LossTable
        The runs.
    predictor : callable
        ``predictor(train, test)`` returns predicted final losses for the rows of ``test``
        after fitting on ``train``.
    by : sequence of {"budget", "size"}
        The fold kinds.

    Returns
    -------
    dict
        For each kind: ``residuals`` (log measured - log predicted, per row, nan where the row
        could not be predicted), ``mse`` (mean over rows) and ``folds`` (index arrays).
    """
    out: dict[str, Any] = {}
    for kind in by:
        folds = group_folds(table, kind)
        res = np.full(len(table), np.nan)
        for idx in folds:
            keep = np.ones(len(table), bool)
            keep[idx] = False
            if keep.sum() < 10:
                continue
            pred = np.asarray(predictor(table.subset(keep), table.subset(idx)), float)
            with np.errstate(all="ignore"):
                res[idx] = np.log(table.loss[idx]) - np.log(pred)
        ok = np.isfinite(res)
        out[kind] = {"residuals": res, "mse": float(np.mean(res[ok] ** 2)) if ok.any()
                     else math.nan, "folds": folds, "n": int(ok.sum())}
    return out


def conformal_width(residuals: np.ndarray, level: float) -> float:
    """Return the split-conformal half-width: the ceil((n + 1) level)-th smallest |residual|.

    Infinite when there are too few residuals for the level.
    """
    r = np.abs(np.asarray(residuals, float))
    r = np.sort(r[np.isfinite(r)])
    k = math.ceil((r.size + 1) * level)
    return float(r[k - 1]) if 1 <= k <= r.size else math.inf


def fit_table(table: LossTable, *, family: str = "nqm", uncertainty: str = "cv",
              n_starts: int = 4, seed: int = 0, level: float = 0.95) -> TableFit:
    """Fit the size-aware NQM to a final-loss table.

    Parameters
    ----------
    table : LossTable
        The runs (:func:`~nqm_mc.calibration.table.read_table`), at least 10.
    family : str, default "nqm"
        A key of :data:`FAMILIES`: "nqm" (all nine coordinates), "nqm-aligned" (noise spectrum
        tied to the curvature), "nqm-linear" (d proportional to N), "nqm-nofloor", "nqs"
        (both ties: the NQS's seven-parameter form) or "perfect" (noise-free, B K only).
    uncertainty : {"cv", "none"}, default "cv"
        "cv": refit leaving out each budget and each model size in turn; the out-of-fold log
        residuals give the band half-width (split-conformal at ``level``) and the fold fits
        the bands of derived quantities (plans, critical batch sizes). "none": no bands.
    n_starts : int, default 4
        Starts polished (from ``8 n_starts`` seeded candidates).
    seed : int, default 0
        Seed of the starts (results are reproducible for a seed).
    level : float, default 0.95
        Level of the bands.

    Returns
    -------
    TableFit

    Raises
    ------
    ParameterError
        If an argument is invalid or the table has fewer than 10 runs.
    """
    owner = "fit_table"
    if not isinstance(table, LossTable):
        raise ParameterError(f"The 'table' parameter of {owner} must be a LossTable (see "
                             f"read_table, make_table). Got {type(table).__name__} instead.")
    family = check_choice("family", family, owner, tuple(FAMILIES))
    uncertainty = check_choice("uncertainty", uncertainty, owner, ("cv", "none"))
    n_starts = check_int("n_starts", n_starts, owner, low=1, high=1000)
    seed = check_int("seed", seed, owner, low=0, high=2 ** 64 - 1)
    level = check_real("level", level, owner, low=0.0, high=1.0)
    if len(table) < 10:
        raise ParameterError(f"The 'table' parameter of {owner} needs at least 10 runs. Got "
                             f"{len(table)} instead.")
    t0 = time.perf_counter()
    x, best, n_ref, lr_ref, scale = _fit_once(table, family, n_starts, seed)
    res = best.fun
    warnings: list[str] = []
    model = _Model(family, n_ref)
    lo, hi = _bounds(model, 1.0)
    for j, name in enumerate(COORDS):
        if not model.free[j] or j == 0:
            continue
        if x[j] - lo[j] < 1e-4 or hi[j] - x[j] < 1e-4:
            warnings.append(f"{name} sits at a bound of its range ([{lo[j]:.3g}, "
                            f"{hi[j]:.3g}]).")
    if not table.has_sizes:
        warnings.append("the table has no N column: one model size; predictions ignore N.")
    fit = TableFit(table, family, x, n_ref, lr_ref, scale,
                   {"cost": float(best.cost), "rms": float(np.sqrt(np.mean(res ** 2))),
                    "nfev": int(best.nfev)}, warnings, level)
    if uncertainty == "cv":
        fold_coords: list[np.ndarray] = []

        def predictor(train: LossTable, test: LossTable) -> np.ndarray:
            xf, _, _, _, _ = _fit_once(train, family, 0, seed, warm=[x], n_ref=n_ref,
                                       lr_ref=lr_ref, scale=scale)
            fold_coords.append(xf)
            return fit._eval(xf, test.N if test.has_sizes else np.full(len(test), n_ref),
                             test.B, test.K,
                             test.learning_rate if table.has_learning_rates else None)

        cv = cross_validate(table, predictor)
        pooled = np.concatenate([cv[k]["residuals"] for k in cv])
        fit.width = conformal_width(pooled, level)
        fit.cv = {"mse_budget": cv["budget"]["mse"], "mse_size": cv["size"]["mse"],
                  "residuals_budget": cv["budget"]["residuals"],
                  "residuals_size": cv["size"]["residuals"], "n_folds":
                  len(cv["budget"]["folds"]) + len(cv["size"]["folds"]),
                  "fold_coords": fold_coords}
        if not np.isfinite(fit.width):
            warnings.append("too few out-of-fold residuals for bands at this level.")
    fit.info["seconds"] = time.perf_counter() - t0
    return fit


def table_from_rows(rows: Any) -> LossTable:
    """Return a LossTable from rows (N, B, K, loss) (for tests and examples)."""
    r = np.asarray(rows, float)
    return make_table(r[:, 1], r[:, 2], r[:, 3], N=r[:, 0])
