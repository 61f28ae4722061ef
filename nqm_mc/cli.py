"""The ``nqm-mc`` command line."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time

import numpy as np

from nqm_mc.config import MAX_DIM, MAX_RECORDS, MAX_STEPS
from nqm_mc.spec.codes import LAST_LINEAR_KIND

EXIT_BAD_INPUT = 2
SIM_METHODS = ("auto", "step", "skip")  # simulate's samplers (config key run.method)
EXACT_METHODS = ("exact", "bisect", "reference")  # exact's steps to target (run.method)
EXIT_SIGINT, EXIT_SIGTERM = 130, 143  # 128 + signal number, as shells report them


class _Formatter(argparse.RawDescriptionHelpFormatter):
    pass


class _Parser(argparse.ArgumentParser):
    """Usage errors as one line, ``nqm-mc: error: ...``, and exit status 2."""

    def error(self, message):
        where = self.prog.split(" ", 1)[1] + ": " if " " in self.prog else ""
        self.exit(EXIT_BAD_INPUT, f"nqm-mc: error: {where}{_one_line(message)}\n")


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
            raise argparse.ArgumentTypeError(f"must be an int in [{low}, {high}]; got {text}")
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


SPEC_DEFAULTS = {"model": "paper", "dim": 10_000, "bins": 100, "curvature_exponent": 1.0,
                 "noise_exponent": 1.0, "optimizer": "sgd", "learning_rate": 0.1,
                 "momentum": 0.9, "preconditioning": 0.0, "ema": None, "batch_size": 32,
                 "clip_norm": None}
MODEL_FLAGS = ("model", "dim", "bins", "curvature_exponent", "noise_exponent")
# command-line name -> (config section, key)
RUN_FLAGS = {"steps": ("run", "steps"), "runs": ("run", "runs"), "seed": ("run", "seed"),
             "target": ("run", "target"), "dtype": ("run", "dtype"),
             "keep_paths": ("run", "keep_paths"), "threads": ("run", "threads"),
             "scheduler": ("run", "scheduler"), "record": ("run", "record"),
             "n_records": ("run", "n_records"), "block_size": ("run", "block_size"),
             "method": ("run", "method"), "out": ("output", "dir"),
             "json": ("output", "json")}


class Resolved(argparse.Namespace):
    """Command-line values over config-file values over defaults."""


def _json(obj):
    """Strict JSON for --json: NaN and infinities become null (see nqm_mc._files)."""
    from nqm_mc import _files
    return _files.json_dumps(obj)


def _given(args, name):
    v = getattr(args, name, None)
    return v is not None and v is not False


def _resolve(args, run_defaults):
    """Model, optimizer, batch size and run settings: explicit flags override the --config
    file, which overrides the defaults."""
    from nqm_mc import config
    from nqm_mc.spec.model import NQM
    from nqm_mc.spec.optimizers import OPTIMIZERS
    exp = config.load(args.config) if getattr(args, "config", None) else config.Experiment()

    def val(name):
        return getattr(args, name) if _given(args, name) else SPEC_DEFAULTS[name]

    if exp.model is not None and not any(_given(args, k) for k in MODEL_FLAGS):
        model = exp.model
    elif val("model") == "paper":
        model = NQM.paper(val("dim"))
    elif val("model") == "binned":
        if val("dim") * val("bins") > MAX_BINNED_CELLS:
            from nqm_mc.spec._checks import ParameterError
            raise ParameterError(f"--dim times --bins of the binned model must be at most "
                                 f"{MAX_BINNED_CELLS}; got {val('dim')} x {val('bins')}")
        model = NQM.binned(val("dim"), val("bins"))
    else:
        model = NQM.power_law(val("dim"), val("curvature_exponent"), val("noise_exponent"))
    if exp.optimizer is not None and not _given(args, "optimizer"):
        opt = exp.optimizer
        if _given(args, "learning_rate"):
            opt = opt.with_(learning_rate=args.learning_rate)
        if _given(args, "momentum") and opt.has_momentum:
            opt = opt.with_(momentum=args.momentum)
        if _given(args, "preconditioning"):
            opt = opt.with_(preconditioning=args.preconditioning)
        if _given(args, "ema"):
            opt = opt.with_(ema=args.ema)
    else:  # built from the registry: each flag goes to the field of the same name
        cls = OPTIMIZERS[val("optimizer")]
        fields = {f.name for f in dataclasses.fields(cls)}
        if _given(args, "preconditioning") and "preconditioning" not in fields:
            from nqm_mc.spec._checks import ParameterError
            raise ParameterError(f"The '--preconditioning' option does not apply to "
                                 f"{val('optimizer')} (it scales each coordinate itself).")
        opt = cls(**{name: val(name) for name in ("learning_rate", "momentum", "preconditioning",
                                                   "ema", "clip_norm") if name in fields})
    if _given(args, "clip_norm") and opt.clip_norm != args.clip_norm:
        opt = opt.with_(clip_norm=args.clip_norm)
    if _given(args, "batch_size"):
        batch = args.batch_size
    elif exp.batch_size is not None:
        batch = exp.batch_size
    else:
        batch = SPEC_DEFAULTS["batch_size"]
    r = Resolved(model=model, optimizer=opt, batch_size=batch, origin={})
    for name, default in run_defaults.items():
        section, key = RUN_FLAGS.get(name, ("run", name))
        cfg = getattr(exp, section).get(key)
        if _given(args, name):
            value, origin = getattr(args, name), "--" + name.replace("_", "-")
        elif cfg is not None:
            value, origin = cfg, f"{section}.{key} in {args.config}"
        else:
            value, origin = default, f"the default {name}"
        setattr(r, name, value)
        r.origin[name] = origin
    return r


def _refuse(r, name, allowed):
    """One-line error naming where a value came from (flag or file), the value and the rule."""
    from nqm_mc.spec._checks import ParameterError
    v = getattr(r, name)
    shown = repr(v) if len(repr(v)) <= 80 else repr(v)[:76] + " ..."
    raise ParameterError(f"bad value for {r.origin[name]}: got {shown}; allowed: {allowed}")


def _record_steps(r, default_n_records):
    """The steps to record from run.record / run.n_records, refused (one line) when there would
    be more than MAX_RECORDS of them or a listed step is past the last step."""
    from nqm_mc.montecarlo import record_steps
    record, T = r.record, r.steps
    n_records = r.n_records if r.n_records is not None else default_n_records
    if isinstance(record, str) and record == "all":
        count = T + 1
    elif isinstance(record, int) and not isinstance(record, bool):
        count = T // record + 2
    elif isinstance(record, list) and record and max(record) > T:
        _refuse(r, "record", f"steps in [0, {T}] (the last step)")
    else:
        count = 0
    if count > MAX_RECORDS:
        _refuse(r, "record", f"at most {MAX_RECORDS} recorded steps; this records {count}")
    if record == "log":  # log-spaced from 1 (truncated), with 0 and the last step
        steps = np.geomspace(1, max(T, 1), n_records).astype(np.int64)
        return np.unique(np.concatenate([[0], steps[steps <= T], [T]]))
    return record_steps(T, record, n_records)


def _batch_label(batch):
    return str(batch) if isinstance(batch, int) else "schedule"


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
    from nqm_mc.spec.optimizers import OPTIMIZERS
    names = [k for k, cls in OPTIMIZERS.items() if cls.name == k]  # the registry, no aliases
    nonlinear = [k for k in names if OPTIMIZERS[k].kind_code > LAST_LINEAR_KIND]
    o.add_argument("--optimizer", default=None, choices=names,
                   help=f"(sgd); {', '.join(nonlinear)} are Monte Carlo only")
    o.add_argument("--learning-rate", "--lr", type=float, default=None, help="(0.1)")
    o.add_argument("--momentum", type=float, default=None, help="(0.9)")
    o.add_argument("--preconditioning", "-p", type=float, default=None,
                   help="power p of H^p (0)")
    o.add_argument("--ema", type=float, default=None, help="EMA decay of the iterates (off)")
    o.add_argument("--clip-norm", type=float, default=None,
                   help="clip the gradient to this norm (off; Monte Carlo only)")
    o.add_argument("--batch-size", "-B", type=_int_in(1, 2 ** 62), default=None, help="(32)")


def _add_output_args(p, default=None):
    """--out and --force, the same in every subcommand."""
    from nqm_mc._files import add_output_args
    add_output_args(p, default)


SIM_STEPS = 1000  # simulate's last step when no exact default applies (Adam, schedules)
EXACT_STEPS = 10_000  # exact's last step when the target is not reached (or a schedule runs)


def _nice_ceil(x):
    """``x`` rounded up to two significant digits: 288147 -> 290000."""
    x = max(int(np.ceil(x)), 1)
    unit = 10 ** max(len(str(x)) - 2, 0)
    return -(-x // unit) * unit

def _default_steps(args, model, opt, target, fallback, method="exact"):
    """The last step a command runs by default, so that its curve shows what it reports.

    With constant hyperparameters and a linear optimizer: 1.5 x the exact steps to ``target``
    when it is reached, else (no target, or one below the steady state) 1.5 x the steps to
    within 10 % of the steady state, so the curve settles on its noise floor. ``fallback``
    otherwise. Returns the steps and the exact steps to ``target`` (None when not computed);
    records in ``args.origin`` where the number came from.
    """
    from nqm_mc import exact
    if not (opt.is_linear and opt.is_constant and isinstance(args.batch_size, int)):
        return fallback, None
    stt = None
    if target is not None:
        stt = exact.steps_to_target(model, opt, args.batch_size, target, method=method)
        if stt.reached:
            args.origin["steps"] = f"the default steps (1.5 x the steps to {target:g})"
            return _nice_ceil(max(1.5 * stt.steps, 100)), stt
        if stt.status != "unreachable":
            return fallback, stt
    ss = exact.steady_state(model, opt, args.batch_size)
    if not ss.stable:
        return fallback, stt
    near = exact.steps_to_target(model, opt, args.batch_size, 1.1 * ss.loss)
    if not near.reached:
        return fallback, stt
    args.origin["steps"] = "the default steps (1.5 x the steps to within 10 % of the steady state)"
    return _nice_ceil(max(1.5 * near.steps, 100)), stt



def _describe_optimizer(opt):
    """``sgd, lr 0.1`` / ``heavy_ball, lr 0.05, momentum 0.9, p 0.25``: the values that matter."""
    d = opt.to_dict()
    lr = d.pop("learning_rate")
    parts = [f"lr {lr['value']:g}" if lr.get("kind") == "constant" else
             f"lr schedule {lr.get('kind')}"]
    for key, value in d.items():
        if key == "name" or value is None or (key == "preconditioning" and value == 0):
            continue
        parts.append(f"{'p' if key == 'preconditioning' else key} {value:g}"
                     if isinstance(value, float) else f"{key} {value}")
    return f"{d['name']}, " + ", ".join(parts)


def _describe_model(model):
    name = getattr(model, "name", None)
    kind = f"NQM.{name}()" if name in ("paper", "binned", "power_law") else "an NQM"
    return f"{kind}, d = {model.dim}"


def cmd_exact(args):
    from nqm_mc import _files, exact, style
    from nqm_mc._table import table
    force, formats = args.force, args.format
    args = _resolve(args, {"steps": None, "target": 0.01, "record": "log", "n_records": None,
                           "method": "exact", "out": None, "json": False})
    out = _files.prepare_output(args.out, ["exact_curve.csv", "exact_summary.json",
                                           *style.output_names("exact_curve", formats)],
                                "exact", force)
    model, opt = args.model, args.optimizer
    if not opt.is_linear:
        from nqm_mc.spec._checks import ParameterError
        what = opt.name + (" with --clip-norm" if opt.clip_norm is not None else "")
        raise ParameterError(f"nqm-mc exact needs an update linear in the gradient (sgd, "
                             f"heavy_ball or nesterov, without --clip-norm); {what} is nonlinear: "
                             f"run it with nqm-mc simulate --optimizer {opt.name}.")
    if args.method not in EXACT_METHODS:
        _refuse(args, "method", f"one of {', '.join(EXACT_METHODS)} for exact")
    constant = opt.is_constant and isinstance(args.batch_size, int)
    t0 = time.perf_counter()
    stt = None
    if args.steps is None:  # the curve runs past its target: 1.5 x the steps to reach it
        args.steps, stt = _default_steps(args, model, opt, args.target, EXACT_STEPS,
                                         args.method)
    if not constant and args.steps > MAX_SCHEDULE_STEPS:
        _refuse(args, "steps", f"at most {MAX_SCHEDULE_STEPS} with a learning-rate or batch-size "
                "schedule (the exact engine steps through every update; up to 2^62 with "
                "constant hyperparameters)")
    record = _record_steps(args, 60)
    if stt is None:
        stt = exact.steps_to_target(model, opt, args.batch_size, args.target, method=args.method)
    if stt.reached and args.record == "log" and stt.steps <= args.steps:
        record = np.union1d(record, [stt.steps])  # the crossing is one of the recorded steps
    if constant and (args.steps > LOSS_AT_STEPS or (args.steps > JUMP_STEPS and
                                                    record.size <= JUMP_RECORDS)):
        curve = _curve_by_jumps(model, opt, args.batch_size, record)
    else:
        curve = exact.expected_loss(model, opt, args.batch_size, record=record)
    ss = exact.steady_state(model, opt, args.batch_size)
    dt = time.perf_counter() - t0
    summary = {
        "model": model.to_dict(), "optimizer": opt.to_dict(),
        "batch_size": args.batch_size if isinstance(args.batch_size, int) else
        args.batch_size.to_dict(),
        "initial_loss": float(curve.mean[0]), "final_step": int(curve.steps[-1]),
        "final_loss": float(curve.mean[-1]), "final_loss_std": float(curve.std[-1]),
        "steady_state_loss": ss.loss, "stable": ss.stable, "target": args.target,
        "steps_to_target": stt.steps, "status": stt.status, "reason": stt.reason or ss.reason,
        "diverges": not ss.stable, "diverged_by_step": _first_diverged_step(curve),
        "seconds": dt,
    }
    csv_path = _files.write_csv(
        out.path("exact_curve.csv"), ["step", "mean_loss", "std_loss", "mean_loss_theta"],
        zip(curve.steps, curve.mean, curve.std, curve.mean_theta, strict=True),
        overwrite=out.overwrite)
    json_path = _files.write_json(out.path("exact_summary.json"), summary,
                                  overwrite=out.overwrite)
    from nqm_mc import plotting
    png = plotting.plot_exact(curve, out.path("exact_curve.png"), ss, args.target,
                              style.optimizer_text(opt, args.batch_size) + "\n"
                              + style.model_text(model) + ", exact moments", formats,
                              stt.steps if stt.reached else None)
    out.finish()
    if args.json:
        print(_json(summary))
        return 0
    print(f"exact expected loss: {_describe_optimizer(opt)}, B = {_batch_label(args.batch_size)} "
          f"on {_describe_model(model)} ({dt:.1f} s)")
    shown = np.unique(np.linspace(0, len(curve.steps) - 1, 12).astype(int))
    if stt.reached:
        shown = np.union1d(shown, np.flatnonzero(curve.steps == stt.steps))
    rows = [[int(curve.steps[i]), curve.mean[i], curve.std[i],
             "<- steps to target" if stt.reached and curve.steps[i] == stt.steps else ""]
            for i in shown]
    print(table(["step", "E[L]", "sd[L]", ""], rows, [None, ".6g", ".4g", None], indent="  "))
    print(f"steady state E[L] = {ss.loss:.6g}" if ss.stable else f"no steady state: {ss.reason}")
    if stt.reached:
        how = (f"the first step with E[L] < {args.target:g}" if args.method == "exact" else
               f"by --method {args.method}")
        print(f"steps to target {args.target:g}: {stt.steps} ({how})")
    else:
        print(f"steps to target {args.target:g}: not reached, {stt.status} ({stt.reason})")
    print(f"wrote {csv_path}\n      {json_path}\n      {png}")
    return 0


def _first_diverged_step(curve):
    """The first recorded step whose expected loss overflowed (past 1e300), or None."""
    from nqm_mc.spec.codes import DIVERGED
    bad = ~(np.asarray(curve.mean) < DIVERGED)
    return int(curve.steps[int(np.argmax(bad))]) if bad.any() else None


def _curve_by_jumps(model, opt, batch_size, record):
    """The exact curve at the recorded steps by O(log t) jumps (constant hyperparameters), for
    horizons too long to step through."""
    from nqm_mc import exact
    from nqm_mc.spec.codes import DIVERGED
    mean, var, mth = exact.loss_at(model, opt, batch_size, record)
    st = exact.stability(model, opt)
    bad = ~(mean < DIVERGED)
    mean = np.where(bad, np.inf, mean)
    var = np.where(bad | ~np.isfinite(var), np.inf, var)
    mth = np.where(~np.isfinite(mth), np.inf, mth)
    reason = "" if st.stable else st.reason
    if bad.any():
        reason = (reason or "diverges") + \
            f"; the expected loss overflows at step {int(record[np.argmax(bad)])}"
    return exact.ExactCurve(record, mean, var, mth, diverged=bool(bad.any() or not st.stable),
                            reason=reason)


def _exact_curve(model, opt, batch_size, record):
    """The exact curve at the recorded steps of a run: by O(log t) jumps per record for a long
    run with constant hyperparameters, else step by step."""
    from nqm_mc import exact
    record = np.asarray(record)
    if opt.is_constant and isinstance(batch_size, int) and record.size and record[-1] > 100_000:
        return _curve_by_jumps(model, opt, batch_size, record)
    return exact.expected_loss(model, opt, batch_size, record=record)


def cmd_simulate(args):
    from nqm_mc import _files, exact, style
    from nqm_mc.montecarlo import simulate
    quiet, formats = args.quiet, args.format
    raw = args
    args = _resolve(args, {"runs": 100, "steps": None, "seed": 0, "target": None,
                           "keep_paths": 0, "dtype": "float64", "threads": None,
                           "scheduler": None, "record": "log", "n_records": 40,
                           "block_size": 16, "method": "auto", "out": None, "json": False})
    model, opt = args.model, args.optimizer
    if args.method not in SIM_METHODS:
        _refuse(args, "method", f"one of {', '.join(SIM_METHODS)} for simulate")
    if args.steps is None:  # the runs reach their target, or settle on their noise floor
        args.steps = _default_steps(args, model, opt, args.target, SIM_STEPS)[0]
    if args.steps > MAX_SIM_STEPS:
        _refuse(args, "steps", f"an int in [0, {MAX_SIM_STEPS}] for simulate")
    if args.keep_paths > args.runs:
        _refuse(args, "keep_paths", f"at most the number of runs ({args.runs})")
    _record_steps(args, 40)  # refuses a record that is too long or past the last step
    out = _files.prepare_output(args.out, [f"simulation.{e}" for e in ("npz", "json", "csv")]
                                + style.output_names("simulation", formats),
                                "simulate", raw.force)
    from nqm_mc.spec.noise import FiniteData, Gaussian, StudentT
    noise = {"gaussian": lambda: Gaussian(), "student_t": lambda: StudentT(raw.nu),
             "finite_data": lambda: FiniteData(raw.dataset_size, seed=args.seed)}[raw.noise]()
    executor = None
    if args.scheduler:
        from nqm_mc.montecarlo.distributed import DaskExecutor
        executor = DaskExecutor(args.scheduler, threads_per_task=args.threads,
                                connect_timeout=SCHEDULER_TIMEOUT)
    if not quiet and not sys.stderr.isatty():  # a log file: this line, no progress bar
        print(f"simulating {args.runs} runs x {args.steps} steps of {opt.name}; Ctrl-C stops "
              "and keeps what is done", file=sys.stderr, flush=True)
    try:
        res = simulate(model, opt, args.batch_size, args.steps, args.runs, seed=args.seed,
                       record=args.record, n_records=args.n_records,
                       block_size=args.block_size, target=args.target,
                       keep_paths=args.keep_paths, dtype=args.dtype,
                       threads=None if executor else args.threads,
                       progress=False if quiet else None,
                       executor=executor, noise=noise, on_interrupt="return",
                       method=args.method)
    finally:
        if executor is not None:
            executor.close()
    # the exact engine covers the linear optimizers (under every noise law: it needs second
    # moments only); for adaptive rules and clipping the exact and z columns stay empty
    ex = None
    if opt.is_linear and not res.meta["interrupted"]:
        ex = _exact_curve(model, opt, args.batch_size, res.steps)
    ex_mean = ex.mean if ex is not None else np.full(res.steps.size, np.nan)
    path = res.save(out.path("simulation"), overwrite=out.overwrite)
    z_all = [None if ex is None else round(float((m - e) / s), 3) if s > 0 else 0.0
             for m, s, e in zip(res.mean, res.sem, ex_mean, strict=True)]
    csv_path = _files.write_csv(
        out.path("simulation.csv"), ["step", "mc_mean", "mc_sem", "exact_mean", "z"],
        [(t, m, s, None if ex is None else e, z)
         for t, m, s, e, z in zip(res.steps, res.mean, res.sem, ex_mean, z_all, strict=True)],
        overwrite=out.overwrite)
    from nqm_mc import plotting
    png = plotting.plot_mean(res, out.path("simulation.png"), ex, formats)
    out.finish()
    summary = {"result": path, "n_runs": res.n_runs, "seconds": res.meta["seconds"],
               "final_mean": float(res.mean[-1]), "final_sem": float(res.sem[-1]),
               "exact_final_mean": float(ex_mean[-1]), "n_diverged": int(res.n_diverged[-1]),
               "first_divergence_step": int(res.steps[int(np.argmax(res.n_diverged > 0))])
               if res.n_diverged[-1] else None,
               "hitting": res.hitting_summary(), "interrupted": res.meta["interrupted"],
               "runs_completed": res.meta["runs_completed"],
               "runs_started": res.meta["runs_started"], "signal": res.meta["signal"]}
    status = _interrupt_status(res)
    if args.json:
        print(_json(summary))
        return status
    counts = (f"{res.n_runs} runs" if not res.meta["interrupted"] else
              f"{res.meta['runs_completed']} of {res.n_runs} runs finished "
              f"({res.meta['runs_started'] - res.meta['runs_completed']} partial)")
    where = (f"{res.meta['threads']} threads" if res.meta["threads"] else res.meta["executor"])
    print(f"{counts} of {_describe_optimizer(opt)}, B = {_batch_label(args.batch_size)} on "
          f"{_describe_model(model)}: {res.meta['seconds']:.1f} s on {where}"
          + (f", {res.meta['method']} sampler" if res.meta.get("method") else ""))
    from nqm_mc._table import table
    shown = np.unique(np.linspace(0, res.steps.size - 1, 12).astype(int))
    print(table(["step", "MC mean", "± s.e.", "exact E[L]", "z"],
                [[int(res.steps[i]), res.mean[i], res.sem[i],
                  None if ex is None else ex_mean[i], z_all[i]] for i in shown],
                [None, ".6g", ".3g", ".6g", ".2f"], indent="  "))
    if ex is None:
        print(f"  (no exact curve: {opt.name}"
              + (" with clipping" if opt.clip_norm is not None else "")
              + " is not linear in the gradient)")
    h = res.hitting_summary()
    if h is not None:
        if "mean" in h:
            print(f"first step below {args.target:g}: mean {h['mean']:.1f} ± {h['sem']:.1f}, "
                  f"never reached by {100 * h['fraction_never']:.1f} % of runs")
        else:
            print(f"no run reached {args.target:g} within {args.steps} steps")
    if res.n_diverged[-1]:
        first = int(res.steps[int(np.argmax(res.n_diverged > 0))])
        why = exact.stability(model, opt, args.batch_size).reason if opt.is_linear else ""
        print(f"{res.n_diverged[-1]} of {res.n_diverged[-1] + res.n_finite[-1]} runs diverged "
              f"(loss past 1e300 by step {first}; excluded from the statistics)"
              + (f"; {why}" if why else ""))
    print(f"wrote {path} (and its readable copy {os.path.splitext(path)[0]}.json)\n"
          f"      {csv_path}\n      {png}")
    if status:
        print(f"interrupted by {res.meta['signal']}: saved {res.meta['runs_completed']} finished "
              f"and {res.meta['runs_started'] - res.meta['runs_completed']} partial runs of "
              f"{res.n_runs} (each step's statistics over the runs that reached it)",
              file=sys.stderr)
    return status


def _interrupt_status(res):
    """The exit status of a (possibly interrupted) run: 0, 130 (SIGINT) or 143 (SIGTERM)."""
    if not res.meta.get("interrupted"):
        return 0
    return EXIT_SIGTERM if res.meta.get("signal") == "SIGTERM" else EXIT_SIGINT


def cmd_plot(args):
    import csv

    from nqm_mc import _files, plotting, style
    from nqm_mc.results import load_result
    from nqm_mc.spec._checks import ParameterError
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
                plotting.plot_mean(res, path, _exact_for(res), formats=args.format)
            elif kind == "quantiles":
                plotting.plot_quantiles(res, path, formats=args.format)
            elif kind == "paths":
                plotting.plot_paths(res, path, formats=args.format)
            elif kind == "hitting":
                plotting.plot_hitting_times(res, path, formats=args.format)
            written += style.figure_paths(path, args.format)
    print("wrote " + "\n      ".join(written))
    return 0


def _exact_for(res):
    """The exact curve of a saved result's specification (None if it cannot be rebuilt)."""
    from nqm_mc.spec.model import NQM
    from nqm_mc.spec.optimizers import optimizer_from_dict
    try:
        s = res.spec
        return _exact_curve(NQM.from_dict(s["model"]), optimizer_from_dict(s["optimizer"]),
                            s["batch_size"], res.steps)
    except Exception:  # a result from another version: plot without the exact curve
        return None


