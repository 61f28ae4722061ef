"""Exact against Monte Carlo lag covariances of the loss, for the skip-ahead sampler and the
step kernel (never a test; a table to read).

    python benchmarks/lag_covariances.py                 # N = 10000 runs per sampler
    python benchmarks/lag_covariances.py --runs 20000    # the figures in CHANGELOG.md

For each configuration and each pair of recorded steps (s, t), short lags (t, t + 1),
(t, t + 10) and long ones (t, 2t): the exact Cov(L_s, L_t) of nqm_mc.loss_covariance, and for
each sampler (skip-ahead, step kernel, and the planted fresh-draw sampler that draws every
record afresh from the start with exact marginals) the sample covariance of the kept paths,
its influence-function standard error and z = (estimate - exact) / s.e. The last line of each
table gives the Bonferroni threshold of the configuration's comparisons at family-wise 1e-4.
"""

import argparse  # noqa: I001 (nqm_mc before numba: it sets the vector width)
import time

import numpy as np
from scipy import stats

from nqm_mc import NQM, SGD, HeavyBall, loss_covariance, simulate
from nqm_mc.joint_stats import lag_correlation, lag_covariance, pair_columns
from validation.joint import fresh_draw_simulate

MODEL = NQM.binned(dim=200, n_bins=20)
PAIRS = [(20, 40), (100, 200), (500, 1000), (20, 21), (100, 101), (1000, 1001), (1000, 1010)]
CONFIGS = {
    "SGD(1.0), B = 4": (SGD(1.0), 4),
    "HeavyBall(0.1, 0.9, ema=0.99), B = 4": (HeavyBall(0.1, 0.9, ema=0.99), 4),
}


def table(name, opt, batch, n_runs, seed):
    pairs = np.array(PAIRS)
    steps = np.unique(pairs)
    cols = pair_columns(steps, pairs)
    ex = loss_covariance(MODEL, opt, batch, pairs)
    runs = {}
    for method in ("skip", "step"):
        t0 = time.perf_counter()
        res = simulate(MODEL, opt, batch, int(steps[-1]), n_runs, seed=seed, record=steps,
                       keep_paths=n_runs, method=method, progress=False)
        runs[method] = (res.paths, time.perf_counter() - t0)
    t0 = time.perf_counter()
    planted = fresh_draw_simulate(MODEL, opt, batch, int(steps[-1]), n_runs, seed=seed,
                                  record=steps)
    runs["planted"] = (planted.paths, time.perf_counter() - t0)
    print(f"\n{name}: N = {n_runs} runs per sampler, seed {seed} "
          f"(seconds: {', '.join(f'{k} {v[1]:.1f}' for k, v in runs.items())})")
    head = f"{'s':>5s} {'t':>5s} {'exact cov':>11s} {'exact corr':>10s}"
    for k in runs:
        head += f" | {k + ' cov (s.e.)':>24s} {'z':>7s} {'corr':>7s}"
    print(head)
    zmax = {k: 0.0 for k in runs}
    for p, (s, t) in enumerate(pairs):
        line = f"{s:5d} {t:5d} {ex.covariance[p]:11.4e} {ex.correlation[p]:10.4f}"
        for k, (paths, _) in runs.items():
            cv = lag_covariance(paths, cols[p], ex.covariance[p])
            cr = lag_correlation(paths, cols[p], ex.correlation[p])
            zmax[k] = max(zmax[k], abs(cv.z[0]))
            line += (f" | {cv.estimate[0]:11.4e} ({cv.standard_error[0]:9.2e})"
                     f" {cv.z[0]:7.2f} {cr.estimate[0]:7.4f}")
        print(line)
    thr = stats.norm.isf(1e-4 / (2 * len(pairs)))
    print("max |z| of the covariance: " + ", ".join(f"{k} {v:.2f}" for k, v in zmax.items())
          + f"; Bonferroni threshold over {len(pairs)} pairs at 1e-4: {thr:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=20191)
    args = ap.parse_args()
    for name, (opt, batch) in CONFIGS.items():
        table(name, opt, batch, args.runs, args.seed)


if __name__ == "__main__":
    main()
