"""Coverage of the calibration's uncertainty over repeated seeds (synthetic recovery).

For each seed: Monte Carlo curves of the known NQM (nqm_mc.calibration.synthetic), a fit, and
then, for each parameter, whether the truth lies in the fit's 95 % interval and its z-score
(in the fit's coordinates); for held-out configurations (a larger and a smaller batch size, heavy
ball at a new batch size), whether the true E[L] + floor at three steps and the true steps to a
target lie in the 95 % bands. Prints the coverage table (and writes JSON with --json-out).

    python -m validation.calibration_coverage --seeds 20
    python -m validation.calibration_coverage --seeds 20 --uncertainty jacobian
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from nqm_mc.calibration import COORDS, PARAMS, calibrate
from nqm_mc.calibration.synthetic import HELD_OUT, TRUTH, make_runs, true_loss, truth_model

PRED_STEPS = np.array([30, 300, 3000])
TARGET = 0.08  # measured scale (floor 0.05)


def one_seed(seed: int, uncertainty: str, n_boot: int, resample: str = "ar1") -> dict:
    """Fit one seed's synthetic runs and compare with the truth."""
    from nqm_mc.exact.engine import steps_to_target
    runs = make_runs(seed=seed)
    t0 = time.perf_counter()
    fit = calibrate(runs, seed=seed, uncertainty=uncertainty, n_boot=n_boot,
                    resample=resample)
    secs = time.perf_counter() - t0
    xt = fit.family.to_coords(TRUTH)
    z = (fit.coords - xt) / fit.coord_stderr
    iv = fit.intervals()
    inside = {k: bool(iv[k][0] <= TRUTH[k] <= iv[k][1]) for k in PARAMS}
    pred_in, pred_err = [], []
    model = truth_model()
    for opt, b in HELD_OUT:
        band = fit.predict_loss(opt, b, PRED_STEPS)
        true = true_loss(opt, b, PRED_STEPS)
        pred_in += [bool(lo <= t <= hi) for lo, t, hi in zip(band.lo, true, band.hi,
                                                              strict=True)]
        pred_err += list(np.abs(band.value / true - 1))
        st = fit.steps_to_target(TARGET, opt, [b])
        hit = steps_to_target(model, opt, b, TARGET - TRUTH["floor"]).steps
        ts = np.inf if hit is None else float(hit)
        pred_in.append(bool(st.lo[0] <= ts <= st.hi[0]))
        pred_err.append(abs(st.value[0] / ts - 1) if np.isfinite(ts) else np.nan)
    return {"seed": seed, "seconds": secs, "z": z.tolist(), "inside": inside,
            "pred_inside": pred_in, "pred_rel_err": pred_err, "params": fit.params,
            "stderr": fit.stderr}


def main(argv=None) -> int:
    """Run the coverage study and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--first-seed", type=int, default=0)
    ap.add_argument("--uncertainty", choices=["bootstrap", "jacobian"], default="bootstrap")
    ap.add_argument("--n-boot", type=int, default=50)
    ap.add_argument("--resample", choices=["ar1", "wild", "block"], default="ar1")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args(argv)
    rows = []
    for s in range(args.first_seed, args.first_seed + args.seeds):
        r = one_seed(s, args.uncertainty, args.n_boot, args.resample)
        rows.append(r)
        print(f"seed {s:3d}  fit {r['seconds']:5.1f} s  params in 95% interval "
              f"{sum(r['inside'].values())}/7  predictions in band "
              f"{sum(r['pred_inside'])}/{len(r['pred_inside'])}", flush=True)
    n = len(rows)
    z = np.array([r["z"] for r in rows])
    print(f"\ncoverage over {n} seeds ({args.uncertainty}, {args.resample}, nominal 95%):")
    print(f"{'parameter':>10} {'true':>8} {'mean fit':>10} {'mean s.e.':>10} {'in 95% iv':>10} "
          f"{'|z|<1.96':>9} {'rms z':>7}")
    for j, k in enumerate(PARAMS):
        vals = np.array([r["params"][k] for r in rows])
        ses = np.array([r["stderr"][k] for r in rows])
        cov = np.mean([r["inside"][k] for r in rows])
        zz = z[:, j]
        print(f"{k:>10} {TRUTH[k]:>8.4g} {np.mean(vals):>10.4g} {np.mean(ses):>10.3g} "
              f"{cov:>10.2f} {np.mean(np.abs(zz) < 1.96):>9.2f} "
              f"{np.sqrt(np.nanmean(zz ** 2)):>7.2f}   ({COORDS[j]})")
    labels = []
    for opt, b in HELD_OUT:
        name = f"{opt.name} lr={opt.base_learning_rate:g} B={b}"
        labels += [f"{name} loss@{t}" for t in PRED_STEPS] + [f"{name} steps to {TARGET}"]
    pin = np.array([r["pred_inside"] for r in rows])
    perr = np.array([r["pred_rel_err"] for r in rows], dtype=float)
    print(f"\n{'held-out prediction':>40} {'in band':>8} {'median |rel err|':>17}")
    for j, lab in enumerate(labels):
        col = perr[:, j]
        err = (f"{np.median(col[np.isfinite(col)]):>17.3%}" if np.isfinite(col).any()
               else f"{'(unreachable)':>17}")
        print(f"{lab:>40} {np.mean(pin[:, j]):>8.2f} {err}")
    print(f"\nall predictions: {np.mean(pin):.3f} in band; mean fit time "
          f"{np.mean([r['seconds'] for r in rows]):.1f} s")
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"rows": rows, "labels": labels}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
