"""The public theory check: nqm_mc.check, nqm_mc.runs_needed and nqm-mc validate --theory.

Statistical tests use fixed seeds and the check's own family-wise error (1e-5 here), so a
correct prediction fails with probability below 1e-5; each has a power counterpart in which a
deliberately wrong prediction must be rejected.
"""

import json
import textwrap

import numpy as np
import pytest
from scipy import stats

import nqm_mc
from nqm_mc import NQM, SGD, ParameterError, check, expected_loss, runs_needed, simulate
from nqm_mc.theory.stats import max_abs_z_threshold

ALPHA = 1e-5
MODEL = NQM(np.array([1.0, 0.4, 0.1, 0.03]), np.array([0.6, 0.5, 0.2, 0.05]),
            multiplicities=[1, 2, 4, 8], name="tiny")
OPT, BATCH, T = SGD(0.6), 4, 60
STEPS = np.array([0, 1, 2, 5, 10, 20, 40, 60])


@pytest.fixture(scope="module")
def run():
    res = simulate(MODEL, OPT, BATCH, T, 6000, seed=11, record=STEPS, keep_paths=6000,
                   progress=False)
    ex = expected_loss(MODEL, OPT, BATCH, record=STEPS, group_moments=True)
    return res, ex


def test_exported():
    assert nqm_mc.check is check and nqm_mc.runs_needed is runs_needed
    assert {"check", "runs_needed", "Verdict"} <= set(nqm_mc.__all__)


def test_correct_prediction_passes(run):
    res, ex = run
    v = check(res, mean=ex.mean, variance=ex.variance, family_alpha=ALPHA)
    assert v.passed, str(v)
    assert v.n_tests == 2 * STEPS.size  # step 0 has a variance too: every record
    assert v.threshold == pytest.approx(max_abs_z_threshold(v.n_tests, ALPHA))
    assert v.max_abs_z < v.threshold and v.z.shape == STEPS.shape
    assert 0 < v.sensitivity < 0.05 and v.power_caught
    # the mean's standard error is the predicted one; with the run's own it passes as well
    w = check(res, mean=lambda t: expected_loss(MODEL, OPT, BATCH, record=t).mean,
              family_alpha=ALPHA)
    assert w.passed and w.n_tests == STEPS.size and w.power_caught
    assert "PASSED" in str(w) and "sensitivity" in str(w)


def test_wrong_prediction_rejected(run):
    """Power: a mean off by twice the sensitivity, a variance 40 % high, both rejected."""
    res, ex = run
    v = check(res, mean=ex.mean, family_alpha=ALPHA)
    off = np.where(STEPS > 0, 1 + 2 * v.sensitivity, 1.0)
    bad = check(res, mean=ex.mean * off, family_alpha=ALPHA)
    assert not bad.passed and bad.max_abs_z > bad.threshold and "mean rejected" in str(bad)
    rel = np.max(check(res, variance=ex.variance).comparisons["variance"].se / ex.variance)
    assert rel < 0.05  # the sample variance's relative standard error, from the paths
    badvar = check(res, mean=ex.mean, variance=ex.variance * 1.4, mean_se="sample",
                   family_alpha=ALPHA)
    assert not badvar.passed and badvar.comparisons["variance"].max_abs_z > badvar.threshold
    # the deterministic part is compared too: a start off by 1e-6 fails
    det = NQM(MODEL.curvatures, MODEL.noise_variances, MODEL.multiplicities, initial_mean=1.0,
              initial_variance=0.0)
    r = simulate(det, OPT, BATCH, 10, 200, seed=1, record=[0, 5, 10], progress=False)
    e = expected_loss(det, OPT, BATCH, record=[0, 5, 10])
    assert check(r, mean=e.mean, family_alpha=ALPHA).passed
    v0 = check(r, mean=e.mean + np.array([1e-6, 0, 0]), family_alpha=ALPHA)
    assert not v0.passed and not v0.deterministic_ok


