"""Calibration: input checks, the runs file format, the fit, predictions and the CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from scipy import stats

import nqm_mc as nm
from nqm_mc import ParameterError
from nqm_mc.calibration import (
    Band,
    CalibrationError,
    Run,
    calibrate,
    read_runs,
    write_runs,
)
from nqm_mc.calibration.synthetic import HELD_OUT, SETTINGS, TRUTH, make_runs, true_loss

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "calibration_runs.csv")
STEPS = np.unique(np.geomspace(1, 3000, 40).astype(np.int64))


def _exact_runs():
    return [Run(STEPS, true_loss(o, b, STEPS), o, b, label=f"r{k}")
            for k, (o, b) in enumerate(SETTINGS)]


# ------------------------------------------------------------------ inputs
@pytest.mark.parametrize("kw, name", [
    ({"steps": [3, 2, 5]}, "steps"), ({"steps": [-1, 2, 3]}, "steps"),
    ({"steps": [0.5, 1, 2]}, "steps"), ({"loss": [1.0, -1.0, 0.5]}, "loss"),
    ({"loss": [1.0, np.nan, 0.5]}, "loss"), ({"loss": [1.0, 2.0]}, "loss"),
    ({"batch_size": 0}, "batch_size"), ({"batch_size": 2.5}, "batch_size"),
    ({"optimizer": "sgd"}, "optimizer"),
])
def test_run_rejects_bad_input(kw, name):
    args = {"steps": [0, 1, 2], "loss": [1.0, 0.5, 0.3], "optimizer": nm.SGD(0.1),
            "batch_size": 4, **kw}
    with pytest.raises(ParameterError, match=name):
        Run(**args)


def test_run_rejects_nonlinear_optimizer():
    from nqm_mc.spec.optimizers import Adam
    with pytest.raises(ParameterError, match="optimizer"):
        Run([0, 1], [1.0, 0.5], Adam(0.01), 4)


@pytest.mark.parametrize("kw, name", [({"n_starts": 0}, "n_starts"), ({"seed": -1}, "seed"),
                                      ({"uncertainty": "magic"}, "uncertainty"),
                                      ({"n_boot": 1}, "n_boot"), ({"level": 1.5}, "level"),
                                      ({"resample": "x"}, "resample")])
def test_calibrate_rejects_bad_arguments(kw, name):
    with pytest.raises(ParameterError, match=name):
        calibrate(_exact_runs(), **kw)


def test_calibrate_rejects_non_runs():
    with pytest.raises(ParameterError, match="runs"):
        calibrate([1, 2, 3])


def test_too_few_points_is_a_calibration_error():
    r = Run([0, 10, 100], [1.0, 0.5, 0.2], nm.SGD(0.1), 4)
    with pytest.raises(CalibrationError, match="too few points"):
        calibrate([r, Run([0, 10], [1.0, 0.4], nm.SGD(0.1), 16)])


# ------------------------------------------------------------------ files
def test_csv_round_trip(tmp_path):
    runs = _exact_runs()
    p = write_runs(tmp_path / "r.csv", runs)
    back = read_runs(p)
    assert [r.label for r in back] == [r.label for r in runs]
    for a, b in zip(runs, back, strict=True):
        assert np.array_equal(a.steps, b.steps) and np.array_equal(a.loss, b.loss)
        assert a.optimizer == b.optimizer and a.batch_size == b.batch_size


def test_toml_runs(tmp_path):
    p = tmp_path / "r.toml"
    p.write_text('[[runs]]\nlabel = "a"\noptimizer = "heavy_ball"\nlearning_rate = 0.1\n'
                 'momentum = 0.9\nbatch_size = 8\nsteps = [0, 10, 100]\nloss = [1.0, 0.5, 0.2]\n'
                 '[[runs]]\noptimizer = "sgd"\nbatch_size = 8\nsteps = [0, 10]\n'
                 'loss = [1.0, 0.5]\n'
                 'learning_rate = {kind = "step_decay", initial = 0.1, factor = 0.5, '
                 'step_size = 100}\n')
    runs = read_runs(p)
    assert runs[0].optimizer == nm.HeavyBall(0.1, 0.9) and runs[0].label == "a"
    assert not runs[1].optimizer.learning_rate.is_constant


HEADER = "run,step,loss,optimizer,learning_rate,momentum,batch_size\n"


@pytest.mark.parametrize("body, line, what", [
    ("a,0,1.0,sgd,0.1,,4\na,1,abc,sgd,0.1,,4\n", 3, "loss"),
    ("a,0,1.0,sgd,0.1,,4\na,1,-2,sgd,0.1,,4\n", 3, "loss"),
    ("a,0,1.0,sgd,0.1,,4\na,1.5,0.5,sgd,0.1,,4\n", 3, "step"),
    ("a,0,1.0,sgd,0.1,,4\na,1,0.5,sgd,0.2,,4\n", 3, "changes its settings"),
    ("a,0,1.0,sgd,0.1,,4\na,0,0.5,sgd,0.1,,4\n", 3, "twice"),
    ("a,0,1.0,sgd,0.1,,0\n", 2, "batch_size"),
    ("a,0,1.0,adam,0.1,,4\n", 2, "optimizer"),
    ("a,0,1.0,heavy_ball,0.1,,4\n", 2, "momentum"),
    ("a,0,1.0,sgd,0.1,4\n", 2, "fields"),
])
def test_malformed_csv_names_the_line(tmp_path, body, line, what):
    p = tmp_path / "bad.csv"
    p.write_text(HEADER + body)
    with pytest.raises(ParameterError) as err:
        read_runs(p)
    msg = str(err.value)
    assert f"line {line}" in msg and what in msg and "\n" not in msg


def test_missing_column_and_file(tmp_path):
    p = tmp_path / "bad.csv"
    p.write_text("run,step,loss\na,0,1\n")
    with pytest.raises(ParameterError, match="missing column"):
        read_runs(p)
    with pytest.raises(ParameterError, match="does not exist"):
        read_runs(tmp_path / "nope.csv")


# ------------------------------------------------------------------ fit
@pytest.fixture(scope="module")
def exact_fit():
    return calibrate(_exact_runs(), uncertainty="none", n_starts=3, max_points=20)


def test_noise_free_curves_recover_the_truth(exact_fit):
    for k, v in TRUTH.items():
        assert exact_fit.params[k] == pytest.approx(v, rel=0.02), k
    assert exact_fit.info["rms"] < 1e-3


def test_fit_is_reproducible():
    runs = _exact_runs()[:2]
    a = calibrate(runs, uncertainty="jacobian", n_starts=1, seed=3, max_points=10, n_boot=3)
    b = calibrate(runs, uncertainty="jacobian", n_starts=1, seed=3, max_points=10, n_boot=3)
    assert np.array_equal(a.coords, b.coords) and np.array_equal(a.samples, b.samples)


def test_target_at_or_below_floor_is_unreachable(exact_fit):
    floor = exact_fit.floor
    band = exact_fit.steps_to_target(floor * 0.99, nm.SGD(0.5), [8, 64])
    assert isinstance(band, Band) and np.all(np.isinf(band.value))
    ok, why = exact_fit.reachable(floor)
    assert not ok and "unreachable" in why
    t = exact_fit.tuned(floor, [8], max_samples=0)
    assert np.isinf(t["steps"].value[0]) and not t["reachable"]


def test_predictions_match_the_truth_without_noise(exact_fit):
    for opt, b in HELD_OUT:
        band = exact_fit.predict_loss(opt, b, [10, 100, 1000])
        np.testing.assert_allclose(band.value, true_loss(opt, b, [10, 100, 1000]), rtol=0.02)
    s = exact_fit.steps_to_target(0.08, nm.SGD(1.5), [512])
    true = nm.steps_to_target(nm.NQM(*_truth_arrays()), nm.SGD(1.5), 512, 0.03).steps
    assert s.value[0] == pytest.approx(true, rel=0.03)


def _truth_arrays():
    from nqm_mc.calibration.synthetic import truth_model
    m = truth_model()
    return m.curvatures, m.noise_variances, None, 0.0, m.initial_variance


def test_tuned_and_critical_batch_size(exact_fit):
    t = exact_fit.tuned(0.08, [4, 64, 1024], max_samples=0)
    assert set(t) >= {"steps", "learning_rate", "critical_batch_size"}
    assert np.all(np.diff(t["steps"].value) <= 0)
    assert t["learning_rate"].value[0] < t["learning_rate"].value[-1]
    hb = exact_fit.tuned(0.08, [4, 1024], family="heavy_ball", max_samples=0,
                         grid_size=(20, 5))
    assert np.all(np.isfinite(hb["steps"].value))
    ema = exact_fit.tuned(0.08, [4], ema=0.9, p=0.5, max_samples=0, grid_size=(20, 5))
    assert np.isfinite(ema["steps"].value[0])
    c = exact_fit.critical_batch_size(0.08, batch_sizes=[1, 16, 256, 4096], max_samples=0,
                                      grid_size=(20, 5))
    assert 1 < c.value < 4096


def test_stability_bound_keeps_h1_below_the_runs_limit(exact_fit):
    # the fastest run uses lr 1.5: h1 < 2 / 1.5
    assert exact_fit.params["h1"] < 2 / 1.5


# ------------------------------------------------------------------ synthetic recovery
@pytest.mark.slow
def test_synthetic_recovery_and_power():
    """Monte Carlo curves of a known NQM: parameters and held-out predictions within their
    uncertainty (z-scores, Bonferroni over the comparisons), and a wrong truth is caught."""
    runs = make_runs(seed=1)
    fit = calibrate(runs, seed=1)
    xt = fit.family.to_coords(TRUTH)
    sd = fit.coord_stderr
    # every coordinate, family-wise level 0.01 (Bonferroni over 7); the coverage study
    # (validation/calibration_coverage.py) measures the calibration of these s.e. over seeds
    zcrit = stats.norm.ppf(1 - 0.01 / (2 * 7))
    z = (fit.coords - xt) / sd
    assert np.all(np.abs(z) < zcrit), z
    # power: a curvature exponent 20 % off is caught
    wrong = xt.copy()
    wrong[1] *= 1.2
    assert abs((fit.coords[1] - wrong[1]) / sd[1]) > zcrit
    # held-out batch sizes and optimizer: the truth inside the bands (3 configurations x 3
    # steps at the 95 % level, allowing one miss), and small errors
    inside, n = 0, 0
    for opt, b in HELD_OUT:
        band = fit.predict_loss(opt, b, [30, 300, 3000])
        true = true_loss(opt, b, [30, 300, 3000])
        inside += int(np.sum((band.lo <= true) & (true <= band.hi)))
        n += true.size
        assert np.all(np.abs(band.value / true - 1) < 0.1)
    assert inside >= n - 1


# ------------------------------------------------------------------ CLI
def test_cli_on_the_example(tmp_path, capsys):
    from nqm_mc.cli import main
    rc = main([
        "calibrate", EXAMPLE, "--target", "0.08", "--batch-sizes", "8,64,512",
        "--uncertainty", "jacobian", "--n-boot", "3", "--n-starts", "1",
        "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert rc == 0
    assert "critical batch size" in out and "h1" in out
    rec = json.loads((tmp_path / "calibration.json").read_text())
    assert rec["input"]["sha256"] and rec["versions"]["numpy"]
    assert set(rec["params"]) == {"h1", "a", "s", "b", "v0", "dim", "floor"}
    assert (tmp_path / "calibration.png").stat().st_size > 0
    assert (tmp_path / "predictions.csv").read_text().startswith("batch_size,")
    # the files exist now: without --force the command refuses
    rc = main(["calibrate", EXAMPLE, "--out", str(tmp_path)])
    assert rc == 2


def test_cli_bad_file_one_line(tmp_path, capsys):
    from nqm_mc.cli import main
    p = tmp_path / "bad.csv"
    p.write_text(HEADER + "a,0,1.0,sgd,0.1,,4\na,1,x,sgd,0.1,,4\n")
    rc = main(["calibrate", str(p), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == 2 and "line 3" in err and err.count("\n") == 1


def test_residual_model_recovers_ar1_noise():
    """REML on residuals of a linear fit recovers the AR(1) scale and correlation that made
    them (the fit's absorption accounted for)."""
    from nqm_mc.calibration.noise import fit_residual_model
    rng = np.random.default_rng(5)
    n, R, rho, sigma = 40, 5, 0.8, 0.05
    steps = [np.unique(np.geomspace(1, 1e4, n).astype(np.int64)) for _ in range(R)]
    sizes = [s.size for s in steps]
    eps = []
    for m in sizes:
        e = np.empty(m)
        e[0] = rng.standard_normal()
        for k in range(1, m):
            e[k] = rho * e[k - 1] + np.sqrt(1 - rho ** 2) * rng.standard_normal()
        eps.append(sigma * e)
    J = rng.standard_normal((sum(sizes), 3))
    y = np.concatenate(eps)
    beta = np.linalg.lstsq(J, y, rcond=None)[0]
    res = np.split(y - J @ beta, np.cumsum(sizes)[:-1])
    from nqm_mc.calibration.fit import _one_thread
    with _one_thread():
        model = fit_residual_model(res, steps, J)
    assert abs(model.rho - rho) < 0.15
    assert np.all(np.abs(np.log(model.sigma / sigma)) < 0.5)
    # power: a wrong (independent-noise) answer is far from the estimate
    assert abs(model.rho - 0.0) > 0.5


@pytest.mark.slow
def test_band_coverage_over_20_seeds():
    """The 95 % bands of held-out predictions and the parameters' intervals cover the truth
    in most of 20 seeds; power: the Jacobian's independent-noise bands are caught under-covering
    on the same seeds."""
    from validation.calibration_coverage import one_seed
    seeds = range(20)
    rows = [one_seed(s, "bootstrap", 30) for s in seeds]
    pred = np.mean([np.mean(r["pred_inside"]) for r in rows])
    par = np.mean([np.mean(list(r["inside"].values())) for r in rows])
    # nominal 0.95; 0.85 is more than 3 binomial s.e. below it for 240 (correlated) checks
    assert pred >= 0.85 and par >= 0.85, (pred, par)
    jac = [one_seed(s, "jacobian", 30) for s in seeds]
    pred_j = np.mean([np.mean(r["pred_inside"]) for r in jac])
    par_j = np.mean([np.mean(list(r["inside"].values())) for r in jac])
    assert min(pred_j, par_j) < 0.85, (pred_j, par_j)


@pytest.mark.slow
def test_readme_calibration_example_runs_verbatim():
    import pathlib
    import re
    import subprocess
    import sys
    root = pathlib.Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    section = readme.split("## Calibrating to your own runs", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=900, cwd=root)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "h1" in r.stdout
