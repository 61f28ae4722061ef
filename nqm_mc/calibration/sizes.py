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
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import optimize

from nqm_mc.calibration.table import LossTable, make_table
from nqm_mc.spec._checks import ParameterError, check_choice, check_int, check_real

__all__ = ["FAMILIES", "TableFit", "TablePrediction", "fit_table", "cross_validate",
           "conformal_width", "predict_final_loss", "plan", "critical_batch_sizes",
           "group_folds"]

#: coordinates of the size-aware family, in order
COORDS = ("log tau1", "a", "log A", "g", "log S", "b", "log d_ref", "rho", "floor/min loss")
#: the nested families: which coordinates are fitted, and how the others are tied
FAMILIES: dict[str, dict[str, Any]] = {
    "nqm": {"noise": "free", "dim": "power", "floor": "free", "perfect": False},
    "nqm-aligned": {"noise": "aligned", "dim": "power", "floor": "free", "perfect": False},
    "nqm-linear": {"noise": "free", "dim": "linear", "floor": "free", "perfect": False},
    "nqm-nofloor": {"noise": "free", "dim": "power", "floor": "zero", "perfect": False},
    "nqs": {"noise": "aligned", "dim": "linear", "floor": "free", "perfect": False},
    "perfect": {"noise": "none", "dim": "power", "floor": "free", "perfect": True},
}
N_EXACT = 16
BINS_PER_DECADE = 16
_D_MAX = 1e15
_FLOOR_MAX = 0.98  # the floor stays below 98 % of the lowest measured loss


def _free_mask(spec: dict[str, Any]) -> np.ndarray:
    free = np.ones(9, dtype=bool)
    if spec["noise"] in ("aligned", "none"):
        free[5] = False
    if spec["noise"] == "none":
        free[4] = False
    if spec["dim"] == "linear":
        free[7] = False
    if spec["floor"] == "zero":
        free[8] = False
    return free


