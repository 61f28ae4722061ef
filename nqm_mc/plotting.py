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
from types import ModuleType
from typing import TYPE_CHECKING, Any, Union

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from nqm_mc.exact.engine import ExactCurve, SteadyState
    from nqm_mc.results import SimulationResult

PathLike = Union[str, "os.PathLike[str]"]


def _plt() -> ModuleType:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3,
                         "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _save(fig: Any, path: PathLike, overwrite: bool = True) -> str:
    from nqm_mc._files import save_figure

    return save_figure(fig, path, overwrite=overwrite, dpi=150)


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


def _steps_axis(steps: ArrayLike) -> np.ndarray:
    """Return steps for a log axis: step 0 is drawn at 0.5 (the axis says so in its label)."""
    return np.where(np.asarray(steps) > 0, steps, 0.5)


def _mark_divergence(ax: Any, steps: np.ndarray, first: float, label: str, top: float) -> None:
    """Shade the steps from ``first`` on and say what diverged there.

    The y-axis is kept on the finite part (the curve leaves every scale).
    """
    ax.axvspan(max(first, 0.5), max(float(np.max(steps)), first + 1), color="0.85", alpha=0.6,
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


def _title(res: SimulationResult) -> str:
    s = res.spec
    opt = s.get("optimizer", {})
    lr = opt.get("learning_rate")
    lr = f"{lr:g}" if isinstance(lr, (int, float)) else (lr or {}).get("kind", "schedule")
    b = s.get("batch_size")
    b = b if isinstance(b, int) else "schedule"
    return f"{opt.get('name', '?')}, lr = {lr}, B = {b}, N = {res.n_runs}"


def plot_mean(res: SimulationResult, path: PathLike, exact: ExactCurve | None = None) -> str:
    """Plot the Monte Carlo mean loss with its 95 % band over the exact curve.

    The 5-95 % quantile band of single runs is drawn behind it; diverged runs are shaded
    from the step they diverged and said so in the legend.

    Parameters
    ----------
    res : SimulationResult
        A Monte Carlo result.
    path : str or path-like
        The image file (format from its suffix), written atomically.
    exact : ExactCurve, optional
        The exact expected loss at the same recorded steps (``expected_loss(...,
        record=res.steps)``).

    Returns
    -------
    str
        ``path``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    t = _steps_axis(res.steps)
    mean, sem = _finite(res.mean), _finite(res.sem)
    ax.fill_between(t, _finite(res.quantiles[0]), _finite(res.quantiles[-1]), color="C0",
                    alpha=0.12, label="5-95 % of runs")
    ax.fill_between(t, _finite(mean - 1.96 * sem), _finite(mean + 1.96 * sem), color="C0",
                    alpha=0.5, label="Monte Carlo mean, 95 % band")
    ax.plot(t, mean, color="C0", lw=1)
    if exact is not None:
        ax.plot(t, _finite(exact.mean), "k--", lw=1.2, label="exact E[L(t)]")
    if res.spec.get("target") is not None:
        ax.axhline(res.spec["target"], color="C3", ls=":", lw=1,
                   label=f"target {res.spec['target']:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    div = _divergence_of_result(res)
    if div is not None:
        _mark_divergence(ax, t, div[0], div[1], _top(res))
    ax.set_xlabel("step t (step 0 drawn at 0.5)")
    ax.set_ylabel("loss")
    ax.set_title(_title(res))
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_quantiles(res: SimulationResult, path: PathLike) -> str:
    """Plot the quantile fan of the loss (5-95 %, 25-75 %, median) with the mean.

    Parameters
    ----------
    res : SimulationResult
        A Monte Carlo result.
    path : str or path-like
        The image file (format from its suffix), written atomically.

    Returns
    -------
    str
        ``path``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    t = _steps_axis(res.steps)
    q, lv = _finite(res.quantiles), res.quantile_levels
    n = len(lv)
    for i in range(n // 2):
        ax.fill_between(t, q[i], q[n - 1 - i], color="C2", alpha=0.18 + 0.18 * i,
                        label=f"{100 * lv[i]:g}-{100 * lv[n - 1 - i]:g} %")
    if n % 2:
        ax.plot(t, q[n // 2], color="C2", lw=1.5, label="median")
    ax.plot(t, _finite(res.mean), "k-", lw=1, label="mean")
    ax.set_xscale("log")
    ax.set_yscale("log")
    div = _divergence_of_result(res)
    if div is not None:
        _mark_divergence(ax, t, div[0], div[1], _top(res))
    ax.set_xlabel("step t (step 0 drawn at 0.5)")
    ax.set_ylabel("loss")
    ax.set_title("loss quantiles: " + _title(res))
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_paths(res: SimulationResult, path: PathLike, max_paths: int = 20) -> str:
    """Plot kept sample paths over the mean.

    Parameters
    ----------
    res : SimulationResult
        A Monte Carlo result with kept paths (``simulate(..., keep_paths=k)``).
    path : str or path-like
        The image file (format from its suffix), written atomically.
    max_paths : int, default 20
        At most this many paths are drawn.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        If the result kept no paths.
    """
    if res.paths is None:
        raise ValueError("this result kept no paths (simulate with keep_paths > 0)")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    t = _steps_axis(res.steps)
    for p in res.paths[:max_paths]:
        ax.plot(t, _finite(p), lw=0.6, alpha=0.6)
    ax.plot(t, _finite(res.mean), "k-", lw=2, label="mean")
    ax.set_xscale("log")
    ax.set_yscale("log")
    div = _divergence_of_result(res)
    if div is not None:
        _mark_divergence(ax, t, div[0], div[1], _top(res))
    ax.set_xlabel("step t (step 0 drawn at 0.5)")
    ax.set_ylabel("loss")
    ax.set_title(f"{min(max_paths, len(res.paths))} sample paths: " + _title(res))
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_hitting_times(res: SimulationResult, path: PathLike) -> str:
    """Plot a histogram of first hitting times, with the fractions that never hit or diverged.

    Parameters
    ----------
    res : SimulationResult
        A Monte Carlo result run with a target.
    path : str or path-like
        The image file (format from its suffix), written atomically.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        If the result has no hitting times.
    """
    if res.hitting_times is None:
        raise ValueError("this result has no hitting times (simulate with a target)")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    h = res.hitting_times
    hit = h[h >= 0]
    if hit.size:
        bins = np.unique(np.geomspace(max(hit.min(), 1), max(hit.max(), 2), 40).astype(int))
        ax.hist(np.maximum(hit, 1), bins=bins, color="C1", alpha=0.8)
        ax.set_xscale("log")
    never = np.mean(h == -1) if h.size else 0.0
    diverged = np.mean(h == -2) if h.size else 0.0
    if not hit.size:
        ax.text(0.5, 0.5, "no run reached the target", transform=ax.transAxes, ha="center")
    ax.set_xlabel("first step with loss < target")
    ax.set_ylabel("runs")
    extra = f", diverged first: {100 * diverged:.1f} %" if diverged else ""
    ax.set_title(f"hitting times (target {res.spec.get('target')}); never: {100 * never:.1f} %"
                 + extra)
    return _save(fig, path)


def plot_exact(curve: ExactCurve, path: PathLike, steady: SteadyState | None = None,
               target: float | None = None, title: str = "") -> str:
    """Plot an exact curve with one run's standard deviation and the steady state.

    A curve that grows past 10^4 times its initial value is shaded from there as diverging.

    Parameters
    ----------
    curve : ExactCurve
        From :func:`nqm_mc.expected_loss`.
    path : str or path-like
        The image file (format from its suffix), written atomically.
    steady : SteadyState, optional
        Drawn as a horizontal line when stable.
    target : float, optional
        Drawn as a horizontal line.
    title : str
        The axes' title.

    Returns
    -------
    str
        ``path``.
    """
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.2), constrained_layout=True)
    t = _steps_axis(curve.steps)
    mean, std = _finite(curve.mean), _finite(curve.std)
    ax.plot(t, mean, lw=2, label="E[L(t)] (exact)")
    ax.fill_between(t, _finite(np.maximum(mean - std, mean * 1e-3)), _finite(mean + std),
                    alpha=0.2, label="± one run's sd")
    if steady is not None and steady.stable:
        ax.axhline(steady.loss, color="k", ls=":", lw=1,
                   label=f"steady state {steady.loss:.3g}")
    if target is not None:
        ax.axhline(target, color="C3", ls="--", lw=1, label=f"target {target:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    bad = ~np.isfinite(mean) | (mean > 1e4 * mean[0]) if mean.size and np.isfinite(mean[0]) \
        else ~np.isfinite(mean)
    if bad.any():
        first = int(np.asarray(curve.steps)[int(np.argmax(bad))])
        _mark_divergence(ax, t, first, f"diverges: E[L] > 1e4 L(0) from step {first}",
                         1e4 * mean[0] if mean.size and np.isfinite(mean[0]) else np.inf)
    ax.set_xlabel("step t (step 0 drawn at 0.5)")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)


def plot_scaling(csv_path: PathLike, path: PathLike) -> str:
    """Plot steps to target (and the lower bound) against batch size, log-log.

    Parameters
    ----------
    csv_path : str or path-like
        A scaling or reproduce CSV with columns batch_size, steps[, lower_bound, family, p,
        target]; one curve per (family, p, target).
    path : str or path-like
        The image file (format from its suffix), written atomically.

    Returns
    -------
    str
        ``path``.

    Raises
    ------
    ValueError
        If the CSV has no batch_size and steps columns.
    """
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not rows or "batch_size" not in rows[0] or "steps" not in rows[0]:
        raise ValueError(f"{csv_path} has no batch_size and steps columns")
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4.5), constrained_layout=True)
    curves: dict[str, list[dict[str, str]]] = {}
    for r in rows:
        key = " ".join(f"{k} {r[k]}" for k in ("family", "p", "target") if k in r)
        curves.setdefault(key, []).append(r)
    for key, rs in curves.items():
        b = np.array([float(r["batch_size"]) for r in rs])
        s = np.array([float(r["steps"]) for r in rs])
        ax.plot(b, s, "o-", ms=3, label=key or "steps")
    if "lower_bound" in rows[0]:
        rs = next(iter(curves.values()))
        ax.plot([float(r["batch_size"]) for r in rs], [float(r["lower_bound"]) for r in rs],
                "k--", lw=1, label="lower bound")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("steps to target")
    ax.legend(frameon=False, fontsize=8)
    return _save(fig, path)
