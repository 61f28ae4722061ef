"""The flags shared by the subcommands: one declaration each, the same name and meaning,
and the bounds checked when the command line is parsed."""

from __future__ import annotations

import argparse
from typing import cast

from nqm_mc.config import MAX_DIM
from nqm_mc.spec._checks import MAX_BATCH, _bound
from nqm_mc.spec.codes import LAST_LINEAR_KIND

EXIT_BAD_INPUT = 2
SIM_METHODS = ("auto", "step", "skip")  # simulate's samplers (config key run.method)
EXACT_METHODS = ("exact", "bisect", "reference")  # exact's steps to target (run.method)
EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + signal number, as shells report them


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass



def _one_line(text):
    return " ".join(str(text).split())


def _int_in(low, high):
    """An argparse type: an int in [low, high], refused (one line) before any work."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be an int in [{_bound(low)}, {_bound(high)}]; "
                                             f"got {text}")
        return value
    parse.__name__ = "int"
    return parse


# inclusive bounds of the integer options, checked when the command line is parsed
MAX_SIM_STEPS = 2 ** 32 - 2    # simulate's step counter
MAX_SCHEDULE_STEPS = 10 ** 8   # exact with a schedule steps through every update
LOSS_AT_STEPS = 10 ** 6        # exact with constant hyperparameters: beyond this, O(log t) jumps
JUMP_STEPS, JUMP_RECORDS = 20_000, 1000  # ... and beyond JUMP_STEPS with at most JUMP_RECORDS
MAX_BINNED_CELLS = 10 ** 9     # dim * bins of the binned model (a dim x bins table is built)
SCHEDULER_TIMEOUT = 5          # seconds to reach a Dask scheduler before giving up


# options shared by several subcommands: one declaration each, the same name and meaning
def _add_json(p, what="the summary"):
    p.add_argument("--json", action="store_true", help=f"print {what} as JSON")


def _add_seed(p, default=None, what="key of the random streams"):
    p.add_argument("--seed", type=_int_in(0, 2 ** 64 - 1), default=default,
                   help=f"{what} ({default or 0}; up to 2^64 - 1)")


def _add_target(p, default=None, shown=None, what="loss target"):
    p.add_argument("--target", type=float, default=default,
                   help=f"{what} ({shown if shown is not None else default})")


def _add_quiet(p):
    p.add_argument("--quiet", action="store_true", help="no progress line or notices")


def _add_spec_args(p):
    p.add_argument("--config", "-c", metavar="FILE.toml", default=None,
                   help="experiment file (see examples/); flags given here override it")
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=["paper", "binned", "power_law"], default=None,
                   help="paper (default): h_i = 1/i, c = h; binned: the reference notebook's "
                        "100 bins")
    g.add_argument("--dim", type=_int_in(1, MAX_DIM), default=None,
                   help=f"number of directions (10000; at most {MAX_DIM})")
    g.add_argument("--bins", type=_int_in(2, 10_000), default=None,
                   help="bins of the binned model (100; 2 to 10000)")
    g.add_argument("--curvature-exponent", type=float, default=None,
                   help="power law: h = i^-a (1)")
    g.add_argument("--noise-exponent", type=float, default=None, help="power law: c = i^-b (1)")
    o = p.add_argument_group("optimizer")
    from nqm_mc.spec.optimizers import OPTIMIZERS, Optimizer
    registry = cast("dict[str, type[Optimizer]]", OPTIMIZERS)
    names = [k for k, cls in registry.items() if cls.name == k]  # the registry, no aliases
    nonlinear = [k for k in names if registry[k].kind_code > LAST_LINEAR_KIND]
    o.add_argument("--optimizer", default=None, choices=names,
                   help=f"(sgd); {', '.join(nonlinear)} are Monte Carlo only")
    o.add_argument("--learning-rate", "--lr", type=float, default=None, help="(0.1)")
    o.add_argument("--momentum", type=float, default=None, help="(0.9)")
    o.add_argument("--preconditioning", "-p", type=float, default=None,
                   help="power p of H^p (0)")
    o.add_argument("--ema", type=float, default=None, help="EMA decay of the iterates (off)")
    o.add_argument("--clip-norm", type=float, default=None,
                   help="clip the gradient to this norm (off; Monte Carlo only)")
    o.add_argument("--batch-size", "-B", type=_int_in(1, MAX_BATCH), default=None,
                   help="(32; at most 2^53)")


def _add_output_args(p, default=None):
    """--out and --force, the same in every subcommand."""
    from nqm_mc._files import add_output_args
    add_output_args(p, default)
