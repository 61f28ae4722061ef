"""Digits softmax regression: the NQM fitted to some runs predicts the others.

    python benchmarks/digits_calibration.py [--quick] [--target 0.35] [--seeds 4]

1. Train softmax regression on scikit-learn's digits (``nqm_mc.workloads.digits``) with SGD and
   heavy ball (beta = 0.9) at B = 1, 2, 4, ..., 1024 over a grid of learning rates, several
   seeds each; steps to the target are read off the seed-averaged full training loss
   (``first_crossing``), tuned = the best learning rate of the grid.
2. Measure the per-example gradient noise scale exactly over the data set, along the tuned
   SGD run at the smallest batch size, at the record where its seed-averaged loss first falls
   below the target (mean over seeds).
3. Fit the NQM (``nqm_mc.calibration.calibrate``) on the SGD curves at the training batch sizes
   (1, 4, 16, 64; the tuned learning rate and half of it), then predict the held-out runs: SGD
   at B = 2, 8, 32 (interpolation) and 128..1024 (extrapolation), and heavy ball at every B
   (a held-out optimizer). The predicted tuned steps are the minimum over the same learning
   rate grid as the measurement, read off the predicted loss curves (``predict_loss``, value
   and band) by the same ``first_crossing`` as the measured curves. (``Calibration.
   steps_to_target`` is not used: on fits whose spectrum tail has alpha h below float64's
   epsilon the exact engine reports divergence there and it returns inf.)
4. Baselines: the noise scale, S(B) = S_min (1 + B_noise / B) with S_min fitted on the
   training batch sizes (heavy ball: the same curve, the noise scale has no momentum term);
   and perfect scaling from the largest training batch size at or below B,
   S(B) = S(B0) B0 / B.
Prints markdown tables (errors as predicted / measured) and the times.
"""

import argparse
import os
import sys
import time

import numpy as np
from scipy import optimize

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nqm_mc import SGD, HeavyBall  # noqa: E402
from nqm_mc.workloads.digits import Digits, first_crossing, log_record, train  # noqa: E402

TRAIN_B = (1, 4, 16, 64)
ALL_B = tuple(2 ** k for k in range(11))
MOMENTUM = 0.9


