r"""The built-in optimizers written as user rules (:class:`~nqm_mc.spec.user.UpdateRule`).

They go through the same door as a user's own rule and give the same bits as the built-in
kernels (the same operations in the same order), which the tests check; they are also how
a built-in optimizer runs under a user's :class:`~nqm_mc.spec.user.GradientNoise`.

Notes
-----
Per direction, :math:`g` the stochastic gradient:

* SGD: :math:`\theta \leftarrow \theta - \alpha_t g`;
* heavy ball: :math:`m \leftarrow \beta m + g,\ \theta \leftarrow \theta - \alpha_t m`;
* Nesterov: :math:`m \leftarrow \beta m + g,\ \theta \leftarrow \theta - \alpha_t(g + \beta m)`;
* Adam: :math:`m \leftarrow \beta_1 m + (1-\beta_1) g`,
  :math:`v \leftarrow \beta_2 v + (1-\beta_2) g^2`,
  :math:`\theta \leftarrow \theta - \alpha_t \hat m / (\sqrt{\hat v} + \epsilon)` with
  :math:`\hat m = m / (1 - \beta_1^{t+1})`, :math:`\hat v = v / (1 - \beta_2^{t+1})`.
"""

from __future__ import annotations

import math
from typing import Any

from nqm_mc.spec._checks import ParameterError
from nqm_mc.spec.optimizers import SGD, Adam, HeavyBall, Nesterov, Optimizer
from nqm_mc.spec.schedules import Schedule
from nqm_mc.spec.user import UpdateRule

__all__ = ["sgd_rule", "heavy_ball_rule", "nesterov_rule", "adam_rule", "as_update_rule"]


def sgd_update(theta, g, lr):  # pragma: no cover - compiled
    """SGD."""
    return theta - lr * g


def heavy_ball_update(theta, g, m, lr, momentum):  # pragma: no cover - compiled
    """Heavy ball in the paper's form."""
    m = momentum * m + g
    return theta - lr * m, m


def nesterov_update(theta, g, m, lr, momentum):  # pragma: no cover - compiled
    """Nesterov momentum."""
    m = momentum * m + g
    return theta - lr * (g + momentum * m), m


def adam_corrections(t, beta1, beta2):  # pragma: no cover - compiled
    """Adam's bias corrections at step t (once per step)."""
    return 1.0 - beta1 ** (t + 1), 1.0 - beta2 ** (t + 1)


def adam_update(theta, g, m, v, lr, beta1, beta2, eps, c1, c2):  # pragma: no cover - compiled
    """Adam with bias correction (c1, c2 from :func:`adam_corrections`)."""
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g * g
    return theta - lr * (m / c1) / (math.sqrt(v / c2) + eps), m, v


def sgd_rule(learning_rate: float | Schedule) -> UpdateRule:
    """Return SGD as a user rule.

    Parameters
    ----------
    learning_rate : float or Schedule
        The learning rate.

    Returns
    -------
    UpdateRule
    """
    return UpdateRule(sgd_update, learning_rate, name="sgd")


def heavy_ball_rule(learning_rate: float | Schedule,
                    momentum: float | Schedule = 0.9) -> UpdateRule:
    """Return heavy-ball momentum as a user rule.

    Parameters
    ----------
    learning_rate : float or Schedule
        The learning rate.
    momentum : float or Schedule
        beta.

    Returns
    -------
    UpdateRule
    """
    return UpdateRule(heavy_ball_update, learning_rate, state=("m",),
                      hyper={"momentum": momentum}, name="heavy_ball")


def nesterov_rule(learning_rate: float | Schedule,
                  momentum: float | Schedule = 0.9) -> UpdateRule:
    """Return Nesterov momentum as a user rule.

    Parameters
    ----------
    learning_rate : float or Schedule
        The learning rate.
    momentum : float or Schedule
        beta.

    Returns
    -------
    UpdateRule
    """
    return UpdateRule(nesterov_update, learning_rate, state=("m",),
                      hyper={"momentum": momentum}, name="nesterov")


def adam_rule(learning_rate: float | Schedule, beta1: float = 0.9, beta2: float = 0.999,
              eps: float = 1e-8) -> UpdateRule:
    """Return Adam as a user rule.

    Parameters
    ----------
    learning_rate : float or Schedule
        The learning rate.
    beta1, beta2, eps : float
        Adam's decays and epsilon.

    Returns
    -------
    UpdateRule
    """
    return UpdateRule(adam_update, learning_rate, state=("m", "v"),
                      hyper={"beta1": beta1, "beta2": beta2, "eps": eps}, name="adam",
                      prepare=adam_corrections, prepared=("c1", "c2"))


def as_update_rule(optimizer: Optimizer | UpdateRule) -> UpdateRule:
    """Return a built-in optimizer as the equivalent user rule (a rule passes through).

    Parameters
    ----------
    optimizer : SGD, HeavyBall, Nesterov, Adam or UpdateRule
        Without preconditioning, EMA or clipping.

    Returns
    -------
    UpdateRule

    Raises
    ------
    ParameterError
        For other optimizers and options (write them as an UpdateRule).
    """
    if isinstance(optimizer, UpdateRule):
        return optimizer
    extra = (getattr(optimizer, "preconditioning", 0.0) != 0.0 or optimizer.ema is not None
             or optimizer.clip_norm is not None)
    kind = type(optimizer)
    opt: Any = optimizer  # narrowed by kind below
    if not extra:
        if kind is SGD:
            return sgd_rule(opt.learning_rate)
        if kind is HeavyBall:
            return heavy_ball_rule(opt.learning_rate, opt.momentum)
        if kind is Nesterov:
            return nesterov_rule(opt.learning_rate, opt.momentum)
        if kind is Adam:
            return adam_rule(opt.learning_rate, opt.beta1, opt.beta2, opt.eps)
    raise ParameterError(
        f"A user GradientNoise runs with SGD, HeavyBall, Nesterov and Adam without "
        f"preconditioning, EMA or clipping, or with any UpdateRule. Got {optimizer!r}; write it "
        "as an UpdateRule (see the guide 'Your own optimizer, noise and theory').")
