"""``nqm-mc reproduce``: the paper's NQM figures from the exact engine.

One figure (PNG by default; PDF and SVG on request) and one CSV per figure, plus the critical
batch sizes of every curve. README.md maps each file to its figure of the paper.

References
----------
.. [1] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes? Insights From a
   Noisy Quadratic Model", NeurIPS 2019, arXiv:1907.04164.
"""

from __future__ import annotations

import os
import time
import types
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from nqm_mc import _files, style
from nqm_mc.exact import loss_at
from nqm_mc.results import provenance
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import SGD
from nqm_mc.studies.scaling import tune

POWERS = (0.0, 0.25, 0.5, 0.75)
#: the figures :func:`run` draws, each also written as a CSV of the same name
FIGURES = ("loss_curves", "steps_vs_batch_targets", "optimal_lr_vs_batch", "momentum_vs_sgd",
           "effective_lr", "ema_vs_sgd", "schedules_vs_constant", "schedule_shapes")
TABLES = ("mc_confirmation.csv", "critical_batch_sizes.json", "critical_batch_sizes.csv")


def output_names(formats: str | Sequence[str] | None = None) -> tuple[str, ...]:
    """Return every file :func:`run` may write, with its figures in ``formats`` (PNG)."""
    return tuple(n for f in FIGURES for n in (f"{f}.csv", *style.output_names(f, formats))) \
        + TABLES


#: every file :func:`run` may write into its output directory (figures as PNG)
OUTPUT_NAMES = output_names()


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


MODEL_TEXT = "binned NQM (d = 10,000 in 100 bins, C = H)"


def _power_legend(ax: Any, families: Sequence[str], powers: Sequence[float],
                  extra: Sequence[Any] = (), loc: str = "best") -> None:
    """One legend: colour = preconditioning power, line style = optimizer family."""
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=style.power_color(p), lw=2, label=f"p = {p:g}")
               for p in powers]
    for fam in families:
        kw = style.family_style(fam, 0.0)
        kw.update(color="0.25", mfc="white" if fam == "sgd" else "0.25")
        handles.append(Line2D([], [], label=f"{style.family_name(fam)} "
                              f"({'dashed' if kw['ls'] == '--' else 'solid'})", **kw))
    handles += list(extra)
    style.legend(ax, handles=handles, loc=loc, ncol=2)


def _tuned_plot(path: str, curves: Sequence[tuple[str, float, Any]], title: str,
                formats: Any, key: str = "steps", ylabel: str = "steps to target",
                lower: Any = None) -> None:
    """Tuned quantities against batch size: one curve per (family, p), styled by both."""
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6.2, 4.6))
        for fam, p, r in curves:
            ax.plot(r.batch_sizes, getattr(r, key), **style.family_style(fam, p))
        extra = []
        if lower is not None:
            (h,) = ax.plot(lower.batch_sizes, lower.lower_bound, color=style.BOUND, ls=":",
                           lw=1.5, label="lower bound d / (2 L B)")
            extra.append(h)
        ax.set_xscale("log", base=2)
        style.log_y(ax)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(ylabel)
        style.title(ax, title)
        fams = list(dict.fromkeys(f for f, _, _ in curves))
        powers = list(dict.fromkeys(p for _, p, _ in curves))
        _power_legend(ax, fams, powers, extra)
        style.save(fig, path, formats)


