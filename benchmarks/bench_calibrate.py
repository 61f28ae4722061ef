"""Fit time of the calibration: 5 curves of 10^3 to 10^5 steps, uncertainty included.

Five runs of the synthetic truth (nqm_mc.calibration.synthetic), SGD and heavy ball at batch
sizes 8 to 512, measured at every 10th step (100 to 10^4 points each; the fit uses 40
log-spaced points per curve), noise from 8 Monte Carlo trajectories per run. Prints the time of
calibrate() with the default wild bootstrap (50 replicates) and with the Jacobian.

    python benchmarks/bench_calibrate.py
"""

from __future__ import annotations

import time

import numpy as np

import nqm_mc as nm
from nqm_mc.calibration import Run, calibrate
from nqm_mc.calibration.synthetic import TRUTH, truth_model

CONFIGS = [(nm.SGD(0.5), 8, 1_000), (nm.SGD(1.0), 32, 3_000), (nm.SGD(1.5), 128, 10_000),
           (nm.HeavyBall(0.05, 0.9), 32, 30_000), (nm.SGD(1.5), 512, 100_000)]


def make(seed: int = 0) -> list[Run]:
    model = truth_model()
    runs = []
    for k, (opt, b, n) in enumerate(CONFIGS):
        rec = np.arange(0, n + 1, 10)
        res = nm.simulate(model, opt, b, n, 8, seed=seed * 10 + k, record=rec, progress=False)
        runs.append(Run(res.steps, res.mean + TRUTH["floor"], opt, b, label=f"{opt.name}_B{b}"))
    return runs


def main() -> None:
    runs = make()
    print("curves:", ", ".join(f"{r.name} ({r.steps[-1]} steps, {r.steps.size} points)"
                               for r in runs))
    calibrate(runs[:1], uncertainty="none", n_starts=1)  # compile and warm up
    for unc in ("bootstrap", "jacobian"):
        t0 = time.perf_counter()
        fit = calibrate(runs, uncertainty=unc)
        dt = time.perf_counter() - t0
        print(f"{unc:>10}: {dt:6.1f} s  ({fit.info['evaluations']} evaluations of all runs, "
              f"rms {fit.info['rms']:.3g}, {len(fit.samples)} samples)")


if __name__ == "__main__":
    main()
