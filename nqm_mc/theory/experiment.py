"""Running the experiment a theory check needs, from a TOML path, a dict or an Experiment.

:func:`complete_experiment` fills the command line's defaults, :func:`experiment_steps`
gives the steps it records and :func:`run_experiment` runs it (see
:func:`nqm_mc.theory.verdict.check`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Union

import numpy as np

from nqm_mc.results import SimulationResult
from nqm_mc.spec._checks import ParameterError

__all__ = ["complete_experiment", "experiment_steps", "run_experiment"]

#: What check accepts as its first argument besides a result: a TOML path, a dict, an Experiment.
ConfigLike = Union[str, "os.PathLike[str]", Mapping[str, Any], Any]  # noqa: UP007

#: the function named in error messages
OWNER = "check"


def _short(value: Any, n: int = 60) -> str:
    r = repr(value)
    return r if len(r) <= n else r[:n - 4] + " ..."


# --------------------------------------------------------------------------- running a config
def _experiment(config: ConfigLike) -> Any:
    from nqm_mc import config as cfg
    if isinstance(config, cfg.Experiment):
        return config
    if isinstance(config, Mapping):
        return cfg.parse(dict(config), src="config")
    if isinstance(config, (str, os.PathLike)):
        return cfg.load(config)
    raise TypeError(f"The 'result' parameter of {OWNER} must be a SimulationResult, an "
                    f"experiment (a TOML path, a dict or an Experiment). Got "
                    f"{_short(config)} instead.")


def complete_experiment(config: ConfigLike) -> Any:
    """Return the parsed experiment with the command line's default model, optimizer and batch.

    Parameters
    ----------
    config : str, path-like, dict or Experiment
        The experiment.

    Returns
    -------
    Experiment
        With ``model`` (default: the paper's, 10000 directions), ``optimizer`` (SGD at
        learning rate 0.1) and ``batch_size`` (32) set.
    """
    from nqm_mc.spec.model import NQM
    from nqm_mc.spec.optimizers import SGD
    exp = _experiment(config)
    if exp.model is None:
        exp.model = NQM.paper(10_000)
    if exp.optimizer is None:
        exp.optimizer = SGD(0.1)
    if exp.batch_size is None:
        exp.batch_size = 32
    return exp


def experiment_steps(exp: Any) -> np.ndarray:
    """Return the steps an experiment records (its run.steps, run.record and run.n_records)."""
    from nqm_mc.montecarlo.lowering import record_steps
    return record_steps(int(exp.run.get("steps", 1000)), exp.run.get("record", "log"),
                        int(exp.run.get("n_records", 40)))


def run_experiment(config: ConfigLike, *, runs: int | None = None, seed: int | None = None,
                   threads: int | None = None, keep_paths: int | None = None,
                   progress: bool | None = False) -> tuple[SimulationResult, Any]:
    """Run the Monte Carlo experiment a config describes, as ``nqm-mc simulate`` would.

    Parameters
    ----------
    config : str, path-like, dict or Experiment
        An experiment TOML file or its parsed form (see :mod:`nqm_mc.config`). [model],
        [optimizer] and [batch] default to the command line's (the paper's model with 10000
        directions, SGD at learning rate 0.1, batch size 32); [run] gives ``steps`` (1000),
        ``runs`` (100), ``seed`` (0), ``record`` ("log") and ``n_records`` (40), ``target``,
        ``dtype``, ``keep_paths``, ``method``, ``threads`` and ``block_size``.
    runs, seed, threads, keep_paths : int, optional
        Override the config's run keys.
    progress : bool, optional
        Progress line (default off).

    Returns
    -------
    result : SimulationResult
    experiment : Experiment
        The parsed config with its model, optimizer and batch size filled in.
    """
    from nqm_mc.montecarlo.driver import simulate
    exp = complete_experiment(config)
    run = dict(exp.run)
    for k, v in (("runs", runs), ("seed", seed), ("threads", threads),
                 ("keep_paths", keep_paths)):
        if v is not None:
            run[k] = v
    n_runs = int(run.get("runs", 100))
    keep = min(int(run.get("keep_paths", 0)), n_runs)
    method = run.get("method", "auto")
    if method not in ("auto", "step", "skip"):
        raise ParameterError(f"{exp.source}: bad value for 'run.method': got {method!r}; "
                             "allowed: 'auto', 'step', 'skip' (a Monte Carlo sampler)")
    res = simulate(exp.model, exp.optimizer, exp.batch_size, int(run.get("steps", 1000)),
                   n_runs, seed=int(run.get("seed", 0)), record=run.get("record", "log"),
                   n_records=int(run.get("n_records", 40)), target=run.get("target"),
                   keep_paths=keep, dtype=run.get("dtype", "float64"),
                   threads=run.get("threads"), block_size=int(run.get("block_size", 16)),
                   progress=progress, method=method)
    return res, exp
