"""The validation suite: the quick subset passes, its z-scores are calibrated, it has power,
and it fails when the kernel is broken."""

import json

import numpy as np
import pytest

from nqm_mc import HeavyBall, expected_loss, simulate
from nqm_mc.montecarlo import _kernels
from nqm_mc.theory.stats import LossLaw, holm, ks_against_law
from validation.cases import SMALL, get_cases
from validation.report import write_report
from validation.suite import run_case, run_suite

# One cheap quick-suite case of each kind the suite checks: the step kernel with momentum,
# preconditioning, a learning-rate and a batch schedule, float32 with EMA, Student-t and
# finite-data noise; the dense rotated engine with a rotated noise and with a preconditioner
# that does not commute; the skip-ahead sampler with preconditioning, a batch schedule and
# float32 with EMA; a diverging configuration. The whole quick suite (30 cases, about 30 s of
# CPU) is the CI tier's test below; sgd, near_critical, skip_sgd, skip_hb_ema,
# skip_near_critical, skip_vs_step, joint_step and skip_joint also have tests of their own here
# or in test_validation_joint.py.
FAST_CASES = ("sgd_p05", "heavy_ball", "nesterov", "piecewise", "batch_schedule", "float32",
              "student_t", "finite_data", "rotated_noise", "rotated_diag_precond", "skip_batch",
              "skip_float32", "skip_p05", "unstable")


def _suite_passes_and_every_power_check_rejects(cases, tmp_path, reported=None):
    """Every case passes and every power check rejects; the report (of the cases named in
    ``reported``, default all: a figure each) counts no failure."""
    results = run_suite(cases, quick=True, seed=20191)
    summary = {r["case"]: (r["verdict"], r["power_verdict"]) for r in results}
    assert all(v == "pass" for v, _ in summary.values()), summary
    assert all(p in ("rejected (good)", "n/a") for _, p in summary.values()), summary
    assert sum(p == "rejected (good)" for _, p in summary.values()) >= len(cases) // 2
    results_out = [r for r in results if reported is None or r["case"] in reported]
    assert write_report(results_out, str(tmp_path), {"mode": "quick"}) == 0
    assert (tmp_path / "plots" / "heavy_ball.png").stat().st_size > 10_000  # in both sets
    data = json.loads((tmp_path / "results.json").read_text())
    assert len(data["cases"]) == len(results_out) and "provenance" in data
    assert -0.9 < results[0]["convergence"]["slope"] < -0.15


@pytest.mark.early
def test_one_case_of_each_kind_passes_and_every_power_check_rejects(tmp_path):
    cases = [c for c in get_cases(quick=True) if c.name in FAST_CASES]
    assert {c.name for c in cases} == set(FAST_CASES)  # each is a quick case
    assert cases[0].name == "sgd_p05"  # the convergence check's case (sgd in the whole suite)
    # the report's figures for four of them (the CI tier's test draws all 30)
    _suite_passes_and_every_power_check_rejects(
        cases, tmp_path, reported=("sgd_p05", "heavy_ball", "skip_float32", "unstable"))


@pytest.mark.ci
def test_quick_suite_passes_and_every_power_check_rejects(tmp_path):
    _suite_passes_and_every_power_check_rejects(get_cases(quick=True), tmp_path)


@pytest.mark.early
def test_z_scores_are_calibrated_over_seeds():
    """The suite's z of the mean, over 300 independent seeds, is N(0, 1): mean within 4 s.e.,
    variance within the chi-square(299) 1e-4 interval."""
    from scipy import stats
    opt = HeavyBall(0.1, 0.8)
    steps = np.array([0, 5, 20])
    ex = expected_loss(SMALL, opt, 4, record=steps)
    n, k = 400, 300
    z = np.empty((k, steps.size))
    for s in range(k):
        r = simulate(SMALL, opt, 4, 20, n, seed=1000 + s, record=steps, progress=False)
        z[s] = (r.mean - ex.mean) / np.sqrt(ex.variance / n)
    for j in range(steps.size):
        assert abs(z[:, j].mean()) < 4 / np.sqrt(k)
        lo, hi = stats.chi2.ppf([5e-5, 1 - 5e-5], k - 1) / (k - 1)
        assert lo < z[:, j].var(ddof=1) < hi


def test_holm_matches_definition():
    p = np.array([0.01, 0.04, 0.03, 0.005])
    reject, adj = holm(p, 0.05)
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert reject.tolist() == [True, False, False, True]


def test_loss_law_cumulants_and_ks_power():
    rs = np.random.default_rng(0)
    h, m = SMALL.curvatures, SMALL.multiplicities
    mu, v = np.linspace(-1, 1, h.size), np.linspace(0.2, 1.0, h.size)
    law = LossLaw(h, m, mu, mu ** 2 + v)
    x = np.repeat(mu, m) + np.sqrt(np.repeat(v, m)) * rs.standard_normal((200_000, m.sum()))
    L = 0.5 * (np.repeat(h, m) * x ** 2).sum(1)
    assert abs(L.mean() - law.mean) < 5 * np.sqrt(law.variance / L.size)
    assert abs(L.var() - law.variance) < 5 * law.variance_se(L.size)
    assert ks_against_law(L[:4000], law)[1] > 1e-4
    wrong = LossLaw(h, m, mu, mu ** 2 + 1.3 * v)
    assert ks_against_law(L[:4000], wrong)[1] < 1e-4


