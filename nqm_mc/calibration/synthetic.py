"""Synthetic runs from a known power-law NQM (Monte Carlo noise plus a floor), for checks.

Used by the tests, the coverage study (``validation/calibration_coverage.py``), the benchmark
and ``examples/make_calibration_runs.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nqm_mc.calibration.family import power_law_model
from nqm_mc.calibration.runs import Run
from nqm_mc.exact.engine import loss_at
from nqm_mc.montecarlo.driver import simulate
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import SGD, HeavyBall, Optimizer

__all__ = ["TRUTH", "SETTINGS", "HELD_OUT", "truth_model", "make_runs", "true_loss"]

#: the known parameters
TRUTH: dict[str, float] = {"h1": 1.0, "a": 1.0, "s": 0.5, "b": 1.2, "v0": 1.0, "dim": 1000,
                           "floor": 0.05}
#: the measured configurations: (optimizer, batch size)
SETTINGS: list[tuple[Optimizer, int]] = [(SGD(0.5), 8), (SGD(1.0), 32), (SGD(1.5), 128),
                                         (HeavyBall(0.05, 0.9), 32)]
#: held-out configurations: a larger and a smaller batch size, and heavy ball at a new batch
HELD_OUT: list[tuple[Optimizer, int]] = [(SGD(1.5), 512), (SGD(0.25), 2),
                                         (HeavyBall(0.1, 0.9), 128)]


def truth_model(truth: dict[str, Any] | None = None) -> NQM:
    """Return the true NQM (every direction listed)."""
    t = TRUTH if truth is None else truth
    return power_law_model(t["h1"], t["a"], t["s"], t["b"], t["v0"], int(t["dim"]))


def true_loss(optimizer: Optimizer, batch_size: int, steps: Any,
              truth: dict[str, Any] | None = None) -> np.ndarray:
    """Return the exact E[L(t)] + floor of the truth."""
    t = TRUTH if truth is None else truth
    return np.asarray(loss_at(truth_model(t), optimizer, batch_size,
                              np.asarray(steps, dtype=np.int64))[0]) + t["floor"]


def make_runs(seed: int = 0, n_runs: int = 8, n_steps: int = 3000, n_points: int = 40,
              settings: list[tuple[Optimizer, int]] | None = None,
              truth: dict[str, Any] | None = None) -> list[Run]:
    """Monte Carlo curves of the truth: the mean of ``n_runs`` trajectories plus the floor."""
    t = TRUTH if truth is None else truth
    model = truth_model(t)
    steps = np.unique(np.geomspace(1, n_steps, n_points).astype(np.int64))
    runs = []
    for k, (opt, b) in enumerate(SETTINGS if settings is None else settings):
        res = simulate(model, opt, b, n_steps, n_runs, seed=seed * 1000 + k, record=steps,
                       progress=False)
        runs.append(Run(res.steps, res.mean + t["floor"], opt, b, label=f"{opt.name}_B{b}"))
    return runs
