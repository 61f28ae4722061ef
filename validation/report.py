"""The validation report: summary table (CSV and Markdown), per-case plots and a JSON file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
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


def output_names(case_names: Iterable[str]) -> list[str]:
    """Return every file :func:`write_report` may write for these cases."""
    return ["summary.csv", "summary.md", "results.json"] + [f"plots/{c}.png"
                                                              for c in case_names]


def write_report(results: list[dict[str, Any]], outdir: str, settings: dict[str, Any]) -> int:
    """Write the summary (CSV and Markdown), the results (JSON) and one plot per case.

    Parameters
    ----------
    results : list of dict
        From :func:`validation.suite.run_suite`.
    outdir : str
        Output directory (``plots/`` is created in it).
    settings : dict
        Recorded in the report.

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
    lines += ["", "Plots: plots/CASE.png (Monte Carlo mean with its 95 % band over the exact "
              "curve and the wrong reference; z over time with the threshold)."]
    _files.write_text(os.path.join(outdir, "summary.md"), "\n".join(lines) + "\n")
    _files.write_json(os.path.join(outdir, "results.json"),
                      {"settings": settings, "provenance": provenance(), "cases": results},
                      indent=1)
    for r in results:
        if "steps" in r:
            _plot_case(r, os.path.join(outdir, "plots", f"{r['case']}.png"))
    return n_fail + n_power


def _plot_case(r, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.asarray(r["steps"])
    mc, se = np.asarray(r["mc_mean"]), np.asarray(r["mc_sem"])
    fig, (a, b) = plt.subplots(2, 1, figsize=(6.4, 6), sharex=True,
                               gridspec_kw={"height_ratios": [2, 1]})
    a.plot(t, r["exact_mean"], "k-", lw=1.5, label="exact E[L(t)]")
    a.plot(t, r["wrong_mean"], ":", color="tab:red", lw=1.2, label=f"wrong: {r['wrong']}")
    a.fill_between(t, mc - 1.96 * se, mc + 1.96 * se, color="tab:blue", alpha=0.3,
                   label="Monte Carlo 95 % band")
    a.plot(t, mc, ".", color="tab:blue", ms=4, label=f"Monte Carlo mean (N = {r['runs']})")
    a.set_yscale("log")
    a.set_ylabel("loss")
    a.set_title(f"{r['case']}: {r['feature']} - {r['verdict']}")
    a.legend(fontsize=8)
    b.plot(t, r["z_mean"], "o-", ms=3, color="tab:blue")
    thr = r["threshold"]
    b.axhline(thr, color="gray", ls="--", lw=1)
    b.axhline(-thr, color="gray", ls="--", lw=1)
    b.set_ylabel("z")
    b.set_xlabel("step")
    fig.tight_layout()
    _files.save_figure(fig, path, dpi=110)
