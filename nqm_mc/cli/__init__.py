"""The ``nqm-mc`` command line.

One module per subcommand over one shared path from flags and an experiment file to the
experiment a subcommand runs.

``nqm_mc.cli._options`` declares the shared flags, ``nqm_mc.cli._experiment`` resolves flags over
the ``--config`` file over the defaults, and each subcommand module (``exact``, ``simulate``,
``plot``, ...) declares its parser with ``add_parser`` and runs with ``cmd_<name>``.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import os
import re
import sys

from nqm_mc.cli import adam_proxy as _adam_proxy
from nqm_mc.cli import calibrate as _calibrate
from nqm_mc.cli import exact as _exact
from nqm_mc.cli import info as _info
from nqm_mc.cli import noise_study as _noise_study
from nqm_mc.cli import plot as _plot
from nqm_mc.cli import reproduce as _reproduce
from nqm_mc.cli import scaling as _scaling
from nqm_mc.cli import simulate as _simulate
from nqm_mc.cli import validate as _validate

# the names the command line's users and tests reach as nqm_mc.cli.<name>
from nqm_mc.cli._curves import _curve_by_jumps, _exact_curve  # noqa: F401
from nqm_mc.cli._experiment import EXACT_STEPS, SIM_STEPS, _nice_ceil, _resolve  # noqa: F401
from nqm_mc.cli._options import (  # noqa: F401
    EXIT_BAD_INPUT,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    MAX_SCHEDULE_STEPS,
    MAX_SIM_STEPS,
    SCHEDULER_TIMEOUT,
    _Formatter,
    _one_line,
)
from nqm_mc.cli.adam_proxy import cmd_adam_proxy
from nqm_mc.cli.calibrate import cmd_calibrate
from nqm_mc.cli.exact import cmd_exact
from nqm_mc.cli.info import cmd_info
from nqm_mc.cli.noise_study import cmd_noise_study
from nqm_mc.cli.plot import cmd_plot
from nqm_mc.cli.reproduce import cmd_reproduce
from nqm_mc.cli.scaling import SCALING_BATCH_SIZES, cmd_scaling  # noqa: F401
from nqm_mc.cli.simulate import cmd_simulate
from nqm_mc.cli.validate import cmd_validate

__all__ = ["build_parser", "main"]


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, ``nqm-mc: error: ...``, and exit status 2."""

    subcommands: dict[str, argparse.ArgumentParser] = {}  # name -> parser, set by build_parser

    def error(self, message):
        where = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        self.exit(EXIT_BAD_INPUT, f"nqm-mc: error: {where}{_one_line(message)}\n")

    def parse_args(self, args=None, namespace=None):
        """Parse like argparse, with a suggestion for each mistyped option (``--optimzer``)."""
        ns, extras = self.parse_known_args(args, namespace)
        if extras:
            sub = getattr(self, "subcommands", {}).get(getattr(ns, "command", None), self)
            options = sorted(sub._option_string_actions)
            hints = []
            for word in extras:
                if word.startswith("--"):
                    near = difflib.get_close_matches(word.split("=", 1)[0], options, n=1)
                    if near:
                        hints.append(f"{word.split('=', 1)[0]}: did you mean {near[0]}?")
            self.error(f"unrecognized arguments: {' '.join(extras)}"
                       + (f" ({'; '.join(hints)})" if hints else ""))
        return ns


def build_parser():
    """Build the parser of ``nqm-mc`` and its subcommands, in the order ``--help`` lists them.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each subcommand's namespace carries its runner as ``func``.
    """
    parser = _Parser(
        prog="nqm-mc", formatter_class=_Formatter,
        description="Noisy quadratic model: Monte Carlo and exact engines.")
    parser.subcommands = {}
    from nqm_mc._version import __version__
    parser.add_argument("--version", action="version", version=f"nqm-mc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module, run in ((_exact, cmd_exact), (_simulate, cmd_simulate),
                        (_reproduce, cmd_reproduce), (_adam_proxy, cmd_adam_proxy),
                        (_noise_study, cmd_noise_study), (_scaling, cmd_scaling),
                        (_calibrate, cmd_calibrate), (_validate, cmd_validate),
                        (_plot, cmd_plot), (_info, cmd_info)):
        p = module.add_parser(sub)
        p.set_defaults(func=run)
        parser.subcommands[p.prog.split()[-1]] = p
    parser.subcommands["simulate"].set_defaults(scheduler_timeout=SCHEDULER_TIMEOUT)
    return parser


