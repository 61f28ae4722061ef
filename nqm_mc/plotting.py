"""Publication-quality figures of saved results (matplotlib, Agg backend; nothing is shown).

- :func:`plot_mean` -- Monte Carlo mean with its 95 % band, the exact curve and the 5-95 %
  quantile band of single runs;
- :func:`plot_quantiles` -- the quantile fan of the loss;
- :func:`plot_paths` -- kept sample paths over the mean;
- :func:`plot_hitting_times` -- histogram of first hitting times, with the never-hit fraction;
- :func:`plot_exact` -- an exact curve with one run's standard deviation and the steady state;
- :func:`plot_scaling` -- steps to target against batch size (log-log) from a scaling CSV.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc import style

if TYPE_CHECKING:
    from nqm_mc.exact.engine import ExactCurve, SteadyState
    from nqm_mc.results import SimulationResult

PathLike = Union[str, "os.PathLike[str]"]
Formats = Union[str, "Sequence[str]", None]


def _save(fig: Any, path: PathLike, formats: Formats = None) -> str:
    """Write the figure in every format; return the first file written."""
    return style.save(fig, path, formats)[0]


PLOT_CEILING = 1e200  # larger losses are left out of figures (log ticks past ~1e308 overflow)


def _finite(y: ArrayLike) -> np.ndarray:
    """Replace every non-finite or astronomically large value by NaN.

    Such values come from a diverged run or curve; matplotlib leaves a gap at NaN instead of
    failing on them.
    """
    y = np.asarray(y, dtype=float)
    return np.where(np.isfinite(y) & (np.abs(y) < PLOT_CEILING), y, np.nan)


def _top(res: SimulationResult) -> float:
    """Return the y-axis ceiling of a diverging result: 10^4 times its initial mean loss."""
    m0 = float(np.asarray(res.mean, dtype=float)[0]) if np.size(res.mean) else np.nan
    return 1e4 * m0 if np.isfinite(m0) and m0 > 0 else PLOT_CEILING


def _mark_divergence(ax: Any, steps: np.ndarray, first: float, label: str, top: float) -> None:
    """Shade the steps from ``first`` on and say what diverged there.

    The y-axis is kept on the finite part (the curve leaves every scale).
    """
    ax.axvspan(first, max(float(np.max(steps)), first + 1), color=style.DIVERGED, alpha=0.7,
               lw=0, label=label)
    lo, hi = ax.get_ylim()
    if np.isfinite(top) and hi > top:
        ax.set_ylim(lo, top)


def _divergence_of_result(res: SimulationResult) -> tuple[int, str] | None:
    """(first step at which runs diverged, text) of a Monte Carlo result, or None."""
    nd = np.asarray(res.n_diverged)
    if not nd.size or nd[-1] == 0:
        return None
    k = int(np.argmax(nd > 0))
    total = int(nd[-1] + res.n_finite[-1])
    return int(res.steps[k]), (f"{int(nd[-1])} of {total} runs diverged "
                               f"(loss > 1e300 from step {int(res.steps[k])})")



def _title(res: SimulationResult, what: str = "") -> str:
    """Two lines: the optimizer with its hyperparameters and batch size; model, runs, noise."""
    s = res.spec
    noise = (s.get("noise") or {}).get("name", "gaussian")
    second = f"{style.model_text(s.get('model'))}, N = {style.fmt(res.n_runs)} runs" + (
        f", {noise.replace('_', ' ')} noise" if noise != "gaussian" else "")
    return (f"{what}: " if what else "") + style.optimizer_text(
        s.get("optimizer"), s.get("batch_size")) + "\n" + second


def _finish_steps_axes(ax: Any, steps: ArrayLike, div: tuple[int, str] | None,
                       top: float) -> None:
    style.log_y(ax)
    if div is not None:
        _mark_divergence(ax, np.asarray(steps), div[0], div[1], top)


def _z_scores(mean: np.ndarray, sem: np.ndarray, exact: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (mean - exact) / sem
    return np.where(np.isfinite(z) & (sem > 0), z, np.nan)


def plot_mean(res: SimulationResult, path: PathLike, exact: ExactCurve | None = None,
              formats: Formats = None, steady_state: float | None = None) -> str:
    """Plot the Monte Carlo mean loss with 1.96 standard errors over the exact curve.

    The 5-95 % quantile band of single runs is drawn behind it; diverged runs are shaded
    from the step they diverged and said so in the legend. With ``exact``, a residual panel
    below shows z = (MC mean - exact) / s.e. at every recorded step with the Bonferroni
    threshold +-z* (family-wise 5 % over the steps).

    Parameters
    ----------
    res : SimulationResult
        A Monte Carlo result.
    path : str or path-like
        The image file (format from its suffix unless ``formats``), written atomically.
    exact : ExactCurve, optional
        The exact expected loss at the same recorded steps (``expected_loss(...,
        record=res.steps)``).
    formats : str or sequence of str, optional
        Write these formats (png, pdf, svg) instead, ``path`` with its suffix replaced.
    steady_state : float, optional
        The exact steady-state loss, drawn as a horizontal line (constant hyperparameters;
        :func:`nqm_mc.exact.steady_state`).

    Returns
    -------
    str
        The first file written.
    """
    with style.context() as plt:
        if exact is not None:
            fig, ax, rax = style.mc_figure(plt)
        else:
            fig, ax = plt.subplots(figsize=(6, 4.2))
            rax = None
        t = np.asarray(res.steps)
        mean, sem = _finite(res.mean), _finite(res.sem)
        ax.fill_between(t, _finite(res.quantiles[0]), _finite(res.quantiles[-1]),
                        color=style.BAND, alpha=0.25, lw=0, label="5–95 % of single runs")
        if exact is not None:
            ax.plot(t, _finite(exact.mean), color=style.EXACT, lw=1.3, label="exact E[L(t)]",
                    zorder=3)
        every = max(1, t.size // 60)
        ax.errorbar(t[::every], mean[::every], yerr=1.96 * np.nan_to_num(sem[::every]),
                    fmt="o", ms=3.5, color=style.MONTE_CARLO, mfc="white", mew=1, elinewidth=1,
                    capsize=0, zorder=4,
                    label=f"Monte Carlo mean ± 1.96 s.e. (N = {style.fmt(res.n_runs)})")
        style.target_line(ax, res.spec.get("target"))
        style.steady_line(ax, steady_state)
        style.log_steps(ax, t, "" if rax is not None else "step t")
        div = _divergence_of_result(res)
        _finish_steps_axes(ax, t, div, _top(res))
        ax.set_ylabel("loss L(t)")
        style.title(ax, _title(res))
        style.legend(ax)
        if rax is not None and exact is not None:
            z = _z_scores(mean, sem, _finite(exact.mean))
            n = int(np.isfinite(z).sum())
            zs = style.bonferroni_z(n)
            style.residual_panel(rax, t, z, zs, f"5 % family-wise over {n} steps")
            style.log_steps(rax, t)
        return _save(fig, path, formats)


def plot_quantiles(res: SimulationResult, path: PathLike, formats: Formats = None) -> str:
    """Plot the quantile fan of the loss (5-95 %, 25-75 %, median) with the mean.

    Parameters
    ----------
    res : SimulationResult
        A Monte Carlo result.
    path : str or path-like
        The image file (format from its suffix unless ``formats``), written atomically.
    formats : str or sequence of str, optional
        Write these formats (png, pdf, svg) instead.

    Returns
    -------
    str
        The first file written.
    """
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        t = np.asarray(res.steps)
        q, lv = _finite(res.quantiles), res.quantile_levels
        n = len(lv)
        for i in range(n // 2):
            ax.fill_between(t, q[i], q[n - 1 - i], color=style.MONTE_CARLO,
                            alpha=0.15 + 0.2 * i, lw=0,
                            label=f"{100 * lv[i]:g}–{100 * lv[n - 1 - i]:g} % of runs")
        if n % 2:
            ax.plot(t, q[n // 2], color=style.MONTE_CARLO, lw=1.6, label="median")
        ax.plot(t, _finite(res.mean), color=style.EXACT, ls="--", lw=1.2,
                label="mean (Monte Carlo)")
        style.target_line(ax, res.spec.get("target"))
        style.log_steps(ax, t)
        _finish_steps_axes(ax, t, _divergence_of_result(res), _top(res))
        ax.set_ylabel("loss L(t)")
        style.title(ax, _title(res, "loss quantiles"))
        style.legend(ax)
        return _save(fig, path, formats)


def plot_paths(res: SimulationResult, path: PathLike, max_paths: int = 20,
               formats: Formats = None) -> str:
    """Plot kept sample paths (thin grey lines) over the mean.

    Parameters
    ----------
    res : SimulationResult
        A Monte Carlo result with kept paths (``simulate(..., keep_paths=k)``).
    path : str or path-like
        The image file (format from its suffix unless ``formats``), written atomically.
    max_paths : int, default 20
        At most this many paths are drawn.
    formats : str or sequence of str, optional
        Write these formats (png, pdf, svg) instead.

    Returns
    -------
    str
        The first file written.

    Raises
    ------
    ValueError
        If the result kept no paths.
    """
    if res.paths is None:
        raise ValueError("this result kept no paths (simulate with keep_paths > 0)")
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        t = np.asarray(res.steps)
        k = min(max_paths, len(res.paths))
        for i, p in enumerate(res.paths[:max_paths]):
            ax.plot(t, _finite(p), color="0.45", lw=0.6, alpha=0.55,
                    label=f"{k} single runs" if i == 0 else None)
        ax.plot(t, _finite(res.mean), color=style.MONTE_CARLO, lw=2,
                label=f"mean of {style.fmt(res.n_runs)} runs")
        style.target_line(ax, res.spec.get("target"))
        style.log_steps(ax, t)
        _finish_steps_axes(ax, t, _divergence_of_result(res), _top(res))
        ax.set_ylabel("loss L(t)")
        style.title(ax, _title(res, "sample paths"))
        style.legend(ax)
        return _save(fig, path, formats)


def plot_hitting_times(res: SimulationResult, path: PathLike, formats: Formats = None) -> str:
    """Plot a histogram of first hitting times, with their mean and the runs that never hit.

    Parameters
    ----------
    res : SimulationResult
        A Monte Carlo result run with a target.
    path : str or path-like
        The image file (format from its suffix unless ``formats``), written atomically.
    formats : str or sequence of str, optional
        Write these formats (png, pdf, svg) instead.

    Returns
    -------
    str
        The first file written.

    Raises
    ------
    ValueError
        If the result has no hitting times.
    """
    if res.hitting_times is None:
        raise ValueError("this result has no hitting times (simulate with a target)")
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        h = res.hitting_times
        hit = h[h >= 0]
        target = res.spec.get("target")
        if hit.size:
            lo, hi = max(int(hit.min()), 1), max(int(hit.max()), 2)
            wide = hi / lo > 10  # a log axis for hitting times over more than a decade
            if wide:
                bins = np.unique(np.geomspace(lo, hi + 1, 40).astype(int))
            else:
                bins = np.unique(np.linspace(lo, hi + 1, min(40, hi + 2 - lo)).astype(int))
            if bins.size < 2:
                bins = np.array([lo, lo + 1])
            ax.hist(np.maximum(hit, 1), bins=bins, color=style.MONTE_CARLO, alpha=0.8,
                    edgecolor="white", lw=0.4, label=f"{hit.size} of {h.size} runs hit")
            if wide:
                style.log_x(ax)
            m = float(hit.mean())
            se = float(hit.std(ddof=1) / np.sqrt(hit.size)) if hit.size > 1 else 0.0
            ax.axvline(m, color=style.EXACT, lw=1.3, label=f"mean {m:.1f} ± {se:.1f} (s.e.)")
            ax.axvspan(m - 1.96 * se, m + 1.96 * se, color=style.EXACT, alpha=0.12, lw=0,
                       label="mean ± 1.96 s.e.")
        never = np.mean(h == -1) if h.size else 0.0
        diverged = np.mean(h == -2) if h.size else 0.0
        if not hit.size:
            ax.text(0.5, 0.5, f"no run reached the target within {style.fmt(res.steps[-1])} "
                    "steps", transform=ax.transAxes, ha="center")
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_xlabel(f"first step with loss < {style.fmt(target)}")
        ax.set_ylabel("runs")
        extra = f", diverged first: {100 * diverged:.1f} %" if diverged else ""
        style.title(ax, _title(res, f"hitting times of {style.fmt(target)}")
                     + f"; never hit: {100 * never:.1f} %" + extra)
        if hit.size:
            style.legend(ax)
        return _save(fig, path, formats)


def plot_exact(curve: ExactCurve, path: PathLike, steady: SteadyState | None = None,
               target: float | None = None, title: str = "", formats: Formats = None,
               steps_to_target: int | None = None) -> str:
    """Plot an exact curve with one run's standard deviation, the steady state and a target.

    A curve that grows past 10^4 times its initial value is shaded from there as diverging.

    Parameters
    ----------
    curve : ExactCurve
        From :func:`nqm_mc.expected_loss`.
    path : str or path-like
        The image file (format from its suffix unless ``formats``), written atomically.
    steady : SteadyState, optional
        Drawn as a labelled horizontal line when stable.
    target : float, optional
        Drawn as a labelled horizontal line.
    title : str
        The axes' title (e.g. :func:`nqm_mc.style.optimizer_text`).
    formats : str or sequence of str, optional
        Write these formats (png, pdf, svg) instead.
    steps_to_target : int, optional
        The first step below ``target``: marked by a vertical line (said in the legend when it
        lies past the curve's last step).

    Returns
    -------
    str
        The first file written.
    """
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6, 4.2))
        t = np.asarray(curve.steps)
        mean, std = _finite(curve.mean), _finite(curve.std)
        ax.fill_between(t, _finite(np.maximum(mean - std, mean * 1e-3)), _finite(mean + std),
                        color=style.BAND, alpha=0.3, lw=0, label="± one run's s.d.")
        ax.plot(t, mean, color=style.EXACT, lw=1.6, label="E[L(t)] (exact)")
        if steady is not None and steady.stable:
            style.steady_line(ax, steady.loss)
        style.target_line(ax, target)
        if target is not None and steps_to_target is not None:
            if t.size and steps_to_target <= t[-1]:
                ax.axvline(max(steps_to_target, 0), color=style.TARGET, lw=0.9, ls=":",
                           label=f"first below target: step {style.fmt(steps_to_target)}")
            else:
                ax.plot([], [], " ", label=f"target first reached at step "
                        f"{style.fmt(steps_to_target)} (past the last step shown)")
        style.log_steps(ax, t)
        style.log_y(ax)
        bad = ~np.isfinite(mean) | (mean > 1e4 * mean[0]) if mean.size and np.isfinite(mean[0]) \
            else ~np.isfinite(mean)
        if bad.any():
            first = int(t[int(np.argmax(bad))])
            _mark_divergence(ax, t, first, f"diverges: E[L] > 1e4 L(0) from step {first}",
                             1e4 * mean[0] if mean.size and np.isfinite(mean[0]) else np.inf)
        ax.set_ylabel("loss L(t)")
        style.title(ax, title)
        style.legend(ax)
        return _save(fig, path, formats)


def _curve_label(r: dict[str, str]) -> str:
    parts = []
    fam = r.get("family")
    if fam:
        parts.append(style.family_name(fam))
    if r.get("p") not in (None, ""):
        parts.append(f"p = {style.fmt(float(r['p']))}")
    if r.get("target") not in (None, ""):
        parts.append(f"target {style.fmt(float(r['target']))}")
    return ", ".join(parts) or "steps"


def _mark_perfect_scaling(ax: Any, b: np.ndarray, s: np.ndarray) -> None:
    """Draw perfect scaling from the smallest batch size; mark the critical batch size.

    The critical batch size here is the doubling definition: the smallest B whose steps exceed
    twice the perfect-scaling extrapolation.
    """
    ok = np.isfinite(s) & (s > 0)
    if ok.sum() < 2:
        return
    b, s = b[ok], s[ok]
    ideal = s[0] * b[0] / b
    ax.plot(b, ideal, color="0.6", lw=0.9, ls=(0, (1, 2)),
            label=f"perfect scaling S(B₀)·B₀/B, B₀ = {style.fmt(b[0])}")
    over = np.nonzero(s > 2 * ideal)[0]
    if over.size:
        bc = b[over[0]]
        ax.axvline(bc, color="0.3", lw=0.9, ls="-.",
                   label=f"critical B = {style.fmt(bc)} (steps > 2× perfect scaling)")
    else:
        ax.plot([], [], " ", label=f"no critical B up to {style.fmt(b[-1])}")


def plot_scaling(csv_path: PathLike, path: PathLike, formats: Formats = None) -> str:
    """Plot steps to target (and the lower bound) against batch size, log-log.

    Parameters
    ----------
    csv_path : str or path-like
        A scaling or reproduce CSV with columns batch_size, steps[, lower_bound, family, p,
        target]; one curve per (family, p, target), styled by family (SGD dashed, momentum
        solid) and coloured by p.
    path : str or path-like
        The image file (format from its suffix unless ``formats``), written atomically.
    formats : str or sequence of str, optional
        Write these formats (png, pdf, svg) instead.

    Returns
    -------
    str
        The first file written.

    Raises
    ------
    ValueError
        If the CSV has no batch_size and steps columns.
    """
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows or "batch_size" not in rows[0] or "steps" not in rows[0]:
        raise ValueError(f"{csv_path} has no batch_size and steps columns")
    curves: dict[tuple[str, ...], list[dict[str, str]]] = {}
    for r in rows:
        key = tuple(r.get(k, "") for k in ("family", "p", "target"))
        curves.setdefault(key, []).append(r)
    targets = {k[2] for k in curves}
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6, 4.5))
        for i, (key, rs) in enumerate(curves.items()):
            b = np.array([float(r["batch_size"]) for r in rs])
            s = np.array([float(r["steps"]) for r in rs])
            p = float(key[1]) if key[1] not in ("", None) else None
            kw = style.family_style(key[0] or "sgd", p if len(targets) == 1 else None, i)
            ax.plot(b, s, label=_curve_label(rs[0]), **kw)
            if len(curves) == 1:
                _mark_perfect_scaling(ax, b, s)
        if "lower_bound" in rows[0]:
            for tg in sorted(targets):
                rs = next(v for k, v in curves.items() if k[2] == tg)
                style.bound_line(ax, [float(r["batch_size"]) for r in rs],
                                 [float(r["lower_bound"]) for r in rs],
                                 "lower bound d / (2 L B)" + (
                                     f", target {style.fmt(float(tg))}"
                                     if len(targets) > 1 and tg else ""))
        ax.set_xscale("log", base=2)
        style.log_y(ax)
        ax.set_xlabel("batch size B")
        ax.set_ylabel("steps to target")
        first = rows[0]
        what = [style.family_name(first["family"])] if len(curves) == 1 and first.get(
            "family") else []
        if len(targets) == 1 and first.get("target"):
            what.append(f"target {style.fmt(float(first['target']))}")
        style.title(ax, "tuned steps to target against batch size"
                     + (" (" + ", ".join(what) + ")" if what else ""))
        style.legend(ax)
        return _save(fig, path, formats)
