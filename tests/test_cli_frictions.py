"""The command line's first-hour frictions stay fixed: plotting a run directory, one
batch-size bound, errors that name the flag, suggestions for a mistyped flag, integer steps."""

import os
from pathlib import Path

import numpy as np
import pytest

from nqm_mc import cli
from nqm_mc.spec._checks import MAX_BATCH


def run(capsys, *argv):
    status = cli.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_plot_takes_the_latest_link_and_a_run_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    status, out, err = run(capsys, "simulate", "--dim", 20, "--runs", 16, "--steps", 30,
                           "--keep-paths", 2)
    assert status == 0, err
    link = os.path.join("results", "simulate-latest")
    assert f"latest: {link} -> " in out and os.path.islink(link)
    status, out, err = run(capsys, "plot", link, "--kind", "mean")
    assert status == 0, err
    assert os.path.isfile(os.path.join(link, "simulation_mean.png"))
    run_dir = os.path.realpath(link)
    status, out, err = run(capsys, "plot", run_dir, "--kind", "paths")
    assert status == 0, err
    assert os.path.isfile(os.path.join(run_dir, "simulation_paths.png"))
    # a directory without a result: one line naming it and what a result is
    os.mkdir("empty")
    status, out, err = run(capsys, "plot", "empty")
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "No saved result in empty" in err and "simulation.npz" in err


def test_one_batch_size_bound_named_by_its_flag(tmp_path, capsys):
    assert MAX_BATCH == 2 ** 53
    status, out, err = run(capsys, "exact", "--dim", 10, "--batch-size", 2 ** 53 + 1,
                           "--out", tmp_path)
    assert status == 2 and "--batch-size" in err and "[1, 2^53]" in err
    assert "steps_to_target" not in err and "4611686018427387904" not in err
    status, out, err = run(capsys, "exact", "--dim", 10, "--batch-size", 2 ** 53, "--steps", 50,
                           "--out", tmp_path / "ok", "--json")
    assert status == 0, err
    # the README states the same bound
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert "batch sizes integers in [1, 2^53]" in readme


@pytest.mark.parametrize("argv,flag,python", [
    (["exact", "--lr", "-1"], "'--lr' option of SGD", "'learning_rate'"),
    (["exact", "--optimizer", "heavy_ball", "--momentum", "1.5"], "'--momentum' option",
     "'momentum'"),
    (["simulate", "--runs", "16", "--ema", "2"], "'--ema' option", "'ema'"),
])
def test_errors_name_the_flag(tmp_path, capsys, argv, flag, python):
    status, out, err = run(capsys, *argv, "--dim", 10, "--out", tmp_path)
    assert status == 2 and flag in err and python not in err, err
    assert len(err.strip().splitlines()) == 1


def test_errors_from_a_file_keep_the_file_and_key(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[optimizer]\nkind = \"sgd\"\nlearning_rate = -1.0\n")
    status, out, err = run(capsys, "exact", "-c", cfg, "--dim", 10, "--out", tmp_path)
    assert status == 2 and "--lr" not in err and "c.toml" in err


def test_a_mistyped_flag_gets_a_suggestion(capsys):
    status, out, err = run(capsys, "simulate", "--optimzer", "adam")
    assert status == 2 and "did you mean --optimizer?" in err
    status, out, err = run(capsys, "exact", "--batchsize=4")
    assert status == 2 and "did you mean --batch-size?" in err
    # power check: nothing close, no suggestion (and still one line, exit status 2)
    status, out, err = run(capsys, "exact", "--zzzzzz")
    assert status == 2 and "did you mean" not in err and len(err.strip().splitlines()) == 1


def test_tuned_steps_print_as_integers():
    from nqm_mc.spec.model import NQM
    from nqm_mc.studies.scaling import tune
    res = tune(NQM.binned(), "sgd", [4, 64], 0.05, grid_size=(12, 1))
    assert np.all(res.steps == np.round(res.steps))
    shown = repr(res)
    assert f"steps=[{int(res.steps[0])}, {int(res.steps[1])}]" in shown and ".0" not in \
        shown.split("steps=")[1]
    rows = res.to_rows()
    assert all(type(r["steps"]) is int for r in rows)
    assert all(type(s) is int for s in res.to_dict()["steps"])


