"""Argument checks shared by the exact engine's public functions."""

from __future__ import annotations

from nqm_mc.spec._checks import ParameterError
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer
from nqm_mc.spec.schedules import BatchSchedule, as_batch_schedule, checked_values


def _check_model(model: object, owner: str) -> None:
    if not isinstance(model, NQM):
        raise ParameterError(f"The 'model' parameter of {owner} must be an NQM. "
                             f"Got {type(model).__name__} instead.")


def _check_optimizer(opt: object, owner: str) -> None:
    if not isinstance(opt, Optimizer):
        raise ParameterError(f"The 'optimizer' parameter of {owner} must be an optimizer spec "
                             f"(SGD, HeavyBall, Nesterov). Got {type(opt).__name__} instead.")
    if not opt.is_linear:
        what = (f"gradient clipping (clip_norm={opt.clip_norm!r})" if opt.clip_norm is not None
                else f"{type(opt).__name__}")
        raise ParameterError(f"The 'optimizer' parameter of {owner}: the exact engine needs an "
                             f"update linear in the gradient (SGD, HeavyBall, Nesterov without "
                             f"clipping); {what} is nonlinear. Use nqm_mc.simulate.")


def _n_chunks(G: int) -> int:
    return int(max(1, min(G, 64)))


def _constant_hparams(optimizer: Optimizer, batch_size: int | BatchSchedule,
                      owner: str) -> tuple[float, float]:
    if not optimizer.is_constant:
        raise ParameterError(f"{owner} needs a constant learning rate; use expected_loss for "
                             f"schedules. Got {optimizer.learning_rate!r} instead.")
    batch = as_batch_schedule(batch_size, "batch_size", owner)
    if not batch.is_constant:
        raise ParameterError(f"{owner} needs a constant batch size; use expected_loss for "
                             f"batch-size schedules. Got {batch!r} instead.")
    return (optimizer.base_learning_rate,
            float(checked_values(batch, 1, "batch_size", owner)[0]))
