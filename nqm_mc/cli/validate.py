"""``nqm-mc validate``: the validation suite, Monte Carlo against the exact engine."""

from __future__ import annotations

from nqm_mc.cli._options import _Formatter


def cmd_validate(args):
    """Run the validation suite; exit status 1 on any failed check."""
    from validation.__main__ import run
    return run(args)


def add_parser(sub):
    """Declare ``nqm-mc validate`` and its options on the subparsers ``sub``."""
    p = sub.add_parser("validate", formatter_class=_Formatter,
                       help="Monte Carlo against the exact engine, with a report",
                       description="Run the validation suite (python -m validation): every "
                                   "feature's Monte Carlo statistics against the exact "
                                   "recurrences with family-wise error control and a power "
                                   "check each; exit status 1 on any failure.\n\nexample:\n"
                                   "  nqm-mc validate --quick --out validation-report")
    from validation.__main__ import build_parser as _validation_parser
    _validation_parser(p)
    return p
