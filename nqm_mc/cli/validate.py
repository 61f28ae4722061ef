"""``nqm-mc validate``: the validation suite, or a user's theory, against Monte Carlo."""

from __future__ import annotations

from nqm_mc.cli._options import _Formatter, _int_in


def cmd_validate(args):
    """Run the validation suite, or check ``--theory``; exit status 1 on any failed check."""
    if args.theory:  # a user's theory against Monte Carlo (nqm_mc.theory.command)
        from nqm_mc.theory.command import run as run_theory
        return run_theory(args)
    from validation.__main__ import run
    return run(args)


def add_parser(sub):
    """Declare ``nqm-mc validate`` and its options on the subparsers ``sub``."""
    from nqm_mc.theory.command import EPILOG as THEORY_EPILOG
    from nqm_mc.theory.command import THEORY_HELP
    p = sub.add_parser("validate", formatter_class=_Formatter,
                       help="Monte Carlo against the exact engine, with a report",
                       description="Run the validation suite (python -m validation): every "
                                   "feature's Monte Carlo statistics against the exact "
                                   "recurrences with family-wise error control and a power "
                                   "check each; exit status 1 on any failure.\n\nexample:\n"
                                   "  nqm-mc validate --quick --out validation-report"
                                   "\n\n" + THEORY_EPILOG)
    from validation.__main__ import build_parser as _validation_parser
    _validation_parser(p)
    p.add_argument("--theory", metavar="FILE.py:FUNCTION", default=None, help=THEORY_HELP)
    p.add_argument("--config", "-c", metavar="FILE.toml", default=None,
                   help="with --theory: the experiment to simulate (see examples/)")
    p.add_argument("--runs", type=_int_in(1, 2 ** 32 - 1), default=None,
                   help="with --theory: number of runs (the experiment's run.runs)")
    return p
