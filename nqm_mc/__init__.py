"""nqm_mc: the noisy quadratic model, simulated and solved exactly.

Two engines share one specification: :mod:`nqm_mc.exact` computes expected losses, their
variance, steady states and steps to target from moment recurrences; the Monte Carlo engine
(:func:`nqm_mc.simulate`) runs many noisy trajectories in parallel with a counter-based random
number generator, reproducibly.
"""

from nqm_mc._cpu import prefer_wide_vectors

prefer_wide_vectors()  # before numba is imported; speed only, the same bits

from nqm_mc import _compat  # noqa: E402

_compat.install()  # the module paths of earlier versions still import

from nqm_mc._version import __version__  # noqa: E402
from nqm_mc.exact.engine import (  # noqa: E402
    expected_loss,
    loss_at,
    stability,
    steady_state,
    steps_to_target,
    steps_to_target_batch,
)
from nqm_mc.exact.joint import loss_covariance  # noqa: E402
from nqm_mc.montecarlo._interrupt import Interrupted, Terminated, sigterm_interrupts  # noqa: E402
from nqm_mc.montecarlo.driver import simulate  # noqa: E402
from nqm_mc.results import SimulationResult, load_result  # noqa: E402
from nqm_mc.spec import schedules  # noqa: E402
from nqm_mc.spec._checks import ParameterError  # noqa: E402
from nqm_mc.spec.model import NQM  # noqa: E402
from nqm_mc.spec.optimizers import SGD, HeavyBall, Nesterov  # noqa: E402
from nqm_mc.spec.user import (  # noqa: E402
    GradientNoise,
    LeastSquaresNoise,
    MinibatchLeastSquares,
    UpdateRule,
)
from nqm_mc.theory import Verdict, check, runs_needed  # noqa: E402

__all__ = [
    "NQM", "SGD", "HeavyBall", "Nesterov", "schedules", "expected_loss", "loss_at",
    "loss_covariance", "steady_state", "steps_to_target", "steps_to_target_batch", "stability",
    "simulate",
    "SimulationResult", "load_result", "ParameterError", "Interrupted", "Terminated",
    "sigterm_interrupts", "check", "runs_needed", "Verdict", "UpdateRule", "GradientNoise",
    "LeastSquaresNoise", "MinibatchLeastSquares", "__version__",
]
