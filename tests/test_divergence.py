"""A diverging run is a result, not a crash: the command line prints its summary, says where
and why the run diverged, writes strict JSON and draws its figures (finite part, divergence
marked)."""

import json

import numpy as np
import pytest

from nqm_mc import NQM, SGD, expected_loss, plotting, simulate
from tests.cli_inprocess import run


def strict(text):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


def test_simulate_diverging_prints_summary_and_strict_json(tmp_path):
    base = ["simulate", "--dim", "100", "--runs", "32", "--steps", "2000", "--lr", "2.5",
            "--quiet"]
    r = run(*base, "--out", str(tmp_path / "text"))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "32 of 32 runs diverged" in r.stdout and "spectral radius" in r.stdout
    assert (tmp_path / "text" / "simulation.png").stat().st_size > 0
    r = run(*base, "--json", "--out", str(tmp_path / "json"))
    assert r.returncode == 0, r.stderr
    s = strict(r.stdout)
    assert s["n_diverged"] == 32 and s["first_divergence_step"] > 0
    assert s["final_mean"] is None  # no finite run left at the last step


def test_exact_diverging_prints_reason_and_strict_json(tmp_path):
    r = run("exact", "--dim", "100", "--steps", "2000", "--lr", "2.5", "--json", "--out",
            str(tmp_path))
    assert r.returncode == 0, r.stderr
    s = strict(r.stdout)
    assert s["diverges"] and s["status"] == "diverges" and "spectral radius" in s["reason"]
    assert s["final_loss"] is None and 0 < s["diverged_by_step"] <= 2000
    assert (tmp_path / "exact_curve.png").stat().st_size > 0
    strict((tmp_path / "exact_summary.json").read_text())


def test_plot_of_a_diverged_result(tmp_path):
    r = run("simulate", "--dim", "100", "--runs", "32", "--steps", "2000", "--lr", "2.5",
            "--quiet", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = run("plot", str(tmp_path / "simulation.npz"), "--out", str(tmp_path / "figs"))
    assert r.returncode == 0, r.stderr
    assert {f.name for f in (tmp_path / "figs").glob("*.png")} >= {
        "simulation_mean.png", "simulation_quantiles.png"}


@pytest.mark.parametrize("plot", ["plot_mean", "plot_quantiles", "plot_paths"])
def test_every_result_figure_draws_a_diverged_run(tmp_path, plot):
    res = simulate(NQM.paper(50), SGD(2.5), 8, 1500, 16, keep_paths=4, target=1.0,
                   progress=False)
    assert res.n_diverged[-1] == 16
    path = getattr(plotting, plot)(res, str(tmp_path / f"{plot}.png"))
    assert (tmp_path / f"{plot}.png").stat().st_size > 0 and path


def test_exact_figure_of_a_diverging_curve(tmp_path):
    curve = expected_loss(NQM.paper(50), SGD(2.5), 8, record=np.unique(
        np.geomspace(1, 4000, 50).astype(int)))
    assert not np.isfinite(curve.mean[-1])
    plotting.plot_exact(curve, str(tmp_path / "e.png"), None, 0.01, "diverging")
    assert (tmp_path / "e.png").stat().st_size > 0


def test_loss_at_of_a_diverging_configuration_is_inf_not_nan():
    """loss_at jumps to any step: past the overflow of a diverging configuration its mean,
    variance and theta mean are inf, as expected_loss gives them (the variance was inf - inf
    = NaN), and before it the values are expected_loss's."""
    from nqm_mc import NQM, SGD, expected_loss, loss_at, stability
    model, opt = NQM.paper(100), SGD(5.0)
    steps = np.array([5, 100, 400, 10_000])
    mean, var, mth = loss_at(model, opt, 16, steps)
    curve = expected_loss(model, opt, 16, record=steps)
    assert curve.diverged and not stability(model, opt).stable
    for got, want in ((mean, curve.mean), (var, curve.variance), (mth, curve.mean_theta)):
        assert not np.isnan(got).any()
        assert np.isinf(got[-1]) and np.isfinite(got[0])
        np.testing.assert_allclose(got[:2], want[:2], rtol=1e-9)
        assert np.array_equal(np.isinf(got), np.isinf(want))
    assert all(np.isinf(x) for x in loss_at(model, opt, 16, 10_000))


def test_simulate_unstable_but_not_yet_overflowed_says_it_diverges(tmp_path):
    """lr = 5 on h = 1 is unstable, but after 60 steps the loss is about 1e70, far from the
    1e300 at which a run counts as diverged: the summary still says that it diverges, and
    why. A stable run (lr = 0.5) says nothing of the kind."""
    r = run("simulate", "--lr", "5", "--dim", "100", "--runs", "8", "--steps", "60",
            "--out", str(tmp_path / "a"))
    assert r.returncode == 0, r.stderr
    assert "no run passed 1e300 within 60 steps, but the configuration diverges" in r.stdout
    assert "spectral radius" in r.stdout
    r = run("simulate", "--lr", "0.5", "--dim", "100", "--runs", "8", "--steps", "60",
            "--out", str(tmp_path / "b"))
    assert r.returncode == 0 and "diverges" not in r.stdout
