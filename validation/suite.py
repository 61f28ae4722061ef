"""Run validation cases: Monte Carlo against the exact recurrences, with a power check each."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from scipy import stats

from nqm_mc import NQM, expected_loss, simulate, stability
from nqm_mc.exact.dense import expected_loss_dense
from nqm_mc.montecarlo.dense import simulate_dense
from nqm_mc.spec import schedules as S
from nqm_mc.spec.rotated import RotatedNQM
from nqm_mc.theory import check
from nqm_mc.theory.stats import (
    LossLaw,
    band_moments,
    holm,
    max_abs_z_threshold,
    sensitivity,
    two_sided_p,
)

if TYPE_CHECKING:
    from validation.cases import Case

ALPHA = 1e-4  # family-wise error per case (Holm-Bonferroni over all of the case's tests)
POWER_MARGIN = 4.0  # the wrong reference's expected max |z| exceeds the threshold by this
N_BANDS = 4
MAX_PATHS = 5000
KS_MARGIN = 1.5  # two-sample cases: the wrong law's KS distance over the critical value


def _runs(values):
    """Return (boundaries, values) of a piecewise-constant schedule equal to ``values``.

    One piece per run of equal values (a long horizon with few changes stays small).
    """
    values = np.asarray(values)
    starts = np.flatnonzero(np.diff(values) != 0) + 1
    return starts.tolist(), values[np.concatenate([[0], starts])].tolist()


def wrong_reference(case: Case) -> tuple[Any, Any, str]:
    """Return the case's deliberately wrong reference.

    Parameters
    ----------
    case : Case
        The case; ``case.wrong`` says what to change.

    Returns
    -------
    optimizer, batch_size
        The wrong configuration.
    description : str
        What was changed.
    """
    opt, batch, T = case.optimizer, case.batch_size, case.n_steps
    if case.wrong == "momentum":
        return opt.with_(momentum=0.0), batch, "momentum term dropped"
    if case.wrong == "batch":
        b = S.as_batch_schedule(batch).values(T)
        return opt, S.PiecewiseConstantBatch(*_runs(np.maximum(b // 2, 1))), \
            "batch size halved"
    lr = opt.learning_rate
    new: S.Schedule
    if opt.is_constant:
        new = S.Constant(opt.base_learning_rate * 1.05)
    else:
        new = S.PiecewiseConstant(*_runs(lr.values(T) * 1.05))
    return opt.with_(learning_rate=new), batch, "learning rate 5 % high"


def record_steps(T: int, n: int = 24) -> np.ndarray:
    """Return about ``n + 1`` evenly spaced steps in [0, T] (int64, without repeats)."""
    return np.unique(np.linspace(0, T, n + 1).astype(np.int64))


def case_steps(case):
    """Return the case's recorded steps.

    25 evenly spaced, or with ``case.log_records`` about that many log-spaced ones
    (0, 1, ..., T) for the long horizons of the skip-ahead cases.
    """
    if case.log_records:
        steps = np.unique(np.concatenate([[0], np.geomspace(1, case.n_steps, case.log_records)
                                          .round().astype(np.int64), [case.n_steps]]))
    else:
        steps = record_steps(case.n_steps)
    if case.two_sample and case.lag_pairs:  # the steps of the pairs compared jointly
        steps = np.union1d(steps, np.asarray(case.lag_pairs, np.int64).ravel())
    return steps


def _sensitivity_fields(steps, mean, se, live, thr):
    lo, at, hi = sensitivity(steps, mean, se, live, thr)
    return {"sensitivity": lo, "sensitivity_step": at, "sensitivity_worst": hi}


def _design_runs(case, n_runs, exact, wrong, live):
    """Return the trajectories needed for the power check.

    With that many, the wrong reference's expected max |z| clears the Holm / Bonferroni
    threshold by POWER_MARGIN.
    """
    sd = np.sqrt(exact.variance[live])
    shift = np.max(np.abs(wrong.mean[live] - exact.mean[live]) / sd)
    thr = max_abs_z_threshold(int(live.sum()), ALPHA)
    need = math.ceil(((thr + POWER_MARGIN) / max(shift, 1e-12)) ** 2)
    return max(n_runs, need), float(shift), thr


def run_case(case: Case, quick: bool = True, seed: int = 0, threads: int | None = None,
             simulator: Callable[..., Any] = simulate,
             convergence: bool = False, runs_factor: int = 1) -> dict[str, Any]:
    """Validate one case.

    Parameters
    ----------
    case : Case
        The case.
    quick : bool, default True
        Use ``case.runs_quick`` (else ``runs_full``) before the power design.
    seed : int, default 0
        Monte Carlo seed.
    threads : int, optional
        Numba threads.
    simulator : callable, default simulate
        The Monte Carlo engine (a stand-in lets the tests inject faults).
    convergence : bool, default False
        Also check that the error falls like N^(-1/2).
    runs_factor : int, default 1
        Multiplies the case's number of trajectories (after the power design).

    Returns
    -------
    dict
        JSON-ready (arrays as lists): z-scores, p-values, the verdict and the power verdict.

    Notes
    -----
    The tests, judged together by Holm-Bonferroni at family-wise error ``ALPHA``, are the
    z-scores of the mean at every recorded step, of each curvature band's mean square and of
    the sample variance, and a Kolmogorov-Smirnov test of the final loss against its exact
    law (``docs/theory.md``, sections 6.1-6.3).
    """
    t0 = time.perf_counter()
    runs_factor = int(runs_factor)
    if runs_factor < 1:
        raise ValueError(f"runs_factor must be a positive integer, got {runs_factor}")
    n_runs = case.runs_quick if quick else case.runs_full
    steps = case_steps(case)
    model, opt, batch = case.model, case.optimizer, case.batch_size
    if isinstance(model, RotatedNQM):
        return _run_dense_case(case, n_runs, steps, seed, threads, t0, runs_factor)
    if case.two_sample:
        return _run_two_sample_case(case, n_runs, steps, seed, threads, t0, runs_factor)
    if case.lag_pairs:
        from validation.joint import run_joint_case
        return run_joint_case(case, n_runs, seed, threads, t0, runs_factor, simulator)
    exact = expected_loss(model, opt, batch, record=steps, group_moments=True)
    out: dict[str, Any] = {"case": case.name, "feature": case.feature, "dtype": case.dtype,
                           "seed": seed, "method": case.method}
    if case.diverges:
        n_runs *= runs_factor
        st = stability(model, opt, batch)
        res = simulator(model, opt, batch, case.n_steps, n_runs, seed=seed, record=steps,
                        dtype=case.dtype, threads=threads, progress=False, method=case.method)
        mc_div = int(res.n_diverged[-1])
        ok = (not st.stable) and bool(exact.diverged) and mc_div == n_runs
        out.update(runs=n_runs, max_abs_z=float("nan"), p_value=float("nan"),
                   verdict="pass" if ok else "FAIL", power_verdict="n/a",
                   detail=f"exact: {st.reason or 'stable'}; Monte Carlo: {mc_div} of {n_runs} "
                          f"trajectories diverged by step {case.n_steps}",
                   seconds=time.perf_counter() - t0)
        return out
    wopt, wbatch, wdesc = wrong_reference(case)
    wrong = expected_loss(model, wopt, wbatch, record=steps)
    sd = np.sqrt(exact.variance)
    live = sd > 0
    n_runs, shift, thr = _design_runs(case, n_runs, exact, wrong, live)
    n_runs *= runs_factor
    if case.noise is not None:
        return _run_noise_case(case, out, steps, exact, wrong, wdesc, live, n_runs, thr, seed,
                               threads, simulator, t0)
    keep = min(n_runs, MAX_PATHS)
    res = simulator(model, opt, batch, case.n_steps, n_runs, seed=seed, record=steps,
                    keep_paths=keep, n_bands=N_BANDS, dtype=case.dtype, threads=threads,
                    progress=False, method=case.method)
    n = res.n_finite.astype(float)
    # the exact law at every record: per-band moments of the readout's square, the standard
    # error of the sample variance and the law of the loss (a generalised chi-square)
    labels, _ = model.curvature_groups(N_BANDS)
    # group_moments=True: the per-group moments are arrays
    gmean = cast(np.ndarray, exact.group_mean)
    gsecond = cast(np.ndarray, exact.group_second_moment)
    bm, bv, counts = band_moments(model, labels, N_BANDS, gmean, gsecond)
    laws = [LossLaw(model.curvatures, model.multiplicities, gmean[r], gsecond[r])
            for r in range(steps.size)]
    law_var = np.array([law.variance for law in laws])
    consistent = bool(np.allclose(law_var, exact.variance, rtol=1e-8, atol=1e-300))
    var_se = np.zeros(steps.size)
    var_se[live] = [laws[r].variance_se(n[r]) for r in np.flatnonzero(live)]
    # one family through the public check: the mean at every record (exact s.e.), each band's
    # mean square, the sample variance, and Kolmogorov-Smirnov of the last record's loss
    v = check(res, mean=exact.mean, variance=exact.variance, variance_se=var_se,
              statistics={"band_mean_square": {"expectation": bm, "variance": bv}},
              loss_law=laws[-1], ks_seed=seed + 1, alternative=wrong.mean, family_alpha=ALPHA,
              power=0.5, tolerance=1e-5 if case.dtype == "float32" else 1e-10)
    z_mean, z_wrong = v.z, cast(np.ndarray, v.alternative_z)
    passed = v.passed and consistent
    out.update(
        runs=n_runs, steps=steps.tolist(), mc_mean=res.mean.tolist(), mc_sem=res.sem.tolist(),
        exact_mean=exact.mean.tolist(), exact_std=sd.tolist(), wrong_mean=wrong.mean.tolist(),
        z_mean=z_mean.tolist(), z_wrong=z_wrong.tolist(),
        max_abs_z=float(np.max(np.abs(z_mean))),
        max_abs_z_band=v.comparisons["band_mean_square"].max_abs_z,
        max_abs_z_variance=v.comparisons["variance"].max_abs_z, ks_statistic=v.ks_statistic,
        ks_p=v.ks_p, n_tests=v.n_tests, p_value=v.p_value, threshold=thr,
        verdict="pass" if passed else "FAIL",
        wrong=wdesc, designed_wrong_z=float(shift * math.sqrt(n_runs)),
        max_abs_z_wrong=float(np.max(np.abs(z_wrong))), power_p_value=v.alternative_p_value,
        power_verdict="rejected (good)" if v.alternative_rejected else "NOT REJECTED",
        deterministic_steps_ok=v.deterministic_ok, variance_formula_consistent=consistent,
        method=res.meta.get("method", case.method),
        **_sensitivity_fields(steps, exact.mean, sd / np.sqrt(n), live, thr))
    if convergence:
        out["convergence"] = _convergence(case, steps, exact, live, n_runs, seed, threads,
                                          simulator)
        if not out["convergence"]["ok"]:
            out["verdict"] = "FAIL"
    out["seconds"] = time.perf_counter() - t0
    return out


def _run_noise_case(case, out, steps, exact, wrong, wdesc, live, n_runs, thr, seed, threads,
                    simulator, t0):
    """Validate a case with a non-Gaussian noise law.

    The loss's variance and law differ from the Gaussian ones, so the mean at every recorded
    step is tested with the Monte Carlo standard error (Holm over the steps), and the power
    check asks the same test to reject the wrong reference.
    """
    res = simulator(case.model, case.optimizer, case.batch_size, case.n_steps, n_runs,
                    seed=seed, record=steps, dtype=case.dtype, threads=threads, progress=False,
                    noise=case.noise, method=case.method)
    v = check(res, mean=exact.mean, mean_se=np.where(live, res.sem, 0.0), alternative=wrong.mean,
              family_alpha=ALPHA, power=0.5,
              tolerance=1e-5 if case.dtype == "float32" else 1e-10)
    z_mean, z_wrong = v.z, cast(np.ndarray, v.alternative_z)
    det_ok, adj_min, wrejected, wadj_min = (v.deterministic_ok, v.p_value,
                                            v.alternative_rejected, v.alternative_p_value)
    passed = v.passed
    nan = float("nan")
    out.update(
        runs=n_runs, steps=steps.tolist(), mc_mean=res.mean.tolist(), mc_sem=res.sem.tolist(),
        exact_mean=exact.mean.tolist(), exact_std=np.sqrt(exact.variance).tolist(),
        wrong_mean=wrong.mean.tolist(), z_mean=z_mean.tolist(), z_wrong=z_wrong.tolist(),
        max_abs_z=float(np.max(np.abs(z_mean))), max_abs_z_band=nan, max_abs_z_variance=nan,
        ks_statistic=nan, ks_p=nan, n_tests=v.n_tests, p_value=adj_min,
        threshold=thr, verdict="pass" if passed else "FAIL", wrong=wdesc,
        designed_wrong_z=nan, max_abs_z_wrong=float(np.max(np.abs(z_wrong))),
        power_p_value=wadj_min,
        power_verdict="rejected (good)" if wrejected else "NOT REJECTED",
        deterministic_steps_ok=det_ok, variance_formula_consistent=True,
        noise=case.noise.to_dict(), method=case.method,
        **_sensitivity_fields(steps, exact.mean, res.sem, live, thr),
        sample_to_gaussian_variance=float(np.max(res.variance[live] / exact.variance[live])),
        seconds=time.perf_counter() - t0)
    return out


def _dense_preconditioner(case):
    if case.preconditioner is None:
        return None
    if isinstance(case.preconditioner, str) and case.preconditioner == "jacobi":
        return np.sqrt(np.diag(case.model.hessian()))  # P = diag(H)^(1/2)
    return np.asarray(case.preconditioner, float)


def _run_dense_case(case, n_runs, steps, seed, threads, t0, runs_factor=1):
    """Validate a non-aligned model: the dense Monte Carlo against the covariance recurrence.

    The recurrence gives the exact mean and exact variance of the loss (the state is
    Gaussian); the mean is tested at every recorded step with Holm, and the power check runs
    against the case's wrong reference.
    """
    model, opt, batch = case.model, case.optimizer, case.batch_size
    pre = _dense_preconditioner(case)
    _, ex_mean, ex_var = expected_loss_dense(model, opt, batch, record=steps, preconditioner=pre)
    if case.wrong == "aligned":
        # ignore the rotation of C: noise variances c in H's eigenbasis
        eq = model.equivalent_nqm()
        naive = NQM(model.curvatures, model.noise_variances, initial_mean=eq.initial_mean,
                    initial_variance=eq.initial_variance)
        wrong = expected_loss(naive, opt, batch, record=steps).mean
        wdesc = "rotation ignored (diag C instead of diag(U^T C U))"
    else:
        wopt, _, wdesc = wrong_reference(case)
        wrong = expected_loss_dense(model, wopt, batch, record=steps, preconditioner=pre)[1]
    sd = np.sqrt(ex_var)
    live = sd > 0
    shift = np.max(np.abs(wrong[live] - ex_mean[live]) / sd[live])
    thr = max_abs_z_threshold(int(live.sum()), ALPHA)
    n_runs = max(n_runs, math.ceil(((thr + POWER_MARGIN) / max(shift, 1e-12)) ** 2))
    n_runs *= runs_factor
    res = simulate_dense(model, opt, batch, case.n_steps, n_runs, seed=seed, record=steps,
                         preconditioner=pre, threads=threads)
    n = res.n_finite.astype(float)
    se = np.zeros(steps.size)
    se[live] = sd[live] / np.sqrt(n[live])
    v = check(res, mean=ex_mean, mean_se=se, alternative=wrong, family_alpha=ALPHA, power=0.5,
              tolerance=np.inf)  # records of zero variance are not compared (as before)
    z_mean, z_wrong = v.z, cast(np.ndarray, v.alternative_z)
    passed = v.passed
    nan = float("nan")
    return {"case": case.name, "feature": case.feature, "dtype": case.dtype, "seed": seed,
            "runs": n_runs, "steps": steps.tolist(), "mc_mean": res.mean.tolist(),
            "mc_sem": res.sem.tolist(), "exact_mean": ex_mean.tolist(),
            "exact_std": sd.tolist(), "wrong_mean": wrong.tolist(), "z_mean": z_mean.tolist(),
            "z_wrong": z_wrong.tolist(), "max_abs_z": float(np.max(np.abs(z_mean))),
            "max_abs_z_band": nan, "max_abs_z_variance": nan, "ks_statistic": nan,
            "ks_p": nan, "n_tests": v.n_tests, "p_value": v.p_value,
            "threshold": thr, "verdict": "pass" if passed else "FAIL", "wrong": wdesc,
            "designed_wrong_z": float(shift * math.sqrt(n_runs)),
            "max_abs_z_wrong": float(np.max(np.abs(z_wrong))),
            "power_p_value": v.alternative_p_value,
            "power_verdict": "rejected (good)" if v.alternative_rejected else "NOT REJECTED",
            "deterministic_steps_ok": True, "variance_formula_consistent": True,
            "engine": "dense", "method": "step",
            **_sensitivity_fields(steps, ex_mean, sd / np.sqrt(n), live, thr),
            "seconds": time.perf_counter() - t0}


def _convergence(case, steps, exact, live, n_runs, seed, threads, simulator):
    """Return the RMS standardised error (MC mean - exact) / exact std at N/16, N/4 and N.

    The trajectory sets are nested (the first n trajectories of a seed are the same for any
    n_runs); the error's log-log slope should be -1/2.
    """
    sizes = [max(n_runs // 16, 32), max(n_runs // 4, 64), n_runs]
    sd = np.sqrt(exact.variance[live])
    errs = []
    for k in sizes:
        r = simulator(case.model, case.optimizer, case.batch_size, case.n_steps, k, seed=seed,
                      record=steps, dtype=case.dtype, threads=threads, progress=False,
                      method=case.method)
        errs.append(float(np.sqrt(np.mean(((r.mean[live] - exact.mean[live]) / sd) ** 2))))
    slope = float(np.polyfit(np.log(sizes), np.log(errs), 1)[0])
    return {"runs": sizes, "rms_error": errs, "slope": slope, "ok": -0.9 < slope < -0.15}


def run_suite(cases: list[Case], quick: bool = True, seed: int = 0,
              threads: int | None = None, simulator: Callable[..., Any] = simulate,
              log: Callable[[str], Any] | None = None,
              runs_factor: int = 1) -> list[dict[str, Any]]:
    """Run :func:`run_case` on every case.

    The first case (every case of the full suite) also gets the convergence check.

    Parameters
    ----------
    cases : list of Case
        The cases.
    quick, seed, threads, simulator
        As in :func:`run_case`.
    log : callable, optional
        Receives one line per case.
    runs_factor : int, default 1
        As in :func:`run_case`.

    Returns
    -------
    list of dict
        One result per case, in order.
    """
    results = []
    for i, case in enumerate(cases):
        conv = (not quick or i == 0) and not case.diverges and not case.two_sample
        r = run_case(case, quick=quick, seed=seed, threads=threads, simulator=simulator,
                     convergence=conv, runs_factor=runs_factor)
        if log:
            from nqm_mc._table import cell
            sens = r.get("sensitivity", float("nan"))
            log(f"{case.name:20s} {r['verdict']:5s} power: {r['power_verdict']:16s} "
                f"runs {r['runs']:6d}  max|z| {cell(r['max_abs_z'], '.2f'):>5s}  "
                f"sens {cell(100 * sens, '.2f') + ' %' if sens == sens else '-':>7s}  "
                f"{r['seconds']:5.1f} s")
        results.append(r)
    return results


def _ks_critical(n1, n2, alpha):
    """Return the two-sample Kolmogorov-Smirnov statistic's critical value at level alpha.

    Asymptotically sqrt(-log(alpha / 2) / 2) sqrt((n1 + n2) / (n1 n2)).
    """
    return math.sqrt(-math.log(alpha / 2) / 2) * math.sqrt((n1 + n2) / (n1 * n2))


def _law_samples(model, opt, batch, steps, n, seed):
    """N draws of the loss from its exact law at each of ``steps`` (rows)."""
    ex = expected_loss(model, opt, batch, record=steps, group_moments=True)
    mean, second = cast(np.ndarray, ex.group_mean), cast(np.ndarray, ex.group_second_moment)
    return ex, np.array([LossLaw(model.curvatures, model.multiplicities, mean[r],
                                 second[r]).sample(n, seed + r)
                         for r in range(steps.size)])


def _two_sample_family(a, b, paths_a, paths_b, cols, live):
    """Return the p-values of one skip-against-step family.

    Two-sample KS of the loss at the compared
    records (columns ``cols`` of the kept paths) and the two-sample z of the means at every
    live record. Returns (p-values, KS statistics, KS p-values, z of the means).
    """
    ks = [stats.ks_2samp(paths_a[:, c], paths_b[:, c]) for c in cols]
    z = np.zeros(a.mean.size)
    se = np.sqrt(a.sem ** 2 + b.sem ** 2)
    z[live] = (a.mean[live] - b.mean[live]) / se[live]
    ks_p = np.array([float(k.pvalue) for k in ks])
    return (np.concatenate([ks_p, two_sided_p(z[live])]),
            np.array([float(k.statistic) for k in ks]), ks_p, z)


def _run_two_sample_case(case, n_runs, steps, seed, threads, t0, runs_factor=1):
    """Validate the skip-ahead sampler against the step kernel on one configuration.

    The exact engine is not in the comparison: two-sample Kolmogorov-Smirnov of the loss at
    a few recorded
    steps (all paths kept) and two-sample z of the means at every recorded step, under Holm at
    ALPHA. Power: the same family, skip against a step run of the case's wrong reference,
    must reject. The number of runs is designed from the exact laws: the KS distance D between
    the right and the wrong law at the compared steps must clear the KS critical value of the
    family by a factor KS_MARGIN.
    """
    model, opt, batch, T = case.model, case.optimizer, case.batch_size, case.n_steps
    wopt, wbatch, wdesc = wrong_reference(case)
    cols = np.unique(np.linspace(1, steps.size - 1, case.compare_records).round()
                     .astype(np.int64))
    cmp_steps = steps[cols]
    ex, right = _law_samples(model, opt, batch, cmp_steps, 100_000, seed + 10)
    _, wrong = _law_samples(model, wopt, wbatch, cmp_steps, 100_000, seed + 20)
    dist = np.array([stats.ks_2samp(right[r], wrong[r]).statistic for r in range(cols.size)])
    exact = expected_loss(model, opt, batch, record=steps)
    live = exact.variance > 0
    n_tests = cols.size + int(live.sum())
    c = math.sqrt(-math.log(ALPHA / n_tests / 2) / 2)  # critical D = c sqrt(2 / N)
    need = math.ceil(2 * (KS_MARGIN * c / max(dist.max(), 1e-12)) ** 2)
    n_runs = max(n_runs, need) * runs_factor
    common = dict(record=steps, keep_paths=n_runs, dtype=case.dtype, threads=threads,
                  progress=False)
    skip = simulate(model, opt, batch, T, n_runs, seed=seed, method=case.method, **common)
    step = simulate(model, opt, batch, T, n_runs, seed=seed + 1, method="step", **common)
    bad = simulate(model, wopt, wbatch, T, n_runs, seed=seed + 2, method="step", **common)
    assert skip.paths is not None and step.paths is not None and bad.paths is not None
    pv, ks_stat, ks_p, z = _two_sample_family(skip, step, skip.paths, step.paths, cols, live)
    # the joint law: two-sample z of the lag covariances of the kept paths
    from validation.joint import fresh_draw_power, two_sample_lag_family, two_sample_lag_pairs
    lag_pairs = two_sample_lag_pairs(steps, cols, case.lag_pairs)
    lag_p, lag_z, lag_diff = two_sample_lag_family(skip.paths, step.paths, lag_pairs)
    pv = np.concatenate([pv, lag_p])
    n_tests += lag_pairs.shape[0]
    reject, adj = holm(pv, ALPHA)
    wpv, wks_stat, wks_p, wz = _two_sample_family(skip, bad, skip.paths, bad.paths, cols, live)
    wpv = np.concatenate([wpv, two_sample_lag_family(skip.paths, bad.paths, lag_pairs)[0]])
    wreject, wadj = holm(wpv, ALPHA)
    ks_reject = wreject[:cols.size].any()
    joint = fresh_draw_power(case, step.paths, steps, lag_pairs, n_runs, seed + 3)
    passed = (not reject.any()) and skip.n_diverged[-1] == 0 and step.n_diverged[-1] == 0
    thr = max_abs_z_threshold(n_tests, ALPHA)
    se = np.sqrt(skip.sem ** 2 + step.sem ** 2)
    nan = float("nan")
    return {"case": case.name, "feature": case.feature, "dtype": case.dtype, "seed": seed,
            "runs": n_runs, "steps": steps.tolist(), "mc_mean": skip.mean.tolist(),
            "mc_sem": skip.sem.tolist(), "exact_mean": exact.mean.tolist(),
            "exact_std": np.sqrt(exact.variance).tolist(), "step_mean": step.mean.tolist(),
            "wrong_mean": bad.mean.tolist(), "z_mean": z.tolist(), "z_wrong": wz.tolist(),
            "max_abs_z": float(np.max(np.abs(z))), "max_abs_z_band": nan,
            "max_abs_z_variance": nan, "compared_steps": cmp_steps.tolist(),
            "ks_statistic": float(ks_stat.max()), "ks_p": float(ks_p.min()),
            "ks_statistics": ks_stat.tolist(), "ks_p_values": ks_p.tolist(),
            "ks_critical": _ks_critical(n_runs, n_runs, ALPHA / n_tests),
            "designed_ks_distance": dist.tolist(), "n_tests": int(pv.size),
            "p_value": float(adj.min()), "threshold": thr,
            "verdict": "pass" if passed else "FAIL",
            "wrong": f"step kernel with {wdesc}", "designed_wrong_z": nan,
            "max_abs_z_wrong": float(np.max(np.abs(wz))),
            "ks_statistics_wrong": wks_stat.tolist(), "ks_p_values_wrong": wks_p.tolist(),
            "power_p_value": float(wadj.min()),
            "power_verdict": "rejected (good)" if ks_reject and
            joint["joint_power_verdict"] == "rejected (good)" else "NOT REJECTED",
            "deterministic_steps_ok": True, "variance_formula_consistent": True,
            "method": f"{skip.meta['method']} vs {step.meta['method']}",
            "lag_pairs": steps[lag_pairs].tolist(), "lag_cov_difference": lag_diff.tolist(),
            "z_lag_cov": lag_z.tolist(), "max_abs_z_lag_cov": float(np.max(np.abs(lag_z))),
            **joint,
            **_sensitivity_fields(steps, exact.mean, se, live, thr),
            "seconds": time.perf_counter() - t0}
