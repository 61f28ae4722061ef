r"""Checking a theory of the loss against Monte Carlo.

:func:`check` compares a prediction of :math:`E[L_t]` (and optionally of
:math:`\mathrm{Var}[L_t]`, of other recorded statistics and of two-time covariances) with a
Monte Carlo run: z-scores against standard errors, one family-wise threshold over every
comparison, the sensitivity of the run and a power check. :func:`runs_needed` plans the number
of runs. :mod:`nqm_mc.theory.stats` holds the statistics both use, which the validation suite
(``python -m validation``) uses too.
"""

from nqm_mc.theory import stats
from nqm_mc.theory.verdict import (
    STATISTICS,
    Comparison,
    Verdict,
    check,
    complete_experiment,
    experiment_steps,
    run_experiment,
    runs_needed,
)

__all__ = ["check", "runs_needed", "Verdict", "Comparison", "STATISTICS", "run_experiment",
           "complete_experiment", "experiment_steps", "stats"]