class _Model:
    """Vectorised closed-form final loss of the family for a set of runs."""

    def __init__(self, family: str, n_ref: float) -> None:
        self.family = family
        self.spec = FAMILIES[family]
        self.free = _free_mask(self.spec)
        self.n_ref = float(n_ref)
        self.i_exact = np.arange(1, N_EXACT + 1, dtype=float)

    def full(self, z: np.ndarray) -> np.ndarray:
        """Free coordinates to all nine (ties applied)."""
        x = np.zeros(9)
        x[self.free] = z
        if self.spec["noise"] == "aligned":
            x[5] = x[1]
        if self.spec["noise"] == "none":
            x[4], x[5] = -np.inf, 0.0
        if self.spec["dim"] == "linear":
            x[7] = 1.0
        if self.spec["floor"] == "zero":
            x[8] = 0.0
        return x

    def parts(self, x: np.ndarray, N: np.ndarray, B: np.ndarray, K: np.ndarray,
              lr: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per run: (learned loss per unit A, noise loss per unit S, approximation per unit A)."""
        tau1, a, g, b, rho = math.exp(x[0]), x[1], x[3], x[5], x[7]
        d = np.clip(math.exp(x[6]) * (N / self.n_ref) ** rho, 1.0, _D_MAX)
        top = float(d.max()) + 0.5
        m = N_EXACT
        if top > m + 0.5:
            # a fixed grid in log index (BINS_PER_DECADE), cut at the largest d: each run's
            # value does not depend on the other runs evaluated with it
            nb = max(1, math.ceil(BINS_PER_DECADE * math.log10(top / (m + 0.5))))
            edges = (m + 0.5) * 10.0 ** (np.arange(nb + 1) / BINS_PER_DECADE)
            reps = np.sqrt(edges[:-1] * edges[1:])
            wb = np.clip(np.minimum(edges[None, 1:], d[:, None] + 0.5) - edges[None, :-1],
                         0.0, None)
        else:
            reps = np.zeros(0)
            wb = np.zeros((d.size, 0))
        idx = np.concatenate([self.i_exact, reps])
        w = np.concatenate([np.clip(d[:, None] - self.i_exact[None, :] + 1.0, 0.0, 1.0), wb],
                           axis=1)
        with np.errstate(over="ignore", under="ignore", divide="ignore", invalid="ignore"):
            if self.spec["perfect"]:
                decay = np.exp(-2.0 * tau1 * (B * K)[:, None] * idx[None, :] ** -a)
                noise = np.zeros(d.size)
            else:
                xr = (tau1 * lr)[:, None] * idx[None, :] ** -a
                decay = np.exp(2.0 * K[:, None] * np.log(np.abs(1.0 - xr)))
                noise = np.sum(w * 0.5 * lr[:, None] * idx[None, :] ** -b * (1.0 - decay)
                               / (B[:, None] * (2.0 - xr)), axis=1)
            learned = np.sum(w * idx[None, :] ** -g * decay, axis=1)
            approx = (d + 0.5) ** (1.0 - g) / (g - 1.0)
        return learned, noise, approx

    def loss(self, x: np.ndarray, N: np.ndarray, B: np.ndarray, K: np.ndarray,
             lr: np.ndarray, scale: float) -> np.ndarray:
        learned, noise, approx = self.parts(x, N, B, K, lr)
        A = math.exp(x[2])
        S = math.exp(x[4]) if np.isfinite(x[4]) else 0.0
        return A * (learned + approx) + S * noise + x[8] * scale


@dataclass
class _Data:
    N: np.ndarray
    B: np.ndarray
    K: np.ndarray
    lr: np.ndarray
    logy: np.ndarray


def _data(table: LossTable, n_fill: float, lr_ref: float) -> _Data:
    N = table.N if table.has_sizes else np.full(len(table), n_fill)
    lr = table.learning_rate / lr_ref if table.has_learning_rates else np.ones(len(table))
    return _Data(N.astype(float), table.B.astype(float), table.K.astype(float), lr,
                 np.log(table.loss))


class TablePrediction(dict):  # type: ignore[type-arg, unused-ignore]
    """Predicted final losses with bands.

    Keys ``value``, ``lo``, ``hi`` (arrays), ``level``, ``flags`` (one list of reasons per
    row: extrapolation beyond the fitted data) and ``extrapolated``.
    """

    @property
    def value(self) -> np.ndarray:
        """The predictions."""
        return np.asarray(self["value"])

    @property
    def lo(self) -> np.ndarray:
        """Lower ends of the bands."""
        return np.asarray(self["lo"])

    @property
    def hi(self) -> np.ndarray:
        """Upper ends of the bands."""
        return np.asarray(self["hi"])


class TableFit:
    """A size-aware NQM fitted to a final-loss table (see :func:`fit_table`).

    Attributes
    ----------
    table : LossTable
        The runs fitted.
    family : str
        The family (a key of :data:`FAMILIES`).
    coords : ndarray, shape (9,)
        Best-fit coordinates (:data:`COORDS`).
    params : dict
        ``tau1, a, A, g, S, b, d_ref, rho, floor, N_ref`` (``tau1`` is the learning rate times
        the top curvature; with a learning-rate column, at the reference rate ``lr_ref``).
    cv : dict or None
        Cross-validation: per-row out-of-fold log residuals of leave-one-budget-out and
        leave-one-size-out, their MSE, and the fold fits' coordinates.
    width : float
        Half-width of the bands in log loss (0 without uncertainty).
    level : float
        Level of the bands.
    info, warnings
        Fit cost, time, rms; what to be careful about.
    """

    def __init__(self, table: LossTable, family: str, coords: np.ndarray, n_ref: float,
                 lr_ref: float, scale: float, info: dict[str, Any], warnings: list[str],
                 level: float) -> None:
        self.table = table
        self.family = family
        self.coords = np.asarray(coords, float)
        self.n_ref = n_ref
        self.lr_ref = lr_ref
        self.scale = scale
        self.info = info
        self.warnings = warnings
        self.level = level
        self.cv: dict[str, Any] | None = None
        self.width = 0.0
        self._model = _Model(family, n_ref)
        x = self.coords
        self.params = {"tau1": math.exp(x[0]), "a": float(x[1]), "A": math.exp(x[2]),
                       "g": float(x[3]), "S": math.exp(x[4]) if np.isfinite(x[4]) else 0.0,
                       "b": float(x[5]), "d_ref": math.exp(x[6]), "rho": float(x[7]),
                       "floor": float(x[8]) * scale, "N_ref": n_ref}

    # -------------------------------------------------------------- evaluation
    def _eval(self, coords: np.ndarray, N: Any, B: Any, K: Any, lr: Any = None) -> np.ndarray:
        N = np.asarray(N, float)
        lr_arr = np.ones_like(N) if lr is None else np.asarray(lr, float) / self.lr_ref
        return self._model.loss(coords, N, np.asarray(B, float), np.asarray(K, float),
                                lr_arr, self.scale)

    def loss(self, N: Any, B: Any, K: Any, learning_rate: Any = None) -> np.ndarray:
        """Best-fit final loss at arrays (N, B, K) (no checks, no band; see :meth:`predict`)."""
        N, B, K = np.broadcast_arrays(np.asarray(N, float), np.asarray(B, float),
                                      np.asarray(K, float))
        shape = N.shape
        lr = None if learning_rate is None else np.broadcast_to(
            np.asarray(learning_rate, float), shape).ravel()
        return self._eval(self.coords, N.ravel(), B.ravel(), K.ravel(), lr).reshape(shape)

    def asymptote(self, N: Any) -> np.ndarray:
        """Loss of size N after infinitely many steps at infinite batch: floor + approximation."""
        N = np.atleast_1d(np.asarray(N, float))
        _, _, approx = self._model.parts(self.coords, N, np.ones_like(N), np.ones_like(N),
                                         np.ones_like(N))
        return self.params["A"] * approx + self.params["floor"]

    def members(self) -> list[np.ndarray]:
        """Coordinates of the best fit and of the cross-validation fold fits."""
        out = [self.coords]
        if self.cv is not None:
            out += [np.asarray(c) for c in self.cv["fold_coords"]]
        return out

    def ranges(self) -> dict[str, tuple[float, float]]:
        """Ranges of the fitted data: N, B, K and B K."""
        t = self.table
        n = t.N if t.has_sizes else np.array([self.n_ref])
        return {"N": (float(n.min()), float(n.max())), "B": (float(t.B.min()), float(t.B.max())),
                "K": (float(t.K.min()), float(t.K.max())),
                "BK": (float(t.tokens.min()), float(t.tokens.max()))}

    def flags(self, N: np.ndarray, B: np.ndarray, K: np.ndarray,
              factor: float = 2.0) -> list[list[str]]:
        """Reasons why each row lies outside the fitted data (empty list: inside)."""
        r = self.ranges()
        out = []
        for n, b, k in zip(N, B, K, strict=True):
            f = []
            for name, v in (("N", n), ("B", b), ("K", k), ("B K", b * k)):
                lo, hi = r["BK" if name == "B K" else name]
                if name == "N" and not self.table.has_sizes and v != self.n_ref:
                    f.append("the table has one model size: N is not informative")
                    continue
                if v > factor * hi:
                    f.append(f"{name} = {v:.3g} is {v / hi:.3g}x the largest fitted ({hi:.3g})")
                elif v < lo / factor:
                    f.append(f"{name} = {v:.3g} is {lo / v:.3g}x below the smallest fitted "
                             f"({lo:.3g})")
            out.append(f)
        return out

    def predict(self, N: Any, B: Any, K: Any, learning_rate: Any = None) -> TablePrediction:
        """Predict final losses with bands (see :func:`predict_final_loss`)."""
        return predict_final_loss(self, np.column_stack(np.broadcast_arrays(
            np.atleast_1d(np.asarray(N, float)), np.atleast_1d(np.asarray(B, float)),
            np.atleast_1d(np.asarray(K, float)))), learning_rate=learning_rate)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description."""
        cv = None
        if self.cv is not None:
            cv = {k: v for k, v in self.cv.items() if k != "fold_coords"}
            cv = {k: (np.asarray(v).tolist() if isinstance(v, np.ndarray) else v)
                  for k, v in cv.items()}
        return {"kind": "nqm_mc.table_calibration", "family": self.family,
                "params": self.params, "coords": self.coords.tolist(),
                "coordinate_names": list(COORDS), "band_half_width_log": self.width,
                "level": self.level, "cv": cv, "info": self.info, "warnings": self.warnings,
                "ranges": self.ranges(), "runs": len(self.table)}

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"TableFit({self.family}: {p}; rms={self.info['rms']:.3g}, runs={len(self.table)})"


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


# ------------------------------------------------------------------ predictions
def _rows(rows: Any, owner: str) -> np.ndarray:
    try:
        r = np.asarray(rows, dtype=float)
    except (TypeError, ValueError):
        r = np.zeros((0, 0))
    if r.ndim == 1 and r.size == 3:
        r = r[None, :]
    if r.ndim != 2 or r.shape[1] != 3 or r.shape[0] == 0:
        raise ParameterError(f"The 'rows' parameter of {owner} must be a non-empty list of "
                             f"(N, B, K) rows. Got {rows!r} instead.")
    for j, name in enumerate(("N", "B", "K")):
        bad = ~np.isfinite(r[:, j]) | (r[:, j] <= 0)
        if j > 0:
            bad |= (r[:, j] < 1) | (r[:, j] != np.round(r[:, j]))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "> 0" if j == 0 else "an integer >= 1"
            raise ParameterError(f"The 'rows' parameter of {owner} must hold {name} {what}. "
                                 f"Got {r[i, j]!r} in row {i} instead.")
    return r


def predict_final_loss(fit: TableFit, rows: Any, *, learning_rate: Any = None) -> TablePrediction:
    """Predict the final loss of runs (N, B, K), with bands and extrapolation flags.

    Parameters
    ----------
    fit : TableFit
        The fit (:func:`fit_table`).
    rows : array_like, shape (n, 3)
        Model size, batch size and steps of each run.
    learning_rate : float or array_like, optional
        Learning rates (only for fits of tables with a learning-rate column; default: the
        reference rate of the fit).

    Returns
    -------
    TablePrediction
        ``value``, ``lo``, ``hi`` (arrays), ``level``, ``flags`` (per row, the reasons it lies
        outside the fitted data: N, B, K or B K more than 2x beyond the fitted range) and
        ``extrapolated`` (bool per row).

    Raises
    ------
    ParameterError
        If a row is invalid, or a model size other than the fitted one is asked of a fit
        without sizes.
    """
    owner = "predict_final_loss"
    if not isinstance(fit, TableFit):
        raise ParameterError(f"The 'fit' parameter of {owner} must be a TableFit. Got "
                             f"{type(fit).__name__} instead.")
    r = _rows(rows, owner)
    no_size = not fit.table.has_sizes
    if no_size:
        r = r.copy()
        r[:, 0] = fit.n_ref
    lr = None
    if learning_rate is not None:
        if not fit.table.has_learning_rates:
            raise ParameterError(f"The 'learning_rate' parameter of {owner} needs a fit of a "
                                 "table with a learning-rate column; this fit shares one "
                                 f"unknown rate. Got {learning_rate!r}.")
        lr = np.broadcast_to(np.asarray(learning_rate, float), (r.shape[0],))
        if np.any(~np.isfinite(lr) | (lr <= 0)):
            raise ParameterError(f"The 'learning_rate' parameter of {owner} must be > 0. Got "
                                 f"{learning_rate!r} instead.")
        top = fit.params["tau1"] * lr / fit.lr_ref
        if np.any(top >= 2.0) and not fit._model.spec["perfect"]:
            i = int(np.flatnonzero(top >= 2.0)[0])
            raise ParameterError(f"learning rate {lr[i]:.4g} is beyond the fitted stability "
                                 f"limit {2.0 * fit.lr_ref / fit.params['tau1']:.4g}: the run "
                                 "diverges on the fitted model.")
    v = fit._eval(fit.coords, r[:, 0], r[:, 1], r[:, 2], lr)
    w = fit.width
    flags = fit.flags(r[:, 0], r[:, 1], r[:, 2])
    if no_size:
        flags = [f + ["the fit has one model size (no N column): N is ignored"] for f in flags]
    return TablePrediction(value=v, lo=v * math.exp(-w), hi=v * math.exp(w), level=fit.level,
                           flags=flags, extrapolated=np.array([bool(f) for f in flags]))


def _compute_unit(fit: TableFit) -> float:
    t = fit.table
    if np.all(np.isfinite(t.C)) and t.has_sizes:
        return float(np.median(t.C / (t.N * t.B * t.K)))
    return 1.0


def plan(fit: TableFit, compute: float, *, max_steps: float | None = None,
         max_batch: float | None = None, sizes: Any = None,
         batch_sizes: Any = None) -> dict[str, Any]:
    """Return the compute-optimal (N, B, K) under a compute budget, with bands.

    Compute is in the unit of the table's ``C`` column (fitted as a constant times N B K) or,
    without one, in N B K. Every (N, B) of the grids with K = compute / (unit N B) >= 1 (and
    at most ``max_steps``, B at most ``max_batch``) is evaluated; the best is returned with its
    loss band, the same optimum for every fold fit of the cross-validation (its spread is the
    band of the optimum), and flags when the optimum sits at an edge of a grid or outside the
    fitted data.

    Parameters
    ----------
    fit : TableFit
        The fit.
    compute : float
        The budget (> 0).
    max_steps, max_batch : float, optional
        A step budget and a cap on the batch size.
    sizes : array_like, optional
        Model sizes to consider (default: 49 log-spaced from the smallest fitted N / 4 to the
        largest x 64).
    batch_sizes : array_like, optional
        Batch sizes (default: powers of 2 from 1 to 2^20, capped by ``max_batch``).

    Returns
    -------
    dict
        ``N, B, K, loss`` (the best), ``loss_band`` (lo, hi), ``N_band``, ``B_band``,
        ``K_band`` (over the fold fits), ``flags`` (list of str), ``unit``.
    """
    owner = "plan"
    if not isinstance(fit, TableFit):
        raise ParameterError(f"The 'fit' parameter of {owner} must be a TableFit. Got "
                             f"{type(fit).__name__} instead.")
    compute = check_real("compute", compute, owner, low=0.0)
    if max_steps is not None:
        max_steps = check_real("max_steps", max_steps, owner, low=1.0, closed=(True, True))
    if max_batch is not None:
        max_batch = check_real("max_batch", max_batch, owner, low=1.0, closed=(True, True))
    r = fit.ranges()
    if sizes is None:
        sizes = np.geomspace(r["N"][0] / 4, r["N"][1] * 64, 49) if fit.table.has_sizes \
            else np.array([fit.n_ref])
    sizes = np.asarray(sizes, float).ravel()
    if sizes.size == 0 or np.any(~np.isfinite(sizes) | (sizes <= 0)):
        raise ParameterError(f"The 'sizes' parameter of {owner} must hold model sizes > 0. "
                             f"Got {sizes!r} instead.")
    if batch_sizes is None:
        batch_sizes = 2.0 ** np.arange(0, 21)
    bs = np.asarray(batch_sizes, float).ravel()
    if bs.size == 0 or np.any(~np.isfinite(bs) | (bs < 1)):
        raise ParameterError(f"The 'batch_sizes' parameter of {owner} must hold batch sizes "
                             f">= 1. Got {batch_sizes!r} instead.")
    if max_batch is not None:
        bs = bs[bs <= max_batch]
        if bs.size == 0:
            raise ParameterError(f"The 'max_batch' parameter of {owner} leaves no batch size. "
                                 f"Got {max_batch!r}.")
    unit = _compute_unit(fit)
    Ng, Bg = np.meshgrid(sizes, bs, indexing="ij")
    Kg = np.floor(compute / (unit * Ng * Bg))
    ok = Kg >= 1
    if max_steps is not None:
        ok &= Kg <= max_steps
        Kg = np.minimum(Kg, max_steps)
    if not ok.any():
        raise ParameterError(f"The 'compute' parameter of {owner} affords no run of the grids "
                             f"(K >= 1{' and K <= max_steps' if max_steps else ''}). Got "
                             f"{compute!r}.")
    best: list[tuple[float, float, float, float]] = []
    for coords in fit.members():
        L = np.full(Ng.shape, np.inf)
        L[ok] = fit._eval(coords, Ng[ok], Bg[ok], Kg[ok])
        L[~np.isfinite(L)] = np.inf
        i, j = np.unravel_index(int(np.argmin(L)), L.shape)
        best.append((float(Ng[i, j]), float(Bg[i, j]), float(Kg[i, j]), float(L[i, j])))
    n0, b0, k0, l0 = best[0]
    flags = []
    if fit.table.has_sizes and (n0 == sizes.min() or n0 == sizes.max()):
        flags.append(f"the optimal N = {n0:.3g} is at the edge of the sizes considered "
                     f"[{sizes.min():.3g}, {sizes.max():.3g}]: widen them")
    if b0 == bs.min() or (b0 == bs.max() and (max_batch is None or b0 < max_batch)):
        flags.append(f"the optimal B = {b0:.3g} is at the edge of the batch sizes considered "
                     f"[{bs.min():.3g}, {bs.max():.3g}]")
    if max_batch is not None and b0 == bs.max():
        flags.append(f"the cap on B binds (B = {b0:.3g})")
    if max_steps is not None and k0 >= max_steps:
        flags.append(f"the step budget binds (K = {k0:.3g})")
    flags += [f"optimum outside the fitted data: {f}" for f in fit.flags(
        np.array([n0]), np.array([b0]), np.array([k0]))[0]]
    arr = np.array(best)
    w = fit.width
    return {"compute": compute, "unit": unit, "N": n0, "B": b0, "K": k0, "loss": l0,
            "loss_band": (l0 * math.exp(-w), l0 * math.exp(w)),
            "N_band": (float(arr[:, 0].min()), float(arr[:, 0].max())),
            "B_band": (float(arr[:, 1].min()), float(arr[:, 1].max())),
            "K_band": (float(arr[:, 2].min()), float(arr[:, 2].max())),
            "members": len(best), "flags": flags}


def _steps_to(fit: TableFit, coords: np.ndarray, N: float, bs: np.ndarray,
              target: float, k_max: float = 1e15) -> np.ndarray:
    """Smallest K (real, by bisection in log K) with loss <= target at each batch size."""
    lo = np.zeros(bs.size)
    hi = np.full(bs.size, math.log(k_max))
    Nv = np.full(bs.size, N)
    reach = fit._eval(coords, Nv, bs, np.exp(hi)) <= target
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = fit._eval(coords, Nv, bs, np.exp(mid)) <= target
        hi = np.where(below, mid, hi)
        lo = np.where(below, lo, mid)
    return np.where(reach, np.exp(hi), np.inf)


def _fit_critical(bs: np.ndarray, steps: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(steps)
    if ok.sum() < 3:
        return math.nan, math.nan
    b, s = bs[ok], steps[ok]

    def resid(z: np.ndarray) -> np.ndarray:
        return np.log(s) - z[0] - np.log1p(np.exp(z[1]) / b)

    f = optimize.least_squares(resid, [math.log(s.min()), math.log(math.sqrt(b[0] * b[-1]))],
                               bounds=([-np.inf, math.log(b[0]) - 20], [np.inf,
                                                                       math.log(b[-1]) + 20]))
    return float(math.exp(f.x[1])), float(math.exp(f.x[0]))


def critical_batch_sizes(fit: TableFit, sizes: Any = None, *, target: Any = None,
                         excess: float = 0.1, batch_sizes: Any = None) -> list[dict[str, Any]]:
    """Return the critical batch size per model size, with bands over the fold fits.

    For each size N, the steps S(B) to reach the target are found at each batch size (closed
    form, bisection in K) and B* of S(B) = S_min (1 + B* / B) is fitted. The default target of
    a size is its asymptote (floor plus approximation error) times (1 + ``excess``); batch
    sizes whose noise floor lies above the target do not reach it and are left out of the
    fit. A B* outside the batch sizes tuned is not resolved by them: it is reported as nan
    with the reason; one outside the batch sizes of the data is flagged.

    Parameters
    ----------
    fit : TableFit
        The fit.
    sizes : array_like, optional
        Model sizes (default: the fitted ones).
    target : float or array_like, optional
        Target loss per size (default: asymptote x (1 + ``excess``)).
    excess : float, default 0.1
        Relative excess over the asymptote of the default target.
    batch_sizes : array_like, optional
        Batch sizes (default: powers of 2 from 1 to 2^24).

    Returns
    -------
    list of dict
        Per size: ``N``, ``target``, ``B_crit`` (nan if not resolved), ``band`` (lo, hi over
        the best fit and the fold fits), ``S_min``, ``reason`` ('' or why B_crit is nan), ``flags``.
    """
    owner = "critical_batch_sizes"
    excess = check_real("excess", excess, owner, low=0.0)
    if sizes is None:
        sizes = np.unique(fit.table.N) if fit.table.has_sizes else np.array([fit.n_ref])
    sizes = np.atleast_1d(np.asarray(sizes, float))
    if np.any(~np.isfinite(sizes) | (sizes <= 0)):
        raise ParameterError(f"The 'sizes' parameter of {owner} must hold sizes > 0. Got "
                             f"{sizes!r} instead.")
    bs = (2.0 ** np.arange(0, 25)) if batch_sizes is None else \
        np.asarray(batch_sizes, float).ravel()
    if bs.size < 3 or np.any(~np.isfinite(bs) | (bs < 1)):
        raise ParameterError(f"The 'batch_sizes' parameter of {owner} must hold at least 3 "
                             f"batch sizes >= 1. Got {batch_sizes!r} instead.")
    bs = np.sort(bs)
    if target is None:
        targets = fit.asymptote(sizes) * (1.0 + excess)
    else:
        targets = np.broadcast_to(np.asarray(target, float), sizes.shape).astype(float)
        if np.any(~np.isfinite(targets) | (targets <= 0)):
            raise ParameterError(f"The 'target' parameter of {owner} must be > 0. Got "
                                 f"{target!r} instead.")
    out = []
    for n, tgt in zip(sizes, targets, strict=True):
        vals = []
        s_min = math.nan
        reason = ""
        for k, coords in enumerate(fit.members()):
            steps = _steps_to(fit, coords, float(n), bs, float(tgt))
            bc, sm = _fit_critical(bs, steps)
            if k == 0:
                s_min = sm
                if not np.isfinite(bc):
                    reason = (f"target {tgt:.4g} is not reached at 3 or more batch sizes "
                              f"(asymptote {float(fit.asymptote(n)[0]):.4g})")
                elif bc < bs[0] or bc > bs[-1]:
                    reason = (f"fitted B* = {bc:.3g} lies outside the batch sizes "
                              f"[{bs[0]:.3g}, {bs[-1]:.3g}]: not resolved")
                    bc = math.nan
            elif np.isfinite(bc) and not (bs[0] <= bc <= bs[-1]):
                bc = math.nan
            vals.append(bc)
        v = np.array(vals)
        fin = v[np.isfinite(v)]  # the best fit and the fold fits
        band = (float(fin.min()), float(fin.max())) if fin.size else (math.nan, math.nan)
        flags = []
        b_lo, b_hi = fit.ranges()["B"]
        if np.isfinite(v[0]) and not b_lo <= v[0] <= b_hi:
            flags.append(f"B* = {v[0]:.3g} lies outside the batch sizes of the data "
                         f"[{b_lo:.3g}, {b_hi:.3g}]: an extrapolation of the fit")
        flags += [f for f in fit.flags(np.array([n]), np.array([b_lo]), np.array([
            fit.ranges()["K"][0]]))[0] if f.startswith("N ")]
        out.append({"N": float(n), "target": float(tgt), "B_crit": float(v[0]), "band": band,
                    "S_min": s_min, "reason": reason, "flags": flags})
    return out


def table_from_rows(rows: Any) -> LossTable:
    """Return a LossTable from rows (N, B, K, loss) (for tests and examples)."""
    r = np.asarray(rows, float)
    return make_table(r[:, 1], r[:, 2], r[:, 3], N=r[:, 0])
