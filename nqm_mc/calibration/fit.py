r"""Fitting the power-law NQM with a floor to measured loss curves, with uncertainty.

The fit minimises :math:`\sum_{r,k} [\log L^{\rm meas}_r(t_k) - \log(E[L_{\rm NQM}](t_k) +
L_\infty)]^2` over the seven coordinates of :data:`~nqm_mc.calibration.family.COORDS` with
``scipy.optimize.least_squares`` (trust region, bounded), from several seeded starts. The
uncertainty comes from a moving-block bootstrap of each curve's log residuals (blocks keep the
autocorrelation of a training curve), refitting every replicate; predictions propagate the
replicates. ``docs/theory.md`` ("Calibration") gives the reasoning.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import optimize

from nqm_mc.calibration.evaluate import Band, CalibrationError, model_loss
from nqm_mc.calibration.evaluate import one_thread as _one_thread
from nqm_mc.calibration.family import COORDS, PARAMS, Family, stability_limit
from nqm_mc.calibration.noise import fit_residual_model
from nqm_mc.calibration.result import Calibration
from nqm_mc.calibration.runs import Run, check_runs
from nqm_mc.spec._checks import ParameterError, check_choice, check_int, check_real

# Band, CalibrationError (evaluate) and Calibration (result) are re-exported from here, where
# they were defined before the split
__all__ = ["Band", "Calibration", "CalibrationError", "calibrate", "UNCERTAINTY", "model_loss"]

UNCERTAINTY = ("bootstrap", "jacobian", "none")
_SCOUT_NFEV = 16  # iterations of every start before the best ones are polished
_POLISH = 3  # starts fitted to convergence
_BOOT_NFEV = 40  # iterations of a bootstrap refit
_BAD = 30.0  # residual of a point the model cannot evaluate (diverged or not finite)


def _thin(run: Run, max_points: int) -> np.ndarray:
    """Return the indices of at most ``max_points`` measured points, log-spaced in step."""
    n = run.steps.size
    if n <= max_points:
        return np.arange(n)
    logt = np.log1p(run.steps.astype(float))
    grid = np.linspace(logt[0], logt[-1], max_points)
    idx = np.unique(np.searchsorted(logt, grid).clip(0, n - 1))
    return idx


class _Problem:
    """Residuals of all runs for one set of (thinned) measurements."""

    def __init__(self, runs: list[Run], idx: list[np.ndarray], family: Family) -> None:
        self.runs = runs
        self.idx = idx
        self.family = family
        self.steps = [r.steps[i] for r, i in zip(runs, idx, strict=True)]
        self.logy = [np.log(r.loss[i]) for r, i in zip(runs, idx, strict=True)]
        self.sizes = [s.size for s in self.steps]
        self.evals = 0

    def curves(self, x: np.ndarray) -> list[np.ndarray]:
        """Fitted measured-scale losses per run (nan where the model fails)."""
        self.evals += 1
        model = self.family.model(x)
        floor = float(x[6]) * self.family.loss_scale
        out = []
        with np.errstate(all="ignore"):
            for r, s in zip(self.runs, self.steps, strict=True):
                try:
                    m = model_loss(model, r.optimizer, r.batch_size, s)
                except ParameterError:
                    m = np.full(s.size, np.nan)
                out.append(m + floor)
        return out

    def residuals(self, x: np.ndarray, logy: list[np.ndarray] | None = None) -> np.ndarray:
        logy = self.logy if logy is None else logy
        res = []
        with np.errstate(all="ignore"):
            for c, y in zip(self.curves(x), logy, strict=True):
                r = y - np.log(c)
                r[~np.isfinite(r)] = _BAD
                res.append(r)
        return np.concatenate(res)

    def linear_start(self, x: np.ndarray) -> np.ndarray | None:
        """Set log v0, log s and the floor of ``x`` by non-negative least squares.

        Relative errors; E[L] is linear in v0 and in s. None if it fails.
        """
        fam = self.family
        parts = []
        for bias, noise in ((1.0, 0.0), (0.0, 1.0)):
            m = fam.model(np.concatenate([x[:2], [0.0], x[3:4], [0.0], x[5:6], [0.0]]),
                          bias, noise)
            with np.errstate(all="ignore"):
                try:
                    parts.append(np.concatenate([
                        model_loss(m, r.optimizer, r.batch_size, s)
                        for r, s in zip(self.runs, self.steps, strict=True)]))
                except ParameterError:
                    return None
        y = np.exp(np.concatenate(self.logy))
        A = np.column_stack([parts[0], parts[1], np.full(y.size, fam.loss_scale)]) / y[:, None]
        if not np.all(np.isfinite(A)):
            return None
        coef, _ = optimize.nnls(A, np.ones(y.size))
        v0, s, phi = coef
        out = x.copy()
        out[4] = math.log(max(v0, 1e-30))
        out[2] = math.log(max(s, 1e-30))
        out[6] = min(phi, 1.0)
        return out


def _bounds(runs: list[Run]) -> tuple[np.ndarray, np.ndarray, list[float]]:
    limits = [stability_limit(r.optimizer, int(r.steps[-1])) for r in runs]
    for r, lim in zip(runs, limits, strict=True):
        if lim <= 0:
            raise CalibrationError(f"run {r.name!r} diverges on every model of the family "
                                   "(preconditioning p = 1 and a learning rate above the "
                                   "stability limit).")
    hmax = min(limits)
    ub_h = math.log(hmax) - 1e-6 if math.isfinite(hmax) else 30.0
    lo = np.array([ub_h - 40.0, 0.0, -60.0, -2.0, -60.0, 0.0, 0.0])
    hi = np.array([ub_h, 4.0, 60.0, 6.0, 60.0, math.log(1e8), 1.0])
    return lo, hi, limits


def _starts(problem: _Problem, lo: np.ndarray, hi: np.ndarray, n_starts: int,
            rng: np.random.Generator) -> list[np.ndarray]:
    """Candidates drawn over plausible ranges, linear parameters set by NNLS, the best kept."""
    n_cand = max(4 * n_starts, 16)
    ub_h = hi[0] if hi[0] < 30.0 else 0.0
    cands = []
    for _ in range(n_cand):
        x = np.empty(7)
        x[0] = ub_h - rng.uniform(0.05, 5.0)
        x[1] = rng.uniform(0.5, 2.0)
        x[3] = x[1] + rng.uniform(-0.5, 1.0)
        x[5] = rng.uniform(math.log(20.0), math.log(2e4))
        x[2] = x[4] = 0.0
        x[6] = 0.0
        xs = problem.linear_start(np.clip(x, lo, hi))
        if xs is None:
            continue
        xs = np.clip(xs, lo, hi)
        r = problem.residuals(xs)
        cands.append((float(r @ r), xs))
    cands.sort(key=lambda c: c[0])
    return [c[1] for c in cands[:n_starts]]


def _lsq(problem: _Problem, x0: np.ndarray, lo: np.ndarray, hi: np.ndarray,
         logy: list[np.ndarray] | None = None, max_nfev: int | None = None,
         jac: np.ndarray | None = None) -> Any:
    """Run bounded trust-region least squares.

    With ``jac`` that fixed Jacobian is used throughout (one model evaluation per iteration).
    """
    j: Any = "2-point" if jac is None else (lambda x, logy=None: jac)
    return optimize.least_squares(problem.residuals, np.clip(x0, lo, hi), jac=j,
                                  bounds=(lo, hi), method="trf", kwargs={"logy": logy},
                                  max_nfev=max_nfev, x_scale=1.0, diff_step=1e-6, ftol=1e-8,
                                  xtol=1e-8)


def _block_resample(res: np.ndarray, block: int, rng: np.random.Generator) -> np.ndarray:
    n = res.size
    ell = min(block, n)
    k = -(-n // ell)
    starts = rng.integers(0, n - ell + 1, size=k)
    return np.concatenate([res[s:s + ell] for s in starts])[:n]


def calibrate(runs: Sequence[Run], *, n_starts: int = 8, seed: int = 0,
              uncertainty: str = "bootstrap", resample: str = "ar1", n_boot: int = 50,
              max_points: int = 40,
              block: int | None = None, n_exact: int = 8, n_bins: int = 32,
              level: float = 0.95, max_rms: float = 1.0) -> Calibration:
    r"""Fit the power-law NQM with a loss floor to measured runs.

    Parameters
    ----------
    runs : list of Run
        The measured curves (at least 8 points in all).
    n_starts : int, default 8
        Starts: the best of ``4 n_starts`` seeded random candidates. Each runs a few
        iterations, the best three run to convergence, and the lowest cost wins.
    seed : int, default 0
        Seed of the starts and of the bootstrap (results are reproducible for a seed).
    uncertainty : {"bootstrap", "jacobian", "none"}
        "bootstrap": resample the log residuals (see ``resample``) around the best fit and
        refit each of ``n_boot`` replicates; "jacobian": Gaussian samples from the
        least-squares covariance :math:`\hat\sigma^2 (J^T J)^{-1}` (fast, ignores the
        residuals' autocorrelation, so too narrow); "none": no bands.
    resample : {"ar1", "wild", "block"}, default "ar1"
        "ar1": Gaussian replicates from an AR(1) model of each curve's residuals whose scale,
        drift and correlation are estimated by restricted maximum likelihood, which accounts
        for what the fit absorbs (:mod:`nqm_mc.calibration.noise`); "wild": each curve's
        residual vector times one standard normal multiplier per replicate; "block":
        moving-block bootstrap within each curve (blocks of ``block`` points). The last two
        reuse the fitted residuals and so inherit their shrinkage (too narrow; see the
        coverage study in ``validation/calibration_coverage.py``).
    n_boot : int, default 50
        Bootstrap replicates (or Gaussian samples).
    max_points : int, default 40
        Points per run used by the fit, log-spaced in step (all when fewer).
    block : int, optional
        Block length of the bootstrap (default: about the square root of the points per run).
    n_exact, n_bins : int, default 8 and 32
        Directions kept one by one, and bins for the rest of the spectrum.
    level : float, default 0.95
        Level of the bands.
    max_rms : float, default 1.0
        Root-mean-square log residual above which the fit is refused as failed.

    Returns
    -------
    Calibration

    Raises
    ------
    ParameterError
        If an argument is invalid.
    CalibrationError
        If the fit fails: too few points, a run that diverges on every model, no start that
        converges, or a best fit whose rms log residual exceeds ``max_rms``.
    """
    owner = "calibrate"
    runs = check_runs(runs, owner)
    n_starts = check_int("n_starts", n_starts, owner, low=1, high=1000)
    seed = check_int("seed", seed, owner, low=0, high=2 ** 64 - 1)
    uncertainty = check_choice("uncertainty", uncertainty, owner, UNCERTAINTY)
    resample = check_choice("resample", resample, owner, ("ar1", "wild", "block"))
    n_boot = check_int("n_boot", n_boot, owner, low=2, high=100_000)
    max_points = check_int("max_points", max_points, owner, low=2, high=100_000)
    if block is not None:
        block = check_int("block", block, owner, low=1, high=100_000)
    n_exact = check_int("n_exact", n_exact, owner, low=1, high=10_000)
    n_bins = check_int("n_bins", n_bins, owner, low=1, high=10_000)
    level = check_real("level", level, owner, low=0.0, high=1.0)
    max_rms = check_real("max_rms", max_rms, owner, low=0.0)
    t0 = time.perf_counter()
    idx = [_thin(r, max_points) for r in runs]
    n_points = int(sum(i.size for i in idx))
    if n_points <= len(PARAMS):
        raise CalibrationError(f"too few points: {n_points} measured points for {len(PARAMS)} "
                               f"parameters (need at least {len(PARAMS) + 1}).")
    loss_scale = float(min(float(r.loss[i].min()) for r, i in zip(runs, idx, strict=True)))
    family = Family(n_exact, n_bins, loss_scale)
    problem = _Problem(runs, idx, family)
    lo, hi, limits = _bounds(runs)
    rng = np.random.default_rng(seed)
    warnings: list[str] = []
    with _one_thread():
        starts = _starts(problem, lo, hi, n_starts, rng)
        # every start for a few iterations, then the best two to convergence
        fits = []
        for x0 in starts:
            try:
                fits.append(_lsq(problem, x0, lo, hi, max_nfev=_SCOUT_NFEV))
            except (ValueError, np.linalg.LinAlgError):
                continue
        fits = [f for f in fits if f.status >= 0 and np.isfinite(f.cost)]
        fits.sort(key=lambda f: f.cost)
        polished = []
        for f in fits[:_POLISH]:
            try:
                polished.append(_lsq(problem, f.x, lo, hi))
            except (ValueError, np.linalg.LinAlgError):
                continue
        fits = [f for f in polished if f.status > 0 and np.isfinite(f.cost)] + fits[_POLISH:]
        if not fits:
            raise CalibrationError(f"no start converged ({len(starts)} starts): the family "
                                   "cannot follow these curves (check the settings of each "
                                   "run, and that the losses decrease).")
        best = min(fits, key=lambda f: f.cost)
        x = best.x.copy()
        res = problem.residuals(x)
        rms = float(np.sqrt(np.mean(res ** 2)))
        per_run = np.split(res, np.cumsum(problem.sizes)[:-1])
        if rms > max_rms or np.any(res >= _BAD):
            worst = int(np.argmax([np.sqrt(np.mean(r ** 2)) for r in per_run]))
            raise CalibrationError(
                f"the best fit misses the data (rms log residual {rms:.3g} > max_rms = "
                f"{max_rms:g}); worst run {runs[worst].name!r} (rms "
                f"{np.sqrt(np.mean(per_run[worst] ** 2)):.3g}).")
        n_close = sum(1 for f in fits if f.cost <= best.cost * (1 + 1e-3) + 1e-12)
        if hi[0] - x[0] < 1e-3:
            k = int(np.argmin(limits))
            warnings.append(f"h1 sits at the stability limit of run {runs[k].name!r} "
                            f"(h1 = {limits[k]:.4g}): a larger curvature would diverge there.")
        for j, name in enumerate(COORDS):
            if j in (0, 6):
                continue
            if x[j] - lo[j] < 1e-4 or hi[j] - x[j] < 1e-4:
                warnings.append(f"{name} sits at a bound of its search range "
                                f"([{lo[j]:.3g}, {hi[j]:.3g}]).")
        samples = np.zeros((0, 7))
        n_failed = 0
        noise_info: dict[str, Any] | None = None
        if block is None:
            block = max(2, int(round(math.sqrt(np.median(problem.sizes)))))
        if uncertainty == "bootstrap":
            fitted = [np.log(c) for c in problem.curves(x)]
            J0 = best.jac
            if resample == "ar1":
                try:
                    noise_model = fit_residual_model(per_run, problem.steps, J0)
                    noise_info = noise_model.to_dict()
                except (ValueError, np.linalg.LinAlgError) as err:
                    warnings.append(f"the residual model could not be estimated ({err}); "
                                    "resampled with resample='wild' instead.")
                    resample = "wild"
            xs = []
            for _ in range(n_boot):
                if resample == "ar1":
                    draw = np.split(noise_model.draw(rng), np.cumsum(problem.sizes)[:-1])
                    logy = [f + d for f, d in zip(fitted, draw, strict=True)]
                elif resample == "block":
                    logy = [f + _block_resample(r, block, rng)
                            for f, r in zip(fitted, per_run, strict=True)]
                else:  # wild: one Gaussian multiplier per curve keeps its whole dependence
                    g = rng.standard_normal(len(per_run))
                    logy = [f + gk * r for f, gk, r in zip(fitted, g, per_run, strict=True)]
                try:
                    fb = _lsq(problem, x, lo, hi, logy=logy, max_nfev=_BOOT_NFEV, jac=J0)
                except (ValueError, np.linalg.LinAlgError):
                    n_failed += 1
                    continue
                if not np.isfinite(fb.cost):
                    n_failed += 1
                    continue
                xs.append(fb.x)
            samples = np.array(xs) if xs else np.zeros((0, 7))
            if n_failed:
                warnings.append(f"{n_failed} of {n_boot} bootstrap refits failed.")
        elif uncertainty == "jacobian":
            J = best.jac
            dof = max(res.size - 7, 1)
            s2 = float(res @ res) / dof
            cov = s2 * np.linalg.pinv(J.T @ J)
            cov = 0.5 * (cov + cov.T)
            w, V = np.linalg.eigh(cov)
            L = V * np.sqrt(np.clip(w, 0, None))
            samples = np.clip(x + rng.standard_normal((n_boot, 7)) @ L.T, lo, hi)
    elapsed = time.perf_counter() - t0
    settings = {"n_starts": n_starts, "seed": seed, "uncertainty": uncertainty,
                "resample": resample,
                "n_boot": n_boot, "max_points": max_points, "block": block,
                "n_exact": n_exact, "n_bins": n_bins, "level": level, "max_rms": max_rms}
    info = {"cost": float(best.cost), "rms": rms, "n_points": n_points,
            "n_converged": len(fits), "n_starts_at_best": n_close,
            "evaluations": problem.evals, "seconds": elapsed,
            "rms_per_run": [float(np.sqrt(np.mean(r ** 2))) for r in per_run],
            "stability_limits": limits, "residual_model": noise_info}
    return Calibration(runs, family, x, samples, settings, info, warnings, (lo, hi))
