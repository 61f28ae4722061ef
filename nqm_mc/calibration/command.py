"""``nqm-mc calibrate TABLE.csv``: fit the size-aware NQM to a final-loss table and plan.

The command line calls :func:`run_table`; everything it prints and writes is built here.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from nqm_mc.calibration.report import sha256
from nqm_mc.calibration.sizes import (
    TableFit,
    critical_batch_sizes,
    fit_table,
    plan,
    predict_final_loss,
)
from nqm_mc.calibration.table import read_table
from nqm_mc.spec._checks import ParameterError

__all__ = ["run_table", "format_table_report", "OUTPUTS"]

#: files written by the command
OUTPUTS = ("calibration.json", "predictions.csv")


def _numbers(text: str | None, what: str, integer: bool = False) -> list[float]:
    if text is None or not str(text).strip():
        return []
    out = []
    for part in str(text).split(","):
        try:
            v = float(part)
        except ValueError:
            raise ParameterError(f"The {what!r} option takes comma-separated numbers. Got "
                                 f"{text!r} instead.") from None
        if not math.isfinite(v) or v <= 0 or (integer and v != round(v)):
            raise ParameterError(f"The {what!r} option takes numbers > 0. Got {text!r} "
                                 "instead.")
        out.append(v)
    return out


def read_table_rows(path: str) -> np.ndarray:
    """Read the (N, B, K) columns of a CSV file (errors name the line)."""
    import csv
    if not os.path.isfile(path):
        raise ParameterError(f"The rows file {path} does not exist or is not a file.")
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ParameterError(f"{path}: the file is empty (need a header with N, B, K).")
    header = [h.strip().lower() for h in rows[0]]
    alias = {"n": "N", "params": "N", "b": "B", "batch_size": "B", "k": "K", "steps": "K"}
    names = [alias.get(h, h) for h in header]
    missing = [c for c in ("N", "B", "K") if c not in names]
    if missing:
        raise ParameterError(f"{path} line 1: missing column(s) {', '.join(missing)}.")
    col = [names.index(c) for c in ("N", "B", "K")]
    out = []
    for line, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        vals = []
        for c, j in zip(("N", "B", "K"), col, strict=True):
            text = row[j].strip() if j < len(row) else ""
            try:
                v = float(text)
            except ValueError:
                raise ParameterError(f"{path} line {line}: {c} must be a number; got "
                                     f"{text!r}.") from None
            if not math.isfinite(v) or v <= 0 or (c != "N" and (v < 1 or v != round(v))):
                raise ParameterError(f"{path} line {line}: {c} must be "
                                     f"{'> 0' if c == 'N' else 'an integer >= 1'}; got "
                                     f"{text!r}.")
            vals.append(v)
        out.append(vals)
    if not out:
        raise ParameterError(f"{path}: no data rows.")
    return np.array(out)


def format_table_report(fit: TableFit, plans: list[dict[str, Any]],
                        crit: list[dict[str, Any]]) -> str:
    """Readable report: parameters, cross-validation, critical batch sizes, plans."""
    p = fit.params
    lines = [f"fit of {len(fit.table)} runs (family {fit.family}): rms log residual "
             f"{fit.info['rms']:.4f}, {fit.info['seconds']:.1f} s", ""]
    lines.append("  tau1 (lr x top curvature) {:.4g}, a {:.4g}; initial loss A {:.4g} i^-{:.4g}; "
                 "noise S {:.4g} i^-{:.4g}".format(p["tau1"], p["a"], p["A"], p["g"], p["S"],
                                                   p["b"]))
    lines.append(f"  directions trained d(N) = {p['d_ref']:.4g} (N / {p['N_ref']:.4g})^"
                 f"{p['rho']:.3g}; floor {p['floor']:.4g}")
    if fit.cv is not None:
        lines.append(f"  held-out MSE of log loss: leave one budget out "
                     f"{fit.cv['mse_budget']:.5f}, leave one size out "
                     f"{fit.cv['mse_size']:.5f} ({fit.cv['n_folds']} refits)")
        lines.append(f"  {fit.level:.0%} bands: x/ {math.exp(fit.width):.4f} (split-conformal on "
                     "the out-of-fold residuals)")
    for w in fit.warnings:
        lines.append(f"  warning: {w}")
    if crit:
        lines += ["", f"{'N':>10}  {'target':>8}  {'critical B':>10}  {'band (folds)':>21}"]
        for c in crit:
            b = c["band"]
            val = f"{c['B_crit']:.4g}" if np.isfinite(c["B_crit"]) else "-"
            lines.append(f"{c['N']:>10.4g}  {c['target']:>8.4g}  {val:>10}  "
                         f"[{b[0]:>8.4g}, {b[1]:>8.4g}]" + (f"  {c['reason']}" if c["reason"]
                                                            else ""))
    for pl in plans:
        lo, hi = pl["loss_band"]
        lines += ["", f"compute {pl['compute']:.4g}: N = {pl['N']:.4g}, B = {pl['B']:.4g}, "
                      f"K = {pl['K']:.4g}, loss {pl['loss']:.4g} [{lo:.4g}, {hi:.4g}]; over the "
                      f"fold fits N in [{pl['N_band'][0]:.3g}, {pl['N_band'][1]:.3g}], B in "
                      f"[{pl['B_band'][0]:.3g}, {pl['B_band'][1]:.3g}]"]
        lines += [f"  note: {f}" for f in pl["flags"]]
    return "\n".join(lines)


def run_table(path: str, out: Any, *, family: str = "nqm", uncertainty: str = "cv",
              seed: int = 0, keep_filtered: bool = False, compute: str | None = None,
              max_steps: float | None = None, max_batch: float | None = None,
              predict: str | None = None, argv: list[str] | None = None) -> dict[str, Any]:
    """Fit a final-loss table, plan, and write ``calibration.json`` and ``predictions.csv``.

    Parameters
    ----------
    path : str
        The table (:func:`~nqm_mc.calibration.table.read_table`).
    out : nqm_mc._files.Output
        The prepared output directory.
    family, uncertainty, seed
        As in :func:`~nqm_mc.calibration.sizes.fit_table` ("bootstrap" and "jacobian" mean
        "cv" here).
    keep_filtered : bool
        Keep rows marked ``filtered``.
    compute : str, optional
        Comma-separated compute budgets to plan for (default: 4x and 64x the largest budget
        of the table).
    max_steps, max_batch : float, optional
        Constraints of the plans.
    predict : str, optional
        A CSV of rows (N, B, K) to predict (default: the table's own rows).
    argv : list of str, optional
        The command line (provenance).

    Returns
    -------
    dict
        ``fit``, ``plans``, ``critical``, ``predictions``, ``report`` (text), ``record``.
    """
    from nqm_mc import _files
    from nqm_mc.results import provenance
    table = read_table(path, drop_filtered=not keep_filtered)
    budgets = _numbers(compute, "--compute")
    rows = read_table_rows(predict) if predict else None
    unc = "none" if uncertainty == "none" else "cv"
    fit = fit_table(table, family=family, uncertainty=unc, seed=seed)
    if not budgets:
        top = float(np.max(table.budgets))
        budgets = [4 * top, 64 * top]
    plans = [plan(fit, c, max_steps=max_steps, max_batch=max_batch) for c in budgets]
    crit = critical_batch_sizes(fit)
    if rows is None:
        rows = np.column_stack([table.N if table.has_sizes else np.full(len(table), fit.n_ref),
                                table.B, table.K])
    pred = predict_final_loss(fit, rows)
    csv_rows = [{"N": float(r[0]), "B": int(r[1]), "K": int(r[2]), "loss": float(v),
                 "loss_lo": float(lo), "loss_hi": float(hi), "flags": "; ".join(fl)}
                for r, v, lo, hi, fl in zip(rows, pred.value, pred.lo, pred.hi, pred["flags"],
                                            strict=True)]
    _files.write_csv(out.path("predictions.csv"), ["N", "B", "K", "loss", "loss_lo", "loss_hi",
                                                   "flags"], csv_rows, overwrite=out.overwrite)
    record: dict[str, Any] = {"input": {"path": os.path.abspath(path), "sha256": sha256(path),
                        "runs": len(table), "kept_filtered": keep_filtered},
              "command": argv, "versions": provenance()}
    record.update(fit.to_dict())
    record["plans"] = plans
    record["critical_batch_sizes"] = crit
    _files.write_json(out.path("calibration.json"), record, overwrite=out.overwrite)
    report = format_table_report(fit, plans, crit)
    return {"fit": fit, "plans": plans, "critical": crit, "predictions": csv_rows,
            "report": report, "record": record}