def _labels(axis):
    lo, hi = sorted(axis.get_view_interval())
    return [t.get_text() for t, x in zip(axis.get_majorticklabels(), axis.get_majorticklocs(),
                                          strict=True) if t.get_text() and lo <= x <= hi]


def _mixed(labels):
    """Both plain powers of ten (10, 1000) and 10^k on one axis."""
    plain = any(s.lstrip("-").strip("0.") in ("1", "") and s not in ("0",) for s in labels)
    return plain and any("10^" in s for s in labels)


@pytest.mark.parametrize("top,powers", [(1000, False), (10 ** 5, True)])
def test_axis_ticks_are_written_one_way(top, powers):
    from nqm_mc import style
    assert _mixed(["0", "1", "10", "100", "1000", "$10^{4}$"])  # the check catches a mix
    with style.context() as plt:
        fig, (a, b) = plt.subplots(1, 2)
        steps = np.unique(np.geomspace(1, top, 30).astype(int))
        a.plot(np.r_[0, steps], np.r_[1.0, 1.0 / steps])
        style.log_steps(a, np.r_[0, steps])
        b.plot(steps, 1.0 / steps)
        style.log_x(b)
        style.log_y(b)
        fig.canvas.draw()
        for axis in (a.xaxis, b.xaxis, b.yaxis):
            labels = _labels(axis)
            assert len(labels) >= 3 and not _mixed(labels), labels
        assert any("10^" in s for s in _labels(a.xaxis)) == powers
        plt.close(fig)


def test_the_simulate_figure_has_its_steady_state_line(tmp_path, capsys, monkeypatch):
    from nqm_mc import exact, plotting, style
    from nqm_mc.spec.model import NQM
    from nqm_mc.spec.optimizers import SGD
    drawn = []
    monkeypatch.setattr(style, "steady_line", lambda ax, value, *a, **k: drawn.append(value))
    monkeypatch.setattr(plotting.style, "steady_line", style.steady_line)
    status, out, err = run(capsys, "simulate", "--dim", 20, "--runs", 16, "--steps", 30,
                           "--lr", 0.5, "-B", 8, "--out", tmp_path)
    assert status == 0, err
    want = exact.steady_state(NQM.paper(20), SGD(0.5), 8).loss
    assert drawn == [pytest.approx(want, rel=1e-12)]
    drawn.clear()  # and when plotting the saved result again
    status, out, err = run(capsys, "plot", tmp_path, "--kind", "mean", "--force")
    assert status == 0, err
    assert drawn == [pytest.approx(want, rel=1e-12)]
    drawn.clear()  # no line for an adaptive optimizer (no exact steady state)
    status, out, err = run(capsys, "simulate", "--dim", 20, "--runs", 16, "--steps", 30,
                           "--optimizer", "adam", "--lr", 0.01, "--out", tmp_path / "adam")
    assert status == 0, err
    assert drawn == [None]


def test_the_calibration_figure_names_its_bands_in_the_legend(monkeypatch, tmp_path):
    from nqm_mc import _files
    from nqm_mc.calibration import calibrate
    from nqm_mc.calibration import report as rep
    from tests.test_calibration import _exact_runs
    fit = calibrate(_exact_runs(), uncertainty="jacobian", n_starts=3, max_points=20)
    pred = rep.predictions(fit, 0.08, [1, 16, 256, 4096], "sgd")
    assert np.isfinite(pred["critical_batch_size"].lo)  # there is a band to draw
    legends = []

    def keep_legend(fig, path, **kw):
        legends.extend(t.get_text() for ax in fig.axes if ax.get_legend()
                       for t in ax.get_legend().get_texts())
        return str(path)
    monkeypatch.setattr(_files, "save_figure", keep_legend)
    rep.figure(fit, pred, str(tmp_path / "c.png"))
    bands = [t for t in legends if "band" in t]
    assert len(bands) == 2 and any(t.startswith("critical B") for t in bands), legends
