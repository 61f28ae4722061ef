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

__all__ = ["TRUTH", "SETTINGS", "HELD_OUT", "truth_model", "make_runs", "true_loss",
           "TABLE_TRUTH", "table_true_loss", "make_table_runs", "table_truth_coords"]

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


# ------------------------------------------------------------------ final-loss tables
#: the known parameters of the size-aware family (nqm_mc.calibration.sizes; floor absolute)
TABLE_TRUTH: dict[str, float] = {"tau1": 0.5, "a": 1.0, "A": 2.0, "g": 1.2, "S": 50.0,
                                 "b": 2.0, "d_ref": 4000.0, "rho": 0.6, "floor": 0.5,
                                 "N_ref": 1.5e7}


def table_truth_coords(truth: dict[str, float] | None = None) -> np.ndarray:
    """Coordinates (nqm_mc.calibration.size_model.COORDS, floor absolute) of a table truth."""
    t = TABLE_TRUTH if truth is None else truth
    return np.array([np.log(t["tau1"]), t["a"], np.log(t["A"]), t["g"], np.log(t["S"]),
                     t["b"], np.log(t["d_ref"]), t["rho"], t["floor"]])


def table_true_loss(N: Any, B: Any, K: Any,
                    truth: dict[str, float] | None = None) -> np.ndarray:
    """Return the expected final loss of the size-aware family at (N, B, K) (shared rate)."""
    from nqm_mc.calibration.size_model import _Model
    t = TABLE_TRUTH if truth is None else truth
    N, B, K = (np.atleast_1d(np.asarray(v, float)) for v in (N, B, K))
    return _Model("nqm", t["N_ref"]).loss(table_truth_coords(t), N, B, K, np.ones_like(N), 1.0)


def make_table_runs(seed: int = 0, sigma: float = 0.01,
                    truth: dict[str, float] | None = None) -> Any:
    """Return a synthetic final-loss table: 8 sizes x 3 batch sizes x 3 step counts (72 runs).

    Losses are the truth times exp(sigma z), z standard normal (seeded); ``C`` = N B K.
    """
    from nqm_mc.calibration.table import make_table
    sizes = 1e6 * 2.0 ** np.arange(8)
    N, B, K = (a.ravel() for a in np.meshgrid(sizes, [64.0, 256.0, 1024.0],
                                              [300.0, 1000.0, 3000.0], indexing="ij"))
    rng = np.random.default_rng(seed)
    loss = table_true_loss(N, B, K, truth) * np.exp(sigma * rng.standard_normal(N.size))
    return make_table(B, K, loss, N=N, C=N * B * K)