def run(outdir: str, quick: bool = False, log: Callable[[str], Any] = print,
        seed: int = 0, formats: str | Sequence[str] | None = None) -> dict[str, Any]:
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
    formats : str or sequence of str, optional
        Figure formats among png, pdf and svg (default PNG).

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

    def fig_path(name):
        return os.path.join(outdir, name + ".png")

    grid = f"α tuned per B on a {gs[0]}-point grid"
    # 1. loss curves for several learning rates (SGD, B = 64)
    log("loss curves")
    steps = np.unique(np.concatenate([[0], np.geomspace(1, 1e6, 200).astype(np.int64)]))
    rows, curves = [], []
    for lr in (0.01, 0.1, 0.5, 1.0, 1.9):  # constant hyperparameters: O(log t) jumps
        mean = loss_at(model, SGD(lr), 64, steps)[0]
        curves.append((lr, types.SimpleNamespace(steps=steps, mean=mean)))
        rows += [{"learning_rate": lr, "step": int(t), "expected_loss": m}
                 for t, m in zip(steps, mean, strict=True)]
    _write_csv(os.path.join(outdir, "loss_curves.csv"), rows)
    from nqm_mc.exact.engine import steady_state
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6.2, 4.6))
        for i, (lr, c) in enumerate(curves):
            col = style.CYCLE[i]
            ss = steady_state(model, SGD(lr), 64)
            ax.plot(c.steps, c.mean, color=col, lw=1.6,
                    label=f"α = {lr:g} (steady state {style.fmt(ss.loss)})")
        style.target_line(ax, target)
        style.log_steps(ax, steps)
        style.log_y(ax)
        ax.set_ylabel("E[L(t)] (exact)")
        style.title(ax, f"SGD, B = 64, p = 0: expected loss for five learning rates\n{MODEL_TEXT}")
        style.legend(ax, loc="lower left")
        style.save(fig, fig_path("loss_curves"), formats)
    # 2. steps vs batch size for several targets
    log("steps vs batch size, several targets")
    per_target = [(t, study("sgd", 0.0, t)) for t in cfg["targets"]]
    _write_csv(os.path.join(outdir, "steps_vs_batch_targets.csv"),
               [row for _, r in per_target for row in r.to_rows()])
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6.2, 4.6))
        for i, (tg, r) in enumerate(per_target):
            col = style.CYCLE[i]
            ax.plot(r.batch_sizes, r.steps, **dict(style.family_style("sgd", index=i),
                                                   ls="-", mfc=col),
                    label=f"target {tg:g}")
            ax.plot(r.batch_sizes, r.lower_bound, color=col, ls=":", lw=1.3,
                    label=f"lower bound, target {tg:g}")
        ax.set_xscale("log", base=2)
        style.log_y(ax)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("steps to target")
        style.title(ax, f"SGD, p = 0: tougher targets raise the critical batch size\n"
                    f"{MODEL_TEXT}; {grid}")
        style.legend(ax, ncol=2)
        style.save(fig, fig_path("steps_vs_batch_targets"), formats)
    # 3-5. SGD and momentum for every p: optimal lr, steps with the lower bound, effective lr
    log("SGD and momentum with preconditioning")
    sgd = [("sgd", p, study("sgd", p)) for p in POWERS]
    hb = [("heavy_ball", p, study("heavy_ball", p)) for p in POWERS]
    _write_csv(os.path.join(outdir, "optimal_lr_vs_batch.csv"),
               [row for _, _, r in sgd for row in r.to_rows()])
    _tuned_plot(fig_path("optimal_lr_vs_batch"), sgd,
                f"SGD: optimal learning rate against batch size, target {target:g}\n"
                f"{MODEL_TEXT}", formats, key="learning_rate",
                ylabel="optimal learning rate α")
    _write_csv(os.path.join(outdir, "momentum_vs_sgd.csv"),
               [row for _, _, r in sgd + hb for row in r.to_rows()])
    _tuned_plot(fig_path("momentum_vs_sgd"), sgd + hb,
                f"Momentum against SGD with preconditioning P = H^p, target {target:g}\n"
                f"{MODEL_TEXT}", formats, lower=sgd[0][2])
    _write_csv(os.path.join(outdir, "effective_lr.csv"),
               [row for _, _, r in sgd + hb for row in r.to_rows()])
    _tuned_plot(fig_path("effective_lr"), sgd + hb,
                f"Effective learning rate α / (1 − β) of the tuned runs, target {target:g}\n"
                f"{MODEL_TEXT}", formats, key="effective_learning_rate",
                ylabel="effective learning rate α / (1 − β)")
    # 6. EMA vs SGD, every p
    log("EMA vs SGD")
    ema = [("ema", p, study("ema", p)) for p in POWERS]
    _write_csv(os.path.join(outdir, "ema_vs_sgd.csv"),
               [row for _, _, r in ema + sgd for row in r.to_rows()])
    _tuned_plot(fig_path("ema_vs_sgd"), sgd + ema,
                f"Exponential moving average of the iterates against SGD, target {target:g}\n"
                f"{MODEL_TEXT}", formats, lower=sgd[0][2])
    # 7. optimal piecewise-constant schedules against the best constant learning rate
    log("optimal schedules")
    from nqm_mc.studies.schedule_opt import optimal_schedule
    n_pieces = cfg["schedule_pieces"]
    base = sgd[0][2]
    rows, sched_steps = [], []
    for i, b in enumerate(B):
        o = optimal_schedule(model, b, target, n_pieces)
        sched_steps.append(o.steps if o.steps is not None else np.inf)
        rows.append({"batch_size": b, "constant_lr_steps": base.steps[i],
                     "schedule_steps": o.steps, "lower_bound": base.lower_bound[i],
                     "learning_rates": " ".join(f"{a:.5g}" for a in o.learning_rates)})
    _write_csv(os.path.join(outdir, "schedules_vs_constant.csv"), rows)
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6.2, 4.6))
        ax.plot(B, base.steps, label="best constant learning rate",
                **style.family_style("sgd", 0.0))
        ax.plot(B, sched_steps, label=f"optimal {n_pieces}-piece schedule",
                **style.family_style("schedule", index=1))
        style.bound_line(ax, B, base.lower_bound, "lower bound d / (2 L B)")
        ax.set_xscale("log", base=2)
        style.log_y(ax)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("steps to target")
        style.title(ax, f"SGD, p = 0, target {target:g}: optimised schedules against the best "
                     f"constant α\n{MODEL_TEXT}")
        style.legend(ax)
        style.save(fig, fig_path("schedules_vs_constant"), formats)
    # 8. the shape of optimal 50-piece schedules
    log("schedule shapes")
    rows = []
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6.2, 4.6))
        for i, b in enumerate(cfg["shape_batch_sizes"]):
            o = optimal_schedule(model, b, target, 50)
            frac = (np.arange(50) + 0.5) / 50
            ax.plot(frac, o.learning_rates, color=style.CYCLE[i], marker="o", ms=2.5,
                    label=f"B = {b} ({style.fmt(o.steps)} steps)")
            rows += [{"batch_size": b, "piece": k, "learning_rate": a, "steps": o.steps}
                     for k, a in enumerate(o.learning_rates)]
        _write_csv(os.path.join(outdir, "schedule_shapes.csv"), rows)
        ax.axhline(o.cap, color=style.BOUND, ls=":", lw=1.5,
                   label=f"stability cap 2 / (h_max + h_min) = {style.fmt(o.cap)}")
        style.log_y(ax)
        ax.set_xlabel("fraction of training")
        ax.set_ylabel("learning rate α")
        style.title(ax, f"Optimal 50-piece learning-rate schedules, SGD, p = 0, target {target:g}"
                     f"\n{MODEL_TEXT}")
        style.legend(ax)
        style.save(fig, fig_path("schedule_shapes"), formats)
    # Monte Carlo confirmation of tuned points
    log("Monte Carlo confirmation")
    from nqm_mc.studies.scaling import monte_carlo_confirmation
    rows = []
    for _, _, r in hb + ema:  # every tuned point of the momentum and EMA figures
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
