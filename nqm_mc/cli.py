"""The ``nqm-mc`` command line."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

EXIT_BAD_INPUT = 2


class _Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def _model_from_args(args):
    from nqm_mc.model import NQM
    if args.model == "paper":
        return NQM.paper(args.dim)
    if args.model == "binned":
        return NQM.binned(args.dim, args.bins)
    return NQM.power_law(args.dim, args.curvature_exponent, args.noise_exponent)


def _optimizer_from_args(args):
    from nqm_mc.optimizers import SGD, HeavyBall, Nesterov
    common = dict(preconditioning=args.preconditioning, ema=args.ema)
    if args.optimizer == "sgd":
        return SGD(args.learning_rate, **common)
    cls = HeavyBall if args.optimizer == "heavy_ball" else Nesterov
    return cls(args.learning_rate, args.momentum, **common)


def _add_spec_args(p, lr=0.1):
    g = p.add_argument_group("model")
    g.add_argument("--model", choices=["paper", "binned", "power_law"], default="paper",
                   help="paper: h_i = 1/i, c = h; binned: the reference notebook's 100 bins")
    g.add_argument("--dim", type=int, default=10_000, help="number of directions")
    g.add_argument("--bins", type=int, default=100, help="bins of the binned model")
    g.add_argument("--curvature-exponent", type=float, default=1.0, help="power law: h = i^-a")
    g.add_argument("--noise-exponent", type=float, default=1.0, help="power law: c = i^-b")
    o = p.add_argument_group("optimizer")
    o.add_argument("--optimizer", choices=["sgd", "heavy_ball", "nesterov"], default="sgd")
    o.add_argument("--learning-rate", "--lr", type=float, default=lr)
    o.add_argument("--momentum", type=float, default=0.9)
    o.add_argument("--preconditioning", "-p", type=float, default=0.0, help="power p of H^p")
    o.add_argument("--ema", type=float, default=None, help="EMA decay of the iterates")
    o.add_argument("--batch-size", "-B", type=int, default=32)


def cmd_exact(args):
    from nqm_mc import exact
    model = _model_from_args(args)
    opt = _optimizer_from_args(args)
    record = np.unique(np.concatenate([[0], np.geomspace(1, args.steps, 60).astype(np.int64)]))
    t0 = time.perf_counter()
    curve = exact.expected_loss(model, opt, args.batch_size, record=record)
    ss = exact.steady_state(model, opt, args.batch_size)
    stt = exact.steps_to_target(model, opt, args.batch_size, args.target)
    dt = time.perf_counter() - t0
    summary = {
        "model": model.to_dict(), "optimizer": opt.to_dict(), "batch_size": args.batch_size,
        "initial_loss": float(curve.mean[0]), "final_step": int(curve.steps[-1]),
        "final_loss": float(curve.mean[-1]), "final_loss_std": float(curve.std[-1]),
        "steady_state_loss": ss.loss, "stable": ss.stable, "target": args.target,
        "steps_to_target": stt.steps, "status": stt.status, "reason": stt.reason or ss.reason,
        "seconds": dt,
    }
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "exact_curve.csv"), "w") as f:
        f.write("step,mean_loss,std_loss,mean_loss_theta\n")
        for row in zip(curve.steps, curve.mean, curve.std, curve.mean_theta, strict=True):
            f.write(f"{row[0]},{row[1]:.12g},{row[2]:.12g},{row[3]:.12g}\n")
    with open(os.path.join(args.out, "exact_summary.json"), "w") as f:
        json.dump(summary, f, indent=2, default=float)
    png = os.path.join(args.out, "exact_curve.png")
    _plot_exact(curve, ss, args, png)
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
    else:
        print(f"model {model!r}, optimizer {opt.name}, batch size {args.batch_size}")
        print(f"{'step':>10} {'E[L]':>12} {'sd[L]':>12}")
        for i in np.unique(np.linspace(0, len(curve.steps) - 1, 12).astype(int)):
            print(f"{curve.steps[i]:>10d} {curve.mean[i]:>12.6g} {curve.std[i]:>12.4g}")
        print(f"steady state {ss.loss:.6g}; steps to {args.target:g}: "
              f"{stt.steps if stt.reached else stt.status + ' (' + stt.reason + ')'}")
        print(f"wrote {png} and exact_curve.csv, exact_summary.json in {args.out}")
    return 0


def _plot_exact(curve, ss, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    t = np.maximum(curve.steps, 0.8)
    ax.loglog(t, curve.mean, lw=2, label="E[L(t)] (exact)")
    ax.fill_between(t, np.maximum(curve.mean - curve.std, curve.mean * 1e-3),
                    curve.mean + curve.std, alpha=0.2, label="± one run's sd")
    if ss.stable:
        ax.axhline(ss.loss, color="k", ls=":", lw=1, label="steady state")
    ax.axhline(args.target, color="C3", ls="--", lw=1, label="target")
    ax.set_xlabel("step t")
    ax.set_ylabel("loss")
    ax.set_title(f"{args.optimizer}, lr={args.learning_rate:g}, B={args.batch_size}")
    ax.legend(frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_simulate(args):
    from nqm_mc import exact
    from nqm_mc.montecarlo import simulate
    model = _model_from_args(args)
    opt = _optimizer_from_args(args)
    executor = None
    if args.scheduler:
        from nqm_mc.distributed import DaskExecutor
        executor = DaskExecutor(args.scheduler, threads_per_task=args.threads)
    try:
        res = simulate(model, opt, args.batch_size, args.steps, args.runs, seed=args.seed,
                       record="log", n_records=40, target=args.target,
                       keep_paths=args.keep_paths, dtype=args.dtype,
                       threads=None if executor else args.threads, progress=not args.quiet,
                       executor=executor)
    finally:
        if executor is not None:
            executor.close()
    ex = exact.expected_loss(model, opt, args.batch_size, record=res.steps)
    os.makedirs(args.out, exist_ok=True)
    path = res.save(os.path.join(args.out, "simulation"))
    with open(os.path.join(args.out, "simulation.csv"), "w") as f:
        f.write("step,mc_mean,mc_sem,exact_mean,z\n")
        for t, m, s, e in zip(res.steps, res.mean, res.sem, ex.mean, strict=True):
            f.write(f"{t},{m:.12g},{s:.6g},{e:.12g},{(m - e) / s if s > 0 else 0:.3f}\n")
    png = os.path.join(args.out, "simulation.png")
    _plot_simulation(res, ex, args, png)
    summary = {"result": path, "n_runs": res.n_runs, "seconds": res.meta["seconds"],
               "final_mean": float(res.mean[-1]), "final_sem": float(res.sem[-1]),
               "exact_final_mean": float(ex.mean[-1]), "n_diverged": int(res.n_diverged[-1]),
               "hitting": res.hitting_summary(), "interrupted": res.meta["interrupted"]}
    if args.json:
        print(json.dumps(summary, indent=2, default=float))
        return 0
    print(f"{res.n_runs} runs of {opt.name} on {model!r}, B = {args.batch_size}, "
          f"{res.meta['seconds']:.1f} s on {res.meta['threads']} threads")
    print(f"{'step':>8} {'MC mean':>12} {'± s.e.':>10} {'exact':>12} {'z':>6}")
    for i in np.unique(np.linspace(0, res.steps.size - 1, 12).astype(int)):
        z = (res.mean[i] - ex.mean[i]) / res.sem[i] if res.sem[i] > 0 else 0.0
        print(f"{res.steps[i]:>8d} {res.mean[i]:>12.6g} {res.sem[i]:>10.3g} "
              f"{ex.mean[i]:>12.6g} {z:>6.2f}")
    h = res.hitting_summary()
    if h is not None:
        if "mean" in h:
            print(f"first step below {args.target:g}: mean {h['mean']:.1f} ± {h['sem']:.1f}, "
                  f"never reached by {100 * h['fraction_never']:.1f} % of runs")
        else:
            print(f"no run reached {args.target:g} within {args.steps} steps")
    if res.n_diverged[-1]:
        print(f"{res.n_diverged[-1]} runs diverged (excluded from the statistics)")
    print(f"wrote {path}, simulation.csv and {png}")
    return 0


def _plot_simulation(res, ex, args, path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    t = np.maximum(res.steps, 0.8)
    ax.fill_between(t, res.quantiles[0], res.quantiles[-1], color="C0", alpha=0.15,
                    label="5-95 % of runs")
    ax.fill_between(t, res.mean - 1.96 * res.sem, res.mean + 1.96 * res.sem, color="C0",
                    alpha=0.5, label="MC mean, 95 % band")
    ax.loglog(t, ex.mean, "k--", lw=1, label="exact E[L(t)]")
    ax.set_xlabel("step t")
    ax.set_ylabel("loss")
    ax.set_title(f"{args.optimizer}, lr={args.learning_rate:g}, B={args.batch_size}, "
                 f"N={res.n_runs}")
    ax.legend(frameon=False)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def cmd_info(args):
    import numba
    import scipy

    import nqm_mc
    info = {
        "nqm_mc": nqm_mc.__version__, "python": sys.version.split()[0],
        "numpy": np.__version__, "numba": numba.__version__, "scipy": scipy.__version__,
        "cpu_count": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_cache_dir": numba.config.CACHE_DIR or "(next to the package's sources)",
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            print(f"{k:>16}: {v}")
    return 0


def cmd_reproduce(args):
    from nqm_mc.reproduce import run
    run(args.out, quick=args.quick)
    return 0


def cmd_scaling(args):
    import csv
    import json
    import os

    from nqm_mc.model import NQM
    from nqm_mc.scaling import tune
    model = NQM.binned() if args.model == "binned" else NQM.paper(args.dim)
    from nqm_mc._validate import ParameterError
    try:
        bs = [int(b) for b in args.batch_sizes.split(",")]
    except ValueError:
        raise ParameterError("The '--batch-sizes' option takes comma-separated integers. Got "
                             f"{args.batch_sizes!r} instead.") from None
    res = tune(model, args.family, bs, args.target, preconditioning=args.p, search=args.search)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, f"scaling_{args.family}_p{args.p}.csv")
    rows = res.to_rows()
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    if args.json:
        print(json.dumps(res.to_dict(), indent=1))
    else:
        for r in rows:
            print(f"B = {r['batch_size']:8d}  steps {r['steps']:12.0f}  lr {r['learning_rate']:.4g}"
                  f"  second {r['second']:.4g}  lower bound {r['lower_bound']:.4g}")
        print(f"critical batch size: {res.critical_batch_size()}; table in {path}")
    return 0


def cmd_validate(args):
    from validation.__main__ import run
    return run(args)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="nqm-mc", formatter_class=_Formatter,
        description="Noisy quadratic model: Monte Carlo and exact engines.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("exact", formatter_class=_Formatter,
                       help="exact expected-loss curve, steady state and steps to target",
                       description="Exact E[L(t)] by the moment recurrences.\n\nexample:\n"
                                   "  nqm-mc exact --optimizer heavy_ball --lr 0.05 "
                                   "--momentum 0.9 -B 64 --steps 10000")
    _add_spec_args(p)
    p.add_argument("--steps", type=int, default=10_000, help="last step of the curve")
    p.add_argument("--target", type=float, default=0.01, help="loss target")
    p.add_argument("--out", default="results", help="output directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_exact)
    p = sub.add_parser("simulate", formatter_class=_Formatter,
                       help="Monte Carlo trajectories beside the exact curve",
                       description="Simulate noisy trajectories; statistics with standard "
                                   "errors next to the exact expected loss.\n\nexample:\n"
                                   "  nqm-mc simulate --optimizer heavy_ball --lr 0.05 "
                                   "--momentum 0.9 -B 64 --runs 200 --steps 500")
    _add_spec_args(p)
    p.add_argument("--runs", type=int, default=100, help="number of trajectories")
    p.add_argument("--steps", type=int, default=1000, help="number of updates")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target", type=float, default=2.0, help="loss target for hitting times")
    p.add_argument("--keep-paths", type=int, default=0, help="keep this many loss paths")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    p.add_argument("--threads", type=int, default=None, help="numba threads (default: all)")
    p.add_argument("--quiet", action="store_true", help="no progress line")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on a Dask cluster (e.g. tcp://host:8786); same results")
    p.add_argument("--out", default="results", help="output directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=cmd_simulate)
    p = sub.add_parser("reproduce", formatter_class=_Formatter,
                       help="the paper's NQM figures (PNG + CSV) and critical batch sizes",
                       description="Reproduce the paper's NQM scaling figures from the exact "
                                   "engine.\n\nexample:\n  nqm-mc reproduce --quick --out "
                                   "figures")
    p.add_argument("--quick", action="store_true", help="coarse grids, every 4th power of 2")
    p.add_argument("--out", default="figures", help="output directory")
    p.set_defaults(func=cmd_reproduce)
    p = sub.add_parser("scaling", formatter_class=_Formatter,
                       help="tuned steps to target against batch size for one family",
                       description="Tune an optimizer family per batch size (exact engine).\n\n"
                                   "example:\n  nqm-mc scaling --family heavy_ball "
                                   "--batch-sizes 4,64,1024 --p 0.5")
    p.add_argument("--family", choices=["sgd", "heavy_ball", "ema"], default="sgd")
    p.add_argument("--batch-sizes", default="4,16,64,256,1024,4096,16384")
    p.add_argument("--p", type=float, default=0.0, help="preconditioning power")
    p.add_argument("--target", type=float, default=0.01)
    p.add_argument("--search", choices=["grid", "refine"], default="grid")
    p.add_argument("--model", choices=["binned", "paper"], default="binned")
    p.add_argument("--dim", type=int, default=10_000, help="dimension of --model paper")
    p.add_argument("--out", default="results")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_scaling)
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
    p = sub.add_parser("info", help="versions, threads and the numba cache",
                       description="example:\n  nqm-mc info --json",
                       formatter_class=_Formatter)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv=None):
    from nqm_mc._validate import ParameterError
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except ParameterError as err:
        print(f"nqm-mc: error: {err}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("nqm-mc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
