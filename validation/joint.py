"""Validation of the joint law across records: lag covariances of kept paths.

The marginal tests of :mod:`validation.suite` (mean, band moments, variance, law at one step)
cannot tell a sampler that gets every record's law right but ties the records together
wrongly. The cases here keep every run's path and test, for pairs of recorded steps (s, t) at
short and long lags, the sample covariance and correlation of the loss against the exact
engine's :func:`nqm_mc.loss_covariance`, with influence-function standard errors
(:mod:`nqm_mc.joint_stats`), under Holm at the suite's family-wise error.

Power: the planted *fresh-draw* sampler (:func:`fresh_draw_simulate`) draws each record anew
from the start state with the cumulative transition 0 -> t_k. Each of its records has exactly
the right law, so every marginal test passes; only the joint law is wrong, and the case's
tests must reject it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from nqm_mc import loss_covariance, simulate
from nqm_mc.joint_stats import (
    lag_correlation,
    lag_covariance,
    lag_covariance_difference,
    pair_columns,
)
from nqm_mc.montecarlo.skip import state_size, transitions
from nqm_mc.theory.stats import holm, max_abs_z_threshold, two_sided_p

ALPHA = 1e-4  # family-wise error per case, as in validation.suite
CHUNK = 2000  # runs per NumPy chunk of the planted sampler


@dataclass
class FreshDrawResult:
    """The part of a SimulationResult the joint cases read, from the planted sampler."""

    steps: np.ndarray
    paths: np.ndarray
    n_diverged: np.ndarray
    meta: dict[str, Any]


def fresh_draw_simulate(model: Any, optimizer: Any, batch_size: Any, n_steps: int,
                        n_runs: int, *, seed: int = 0, record: Any = None,
                        **_ignored: Any) -> FreshDrawResult:
    """Run the planted fresh-draw sampler: right marginals, wrong joint law.

    Each run draws theta(0) once (momentum 0, EMA = theta(0)); record k is then
    ``Phi(0, t_k) x(0) + F(0, t_k) w_k`` with fresh normals ``w_k`` for every record, so
    every record has its exact law but two records share only the start. The cumulative
    maps are composed from the skip-ahead sampler's transitions between records
    (:func:`nqm_mc.montecarlo.skip.transitions`); only the readout is drawn, its fresh noise
    as one normal per direction with variance ``Sigma_rr(0, t_k)``.

    Parameters
    ----------
    model, optimizer, batch_size : specs
        A linear optimizer with Gaussian noise on an NQM.
    n_steps : int
        Unused (the horizon is the last recorded step); kept for the simulator signature.
    n_runs : int
        Runs; every path is kept.
    seed : int, default 0
        Seed of NumPy's generator (a stream independent of the engine's).
    record : array_like of int
        The recorded steps.

    Returns
    -------
    FreshDrawResult
        ``paths`` (n_runs, R) of losses at the readout.
    """
    steps = np.unique(np.asarray(record, np.int64))
    s = state_size(optimizer)
    ro = s - 1 if optimizer.ema is not None else 0
    mult = model.multiplicities
    group = np.repeat(np.arange(model.n_groups), mult)
    h = model.curvatures[group]
    mu0 = model.initial_mean[group]
    sd0 = np.sqrt(model.initial_variance[group])
    # per record, the readout row of the cumulative map applied to x(0) = (theta0, 0, theta0)
    # and the readout's noise standard deviation sqrt(Sigma_rr) (only the readout is needed:
    # its fresh noise is one normal per direction)
    gain = np.ones((steps.size, h.size))
    noise_sd = np.zeros((steps.size, h.size))
    phis, facs = transitions(model, optimizer, batch_size, steps)  # (K - 1, s, s, G)
    G = model.n_groups
    cum_phi = np.broadcast_to(np.eye(s)[:, :, None], (s, s, G)).copy()
    cum_sig = np.zeros((s, s, G))
    first = -1 if steps[0] == 0 else 0  # the interval index of record k is k + first
    for k in range(steps.size):
        if steps[k] == 0:
            continue
        i = k + first
        phi, fac = phis[i], facs[i]
        cum_phi = np.einsum("ijg,jlg->ilg", phi, cum_phi)
        cum_sig = (np.einsum("ijg,jlg,mlg->img", phi, cum_sig, phi)
                   + np.einsum("ijg,mjg->img", fac, fac))
        row = cum_phi[ro, 0] + (cum_phi[ro, s - 1] if optimizer.ema is not None else 0.0)
        gain[k] = row[group]
        noise_sd[k] = np.sqrt(np.maximum(cum_sig[ro, ro], 0.0))[group]
    rng = np.random.default_rng(seed)
    paths = np.empty((n_runs, steps.size))
    for lo in range(0, n_runs, CHUNK):
        n = min(CHUNK, n_runs - lo)
        theta0 = mu0 + sd0 * rng.standard_normal((n, h.size))
        for k in range(steps.size):
            r = gain[k] * theta0 + noise_sd[k] * rng.standard_normal((n, h.size))
            paths[lo:lo + n, k] = 0.5 * (r * r) @ h
    div = np.zeros(steps.size, np.int64)
    return FreshDrawResult(steps, paths, div, {"method": "fresh draw from the start (planted)"})


def _pair_steps(case: Any) -> np.ndarray:
    return np.asarray(case.lag_pairs, np.int64).reshape(-1, 2)


def lag_family(paths: np.ndarray, cols: np.ndarray, exact: Any,
               tol: float = 1e-10) -> dict[str, Any]:
    """Return z-scores of the sample covariance and correlation at each pair, and p-values.

    Parameters
    ----------
    paths : ndarray, shape (n_runs, R)
        Kept paths.
    cols : ndarray of int, shape (P, 2)
        Columns of the pairs.
    exact : LossCovariance
        The exact covariances and correlations of the pairs.
    tol : float, default 1e-10
        Relative tolerance of a pair with a deterministic record (exact variance 0): its
        sample covariance must be 0 to within ``tol * E[L_s] E[L_t]`` (rounding), and it
        has no z-score.

    Returns
    -------
    dict
        ``cov``, ``cov_se``, ``z_cov``, ``corr``, ``corr_se``, ``z_corr`` (P,),
        ``pvalues`` of the finite z-scores (at most 2P) and ``deterministic_ok`` (bool).
    """
    det = ~(exact.variance > 0).all(axis=1)
    cov = lag_covariance(paths, cols, np.where(det, np.nan, exact.covariance))
    corr = lag_correlation(paths, cols, np.where(det, np.nan, exact.correlation))
    z = np.concatenate([cov.z, corr.z])
    scale = np.abs(exact.mean[:, 0] * exact.mean[:, 1]) + 1e-300
    det_ok = bool(np.all(np.abs(cov.estimate[det]) <= tol * scale[det]))
    return {"cov": cov.estimate, "cov_se": cov.standard_error, "z_cov": cov.z,
            "corr": corr.estimate, "corr_se": corr.standard_error, "z_corr": corr.z,
            "pvalues": two_sided_p(z[np.isfinite(z)]), "deterministic_ok": det_ok}


def run_joint_case(case: Any, n_runs: int, seed: int, threads: int | None, t0: float,
                   runs_factor: int = 1,
                   simulator: Callable[..., Any] = simulate) -> dict[str, Any]:
    """Validate the joint law of one case's sampler at its pairs of recorded steps.

    The Monte Carlo run keeps every path; the sample covariance and correlation of the loss
    at each pair (s, t) of ``case.lag_pairs`` are z-tested against
    :func:`nqm_mc.loss_covariance` (one Holm family at ALPHA). Power: the same family must
    reject the planted fresh-draw sampler's paths (same runs, every marginal exact).

    Parameters
    ----------
    case : Case
        A case with ``lag_pairs``.
    n_runs : int
        Runs (times ``runs_factor``).
    seed : int
        Monte Carlo seed.
    threads : int or None
        Numba threads.
    t0 : float
        ``time.perf_counter()`` at the start of the case.
    runs_factor : int, default 1
        Multiplies the runs.
    simulator : callable, default simulate
        The Monte Carlo engine under test (a stand-in lets the tests plant a sampler).

    Returns
    -------
    dict
        JSON-ready: the table of pairs (exact, estimates, standard errors, z), verdicts.
    """
    model, opt, batch = case.model, case.optimizer, case.batch_size
    pairs = _pair_steps(case)
    steps = np.unique(pairs)
    n_runs = int(n_runs) * int(runs_factor)
    exact = loss_covariance(model, opt, batch, pairs)
    cols = pair_columns(steps, pairs)
    res = simulator(model, opt, batch, int(steps[-1]), n_runs, seed=seed, record=steps,
                    keep_paths=n_runs, dtype=case.dtype, threads=threads, progress=False,
                    method=case.method)
    tol = 1e-5 if case.dtype == "float32" else 1e-10
    fam = lag_family(res.paths, cols, exact, tol)
    reject, adj = holm(fam["pvalues"], ALPHA)
    passed = (not reject.any()) and int(res.n_diverged[-1]) == 0 and not exact.diverged \
        and fam["deterministic_ok"]
    planted = fresh_draw_simulate(model, opt, batch, int(steps[-1]), n_runs, seed=seed + 7,
                                  record=steps)
    wfam = lag_family(planted.paths, cols, exact, tol)
    wreject, wadj = holm(wfam["pvalues"], ALPHA)
    thr = max_abs_z_threshold(int(fam["pvalues"].size), ALPHA)
    z_all = np.concatenate([fam["z_cov"], fam["z_corr"]])
    z_all = z_all[np.isfinite(z_all)]
    wz_all = np.concatenate([wfam["z_cov"], wfam["z_corr"]])
    wz_all = wz_all[np.isfinite(wz_all)]
    nan = float("nan")
    table = [{"s": int(s), "t": int(t), "exact_cov": float(exact.covariance[p]),
              "mc_cov": float(fam["cov"][p]), "mc_cov_se": float(fam["cov_se"][p]),
              "z_cov": float(fam["z_cov"][p]), "exact_corr": float(exact.correlation[p]),
              "mc_corr": float(fam["corr"][p]), "mc_corr_se": float(fam["corr_se"][p]),
              "z_corr": float(fam["z_corr"][p]), "planted_cov": float(wfam["cov"][p]),
              "planted_z_cov": float(wfam["z_cov"][p]),
              "planted_corr": float(wfam["corr"][p]),
              "planted_z_corr": float(wfam["z_corr"][p])}
             for p, (s, t) in enumerate(pairs)]
    return {"case": case.name, "feature": case.feature, "dtype": case.dtype, "seed": seed,
            "runs": n_runs, "method": res.meta.get("method", case.method),
            "lag_table": table, "max_abs_z": float(np.max(np.abs(z_all))),
            "max_abs_z_band": nan, "max_abs_z_variance": nan, "ks_statistic": nan,
            "ks_p": nan, "n_tests": int(fam["pvalues"].size), "p_value": float(adj.min()),
            "threshold": thr, "verdict": "pass" if passed else "FAIL",
            "wrong": "planted fresh-draw sampler (exact marginals)",
            "designed_wrong_z": nan, "max_abs_z_wrong": float(np.max(np.abs(wz_all))),
            "power_p_value": float(wadj.min()),
            "power_verdict": "rejected (good)" if wreject.any() else "NOT REJECTED",
            "deterministic_steps_ok": fam["deterministic_ok"],
            "variance_formula_consistent": True,
            "sensitivity": _sensitivity(exact.covariance, fam["cov_se"], thr),
            "seconds": time.perf_counter() - t0}


def _sensitivity(cov: np.ndarray, se: np.ndarray, thr: float) -> float:
    """Return the smallest relative error of a covariance the case detects.

    It is thr * min se / |cov| over the pairs with a nonzero covariance.
    """
    sel = np.abs(cov) > 0
    if not sel.any():
        return float("nan")
    return float(thr * np.min(se[sel] / np.abs(cov[sel])))


def two_sample_lag_pairs(steps: np.ndarray, cols: np.ndarray,
                         lag_pairs: Any = ()) -> np.ndarray:
    """Return the column pairs a skip-against-step case compares jointly.

    Every pair of the compared records (long lags), the last two records, and the case's
    own ``lag_pairs`` of steps (short lags in the stationary regime, where the planted
    fresh-draw sampler's records are nearly independent).
    """
    c = [int(x) for x in cols]
    n = len(steps)
    pairs = [(c[i], c[j]) for i in range(len(c)) for j in range(i + 1, len(c))]
    if n >= 2:
        pairs.append((n - 2, n - 1))
    if len(lag_pairs):
        pairs += [tuple(p) for p in pair_columns(steps, lag_pairs).tolist()]
    return np.unique(np.array(pairs, np.int64), axis=0)


def two_sample_lag_family(paths_a: np.ndarray, paths_b: np.ndarray,
                          pairs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (p-values, z, differences) of the two-sample lag-covariance tests."""
    d = lag_covariance_difference(paths_a, paths_b, pairs)
    return two_sided_p(d.z), d.z, d.estimate


def fresh_draw_power(case: Any, step_paths: np.ndarray, steps: np.ndarray, pairs: np.ndarray,
                     n_runs: int, seed: int) -> dict[str, Any]:
    """Test the planted fresh-draw sampler against the step kernel's paths (must reject)."""
    planted = fresh_draw_simulate(case.model, case.optimizer, case.batch_size,
                                  int(steps[-1]), n_runs, seed=seed, record=steps)
    pv, z, _ = two_sample_lag_family(planted.paths, step_paths, pairs)
    reject, adj = holm(pv, ALPHA)
    return {"joint_power_verdict": "rejected (good)" if reject.any() else "NOT REJECTED",
            "joint_max_abs_z_wrong": float(np.max(np.abs(z))),
            "joint_power_p_value": float(adj.min())}


def table_lines(r: dict[str, Any]) -> list[str]:
    """Return Markdown lines of a joint case's table of pairs."""
    out = [f"### {r['case']} ({r['method']}, N = {r['runs']})", "",
           "| s | t | exact cov | MC cov (s.e.) | z | exact corr | MC corr (s.e.) | z | "
           "planted corr | planted z (corr) |", "|" + "---|" * 10]
    for row in r["lag_table"]:
        out.append(
            f"| {row['s']} | {row['t']} | {row['exact_cov']:.4g} | {row['mc_cov']:.4g} "
            f"({row['mc_cov_se']:.2g}) | {row['z_cov']:.2f} | {row['exact_corr']:.4f} | "
            f"{row['mc_corr']:.4f} ({row['mc_corr_se']:.2g}) | {row['z_corr']:.2f} | "
            f"{row['planted_corr']:.4f} | {row['planted_z_corr']:.1f} |")
    return out
