"""Final-loss models side by side on the same splits of a final-loss table.

    python benchmarks/nqs_baselines.py [TABLE.csv] [--quick] [--level 0.95]

Default table: ../shared/data/nqs_train.csv relative to the repository (the 64 unfiltered
training runs). For every model, leave one budget out (every run of one compute budget ``C``)
and leave one model size out: the model is fitted on the rest from its own seeded starts and
predicts the held-out runs. Printed per model and split: the mean squared error of the log loss
over the held-out runs, and the coverage of the ``level`` bands. A band's half-width comes from
the model's own cross-validation *inside* the training part of the fold (split-conformal on its
leave-one-budget-out and leave-one-size-out residuals), so the held-out runs never set the band
that is checked on them (nested cross-validation).

Models:

* ``nqm``: the size-aware NQM of ``nqm_mc.calibration.sizes`` (nine coordinates), and its nested
  variants ``nqm-aligned`` (noise spectrum tied to the curvature), ``nqm-linear`` (d
  proportional to N), ``nqm-nofloor``;
* ``nqs``: the NQS risk model as its authors describe it (seven parameters: power-law
  curvature and initial loss, noise aligned with the curvature, trained directions proportional
  to N, a floor), the same closed form;
* ``chinchilla``: L = E + A / N^alpha + B' / D^beta with D = B K (tokens up to the sequence
  length), least squares on the log loss from a grid of starts;
* ``perfect``: perfect batch scaling: the size-aware NQM without noise, whose loss depends on B
  and K only through B K.

Also printed: the fit time of the default fit (``fit_table``, cross-validated bands) of the
whole table, and the runs marked ``filtered`` (left out of the source's own fit) predicted from
the others: long runs at small batch sizes, an extrapolation in steps
(``--filtered-only`` for this check alone).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Callable

import numpy as np
from scipy import optimize

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from nqm_mc.calibration.sizes import conformal_width, cross_validate, fit_table  # noqa: E402
from nqm_mc.calibration.table import LossTable, read_table  # noqa: E402

DEFAULT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                       "nqs_train.csv")
Predictor = Callable[[LossTable, LossTable], np.ndarray]


def chinchilla_fit(train: LossTable) -> Callable[[LossTable], np.ndarray]:
    """Fit L = E + A N^-alpha + B' D^-beta (D = B K) by least squares on log L (8 starts)."""
    N = train.N if train.has_sizes else np.ones(len(train))
    D = train.tokens
    y = np.log(train.loss)
    n0, d0 = float(np.exp(np.mean(np.log(N)))), float(np.exp(np.mean(np.log(D))))
    e_hi = 0.98 * float(train.loss.min())

    def model(z: np.ndarray, n: np.ndarray, d: np.ndarray) -> np.ndarray:
        return z[0] + np.exp(z[1] - z[2] * np.log(n / n0)) + np.exp(z[3] - z[4] * np.log(d / d0))

    def resid(z: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            r = y - np.log(model(z, N, D))
        return np.where(np.isfinite(r), r, 30.0)

    lo = [0.0, -20.0, 0.0, -20.0, 0.0]
    hi = [e_hi, 5.0, 2.5, 5.0, 2.5]
    best = None
    for e in (0.0, 0.8 * e_hi):
        for al in (0.2, 0.6):
            for be in (0.2, 0.6):
                z0 = np.array([e, math.log(max(float(np.mean(train.loss)) - e, 1e-3) / 2),
                               al, math.log(max(float(np.mean(train.loss)) - e, 1e-3) / 2), be])
                f = optimize.least_squares(resid, np.clip(z0, lo, hi), bounds=(lo, hi))
                if best is None or f.cost < best.cost:
                    best = f
    assert best is not None
    z = best.x

    def predict(test: LossTable) -> np.ndarray:
        n = test.N if test.has_sizes else np.ones(len(test))
        return model(z, n, test.tokens)

    return predict


def chinchilla(train: LossTable, test: LossTable) -> np.ndarray:
    """Predictor of the Chinchilla form."""
    return chinchilla_fit(train)(test)


def nqm_predictor(family: str, n_starts: int) -> Predictor:
    """Predictor of a family of the size-aware NQM (random starts on the training part)."""
    def pred(train: LossTable, test: LossTable) -> np.ndarray:
        f = fit_table(train, family=family, uncertainty="none", n_starts=n_starts)
        return f.loss(test.N if test.has_sizes else f.n_ref, test.B, test.K)
    return pred


Fold = Callable[[LossTable, LossTable], tuple[np.ndarray, float]]


def nqm_fold(family: str, level: float) -> Fold:
    """Fit with fit_table's own cross-validated band on the training part of a fold."""
    def fold(train: LossTable, test: LossTable) -> tuple[np.ndarray, float]:
        f = fit_table(train, family=family, level=level)
        return f.loss(test.N if test.has_sizes else f.n_ref, test.B, test.K), f.width
    return fold


def plain_fold(predictor: Predictor, level: float) -> Fold:
    """Fit on the training part; band from the predictor's cross-validation inside it."""
    def fold(train: LossTable, test: LossTable) -> tuple[np.ndarray, float]:
        cv = cross_validate(train, predictor)
        pooled = np.concatenate([cv[k]["residuals"] for k in cv])
        return predictor(train, test), conformal_width(pooled, level)
    return fold


def nested(table: LossTable, fold: Fold, kinds: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Outer folds: held-out MSE of log loss and coverage of bands set inside the fold."""
    out = {}
    for kind in kinds:
        widths: dict[int, float] = {}

        def outer(train: LossTable, test: LossTable, widths: dict[int, float] = widths
                  ) -> np.ndarray:
            p, w = fold(train, test)
            widths[int(test.lines[0])] = w
            return p

        res = cross_validate(table, outer, by=(kind,))[kind]
        r = res["residuals"]
        cover = []
        for idx in res["folds"]:
            w = widths.get(int(table.lines[idx[0]]), math.nan)
            cover += list(np.abs(r[idx]) <= w)
        out[kind] = {"mse": res["mse"], "coverage": float(np.mean(cover)), "n": res["n"],
                     "mean_width": float(np.mean(list(widths.values())))}
    return out


def filtered_check(path: str, models: list[str], level: float) -> None:
    """Fit on the unfiltered runs, predict the runs the source left out of its fit."""
    table = read_table(path)
    every = read_table(path, drop_filtered=False)
    held = every.subset(~np.isin(every.lines, table.lines))
    if len(held) == 0:
        return
    print(f"\n## The {len(held)} runs marked filtered, predicted from the {len(table)} others "
          f"(band: the model's own cross-validation on the others)\n")
    print(f"| model | MSE of log loss | {level:.0%} coverage | largest log error |")
    print("|---|---|---|---|")
    for name in models:
        if name == "chinchilla":
            fold = plain_fold(chinchilla, level)
        else:
            fold = nqm_fold(name, level)
        pred, w = fold(table, held)
        r = np.log(held.loss) - np.log(pred)
        print(f"| {name} | {np.mean(r ** 2):.5f} | {np.mean(np.abs(r) <= w):.2f} | "
              f"{np.max(np.abs(r)):.3f} |", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", nargs="?", default=DEFAULT)
    ap.add_argument("--quick", action="store_true",
                    help="held-out MSE only (no nested coverage)")
    ap.add_argument("--level", type=float, default=0.95)
    ap.add_argument("--filtered-only", action="store_true",
                    help="only the check on the runs marked filtered")
    ap.add_argument("--coverage", default="nqm,nqs,chinchilla,perfect",
                    help="models whose band coverage is measured (nested cross-validation)")
    ap.add_argument("--models", default="nqm,nqs,chinchilla,perfect,nqm-aligned,nqm-linear,"
                    "nqm-nofloor")
    args = ap.parse_args(argv)
    table = read_table(args.table)
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.filtered_only:
        filtered_check(args.table, models, args.level)
        return
    print(f"{os.path.basename(args.table)}: {len(table)} runs, "
          f"{len(np.unique(table.N))} model sizes, {len(np.unique(table.budgets))} budgets\n")
    t0, c0 = time.perf_counter(), time.process_time()
    fit = fit_table(table)
    t_fit, c_fit = time.perf_counter() - t0, time.process_time() - c0
    print(f"default fit (fit_table, family nqm, cross-validated bands): {t_fit:.1f} s wall, "
          f"{c_fit:.1f} s CPU of this process; "
          f"band half-width {fit.width:.3f} in log loss; in-sample rms {fit.info['rms']:.4f}\n")
    full = [m.strip() for m in args.coverage.split(",") if m.strip()]
    print(f"| model | LOBO MSE | LOBO {args.level:.0%} coverage | LOSO MSE | "
          f"LOSO {args.level:.0%} coverage | time (s) |")
    print("|---|---|---|---|---|---|")
    for name in models:
        t0 = time.perf_counter()
        pred: Predictor = chinchilla if name == "chinchilla" else nqm_predictor(name, 6)
        if args.quick or name not in full:
            cv = cross_validate(table, pred)
            res = {k: {"mse": cv[k]["mse"], "coverage": math.nan} for k in cv}
        else:
            fold = plain_fold(chinchilla, args.level) if name == "chinchilla" else \
                nqm_fold(name, args.level)
            res = nested(table, fold, ("budget", "size"))
        dt = time.perf_counter() - t0

        def cov(k: str, res: dict[str, dict[str, float]] = res) -> str:
            c = res[k]["coverage"]
            return "-" if not np.isfinite(c) else f"{c:.2f}"

        print(f"| {name} | {res['budget']['mse']:.5f} | {cov('budget')} | "
              f"{res['size']['mse']:.5f} | {cov('size')} | {dt:.0f} |", flush=True)
    filtered_check(args.table, models, args.level)


if __name__ == "__main__":
    main()
