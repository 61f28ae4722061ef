"""``nqm-mc reproduce``: the paper's NQM figures from the exact engine.

One PNG and one CSV per figure, plus the critical batch sizes of every curve.

References
----------
.. [1] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes? Insights From a
   Noisy Quadratic Model", NeurIPS 2019, arXiv:1907.04164.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from nqm_mc import _files
from nqm_mc.exact.engine import expected_loss
from nqm_mc.results import provenance
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import SGD
from nqm_mc.studies.scaling import tune

POWERS = (0.0, 0.25, 0.5, 0.75)
#: every file :func:`run` may write into its output directory
OUTPUT_NAMES = tuple(f"{n}.{e}" for n in (
    "loss_curves", "steps_vs_batch_targets", "optimal_lr_vs_batch", "momentum_vs_sgd",
    "effective_lr", "ema_vs_sgd", "schedules_vs_constant", "schedule_shapes")
    for e in ("csv", "png")) + ("mc_confirmation.csv", "critical_batch_sizes.json",
                                "critical_batch_sizes.csv")


def settings(quick: bool) -> dict[str, Any]:
    """Return the study's settings.

    Parameters
    ----------
    quick : bool
        Fewer batch sizes, coarser grids, two targets and fewer Monte Carlo runs.

    Returns
    -------
    dict
        batch_sizes, grid_size, targets, target, search, schedule_pieces, shape_batch_sizes
        and mc_runs.
    """
    if quick:
        return {"batch_sizes": [2 ** k for k in range(2, 21, 4)], "grid_size": [30, 8],
                "targets": [0.1, 0.01], "target": 0.01, "search": "grid",
                "schedule_pieces": 10, "shape_batch_sizes": [4, 1024], "mc_runs": 64}
    return {"batch_sizes": [2 ** k for k in range(2, 21, 2)], "grid_size": [100, 20],
            "targets": [0.1, 0.01, 0.001], "target": 0.01, "search": "grid",
            "schedule_pieces": 10, "shape_batch_sizes": [4, 256, 16384], "mc_runs": 200}


def _write_csv(path, rows):
    _files.write_csv(path, list(rows[0]), rows)


def _fig():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _steps_plot(path, curves, title, ylabel="steps to target", key="steps", lower=None):
    plt = _fig()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for label, r in curves:
        y = getattr(r, key) if key != "effective_learning_rate" else r.effective_learning_rate
        ax.loglog(r.batch_sizes, y, "o-", ms=3, label=label)
    if lower is not None:
        ax.loglog(lower.batch_sizes, lower.lower_bound, "k--", lw=1, label="lower bound")
    ax.set_xlabel("batch size")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _files.save_figure(fig, path, dpi=120)


def run(outdir: str, quick: bool = False, log: Callable[[str], Any] = print,
        seed: int = 0) -> dict[str, Any]:
    """Reproduce the paper's NQM figures into ``outdir``.

    Writes the files of ``OUTPUT_NAMES``: loss curves for several learning rates; steps to
    target against batch size for several targets; SGD and heavy-ball momentum, tuned for
    every preconditioning power, with the lower bound and the effective learning rate;
    EMA against SGD; optimal piecewise-constant schedules against the best constant
    learning rate and their shapes; a Monte Carlo confirmation of tuned points; and the
    critical batch size of every curve (CSV and JSON with provenance).

    Parameters
    ----------
    outdir : str
        Output directory (created if missing).
    quick : bool, default False
        The settings of ``settings(quick=True)``.
    log : callable, default print
        Receives progress lines.
    seed : int, default 0
        Seed of the Monte Carlo confirmation.

    Returns
    -------
    dict
        The critical batch sizes per curve (and the Monte Carlo confirmation rows).

    References
    ----------
    .. [1] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes? Insights
       From a Noisy Quadratic Model", NeurIPS 2019, arXiv:1907.04164.
    """
    os.makedirs(outdir, exist_ok=True)
    cfg = settings(quick)
    model = NQM.binned()
    B, gs, target = cfg["batch_sizes"], tuple(cfg["grid_size"]), cfg["target"]
    t_start = time.perf_counter()
    summary: dict[str, Any] = {}
    critical: list[list[Any]] = []  # the terminal table of critical batch sizes

    def study(family, p=0.0, tgt=target):
        t0 = time.perf_counter()
        r = tune(model, family, B, tgt, preconditioning=p, grid_size=gs, search=cfg["search"])
        text = r.critical_batch_size_text()
        log(f"  {family:10s} p = {p:4.2f} target {tgt:g}: {time.perf_counter() - t0:5.1f} s, "
            f"critical batch size {text['doubling']}")
        if f"{family} p={p} target={tgt}" not in summary:
            critical.append([family, p, tgt, text["doubling"], text["fit"]])
        summary[f"{family} p={p} target={tgt}"] = r.critical_batch_size()
        return r

    # 1. loss curves for several learning rates (SGD, B = 64)
    log("loss curves")
    steps = np.unique(np.geomspace(1, 1e6, 200).astype(np.int64))
    rows, curves = [], []
    for lr in (0.01, 0.1, 0.5, 1.0, 1.9):
        c = expected_loss(model, SGD(lr), 64, record=steps)
        curves.append((lr, c))
        rows += [{"learning_rate": lr, "step": int(t), "expected_loss": m}
                 for t, m in zip(c.steps, c.mean, strict=True)]
    _write_csv(os.path.join(outdir, "loss_curves.csv"), rows)
    plt = _fig()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for lr, c in curves:
        ax.loglog(c.steps, c.mean, label=f"alpha = {lr}")
    ax.set_xlabel("step")
    ax.set_ylabel("E[L(t)]")
    ax.set_title("SGD, B = 64: expected loss for several learning rates")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _files.save_figure(fig, os.path.join(outdir, "loss_curves.png"), dpi=120)
    # 2. steps vs batch size for several targets
    log("steps vs batch size, several targets")
    per_target = [(f"target {t:g}", study("sgd", 0.0, t)) for t in cfg["targets"]]
    _write_csv(os.path.join(outdir, "steps_vs_batch_targets.csv"),
               [row for _, r in per_target for row in r.to_rows()])
    _steps_plot(os.path.join(outdir, "steps_vs_batch_targets.png"), per_target,
                "SGD: tougher targets move the critical batch size up")
    # 3-5. SGD and momentum for every p: optimal lr, steps with the lower bound, effective lr
    log("SGD and momentum with preconditioning")
    sgd = [(f"SGD p = {p}", study("sgd", p)) for p in POWERS]
    hb = [(f"momentum p = {p}", study("heavy_ball", p)) for p in POWERS]
    _write_csv(os.path.join(outdir, "optimal_lr_vs_batch.csv"),
               [row for _, r in sgd for row in r.to_rows()])
    _steps_plot(os.path.join(outdir, "optimal_lr_vs_batch.png"), sgd,
                "SGD: optimal learning rate against batch size", "optimal learning rate",
                key="learning_rate")
    _write_csv(os.path.join(outdir, "momentum_vs_sgd.csv"),
               [row for _, r in sgd + hb for row in r.to_rows()])
    _steps_plot(os.path.join(outdir, "momentum_vs_sgd.png"), sgd + hb,
                "Momentum vs SGD with preconditioning", lower=sgd[0][1])
    _write_csv(os.path.join(outdir, "effective_lr.csv"),
               [row for _, r in sgd + hb for row in r.to_rows()])
    _steps_plot(os.path.join(outdir, "effective_lr.png"), sgd + hb,
                "Effective learning rate alpha / (1 - beta)", "effective learning rate",
                key="effective_learning_rate")
    # 6. EMA vs SGD
    log("EMA vs SGD")
    ema = [(f"EMA p = {p}", study("ema", p)) for p in POWERS]
    _write_csv(os.path.join(outdir, "ema_vs_sgd.csv"),
               [row for _, r in ema + [sgd[0], sgd[2]] for row in r.to_rows()])
    _steps_plot(os.path.join(outdir, "ema_vs_sgd.png"), [sgd[0], sgd[2]] + ema,
                "Exponential moving average vs SGD", lower=sgd[0][1])
    # 7. optimal piecewise-constant schedules against the best constant learning rate
    log("optimal schedules")
    from nqm_mc.studies.schedule_opt import optimal_schedule
    n_pieces = cfg["schedule_pieces"]
    rows, sched_steps = [], []
    for i, b in enumerate(B):
        o = optimal_schedule(model, b, target, n_pieces)
        sched_steps.append(o.steps if o.steps is not None else np.inf)
        rows.append({"batch_size": b, "constant_lr_steps": sgd[0][1].steps[i],
                     "schedule_steps": o.steps, "lower_bound": sgd[0][1].lower_bound[i],
                     "learning_rates": " ".join(f"{a:.5g}" for a in o.learning_rates)})
    _write_csv(os.path.join(outdir, "schedules_vs_constant.csv"), rows)
    plt = _fig()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.loglog(B, sgd[0][1].steps, "o-", ms=3, label="best constant learning rate")
    ax.loglog(B, sched_steps, "s-", ms=3, label=f"optimal {n_pieces}-piece schedule")
    ax.loglog(B, sgd[0][1].lower_bound, "k--", lw=1, label="lower bound")
    ax.set_xlabel("batch size")
    ax.set_ylabel("steps to target")
    ax.set_title("SGD: optimised schedules close the gap at small B")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _files.save_figure(fig, os.path.join(outdir, "schedules_vs_constant.png"), dpi=120)
    # 8. the shape of optimal 50-piece schedules
    log("schedule shapes")
    rows = []
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for b in cfg["shape_batch_sizes"]:
        o = optimal_schedule(model, b, target, 50)
        frac = (np.arange(50) + 0.5) / 50
        ax.semilogy(frac, o.learning_rates, label=f"B = {b} ({o.steps} steps)")
        rows += [{"batch_size": b, "piece": k, "learning_rate": a, "steps": o.steps}
                 for k, a in enumerate(o.learning_rates)]
    _write_csv(os.path.join(outdir, "schedule_shapes.csv"), rows)
    ax.axhline(o.cap, color="k", ls=":", lw=1, label="stability cap")
    ax.set_xlabel("fraction of training")
    ax.set_ylabel("learning rate")
    ax.set_title("Optimal 50-piece schedules")
    ax.legend(fontsize=8)
    fig.tight_layout()
    _files.save_figure(fig, os.path.join(outdir, "schedule_shapes.png"), dpi=120)
    # Monte Carlo confirmation of tuned points
    log("Monte Carlo confirmation")
    from nqm_mc.studies.scaling import monte_carlo_confirmation
    rows = []
    for _, r in hb + ema:  # every tuned point of the momentum and EMA figures
        rows += monte_carlo_confirmation(model, r, n_runs=cfg["mc_runs"], seed=seed)
    n_in = sum(bool(row["exact_in_interval"]) for row in rows)
    log(f"  {n_in} of {len(rows)} tuned points: the exact crossing lies in the Monte Carlo "
        "interval")
    if rows:
        _write_csv(os.path.join(outdir, "mc_confirmation.csv"), rows)
        summary["monte_carlo_confirmation"] = rows
    # critical batch sizes
    _files.write_json(os.path.join(outdir, "critical_batch_sizes.json"),
                      {"settings": cfg, "provenance": provenance(),
                       "critical_batch_size": summary,
                       "definitions": {"doubling": "smallest B with steps > 2 x S(B0) B0 / B",
                                       "fit": "B_crit of S(B) = S_min (1 + B_crit / B)"}},
                      indent=1)
    rows = [{"curve": k, "doubling": v["doubling"], "fit": v["fit"], "fit_S_min": v["fit_S_min"],
             "fit_extrapolated": v["fit_extrapolated"]}
            for k, v in summary.items() if k != "monte_carlo_confirmation"]
    _write_csv(os.path.join(outdir, "critical_batch_sizes.csv"), rows)
    from nqm_mc._table import table
    log(f"critical batch sizes (binned model, batch sizes {min(B)} to {max(B)}): the first B "
        "whose steps exceed twice perfect scaling, and B_crit of the fit S(B) = S_min (1 + "
        "B_crit / B)")
    log(table(["optimizer", "p", "target", "doubling", "fit B_crit"], critical, indent="  "))
    written = sorted(n for n in os.listdir(outdir) if n in OUTPUT_NAMES)
    log(f"done in {time.perf_counter() - t_start:.1f} s; wrote {len(written)} files (one PNG and "
        f"one CSV per figure, critical_batch_sizes.csv/.json) in {outdir}/")
    return summary
