"""Studies beyond the paper, by simulation.

Real Adam against the fixed-power proxy, and how non-Gaussian gradient noise changes the
distribution of the loss and of hitting times.

Both write a figure (PNG), a table (Markdown and CSV) and every number (JSON, with
provenance) into a directory; ``nqm-mc adam-proxy`` and ``nqm-mc noise-study`` run them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc import _files, style
from nqm_mc.exact.engine import expected_loss
from nqm_mc.montecarlo.driver import simulate
from nqm_mc.results import provenance
from nqm_mc.spec._checks import ParameterError, check_int, check_real
from nqm_mc.spec.model import NQM
from nqm_mc.spec.noise import FiniteData, Gaussian, StudentT
from nqm_mc.spec.optimizers import SGD, Adam, Optimizer
from nqm_mc.studies.scaling import tune

if TYPE_CHECKING:
    from nqm_mc._typing import NoiseSpec
    from nqm_mc.results import SimulationResult

__all__ = ["mc_steps_to_target", "adam_proxy_study", "noise_study"]

PROXY_POWERS = (0.0, 0.25, 0.5, 0.75, 1.0)
FAIL_RATIO = 1.5  # the proxy "fails" at a batch size when it is off by more than this factor


def mc_steps_to_target(res: SimulationResult, target: float) -> tuple[float, float]:
    r"""Find the first step at which the Monte Carlo mean loss falls below ``target``.

    The crossing is interpolated linearly in log(loss) between recorded steps and rounded
    up.

    Parameters
    ----------
    res : SimulationResult
        A Monte Carlo result.
    target : float
        Loss target.

    Returns
    -------
    steps : float
        The crossing; 0 if the first record is below the target, inf if none is.
    se : float
        Delta-method standard error at the crossing (nan if it never crosses or the mean is
        not falling there).

    Notes
    -----
    With :math:`\ell = \log L` and slope :math:`\ell' = d\ell/dt` between the two records
    around the crossing, :math:`\mathrm{se}(t) = (\mathrm{sem}(L)/L) / |\ell'|`.
    """
    mean, sem, steps = res.mean, res.sem, res.steps.astype(float)
    below = np.flatnonzero(mean < target)
    if below.size == 0:
        return np.inf, np.nan
    k = int(below[0])
    if k == 0:
        return 0.0, 0.0
    l0, l1 = np.log(mean[k - 1]), np.log(mean[k])
    s0, s1 = steps[k - 1], steps[k]
    frac = (l0 - np.log(target)) / (l0 - l1)
    t = s0 + frac * (s1 - s0)
    slope = (l1 - l0) / (s1 - s0)  # d log L / dt
    rel = sem[k] / mean[k]  # se of log L
    se = rel / abs(slope) if slope < 0 else np.nan
    return float(np.ceil(t)), float(se)


def _write_table(path, header, rows):
    _files.write_csv(path + ".csv", header, rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_fmt(x) for x in r) + " |" for r in rows]
    _files.write_text(path + ".md", "\n".join(lines) + "\n")


def _fmt(x):
    if isinstance(x, float):
        if not np.isfinite(x):
            return "-" if np.isnan(x) else "never"
        return f"{x:.4g}"
    return str(x)


def adam_proxy_study(outdir: str | os.PathLike[str], *, model: NQM | None = None,
                     batch_sizes: Sequence[int] | None = None, target: float = 0.1,
                     lrs: ArrayLike | None = None, n_runs: int = 32, max_steps: int = 20_000,
                     seed: int = 0, quick: bool = False,
                     rotate: Literal["hessian", "noise", "both"] | None = None,
                     log: Callable[[str], Any] = print,
                     formats: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Compare Adam with preconditioned SGD, P = H^p, in steps to target against batch size.

    Adam is tuned per batch size by simulation, preconditioned SGD exactly, for p in
    PROXY_POWERS.

    Adam (beta1 0.9, beta2 0.999, eps 1e-8, bias-corrected) runs ``n_runs`` trajectories per
    learning rate of the grid ``lrs``; its steps to target are where the Monte Carlo mean loss
    crosses ``target`` (``mc_steps_to_target``, with a standard error). The best p minimises
    the mean squared log ratio of the proxy's steps to Adam's; the proxy fails at a batch size
    where the two differ by more than FAIL_RATIO, beyond the Monte Carlo uncertainty. The
    table also gives the closest power at each batch size: where it drifts with B, no fixed
    power describes Adam.
    ``rotate`` ("hessian", "noise" or "both") rotates the model (:mod:`nqm_mc.spec.rotated`):
    Adam then runs on the dense engine, while the proxy P = H^p still commutes with H, so its
    steps are the aligned model's with noise variances diag(U^T C U). A rotated Hessian is
    where Adam's coordinate-wise scaling stops looking like a power of H.

    Parameters
    ----------
    outdir : str or path-like
        Receives adam_proxy.{png,md,csv,json}.
    model : NQM, optional
        Default ``NQM.paper(300)`` (100 with ``rotate``; smaller with ``quick``).
    batch_sizes : sequence of int, optional
        Default 1, 4, ..., 4096 (1, 16, 256, 4096 with ``quick``).
    target : float, default 0.1
        Loss target, in (0, initial loss).
    lrs : array_like, optional
        Adam's learning-rate grid (default ``geomspace(1e-3, 1, 16)``).
    n_runs : int, default 32
        Trajectories per Adam configuration (at most 16 with ``quick``).
    max_steps : int, default 20000
        Longest simulation (at most 5000 with ``quick``).
    seed : int, default 0
        Seed of the simulations and of the rotation.
    quick : bool, default False
        A smaller, faster study.
    rotate : {"hessian", "noise", "both"}, optional
        Rotate the model first.
    log : callable, default print
        Receives progress lines.
    formats : str or sequence of str, optional
        Figure formats among png, pdf and svg (default PNG).

    Returns
    -------
    dict
        Every number of the study, JSON-ready (also written as adam_proxy.json).

    Raises
    ------
    ParameterError
        If a batch size, the target or ``n_runs`` is invalid.

    References
    ----------
    .. [1] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes? Insights
       From a Noisy Quadratic Model", NeurIPS 2019, arXiv:1907.04164.
    """
    t_start = time.perf_counter()
    if model is None:
        model = NQM.paper(dim=(50 if rotate else 100) if quick else (100 if rotate else 300))
    run_model: Any = model
    proxy_model = model
    sim: Callable[..., Any] = simulate
    if rotate is not None:
        from nqm_mc.montecarlo.dense import simulate_dense
        from nqm_mc.spec.rotated import RotatedNQM
        run_model = RotatedNQM.from_nqm(model, rotate, seed=seed)
        proxy_model = run_model.equivalent_nqm()

        def _sim_dense(m, opt, b, n_steps, n_runs, **kw):
            kw.pop("progress", None)
            return simulate_dense(m, opt, b, n_steps, n_runs, **kw)

        sim = _sim_dense
    if batch_sizes is None:
        batch_sizes = [1, 16, 256, 4096] if quick else [1, 4, 16, 64, 256, 1024, 4096]
    batch_sizes = [check_int("batch_sizes", b, "adam_proxy_study", low=1) for b in batch_sizes]
    target = check_real("target", target, "adam_proxy_study", low=0.0)
    if not 0 < target < model.initial_loss():
        raise ParameterError(f"The 'target' parameter of adam_proxy_study must lie in (0, "
                             f"{model.initial_loss():.4g}) (the initial loss). Got {target!r}.")
    if lrs is None:
        lrs = np.geomspace(1e-3, 1.0, 10 if quick else 16)
    lrs = np.asarray(lrs, float)
    n_runs = check_int("n_runs", n_runs, "adam_proxy_study", low=2)
    if quick:
        n_runs = min(n_runs, 16)
        max_steps = min(max_steps, 5000)
    os.makedirs(outdir, exist_ok=True)

    # Adam, tuned per batch size by simulation; batch sizes in increasing order, each capped
    # near the previous one's best (steps to target do not grow with the batch size)
    adam_steps: Any = []
    adam_se: Any = []
    adam_lr: Any = []
    cap = max_steps
    for b in sorted(batch_sizes):
        best: tuple[float, float, float] = (np.inf, np.nan, np.nan)
        for lr in lrs:
            res = sim(run_model, Adam(float(lr)), b, cap, n_runs, seed=seed, record="log",
                      n_records=300, progress=False)
            s, se = mc_steps_to_target(res, target)
            if s < best[0]:
                best = (s, se, float(lr))
        adam_steps.append(best[0])
        adam_se.append(best[1])
        adam_lr.append(best[2])
        if np.isfinite(best[0]):
            cap = int(min(max_steps, max(2 * best[0], 50)))
        log(f"  Adam B = {b:6d}: {best[0]:9.0f} steps (se {best[1]:.3g}) at lr {best[2]:.3g}")
    order = np.argsort(batch_sizes)
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size)
    adam_steps = np.array(adam_steps)[inv]
    adam_se = np.array(adam_se)[inv]
    adam_lr = np.array(adam_lr)[inv]

    proxies: dict[float, Any] = {}
    for p in PROXY_POWERS:
        r = tune(proxy_model, "sgd", batch_sizes, target, preconditioning=p, search="refine")
        proxies[p] = r
    log(f"  SGD with P = H^p tuned exactly for p = {', '.join(f'{p:g}' for p in PROXY_POWERS)}")
    ok = np.isfinite(adam_steps) & (adam_steps > 0)
    err = {p: float(np.mean(np.log(r.steps[ok] / adam_steps[ok]) ** 2)) if ok.any() else np.inf
           for p, r in proxies.items()}
    best_p = min(err, key=lambda q: err[q])
    proxy = proxies[best_p].steps
    ratio = adam_steps / proxy
    # beyond the Monte Carlo uncertainty: |log ratio| - 2 se(log steps) > log FAIL_RATIO
    se_log = np.where(adam_steps > 0, adam_se / np.maximum(adam_steps, 1), np.nan)
    fails = ok & (np.abs(np.log(ratio)) - 2 * np.nan_to_num(se_log) > np.log(FAIL_RATIO))

    # the power whose proxy is closest to Adam at each batch size: a drift of this local p
    # with B is what no single fixed power can follow
    local = np.array([min(PROXY_POWERS, key=lambda q: abs(np.log(proxies[q].steps[i]
                                                                  / adam_steps[i])))
                      if ok[i] else np.nan for i in range(len(batch_sizes))])
    header = ["batch size", "Adam steps", "Adam se", "Adam lr"] + \
        [f"SGD p={p:g}" for p in PROXY_POWERS] + [f"Adam / best proxy (p={best_p:g})",
                                                  "proxy fails", "closest p"]
    rows: list[list[Any]] = []
    for i, b in enumerate(batch_sizes):
        rows.append([b, _count(adam_steps[i]), float(adam_se[i]), float(adam_lr[i])]
                    + [_count(proxies[p].steps[i]) for p in PROXY_POWERS]
                    + [float(ratio[i]), "yes" if fails[i] else "no", float(local[i])])
    base = os.path.join(outdir, "adam_proxy")
    _write_table(base, header, rows)
    out = {
        "model": run_model.to_dict(), "rotate": rotate, "target": target,
        "batch_sizes": batch_sizes,
        "adam": {"steps": adam_steps.tolist(), "se": adam_se.tolist(),
                 "learning_rate": adam_lr.tolist(), "lr_grid": lrs.tolist(), "runs": n_runs,
                 "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "seed": seed},
        "proxies": {str(p): {"steps": r.steps.tolist(),
                             "learning_rate": r.learning_rate.tolist(),
                             "mean_sq_log_ratio": err[p]} for p, r in proxies.items()},
        "best_p": best_p, "ratio": ratio.tolist(), "proxy_fails": fails.tolist(),
        "closest_p": local.tolist(),
        "fail_ratio": FAIL_RATIO, "provenance": provenance(),
        "seconds": time.perf_counter() - t_start,
    }
    _files.write_json(base + ".json", out)
    _plot_adam_proxy(base + ".png", batch_sizes, adam_steps, adam_se, proxies, best_p, fails,
                     target, rotate, formats=formats, ratio=ratio, n_runs=n_runs,
                     model=run_model)
    from nqm_mc._table import table
    log(f"steps to E[L] < {target:g}: Adam (tuned by simulation, {n_runs} runs per setting) "
        f"against SGD with P = H^p (tuned exactly)")
    short = ["batch size", "Adam", "± s.e.", "Adam lr"] + [f"p = {p:g}" for p in PROXY_POWERS] \
        + [f"Adam / (p = {best_p:g})", "proxy fails", "closest p"]
    log(table(short, rows, [None, None, ".3g", ".3g"] + [None] * len(PROXY_POWERS)
              + [".3g", None, "g"], indent="  "))
    log(adam_proxy_verdict(out, batch_sizes))
    return out


def adam_proxy_verdict(out: dict[str, Any], batch_sizes: Sequence[int]) -> str:
    """Return one sentence: whether one preconditioning power describes Adam everywhere."""
    best_p, fails, local = out["best_p"], out["proxy_fails"], out["closest_p"]
    bad = [(b, r) for b, r, f in zip(batch_sizes, out["ratio"], fails, strict=True) if f]
    if not bad:
        return (f"verdict: preconditioned SGD with p = {best_p:g} matches Adam within "
                f"{FAIL_RATIO:g}x at every batch size tried")
    where = ", ".join(f"B = {b} ({max(r, 1 / r):.2g}x)" for b, r in bad)
    drift = [q for q in local if q == q]
    return (f"verdict: no single power describes Adam: the best, p = {best_p:g}, is off by "
            f"more than {FAIL_RATIO:g}x (beyond 2 standard errors) at {where}; the closest p "
            f"goes from {drift[0]:g} at B = {batch_sizes[0]} to {drift[-1]:g} at "
            f"B = {batch_sizes[-1]}")


def _count(x: float) -> int | float:
    """Return a step count as an int (inf stays a float: never reached)."""
    return int(x) if np.isfinite(x) else float(x)


def _plot_adam_proxy(path, bs, adam, se, proxies, best_p, fails, target, rotate=None,
                     formats=None, ratio=None, n_runs=None, model=None):
    bs = np.asarray(bs, float)
    with style.context() as plt:
        fig, ax = plt.subplots(figsize=(6.4, 5.6))
        for p, r in proxies.items():
            best = p == best_p
            kw = style.family_style("sgd", p)
            kw.update(lw=2.2 if best else 1.0, alpha=1.0 if best else 0.75,
                      ms=4 if best else 3)
            ax.plot(bs, r.steps, label=f"SGD, P = $H^{{{p:g}}}$ (exact)"
                    + (" – best fit" if best else ""), **kw)
        ax.errorbar(bs, adam, yerr=2 * np.nan_to_num(se), fmt="o", color=style.EXACT, ms=5,
                    capsize=3, zorder=5,
                    label=f"Adam (simulated{f', N = {n_runs}' if n_runs else ''}), ± 2 s.e.")
        if ratio is not None:
            for b, a, q in zip(bs, adam, ratio, strict=True):
                if np.isfinite(a) and np.isfinite(q):
                    ax.annotate(f"×{q:.2f}", (b, a), textcoords="offset points", xytext=(7, 6),
                                fontsize=7, color="0.2")
        fails = np.asarray(fails, bool)
        ax.plot(bs[fails], adam[fails], "o", mfc="none", mec=style.TARGET, ms=13, mew=2,
                label=f"proxy fails: Adam / best proxy beyond ×{FAIL_RATIO:g} (or ÷{FAIL_RATIO:g}) "
                      "by more than 2 s.e.")
        ax.set_xscale("log", base=2)
        style.log_y(ax)
        ax.set_xlabel("batch size B")
        ax.set_ylabel(f"steps to E[L] < {target:g}")
        where = f"{style.model_text(model)}, " if model is not None else ""
        ax.set_title("Adam (β₁ = 0.9, β₂ = 0.999, α tuned per B) against SGD preconditioned by "
                     f"$H^p$\n{where}target {target:g}; ×: Adam / best proxy (p = {best_p:g})"
                     + (f"; model rotated ({rotate})" if rotate else ""))
        style.legend(ax, fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2)
        style.save(fig, path, formats)


def noise_study(outdir: str | os.PathLike[str], *, model: NQM | None = None,
                optimizer: Optimizer | None = None, batch_size: int = 4,
                n_steps: int = 3000, n_runs: int = 4000, target: float | None = None,
                laws: Sequence[NoiseSpec] | None = None, seed: int = 0, quick: bool = False,
                log: Callable[[str], Any] = print,
                formats: str | Sequence[str] | None = None) -> dict[str, Any]:
    """Run one optimizer under Gaussian, Student-t and finite-dataset noise of one covariance.

    The mean loss (which the exact engine predicts under every law) is set against the
    distribution of the loss (quantiles) and of hitting times, which differ.

    For each law: the final mean loss against the exact value (z-score with the Monte Carlo
    standard error), the 5/50/95 % quantiles of the final loss, and the hitting times of
    ``target`` (mean with standard error, median, 95 % quantile, fraction never hit) with a
    two-sample Kolmogorov-Smirnov test against the Gaussian ones.

    Parameters
    ----------
    outdir : str or path-like
        Receives noise_study.{png,md,csv,json}.
    model : NQM, optional
        Default ``NQM.paper(100)``.
    optimizer : optimizer spec, optional
        A linear optimizer (the exact mean is computed); default ``SGD(0.5)``.
    batch_size : int, default 4
        Batch size (below every FiniteData size).
    n_steps : int, default 3000
        Steps simulated (at most 1500 with ``quick``).
    n_runs : int, default 4000
        Trajectories per law (at most 1000 with ``quick``).
    target : float, optional
        Loss target of the hitting times (default: the exact mean a third of the way).
    laws : sequence of noise laws, optional
        Default Gaussian, Student-t (nu = 3, 5), FiniteData (n = 16, 256).
    seed : int, default 0
        Seed of the simulations.
    quick : bool, default False
        A smaller, faster study.
    log : callable, default print
        Receives progress lines.
    formats : str or sequence of str, optional
        Figure formats among png, pdf and svg (default PNG).

    Returns
    -------
    dict
        Every number of the study, JSON-ready (also written as noise_study.json).
    """
    from scipy import stats
    t_start = time.perf_counter()
    if model is None:
        model = NQM.paper(dim=100)
    if optimizer is None:
        optimizer = SGD(0.5)
    if quick:
        n_runs = min(n_runs, 1000)
        n_steps = min(n_steps, 1500)
    if laws is None:
        laws = [Gaussian(), StudentT(3.0), StudentT(5.0), FiniteData(16, seed=1),
                FiniteData(256, seed=1)]
    exact = expected_loss(model, optimizer, batch_size, n_steps)
    if target is None:  # a target reached around a third of the way
        target = float(exact.mean[n_steps // 3])
    os.makedirs(outdir, exist_ok=True)
    results: dict[Any, SimulationResult] = {}
    for law in laws:
        r = simulate(model, optimizer, batch_size, n_steps, n_runs, seed=seed, record="log",
                     n_records=120, target=target, noise=law, progress=False)
        results[law] = r
        log(f"  {law!s:32s} final mean {r.mean[-1]:.5g} +- {r.sem[-1]:.2g}")
    gauss_hits = None
    rows = []
    summary: dict[str, Any] = {}
    for law, r in results.items():
        ex = expected_loss(model, optimizer, batch_size, record=r.steps).mean
        z = (r.mean[-1] - ex[-1]) / r.sem[-1]
        hits: Any = r.hitting_times  # a target is always given here
        hit = hits[hits >= 0].astype(float)
        never = float(np.mean(hits < 0))
        if gauss_hits is None and isinstance(law, Gaussian):
            gauss_hits = hit
        ks_p = float(stats.ks_2samp(hit, gauss_hits).pvalue) if gauss_hits is not None \
            and hit.size and not isinstance(law, Gaussian) else float("nan")
        q = dict(zip(np.round(r.quantile_levels, 3), r.quantiles[:, -1], strict=True))
        row = [str(law), float(r.mean[-1]), float(r.sem[-1]), float(ex[-1]), float(z),
               float(q.get(0.05, np.nan)), float(q.get(0.5, np.nan)), float(q.get(0.95, np.nan)),
               float(hit.mean()) if hit.size else np.nan,
               float(hit.std(ddof=1) / np.sqrt(hit.size)) if hit.size > 1 else np.nan,
               float(np.median(hit)) if hit.size else np.nan,
               float(np.quantile(hit, 0.95)) if hit.size else np.nan, never, ks_p]
        rows.append(row)
        summary[str(law)] = {"noise": law.to_dict(), "steps": r.steps.tolist(),
                             "mean": r.mean.tolist(), "sem": r.sem.tolist(),
                             "exact_mean": ex.tolist(),
                             "quantile_levels": r.quantile_levels.tolist(),
                             "quantiles": r.quantiles.tolist(), "final_z": float(z),
                             "hitting_time_ks_p_vs_gaussian": ks_p, "never_hit": never}
    header = ["noise", "final mean", "se", "exact", "z", "q05", "median", "q95",
              "hit mean", "hit se", "hit median", "hit q95", "never hit", "KS p vs Gaussian"]
    base = os.path.join(outdir, "noise_study")
    _write_table(base, header, rows)
    out = {"model": model.to_dict(), "optimizer": optimizer.to_dict(),
           "batch_size": batch_size, "n_steps": n_steps, "n_runs": n_runs, "target": target,
           "seed": seed, "laws": summary, "provenance": provenance(),
           "seconds": time.perf_counter() - t_start}
    _files.write_json(base + ".json", out)
    _plot_noise(base + ".png", results, target, optimizer, batch_size, model=model,
                ks={str(law): row[-1] for law, row in zip(results, rows, strict=True)},
                formats=formats)
    from nqm_mc._table import table
    log(f"final loss at step {n_steps} ({n_runs} runs per law) and first step below {target:.4g}")
    log(table(["noise", "mean", "± s.e.", "exact", "z", "median", "q95", "hit mean", "± s.e.",
               "hit q95", "never hit", "KS p vs Gaussian"],
              [[r[0], r[1], r[2], r[3], r[4], r[6], r[7], r[8], r[9], r[11], r[12], r[13]]
               for r in rows],
              [None, ".5g", ".2g", ".5g", ".2f", ".4g", ".4g", ".1f", ".2g", "g", ".3g", ".2g"],
              indent="  "))
    log(noise_study_verdict(out))
    return out


#: the noise study's thresholds: |z| of a final mean against the exact engine, and the KS
#: p-value below which a law's hitting times differ from the Gaussian ones
NOISE_Z, NOISE_KS_P = 4.0, 1e-3


def noise_study_verdict(out: dict[str, Any]) -> str:
    """Return one sentence: do the means follow the exact engine, whose hitting times differ.

    The hitting times of each law are compared with the Gaussian ones by the two-sample KS
    test of the study.
    """
    laws = out["laws"]
    off = [k for k, v in laws.items() if abs(v["final_z"]) > NOISE_Z]
    differ = [f"{k} (p = {v['hitting_time_ks_p_vs_gaussian']:.2g})" for k, v in laws.items()
              if (v["hitting_time_ks_p_vs_gaussian"] or 1.0) < NOISE_KS_P]
    means = (f"the final mean matches the exact engine under every law (|z| <= {NOISE_Z:g})"
             if not off else f"the final mean is off the exact engine for {', '.join(off)}")
    hits = (f"hitting times differ from the Gaussian ones (KS p < {NOISE_KS_P:g}) for "
            + ", ".join(differ) if differ else
            f"no law's hitting times differ from the Gaussian ones (KS p >= {NOISE_KS_P:g})")
    return f"verdict: {means}; {hits}"


def _plot_noise(path, results, target, optimizer, batch_size, model=None, ks=None,
                formats=None):
    """Draw the noise study in three panels.

    (a) the exact mean with each law's Monte Carlo mean and z residuals, (b) the 5 % and 95 %
    quantiles of each law (lines, no fills), (c) hitting-time distributions with the KS
    p-values against the Gaussian.
    """
    laws = list(results)
    markers = ["o", "s", "^", "D", "v", "P", "X"]
    with style.context() as plt:
        fig = plt.figure(figsize=(13, 4.8))
        gs = fig.add_gridspec(2, 3, height_ratios=[3, 1.3])
        a = fig.add_subplot(gs[0, 0])
        az = fig.add_subplot(gs[1, 0], sharex=a)
        b = fig.add_subplot(gs[:, 1])
        c = fig.add_subplot(gs[:, 2])
        r0 = results[laws[0]]
        ex0 = expected_loss(model, optimizer, batch_size, record=r0.steps).mean \
            if model is not None else None
        n_z = 0
        zs = []
        for k, law in enumerate(laws):
            r = results[law]
            col = style.CYCLE[k % len(style.CYCLE)]
            mk = markers[k % len(markers)]
            ex = expected_loss(model, optimizer, batch_size, record=r.steps).mean \
                if model is not None else None
            if ex is not None:
                with np.errstate(divide="ignore", invalid="ignore"):
                    z = np.where(r.sem > 0, (r.mean - ex) / r.sem, np.nan)
                every = max(1, r.steps.size // 25)
                az.plot(r.steps[::every], z[::every], mk, ms=3, color=col, mfc="white", mew=1)
                n_z += int(np.isfinite(z).sum())
                zs.append(z)
            lv = np.round(r.quantile_levels, 3)
            lo, hi = r.quantiles[list(lv).index(0.05)], r.quantiles[list(lv).index(0.95)]
            b.plot(r.steps, hi, color=col, lw=1.4, label=style.noise_text(law))
            b.plot(r.steps, lo, color=col, lw=1.4, ls="--")
            hit = np.sort(r.hitting_times[r.hitting_times >= 0])
            if hit.size:
                p = (ks or {}).get(str(law), np.nan)
                lab = style.noise_text(law) + (f" (KS p = {p:.2g})" if np.isfinite(p)
                                               else " (reference)")
                c.step(hit, np.arange(1, hit.size + 1) / r.hitting_times.size, color=col,
                       where="post", lw=1.4, label=lab)
        if ex0 is not None:
            a.plot(r0.steps, ex0, color=style.EXACT, lw=1.6, label="exact E[L(t)] (every law)")
            for k, law in enumerate(laws):
                r = results[law]
                every = max(1, r.steps.size // 12)
                a.plot(r.steps[k % every::every], r.mean[k % every::every],
                       markers[k % len(markers)], ms=3.5, color=style.CYCLE[k % len(style.CYCLE)],
                       mfc="white", mew=1, label=f"MC mean, {style.noise_text(law)}")
            allz = np.concatenate(zs)
            style.residual_panel(az, np.full(allz.size, np.nan), allz, style.bonferroni_z(n_z),
                                 f"5 % family-wise over {n_z} points", points=False)
        style.target_line(a, target, f"target {target:.3g} (hitting times)")
        style.log_steps(a, r0.steps, "")
        style.log_y(a)
        a.set_ylabel("mean loss")
        style.title(a, "(a) mean loss: one value for every law")
        style.legend(a, fontsize=6.5)
        style.log_steps(az, r0.steps)
        style.target_line(b, target, f"target {target:.3g}")
        style.log_steps(b, r0.steps)
        style.log_y(b)
        b.set_ylabel("loss quantile")
        style.title(b, "(b) 95 % (solid) and 5 % (dashed) quantiles of the loss")
        style.legend(b, fontsize=7)
        hits = np.concatenate([r.hitting_times[r.hitting_times > 0] for r in results.values()])
        if hits.size and hits.max() > 10 * hits.min():
            style.log_x(c)
        c.set_xlabel(f"first step with L < {target:.3g}")
        c.set_ylabel("fraction of runs that hit by then")
        style.title(c, "(c) hitting-time distribution")
        style.legend(c, fontsize=7, loc="lower right")
        n = r0.hitting_times.size if r0.hitting_times is not None else 0
        fig.suptitle(style.optimizer_text(optimizer, batch_size) + (
            f", {style.model_text(model)}" if model is not None else "")
            + f", N = {style.fmt(n)} runs per law: the same noise covariance, different laws",
            fontsize=10)
        style.save(fig, path, formats)
