"""Where the gradient noise scale predicts the NQM's critical batch size, and where it does not.

    python benchmarks/noise_scale_study.py [--quick] [--figure docs/noise_scale.png]

On the paper's binned spectrum (h_i = c_i = 1/i, d = 10^4, 100 bins) every setting is tuned
exactly at B = 2^0, 2^2, ..., 2^20 (``nqm_mc.studies.scaling.tune``, the notebook's grids); the
NQM's critical batch size is B_crit of S(B) = S_min (1 + B_crit / B) fitted to the tuned steps
(and, beside it, the first B past twice perfect scaling). The noise scale's prediction is the
exact B_noise (and B_simple) at the step where the tuned B = 1 run reaches the target, in the raw
basis (the model's H and C, what per-example gradients measure) and in the preconditioned basis
(H^(1-p), C H^(-p)). Prints a markdown table; ``--figure`` also draws the noise scale along the
B = 1 runs and the tuned steps against the noise scale's S(B).
"""

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nqm_mc import NQM  # noqa: E402
from nqm_mc.studies.noise_scale import noise_scale, noise_scale_critical_batch  # noqa: E402
from nqm_mc.studies.scaling import optimizer_for  # noqa: E402


def _fmt(x):
    if x is None or not np.isfinite(x):
        return "-"
    return f"{x:.3g}" if x < 1e4 else f"{x:.2e}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer settings, coarser grids")
    ap.add_argument("--figure", help="save the figure here (png or pdf)")
    args = ap.parse_args(argv)
    model = NQM.binned()
    settings = [("sgd", 0.0, 0.01), ("sgd", 0.25, 0.01), ("sgd", 0.5, 0.01), ("sgd", 0.75, 0.01),
                ("heavy_ball", 0.0, 0.01), ("heavy_ball", 0.5, 0.01), ("ema", 0.0, 0.01),
                ("sgd", 0.0, 0.1), ("sgd", 0.0, 0.03), ("sgd", 0.0, 0.003),
                ("sgd", 0.0, 0.001)]
    grid = None
    if args.quick:
        settings = [s for s in settings if s[2] in (0.01, 0.001) and s[1] in (0.0, 0.5)]
        grid = (50, 10)
    rows, comps = [], {}
    t_all = time.perf_counter()
    for family, p, target in settings:
        t0 = time.perf_counter()
        cmp = noise_scale_critical_batch(model, target, family=family, preconditioning=p,
                                         grid_size=grid)
        pre = noise_scale(model, optimizer_for(cmp.scaling, 0), 1, [int(cmp.steps[0])],
                          basis="preconditioned")
        comps[(family, p, target)] = cmp
        rows.append((family, p, target, cmp.predicted_simple, cmp.predicted,
                     float(pre.b_noise[0]), cmp.nqm_fit, cmp.nqm_doubling, cmp.ratio,
                     float(pre.b_noise[0]) / cmp.nqm_fit if cmp.nqm_fit else np.nan,
                     time.perf_counter() - t0))
    print("| family | p | target | B_simple | B_noise (raw) | B_noise (precond.) | "
          "NQM B_crit (fit) | NQM B_crit (2x) | raw / NQM | precond. / NQM | time (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} | " + " | ".join(_fmt(x) for x in r[3:8])
              + f" | {r[8]:.2f} | {r[9]:.2f} | {r[10]:.0f} |")
    print(f"\ntotal {time.perf_counter() - t_all:.0f} s; noise scales at the step where the tuned "
          "B = 1 run reaches the target (ratios of expectations, exact engine)")
    if args.figure:
        _figure(model, comps, args.figure)
        print(f"figure: {args.figure}")


def _figure(model, comps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for (family, p, target), style in (((("sgd", 0.0, 0.01)), "C0"),
                                       ((("sgd", 0.5, 0.01)), "C1"),
                                       ((("heavy_ball", 0.0, 0.01)), "C2")):
        cmp = comps.get((family, p, target))
        if cmp is None:
            continue
        end = int(cmp.steps[0])
        steps = np.unique(np.geomspace(1, end, 200).astype(np.int64))
        ns = noise_scale(model, optimizer_for(cmp.scaling, 0), 1, steps)
        label = f"{family}, p={p}"
        ax1.loglog(ns.loss, ns.b_noise, color=style, label=f"B_noise, {label}")
        ax1.loglog(ns.loss, ns.b_simple, color=style, ls=":", label=f"B_simple, {label}")
        ok = np.isfinite(cmp.steps)
        B = cmp.batch_sizes[ok].astype(float)
        ax2.loglog(B, cmp.steps[ok], "o-", color=style, label=f"NQM tuned, {label}")
        s_min = cmp.scaling.critical_batch_size()["fit_S_min"]
        if s_min:
            ax2.loglog(B, s_min * (1 + cmp.predicted / B), "--", color=style,
                       label=f"S_min (1 + B_noise/B), {label}")
    ax1.invert_xaxis()
    ax1.set_xlabel("expected loss along the tuned B = 1 run")
    ax1.set_ylabel("noise scale")
    ax1.set_title("exact noise scale along training")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("batch size B")
    ax2.set_ylabel("steps to target 0.01")
    ax2.set_title("NQM against the noise scale's S(B)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
