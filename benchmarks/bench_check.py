"""Cost of the theory check relative to the Monte Carlo run it judges (ratios, one process).

Three checks on one run of SGD on the binned model (200 directions, 300 steps, 34 log-spaced
records, every path of 4000 runs kept): the mean alone, mean and variance (the sample variance's
standard error from the kept paths), and mean, variance and 10 two-time covariances. Each is
timed as the median of 5 calls and printed as a ratio to the median time (3 calls) of the
simulate call that produced the run.

    python benchmarks/bench_check.py
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import nqm_mc


def median_time(fn: Callable[[], Any], repeat: int = 5) -> float:
    """Median wall time of ``repeat`` calls of ``fn``."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    model = nqm_mc.NQM.binned(dim=200, n_bins=20)
    opt, batch, n_steps, n_runs = nqm_mc.SGD(0.5), 4, 300, 4000

    def run() -> nqm_mc.SimulationResult:
        return nqm_mc.simulate(model, opt, batch, n_steps, n_runs, seed=0, n_records=40,
                               keep_paths=n_runs, progress=False, method="step")

    res = run()  # compile and warm up
    base = median_time(run, repeat=3)
    ex = nqm_mc.expected_loss(model, opt, batch, record=res.steps)
    t = res.steps
    pairs = [(int(t[i]), int(t[j])) for i, j in zip(range(5, 35, 3), range(6, 40, 3),
                                                    strict=False)][:10]
    cov = nqm_mc.loss_covariance(model, opt, batch, pairs).covariance
    cases = {
        "mean": lambda: nqm_mc.check(res, mean=ex.mean),
        "mean + variance": lambda: nqm_mc.check(res, mean=ex.mean, variance=ex.variance),
        "mean + variance + 10 covariances": lambda: nqm_mc.check(
            res, mean=ex.mean, variance=ex.variance,
            covariance=dict(zip(pairs, np.asarray(cov), strict=True))),
    }
    print(f"simulate: {n_runs} runs x {n_steps} steps, {t.size} records, every path kept: "
          f"{base:.3f} s (the baseline)")
    for name, fn in cases.items():
        fn()
        print(f"check({name}): {median_time(fn) / base:.4f} x simulate")


if __name__ == "__main__":
    main()