def test_alternative_and_statistics(run):
    res, ex = run
    v = check(res, mean=ex.mean, alternative=ex.mean * 1.2, family_alpha=ALPHA,
              statistics={"mean_theta": ex.mean})
    assert v.passed and v.alternative_rejected and "mean_theta" in v.comparisons
    # a per-run standard deviation makes any recorded statistic testable
    sd = np.sqrt(ex.variance)
    w = check(res, statistics={"mean_theta": (ex.mean * 1.1, sd)}, family_alpha=ALPHA)
    assert not w.passed


def test_covariance_between_records(run):
    """Cov(L_s, L_t) of SGD: per direction x_t = r x_s + independent noise, r = (1 - a h)^(t-s),
    so Cov = sum_g m_g (h_g / 2)^2 r^2 Var(x_s^2) with Var(x^2) = 2 v^2 + 4 mu^2 v."""
    res, ex = run
    h, mult = MODEL.curvatures, MODEL.multiplicities
    a = OPT.base_learning_rate

    def cov(s, t, power=2):
        i = int(np.flatnonzero(STEPS == s)[0])
        mu, second = ex.group_mean[i], ex.group_second_moment[i]
        v = second - mu ** 2
        r = (1 - a * h) ** (t - s)
        return float(np.sum(mult * (h / 2) ** 2 * r ** power * (2 * v * v + 4 * mu * mu * v)))

    pairs = [(1, 2), (2, 10), (5, 20), (10, 60)]
    v = check(res, mean=ex.mean, covariance={p: cov(*p) for p in pairs}, family_alpha=ALPHA)
    assert v.passed, str(v)
    c = v.comparisons["covariance"]
    assert c.tested.all() and c.labels == ["(1, 2)", "(2, 10)", "(5, 20)", "(10, 60)"]
    # power: r instead of r^2 (a correlation mistaken for its square) is rejected, and so is
    # the independence of records that a fresh draw from the start would give
    wrong = check(res, mean=ex.mean, covariance={p: cov(*p, power=1) for p in pairs},
                  family_alpha=ALPHA)
    assert not wrong.passed and wrong.comparisons["covariance"].max_abs_z > wrong.threshold
    fresh = check(res, covariance={p: 0.0 for p in pairs}, family_alpha=ALPHA)
    assert not fresh.passed


def test_exact_two_time_covariance_and_correlation(run):
    """nqm_mc.loss_covariance through check: right passes; the planted fresh-draw sampler's
    law (records tied only through the start, nearly independent here) is rejected, and so is
    a correlation 10 % low at short lags."""
    res, _ = run
    pairs = [(1, 2), (5, 10), (10, 20), (20, 40), (40, 60), (2, 60)]
    ex = nqm_mc.loss_covariance(MODEL, OPT, BATCH, pairs)
    cov = dict(zip(pairs, ex.covariance, strict=True))
    corr = dict(zip(pairs, ex.correlation, strict=True))
    v = check(res, covariance=cov, correlation=corr, family_alpha=ALPHA)
    assert v.passed and v.n_tests == 2 * len(pairs), str(v)
    assert {"covariance", "correlation"} <= set(v.comparisons)
    short = {p: 0.9 * c for p, c in corr.items() if p[1] - p[0] <= 5}
    assert not check(res, correlation=short, family_alpha=ALPHA).passed
    # the fresh-draw sampler: Cov(L_s, L_t) only through the start, Cov of (phi_s x0, phi_t x0)
    h, mult = MODEL.curvatures, MODEL.multiplicities
    a = OPT.base_learning_rate

    def through_start(s, t):
        rs, rt = (1 - a * h) ** s, (1 - a * h) ** t
        return float(np.sum(mult * (h / 2) ** 2 * 2 * (rs * rt) ** 2))  # start N(0, 1)

    planted = check(res, covariance={p: through_start(*p) for p in pairs}, family_alpha=ALPHA)
    assert not planted.passed and planted.comparisons["covariance"].max_abs_z > planted.threshold


