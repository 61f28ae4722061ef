"""The Monte Carlo engine: many noisy trajectories in parallel, reproducibly.

- :mod:`~nqm_mc.montecarlo.driver` -- :func:`simulate` and :func:`simulate_many`: checks,
  work split into groups of trajectories;
- :mod:`~nqm_mc.montecarlo.blocks` -- groups of trajectories run, their statistics merged in a
  fixed order into the result;
- :mod:`~nqm_mc.montecarlo._kernels` -- the step kernels (every update as written);
- :mod:`~nqm_mc.montecarlo._rng` -- the counter-based generator (Philox4x32-10, Box-Muller);
- :mod:`~nqm_mc.montecarlo._interrupt` -- prompt, clean stops on SIGINT and SIGTERM;
- :mod:`~nqm_mc.montecarlo.distributed` -- the Dask executor.
"""

from nqm_mc.montecarlo.blocks import QUANTILE_LEVELS
from nqm_mc.montecarlo.driver import record_steps, simulate, simulate_many

__all__ = ["simulate", "simulate_many", "record_steps", "QUANTILE_LEVELS"]
