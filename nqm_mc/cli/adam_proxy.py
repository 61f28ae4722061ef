"""``nqm-mc adam-proxy``: Adam (simulated) against preconditioned SGD (exact)."""

from __future__ import annotations

from nqm_mc.cli._options import _add_output_args, _add_seed, _add_target, _Formatter, _int_in
from nqm_mc.config import MAX_DIM


def cmd_adam_proxy(args):
    """Run the Adam-against-proxy study and write its figure, table and data."""
    from nqm_mc import _files
    from nqm_mc.spec.model import NQM
    from nqm_mc.studies.adam_proxy import adam_proxy_study
    model = NQM.paper(args.dim) if args.dim is not None else None
    from nqm_mc.style import output_names
    out = _files.prepare_output(args.out, [f"adam_proxy.{e}" for e in ("md", "csv", "json")]
                                + output_names("adam_proxy", args.format),
                                "adam-proxy", args.force)
    adam_proxy_study(out.dir, model=model, target=args.target, n_runs=args.runs,
                     seed=args.seed, quick=args.quick, rotate=args.rotate, formats=args.format)
    out.finish()
    print(f"wrote {out.path('adam_proxy')}.png, .md, .csv and .json")
    return 0


def add_parser(sub):
    """Declare ``nqm-mc adam-proxy`` and its options on the subparsers ``sub``."""
    p = sub.add_parser("adam-proxy", formatter_class=_Formatter,
                       help="Adam (simulated) against preconditioned SGD P = H^p (exact)",
                       description="Steps to target against batch size for real Adam, tuned "
                                   "per batch size by simulation, beside the fixed-power "
                                   "proxy at the p that fits best, and where the proxy fails. "
                                   "Writes adam_proxy.png, .md, .csv and .json.\n\nexample:\n"
                                   "  nqm-mc adam-proxy --quick --out adam-proxy")
    p.add_argument("--quick", action="store_true", help="d = 100, 4 batch sizes, 16 runs")
    p.add_argument("--dim", type=_int_in(1, MAX_DIM), default=None,
                   help="directions of the paper's model (300; 100 with --quick)")
    _add_target(p, 0.1)
    p.add_argument("--runs", type=_int_in(1, 2 ** 32 - 1), default=32,
                   help="trajectories per Adam setting (32)")
    p.add_argument("--rotate", choices=["hessian", "noise", "both"], default=None,
                   help="rotate the model (Adam on the dense engine; P = H^p still commutes)")
    _add_seed(p, 0)
    _add_output_args(p)
    return p