def test_runs_needed_verified_by_simulation():
    """At the planned number of runs a 5 % error is caught with probability about 0.9, at a
    quarter of it far less often (40 replicate checks each)."""
    steps = np.array([0, 30])
    ex = expected_loss(MODEL, OPT, BATCH, record=steps)
    delta, power = 0.05, 0.9
    n = runs_needed(delta, mean=ex.mean, variance=ex.variance, steps=steps,
                    family_alpha=ALPHA, power=power)
    thr = max_abs_z_threshold(2, ALPHA) + stats.norm.ppf(power)
    assert n == int(np.ceil((thr * np.sqrt(ex.variance[1]) / (delta * ex.mean[1])) ** 2))
    wrong = ex.mean * np.array([1.0, 1 + delta])

    def rejected(n_runs, seed):
        r = simulate(MODEL, OPT, BATCH, 30, n_runs, seed=seed, record=steps, progress=False)
        se = np.sqrt(ex.variance) / np.sqrt(r.n_finite)
        return not check(r, mean=wrong, mean_se=se, family_alpha=ALPHA).passed

    k = 40
    hits = sum(rejected(n, 1000 + i) for i in range(k))
    lo, hi = stats.binom.ppf(5e-6, k, power), stats.binom.isf(5e-6, k, 0.93)
    assert lo <= hits <= hi, (hits, n)
    few = sum(rejected(max(n // 4, 2), 2000 + i) for i in range(k))
    assert few <= stats.binom.isf(5e-6, k, 0.2), few  # expected about 0.07


def test_runs_needed_sources(run):
    res, ex = run
    from_pilot = runs_needed(0.02, res, family_alpha=ALPHA)
    exact = runs_needed(0.02, mean=ex.mean, variance=ex.variance, steps=STEPS,
                        family_alpha=ALPHA)
    assert abs(from_pilot / exact - 1) < 0.15  # the pilot's variance within a few %
    cfg = {"model": {"kind": "arrays", "curvatures": MODEL.curvatures.tolist(),
                     "noise_variances": MODEL.noise_variances.tolist(),
                     "multiplicities": MODEL.multiplicities.tolist()},
           "optimizer": {"kind": "sgd", "learning_rate": 0.6}, "batch": {"size": 4},
           "run": {"steps": 60, "record": STEPS.tolist()}}
    assert runs_needed(0.02, cfg, family_alpha=ALPHA) == exact
    # with that many runs the check's sensitivity is at most 2 %
    v = check(res, mean=ex.mean, variance=ex.variance, family_alpha=ALPHA)
    assert runs_needed(v.sensitivity, res, mean=ex.mean, variance=ex.variance,
                       family_alpha=ALPHA, n_comparisons=STEPS.size) <= res.n_runs + 1


def test_check_runs_a_config(tmp_path):
    toml = tmp_path / "e.toml"
    toml.write_text('[model]\nkind = "binned"\ndim = 60\nn_bins = 6\n[optimizer]\nkind = "sgd"\n'
                    'learning_rate = 0.5\n[batch]\nsize = 8\n[run]\nsteps = 40\nruns = 3000\n'
                    'record = "log"\nn_records = 8\nseed = 3\n')
    from nqm_mc.config import load
    exp = load(toml)

    def mean(t):
        return expected_loss(exp.model, exp.optimizer, 8, record=t).mean

    def var(t):
        return expected_loss(exp.model, exp.optimizer, 8, record=t).variance

    v = check(str(toml), mean=mean, variance=var, family_alpha=ALPHA)
    assert v.passed and v.n_runs == 3000 and "variance" in v.comparisons
    assert check(str(toml), mean=lambda t: 1.05 * mean(t), runs=3000,
                 family_alpha=ALPHA).passed is False


@pytest.mark.parametrize("kwargs, words", [
    ({"mean": np.ones(5)}, ["'mean'", "one value per recorded step", "(5,)"]),
    ({"mean": np.full(STEPS.size, np.nan)}, ["'mean'", "finite", "nan"]),
    ({"mean": "abc"}, ["'mean'", "numbers", "'abc'"]),
    ({"variance": -np.ones(STEPS.size)}, ["'variance'", ">= 0", "-1.0"]),
    ({"statistics": {"mean_loss_squared": np.ones(STEPS.size)}},
     ["Unknown statistic", "'mean_loss_squared'", "band_mean_square"]),
    ({"statistics": {"band_mean_square": np.ones((STEPS.size, 8))}},
     ["'band_mean_square'", "standard deviation"]),
    ({"covariance": {(3, 4): 1.0}}, ["'covariance'", "recorded steps", "(3, 4)"]),
    ({"correlation": [0.5]}, ["'correlation'", "dict", "[0.5]"]),
    ({"mean": np.ones(STEPS.size), "family_alpha": 2.0}, ["'family_alpha'", "2.0"]),
    ({}, ["needs a prediction"]),
])
def test_bad_input_one_sentence(run, kwargs, words):
    res, _ = run
    with pytest.raises((ParameterError, TypeError)) as err:
        check(res, **kwargs)
    msg = str(err.value)
    assert "\n" not in msg and all(w in msg for w in words), msg


def test_bad_prediction_function(run):
    res, _ = run

    def broken(t):
        raise KeyError("h")

    with pytest.raises(ParameterError, match="prediction function of check failed.*KeyError"):
        check(res, mean=broken)
    with pytest.raises(ParameterError, match="'relative_error' parameter of runs_needed"):
        runs_needed(-0.1, res)


def test_plot(run, tmp_path):
    res, ex = run
    v = check(res, mean=ex.mean, variance=ex.variance, family_alpha=ALPHA)
    paths = v.plot(tmp_path / "v.png")
    assert (tmp_path / "v.png").exists() and len(paths) == 1
    assert json.loads(json.dumps(v.to_dict()))["passed"] is True


THEORY = textwrap.dedent('''
    import numpy as np

    def right(model, optimizer, batch_size, steps):
        h, c, n = model.curvatures, model.noise_variances, model.multiplicities
        a = optimizer.base_learning_rate
        q = (1 - a * h)[None, :] ** (2 * steps[:, None])
        start = h / 2 * (model.initial_mean ** 2 + model.initial_variance)
        floor = a * c / (2 * batch_size * (2 - a * h))
        return {"mean": (n * (q * start + (1 - q) * floor)).sum(axis=1)}

    def missing_factor(model, optimizer, batch_size, steps):
        h, c, n = model.curvatures, model.noise_variances, model.multiplicities
        a = optimizer.base_learning_rate
        q = (1 - a * h)[None, :] ** (2 * steps[:, None])
        start = h / 2 * (model.initial_mean ** 2 + model.initial_variance)
        return (n * (q * start + (1 - q) * a * c / (2 * batch_size))).sum(axis=1)

    def bad_key(model, optimizer, batch_size, steps):
        return {"means": steps * 1.0}
''')


def _cli(*args):
    from tests.cli_inprocess import run
    return run("validate", *args)


def test_cli_theory_end_to_end(tmp_path, capsys):
    (tmp_path / "theory.py").write_text(THEORY)
    (tmp_path / "exp.toml").write_text(
        '[model]\nkind = "binned"\ndim = 100\nn_bins = 10\n[optimizer]\nkind = "sgd"\n'
        'learning_rate = 0.5\n[batch]\nsize = 4\n[run]\nsteps = 200\nruns = 3000\nseed = 1\n'
        'n_records = 15\n')
    th, cfg = str(tmp_path / "theory.py"), str(tmp_path / "exp.toml")
    r = _cli("--theory", th + ":right", "-c", cfg, "--out", str(tmp_path / "ok"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASSED" in r.stdout and "sensitivity" in r.stdout
    for name in ("theory_check.json", "theory_check.csv", "theory_check.png"):
        assert (tmp_path / "ok" / name).exists()
    # the rest in this process (the same entry point, without a new interpreter each)
    from nqm_mc.cli import main
    capsys.readouterr()
    code = main(["validate", "--theory", th + ":missing_factor", "-c", cfg, "--out",
                 str(tmp_path / "bad"), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 1 and out["passed"] is False and out["power_caught"] is True
    assert out["n_runs"] == 3000
    for args, words in (([th + ":nope", "-c", cfg], "has no function 'nope'"),
                        ([th + ":bad_key", "-c", cfg], "unknown key 'means'"),
                        ([th + ":right"], "-c EXPERIMENT.toml"),
                        ([str(tmp_path / "none.py") + ":f", "-c", cfg], "does not exist")):
        code = main(["validate", "--theory", *args, "--out", str(tmp_path / "e"), "--force"])
        err = capsys.readouterr().err
        assert code == 2 and words in err, err
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