def horizon(batch_size, quick):
    return int(max(160, (6000 if quick else 16000) // batch_size))


def measure(problem, batch_sizes, lrs, momentum, target, n_seeds, seed, quick, keep=None):
    """Per batch size: mean curves per lr, steps per lr (and per seed), the tuned lr."""
    out = {}
    for B in batch_sizes:
        t0 = time.perf_counter()
        runs = train(problem, B, lrs, log_record(horizon(B, quick), 40), momentum=momentum,
                     n_seeds=n_seeds, seed=seed, keep_weights=(B == keep))
        ml = runs.mean_loss
        steps = np.array([first_crossing(runs.steps, ml[i], target) for i in range(len(lrs))])
        per_seed = np.array([[first_crossing(runs.steps, runs.loss[i, j], target)
                              for j in range(n_seeds)] for i in range(len(lrs))])
        best = int(np.argmin(steps))
        fin = per_seed[best][np.isfinite(per_seed[best])]
        se = fin.std(ddof=1) / np.sqrt(fin.size) if fin.size > 1 else np.nan
        out[B] = {"runs": runs, "steps": steps, "best": best, "tuned": steps[best], "se": se,
                  "time": time.perf_counter() - t0}
    return out


def noise_scale_at_target(problem, entry, target):
    """Exact B_simple, B_noise at the first record where the seed-averaged curve of the tuned
    run is below the target: mean and standard error over the seeds' weights there."""
    runs = entry["runs"]
    i = entry["best"]
    below = np.flatnonzero(runs.mean_loss[i] < target)
    r = int(below[0]) if below.size else runs.steps.size - 1
    v = np.array([problem.noise_scale(runs.weights[i, j, r])
                  for j in range(runs.loss.shape[1])])
    se = v.std(0, ddof=1) / np.sqrt(len(v)) if len(v) > 1 else np.full(2, np.nan)
    return v.mean(0), se


def fit_s_min(b_train, s_train, b_noise):
    """S_min of S(B) = S_min (1 + B_noise / B), least squares on log S."""
    b, s = np.asarray(b_train, float), np.asarray(s_train, float)
    return float(np.exp(np.mean(np.log(s) - np.log1p(b_noise / b))))


def fit_b_crit(b, s):
    """B_crit and S_min of S(B) = S_min (1 + B_crit / B) fitted to measured steps."""
    b, s = np.asarray(b, float), np.asarray(s, float)

    def resid(x):
        return np.log(s) - x[0] - np.log1p(np.exp(x[1]) / b)

    f = optimize.least_squares(resid, [np.log(s.min()), np.log(np.sqrt(b[0] * b[-1]))])
    return float(np.exp(f.x[1])), float(np.exp(f.x[0]))


def _f(x):
    if x is None or not np.isfinite(x):
        return "inf" if x is not None and x == np.inf else "-"
    return f"{x:.3g}" if abs(x) < 1e5 else f"{x:.2e}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer learning rates, seeds and B")
    ap.add_argument("--target", type=float, default=0.35)
    ap.add_argument("--seeds", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-fit", action="store_true", help="skip the calibration step")
    args = ap.parse_args(argv)
    t_all = time.perf_counter()
    problem = Digits(l2=1e-3)
    target = args.target
    lrs = 2.0 ** np.arange(-5, 3)  # 1/32 .. 4
    batch_sizes = ALL_B if not args.quick else (1, 4, 16, 64, 256)
    seeds = args.seeds if not args.quick else 2
    if args.quick:
        lrs = 2.0 ** np.arange(-4, 3)
    # the minimum of the training loss, for reference
    def f(w):
        return (float(problem.loss(w.reshape(problem.shape))),
                problem.gradient(w.reshape(problem.shape)).ravel())

    opt = optimize.minimize(f, np.zeros(650), jac=True, method="L-BFGS-B",
                            options={"maxiter": 5000, "gtol": 1e-10})
    print(f"digits: {problem.n_examples} examples, softmax regression, l2 = {problem.l2}; "
          f"initial loss {problem.loss(np.zeros(problem.shape)):.4f}, minimum {opt.fun:.4f}; "
          f"target {target}\n")
    t0 = time.perf_counter()
    sgd = measure(problem, batch_sizes, lrs, 0.0, target, seeds, args.seed, args.quick,
                  keep=TRAIN_B[0])
    hb = measure(problem, batch_sizes, lrs * (1 - MOMENTUM), MOMENTUM, target, seeds,
                 args.seed, args.quick)
    t_train = time.perf_counter() - t0
    print("## Measured (tuned over the learning-rate grid; mean of "
          f"{seeds} seeds; s.e. over seeds)\n")
    print("| B | SGD steps | s.e. | SGD lr | heavy ball steps | s.e. | heavy ball lr | time (s) |")
    print("|---|---|---|---|---|---|---|---|")
    for B in batch_sizes:
        a, h = sgd[B], hb[B]
        print(f"| {B} | {_f(a['tuned'])} | {_f(a['se'])} | {lrs[a['best']]:.3g} | "
              f"{_f(h['tuned'])} | {_f(h['se'])} | {(lrs * (1 - MOMENTUM))[h['best']]:.3g} | "
              f"{a['time'] + h['time']:.1f} |")
    print(f"\ntraining time {t_train:.0f} s\n")

    # the gradient noise scale, measured
    t0 = time.perf_counter()
    (bs_, bn_), (bs_se, bn_se) = noise_scale_at_target(problem, sgd[TRAIN_B[0]], target)
    b0 = sgd[TRAIN_B[0]]["runs"]
    along = [problem.noise_scale(b0.weights[b0.weights.shape[0] and sgd[TRAIN_B[0]]["best"],
                                            0, r])
             for r in range(0, b0.steps.size, max(1, b0.steps.size // 6))]
    t_ns = time.perf_counter() - t0
    print("## Gradient noise scale (exact over the data set; tuned SGD run, B = "
          f"{TRAIN_B[0]}, seed 0)\n")
    print("| step | loss | B_simple | B_noise |")
    print("|---|---|---|---|")
    for r, (s_, n_) in zip(range(0, b0.steps.size, max(1, b0.steps.size // 6)), along,
                           strict=True):
        print(f"| {b0.steps[r]} | {b0.loss[sgd[TRAIN_B[0]]['best'], 0, r]:.4f} | {_f(s_)} | "
              f"{_f(n_)} |")
    print(f"\nat the target (first record of the seed-averaged curve below it; mean over seeds): "
          f"B_simple = "
          f"{bs_:.4g} +- {bs_se:.2g}, B_noise = {bn_:.4g} +- {bn_se:.2g} ({t_ns:.1f} s)\n")
    train_b = [B for B in TRAIN_B if B in batch_sizes]
    s_train = [sgd[B]["tuned"] for B in train_b]
    s_min = fit_s_min(train_b, s_train, bn_)
    s_min_simple = fit_s_min(train_b, s_train, bs_)
    meas_b = [B for B in batch_sizes if np.isfinite(sgd[B]["tuned"])]
    bc, bc_smin = fit_b_crit(meas_b, [sgd[B]["tuned"] for B in meas_b])
    print(f"measured critical batch (S = S_min (1 + B_crit / B) fitted to all measured SGD "
          f"steps): B_crit = {bc:.3g}, S_min = {bc_smin:.3g}; noise-scale S_min on the training "
          f"batch sizes: {s_min:.3g} (with B_simple: {s_min_simple:.3g})\n")

    def perfect(B):
        b0_ = max(b for b in train_b if b <= B)
        return sgd[b0_]["tuned"] * b0_ / B

    def gns(B, which=bn_, smin=s_min):
        return smin * (1 + which / B)

    # the NQM fit
    pred_sgd, pred_hb, fit = {}, {}, None
    t_fit = t_pred = 0.0
    if not args.no_fit:
        from nqm_mc.calibration import Run, calibrate

        curves = []
        for B in train_b:
            e = sgd[B]
            runs = e["runs"]
            for i in sorted({e["best"], max(e["best"] - 1, 0)}):
                m = runs.mean_loss[i]
                if np.all(np.isfinite(m)):
                    curves.append(Run(runs.steps, m, SGD(float(lrs[i])), B,
                                      label=f"sgd B={B} lr={lrs[i]:.3g}"))
        t0 = time.perf_counter()
        fit = calibrate(curves, seed=args.seed)
        t_fit = time.perf_counter() - t0
        print(f"## NQM fit on {len(curves)} SGD curves ({t_fit:.1f} s)\n")
        iv = fit.intervals()
        for k, v in fit.params.items():
            lo, hi = iv.get(k, (np.nan, np.nan))
            print(f"- {k} = {v:.4g}  [{lo:.3g}, {hi:.3g}]")
        for line in fit.identifiability():
            print(f"- {line}")
        print()
        t0 = time.perf_counter()
        # predicted curves (value and band) read off with the same first_crossing as the
        # measurements (Calibration.steps_to_target is not used: see the module docstring)
        grid = log_record(10 ** 6, 24)
        for bs_list, lr_grid, store, make in (
                (list(batch_sizes), lrs, pred_sgd, lambda a: SGD(float(a))),
                (list(batch_sizes), lrs * (1 - MOMENTUM), pred_hb,
                 lambda a: HeavyBall(float(a), MOMENTUM))):
            for B in bs_list:
                vals = np.full((len(lr_grid), 3), np.inf)
                for i, a in enumerate(lr_grid):
                    band = fit.predict_loss(make(a), B, grid)
                    vals[i] = [first_crossing(grid, np.asarray(c, float), target)
                               for c in (band.value, band.lo, band.hi)]
                k = int(np.argmin(vals[:, 0]))
                lo_hi = np.sort(np.min(vals[:, 1:], axis=0))
                store[B] = (vals[k, 0], lo_hi[0], lo_hi[1], lr_grid[k])
        t_pred = time.perf_counter() - t0

    def row(B, meas, nqm, gns_v, perf):
        cells = [f"{B}", _f(meas["tuned"]), _f(meas["se"])]
        if nqm is not None:
            v, lo, hi, a = nqm
            cells += [f"{_f(v)} [{_f(lo)}, {_f(hi)}]", f"{a:.3g}", f"{v / meas['tuned']:.2f}"]
        else:
            cells += ["not run", "-", "-"]
        cells += [_f(gns_v), f"{gns_v / meas['tuned']:.2f}"]
        cells += [_f(perf), f"{perf / meas['tuned']:.2f}"] if perf is not None else ["-", "-"]
        return "| " + " | ".join(cells) + " |"

    head = ("| B | measured | s.e. | NQM [band] | NQM lr | NQM/meas | GNS | GNS/meas | "
            "perfect | perfect/meas |\n|---|---|---|---|---|---|---|---|---|---|")
    print("## Held-out SGD batch sizes (tuned over the learning-rate grid)\n")
    print(head)
    for B in batch_sizes:
        if B in train_b:
            continue
        print(row(B, sgd[B], pred_sgd.get(B) if fit else None, gns(B), perfect(B)))
    print("\n## Held-out optimizer: heavy ball, beta = 0.9 (GNS: the same S(B) as SGD; "
          "perfect: from the measured SGD steps)\n")
    print(head)
    for B in batch_sizes:
        print(row(B, hb[B], pred_hb.get(B) if fit else None, gns(B),
                  perfect(B) if B >= train_b[0] else None))
    print("\n## Summary: geometric mean of max(pred/meas, meas/pred) over the held-out runs\n")
    print("| held out | NQM | NQM band covers | GNS | perfect |\n|---|---|---|---|---|")
    for name, meas, pred, bs_list in (
            ("SGD, B not in " + str(train_b), sgd, pred_sgd,
             [B for B in batch_sizes if B not in train_b]),
            ("heavy ball, every B", hb, pred_hb, list(batch_sizes))):
        m = np.array([meas[B]["tuned"] for B in bs_list])
        g = np.array([gns(B) for B in bs_list])
        pf = np.array([perfect(B) if B >= train_b[0] else np.nan for B in bs_list])

        def err(p, m=m):
            with np.errstate(invalid="ignore", divide="ignore"):
                return f"{np.exp(np.nanmean(np.abs(np.log(p / m)))):.2f}x"

        if fit is not None:
            v = np.array([pred[B][0] for B in bs_list])
            cover = sum(pred[B][1] <= meas[B]["tuned"] <= pred[B][2] for B in bs_list)
            nqm_cells = f"{err(v)} | {cover}/{len(bs_list)}"
        else:
            nqm_cells = "not run | -"
        print(f"| {name} | {nqm_cells} | {err(g)} | {err(pf)} |")
    if fit is None:
        print("\nNQM fit not run")
    else:
        ok = [B for B in batch_sizes if np.isfinite(pred_sgd[B][0])]
        bc_nqm, _ = fit_b_crit(ok, [pred_sgd[B][0] for B in ok])
        print(f"\ncritical batch size, SGD (B_crit of S_min (1 + B_crit / B) fitted over "
              f"B = {batch_sizes[0]}..{batch_sizes[-1]}): measured {bc:.3g}; NQM-predicted "
              f"{bc_nqm:.3g} (ratio {bc_nqm / bc:.2f}); noise scale B_noise {bn_:.3g} "
              f"(ratio {bn_ / bc:.2f}), B_simple {bs_:.3g} (ratio {bs_ / bc:.2f})")
    print(f"\ntimes: training {t_train:.0f} s, noise scale {t_ns:.1f} s, fit {t_fit:.1f} s, "
          f"predictions {t_pred:.1f} s, total {time.perf_counter() - t_all:.0f} s")


if __name__ == "__main__":
    main()
