"""The verdict of a theory check: its comparisons, their judgement and their report.

:class:`Comparison` is one family of z-scores (one statistic against its prediction);
:class:`Verdict` gathers the comparisons of a check, judged together by Holm-Bonferroni, with
the sensitivity and power check of the mean, and reports them (text, dict, figure). They are
made by :func:`nqm_mc.theory.verdict.check`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.results import SimulationResult
from nqm_mc.theory import stats as st

__all__ = ["Comparison", "Verdict"]


# --------------------------------------------------------------------------- comparisons
@dataclass
class Comparison:
    """One family of z-tests of a check (the mean, the variance, a statistic, covariances).

    Attributes
    ----------
    name : str
        "mean", "variance", "covariance" or the statistic's name.
    labels : list of str
        What each entry compares ("t=100", "t=100 band 2", "(10, 100)").
    estimate, predicted, se, z : ndarray
        The Monte Carlo estimate, the prediction, the standard error and
        ``(estimate - predicted) / se`` (0 where the entry is not tested), all of one shape.
    tested : ndarray of bool
        Entries with a positive standard error, in the family.
    """

    name: str
    labels: list[str]
    estimate: np.ndarray
    predicted: np.ndarray
    se: np.ndarray
    z: np.ndarray
    tested: np.ndarray

    @classmethod
    def build(cls, name: str, labels: list[str], estimate: ArrayLike, predicted: ArrayLike,
              se: ArrayLike) -> Comparison:
        """Compute the z-scores where the standard error is positive and finite."""
        est, pred = np.asarray(estimate, float), np.asarray(predicted, float)
        s = np.asarray(se, float)
        tested = np.isfinite(s) & (s > 0)
        z = np.zeros(est.shape)
        z[tested] = (est[tested] - pred[tested]) / s[tested]
        return cls(name, labels, est, pred, s, z, tested)

    @property
    def pvalues(self) -> np.ndarray:
        """Two-sided p-values of the tested entries."""
        return st.two_sided_p(self.z[self.tested])

    @property
    def max_abs_z(self) -> float:
        """Largest :math:`|z|` (0 when nothing is tested)."""
        return float(np.max(np.abs(self.z))) if self.z.size else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready arrays."""
        return {"name": self.name, "labels": self.labels, "estimate": self.estimate.tolist(),
                "predicted": self.predicted.tolist(), "se": self.se.tolist(),
                "z": self.z.tolist(), "tested": self.tested.tolist()}


def _mean_judgement(estimate: np.ndarray, se: np.ndarray, tested: np.ndarray,
                    predicted: np.ndarray, alpha: float) -> tuple[np.ndarray, bool, float]:
    """Return the z of a mean prediction (fixed s.e.) and Holm's verdict over its records."""
    z = np.zeros(estimate.shape)
    z[tested] = (estimate[tested] - predicted[tested]) / se[tested]
    reject, adj = st.holm(st.two_sided_p(z[tested]), alpha)
    return z, bool(reject.any()), float(adj.min()) if adj.size else 1.0


