"""From flags and an experiment file (TOML) to the experiment a subcommand runs: model,
optimizer, batch size and run settings, each with where its value came from."""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np

from nqm_mc.cli._options import MAX_BINNED_CELLS
from nqm_mc.config import MAX_RECORDS

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
        if stt.reached and stt.steps is not None:
            args.origin["steps"] = f"the default steps (1.5 x the steps to {target:g})"
            return _nice_ceil(max(1.5 * stt.steps, 100)), stt
        if stt.status != "unreachable":
            return fallback, stt
    ss = exact.steady_state(model, opt, args.batch_size)
    if not ss.stable:
        return fallback, stt
    near = exact.steps_to_target(model, opt, args.batch_size, 1.1 * ss.loss)
    if not near.reached or near.steps is None:
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
