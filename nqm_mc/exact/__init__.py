"""The exact engine: moment recurrences without sampling.

Expected loss and its exact variance at every step (:func:`expected_loss`), at one step in
O(log t) (:func:`loss_at`), the steady state, stability, and the exact first crossing of a loss
target (:func:`steps_to_target`), and the covariance of the loss between two steps
(:func:`loss_covariance`). The theory is in ``docs/theory.md``.

- :mod:`~nqm_mc.exact.engine` -- the public functions (checks, results): the curves here,
  re-exporting :mod:`~nqm_mc.exact.stability` (stability, steady state) and
  :mod:`~nqm_mc.exact.targets` (steps to target);
- :mod:`~nqm_mc.exact.joint` -- two-time covariances of the loss (:func:`loss_covariance`);
- :mod:`~nqm_mc.exact.lowering` -- specifications to kernel inputs (:class:`LinearForm`);
- :mod:`~nqm_mc.exact._linalg`, :mod:`~nqm_mc.exact._powers`, :mod:`~nqm_mc.exact._moments`,
  :mod:`~nqm_mc.exact._crossing` -- the numba kernels, by concern;
- :mod:`~nqm_mc.exact.dense` -- the full covariance recurrence for rotated models.
"""

from nqm_mc.exact.engine import (
    ExactCurve,
    Stability,
    SteadyState,
    StepsToTarget,
    expected_loss,
    loss_at,
    stability,
    steady_state,
    steps_to_target,
    steps_to_target_batch,
)
from nqm_mc.exact.joint import LossCovariance, loss_covariance

__all__ = ["expected_loss", "loss_at", "stability", "steady_state", "steps_to_target",
           "steps_to_target_batch", "ExactCurve", "Stability", "SteadyState", "StepsToTarget",
           "loss_covariance", "LossCovariance"]