def cmd_info(args):
    import numba
    import scipy

    import nqm_mc
    info = {
        "nqm_mc": nqm_mc.__version__, "python": sys.version.split()[0],
        "numpy": np.__version__, "numba": numba.__version__, "scipy": scipy.__version__,
        "cpu_count": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_cache_dir": numba.config.CACHE_DIR or "(next to the package's sources)",
        "vector_width": ("512 bit (AVX-512)" if "-prefer-256-bit" in
                         (numba.config.CPU_FEATURES or "") else "numba's default"),
    }
    from nqm_mc import _compile_notice as cn
    cold = [k for k in cn.COMPILE_SECONDS if not cn._cached(k)]
    n = len(cn.COMPILE_SECONDS)
    info["kernels_cached"] = (f"{n - len(cold)} of {n} (the others compile on first use, "
                              f"~{cn.estimate(cold)} s)" if cold else f"all {n}")
    if args.json:
        print(_json(info))
    else:
        for k, v in info.items():
            print(f"{k:>16}: {v}")
    return 0


def cmd_reproduce(args):
    from nqm_mc import _files
    from nqm_mc.studies.reproduce import output_names, run
    out = _files.prepare_output(args.out, output_names(args.format), "reproduce", args.force)
    summary = run(out.dir, quick=args.quick, log=(lambda *a: None) if args.json else print,
                  seed=args.seed, formats=args.format)
    out.finish()
    if args.json:
        print(_json({"out": out.dir, "critical_batch_size": summary}))
    return 0


def cmd_adam_proxy(args):
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


def cmd_noise_study(args):
    from nqm_mc import _files
    from nqm_mc.studies.adam_proxy import noise_study
    from nqm_mc.style import output_names
    out = _files.prepare_output(args.out, [f"noise_study.{e}" for e in ("md", "csv", "json")]
                                + output_names("noise_study", args.format),
                                "noise-study", args.force)
    noise_study(out.dir, n_runs=args.runs, seed=args.seed, quick=args.quick,
                formats=args.format)
    out.finish()
    print(f"wrote {out.path('noise_study')}.png, .md, .csv and .json")
    return 0


SCALING_BATCH_SIZES = ",".join(str(4 ** k) for k in range(1, 11))  # 4 to 2^20: past B_crit
SECOND_NAMES = {"heavy_ball": "momentum", "ema": "EMA decay"}


def cmd_scaling(args):
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


def cmd_validate(args):
    from validation.__main__ import run
    return run(args)


def build_parser():
    parser = _Parser(
        prog="nqm-mc", formatter_class=_Formatter,
        description="Noisy quadratic model: Monte Carlo and exact engines.")
    from nqm_mc import __version__
    parser.add_argument("--version", action="version", version=f"nqm-mc {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("exact", formatter_class=_Formatter,
                       help="exact expected-loss curve, steady state and steps to target",
                       description="Exact E[L(t)] by the moment recurrences.\n\nexample:\n"
                                   "  nqm-mc exact --optimizer heavy_ball --lr 0.05 "
                                   "--momentum 0.9 -B 64 --steps 10000")
    _add_spec_args(p)
    p.add_argument("--steps", type=_int_in(0, MAX_STEPS), default=None,
                   help=f"last step of the curve (default: 1.5 x the steps to --target, "
                        f"rounded up; {EXACT_STEPS} if the target is not reached or with a "
                        f"schedule; 0 to 2^62 with constant hyperparameters, at most "
                        f"{MAX_SCHEDULE_STEPS} with a schedule)")
    _add_target(p, None, 0.01)
    _add_output_args(p)
    _add_json(p)
    p.set_defaults(func=cmd_exact)
    p = sub.add_parser("simulate", formatter_class=_Formatter,
                       help="Monte Carlo trajectories beside the exact curve",
                       description="Simulate noisy trajectories; statistics with standard "
                                   "errors next to the exact expected loss.\n\nexample:\n"
                                   "  nqm-mc simulate --optimizer heavy_ball --lr 0.05 "
                                   "--momentum 0.9 -B 64 --runs 200 --steps 500")
    _add_spec_args(p)
    p.add_argument("--runs", type=_int_in(1, 2 ** 32 - 1), default=None,
                   help="number of trajectories (100)")
    p.add_argument("--steps", type=_int_in(0, MAX_SIM_STEPS), default=None,
                   help="number of updates (default: 1.5 x the exact steps to --target, or "
                        "without a target to within 10 %% of the steady state, rounded up; "
                        f"{SIM_STEPS} for adaptive optimizers and schedules)")
    _add_seed(p)
    _add_target(p, None, "none: no hitting times; with a target --method auto runs the "
                "step kernel, for hitting times at every step", "loss target of hitting times")
    p.add_argument("--keep-paths", type=_int_in(0, 2 ** 32 - 1), default=None,
                   help="keep this many loss paths (0; at most --runs)")
    p.add_argument("--dtype", choices=["float64", "float32"], default=None, help="(float64)")
    p.add_argument("--method", choices=SIM_METHODS, default=None,
                   help="sampler: skip (the exact law at the recorded steps, linear optimizers "
                        "with Gaussian noise), step (every update), auto (default: skip where "
                        "exact and faster; step with --target, for per-step hitting times)")
    from nqm_mc.spec.noise import NOISES
    p.add_argument("--noise", choices=list(NOISES),
                   default="gaussian", help="law of the gradient noise, same covariance")
    p.add_argument("--nu", type=float, default=5.0, help="Student-t degrees of freedom (5)")
    p.add_argument("--dataset-size", type=_int_in(2, 10 ** 7), default=1024,
                   help="finite_data: number of per-example gradients (1024)")
    p.add_argument("--threads", type=_int_in(1, 4096), default=None,
                   help="numba threads (default: all; at most the number available)")
    _add_quiet(p)
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on a Dask cluster (e.g. tcp://host:8786); same results")
    _add_output_args(p)
    _add_json(p)
    p.set_defaults(func=cmd_simulate)
    p = sub.add_parser("reproduce", formatter_class=_Formatter,
                       help="the paper's NQM figures (PNG + CSV) and critical batch sizes",
                       description="Reproduce the paper's NQM scaling figures from the exact "
                                   "engine.\n\nexample:\n  nqm-mc reproduce --quick --out "
                                   "figures")
    p.add_argument("--quick", action="store_true", help="coarse grids, every 4th power of 2")
    _add_seed(p, 0, "key of the Monte Carlo confirmation's streams")
    _add_output_args(p)
    _add_json(p, "the critical batch sizes")
    p.set_defaults(func=cmd_reproduce)
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
    p.set_defaults(func=cmd_adam_proxy)
    p = sub.add_parser("noise-study", formatter_class=_Formatter,
                       help="Gaussian, Student-t and finite-data noise: means, quantiles, "
                            "hitting times",
                       description="One optimizer under gradient-noise laws with the same "
                                   "covariance: the mean loss against the exact engine and "
                                   "the loss quantiles and hitting times against the Gaussian "
                                   "case. Writes noise_study.png, .md, .csv and .json.\n\n"
                                   "example:\n  nqm-mc noise-study --quick --out noise-study")
    p.add_argument("--quick", action="store_true", help="1000 runs, 1500 steps")
    p.add_argument("--runs", type=_int_in(1, 2 ** 32 - 1), default=4000,
                   help="trajectories per law (4000)")
    _add_seed(p, 0)
    _add_output_args(p)
    p.set_defaults(func=cmd_noise_study)
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
    p.set_defaults(func=cmd_scaling)
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
    p.set_defaults(func=cmd_calibrate)
    p = sub.add_parser("validate", formatter_class=_Formatter,
                       help="Monte Carlo against the exact engine, with a report",
                       description="Run the validation suite (python -m validation): every "
                                   "feature's Monte Carlo statistics against the exact "
                                   "recurrences with family-wise error control and a power "
                                   "check each; exit status 1 on any failure.\n\nexample:\n"
                                   "  nqm-mc validate --quick --out validation-report")
    from validation.__main__ import build_parser as _validation_parser
    _validation_parser(p)
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("plot", formatter_class=_Formatter,
                       help="figures of a saved result or a scaling CSV",
                       description="Publication-quality figures: mean with a 95 % band and the "
                                   "exact curve, quantile fans, sample paths, hitting-time "
                                   "histograms; steps against batch size for a scaling CSV."
                                   "\n\nexample:\n  nqm-mc simulate --runs 200 --keep-paths 10 "
                                   "--out results && nqm-mc plot results/simulation.npz")
    p.add_argument("result", help="a saved result (.npz or .json) or a scaling CSV")
    p.add_argument("--kind", choices=["all", "mean", "quantiles", "paths", "hitting"],
                   default="all")
    _add_output_args(p, "the result's own directory")
    p.set_defaults(func=cmd_plot)
    p = sub.add_parser("info", help="versions, threads and the numba cache",
                       description="example:\n  nqm-mc info --json",
                       formatter_class=_Formatter)
    _add_json(p, "the facts")
    p.set_defaults(func=cmd_info)
    return parser


# the Python names in the library's messages, as a command-line user would type them
_PYTHON_TO_CLI = (("Use nqm_mc.simulate", "Run it with nqm-mc simulate"),
                  ("use nqm_mc.simulate", "run it with nqm-mc simulate"))


def _for_the_command_line(message):
    for python, cli in _PYTHON_TO_CLI:
        message = message.replace(python, cli)
    return message


def main(argv=None):
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
    try:
        with sigterm_interrupts():  # SIGTERM stops a run like Ctrl-C and keeps its work
            n_links = len(_files.LATEST_LINKS)
            status = args.func(args)
            for link in _files.LATEST_LINKS[n_links:] if not quiet else []:
                with contextlib.suppress(OSError):  # another run may have moved it since
                    print(f"latest: {link} -> {os.readlink(link)}")
            return status
    except (ParameterError, _files.OutputExistsError) as err:
        print(f"nqm-mc: error: {_for_the_command_line(_one_line(err))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except MemoryError as err:
        print(f"nqm-mc: error: not enough memory ({_one_line(err) or 'MemoryError'}); use a "
              "smaller --dim, --bins, --steps, --runs or --dataset-size", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt as err:
        name = signal_name(err)
        print(f"nqm-mc: interrupted by {name}", file=sys.stderr)
        return EXIT_SIGTERM if name == "SIGTERM" else EXIT_SIGINT
    finally:
        _files.discard_empty_run_dirs()
        from nqm_mc import _compile_notice
        _compile_notice.unwatch()


if __name__ == "__main__":
    sys.exit(main())
