"""``nqm-mc reproduce``: the paper's NQM figures and critical batch sizes."""

from __future__ import annotations

from nqm_mc.cli._experiment import _json
from nqm_mc.cli._options import _add_json, _add_output_args, _add_seed, _Formatter


def cmd_reproduce(args):
    """Reproduce the paper's NQM figures and critical batch sizes."""
    from nqm_mc import _files
    from nqm_mc.studies.reproduce import output_names, run
    out = _files.prepare_output(args.out, output_names(args.format), "reproduce", args.force)
    summary = run(out.dir, quick=args.quick, log=(lambda *a: None) if args.json else print,
                  seed=args.seed, formats=args.format)
    out.finish()
    if args.json:
        print(_json({"out": out.dir, "critical_batch_size": summary}))
    return 0


def add_parser(sub):
    """Declare ``nqm-mc reproduce`` and its options on the subparsers ``sub``."""
    p = sub.add_parser("reproduce", formatter_class=_Formatter,
                       help="the paper's NQM figures (PNG + CSV) and critical batch sizes",
                       description="Reproduce the paper's NQM scaling figures from the exact "
                                   "engine.\n\nexample:\n  nqm-mc reproduce --quick --out "
                                   "figures")
    p.add_argument("--quick", action="store_true", help="coarse grids, every 4th power of 2")
    _add_seed(p, 0, "key of the Monte Carlo confirmation's streams")
    _add_output_args(p)
    _add_json(p, "the critical batch sizes")
    return p
