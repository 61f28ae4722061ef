r"""Check a theory of the loss against Monte Carlo: :func:`check` and :func:`runs_needed`.

A prediction of :math:`E[L_t]` (and optionally of :math:`\mathrm{Var}[L_t]`, of the expectation
of another recorded statistic, or of the covariance of the loss between two records) is
compared with a Monte Carlo run record by record. Each comparison is a z-score
:math:`z = (\hat\theta - \theta) / \mathrm{se}`; every comparison of the check forms one
family, judged by Holm-Bonferroni at the family-wise error ``family_alpha`` (the check fails
with probability at most ``family_alpha`` when the prediction is right). Rejection by Holm
happens exactly when :math:`\max |z|` exceeds the Bonferroni threshold :math:`z^\star` with
:math:`P(|N(0,1)| > z^\star) = \alpha / m` over the m comparisons.

The same run also says what the check could have seen. The sensitivity is the smallest
relative deviation of the mean, present at every record, that the mean test detects with
probability ``power``; the power check perturbs the prediction by that fraction up and down
and asks the same test to reject both (``docs/theory.md``, section 6).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, Union

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.results import SimulationResult
from nqm_mc.spec._checks import ParameterError
from nqm_mc.theory import stats as st
from nqm_mc.theory.comparisons import Comparison, Verdict, _mean_judgement
from nqm_mc.theory.experiment import (
    OWNER,
    ConfigLike,
    _experiment,
    _short,
    complete_experiment,
    experiment_steps,
    run_experiment,
)

__all__ = ["check", "runs_needed", "Verdict", "Comparison", "STATISTICS", "run_experiment",
           "complete_experiment", "experiment_steps"]

#: A prediction: one value per recorded step, or a function of the recorded steps.
Prediction = Union[ArrayLike, Callable[[np.ndarray], ArrayLike]]  # noqa: UP007
#: Recorded statistics whose expectation can be predicted, with their shape per record.
STATISTICS = {
    "mean_theta": "the loss at the iterate theta (equal to the loss without EMA); shape (R,)",
    "band_mean_square": "each curvature band's mean square of the readout; shape (R, n_bands)",
    "hitting_time": "the first step with loss below the run's target, over the runs that hit; "
                    "a scalar",
}
DEFAULT_ALPHA = 1e-4
DEFAULT_POWER = 0.9


# --------------------------------------------------------------------------- input checking
def _as_array(name: str, value: Any, shape: tuple[int, ...], steps: np.ndarray,
              owner: str = OWNER, nonnegative: bool = False) -> np.ndarray:
    """Return a prediction as a float array of ``shape``, refused in one sentence otherwise."""
    if callable(value):
        try:
            value = value(steps.copy())
        except ParameterError:
            raise
        except Exception as err:  # the user's function: say which and why
            raise ParameterError(f"The {name!r} prediction function of {owner} failed on the "
                                 f"recorded steps: {type(err).__name__}: {err}") from None
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise TypeError(f"The {name!r} parameter of {owner} must be numbers (an array or a "
                        f"function of the steps). Got {_short(value)} instead.") from None
    if arr.shape != shape:
        if arr.ndim == 0 and len(shape) >= 1:
            arr = np.broadcast_to(arr, shape).astype(float)
        else:
            what = ("one value per recorded step" if len(shape) == 1 else
                    f"an array of shape {shape}" if shape else "a single number")
            raise ParameterError(f"The {name!r} parameter of {owner} must have {what} "
                                 f"(shape {shape}, the result records {steps.size} steps). Got "
                                 f"shape {arr.shape} instead.")
    bad = ~np.isfinite(arr)
    if bad.any():
        i = np.unravel_index(int(np.argmax(bad)), arr.shape) if arr.ndim else ()
        where = f" at step {int(steps[i[0]])}" if arr.ndim and steps.size else ""
        raise ParameterError(f"The {name!r} parameter of {owner} must be finite. Got "
                             f"{arr[i]!r}{where} instead.")
    if nonnegative and (arr < 0).any():
        i = np.unravel_index(int(np.argmax(arr < 0)), arr.shape) if arr.ndim else ()
        where = f" at step {int(steps[i[0]])}" if arr.ndim and steps.size else ""
        raise ParameterError(f"The {name!r} parameter of {owner} must be >= 0 (a variance or "
                             f"a standard deviation). Got {float(arr[i])!r}{where} instead.")
    return arr


def _check_prob(name: str, value: Any, owner: str = OWNER) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1
    if not ok:
        raise ParameterError(f"The {name!r} parameter of {owner} must be a float in (0, 1). "
                             f"Got {_short(value)} instead.")
    return float(value)


# --------------------------------------------------------------------------- check
def _statistic(name: str, value: Any, res: SimulationResult, steps: np.ndarray,
               n: np.ndarray) -> Comparison:
    """One statistic's comparison from its prediction (expectation, or (expectation, sd))."""
    if name not in STATISTICS:
        raise ParameterError(f"Unknown statistic {name!r} in the 'statistics' parameter of "
                             f"{OWNER}; allowed: {', '.join(STATISTICS)}.")
    sd: Any = None
    per_run_var: Any = None
    form = ("an expectation, a pair (expectation, per-run standard deviation) or a dict with "
            "'expectation' and 'sd' or 'variance'")
    if isinstance(value, tuple):
        if len(value) != 2:
            raise ParameterError(f"The statistic {name!r} of {OWNER} must be {form}. Got a "
                                 f"tuple of {len(value)} instead.")
        value, sd = value
    elif isinstance(value, Mapping):
        if "expectation" not in value or not set(value) <= {"expectation", "sd", "variance"} \
                or len(value) > 2:
            raise ParameterError(f"The statistic {name!r} of {OWNER} must be {form}. Got keys "
                                 f"{sorted(map(str, value))} instead.")
        sd, per_run_var = value.get("sd"), value.get("variance")
        value = value["expectation"]
    key = f"statistics[{name!r}]"
    if name == "hitting_time":
        ht = res.hitting_times
        if ht is None:
            raise ParameterError(f"The statistic 'hitting_time' of {OWNER} needs a run with a "
                                 "target (simulate(..., target=...) or run.target).")
        hit = ht[ht >= 0].astype(float)
        pred = _as_array(key, value, (), steps)
        if hit.size < 2:
            raise ParameterError(f"The statistic 'hitting_time' of {OWNER} needs at least 2 "
                                 f"runs that hit the target; {hit.size} did.")
        if per_run_var is not None:
            sd = math.sqrt(float(_as_array(key + " variance", per_run_var, (), steps,
                                           nonnegative=True)))
        s = (float(_as_array(key + " standard deviation", sd, (), steps, nonnegative=True))
             if sd is not None else float(hit.std(ddof=1))) / math.sqrt(hit.size)
        return Comparison.build(name, ["runs that hit"], np.array([hit.mean()]),
                                np.atleast_1d(pred), np.array([s]))
    est = np.asarray(getattr(res, name), float)
    pred = _as_array(key, value, est.shape, steps)
    labels = ([f"t={int(t)}" for t in steps] if est.ndim == 1 else
              [f"t={int(t)} band {b}" for t in steps for b in range(est.shape[1])])
    nn = n if est.ndim == 1 else n[:, None]
    if per_run_var is not None:
        se = np.sqrt(_as_array(key + " variance", per_run_var, est.shape, steps,
                               nonnegative=True) / np.maximum(nn, 1))
    elif sd is None:
        if name == "mean_theta" and not (res.spec.get("optimizer") or {}).get("ema"):
            se = res.sem  # no EMA: the loss at theta is the loss
        else:
            raise ParameterError(f"The statistic {name!r} of {OWNER} needs its per-run "
                                 "standard deviation (the run does not record its standard "
                                 "error): pass (expectation, standard_deviation).")
    else:
        se = _as_array(key + " standard deviation", sd, est.shape, steps,
                       nonnegative=True) / np.sqrt(np.maximum(nn, 1))
    return Comparison.build(name, labels, est.ravel(), pred.ravel(), np.asarray(se).ravel())


