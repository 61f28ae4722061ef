"""The joint-law validation cases: they pass, the planted fresh-draw sampler (exact
marginals, wrong joint law) has exact marginals and is rejected, and skip_vs_step compares
lag covariances."""

import numpy as np
import pytest
from scipy import stats

from nqm_mc import HeavyBall, Nesterov, expected_loss
from nqm_mc.spec import schedules as S
from validation.cases import CASES, SHIFTED, SKIP
from validation.joint import fresh_draw_simulate, run_joint_case
from validation.stats import LossLaw


def _case(name):
    return next(c for c in CASES if c.name == name)


@pytest.mark.parametrize("model, opt, batch, steps", [
    (SKIP, HeavyBall(0.1, 0.9, ema=0.99), 4, [20, 21, 100, 1000]),
    (SHIFTED, Nesterov(S.Warmup(S.CosineDecay(0.15, 80), 10), 0.8, ema=0.9),
     S.PiecewiseConstantBatch([30], [4, 16]), [0, 3, 31, 60]),
])
def test_planted_sampler_has_exact_marginals(model, opt, batch, steps):
    """Its mean and variance at every record against the exact engine (z, Bonferroni over
    2 x 4 comparisons at 1e-5): the plant fools every marginal test."""
    n = 40_000
    r = fresh_draw_simulate(model, opt, batch, 0, n, seed=11, record=steps)
    ex = expected_loss(model, opt, batch, record=steps, group_moments=True)
    z_mean = (r.paths.mean(0) - ex.mean) / np.sqrt(ex.variance / n)
    se_var = [LossLaw(model.curvatures, model.multiplicities, ex.group_mean[i],
                      ex.group_second_moment[i]).variance_se(n) for i in range(len(steps))]
    z_var = (r.paths.var(0, ddof=1) - ex.variance) / se_var
    thr = stats.norm.isf(1e-5 / 16)
    assert np.max(np.abs(z_mean)) < thr and np.max(np.abs(z_var)) < thr, (z_mean, z_var)


@pytest.mark.parametrize("name", ["joint_step", "skip_joint"])
def test_joint_cases_pass_and_reject_the_planted_sampler(name):
    case = _case(name)
    r = run_joint_case(case, 4000, seed=20191, threads=None, t0=0.0)
    assert r["verdict"] == "pass" and r["power_verdict"] == "rejected (good)", r
    assert r["method"] == case.method
    lags = [row["t"] - row["s"] for row in r["lag_table"]]
    assert min(lags) == 1 and max(lags) >= 40  # short and long lags
    assert r["max_abs_z"] < r["threshold"] < r["max_abs_z_wrong"]


def test_the_planted_sampler_as_the_engine_fails_the_joint_case():
    """The sampler of the issue, run as the engine under test, is rejected."""
    r = run_joint_case(_case("skip_joint"), 4000, seed=20191, threads=None, t0=0.0,
                       simulator=fresh_draw_simulate)
    assert r["verdict"] == "FAIL" and r["max_abs_z"] > r["threshold"]


@pytest.mark.early
def test_skip_vs_step_with_ema_compares_lag_covariances_and_rejects_the_planted_sampler():
    from validation.suite import run_case
    r = run_case(_case("skip_vs_step_ema"), quick=True, seed=20191)
    assert r["verdict"] == "pass" and r["power_verdict"] == "rejected (good)", r
    assert r["joint_power_verdict"] == "rejected (good)"
    assert [50, 51] in r["lag_pairs"] and len(r["z_lag_cov"]) == len(r["lag_pairs"])
    assert r["max_abs_z_lag_cov"] < r["threshold"] < r["joint_max_abs_z_wrong"]


def test_report_has_the_lag_table(tmp_path):
    from validation.report import write_report
    r = run_joint_case(_case("joint_step"), 2000, seed=1, threads=None, t0=0.0)
    write_report([r], str(tmp_path), {"mode": "test"})
    text = (tmp_path / "summary.md").read_text()
    assert "The joint law across records" in text and "| 40 | 41 |" in text


@pytest.mark.slow
def test_joint_case_z_scores_are_calibrated_over_seeds():
    """Over 100 seeds of the step kernel (2000 runs each), the z of the lag covariance at
    each pair has mean 0 and variance 1 (chi-square 1e-4 interval), and no seed's family
    rejects at the suite's threshold more than about once."""
    case = _case("joint_step")
    k = 100
    z = []
    fails = 0
    for s in range(k):
        r = run_joint_case(case, 2000, seed=5000 + s, threads=None, t0=0.0)
        z.append([row["z_cov"] for row in r["lag_table"]])
        fails += r["verdict"] != "pass"
    z = np.array(z)
    lo, hi = stats.chi2.ppf([5e-5, 1 - 5e-5], k - 1) / (k - 1)
    for j in range(z.shape[1]):
        assert abs(z[:, j].mean()) < 4.5 / np.sqrt(k)
        assert lo < z[:, j].var(ddof=1) < hi
    assert fails <= 1


def test_a_deterministic_record_has_no_correlation_test():
    """At step 0 of a deterministic start the loss is a constant: its covariance with any
    record is 0 to rounding (checked, not z-tested: the sample covariance is rounding noise),
    its correlation undefined; both are left out of the z family."""
    import dataclasses

    from validation.cases import DETERMINISTIC
    case = dataclasses.replace(_case("joint_step"), model=DETERMINISTIC,
                               lag_pairs=((0, 5), (5, 10), (10, 11)))
    r = run_joint_case(case, 2000, seed=3, threads=None, t0=0.0)
    assert r["verdict"] == "pass" and r["n_tests"] == 4 and r["deterministic_steps_ok"], r
    row = r["lag_table"][0]
    assert row["exact_cov"] == 0.0 and abs(row["mc_cov"]) < 1e-20
    assert np.isnan(row["z_cov"]) and np.isnan(row["z_corr"])
