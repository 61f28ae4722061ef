"""Final-loss tables and the size-aware NQM: reading, the closed form, the fit, bands, plans."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import special

import nqm_mc as nm
from nqm_mc import ParameterError
from nqm_mc.calibration import sizes as S
from nqm_mc.calibration.synthetic import (
    TABLE_TRUTH,
    make_table_runs,
    table_true_loss,
    table_truth_coords,
)
from nqm_mc.calibration.table import is_table, make_table, read_table

HEADER = "N,B,K,loss,learning_rate,schedule,optimizer,C,filtered\n"
GOOD = "1e6,64,100,3.5,0.1,constant,sgd,6.4e9,False\n2e6,128,200,3.2,0.1,,sgd,5e10,True\n"


def _write(tmp_path, text, name="t.csv"):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# ------------------------------------------------------------------ reading
def test_read_table_columns_and_filtered(tmp_path):
    path = _write(tmp_path, HEADER + GOOD + "4e6,256,400,3.0,0.2,constant,SGD,4e11,false\n")
    assert is_table(path)
    t = read_table(path)
    assert len(t) == 2 and t.has_sizes and t.has_learning_rates
    np.testing.assert_array_equal(t.B, [64, 256])
    np.testing.assert_array_equal(t.lines, [2, 4])
    assert len(read_table(path, drop_filtered=False)) == 3


@pytest.mark.parametrize("row, needle", [
    ("1e6,0,100,3.5,0.1,constant,sgd,1,False", "line 2: B must be an integer >= 1; got '0'"),
    ("1e6,64,1.5,3.5,0.1,constant,sgd,1,False", "line 2: K must be an integer"),
    ("1e6,64,100,abc,0.1,constant,sgd,1,False", "line 2: loss must be a number; got 'abc'"),
    ("1e6,64,100,-1,0.1,constant,sgd,1,False", "line 2: loss must be > 0"),
    ("1e6,64,100,nan,0.1,constant,sgd,1,False", "line 2: loss must be finite"),
    ("1e6,64,100,3.5,0.1,cosine,sgd,1,False", "line 2: schedule 'cosine'"),
    ("1e6,64,100,3.5,0.1,constant,adam,1,False", "line 2: optimizer 'adam'"),
    ("1e6,64,100,3.5,0.1,constant,sgd,1,maybe", "line 2: filtered must be True or False"),
    ("1e6,64,100,3.5,0.1,constant,sgd,1", "line 2: 8 fields"),
])
def test_read_table_errors_name_the_line(tmp_path, row, needle):
    with pytest.raises(ParameterError, match="t.csv " + needle.replace("(", r"\(")):
        read_table(_write(tmp_path, HEADER + row + "\n"))


def test_read_table_file_level_errors(tmp_path):
    with pytest.raises(ParameterError, match="missing column"):
        read_table(_write(tmp_path, "N,B,loss\n1,2,3\n"))
    with pytest.raises(ParameterError, match="empty"):
        read_table(_write(tmp_path, ""))
    with pytest.raises(ParameterError, match="line 3: N is empty while other rows give it"):
        read_table(_write(tmp_path, "N,B,K,loss\n1e6,4,10,3\n,4,10,3\n"))
    with pytest.raises(ParameterError, match="every row is filtered"):
        read_table(_write(tmp_path, "B,K,loss,filtered\n4,10,3,True\n"))
    with pytest.raises(ParameterError, match="does not exist"):
        read_table(str(tmp_path / "nope.csv"))
    assert not is_table(_write(tmp_path, "run,step,loss,B,K\n", "c.csv"))


def test_make_table_checks():
    with pytest.raises(ParameterError, match="'B' parameter of make_table.*row 1"):
        make_table([4, 0], [10, 10], [1.0, 1.0])
    with pytest.raises(ParameterError, match="'N' parameter.*2 entries"):
        make_table([4, 4], [10, 10], [1.0, 1.0], N=[1.0])


# ------------------------------------------------------------------ the closed form
@pytest.mark.parametrize("B, K", [(1, 1), (8, 50), (64, 3000), (3, 2 ** 20)])
def test_closed_form_matches_the_exact_engine(B, K):
    """With d(N) = 5 directions (all summed one by one) the learned part is the exact E[L]
    of the explicit NQM, and the untrained tail is the closed-form sum."""
    tau1, a, A, g, Sn, b = 1.3, 0.8, 2.0, 1.5, 3.0, 1.7
    x = np.array([math.log(tau1), a, math.log(A), g, math.log(Sn), b, math.log(5.0), 1.0, 0.0])
    m = S._Model("nqm", 1e6)
    one = np.ones(1)
    learned, noise, approx = m.parts(x, one * 1e6, one * B, one * K, one)
    i = np.arange(1, 6, dtype=float)
    h = tau1 * i ** -a
    model = nm.NQM(h, Sn * i ** -b, initial_variance=2 * A * i ** -g / h)
    exact = nm.loss_at(model, nm.SGD(1.0), B, [K])[0][0]
    assert A * learned[0] + Sn * noise[0] == pytest.approx(exact, rel=1e-10)
    tail = A * special.zeta(g, 6)  # sum over j >= 6 of A j^-g
    assert A * approx[0] == pytest.approx(tail, rel=2e-3)
    assert A * approx[0] != pytest.approx(A * special.zeta(g, 5), rel=2e-3)  # off by one: caught


# ------------------------------------------------------------------ fits
@pytest.fixture(scope="module")
def exact_table_fit():
    return S.fit_table(make_table_runs(sigma=0.0), uncertainty="none", n_starts=2)


def test_fit_recovers_held_out_losses_and_a_wrong_truth_is_caught(exact_table_fit):
    rows = np.array([[3e6, 128, 700], [5e7, 512, 2000], [1.5e7, 32, 5000]])
    true = table_true_loss(*rows.T)
    pred = exact_table_fit.predict(*rows.T).value
    assert exact_table_fit.info["rms"] < 1e-3
    np.testing.assert_allclose(pred, true, rtol=5e-3)
    wrong = dict(TABLE_TRUTH, rho=0.7)  # power: a 0.1 change of the size exponent shows
    assert np.max(np.abs(pred / table_true_loss(*rows.T, truth=wrong) - 1)) > 5e-3


def test_fit_is_reproducible_and_checks_arguments():
    t = make_table_runs(seed=2, sigma=0.01)
    a = S.fit_table(t, uncertainty="none", n_starts=1, seed=4)
    b = S.fit_table(t, uncertainty="none", n_starts=1, seed=4)
    assert np.array_equal(a.coords, b.coords)
    for kw, name in (({"family": "magic"}, "family"), ({"n_starts": 0}, "n_starts"),
                     ({"uncertainty": "bootstrap"}, "uncertainty"), ({"level": 2}, "level")):
        with pytest.raises(ParameterError, match=name):
            S.fit_table(t, **kw)
    with pytest.raises(ParameterError, match="at least 10 runs"):
        S.fit_table(t.subset(np.arange(5)))
    with pytest.raises(ParameterError, match="LossTable"):
        S.fit_table([[1, 2, 3, 4]])


def test_conformal_width_is_the_order_statistic():
    r = np.arange(1, 20, dtype=float)  # n = 19: ceil(20 * 0.95) = 19th smallest
    assert S.conformal_width(r, 0.95) == 19.0
    assert S.conformal_width(r, 0.5) == 10.0
    assert S.conformal_width(r[:5], 0.95) == math.inf


def test_cross_validation_folds_partition_the_rows():
    t = make_table_runs(sigma=0.0)
    for kind, n in (("budget", None), ("size", 8)):
        folds = S.group_folds(t, kind)
        idx = np.sort(np.concatenate(folds))
        np.testing.assert_array_equal(idx, np.arange(len(t)))
        if n:
            assert len(folds) == n

    def truth(train, test):
        return table_true_loss(test.N, test.B, test.K)

    cv = S.cross_validate(t, truth)
    assert cv["budget"]["mse"] < 1e-24 and cv["size"]["mse"] < 1e-24


@pytest.mark.slow
def test_cv_bands_scale_with_the_noise():
    """Bands set by cross-validation follow the noise of the losses (log-normal, sigma): a
    95 % half-width between 1.5 and 4 sigma at sigma = 0.02, and wider at 4 sigma."""
    widths = []
    for sigma in (0.02, 0.08):
        fit = S.fit_table(make_table_runs(seed=1, sigma=sigma), n_starts=2)
        widths.append(fit.width)
        assert fit.cv is not None and np.isfinite(fit.cv["mse_size"])
    assert 1.5 * 0.02 < widths[0] < 4 * 0.02
    assert widths[1] > 2.5 * widths[0]


# ------------------------------------------------------------------ predictions and plans
def test_predictions_flag_extrapolation_and_refuse_bad_rows(exact_table_fit):
    p = S.predict_final_loss(exact_table_fit, [[1e7, 256, 1000], [1e10, 256, 1000]])
    assert p["flags"][0] == [] and "N = 1e+10" in p["flags"][1][0]
    assert list(p["extrapolated"]) == [False, True]
    with pytest.raises(ParameterError, match="rows.*B an integer >= 1.*row 0"):
        S.predict_final_loss(exact_table_fit, [[1e7, 0.5, 10]])
    with pytest.raises(ParameterError, match="rows"):
        S.predict_final_loss(exact_table_fit, [[1e7, 4]])
    with pytest.raises(ParameterError, match="learning-rate column"):
        S.predict_final_loss(exact_table_fit, [[1e7, 4, 10]], learning_rate=0.1)


def test_plan_respects_constraints_and_says_when_they_bind(exact_table_fit):
    fit = exact_table_fit
    p = S.plan(fit, 1e14)
    assert p["K"] == math.floor(1e14 / (p["N"] * p["B"]))
    assert p["loss_band"][0] <= p["loss"] <= p["loss_band"][1]
    # the optimum is the best of the grid: no feasible configuration of it does better
    sizes, bs = np.geomspace(2.5e5, 1.28e8 * 64, 49), 2.0 ** np.arange(21)
    Ng, Bg = np.meshgrid(sizes, bs, indexing="ij")
    Kg = np.floor(1e14 / (Ng * Bg))
    ok = Kg >= 1
    assert p["loss"] <= fit.loss(Ng[ok], Bg[ok], Kg[ok]).min() + 1e-12
    capped = S.plan(fit, 1e14, max_batch=16, max_steps=1e4)
    assert capped["B"] <= 16 and capped["K"] <= 1e4
    assert any("binds" in f for f in capped["flags"])
    edge = S.plan(fit, 1e14, sizes=[1e6, 2e6])
    assert any("edge of the sizes" in f for f in edge["flags"])
    with pytest.raises(ParameterError, match="compute"):
        S.plan(fit, -1.0)
    with pytest.raises(ParameterError, match="affords no run"):
        S.plan(fit, 1.0, sizes=[1e9], batch_sizes=[1024])


def test_critical_batch_size_per_size_and_unresolved_cases(exact_table_fit):
    out = S.critical_batch_sizes(exact_table_fit, [4e6, 6.4e7])
    for c in out:
        assert np.isfinite(c["B_crit"]) and 1 <= c["B_crit"] <= 2 ** 24, c
        assert c["reason"] == ""
    narrow = S.critical_batch_sizes(exact_table_fit, [4e6], batch_sizes=[2048, 4096, 8192])[0]
    assert math.isnan(narrow["B_crit"]) and "outside the batch sizes" in narrow["reason"]
    never = S.critical_batch_sizes(exact_table_fit, [4e6], target=0.1)[0]
    assert math.isnan(never["B_crit"]) and "not reached" in never["reason"]


def test_truth_coords_round_trip():
    x = table_truth_coords()
    assert math.exp(x[0]) == pytest.approx(TABLE_TRUTH["tau1"]) and x[8] == TABLE_TRUTH["floor"]


# ------------------------------------------------------------------ command line
def _cli(*args, cwd=None):
    from tests.cli_inprocess import run
    return run("calibrate", *args, cwd=cwd)


def test_calibrate_command_fits_a_table(tmp_path):
    import json
    import os
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "final_losses.csv")
    r = _cli(example, "--uncertainty", "none", "--compute", "1e15", "--max-batch", "512",
             "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["plans"][0]["B"] <= 512 and out["params"]["rho"] > 0
    rec = json.loads((tmp_path / "calibration.json").read_text())
    assert rec["kind"] == "nqm_mc.table_calibration" and rec["input"]["runs"] == 72
    assert (tmp_path / "predictions.csv").read_text().startswith("N,B,K,loss,loss_lo")


def test_calibrate_command_names_the_bad_line(tmp_path):
    bad = _write(tmp_path, "N,B,K,loss\n1e6,4,10,3\n1e6,4,ten,3\n")
    r = _cli(bad, "--out", str(tmp_path / "o"))
    assert r.returncode == 2 and "line 3: K must be a number" in r.stderr
    assert "Traceback" not in r.stderr


def test_tables_without_sizes_and_with_learning_rates():
    t = make_table_runs(sigma=0.0)
    one = t.subset((t.N == 4e6) | (t.N == 8e6))
    single = make_table(one.B, one.K, one.loss)
    fit = S.fit_table(single, uncertainty="none", n_starts=1)
    p = fit.predict([1e9], [256], [1000])
    assert "N is ignored" in p["flags"][0][-1]
    assert p.value[0] == pytest.approx(fit.predict([1.0], [256], [1000]).value[0])
    lr = np.where(t.B > 100, 0.2, 0.1)
    with_lr = make_table(t.B, t.K, t.loss, N=t.N, learning_rate=lr)
    fit = S.fit_table(with_lr, uncertainty="none", n_starts=1)
    assert fit.params["tau1"] * 0.2 / fit.lr_ref < 2
    limit = 2 * fit.lr_ref / fit.params["tau1"]
    with pytest.raises(ParameterError, match="stability limit"):
        fit.predict([1e7], [64], [100], learning_rate=1.01 * limit)
    assert np.isfinite(fit.predict([1e7], [64], [100], learning_rate=0.15).value[0])
