"""The table, figure and provenance of ``nqm-mc calibrate``."""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from nqm_mc.calibration.result import Calibration

__all__ = ["OKABE_ITO", "predictions", "format_report", "figure", "provenance_record",
           "sha256"]

#: Okabe-Ito colours (distinguishable with the common colour-vision deficiencies)
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#000000")


def sha256(path: str) -> str:
    """Hex SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def default_target(cal: Calibration) -> float:
    """Return a target the runs nearly reached: 1.2 times the smallest measured loss."""
    return 1.2 * min(float(np.min(r.loss)) for r in cal.runs)


def predictions(cal: Calibration, target: float, batch_sizes: Any, family: str = "sgd",
                max_samples: int = 24, p: float = 0.0) -> dict[str, Any]:
    """Return tuned steps, learning rate per batch size and critical batch size, with bands."""
    ok, why = cal.reachable(target)
    name = family if p == 0 else f"{family} p={p:g}"
    out: dict[str, Any] = {"target": target, "family": name, "reachable": ok, "reason": why}
    if not ok:
        return out
    tuned = cal.tuned(target, batch_sizes, family, p, max_samples=max_samples)
    out["tuned"] = tuned
    out["critical_batch_size"] = tuned["critical_batch_size"]
    return out


def prediction_rows(pred: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per batch size (for the CSV and the table)."""
    if not pred.get("reachable") or "tuned" not in pred:
        return []
    t = pred["tuned"]
    rows = []
    for k, b in enumerate(t["batch_sizes"]):
        rows.append({"batch_size": int(b), "steps": float(t["steps"].value[k]),
                     "steps_lo": float(t["steps"].lo[k]), "steps_hi": float(t["steps"].hi[k]),
                     "learning_rate": float(t["learning_rate"].value[k]),
                     "learning_rate_lo": float(t["learning_rate"].lo[k]),
                     "learning_rate_hi": float(t["learning_rate"].hi[k]),
                     "family": pred["family"], "target": pred["target"]})
    return rows


def _pm(v: float, se: float) -> str:
    if not np.isfinite(se):
        return f"{v:.4g}"
    return f"{v:.4g} +- {se:.2g}"


def format_report(cal: Calibration, pred: dict[str, Any]) -> str:
    """Return a readable text report: parameters, identifiability, predictions."""
    lines = [f"fit of {len(cal.runs)} runs, {cal.info['n_points']} points: rms log residual "
             f"{cal.info['rms']:.3g}, {cal.info['seconds']:.1f} s "
             f"({cal.settings['uncertainty']}, {len(cal.samples)} samples)", "",
             f"{'parameter':>10}  {'value +- s.e.':>22}  {int(cal.level * 100)}% interval"]
    for row in cal.parameter_table():
        lines.append(f"{row['parameter']:>10}  {_pm(row['value'], row['stderr']):>22}  "
                     f"[{row['lo']:.4g}, {row['hi']:.4g}]")
    lines.append("")
    lines += [f"  {s}" for s in cal.identifiability()]
    for w in cal.warnings:
        lines.append(f"  warning: {w}")
    lines.append("")
    if not pred.get("reachable"):
        lines.append(f"target {pred['target']:.4g}: {pred['reason']}")
        return "\n".join(lines)
    lines.append(f"predictions for target {pred['target']:.4g} (measured scale; the NQM must "
                 f"reach {pred['target'] - cal.floor:.4g} above the floor), tuned "
                 f"{pred['family']}:")
    lines.append(f"{'batch':>8}  {'steps':>10}  {'band':>23}  {'tuned lr':>10}  {'band':>21}")
    for r in prediction_rows(pred):
        lines.append(f"{r['batch_size']:>8}  {r['steps']:>10.4g}  [{r['steps_lo']:>9.4g}, "
                     f"{r['steps_hi']:>9.4g}]  {r['learning_rate']:>10.3g}  "
                     f"[{r['learning_rate_lo']:>8.3g}, {r['learning_rate_hi']:>8.3g}]")
    c = pred["critical_batch_size"]
    if np.isfinite(c.value):
        lines.append(f"critical batch size: {c.value:.4g} ({int(c.level * 100)}% band "
                     f"[{c.lo:.4g}, {c.hi:.4g}])")
    else:
        lines.append("critical batch size: none")
    for note in pred["tuned"].get("notes", []):
        lines.append(f"  note: {note}")
    return "\n".join(lines)