def _two_time(kind: str, prediction: Any, res: SimulationResult,
              steps: np.ndarray) -> Comparison:
    """Two-time covariances or correlations of the loss from the kept paths, one z per pair.

    The estimates and their influence-function standard errors are those of
    :func:`nqm_mc.joint_stats.lag_covariance` and :func:`~nqm_mc.joint_stats.lag_correlation`.
    """
    from nqm_mc import joint_stats
    what = "Cov(L_s, L_t)" if kind == "covariance" else "Corr(L_s, L_t)"
    if not isinstance(prediction, Mapping) or not prediction:
        raise ParameterError(f"The {kind!r} parameter of {OWNER} must be a non-empty dict "
                             f"{{(s, t): {what}}} over recorded steps. Got "
                             f"{_short(prediction)} instead.")
    if res.paths is None or res.paths.shape[0] < 3:
        raise ParameterError(f"The {kind!r} parameter of {OWNER} needs kept paths: run with "
                             "keep_paths (at least 3; every run for full power).")
    recorded = {int(t) for t in steps}
    pairs, values = [], []
    for pair, value in prediction.items():
        ok = isinstance(pair, tuple) and len(pair) == 2 and all(
            isinstance(t, (int, np.integer)) and not isinstance(t, bool) and int(t) in recorded
            for t in pair)
        if not ok:
            raise ParameterError(f"The {kind!r} parameter of {OWNER} must have keys (s, t) "
                                 f"that are recorded steps. Got {_short(pair)} instead.")
        pairs.append((int(pair[0]), int(pair[1])))
        values.append(float(_as_array(f"{kind}[{pair!r}]", value, (), steps)))
    cols = joint_stats.pair_columns(steps, np.array(pairs, np.int64))
    fn = joint_stats.lag_covariance if kind == "covariance" else joint_stats.lag_correlation
    stat = fn(res.paths, cols, np.array(values))
    return Comparison.build(kind, [f"({s}, {t})" for s, t in pairs], stat.estimate,
                            np.array(values), stat.standard_error)


