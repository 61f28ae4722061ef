"""``nqm-mc scaling``: tuned steps to target against batch size for one family."""

from __future__ import annotations

import time

from nqm_mc.cli._experiment import _describe_model, _json
from nqm_mc.cli._options import _add_json, _add_output_args, _add_target, _Formatter, _int_in
from nqm_mc.config import MAX_DIM

SCALING_BATCH_SIZES = ",".join(str(4 ** k) for k in range(1, 11))  # 4 to 2^20: past B_crit
SECOND_NAMES = {"heavy_ball": "momentum", "ema": "EMA decay"}


def cmd_scaling(args):
    """Tune a family per batch size; print, plot and write the table."""
    from nqm_mc.spec.model import NQM
    from nqm_mc.studies.scaling import tune
    model = NQM.binned() if args.model == "binned" else NQM.paper(args.dim)
    from nqm_mc.spec._checks import ParameterError
    try:
        bs = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise ParameterError("The '--batch-sizes' option takes comma-separated integers. Got "
                             f"{args.batch_sizes!r} instead.") from None
    from nqm_mc import _files
    name = f"scaling_{args.family}_p{args.p}.csv"
    from nqm_mc import plotting, style
    out = _files.prepare_output(args.out, [name, *style.output_names(name[:-4], args.format)],
                                "scaling", args.force)
    t0 = time.perf_counter()
    res = tune(model, args.family, bs, args.target, preconditioning=args.p, search=args.search)
    dt = time.perf_counter() - t0
    rows = res.to_rows()
    path = _files.write_csv(out.path(name), list(rows[0]), rows, overwrite=out.overwrite)
    figures = style.figure_paths(
        plotting.plot_scaling(path, out.path(name[:-4] + ".png"), args.format), args.format)
    out.finish()
    if args.json:
        print(_json(res.to_dict()))
        return 0
    from nqm_mc._table import table
    print(f"{args.family}, p = {args.p:g}, tuned per batch size ({args.search} search) to reach "
          f"E[L] < {args.target:g} on {_describe_model(model)} ({dt:.1f} s)")
    second = SECOND_NAMES.get(args.family, "second")
    print(table(["batch size", "steps", "learning rate", second, "effective lr",
                 "lower bound"],
                [[r["batch_size"], r["steps"], r["learning_rate"], r["second"],
                  r["effective_learning_rate"] if args.family == "heavy_ball" else None,
                  r["lower_bound"]] for r in rows],
                [None, None, ".4g", ".6g", ".4g", None], indent="  "))
    text = res.critical_batch_size_text()
    c = res.critical_batch_size()
    print(f"critical batch size, first B whose steps exceed twice perfect scaling from "
          f"B = {min(bs)}: {text['doubling']}")
    if c["fit"] is not None:
        print(f"critical batch size, fit S(B) = S_min (1 + B_crit / B): B_crit = {text['fit']}, "
              f"S_min = {c['fit_S_min']:.4g} steps")
    print("wrote " + "\n      ".join([path, *figures]))
    return 0


def add_parser(sub):
    """Declare ``nqm-mc scaling`` and its options on the subparsers ``sub``."""
    p = sub.add_parser("scaling", formatter_class=_Formatter,
                       help="tuned steps to target against batch size for one family",
                       description="Tune an optimizer family per batch size (exact engine).\n\n"
                                   "example:\n  nqm-mc scaling --family heavy_ball "
                                   "--batch-sizes 4,64,1024 --p 0.5")
    p.add_argument("--optimizer", "--family", dest="family", choices=["sgd", "heavy_ball", "ema"],
                   default="sgd",
                   help="sgd (alpha), heavy_ball (alpha, beta), ema (SGD + EMA: alpha, gamma)")
    p.add_argument("--batch-sizes", default=SCALING_BATCH_SIZES,
                   help="comma-separated batch sizes (powers of 4 from 4 to 2^20, wide enough "
                        "to pass the critical batch size)")
    p.add_argument("--preconditioning", "-p", "--p", dest="p", type=float, default=0.0,
                   help="power p of H^p (0)")
    _add_target(p, 0.01)
    p.add_argument("--search", choices=["grid", "refine"], default="grid",
                   help="grid: the reference notebook's grids; refine: then zoom in log space")
    p.add_argument("--model", choices=["binned", "paper"], default="binned")
    p.add_argument("--dim", type=_int_in(1, MAX_DIM), default=10_000,
                   help="dimension of --model paper")
    _add_output_args(p)
    _add_json(p, "the result")
    return p
