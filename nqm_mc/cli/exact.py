"""``nqm-mc exact``: the exact expected-loss curve, steady state and steps to target."""

from __future__ import annotations

import time

import numpy as np

from nqm_mc.cli._curves import _curve_by_jumps, _first_diverged_step
from nqm_mc.cli._experiment import (
    EXACT_STEPS,
    _batch_label,
    _default_steps,
    _describe_model,
    _describe_optimizer,
    _json,
    _record_steps,
    _refuse,
    _resolve,
)
from nqm_mc.cli._options import (
    EXACT_METHODS,
    JUMP_RECORDS,
    JUMP_STEPS,
    LOSS_AT_STEPS,
    MAX_SCHEDULE_STEPS,
    _add_json,
    _add_output_args,
    _add_spec_args,
    _add_target,
    _Formatter,
    _int_in,
)
from nqm_mc.config import MAX_STEPS


def cmd_exact(args):
    """Compute the exact curve, steady state and steps to target; print and write them."""
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


def add_parser(sub):
    """Declare ``nqm-mc exact`` and its options on the subparsers ``sub``."""
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
    return p