def check(result: SimulationResult | ConfigLike, mean: Prediction | None = None, *,
          variance: Prediction | None = None,
          statistics: Mapping[str, Any] | None = None,
          covariance: Mapping[tuple[int, int], float] | None = None,
          correlation: Mapping[tuple[int, int], float] | None = None,
          mean_se: str | ArrayLike | None = None, variance_se: ArrayLike | None = None,
          loss_law: Any = None, alternative: Prediction | None = None,
          family_alpha: float = DEFAULT_ALPHA, power: float = DEFAULT_POWER,
          tolerance: float | None = None, ks_seed: int = 0, runs: int | None = None,
          seed: int | None = None, threads: int | None = None) -> Verdict:
    r"""Check a prediction of the loss against a Monte Carlo run.

    Parameters
    ----------
    result : SimulationResult, or an experiment (TOML path, dict or Experiment)
        The run (:func:`nqm_mc.simulate`'s result), or an experiment that ``check`` runs itself
        (see :func:`run_experiment`; every run's path is kept when the variance or a
        covariance is tested).
    mean : array_like, shape (R,), or callable
        The predicted :math:`E[L_t]` at the R recorded steps, or a function of the steps (an
        int64 array) returning it.
    variance : array_like, shape (R,), or callable, optional
        The predicted :math:`\mathrm{Var}[L_t]`, tested against the sample variance. It also
        gives the mean's standard error, :math:`\sqrt{\mathrm{Var}[L_t] / n}`, unless
        ``mean_se`` says otherwise.
    statistics : dict, optional
        Predicted expectations of other recorded statistics by name (:data:`STATISTICS`):
        an array (or callable) of the statistic's shape, a pair (expectation, per-run
        standard deviation), or a dict ``{"expectation": ..., "variance": ...}`` with the
        per-run variance (or ``"sd"``). ``mean_theta`` without EMA and ``hitting_time`` take their
        standard error from the run; the others need the standard deviation.
    covariance : dict, optional
        Predicted :math:`\mathrm{Cov}(L_s, L_t)` by pairs ``(s, t)`` of recorded steps (for
        a linear optimizer, :func:`nqm_mc.loss_covariance` gives the exact one), tested
        against the sample covariance of the kept paths with the standard error of a product
        statistic (:func:`nqm_mc.joint_stats.lag_covariance`).
    correlation : dict, optional
        Predicted :math:`\mathrm{Corr}(L_s, L_t)` by pairs of recorded steps, tested against
        the sample correlation (:func:`nqm_mc.joint_stats.lag_correlation`).
    mean_se : "sample", "predicted" or array_like, optional
        The mean's standard error: the run's (``result.sem``), from the predicted variance, or
        given. Default: "predicted" with a variance prediction, else "sample".
    variance_se : array_like, shape (R,), optional
        Standard errors of the sample variance (from a theory of the fourth moment). Default:
        estimated from the kept paths, which must hold every run.
    loss_law : object, optional
        A law of the loss at the last record, tested by Kolmogorov-Smirnov against the kept
        paths: with ``sample(n, seed)`` (as :class:`~nqm_mc.theory.stats.LossLaw`) two-sample
        against 50 times as many draws, or with ``cdf`` (a frozen scipy distribution)
        one-sample.
    alternative : array_like or callable, optional
        A deliberately wrong mean prediction that the mean test must reject (a power check
        against a named error).
    family_alpha : float, default 1e-4
        Family-wise error over every comparison.
    power : float, default 0.9
        Detection probability of the sensitivity.
    tolerance : float, optional
        Relative tolerance at records of zero standard error (deterministic ones); default
        1e-10, or 1e-5 for a float32 run.
    ks_seed : int, default 0
        Seed of the Kolmogorov-Smirnov reference sample.
    runs, seed, threads : int, optional
        Override the experiment's run keys when ``check`` runs it.

    Returns
    -------
    Verdict
        ``passed``, the z-scores and threshold, the sensitivity, the power check, and
        :meth:`Verdict.plot`.

    Raises
    ------
    ParameterError
        A prediction of the wrong shape, not finite, a negative variance, an unknown statistic
        or a test the run cannot support, in one sentence.
    TypeError
        A prediction that is not numbers, or a ``result`` that is neither a result nor an
        experiment.

    Notes
    -----
    Every z-test and the Kolmogorov-Smirnov test form one family judged by Holm-Bonferroni at
    ``family_alpha``; records where the standard error is zero (a deterministic start at step
    0) are compared within ``tolerance`` instead. The mean test alone, at its own Bonferroni
    threshold :math:`z^\star_m`, defines the sensitivity
    :math:`\delta = (z^\star_m + \Phi^{-1}(\text{power})) \min_t \mathrm{se}_t / |m_t|` over
    the records after step 0, and the power check: the predictions :math:`m_t (1 \pm \delta)`
    must both be rejected (``docs/theory.md``, section 6).

    Examples
    --------
    >>> import nqm_mc
    >>> model = nqm_mc.NQM.paper(100)
    >>> res = nqm_mc.simulate(model, nqm_mc.SGD(0.5), 8, 200, 2000, keep_paths=2000,
    ...                       progress=False)
    >>> ex = nqm_mc.expected_loss(model, nqm_mc.SGD(0.5), 8, record=res.steps)
    >>> v = nqm_mc.check(res, mean=ex.mean, variance=ex.variance)
    >>> v.passed, v.power_caught
    (True, True)
    """
    alpha = _check_prob("family_alpha", family_alpha)
    power = _check_prob("power", power)
    if mean is None and variance is None and not statistics and not covariance \
            and not correlation:
        raise ParameterError(f"{OWNER} needs a prediction: mean, variance, statistics, "
                             "covariance or correlation.")
    if isinstance(result, SimulationResult):
        res = result
    else:
        res = run_experiment(result, runs=runs, seed=seed, threads=threads,
                             keep_paths=2 ** 32 - 1 if (variance is not None and variance_se
                                                        is None) or covariance or correlation or
                             loss_law is not None else None)[0]
    steps = np.asarray(res.steps, np.int64)
    R = steps.size
    n = res.n_finite.astype(float)
    tol = tolerance if tolerance is not None else (
        1e-5 if res.spec.get("dtype") == "float32" else 1e-10)
    comps: dict[str, Comparison] = {}
    notes: list[str] = []
    det_ok = True
    labels = [f"t={int(t)}" for t in steps]
    var_pred = (_as_array("variance", variance, (R,), steps, nonnegative=True)
                if variance is not None else None)
    mean_pred = _as_array("mean", mean, (R,), steps) if mean is not None else None
    if mean_pred is not None:
        how = mean_se if mean_se is not None else (
            "predicted" if var_pred is not None else "sample")
        if isinstance(how, str):
            if how == "predicted":
                if var_pred is None:
                    raise ParameterError(f"The 'mean_se' parameter of {OWNER} is 'predicted' "
                                         "but no variance is predicted.")
                se = np.sqrt(var_pred) / np.sqrt(np.maximum(n, 1))
            elif how == "sample":
                se = np.asarray(res.sem, float)
            else:
                raise ParameterError(f"The 'mean_se' parameter of {OWNER} must be 'sample', "
                                     f"'predicted' or an array. Got {how!r} instead.")
        else:
            se = _as_array("mean_se", how, (R,), steps, nonnegative=True)
        comps["mean"] = Comparison.build("mean", labels, res.mean, mean_pred, se)
        fixed = ~comps["mean"].tested
        if fixed.any():
            diff = np.abs(res.mean[fixed] - mean_pred[fixed])
            ok = diff <= tol * (1 + np.abs(mean_pred[fixed]))
            det_ok = bool(np.all(ok))
            if not det_ok:
                t0 = int(steps[fixed][np.argmin(ok)])
                notes.append(f"at step {t0} the standard error is zero and the mean differs "
                             "from the prediction beyond rounding")
    if var_pred is not None:
        if variance_se is not None:
            vse = _as_array("variance_se", variance_se, (R,), steps, nonnegative=True)
        elif res.paths is not None and res.paths.shape[0] == res.n_runs:
            vse = st.sample_variance_se(res.paths)
        else:
            raise ParameterError(f"Testing the 'variance' prediction of {OWNER} needs the "
                                 "standard error of the sample variance: pass variance_se, or "
                                 "keep every run's path (keep_paths = n_runs).")
        comps["variance"] = Comparison.build("variance", labels, res.variance, var_pred, vse)
        comps["variance"].tested &= var_pred > 0
        comps["variance"].z[~comps["variance"].tested] = 0.0
    for name, value in (statistics or {}).items():
        comps[name] = _statistic(name, value, res, steps, n)
    if covariance is not None:
        comps["covariance"] = _two_time("covariance", covariance, res, steps)
    if correlation is not None:
        comps["correlation"] = _two_time("correlation", correlation, res, steps)
    pvals = [c.pvalues for c in comps.values()]
    ks_stat = ks_p = None
    if loss_law is not None:
        if res.paths is None:
            raise ParameterError(f"The 'loss_law' parameter of {OWNER} needs kept paths "
                                 "(keep_paths).")
        last = res.paths[:, -1]
        last = last[np.isfinite(last)]
        if hasattr(loss_law, "sample"):
            ks_stat, ks_p = st.ks_against_law(last, loss_law, seed=ks_seed)
        elif hasattr(loss_law, "cdf"):
            from scipy import stats as sps
            k = sps.kstest(last, loss_law.cdf)
            ks_stat, ks_p = float(k.statistic), float(k.pvalue)
        else:
            raise TypeError(f"The 'loss_law' parameter of {OWNER} must have a sample(n, seed) "
                            f"or a cdf method. Got {_short(loss_law)} instead.")
        pvals.append(np.array([ks_p]))
    allp = np.concatenate(pvals) if pvals else np.zeros(0)
    reject, adj = st.holm(allp, alpha)
    n_tests = int(allp.size)
    threshold = st.max_abs_z_threshold(n_tests, alpha)
    max_z = max((c.max_abs_z for c in comps.values()), default=0.0)
    n_div = int(res.n_diverged[-1]) if res.n_diverged.size else 0
    if n_div:
        notes.append(f"{n_div} of {res.n_runs} runs diverged by step {int(steps[-1])}")
    if reject.any():
        worst = max(comps.values(), key=lambda c: c.max_abs_z) if comps else None
        if worst is not None and worst.max_abs_z >= threshold:
            i = int(np.argmax(np.abs(worst.z)))
            notes.append(f"{worst.name} rejected: z = {worst.z.ravel()[i]:.2f} at "
                         f"{worst.labels[i]}")
        elif ks_p is not None:
            notes.append(f"the law of the last record rejected by Kolmogorov-Smirnov "
                         f"(p = {ks_p:.3g})")
    passed = (not reject.any()) and det_ok and n_div == 0
    nan = float("nan")
    sens, sens_step, sens_worst = nan, -1, nan
    caught: bool | None = None
    pmz = (nan, nan)
    m_thr = nan
    alt_z: np.ndarray | None = None
    alt_rej: bool | None = None
    alt_p: float | None = None
    m = comps.get("mean")
    if m is not None:
        m_thr = st.max_abs_z_threshold(int(m.tested.sum()), alpha)
        sens, sens_step, sens_worst = st.sensitivity(steps, m.predicted, m.se, m.tested, m_thr,
                                                     power)
        if np.isfinite(sens):
            zs = [_mean_judgement(m.estimate, m.se, m.tested, m.predicted * (1 + s * sens),
                                  alpha) for s in (1, -1)]
            caught = zs[0][1] and zs[1][1]
            pmz = (float(np.max(np.abs(zs[0][0]))), float(np.max(np.abs(zs[1][0]))))
        if alternative is not None:
            wrong = _as_array("alternative", alternative, (R,), steps)
            alt_z, alt_rej, alt_p = _mean_judgement(m.estimate, m.se, m.tested, wrong, alpha)
    elif alternative is not None:
        raise ParameterError(f"The 'alternative' parameter of {OWNER} needs a mean "
                             "prediction.")
    return Verdict(
        passed=passed, steps=steps, z=m.z if m is not None else np.zeros(R),
        threshold=threshold, max_abs_z=max_z, p_value=float(adj.min()) if adj.size else 1.0,
        n_tests=n_tests, comparisons=comps, mean_threshold=m_thr, sensitivity=sens,
        sensitivity_step=sens_step, sensitivity_worst=sens_worst, power=power,
        power_caught=caught, power_max_abs_z=pmz, family_alpha=alpha,
        deterministic_ok=det_ok, n_runs=res.n_runs, n_diverged=n_div, result=res,
        alternative_z=alt_z, alternative_rejected=alt_rej, alternative_p_value=alt_p,
        ks_statistic=ks_stat, ks_p=ks_p, notes=notes)