@pytest.fixture
def momentum_applied_twice(monkeypatch):
    """A deliberately broken kernel: heavy-ball trajectories run the Nesterov rule, which adds
    the momentum term to the step a second time (theta -= lr (g + beta m))."""
    real = _kernels.run_blocks

    def broken(rule, *args):
        return real(rule._replace(kind=2 if rule.kind == 1 else rule.kind), *args)

    monkeypatch.setattr(_kernels, "run_blocks", broken)


def test_suite_fails_with_a_broken_kernel(momentum_applied_twice):
    case = next(c for c in get_cases(quick=True) if c.name == "heavy_ball")
    r = run_case(case, quick=True, seed=20191)
    assert r["verdict"] == "FAIL" and r["max_abs_z"] > r["threshold"]
    sgd = next(c for c in get_cases(quick=True) if c.name == "sgd")
    assert run_case(sgd, quick=True, seed=20191)["verdict"] == "pass"  # SGD is unaffected


def test_cli_exit_status(tmp_path):
    from validation.__main__ import main
    assert main(["--quick", "--case", "near_critical", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "summary.md").exists()
    assert main(["--case", "no_such_case", "--out", str(tmp_path)]) == 2


# ---------------------------------------------------------------- skip-ahead cases and options


def _case(name):
    from validation.cases import CASES
    return next(c for c in CASES if c.name == name)


def test_existing_cases_run_the_step_kernel_and_skip_cases_the_skip_sampler():
    from validation.cases import CASES
    skip = [c for c in CASES if c.name.startswith("skip_")]
    assert len(skip) >= 8 and all(c.method == "skip" for c in skip)
    assert all(c.method == "step" for c in CASES if not c.name.startswith("skip_"))
    r = run_case(_case("sgd"), quick=True, seed=20191)
    assert r["method"] == "step"


@pytest.mark.parametrize("name", ["skip_sgd", "skip_hb_ema"])
def test_skip_cases_pass_and_their_power_checks_reject(name):
    r = run_case(_case(name), quick=True, seed=20191)
    assert r["method"] == "skip", r["method"]  # the skip sampler ran, not the step kernel
    assert r["verdict"] == "pass" and r["power_verdict"] == "rejected (good)", r
    assert r["steps"][-1] == 100_000 and len(r["steps"]) >= 40
    assert 0 < r["sensitivity"] <= r["sensitivity_worst"] and r["sensitivity_step"] > 0


def test_skip_vs_step_two_sample_case_passes_and_rejects_the_wrong_step_run():
    r = run_case(_case("skip_vs_step"), quick=True, seed=20191)
    assert r["method"] == "skip vs step"
    assert r["verdict"] == "pass" and r["power_verdict"] == "rejected (good)", r
    assert len(r["ks_p_values"]) == 4
    # the power comes from the distribution test: some KS statistic against the wrong run
    # clears the critical value
    assert max(r["ks_statistics_wrong"]) > r["ks_critical"] > max(r["ks_statistics"])


@pytest.fixture
def noise_of_skip_5_percent_high(monkeypatch):
    """A deliberately broken skip sampler: every transition's noise factor 5 % too large."""
    from nqm_mc.montecarlo import driver
    real = driver.lower_skip

    def broken(*args, **kw):
        s = real(*args, **kw)
        return s._replace(fac=s.fac * 1.05)

    monkeypatch.setattr(driver, "lower_skip", broken)


def test_skip_case_fails_with_a_broken_skip_sampler(noise_of_skip_5_percent_high):
    r = run_case(_case("skip_sgd"), quick=True, seed=20191)
    assert r["verdict"] == "FAIL" and r["max_abs_z"] > r["threshold"]
    assert run_case(_case("sgd"), quick=True, seed=20191)["verdict"] == "pass"  # step kernel


def test_runs_factor_multiplies_runs_and_shrinks_the_sensitivity(tmp_path):
    case = _case("skip_near_critical")
    r1 = run_case(case, quick=True, seed=20191)
    r4 = run_case(case, quick=True, seed=20191, runs_factor=4)
    assert r4["runs"] == 4 * r1["runs"] and r4["verdict"] == "pass"
    assert abs(r4["sensitivity"] / r1["sensitivity"] - 0.5) < 0.05
    from validation.__main__ import main
    assert main(["--case", "skip_near_critical", "--runs-factor", "2", "--out",
                 str(tmp_path / "a")]) == 0
    data = json.loads((tmp_path / "a" / "results.json").read_text())
    assert data["settings"]["runs_factor"] == 2 and data["cases"][0]["runs"] == 2 * r1["runs"]
    header = (tmp_path / "a" / "summary.csv").read_text().splitlines()[0]
    assert "sensitivity" in header and "method" in header
    with pytest.raises(SystemExit):
        main(["--runs-factor", "0"])


def test_nqm_mc_validate_forwards_runs_factor():
    from nqm_mc.cli import build_parser
    args = build_parser().parse_args(["validate", "--quick", "--runs-factor", "16"])
    assert args.runs_factor == 16 and args.func.__name__ == "cmd_validate"
