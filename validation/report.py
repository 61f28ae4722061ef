"""The validation report: summary table (CSV and Markdown), per-case plots and a JSON file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from nqm_mc import _files
from nqm_mc.results import provenance

COLUMNS = ["case", "feature", "method", "runs", "max_abs_z", "p_value", "verdict", "wrong",
           "max_abs_z_wrong", "power_verdict", "sensitivity", "seconds"]


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if not np.isfinite(v) else (f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}")
    return str(v)


def output_names(case_names: Iterable[str],
                 formats: str | Sequence[str] | None = None) -> list[str]:
    """Return every file :func:`write_report` may write for these cases."""
    from nqm_mc import style

    return ["summary.csv", "summary.md", "results.json"] + [
        f"plots/{n}" for c in case_names for n in style.output_names(c, formats)]


def write_report(results: list[dict[str, Any]], outdir: str, settings: dict[str, Any],
                 formats: str | Sequence[str] | None = None) -> int:
    """Write the summary (CSV and Markdown), the results (JSON) and one plot per case.

    Parameters
    ----------
    results : list of dict
        From :func:`validation.suite.run_suite`.
    outdir : str
        Output directory (``plots/`` is created in it).
    settings : dict
        Recorded in the report.
    formats : str or sequence of str, optional
        Formats of the plots among png, pdf and svg (default PNG).

    Returns
    -------
    int
        The number of failed cases.
    """
    os.makedirs(os.path.join(outdir, "plots"), exist_ok=True)
    _files.write_csv(os.path.join(outdir, "summary.csv"), COLUMNS,
                     [[r.get(c, "") for c in COLUMNS] for r in results])
    n_fail = sum(r["verdict"] != "pass" for r in results)
    n_power = sum(r["power_verdict"] == "NOT REJECTED" for r in results)
    lines = ["# Validation: Monte Carlo against the exact recurrences", "",
             f"Settings: {json.dumps(settings)}", "",
             f"{len(results)} cases, {n_fail} failed, {n_power} power checks not rejected. "
             "Each case's tests (z of the mean at every recorded step, z of each curvature "
             "band's mean square, z of the sample variance, Kolmogorov-Smirnov of the final "
             "loss against its exact law) are judged together by Holm-Bonferroni at a "
             "family-wise error of 1e-4; p_value is the smallest Holm-adjusted p. The power "
             "check runs the mean test against a deliberately wrong reference, which must be "
             "rejected. sensitivity is the smallest relative deviation of the mean that the "
             "case's runs detect: threshold * min over recorded steps t > 0 of se(t) / E[L(t)] "
             "(a shift of the mean by that fraction at every step has expected |z| equal to the "
             "threshold at the best-resolved step; results.json also gives the step and the "
             "maximum over steps). A wrong coefficient of an update rule shifts the whole curve "
             "after the transient, so the minimum is the resolution for it; step 0 is left "
             "out, where no update rule acts. --runs-factor K divides it by sqrt(K).", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in results:
        lines.append("| " + " | ".join(_fmt(r.get(c, "")) for c in COLUMNS) + " |")
    conv = [r for r in results if "convergence" in r]
    if conv:
        lines += ["", "Error against N (RMS of (MC mean - exact) / exact std over steps; "
                  "slope -1/2 expected):", ""]
        for r in conv:
            c = r["convergence"]
            lines.append(f"- {r['case']}: N = {c['runs']}, error = "
                         f"{[round(e, 5) for e in c['rms_error']]}, slope {c['slope']:.2f}")
    joint = [r for r in results if "lag_table" in r]
    if joint:
        from validation.joint import table_lines
        lines += ["", "## The joint law across records", "",
                  "Sample covariance and correlation of the loss between two recorded steps "
                  "of the same run (kept paths), against the exact engine's loss_covariance; "
                  "standard errors from the influence function over runs. The planted "
                  "sampler draws each record afresh from the start (every marginal exact) "
                  "and must be rejected. For these cases, sensitivity is the smallest "
                  "relative error of a lag covariance detected (threshold * min s.e. / "
                  "|covariance|) and max_abs_z is over the z of the covariances and "
                  "correlations.", ""]
        for r in joint:
            lines += table_lines(r) + [""]
    lines += ["", "Plots: plots/CASE.png (Monte Carlo mean with 1.96 standard errors over the "
              "exact curve and the deliberately wrong reference; below, z = (MC mean - exact) "
              "/ s.e. at every recorded step with the threshold +-z* of the case's tests)."]
    _files.write_text(os.path.join(outdir, "summary.md"), "\n".join(lines) + "\n")
    _files.write_json(os.path.join(outdir, "results.json"),
                      {"settings": settings, "provenance": provenance(), "cases": results},
                      indent=1)
    for r in results:
        if "steps" in r:
            _plot_case(r, os.path.join(outdir, "plots", f"{r['case']}.png"), formats)
    return n_fail + n_power


def _plot_case(r, path, formats=None):
    from nqm_mc import style

    t = np.asarray(r["steps"])
    mc, se = np.asarray(r["mc_mean"], float), np.asarray(r["mc_sem"], float)
    with style.context() as plt:
        fig, a, b = style.mc_figure(plt, 6.2, 5.4)
        a.plot(t, r["exact_mean"], color=style.EXACT, lw=1.4, label="exact E[L(t)]", zorder=3)
        a.plot(t, r["wrong_mean"], color=style.TARGET, ls=(0, (1, 1.5)), lw=1.4,
               label=f"deliberately wrong reference: {r['wrong']}")
        every = max(1, t.size // 60)
        a.errorbar(t[::every], mc[::every], yerr=1.96 * se[::every], fmt="o", ms=3.5,
                   color=style.MONTE_CARLO, mfc="white", mew=1, capsize=0, zorder=4,
                   label=f"Monte Carlo mean ± 1.96 s.e. (N = {style.fmt(r['runs'])})")
        style.log_steps(a, t, "")
        style.log_y(a)
        a.set_ylabel("loss L(t)")
        power = r.get("power_verdict", "")
        style.title(a, f"{r['case']}: {r['feature']}\nverdict {r['verdict']}; max |z| = "
                    f"{r.get('max_abs_z', float('nan')):.2f}; wrong reference: {power}")
        style.legend(a, fontsize=7)
        n = r.get("n_tests")
        style.residual_panel(b, t, np.asarray(r["z_mean"], float), float(r["threshold"]),
                             "family-wise 1e-4" + (f" over the case's {n} tests" if n else ""))
        style.log_steps(b, t)
        style.save(fig, path, formats)