_PYTHON_TO_CLI = (("Use nqm_mc.simulate", "Run it with nqm-mc simulate"),
                  ("use nqm_mc.simulate", "run it with nqm-mc simulate"),
                  # a file that appeared after the command checked its output (another run
                  # writing to the same place): the library's refusal, in the flags' words
                  ("pass overwrite=True to replace it",
                   "pass --force to replace it or choose another --out"))


# the library's parameter names -> the flags that set them
_FLAGS = {"learning_rate": "--lr", "batch_size": "--batch-size", "momentum": "--momentum",
          "preconditioning": "--preconditioning", "ema": "--ema", "clip_norm": "--clip-norm",
          "target": "--target", "dim": "--dim", "bins": "--bins", "steps": "--steps",
          "n_runs": "--runs", "seed": "--seed", "nu": "--nu",
          "curvature_exponent": "--curvature-exponent", "noise_exponent": "--noise-exponent",
          "dataset_size": "--dataset-size", "keep_paths": "--keep-paths"}
_PARAMETER = re.compile(r"The '(\w+)' parameter of (\w+)")


def _for_the_command_line(message, args=None):
    """Say a library message in the command line's words.

    A parameter set by a flag is named by the flag (``'--lr'``), not by its Python name.
    """
    for python, cli in _PYTHON_TO_CLI:
        message = message.replace(python, cli)

    def flag(m):
        name, owner = m.group(1), m.group(2)
        dest = "runs" if name == "n_runs" else name
        if name not in _FLAGS or getattr(args, dest, None) in (None, False):
            return m.group(0)
        return f"The '{_FLAGS[name]}' option" + (f" of {owner}" if owner[0].isupper() else "")
    return _PARAMETER.sub(flag, message)


def main(argv=None):
    """Run ``nqm-mc`` with the arguments ``argv`` (default: ``sys.argv[1:]``).

    Parameters
    ----------
    argv : list of str, optional
        The command line after the program name.

    Returns
    -------
    int
        The exit status: 0, 1 (a failed check or calibration), 2 (bad input), 130 or 143
        (interrupted by SIGINT or SIGTERM).
    """
    from nqm_mc import _files
    from nqm_mc.montecarlo._interrupt import signal_name, sigterm_interrupts
    from nqm_mc.spec._checks import ParameterError
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error already printed as one line
        return stop.code
    if not getattr(args, "quiet", False) and not getattr(args, "json", False):
        from nqm_mc import _compile_notice
        _compile_notice.watch(args.command)  # "compiling kernels (first run only, ~N s)"
    quiet = getattr(args, "quiet", False) or getattr(args, "json", False)
    n_written = len(_files.WRITTEN)
    try:
        with sigterm_interrupts():  # SIGTERM stops a run like Ctrl-C and keeps its work
            n_links = len(_files.LATEST_LINKS)
            status = args.func(args)
            for link in _files.LATEST_LINKS[n_links:] if not quiet else []:
                with contextlib.suppress(OSError):  # another run may have moved it since
                    print(f"latest: {link} -> {os.readlink(link)}")
            return status
    except (ParameterError, _files.OutputExistsError) as err:
        print(f"nqm-mc: error: {_for_the_command_line(_one_line(err), args)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError as err:
        print(f"nqm-mc: error: not enough memory ({_one_line(err) or 'MemoryError'}); use a "
              "smaller --dim, --bins, --steps, --runs or --dataset-size", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as err:
        name = signal_name(err)
        kept = _files.WRITTEN[n_written:]  # complete files only: a file is written atomically
        print(f"nqm-mc: interrupted by {name}; "
              + (f"kept what it had written: {', '.join(kept)}" if kept
                 else "no file was written"), file=sys.stderr)
        return EXIT_SIGTERM if name == "SIGTERM" else EXIT_SIGINT
    finally:
        _files.discard_empty_run_dirs()
        from nqm_mc import _compile_notice
        _compile_notice.unwatch()


if __name__ == "__main__":
    sys.exit(main())

