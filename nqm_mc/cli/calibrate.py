"""``nqm-mc calibrate``: fit the NQM to measured loss curves and predict other settings."""

from __future__ import annotations

import sys

import numpy as np

from nqm_mc.cli._experiment import _json
from nqm_mc.cli._options import (
    _add_json,
    _add_output_args,
    _add_quiet,
    _add_seed,
    _add_target,
    _Formatter,
    _int_in,
    _one_line,
)


def cmd_calibrate(args):
    """Fit the power-law NQM to measured runs; table, figure and the fit with provenance."""
    from nqm_mc import _files
    from nqm_mc.calibration import CalibrationError, calibrate, read_runs
    from nqm_mc.calibration import report as rep
    from nqm_mc.spec._checks import ParameterError
    try:
        bs = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise ParameterError("The '--batch-sizes' option takes comma-separated integers. Got "
                             f"{args.batch_sizes!r} instead.") from None
    if args.target is not None and not (np.isfinite(args.target) and args.target > 0):
        raise ParameterError(f"The '--target' option must be a loss > 0. Got {args.target!r} "
                             "instead.")
    from nqm_mc.calibration.table import is_table
    if is_table(args.runs):
        return _calibrate_table(args)
    runs = read_runs(args.runs)
    names = ["calibration.json", "calibration.png", "predictions.csv"]
    out = _files.prepare_output(args.out, names, "calibrate", args.force)
    try:
        fit = calibrate(runs, n_starts=args.n_starts, seed=args.seed or 0,
                        uncertainty=args.uncertainty, resample=args.resample,
                        n_boot=args.n_boot)
    except CalibrationError as err:
        print(f"nqm-mc: error: calibration failed: {_one_line(err)}", file=sys.stderr)
        return 1
    target = args.target if args.target is not None else rep.default_target(fit)
    pred = rep.predictions(fit, target, bs, args.family, p=args.p)
    rows = rep.prediction_rows(pred)
    header = ["batch_size", "steps", "steps_lo", "steps_hi", "learning_rate",
              "learning_rate_lo", "learning_rate_hi", "family", "target"]
    _files.write_csv(out.path("predictions.csv"), header, rows, overwrite=out.overwrite)
    rep.figure(fit, pred, out.path("calibration.png"), overwrite=out.overwrite)
    record = rep.provenance_record(fit, pred, args.runs, sys.argv[1:])
    _files.write_json(out.path("calibration.json"), record, overwrite=out.overwrite)
    out.finish()
    if args.json:
        print(_json({"out": out.dir, "params": fit.params, "stderr": fit.stderr,
                     "identifiability": fit.identifiability(), "warnings": fit.warnings,
                     "predictions": record["predictions"]}))
    else:
        print(rep.format_report(fit, pred))
        if not args.quiet:
            print(f"wrote {out.path('calibration.json')}, calibration.png, predictions.csv")
    return 0


def _calibrate_table(args):
    """``calibrate`` on a final-loss table (nqm_mc.calibration.command)."""
    from nqm_mc import _files
    from nqm_mc.calibration import command
    out = _files.prepare_output(args.out, command.OUTPUTS, "calibrate", args.force)
    res = command.run_table(args.runs, out, family=args.model_family,
                            uncertainty=args.uncertainty, seed=args.seed or 0,
                            keep_filtered=args.keep_filtered, compute=args.compute,
                            max_steps=args.max_steps, max_batch=args.max_batch,
                            predict=args.predict, argv=sys.argv[1:])
    out.finish()
    if args.json:
        print(_json({"out": out.dir, "params": res["fit"].params, "cv": res["record"]["cv"],
                     "plans": res["plans"], "critical_batch_sizes": res["critical"],
                     "warnings": res["fit"].warnings}))
    else:
        print(res["report"])
        if not args.quiet:
            print(f"wrote {out.path('calibration.json')}, predictions.csv")
    return 0


def add_parser(sub):
    """Declare ``nqm-mc calibrate`` and its options on the subparsers ``sub``."""
    p = sub.add_parser("calibrate", formatter_class=_Formatter,
                       help="fit the NQM to measured loss curves and predict other settings",
                       description="Fit a power-law NQM with a loss floor to measured runs "
                                   "(CSV or TOML; see README, 'Calibrating to your own runs'), "
                                   "with bootstrap uncertainty; print the parameters and the "
                                   "tuned steps to target, learning rate and critical batch "
                                   "size with bands; write calibration.json (the fit with "
                                   "provenance), calibration.png and predictions.csv.\n\n"
                                   "A final-loss table (one row per run: N, B, K, loss) is "
                                   "fitted with the size-aware NQM instead: cross-validated "
                                   "bands, critical batch size per model size and "
                                   "compute-optimal plans.\n\n"
                                   "examples:\n  nqm-mc calibrate examples/calibration_runs.csv "
                                   "--target 0.08\n  nqm-mc calibrate runs_table.csv "
                                   "--compute 1e9 --max-batch 1024")
    p.add_argument("runs", metavar="RUNS.csv", help="measured runs (.csv or .toml)")
    _add_target(p, None, "1.2 x the smallest measured loss",
                "loss target on the measured scale (floor included)")
    p.add_argument("--batch-sizes", default="1,4,16,64,256,1024,4096,16384,65536",
                   help="comma-separated batch sizes of the predictions")
    p.add_argument("--family", choices=["sgd", "heavy_ball"], default="sgd",
                   help="optimizer family tuned per batch size (sgd)")
    p.add_argument("--preconditioning", "-p", dest="p", type=float, default=0.0,
                   help="power p of H^p of the tuned family (0)")
    p.add_argument("--uncertainty", choices=["bootstrap", "jacobian", "none"],
                   default="bootstrap", help="bootstrap: refit replicates (default); jacobian: "
                   "Gaussian from the Jacobian, points taken as independent (fast, too "
                   "narrow); none")
    p.add_argument("--resample", choices=["ar1", "wild", "block"], default="ar1",
                   help="replicates of the bootstrap: ar1 (default: an AR(1) model of each "
                   "curve's residuals fitted by REML), wild or block (resampled residuals; "
                   "too narrow)")
    p.add_argument("--n-boot", type=_int_in(2, 100_000), default=50,
                   help="bootstrap replicates (50)")
    p.add_argument("--n-starts", type=_int_in(1, 1000), default=8,
                   help="starts of the fit (8)")
    g = p.add_argument_group("final-loss tables (columns N, B, K, loss; see "
                             "nqm_mc.calibration.table)")
    g.add_argument("--model-family", default="nqm",
                   choices=["nqm", "nqm-aligned", "nqm-linear", "nqm-nofloor", "nqs", "perfect"],
                   help="size-aware family fitted to a table (nqm)")
    g.add_argument("--compute", default=None,
                   help="comma-separated compute budgets to plan for, in the unit of the "
                   "table's C column (default 4x and 64x its largest budget)")
    g.add_argument("--max-steps", type=float, default=None, help="step budget of the plans")
    g.add_argument("--max-batch", type=float, default=None, help="cap on B of the plans")
    g.add_argument("--predict", metavar="ROWS.csv", default=None,
                   help="rows (N, B, K) to predict with bands (default: the table's rows)")
    g.add_argument("--keep-filtered", action="store_true",
                   help="keep rows whose 'filtered' column is true")
    _add_seed(p, 0, "seed of the starts and the bootstrap")
    _add_quiet(p)
    _add_output_args(p)
    _add_json(p, "the parameters and predictions")
    return p
