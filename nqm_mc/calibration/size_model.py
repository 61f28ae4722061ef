"""The size-aware NQM of :mod:`nqm_mc.calibration.sizes`: the model, its fit, its predictions.

The family and its closed form are described in :mod:`nqm_mc.calibration.sizes`. Here:
its coordinates and nested variants (:data:`COORDS`, :data:`FAMILIES`), the model evaluated
over log-spaced bins of directions, the fitted result (:class:`TableFit`) and the predictions
of final losses with their bands (:func:`predict_final_loss`, :class:`TablePrediction`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from nqm_mc.calibration.table import LossTable
from nqm_mc.spec._checks import ParameterError

__all__ = ["COORDS", "FAMILIES", "TableFit", "TablePrediction", "predict_final_loss"]

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
