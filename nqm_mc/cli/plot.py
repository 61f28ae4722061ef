"""``nqm-mc plot``: figures of a saved result or a scaling table."""

from __future__ import annotations

import os

from nqm_mc.cli._curves import _exact_curve, _steady_loss
from nqm_mc.cli._options import _add_output_args, _Formatter


def cmd_plot(args):
    """Draw the figures of a saved result, a run directory or a scaling table."""
    import csv

    from nqm_mc import _files, plotting, style
    from nqm_mc.results import load_result
    from nqm_mc.spec._checks import ParameterError
    if os.path.isdir(args.result):  # a run directory, or the -latest link to one
        args.result = _result_in(args.result)
    directory = args.out if args.out is not None else os.path.dirname(args.result) or "."
    stem = os.path.splitext(os.path.basename(args.result))[0]
    written = []
    if args.result.endswith(".csv"):
        if not os.path.isfile(args.result):
            raise ParameterError(f"No scaling table at {args.result}: the file does not exist.")
        out = _files.prepare_output(directory, style.output_names(stem, args.format), "plot",
                                    args.force)
        try:
            written += style.figure_paths(
                plotting.plot_scaling(args.result, out.path(f"{stem}.png"), args.format),
                args.format)
        except (ValueError, KeyError, TypeError, csv.Error, UnicodeDecodeError) as err:
            raise ParameterError(f"{args.result} is not a scaling table with batch_size and "
                                 f"steps columns ({type(err).__name__}).") from None
    else:
        res = load_result(args.result)
        kinds = ["mean", "quantiles", "paths", "hitting"] if args.kind == "all" else [args.kind]
        kinds = [k for k in kinds if (k != "paths" or res.paths is not None)
                 and (k != "hitting" or res.hitting_times is not None)]
        out = _files.prepare_output(directory, [n for k in kinds for n in style.output_names(
            f"{stem}_{k}", args.format)], "plot", args.force)
        for kind in kinds:
            path = out.path(f"{stem}_{kind}.png")
            if kind == "mean":
                plotting.plot_mean(res, path, _exact_for(res), formats=args.format,
                                   steady_state=_steady_for(res))
            elif kind == "quantiles":
                plotting.plot_quantiles(res, path, formats=args.format)
            elif kind == "paths":
                plotting.plot_paths(res, path, formats=args.format)
            elif kind == "hitting":
                plotting.plot_hitting_times(res, path, formats=args.format)
            written += style.figure_paths(path, args.format)
    print("wrote " + "\n      ".join(written))
    return 0


def _result_in(directory):
    """Return the result a run directory holds.

    That is the saved result of ``simulate`` (``simulation.npz``), else the directory's one
    saved result or scaling table.
    """
    from nqm_mc.spec._checks import ParameterError
    names = sorted(os.listdir(directory))
    if "simulation.npz" in names:
        return os.path.join(directory, "simulation.npz")
    for pick in ([n for n in names if n.endswith(".npz")],
                 [n for n in names if n.startswith("scaling_") and n.endswith(".csv")]):
        if len(pick) == 1:
            return os.path.join(directory, pick[0])
        if pick:
            raise ParameterError(f"{directory} holds several results ({', '.join(pick)}): "
                                 "name the one to plot.")
    raise ParameterError(f"No saved result in {directory}: the directory holds no "
                         "simulation.npz (written by nqm-mc simulate) and no scaling table "
                         "(scaling_*.csv, written by nqm-mc scaling).")


def _steady_for(res):
    """Return the exact steady-state loss of a saved result's specification, or None."""
    from nqm_mc.spec.model import NQM
    from nqm_mc.spec.optimizers import optimizer_from_dict
    try:
        s = res.spec
        return _steady_loss(NQM.from_dict(s["model"]), optimizer_from_dict(s["optimizer"]),
                            s["batch_size"])
    except Exception:  # a result from another version: plot without the line
        return None


def _exact_for(res):
    """Return the exact curve of a saved result's specification (None if it cannot be rebuilt)."""
    from nqm_mc.spec.model import NQM
    from nqm_mc.spec.optimizers import optimizer_from_dict
    try:
        s = res.spec
        return _exact_curve(NQM.from_dict(s["model"]), optimizer_from_dict(s["optimizer"]),
                            s["batch_size"], res.steps)
    except Exception:  # a result from another version: plot without the exact curve
        return None


def add_parser(sub):
    """Declare ``nqm-mc plot`` and its options on the subparsers ``sub``."""
    p = sub.add_parser("plot", formatter_class=_Formatter,
                       help="figures of a saved result or a scaling CSV",
                       description="Publication-quality figures: mean with a 95 % band and the "
                                   "exact curve, quantile fans, sample paths, hitting-time "
                                   "histograms; steps against batch size for a scaling CSV."
                                   "\n\nexample:\n  nqm-mc simulate --runs 200 --keep-paths 10 "
                                   "--out results && nqm-mc plot results/simulation.npz")
    p.add_argument("result", help="a saved result (.npz or .json), a scaling CSV, or a run "
                                  "directory holding one (e.g. results/simulate-latest)")
    p.add_argument("--kind", choices=["all", "mean", "quantiles", "paths", "hitting"],
                   default="all")
    _add_output_args(p, "the result's own directory")
    return p
