"""The result of a calibration: the fitted model, its uncertainty and its predictions.

:class:`Calibration` holds the best fit and its parameter samples (bootstrap replicates or
Gaussian samples), summarises what the data pin down, and forwards predictions to
:mod:`~nqm_mc.calibration.predict`. It is made by :func:`~nqm_mc.calibration.fit.calibrate`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nqm_mc.calibration.evaluate import Band, model_loss, one_thread, quantiles
from nqm_mc.calibration.family import COORDS, PARAMS, Family
from nqm_mc.calibration.runs import Run
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer

__all__ = ["Calibration"]


class Calibration:
    """A fitted power-law NQM with floor, its uncertainty and its predictions.

    Attributes
    ----------
    runs : list of Run
        The measured runs.
    params : dict
        Best-fit ``h1, a, s, b, v0, dim, floor``.
    model : NQM
        The best-fit NQM (without floor; E[L] exact, see :mod:`nqm_mc.calibration.family`).
    floor : float
        The fitted loss floor.
    coords : ndarray
        Best-fit coordinates (:data:`~nqm_mc.calibration.family.COORDS`).
    samples : ndarray, shape (n, 7)
        Coordinates of the bootstrap replicates (or Gaussian samples); empty without
        uncertainty.
    settings, info : dict
        The arguments of :func:`calibrate`, and the fit's cost, rms residual, evaluations and
        time.
    warnings : list of str
        What to be careful about (a parameter at a bound, failed refits, ...).
    """

    def __init__(self, runs: list[Run], family: Family, coords: np.ndarray,
                 samples: np.ndarray, settings: dict[str, Any], info: dict[str, Any],
                 warnings: list[str], bounds: tuple[np.ndarray, np.ndarray]) -> None:
        self.runs = runs
        self.family = family
        self.coords = np.asarray(coords, dtype=float)
        self.samples = np.asarray(samples, dtype=float).reshape(-1, 7)
        self.settings = settings
        self.info = info
        self.warnings = warnings
        self.bounds = bounds
        self.params = family.to_params(self.coords)
        self.model = family.model(self.coords)
        self.floor = self.params["floor"]
        self.level = float(settings.get("level", 0.95))

    # ------------------------------------------------------------------ uncertainty
    @property
    def sample_params(self) -> dict[str, np.ndarray]:
        """Parameters of every sample, as arrays keyed by name."""
        ps = [self.family.to_params(x) for x in self.samples]
        return {k: np.array([p[k] for p in ps]) for k in PARAMS}

    @property
    def stderr(self) -> dict[str, float]:
        """Standard deviation of each parameter over the samples (nan without samples)."""
        if len(self.samples) < 2:
            return {k: math.nan for k in PARAMS}
        sp = self.sample_params
        return {k: float(np.std(sp[k], ddof=1)) for k in PARAMS}

    @property
    def coord_stderr(self) -> np.ndarray:
        """Standard deviation of each coordinate (log scales) over the samples."""
        if len(self.samples) < 2:
            return np.full(7, math.nan)
        return np.std(self.samples, axis=0, ddof=1)

    @property
    def covariance(self) -> np.ndarray:
        """Covariance of the coordinates over the samples (7 x 7; nan without samples)."""
        if len(self.samples) < 2:
            return np.full((7, 7), math.nan)
        return np.cov(self.samples, rowvar=False)

    @property
    def correlation(self) -> np.ndarray:
        """Correlation matrix of the coordinates (nan for a coordinate that does not vary)."""
        c = self.covariance
        sd = np.sqrt(np.diag(c))
        with np.errstate(invalid="ignore", divide="ignore"):
            return c / np.outer(sd, sd)

    def intervals(self) -> dict[str, tuple[float, float]]:
        """Return the ``level`` quantiles of each parameter over the samples."""
        if len(self.samples) < 2:
            return {k: (self.params[k], self.params[k]) for k in PARAMS}
        sp = self.sample_params
        q = ((1 - self.level) / 2, (1 + self.level) / 2)
        return {k: (float(np.quantile(sp[k], q[0])), float(np.quantile(sp[k], q[1])))
                for k in PARAMS}

    def identifiability(self, threshold: float = 0.9) -> list[str]:
        """Plain statements of what the data pin down and what trades off.

        Parameters
        ----------
        threshold : float, default 0.9
            absolute correlation from which two coordinates are said to trade off.

        Returns
        -------
        list of str
        """
        if len(self.samples) < 2:
            return ["no uncertainty computed (uncertainty='none')."]
        out = []
        sd = self.coord_stderr
        corr = self.correlation
        names = COORDS
        for j in range(7):
            for k in range(j + 1, 7):
                c = corr[j, k]
                if np.isfinite(c) and abs(c) >= threshold:
                    out.append(f"{_short_name(j)} and {_short_name(k)} trade off "
                               f"(corr {c:+.2f}).")
        pinned: list[str] = []
        loose: list[str] = []
        for j in range(6):
            # log scales: sd < 0.1 is about 10 %; exponents: sd < 0.1 absolute
            (pinned if sd[j] < 0.1 else loose).append(f"{_short_name(j)} (s.e. {sd[j]:.2g} in "
                                                      f"{names[j]})")
        if pinned:
            out.append("pinned down: " + ", ".join(pinned) + ".")
        if loose:
            out.append("loosely determined: " + ", ".join(loose) + ".")
        f_lo, f_hi = self.intervals()["floor"]
        lowest = min(float(np.min(r.loss)) for r in self.runs)
        if f_lo <= 0.02 * lowest:
            reach = ""
            min_model = min(float(np.min(c - self.floor)) for c in self.fitted_curves())
            if min_model > 2 * max(f_hi, 1e-300):
                reach = ": no run reaches it"
            out.append(f"floor not identified{reach} (consistent with 0; {self.level:.0%} "
                       f"upper bound {f_hi:.3g}).")
        else:
            out.append(f"floor identified: {self.floor:.4g} ({self.level:.0%} interval "
                       f"[{f_lo:.3g}, {f_hi:.3g}]).")
        return out

    # ------------------------------------------------------------------ evaluation
    def _members(self, max_samples: int | None = None) -> list[tuple[NQM, float]]:
        xs = self.samples if max_samples is None else self.samples[:max_samples]
        return [(self.family.model(x), float(x[6]) * self.family.loss_scale) for x in xs]

    def fitted_curves(self) -> list[np.ndarray]:
        """Best-fit measured-scale losses at every measured step of each run."""
        with one_thread():
            return [model_loss(self.model, r.optimizer, r.batch_size, r.steps) + self.floor
                    for r in self.runs]

    def _band(self, value: Any, values: list[Any]) -> Band:
        if not values:
            return Band(value, value, value, self.level)
        lo, hi = quantiles(np.array(values, dtype=float), self.level)
        if np.ndim(value) == 0:
            return Band(float(value), float(lo), float(hi), self.level)
        return Band(np.asarray(value), np.asarray(lo), np.asarray(hi), self.level)

    def predict_loss(self, optimizer: Optimizer, batch_size: int, steps: Any) -> Band:
        """Predict the measured-scale loss curve of a new configuration.

        Parameters
        ----------
        optimizer : SGD, HeavyBall or Nesterov
            Any linear optimizer, with a constant learning rate or a schedule.
        batch_size : int
            Batch size.
        steps : array_like of int
            Steps at which to predict.

        Returns
        -------
        Band
            E[L(t)] + floor of the best fit, and its band over the samples (inf where a
            sample diverges).
        """
        from nqm_mc.calibration import predict
        return predict.predict_loss(self, optimizer, batch_size, steps)

    def steps_to_target(self, target: float, optimizer: Optimizer,
                        batch_sizes: Any) -> Band:
        """Predict the steps to reach ``target`` (measured scale) at each batch size.

        The fitted NQM must reach ``target - floor``; a target at or below the floor is
        unreachable (``inf``). See :func:`nqm_mc.calibration.predict.steps_to_target`.
        """
        from nqm_mc.calibration import predict
        return predict.steps_to_target(self, target, optimizer, batch_sizes)

    def tuned(self, target: float, batch_sizes: Any, family: str = "sgd", p: float = 0.0,
              ema: float | bool | None = None, **kw: Any) -> dict[str, Any]:
        """Tuned steps to target and learning rate per batch size, with bands.

        See :func:`nqm_mc.calibration.predict.tuned`.
        """
        from nqm_mc.calibration import predict
        return predict.tuned(self, target, batch_sizes, family, p, ema, **kw)

    def critical_batch_size(self, target: float, family: str = "sgd", p: float = 0.0,
                            ema: float | bool | None = None, **kw: Any) -> Band:
        """Return the critical batch size of the tuned family, with its band.

        See :func:`nqm_mc.calibration.predict.critical_batch_size`.
        """
        from nqm_mc.calibration import predict
        return predict.critical_batch_size(self, target, family, p, ema, **kw)

    def reachable(self, target: float) -> tuple[bool, str]:
        """Whether the best fit can reach ``target`` at all, and why not."""
        if target <= self.floor:
            return False, (f"target {target:.4g} is at or below the fitted floor "
                           f"{self.floor:.4g}: unreachable")
        return True, ""

    # ------------------------------------------------------------------ reporting
    def parameter_table(self) -> list[dict[str, Any]]:
        """One row per parameter: value, s.e., interval and the coordinate's s.e."""
        se, iv, cse = self.stderr, self.intervals(), self.coord_stderr
        return [{"parameter": k, "value": self.params[k], "stderr": se[k], "lo": iv[k][0],
                 "hi": iv[k][1], "coordinate": COORDS[j], "coordinate_stderr": float(cse[j])}
                for j, k in enumerate(PARAMS)]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description: parameters, uncertainty, settings, fit information."""
        return {"params": self.params, "coords": self.coords.tolist(),
                "coordinate_names": list(COORDS), "parameter_table": self.parameter_table(),
                "covariance": self.covariance.tolist(), "correlation": self.correlation.tolist(),
                "samples": self.samples.tolist(), "identifiability": self.identifiability(),
                "family": self.family.settings(), "settings": self.settings,
                "info": self.info, "warnings": self.warnings,
                "runs": [{"label": r.name, "optimizer": r.optimizer.to_dict(),
                          "batch_size": r.batch_size, "points": int(r.steps.size)}
                         for r in self.runs]}

    def __repr__(self) -> str:
        p = ", ".join(f"{k}={v:.4g}" for k, v in self.params.items())
        return f"Calibration({p}; rms={self.info['rms']:.3g}, runs={len(self.runs)})"


def _short_name(j: int) -> str:
    return ("h1", "a", "s", "b", "v0", "dim", "floor")[j]
