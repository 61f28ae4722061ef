"""What a user reads: defaults that reach what they report, readable terminal tables that
carry each command's finding, the compile notice and an honest progress line."""

import contextlib
import csv
import io
import json
import os
import re

import numpy as np
import pytest

from nqm_mc import _compile_notice, _table, cli
from tests.cli_inprocess import run


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def call(argv):
    """``main(argv)`` in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue()


# ------------------------------------------------------------------ the table formatter
def test_table_aligns_columns_and_shows_missing_values_as_a_dash():
    text = _table.table(["batch size", "steps", "momentum", "lr", "note"],
                        [[4, 1508044.0, None, 0.0146779, "a"],
                         [16, float("inf"), None, float("nan"), "bb"]],
                        [None, None, None, ".3g", None])
    lines = text.splitlines()
    assert lines[0] == "batch size    steps      lr  note"  # the empty column is left out
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[2] == "         4  1508044  0.0147  a"  # integral floats as integers
    assert lines[3] == "        16      inf       -  bb"
    assert "nan" not in text and "None" not in text
    assert len(lines[0]) == len(lines[1])
    keep = _table.table(["a", "b"], [[1, None]], keep_empty=True)
    assert keep.splitlines()[0].split() == ["a", "b"]
    assert _table.cell(True) == "yes" and _table.cell(np.float64(2.0)) == "2"
    assert _table.cell(np.int64(7)) == "7" and _table.cell(0.5, ".2f") == "0.50"


# ------------------------------------------------------------------ exact
def test_exact_default_steps_reach_the_target_and_mark_the_crossing(tmp_path):
    rc, out, err = call(["exact", "--dim", "300", "--out", tmp_path])
    assert rc == 0, err
    s = json.loads((tmp_path / "exact_summary.json").read_text())
    assert s["status"] == "reached"
    assert s["final_step"] >= 1.5 * s["steps_to_target"] >= s["final_step"] / 1.1
    assert s["final_loss"] < s["target"] < s["initial_loss"]
    assert "<- steps to target" in out and "nan" not in out
    assert f"steps to target 0.01: {s['steps_to_target']}" in out
    steps = [int(r["step"]) for r in _csv(tmp_path / "exact_curve.csv")]
    assert s["steps_to_target"] in steps  # the crossing is a recorded step
    for p in ("exact_curve.csv", "exact_summary.json", "exact_curve.png"):
        assert str(tmp_path / p) in out  # every path written is printed


def test_exact_unreachable_target_runs_to_the_steady_state(tmp_path):
    rc, out, err = call(["exact", "--dim", "300", "--target", "1e-6", "--out", tmp_path])
    assert rc == 0, err
    s = json.loads((tmp_path / "exact_summary.json").read_text())
    assert s["status"] == "unreachable" and "not reached" in out
    assert s["final_loss"] < 1.1 * s["steady_state_loss"]  # the curve settles
    rc, out, err = call(["exact", "--dim", "300", "--steps", "50", "--out", tmp_path / "b"])
    s = json.loads((tmp_path / "b" / "exact_summary.json").read_text())
    assert rc == 0 and s["final_step"] == 50  # an explicit --steps is kept


def test_simulate_default_steps_reach_the_noise_floor_or_the_target(tmp_path):
    from nqm_mc import NQM, SGD, steady_state, steps_to_target
    model, opt = NQM.paper(300), SGD(0.1)
    ss = steady_state(model, opt, 32).loss
    rc, out, err = call(["simulate", "--dim", "300", "--runs", "8", "--out", tmp_path / "a"])
    assert rc == 0, err
    steps = [int(r["step"]) for r in _csv(tmp_path / "a" / "simulation.csv")]
    near = steps_to_target(model, opt, 32, 1.1 * ss).steps
    assert steps[-1] == cli._nice_ceil(1.5 * near)  # settled: within 10 % of the steady state
    rc, out, err = call(["simulate", "--dim", "300", "--runs", "8", "--target", "0.05",
                         "--out", tmp_path / "b"])
    assert rc == 0, err
    rows = _csv(tmp_path / "b" / "simulation.csv")
    hit = steps_to_target(model, opt, 32, 0.05).steps
    assert int(rows[-1]["step"]) == cli._nice_ceil(1.5 * hit)  # past the target's crossing
    rc, out, err = call(["simulate", "--dim", "300", "--runs", "2", "--optimizer", "adam",
                         "--out", tmp_path / "c"])
    assert rc == 0, err
    assert int(_csv(tmp_path / "c" / "simulation.csv")[-1]["step"]) == cli.SIM_STEPS


def test_exact_refuses_a_nonlinear_optimizer_naming_the_command(tmp_path):
    rc, out, err = call(["exact", "--optimizer", "adam", "--dim", "10", "--out", tmp_path])
    assert rc == 2 and "nqm-mc simulate --optimizer adam" in err
    assert "nqm_mc.simulate" not in err and len(err.strip().splitlines()) == 1
    assert "run it with nqm-mc simulate" in cli._for_the_command_line(
        "SGD with clipping is nonlinear. Use nqm_mc.simulate.").lower()


def test_nice_ceil():
    assert cli._nice_ceil(288147) == 290000 and cli._nice_ceil(150) == 150
    assert cli._nice_ceil(1.5) == 2 and cli._nice_ceil(1001) == 1100


# ------------------------------------------------------------------ simulate
def test_simulate_adam_summary_has_no_nan_columns(tmp_path):
    rc, out, err = call(["simulate", "--optimizer", "adam", "--lr", "0.01", "--dim", "50",
                         "--runs", "16", "--steps", "30", "--out", tmp_path])
    assert rc == 0, err
    assert "nan" not in out and "exact E[L]" not in out and "no exact curve" in out
    rows = _csv(tmp_path / "simulation.csv")
    assert rows[0]["exact_mean"] == "" and rows[0]["z"] == ""
    rc, out, err = call(["simulate", "--dim", "50", "--runs", "16", "--steps", "30",
                         "--out", tmp_path / "sgd"])
    assert rc == 0 and "exact E[L]" in out and "nan" not in out
    assert "simulating 16 runs x 30 steps" in err and "\r" not in err  # not a terminal
    rc, out, err = call(["simulate", "--dim", "50", "--runs", "16", "--steps", "30", "--quiet",
                         "--out", tmp_path / "q"])
    assert rc == 0 and err == ""


# ------------------------------------------------------------------ scaling
def _synthetic(B, S):
    from nqm_mc.studies.scaling import ScalingResult
    B = np.asarray(B, dtype=np.int64)
    return ScalingResult("sgd", 0.0, 0.01, "grid", B, np.asarray(S, float), B * 0.0,
                         B * np.nan, B * 0.0)


def test_critical_batch_size_beyond_the_range_is_marked():
    B = 2 ** np.arange(2, 21, 2)
    inside = _synthetic(B, 100.0 * (1 + 5000.0 / B))
    c, t = inside.critical_batch_size(), inside.critical_batch_size_text()
    assert c["doubling"] == 16384 and isinstance(c["doubling"], int)
    assert t == {"doubling": "16384", "fit": "5000"} and c["fit_extrapolated"] is False
    small = B[B <= 1024]
    beyond = _synthetic(small, 100.0 * (1 + 5000.0 / small))
    c, t = beyond.critical_batch_size(), beyond.critical_batch_size_text()
    assert c["doubling"] is None and c["fit_extrapolated"] is True
    assert t["doubling"] == "> 1024 (beyond the largest batch size tried)"
    assert t["fit"].startswith("5000 (extrapolated beyond the largest batch size tried")


def test_scaling_prints_a_table_with_the_critical_batch_size(tmp_path):
    rc, out, err = call(["scaling", "--optimizer", "heavy_ball", "-p", "0.5", "--batch-sizes",
                         "4,64", "--out", tmp_path])
    assert rc == 0, err
    assert "{" not in out and "nan" not in out  # no raw dict, no nan column
    assert re.search(r"batch size +steps +learning rate +momentum", out)
    assert "> 64 (beyond the largest batch size tried)" in out and "extrapolated" in out
    assert str(tmp_path / "scaling_heavy_ball_p0.5.csv") in out


def test_scaling_default_batch_sizes_reach_two_to_the_twenty():
    sizes = [int(b) for b in cli.SCALING_BATCH_SIZES.split(",")]
    assert sizes[0] == 4 and sizes[-1] == 2 ** 20
    help_text = run("scaling", "--help").stdout
    assert "2^20" in help_text


@pytest.mark.slow
def test_scaling_defaults_cross_the_critical_batch_size(tmp_path):
    for family in (["sgd"], ["heavy_ball", "-p", "0.5"]):
        rc, out, err = call(["scaling", "--optimizer", *family, "--out", tmp_path / family[0]])
        assert rc == 0, err
        line = next(x for x in out.splitlines() if "twice perfect scaling" in x)
        assert "beyond" not in line and "extrapolated" not in out, out


# ------------------------------------------------------------------ studies
def test_noise_study_prints_ks_p_values_and_a_verdict(tmp_path):
    from nqm_mc.spec.model import NQM
    from nqm_mc.spec.noise import Gaussian, StudentT
    from nqm_mc.studies.adam_proxy import noise_study
    lines = []
    noise_study(tmp_path, model=NQM.paper(20), n_steps=200, n_runs=400,
                laws=[Gaussian(), StudentT(3.0)], log=lines.append)
    text = "\n".join(lines)
    assert "KS p vs Gaussian" in text and "nan" not in text
    assert lines[-1].startswith("verdict: ")
    rows = _csv(tmp_path / "noise_study.csv")
    assert len(rows) == 2


def test_study_verdicts():
    from nqm_mc.studies.adam_proxy import adam_proxy_verdict, noise_study_verdict
    laws = {"Gaussian()": {"final_z": 0.3, "hitting_time_ks_p_vs_gaussian": None},
            "StudentT(nu=3.0)": {"final_z": -1.0, "hitting_time_ks_p_vs_gaussian": 1e-20},
            "StudentT(nu=5.0)": {"final_z": 5.0, "hitting_time_ks_p_vs_gaussian": 0.2}}
    v = noise_study_verdict({"laws": laws})
    assert "off the exact engine for StudentT(nu=5.0)" in v
    assert "StudentT(nu=3.0) (p = 1e-20)" in v and "nu=5.0) (p" not in v
    out = {"best_p": 0.25, "proxy_fails": [False, True], "ratio": [1.0, 1.6],
           "closest_p": [0.5, 0.25]}
    v = adam_proxy_verdict(out, [1, 16])
    assert "no single power" in v and "B = 16 (1.6x)" in v
    out["proxy_fails"] = [False, False]
    assert "matches Adam within 1.5x" in adam_proxy_verdict(out, [1, 16])


def test_validate_prints_a_dash_not_nan_and_its_verdict(tmp_path):
    r = run("validate", "--case", "unstable", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "nan" not in r.stdout and "max|z|     -" in r.stdout
    assert "verdict: the case passed" in r.stdout and str(tmp_path) in r.stdout


# ------------------------------------------------------------------ outputs
@pytest.mark.parametrize("cmd", ["exact", "simulate", "scaling", "reproduce", "validate",
                                 "adam-proxy", "noise-study", "plot"])
def test_every_help_gives_the_out_default(cmd):
    text = " ".join(run(cmd, "--help").stdout.split())
    assert "--out DIR output directory (default: " in text
    assert "replaced only with --force" in text


def test_plot_prints_the_paths_it_wrote(tmp_path):
    rc, _, err = call(["simulate", "--dim", "20", "--runs", "8", "--steps", "20", "--quiet",
                       "--out", tmp_path])
    assert rc == 0, err
    rc, out, err = call(["plot", tmp_path / "simulation.npz", "--kind", "mean"])
    assert rc == 0, err
    assert out.startswith("wrote ") and str(tmp_path / "simulation_mean.png") in out


# ------------------------------------------------------------------ compile notice
def test_compile_notice_is_printed_once_before_a_compilation():
    from numba import njit
    lines = []
    _compile_notice.watch("exact", write=lines.append)
    try:
        @njit
        def f(x):
            return x + 1

        @njit
        def g(x):
            return x * 2

        f(1)
        g(1.0)
    finally:
        _compile_notice.unwatch()
    assert len(lines) == 1
    assert re.fullmatch(r"compiling kernels \(first run only, ~\d+ s\)\n", lines[0])

    @njit
    def h(x):
        return x - 1
    h(1)  # after unwatch: silent
    assert len(lines) == 1


def test_compile_notice_estimate_counts_cold_kernels(monkeypatch):
    run_block = "nqm_mc.montecarlo._kernels.run_blocks"
    monkeypatch.setattr(_compile_notice, "_cached", lambda name: True)
    assert _compile_notice.estimate([], run_block) == 25  # 22 s, rounded up to 25
    monkeypatch.setattr(_compile_notice, "_cached", lambda name: False)
    # simulate's exact curve kernels and the whole step group are cold: 22 + 0.2 + 8 + 7,
    # rounded up to a multiple of 5
    assert _compile_notice.estimate(_compile_notice.COMMAND_KERNELS["simulate"],
                                    run_block) == 40
    every = set(sum(_compile_notice.COMMAND_KERNELS.values(), []))
    for name in every:  # every kernel named exists and has an estimate
        assert name in _compile_notice.COMPILE_SECONDS
        assert callable(_compile_notice._dispatcher(name))


def test_json_and_quiet_silence_the_notice(monkeypatch, tmp_path):
    watched = []
    monkeypatch.setattr(_compile_notice, "watch", lambda command, write=None:
                        watched.append(command))
    call(["exact", "--dim", "20", "--steps", "10", "--json", "--out", tmp_path / "a"])
    call(["simulate", "--dim", "20", "--runs", "4", "--steps", "10", "--quiet",
          "--out", tmp_path / "b"])
    assert watched == []
    call(["exact", "--dim", "20", "--steps", "10", "--out", tmp_path / "c"])
    assert watched == ["exact"]


# ------------------------------------------------------------------ progress line
def test_progress_estimates_only_after_the_first_wave(monkeypatch):
    from nqm_mc.montecarlo import driver
    clock = iter([20.0, 22.0, 24.0, 24.5])
    monkeypatch.setattr(driver.time, "perf_counter", lambda: next(clock))
    err = io.StringIO()
    monkeypatch.setattr(driver.sys, "stderr", err)
    # the first wave took 20 s (compilation included), each later one 2 s: 10 blocks each
    driver._progress(10, 100, 0.0)
    first = err.getvalue()
    assert "estimating" in first and "left" in first and "~" not in first
    driver._progress(20, 100, 0.0)
    assert err.getvalue()[len(first):].split(",")[-1].strip() == "~16 s left"  # not ~88 s
    driver._progress(30, 100, 0.0)
    driver._progress(100, 100, 0.0)
    driver._progress_end()
    text = err.getvalue()
    lines = text.split("\r")[1:]
    assert len({len(x.rstrip("\n")) for x in lines[:3]}) == 1  # shorter redraws are blanked
    assert text.rstrip(" \n").endswith("done") and text.endswith("\n")


def test_a_fresh_run_directory_prints_its_latest_link(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, out, err = call(["scaling", "--batch-sizes", "4,16", "--dim", "100", "--model", "paper"])
    assert rc == 0, err
    link = os.path.join("results", "scaling-latest")
    line = [s for s in out.splitlines() if s.startswith("latest: ")]
    assert line == [f"latest: {link} -> {os.readlink(link)}"]
    rc, out, err = call(["scaling", "--batch-sizes", "4,16", "--dim", "100", "--model", "paper",
                         "--json"])
    assert rc == 0 and "latest:" not in out  # --json prints JSON only
