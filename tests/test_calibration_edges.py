"""Never a silent edge: the tuning grid follows the fitted stability limit, is extended when the
optimum sits at its lowest rate, and a critical batch size outside the batch sizes is refused
with a reason."""

from __future__ import annotations

import csv
import os

import numpy as np
import pytest

import nqm_mc as nm
from nqm_mc.calibration import Run, calibrate, read_runs
from nqm_mc.calibration import predict as P
from nqm_mc.calibration.synthetic import SETTINGS, true_loss

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "examples", "calibration_runs.csv")
STEPS = np.unique(np.geomspace(1, 3000, 40).astype(np.int64))


def test_stability_grid_tops_at_the_limit():
    m = nm.NQM([4e-6, 1e-6], [1.0, 1.0])
    a, second = P.stability_grid(m, "sgd", (10, 3), 0.0)
    assert second is None and a[-1] == pytest.approx(2 / 4e-6, rel=1e-5) and a[-1] < 2 / 4e-6
    assert a[0] == pytest.approx(a[-1] * 10 ** -P.GRID_DECADES["sgd"])
    a, second = P.stability_grid(m, "heavy_ball", (10, 3), 0.5)
    assert a[-1] == pytest.approx(4 / (4e-6) ** 0.5, rel=1e-5) and second is not None


def test_grid_is_extended_while_the_optimum_sits_at_its_lowest_rate(monkeypatch):
    """With a grid of half a decade the optimum (far below the limit, noise-dominated) is
    reached by extensions; it matches the tuning on the full grid."""
    m = nm.NQM([1.0, 0.01], [1.0, 1.0], initial_variance=1.0)
    bs = np.array([1])
    wide = P._tune_member(m, 0.0, 0.05, "sgd", bs, 0.0, None, (60, 3))
    assert wide.learning_rate[0] < 0.3 and not wide.meta["notes"]
    monkeypatch.setattr(P, "GRID_DECADES", {"sgd": 0.5, "heavy_ball": 0.5, "ema": 0.5})
    short = P._tune_member(m, 0.0, 0.05, "sgd", bs, 0.0, None, (6, 3))
    assert short.meta["alpha_range"][0] < 2 * 10 ** -0.5  # extended below the first grid
    assert short.steps[0] == pytest.approx(wide.steps[0], rel=0.25)
    monkeypatch.setattr(P, "MAX_EXTENSIONS", 0)
    stuck = P._tune_member(m, 0.0, 0.05, "sgd", bs, 0.0, None, (6, 3))
    assert "not reached at any learning rate tried" in stuck.meta["notes"][0]


def _scaled_runs(scale):
    out = []
    for k, (o, b) in enumerate(SETTINGS):
        lr = o.base_learning_rate * scale
        o2 = nm.SGD(lr) if o.name == "sgd" else nm.HeavyBall(lr, o.momentum)
        out.append(Run(STEPS, true_loss(o, b, STEPS), o2, b, label=f"r{k}"))
    return out


def test_runs_at_learning_rate_1e6_tune_near_1e6():
    """Learning rates x 1e6 with the same curves: the fitted curvature is 1e-6 times smaller,
    the tuned rates are about 1e6 (not the edge of a fixed grid) and the tuned steps are the
    steps of the tuned rate."""
    fit = calibrate(_scaled_runs(1e6), uncertainty="none", n_starts=2, max_points=12)
    assert fit.params["h1"] < 2e-6
    t = fit.tuned(0.08, [4, 64, 1024], max_samples=0)
    lrs, steps = t["learning_rate"].value, t["steps"].value
    assert np.all((lrs > 1e4) & (lrs < 2e6)) and np.all(steps < 2e4)
    for b, lr, s in zip([4, 64, 1024], lrs, steps, strict=True):
        assert fit.steps_to_target(0.08, nm.SGD(float(lr)), [b]).value[0] == s
    assert 1 < t["critical_batch_size"].value < 1024


def test_one_run_at_learning_rate_1000_gives_no_tiny_critical_batch_size(tmp_path):
    with open(EXAMPLE, newline="") as f:
        rows = list(csv.reader(f))
    i = rows[0].index("learning_rate")
    for r in rows[1:]:
        if r[0] == "sgd_B8":
            r[i] = "1000.0"
    path = tmp_path / "lr1000.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    fit = calibrate(read_runs(path), uncertainty="none", n_starts=2, max_points=12)
    assert any("stability limit" in w for w in fit.warnings)
    bs = [1, 4, 16, 64, 256, 1024, 4096, 16384, 65536]
    c = fit.critical_batch_size(1.2 * min(float(r.loss.min()) for r in fit.runs), batch_sizes=bs,
                                max_samples=0)
    if np.isnan(c.value):
        assert "outside the batch sizes" in c.note
    else:
        assert 1 <= c.value <= 65536 or np.isinf(c.value)


def test_critical_batch_size_outside_the_batch_sizes_is_refused_with_a_reason():
    fit = calibrate(_scaled_runs(1.0), uncertainty="none", n_starts=2, max_points=12)
    wide = fit.critical_batch_size(0.08, batch_sizes=[1, 16, 256, 4096], max_samples=0,
                                   grid_size=(20, 5))
    assert 1 < wide.value < 4096 and wide.note == ""
    narrow = fit.critical_batch_size(0.08, batch_sizes=[1, 2, 4], max_samples=0,
                                     grid_size=(20, 5))
    assert np.isnan(narrow.value) and "outside the batch sizes tuned" in narrow.note
