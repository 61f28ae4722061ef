"""Command line of the validation suite.

Usage: ``python -m validation [--quick | --full] [--out DIR] [--seed S] [--threads K]
[--case NAME] [--runs-factor K]``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

DEFAULT_SEED = 20191


def _positive_int(text: str) -> int:
    try:
        k = int(text)
    except ValueError:
        k = 0
    if k < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return k


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """Return the command line's parser (or add the options to ``parser``)."""
    p = parser or argparse.ArgumentParser(
        prog="python -m validation",
        description="Check Monte Carlo means, band moments, variances and loss distributions "
                    "against the exact recurrences; write a report; exit 1 on any failure.",
        epilog="example: python -m validation --quick --out validation-report")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="quick", action="store_true", default=True,
                   help="the quick subset (default; well under 2 minutes)")
    g.add_argument("--full", dest="quick", action="store_false",
                   help="every case with more trajectories (about a minute on 2 cores)")
    from nqm_mc._files import add_output_args
    add_output_args(p, command="validate")
    p.add_argument("--seed", type=int, default=None,
                   help="Monte Carlo seed (20191; with --theory the experiment's run.seed)")
    p.add_argument("--threads", type=int, default=None, help="numba threads (default: all)")
    p.add_argument("--case", action="append", default=None,
                   help="only cases whose name contains this (repeatable)")
    p.add_argument("--runs-factor", type=_positive_int, default=1, metavar="K",
                   help="multiply every case's number of trajectories by K (sensitivity to a "
                        "relative error of the mean improves as 1/sqrt(K))")
    p.add_argument("--json", action="store_true",
                   help="print the summary table as JSON instead of progress lines")
    return p


def run(args: argparse.Namespace) -> int:
    """Run the suite for parsed arguments and write the report; return the exit status."""
    from validation.cases import get_cases
    from validation.report import write_report
    from validation.suite import run_suite

    if args.seed is None:
        args.seed = DEFAULT_SEED
    cases = get_cases(quick=args.quick, names=args.case)
    if not cases:
        print(f"error: no case matches --case {args.case}", file=sys.stderr)
        return 2
    from nqm_mc import _files
    from validation.report import output_names
    formats = getattr(args, "format", None)
    out = _files.prepare_output(args.out, output_names([c.name for c in cases], formats),
                                "validate", args.force)
    t0 = time.perf_counter()
    quiet = getattr(args, "json", False)
    runs_factor = getattr(args, "runs_factor", 1)
    results = run_suite(cases, quick=args.quick, seed=args.seed, threads=args.threads,
                        log=None if quiet else print, runs_factor=runs_factor)
    settings = {"mode": "quick" if args.quick else "full", "seed": args.seed,
                "threads": args.threads, "runs_factor": runs_factor,
                "cases": [c.name for c in cases]}
    bad = write_report(results, out.dir, settings, formats)
    out.finish()
    if quiet:
        from nqm_mc._files import json_dumps
        from validation.report import COLUMNS
        print(json_dumps({"settings": settings, "failed": bad,
                          "cases": [{c: r.get(c) for c in COLUMNS} for r in results]}, indent=1))
        return 1 if bad else 0
    weak = [r["case"] for r in results if r.get("power_verdict") == "NOT REJECTED"]
    checked = sum(r.get("power_verdict") != "n/a" for r in results)
    if bad:
        verdict = (f"{bad} of {len(results)} cases FAILED: the Monte Carlo engine disagrees with "
                   "the exact engine there (see the report)")
    else:
        which = "the case" if len(results) == 1 else f"all {len(results)} cases"
        verdict = (f"{which} passed: the Monte Carlo statistics agree with the exact engine")
    verdict += (f"; {checked - len(weak)} of {checked} power checks rejected their wrong "
                "reference" + (f" (not: {', '.join(weak)})" if weak else ""))
    print(f"verdict: {verdict} ({time.perf_counter() - t0:.1f} s)")
    print(f"wrote {out.path('summary.md')}, summary.csv, results.json and plots/CASE.png in "
          f"{out.dir}")
    return 1 if bad else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``python -m validation``; return 0 (all passed), 1 (a failure) or 2 (bad input)."""
    from nqm_mc import _files
    from nqm_mc.spec._checks import ParameterError
    try:
        return run(build_parser().parse_args(argv))
    except (ParameterError, _files.OutputExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    finally:
        _files.discard_empty_run_dirs()


if __name__ == "__main__":
    sys.exit(main())
