"""Fit time of the size-aware NQM on a final-loss table, default uncertainty included.

    python benchmarks/bench_calibrate_table.py [TABLE.csv] [--repeats 3]

Default table: ../shared/data/nqs_train.csv relative to the repository (64 unfiltered runs,
13 model sizes, 6 compute budgets). Prints the wall-clock and CPU time of ``fit_table`` with
the default cross-validated bands (one fit from seeded starts plus one refit per held-out
budget and per held-out size), and its ratio to the fit without uncertainty in the same
process. Run on one thread each: the work is many small vectorised evaluations.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nqm_mc.calibration import fit_table, read_table  # noqa: E402

DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                       "nqs_train.csv")


def timed(fn):
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t0, time.process_time() - c0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", nargs="?", default=DEFAULT)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    table = read_table(args.table)
    print(f"{len(table)} runs from {os.path.basename(args.table)}")
    for _ in range(args.repeats):
        base, w0, c0 = timed(lambda: fit_table(table, uncertainty="none"))
        fit, w1, c1 = timed(lambda: fit_table(table))
        print(f"default (cv, {fit.cv['n_folds']} refits): {w1:6.1f} s wall, {c1:6.1f} s CPU; "
              f"without uncertainty: {w0:5.1f} s wall, {c0:5.1f} s CPU; ratio (CPU) "
              f"{c1 / c0:.2f}; held-out MSE budget {fit.cv['mse_budget']:.5f}, size "
              f"{fit.cv['mse_size']:.5f}")


if __name__ == "__main__":
    main()
