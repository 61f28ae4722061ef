"""``nqm-mc simulate``: Monte Carlo trajectories beside the exact curve."""

from __future__ import annotations

import os
import sys

import numpy as np

from nqm_mc.cli._curves import _exact_curve, _steady_loss
from nqm_mc.cli._experiment import (
    SIM_STEPS,
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
    EXIT_SIGINT,
    EXIT_SIGTERM,
    MAX_SIM_STEPS,
    SCHEDULER_TIMEOUT,
    SIM_METHODS,
    _add_json,
    _add_output_args,
    _add_quiet,
    _add_seed,
    _add_spec_args,
    _add_target,
    _Formatter,
    _int_in,
)


def cmd_simulate(args):
    """Simulate trajectories; print and write statistics beside the exact curve."""
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
    noise: Gaussian | StudentT | FiniteData = (
        StudentT(raw.nu) if raw.noise == "student_t" else
        FiniteData(raw.dataset_size, seed=args.seed) if raw.noise == "finite_data" else
        Gaussian())
    executor = None
    if args.scheduler:
        from nqm_mc.montecarlo.distributed import DaskExecutor
        executor = DaskExecutor(args.scheduler, threads_per_task=args.threads,
                                connect_timeout=getattr(raw, "scheduler_timeout",
                                                               SCHEDULER_TIMEOUT))
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
    png = plotting.plot_mean(res, out.path("simulation.png"), ex, formats,
                             steady_state=_steady_loss(model, opt, args.batch_size))
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
    if ex is None and res.meta["interrupted"]:
        print("  (no exact curve: the run was interrupted)")
    elif ex is None:
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
    elif opt.is_linear and opt.is_constant:  # unstable, but no run overflowed yet
        st = exact.stability(model, opt, args.batch_size)
        if not st.stable:
            print(f"no run passed 1e300 within {args.steps} steps, but the configuration "
                  f"{st.reason}")
    print(f"wrote {path} (and its readable copy {os.path.splitext(path)[0]}.json)\n"
          f"      {csv_path}\n      {png}")
    if status:
        print(f"interrupted by {res.meta['signal']}: saved {res.meta['runs_completed']} finished "
              f"and {res.meta['runs_started'] - res.meta['runs_completed']} partial runs of "
              f"{res.n_runs} (each step's statistics over the runs that reached it)",
              file=sys.stderr)
    return status


def _interrupt_status(res):
    """Return the exit status of a (possibly interrupted) run: 0, 130 (SIGINT) or 143 (SIGTERM)."""
    if not res.meta.get("interrupted"):
        return 0
    return EXIT_SIGTERM if res.meta.get("signal") == "SIGTERM" else EXIT_SIGINT


def add_parser(sub):
    """Declare ``nqm-mc simulate`` and its options on the subparsers ``sub``."""
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
    return p