# --------------------------------------------------------------------------- the verdict
@dataclass
class Verdict:
    r"""The outcome of :func:`check`.

    Attributes
    ----------
    passed : bool
        Every comparison within the family-wise threshold (Holm at ``family_alpha``), the
        records with zero standard error equal to the prediction up to rounding, and no run
        diverged.
    steps : ndarray of int64, shape (R,)
        The recorded steps.
    z : ndarray, shape (R,)
        z-scores of the mean, :math:`(\bar L_t - \text{prediction}_t) / \mathrm{se}_t` (0 at
        records with zero standard error).
    threshold : float
        The Bonferroni threshold on :math:`|z|` over every comparison (``n_tests``).
    max_abs_z : float
        The largest :math:`|z|` over every z-test.
    p_value : float
        The smallest Holm-adjusted p-value (the check fails when it is at most
        ``family_alpha``).
    n_tests : int
        Comparisons in the family (z-tests and the Kolmogorov-Smirnov test if any).
    comparisons : dict of str to Comparison
        Every family of z-tests by name ("mean", "variance", "covariance", statistics).
    mean_threshold : float
        The threshold of the mean test alone (Bonferroni over its records), which the
        sensitivity, the power check and ``alternative`` use.
    sensitivity : float
        The smallest relative deviation of the mean, the same at every record after step 0,
        that the mean test detects with probability ``power``; ``sensitivity_step`` is where it
        is reached, ``sensitivity_worst`` what a deviation at one record only needs.
    power : float
        Detection probability of the sensitivity.
    power_caught : bool
        The prediction times (1 + sensitivity) and times (1 - sensitivity) are both rejected by
        the mean test. None without a mean prediction.
    power_max_abs_z : tuple of float
        max :math:`|z|` of the two perturbed predictions.
    alternative_z, alternative_rejected, alternative_p_value
        The mean test against the ``alternative`` prediction (None without one).
    ks_statistic, ks_p : float or None
        The Kolmogorov-Smirnov test of the last record's losses against ``loss_law``.
    deterministic_ok : bool
        Records of zero standard error equal the prediction within ``tolerance``.
    n_runs, n_diverged : int
        Runs, and runs diverged by the last record.
    family_alpha : float
        The family-wise error.
    notes : list of str
        Why the check failed, in words.
    result : SimulationResult
        The Monte Carlo run.
    """

    passed: bool
    steps: np.ndarray
    z: np.ndarray
    threshold: float
    max_abs_z: float
    p_value: float
    n_tests: int
    comparisons: dict[str, Comparison]
    mean_threshold: float
    sensitivity: float
    sensitivity_step: int
    sensitivity_worst: float
    power: float
    power_caught: bool | None
    power_max_abs_z: tuple[float, float]
    family_alpha: float
    deterministic_ok: bool
    n_runs: int
    n_diverged: int
    result: SimulationResult = field(repr=False)
    alternative_z: np.ndarray | None = None
    alternative_rejected: bool | None = None
    alternative_p_value: float | None = None
    ks_statistic: float | None = None
    ks_p: float | None = None
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def mean(self) -> Comparison | None:
        """The mean comparison (None without a mean prediction)."""
        return self.comparisons.get("mean")

    def to_dict(self) -> dict[str, Any]:
        """Return the verdict as JSON-ready values (arrays as lists)."""
        return {
            "passed": self.passed, "steps": self.steps.tolist(), "z": self.z.tolist(),
            "threshold": self.threshold, "max_abs_z": self.max_abs_z, "p_value": self.p_value,
            "n_tests": self.n_tests, "family_alpha": self.family_alpha,
            "mean_threshold": self.mean_threshold, "sensitivity": self.sensitivity,
            "sensitivity_step": self.sensitivity_step,
            "sensitivity_worst": self.sensitivity_worst, "power": self.power,
            "power_caught": self.power_caught, "power_max_abs_z": list(self.power_max_abs_z),
            "alternative_rejected": self.alternative_rejected,
            "alternative_p_value": self.alternative_p_value,
            "alternative_z": None if self.alternative_z is None else
            self.alternative_z.tolist(),
            "ks_statistic": self.ks_statistic, "ks_p": self.ks_p,
            "deterministic_ok": self.deterministic_ok, "n_runs": self.n_runs,
            "n_diverged": self.n_diverged, "notes": self.notes,
            "comparisons": {k: c.to_dict() for k, c in self.comparisons.items()}}

    def __str__(self) -> str:
        from nqm_mc._table import table
        head = (f"theory check {'PASSED' if self.passed else 'FAILED'}: max |z| = "
                f"{self.max_abs_z:.2f} against the threshold {self.threshold:.2f} (family-wise "
                f"error {self.family_alpha:g} over {self.n_tests} comparisons), {self.n_runs} "
                "runs")
        lines = [head]
        rows = []
        for c in self.comparisons.values():
            t = c.tested
            worst = int(np.argmax(np.abs(np.where(t, c.z, 0)).ravel())) if t.any() else None
            rows.append([c.name, int(t.sum()), c.max_abs_z,
                         c.labels[worst] if worst is not None else None])
        if self.ks_p is not None:
            rows.append(["KS, last record", 1, None, f"p = {self.ks_p:.3g}"])
        lines.append(table(["comparison", "tests", "max |z|", "worst at"], rows,
                           [None, None, ".2f", None], indent="  "))
        if self.comparisons.get("mean") is not None:
            m = self.comparisons["mean"]
            shown = np.unique(np.linspace(0, self.steps.size - 1, min(self.steps.size, 10))
                              .astype(int))
            lines.append(table(["step", "MC mean", "± s.e.", "predicted", "z"],
                               [[int(self.steps[i]), m.estimate[i], m.se[i], m.predicted[i],
                                 m.z[i]] for i in shown],
                               [None, ".6g", ".3g", ".6g", ".2f"], indent="  "))
            caught = {True: "caught", False: "NOT caught", None: "-"}[self.power_caught]
            lines.append(f"sensitivity: a relative error of {100 * self.sensitivity:.3g} % of "
                         f"the mean at every record is detected with probability "
                         f"{self.power:g} (best resolved at step {self.sensitivity_step}); "
                         f"power check: the prediction x (1 ± sensitivity) {caught} (max |z| "
                         f"{self.power_max_abs_z[0]:.2f}, {self.power_max_abs_z[1]:.2f})")
        if self.alternative_rejected is not None:
            lines.append("alternative prediction: " + ("rejected" if self.alternative_rejected
                                                       else "NOT rejected")
                         + f" (Holm p = {self.alternative_p_value:.3g})")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def plot(self, path: str | os.PathLike[str] | None = None,
             formats: str | Sequence[str] | None = None, title: str | None = None) -> Any:
        """Draw the mean with its 95 % band over the prediction, and a residual panel of z.

        Parameters
        ----------
        path : str or path-like, optional
            Where to save the figure (its extension or ``formats`` choose the format); without
            it the figure is returned unsaved.
        formats : str or sequence of str, optional
            Formats among png, pdf and svg.
        title : str, optional
            The figure's title (default: the verdict).

        Returns
        -------
        list of str or matplotlib Figure
            The paths written, or the figure when ``path`` is None.
        """
        from nqm_mc import style

        t = self.steps
        with style.context() as plt:
            fig, a, b = style.mc_figure(plt, 6.2, 5.4)
            m = self.comparisons.get("mean")
            if m is not None:
                a.plot(t, m.predicted, color=style.EXACT, lw=1.4, label="predicted E[L(t)]",
                       zorder=3)
                if np.isfinite(self.sensitivity):
                    for sgn in (1, -1):
                        a.plot(t, m.predicted * (1 + sgn * self.sensitivity), color=style.TARGET,
                               ls=(0, (1, 1.5)), lw=1.0,
                               label=f"prediction x (1 ± {100 * self.sensitivity:.2g} %): "
                                     "sensitivity" if sgn > 0 else None)
                every = max(1, t.size // 60)
                a.errorbar(t[::every], m.estimate[::every], yerr=1.96 * m.se[::every], fmt="o",
                           ms=3.5, color=style.MONTE_CARLO, mfc="white", mew=1, capsize=0,
                           zorder=4, label=f"Monte Carlo mean ± 1.96 s.e. (N = "
                                           f"{style.fmt(self.n_runs)})")
                style.log_steps(a, t, "")
                style.log_y(a)
                a.set_ylabel("loss L(t)")
                style.legend(a, fontsize=7)
            text = title or (f"theory check {'passed' if self.passed else 'FAILED'}: max |z| = "
                             f"{self.max_abs_z:.2f}, threshold {self.threshold:.2f}")
            style.title(a, text)
            z = np.where(m.tested, m.z, np.nan) if m is not None else np.full(t.size, np.nan)
            style.residual_panel(b, t, z, self.threshold,
                                 f"family-wise {self.family_alpha:g} over {self.n_tests} tests")
            v = self.comparisons.get("variance")
            if v is not None:
                b.plot(t, np.where(v.tested, v.z, np.nan), "s", ms=3, color=style.OKABE_ITO[
                    "orange"], mfc="white", mew=1, label="z of the variance")
                b.plot([], [], "o", ms=3, color=style.MONTE_CARLO, mfc="white", mew=1,
                       label="z of the mean")
                style.legend(b, fontsize=6, loc="lower right")
                finite = np.abs(np.concatenate([z, v.z])[np.isfinite(np.concatenate([z, v.z]))])
                lim = max(self.threshold * 1.6, float(finite.max()) * 1.15 if finite.size else 0)
                b.set_ylim(-lim, lim)
            b.set_ylabel("z = (MC − predicted)/s.e.")
            style.log_steps(b, t)
            if path is None:
                return fig
            return style.save(fig, path, formats)
