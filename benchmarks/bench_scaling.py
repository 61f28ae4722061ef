"""The momentum-and-preconditioning study on the reference grid, against two baselines run
in the same process:

    python benchmarks/bench_scaling.py [--quick]

* study: ``tune`` for heavy-ball at p in {0, .25, .5, .75} and B = 2^0 .. 2^18 (every 4th power
  with --quick) on the notebook's 100 x 20 (alpha, beta) grid, binned spectrum, target 0.01;
* full grid: every one of the 2000 configurations per (p, B) evaluated to its exact first
  crossing, then argmin (the grid-search definition). The study must find identical steps
  and the same grid cell;
* notebook: the reference notebook's per-configuration bisection in NumPy, timed on a
  sample of configurations and scaled to the whole grid (its full run takes tens of minutes);
* grid bisection: the same bisection in the package (``method="reference"``) on every
  configuration of every grid, and its counts on the timed sample against the notebook's;
* refine: the finer search (log-space zoom around the grid's best cell) at every p and B must
  never need more steps than the grid search.
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nqm_mc import NQM  # noqa: E402
from nqm_mc.studies.scaling import _evaluate, reference_grid, tune  # noqa: E402
from tests.reference import notebook_steps  # noqa: E402

POWERS = (0.0, 0.25, 0.5, 0.75)
TARGET = 0.01


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="every 4th batch size, small sample")
    ap.add_argument("--sample", type=int, default=None,
                    help="configurations timed for the notebook baseline (default 40, 10 quick)")
    a = ap.parse_args()
    model = NQM.binned()
    batch_sizes = [2 ** k for k in range(0, 19, 4 if a.quick else 2)]
    alphas, betas = reference_grid("heavy_ball")
    tune(model, "heavy_ball", [4, 1024], TARGET, grid_size=(10, 4))  # compile or load cache

    t0 = time.perf_counter()
    studies = {p: tune(model, "heavy_ball", batch_sizes, TARGET, preconditioning=p)
               for p in POWERS}
    t_study = time.perf_counter() - t0

    t0 = time.perf_counter()
    identical = True
    for p, res in studies.items():
        for i, b in enumerate(batch_sizes):
            full = _evaluate(model, "heavy_ball", p, TARGET, float(b), alphas, betas, "exact")
            k = np.unravel_index(np.argmin(full), full.shape)
            same = (full[k] == res.steps[i] and alphas[k[0]] == res.learning_rate[i]
                    and betas[k[1]] == res.second[i])
            identical &= bool(same)
            if not same:
                print(f"  MISMATCH p={p} B={b}: full {full[k]} vs study {res.steps[i]}")
    t_full = time.perf_counter() - t0

    t0 = time.perf_counter()
    never_worse = True
    fewer = 0
    for p, res in studies.items():
        fine = tune(model, "heavy_ball", batch_sizes, TARGET, preconditioning=p, search="refine")
        never_worse &= bool(np.all(fine.steps <= res.steps))
        fewer += int(np.sum(fine.steps < res.steps))
    t_refine = time.perf_counter() - t0

    t0 = time.perf_counter()
    grids = {(p, b): _evaluate(model, "heavy_ball", p, TARGET, float(b), alphas, betas,
                               "reference") for p in POWERS for b in batch_sizes}
    t_grid_ref = time.perf_counter() - t0

    rng = np.random.default_rng(0)
    n_sample = a.sample or (10 if a.quick else 40)
    h, counts = model.curvatures, model.multiplicities
    sample = [(POWERS[rng.integers(len(POWERS))], batch_sizes[rng.integers(len(batch_sizes))],
               rng.integers(alphas.size), rng.integers(betas.size)) for _ in range(n_sample)]
    t0 = time.perf_counter()
    nb = []
    with np.errstate(over="ignore", invalid="ignore"):
        for p, b, i, j in sample:
            nb.append(notebook_steps(h, counts, b, alphas[i], TARGET, "momentum",
                                     momentum=betas[j], p=p))
    per_config = (time.perf_counter() - t0) / n_sample
    # the notebook's bisection has no answer for divergent or unreachable cells
    agree = all(grids[p, b][i, j] == s for (p, b, i, j), s in zip(sample, nb, strict=True)
                if np.isfinite(grids[p, b][i, j]))
    n_configs = len(POWERS) * len(batch_sizes) * alphas.size * betas.size
    t_notebook = per_config * n_configs

    print(f"heavy-ball, p in {POWERS}, {len(batch_sizes)} batch sizes, "
          f"{alphas.size} x {betas.size} grid, binned spectrum, target {TARGET}")
    for p, res in studies.items():
        print(f"  p = {p:4}: steps {[int(s) for s in res.steps]}")
    print(f"study (pruned grid search)     {t_study:8.2f} s")
    print(f"full grid, every config exact  {t_full:8.2f} s   ratio {t_full / t_study:6.1f}x")
    print(f"notebook bisection (estimated) {t_notebook:8.0f} s   ratio "
          f"{t_notebook / t_study:6.0f}x   ({per_config * 1e3:.1f} ms/config, "
          f"{n_sample} timed)")
    print(f"grid bisection, every config   {t_grid_ref:8.2f} s   "
          f"({1e3 * t_grid_ref / len(grids):.0f} ms per 100 x 20 grid; notebook's counts on "
          f"the sample: {agree})")
    print(f"refine search                  {t_refine:8.2f} s   never more steps than the grid: "
          f"{never_worse} (fewer at {fewer} of {len(POWERS) * len(batch_sizes)} points)")
    print(f"identical steps and grid cells to the full grid: {identical}")
    return 0 if identical and never_worse and agree else 1


if __name__ == "__main__":
    sys.exit(main())
