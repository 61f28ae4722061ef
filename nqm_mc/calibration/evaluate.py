"""What fits and predictions share: bands, failures, the exact loss of a fitted member.

- :class:`Band` -- a prediction with its band over the parameter samples;
- :class:`CalibrationError` -- a fit that failed;
- :func:`model_loss` -- the exact E[L(t)] of one NQM at measured steps, on one thread
  (:func:`one_thread`);
- :class:`Fitted` -- what a prediction reads of a fitted calibration (the protocol that
  :class:`~nqm_mc.calibration.result.Calibration` satisfies), so that
  :mod:`~nqm_mc.calibration.predict` does not import the class that calls it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple, Protocol

import numpy as np

from nqm_mc.exact.engine import expected_loss, loss_at
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer

__all__ = ["Band", "CalibrationError", "Fitted", "model_loss", "one_thread", "quantiles"]


class CalibrationError(RuntimeError):
    """The fit failed; the message says why (too few points, no start converged, ...)."""


class Band(NamedTuple):
    """A prediction with its band from the parameter uncertainty.

    ``value`` is the prediction of the best fit; ``lo`` and ``hi`` the quantiles
    ``(1 - level) / 2`` and ``(1 + level) / 2`` over the parameter samples (equal to ``value``
    without uncertainty). Arrays or floats; ``inf`` marks an unreachable target. ``note``
    says why a value is missing or to be read with care ('' otherwise).
    """

    value: Any
    lo: Any
    hi: Any
    level: float
    note: str = ""


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run the exact engine and BLAS on one thread.

    The per-call work is small (tens of groups, matrices of a few hundred rows), and threads
    only add start-up and contention costs. BLAS is limited through ``threadpoolctl`` when it
    is installed (it comes with scikit-learn).
    """
    import numba
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
        blas: Any = threadpool_limits(1)
    except ImportError:  # pragma: no cover - optional
        blas = contextlib.nullcontext()
    old = numba.get_num_threads()
    numba.set_num_threads(1)
    try:
        with blas:
            yield
    finally:
        numba.set_num_threads(old)


def model_loss(model: NQM, optimizer: Optimizer, batch_size: int,
               steps: np.ndarray) -> np.ndarray:
    """Return the exact E[L(t)] of ``model`` at ``steps``.

    O(log t) jumps for constant hyperparameters, the per-step recurrence up to the last step
    for a schedule.
    """
    steps = np.asarray(steps, dtype=np.int64)
    if optimizer.is_constant:
        return np.asarray(loss_at(model, optimizer, batch_size, steps)[0], dtype=float)
    curve = expected_loss(model, optimizer, batch_size, record=steps)
    return np.asarray(curve.mean, dtype=float)


def quantiles(values: np.ndarray, level: float) -> tuple[Any, Any]:
    """Quantiles along axis 0 that tolerate infinities (nearest order statistics)."""
    q = ((1 - level) / 2, (1 + level) / 2)
    lo, hi = np.quantile(values, q, axis=0, method="nearest")
    return lo, hi



class Fitted(Protocol):
    """What the predictions of :mod:`~nqm_mc.calibration.predict` read of a calibration."""

    model: NQM
    floor: float
    level: float

    def _members(self, max_samples: int | None = None) -> list[tuple[NQM, float]]:
        """Return the NQM and floor of each parameter sample (the first ``max_samples``)."""
        ...

    def _band(self, value: Any, values: list[Any]) -> Band:
        """Return the band of ``value`` (best fit) over ``values`` (one per sample)."""
        ...

    def reachable(self, target: float) -> tuple[bool, str]:
        """Whether the best fit can reach ``target`` at all, and why not."""
        ...