def figure(cal: Calibration, pred: dict[str, Any], path: str, overwrite: bool = False) -> str:
    """Measured against fitted curves (left) and predicted steps against batch size (right)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nqm_mc._files import save_figure
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    fitted = cal.fitted_curves()
    for k, (r, f) in enumerate(zip(cal.runs, fitted, strict=True)):
        col = OKABE_ITO[k % len(OKABE_ITO)]
        t = np.maximum(r.steps, 1)
        ax1.plot(t, r.loss, "o", ms=2.5, color=col, alpha=0.6, label=r.name)
        ax1.plot(t, f, "-", color=col, lw=1.3)
    if cal.floor > 0:
        ax1.axhline(cal.floor, color="0.4", ls=":", lw=1, label=f"floor {cal.floor:.3g}")
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.set_title("measured (dots) and fitted (lines)")
    ax1.legend(fontsize=7)
    if pred.get("reachable") and "tuned" in pred:
        t = pred["tuned"]
        b = t["batch_sizes"].astype(float)
        st = t["steps"]
        ok = np.isfinite(st.value)
        ax2.plot(b[ok], st.value[ok], "o-", color=OKABE_ITO[0], label=f"tuned {t['family']}")
        lo, hi = np.asarray(st.lo, float), np.asarray(st.hi, float)
        okb = ok & np.isfinite(lo) & np.isfinite(hi)
        ax2.fill_between(b[okb], lo[okb], hi[okb], color=OKABE_ITO[0], alpha=0.25,
                         label=f"{int(st.level * 100)}% band")
        if ok.any():
            k0 = int(np.flatnonzero(ok)[0])
            ax2.plot(b, st.value[k0] * b[k0] / b, ":", color="0.5", lw=1,
                     label="perfect scaling")
        c = pred["critical_batch_size"]
        if np.isfinite(c.value):
            ax2.axvline(c.value, color=OKABE_ITO[3], ls="--", lw=1,
                        label=f"critical B {c.value:.3g}")
            if np.isfinite(c.lo) and np.isfinite(c.hi):
                ax2.axvspan(c.lo, c.hi, color=OKABE_ITO[3], alpha=0.12,
                            label=f"critical B, {int(c.level * 100)}% band")
        for r in cal.runs:
            ax2.axvline(r.batch_size, color="0.8", lw=0.8, zorder=0)
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        finite = np.concatenate([lo[okb], st.value[ok]])
        if finite.size:
            ax2.set_ylim(0.5 * float(np.min(finite)), 2.0 * float(np.max(np.concatenate(
                [hi[okb], st.value[ok]]))))
        ax2.set_xlabel("batch size (grey: measured)")
        ax2.set_ylabel("steps to target")
        ax2.set_title(f"predicted steps to loss {pred['target']:.3g}")
        ax2.legend(fontsize=7)
    else:
        ax2.text(0.5, 0.5, pred.get("reason", "no prediction"), ha="center", va="center",
                 wrap=True, transform=ax2.transAxes)
        ax2.set_axis_off()
    fig.tight_layout()
    return save_figure(fig, path, overwrite=overwrite, dpi=130)


def _band_json(b: Any) -> dict[str, Any]:
    return {"value": b.value, "lo": b.lo, "hi": b.hi, "level": b.level}


def provenance_record(cal: Calibration, pred: dict[str, Any], runs_path: str,
                      argv: list[str] | None = None) -> dict[str, Any]:
    """Return the saved fit.

    Inputs (path, sha256), settings, seed, versions, parameters, samples and predictions.
    """
    from nqm_mc.results import provenance
    rec: dict[str, Any] = {"kind": "nqm_mc.calibration",
                           "input": {"path": os.path.abspath(runs_path),
                                     "sha256": sha256(runs_path)},
                           "command": argv, "versions": provenance()}
    rec.update(cal.to_dict())
    p: dict[str, Any] = {"target": pred["target"], "family": pred["family"],
                         "reachable": pred["reachable"], "reason": pred["reason"]}
    if "tuned" in pred:
        t = pred["tuned"]
        p["batch_sizes"] = t["batch_sizes"]
        for k in ("steps", "learning_rate", "effective_learning_rate"):
            p[k] = _band_json(t[k])
        p["critical_batch_size"] = _band_json(pred["critical_batch_size"])
    rec["predictions"] = p
    return rec
