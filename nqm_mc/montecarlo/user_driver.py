"""The driver's side of user rules and noises: the job, and NaN reported as NaN.

:func:`nqm_mc.simulate` hands a job whose optimizer is an
:class:`~nqm_mc.spec.user.UpdateRule`, or whose noise is a
:class:`~nqm_mc.spec.user.GradientNoise`, to :func:`user_job`: the run is checked and
lowered as for the built-in kernels (the rule's learning rate in place of an optimizer's),
then the rule's own inputs and generated kernel are attached to the plan
(:mod:`nqm_mc.montecarlo.user_kernels`). A built-in optimizer under a user noise runs as its
user rule (:func:`~nqm_mc.spec.rule_library.as_update_rule`).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from nqm_mc.montecarlo.user_kernels import kernel_for, plan_user
from nqm_mc.spec._checks import ParameterError
from nqm_mc.spec.noise import Gaussian
from nqm_mc.spec.optimizers import SGD
from nqm_mc.spec.rule_library import as_update_rule
from nqm_mc.spec.user import GradientNoise

__all__ = ["user_job", "report_nan"]


def user_job(job_fn: Callable[..., Any], model: Any, optimizer: Any, batch_size: Any,
             n_steps: Any, n_runs: Any, seed: Any, record: Any, n_records: Any, target: Any,
             keep_paths: Any, dtype: Any, threads: Any, block_size: Any, n_bands: Any,
             noise: Any, method: str) -> Any:
    """Check and lower a simulation with a user rule or noise (arguments of the driver's job).

    Returns
    -------
    Job
        The driver's job, its plan carrying a :class:`~nqm_mc.montecarlo.user_kernels.UserPlan`.

    Raises
    ------
    ParameterError
        If an argument is invalid; RuleError if the rule or noise does not compile.
    """
    owner = "simulate"
    rule = as_update_rule(optimizer)
    user_noise = noise if isinstance(noise, GradientNoise) else None
    if user_noise is None and not (noise is None or noise == "gaussian"
                                   or isinstance(noise, Gaussian)):
        raise ParameterError(f"The 'noise' parameter of {owner} must be Gaussian() or a "
                             f"GradientNoise with the user rule {rule.name!r}. Got {noise!r} "
                             "instead.")
    if method == "skip":
        raise ParameterError(f"The 'method' parameter of {owner} can be 'skip' only for linear "
                             f"built-in optimizers with Gaussian noise, not the user rule "
                             f"{rule.name!r}. Use method='step' or 'auto'.")
    job = job_fn(model, SGD(rule.learning_rate), batch_size, n_steps, n_runs, seed, record,
                 n_records, target, keep_paths, dtype, threads, block_size, n_bands, None,
                 "step")
    inputs = job.plan.inputs
    inputs = inputs._replace(rule=inputs.rule._replace(general=True))
    _, c, _, _ = model.expand()
    user = plan_user(rule, user_noise, inputs, job.spec["n_steps"], c)
    kernel_for(rule, user_noise)  # generated and checked now: errors before any thread starts
    spec = {**job.spec, "optimizer": rule.to_dict(),
            "noise": user_noise.to_dict() if user_noise is not None else {"name": "gaussian"}}
    plan = dataclasses.replace(job.plan, inputs=inputs, user=user)
    return dataclasses.replace(job, plan=plan, spec=spec)


def report_nan(job: Any, nan_at: np.ndarray, runs: np.ndarray, mean: np.ndarray,
               var: np.ndarray, sem: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance and standard error NaN from the first step a run became NaN; a warning.

    Parameters
    ----------
    job : Job
        The simulation.
    nan_at : ndarray of int64
        Per run, the step its loss became NaN (-1: never).
    runs : ndarray
        The runs that became NaN.
    mean, var, sem : ndarray
        Per record.

    Returns
    -------
    mean, var, sem : ndarray
        With NaN at and after the first such step.
    """
    first = int(nan_at[runs].min())
    bad = job.steps >= first
    mean, var, sem = (np.where(bad, np.nan, x) for x in (mean, var, sem))
    who = job.spec["optimizer"]["name"]
    noise = job.spec["noise"].get("name", "gaussian")
    warnings.warn(f"Update rule {who!r} (noise {noise!r}) produced NaN in {runs.size} of "
                  f"{job.n_runs} runs (first: run {int(runs[0])} at step "
                  f"{int(nan_at[runs[0]])}); the mean is NaN from step {first} on.",
                  RuntimeWarning, stacklevel=4)
    return mean, var, sem