# --------------------------------------------------------------------------- planning
def runs_needed(relative_error: float, source: SimulationResult | ConfigLike | None = None, *,
                mean: Prediction | None = None, variance: Prediction | None = None,
                steps: ArrayLike | None = None, family_alpha: float = DEFAULT_ALPHA,
                power: float = DEFAULT_POWER, n_comparisons: int | None = None) -> int:
    r"""Return the number of runs a check needs to detect a relative error of the mean.

    Parameters
    ----------
    relative_error : float > 0
        The deviation to detect: the prediction off by this fraction at every record.
    source : SimulationResult or experiment, optional
        A pilot run (its per-run standard deviation :math:`\mathrm{sem}_t \sqrt{n_t}` and its
        mean, unless ``mean`` and ``variance`` are given), or an experiment (TOML path, dict
        or Experiment) with a linear optimizer, whose exact mean and variance at its recorded
        steps are used (no simulation).
    mean, variance : array_like or callable, optional
        The mean and the variance of the loss at the recorded steps (without ``source``, both
        are needed, with ``steps``).
    steps : array_like of int, optional
        The recorded steps (default: the source's).
    family_alpha : float, default 1e-4
        The check's family-wise error.
    power : float, default 0.9
        Probability of detecting the error.
    n_comparisons : int, optional
        Comparisons in the mean test (default: the records with a positive variance).

    Returns
    -------
    int
        The smallest N with :math:`\delta\,|m_t| \sqrt{N} / \sigma_t \ge z^\star +
        \Phi^{-1}(\text{power})` at the best-resolved record after step 0; with that many runs
        :func:`check`'s sensitivity is at most ``relative_error``.

    Raises
    ------
    ParameterError
        A relative error that is not a positive number, a source without what is needed, or
        a prediction that no record can resolve.
    """
    owner = "runs_needed"
    if not (isinstance(relative_error, (int, float)) and not isinstance(relative_error, bool)
            and math.isfinite(relative_error) and relative_error > 0):
        raise ParameterError(f"The 'relative_error' parameter of {owner} must be a float in "
                             f"(0, inf). Got {_short(relative_error)} instead.")
    alpha = _check_prob("family_alpha", family_alpha, owner)
    power = _check_prob("power", power, owner)
    if isinstance(source, SimulationResult):
        t = np.asarray(source.steps if steps is None else steps, np.int64)
        sd = np.asarray(source.sem, float) * np.sqrt(np.asarray(source.n_finite, float))
        m0 = np.asarray(source.mean, float)
        if variance is not None:
            sd = np.sqrt(_as_array("variance", variance, (t.size,), t, owner, True))
        m = _as_array("mean", mean, (t.size,), t, owner) if mean is not None else m0
    elif source is not None:
        from nqm_mc.exact.engine import expected_loss
        exp = _experiment(source)
        if exp.model is None or exp.optimizer is None or not exp.optimizer.is_linear:
            raise ParameterError(f"The experiment of {owner} needs a [model] and a linear "
                                 "[optimizer] for the exact variance; for others pass a pilot "
                                 "run (a SimulationResult).")
        batch = exp.batch_size if exp.batch_size is not None else 32
        t = np.asarray(steps if steps is not None else experiment_steps(exp), np.int64)
        ex = expected_loss(exp.model, exp.optimizer, batch, record=t)
        m = _as_array("mean", mean, (t.size,), t, owner) if mean is not None else ex.mean
        sd = np.sqrt(np.maximum(ex.variance, 0.0))
    else:
        if mean is None or variance is None or steps is None:
            raise ParameterError(f"{owner} needs a source (a pilot run or an experiment), or "
                                 "mean, variance and steps.")
        t = np.asarray(steps, np.int64)
        m = _as_array("mean", mean, (t.size,), t, owner)
        sd = np.sqrt(_as_array("variance", variance, (t.size,), t, owner, True))
    live = sd > 0
    k = int(n_comparisons) if n_comparisons is not None else int(live.sum())
    thr = st.max_abs_z_threshold(k, alpha) + st.power_z(power)
    sel = live & (t > 0) & (np.abs(m) > 0)
    if not sel.any():
        raise ParameterError(f"{owner}: no record after step 0 has a positive variance and a "
                             "nonzero mean; nothing to resolve.")
    need = (thr * sd[sel] / (relative_error * np.abs(m[sel]))) ** 2
    return max(int(math.ceil(float(need.min()))), 2)
