"""Calibration: fit the power-law NQM with a loss floor to measured training curves.

>>> from nqm_mc.calibration import read_runs, calibrate       # doctest: +SKIP
>>> fit = calibrate(read_runs("examples/calibration_runs.csv"))  # doctest: +SKIP
>>> fit.critical_batch_size(target=0.3)                        # doctest: +SKIP

- :mod:`~nqm_mc.calibration.runs` -- :class:`Run`, :func:`read_runs`, :func:`write_runs`;
- :mod:`~nqm_mc.calibration.family` -- the power-law family and its coordinates;
- :mod:`~nqm_mc.calibration.fit` -- :func:`calibrate`, :class:`Calibration`, :class:`Band`;
- :mod:`~nqm_mc.calibration.predict` -- predictions with bands;
- :mod:`~nqm_mc.calibration.report` -- the table, figure and provenance of ``nqm-mc calibrate``;
- :mod:`~nqm_mc.calibration.table` -- final-loss tables (one row per run: N, B, K, loss);
- :mod:`~nqm_mc.calibration.sizes` -- the size-aware NQM fitted to them: cross-validated bands,
  predictions at new (N, B, K) (:mod:`~nqm_mc.calibration.size_model`), compute-optimal plans
  and critical batch size per model size (:mod:`~nqm_mc.calibration.size_plans`).

The method is described in ``docs/theory.md`` (section "Calibration").
"""

from nqm_mc.calibration.evaluate import Band, CalibrationError
from nqm_mc.calibration.family import COORDS, PARAMS, Family, power_law_model
from nqm_mc.calibration.fit import calibrate
from nqm_mc.calibration.result import Calibration
from nqm_mc.calibration.runs import Run, read_runs, write_runs
from nqm_mc.calibration.sizes import (
    TableFit,
    TablePrediction,
    critical_batch_sizes,
    fit_table,
    plan,
    predict_final_loss,
)
from nqm_mc.calibration.table import LossTable, make_table, read_table

__all__ = ["Run", "read_runs", "write_runs", "calibrate", "Calibration", "CalibrationError",
           "Band", "Family", "PARAMS", "COORDS", "power_law_model", "LossTable", "read_table",
           "make_table", "fit_table", "TableFit", "TablePrediction", "predict_final_loss",
           "plan", "critical_batch_sizes"]
