r"""Optimizer specifications.

Every optimizer is a small frozen object that checks its own arguments. Preconditioning with
power :math:`p` (:math:`P = H^p`) replaces the stochastic gradient :math:`g` by
:math:`\tilde g = h^{-p} g` in each of them; ``ema`` adds an exponential moving average of the
iterates on top of any of them.

Notes
-----
Update rules, exactly as simulated (per direction, :math:`\tilde g = h^{-p}(h\theta + \xi)`):

* SGD: :math:`\theta \leftarrow \theta - \alpha_t \tilde g`.
* Heavy ball (the paper's form, gradient weight 1): :math:`m \leftarrow \beta m + \tilde g`,
  :math:`\theta \leftarrow \theta - \alpha_t m`, :math:`m(0) = 0`. Effective learning rate
  :math:`\alpha / (1 - \beta)`.
* Nesterov (PyTorch/optax convention): :math:`m \leftarrow \beta m + \tilde g`,
  :math:`\theta \leftarrow \theta - \alpha_t (\tilde g + \beta m)`.
* EMA of iterates, after the :math:`\theta` update:
  :math:`e \leftarrow \gamma e + (1 - \gamma)\theta`, :math:`e(0) = \theta(0)`; the reported loss
  is the loss at :math:`e` (the loss at :math:`\theta` is reported too).

References
----------
G. Zhang et al., NeurIPS 2019, arXiv:1907.04164, sections 3 and 4.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from nqm_mc.spec._checks import ParameterError, check_real
from nqm_mc.spec.codes import (
    KIND_ADAGRAD,
    KIND_ADAM,
    KIND_HEAVY_BALL,
    KIND_NESTEROV,
    KIND_RMSPROP,
    KIND_SGD,
    KIND_SIGN,
)
from nqm_mc.spec.schedules import Schedule, as_schedule, checked_values

__all__ = ["SGD", "HeavyBall", "Nesterov", "Adam", "RMSProp", "Adagrad", "SignSGD",
           "OPTIMIZERS", "optimizer_from_dict", "Optimizer"]



def _check_common(obj: Optimizer) -> None:
    name = type(obj).__name__
    object.__setattr__(obj, "learning_rate", as_schedule(obj.learning_rate, "learning_rate", name))
    if isinstance(obj.learning_rate, Schedule) and obj.learning_rate.is_constant:
        lr0 = float(checked_values(obj.learning_rate, 1, "learning_rate", name)[0])
        if lr0 <= 0:
            raise ParameterError(f"The 'learning_rate' parameter of {name} must be a float in "
                                 f"(0, inf). Got {lr0!r} instead.")
    object.__setattr__(obj, "preconditioning", check_real(
        "preconditioning", obj.preconditioning, name, low=0.0, high=1.0, closed=(True, True)))
    if obj.ema is not None:
        object.__setattr__(obj, "ema", check_real("ema", obj.ema, name, low=0.0, high=1.0,
                                                  closed=(True, False)))
    if obj.clip_norm is not None:
        object.__setattr__(obj, "clip_norm", check_real("clip_norm", obj.clip_norm, name,
                                                        low=0.0))
        if obj.clip_norm <= 0:
            raise ParameterError(f"The 'clip_norm' parameter of {name} must be a float in "
                                 f"(0, inf) or None. Got {obj.clip_norm!r} instead.")


class Optimizer:
    """Common behaviour of the linear optimizers."""

    name: str = "optimizer"
    kind_code: int = -1
    # fields of every subclass (the learning rate is a Schedule once checked)
    learning_rate: Any
    preconditioning: float
    ema: float | None
    clip_norm: float | None

    @property
    def has_momentum(self) -> bool:
        """True for heavy-ball and Nesterov momentum."""
        return self.kind_code in (KIND_HEAVY_BALL, KIND_NESTEROV)

    @property
    def is_linear(self) -> bool:
        """True when the update is linear in the gradient (the exact engine applies).

        That is SGD, heavy-ball and Nesterov without gradient clipping.
        """
        return self.kind_code <= KIND_NESTEROV and self.clip_norm is None

    @property
    def is_constant(self) -> bool:
        """True when every hyperparameter is constant in time (fast exact paths apply)."""
        return self.learning_rate.is_constant

    @property
    def base_learning_rate(self) -> float:
        """The learning rate at t = 0."""
        return float(checked_values(self.learning_rate, 1, "learning_rate",
                                    type(self).__name__)[0])

    @property
    def effective_learning_rate(self) -> float:
        """The effective learning rate at t = 0: alpha / (1 - beta) with momentum, else alpha."""
        beta = getattr(self, "momentum", 0.0)
        return self.base_learning_rate / (1.0 - beta)

    def with_(self, **changes: Any) -> Any:
        """Return a copy with some fields changed (validated again).

        Parameters
        ----------
        **changes
            New values of fields, by name.

        Returns
        -------
        Optimizer
            An optimizer of the same class.

        Raises
        ------
        ParameterError
            If a field is unknown or a new value is invalid.
        """
        try:
            return replace(self, **changes)  # type: ignore[type-var]  # subclasses are dataclasses
        except TypeError as err:  # an unknown field
            raise ParameterError(f"{type(self).__name__}.with_: {err}") from None

    def to_dict(self) -> dict[str, Any]:
        """Return the optimizer as a plain dict (inverse of :func:`optimizer_from_dict`).

        Returns
        -------
        dict
            ``{"name": ..., "learning_rate": ..., ...}``.
        """
        d: dict[str, Any] = {"name": self.name, "learning_rate": self.learning_rate.to_dict(),
                             "ema": self.ema}
        if self.kind_code <= KIND_NESTEROV:
            d["preconditioning"] = self.preconditioning
        for key in ("momentum", "beta1", "beta2", "decay", "eps"):
            if hasattr(self, key):
                d[key] = getattr(self, key)
        if self.clip_norm is not None:
            d["clip_norm"] = self.clip_norm
        return d

    # the adaptive optimizers' hyperparameters as the kernel takes them
    @property
    def kernel_params(self) -> tuple[float, float, float]:
        """(beta1 or momentum or decay, beta2, eps) for the Monte Carlo kernel."""
        return (getattr(self, "momentum", getattr(self, "beta1", getattr(self, "decay", 0.0))),
                getattr(self, "beta2", 0.0), getattr(self, "eps", 0.0))


@dataclass(frozen=True)
class SGD(Optimizer):
    """Stochastic gradient descent, optionally preconditioned (P = H^p) and iterate-averaged.

    Parameters
    ----------
    learning_rate : float or Schedule
        alpha > 0, or a schedule alpha_t.
    preconditioning : float in [0, 1]
        The power p of the preconditioner H^p (0: none, 1: Newton).
    ema : float in [0, 1), optional
        Decay gamma of an exponential moving average of the iterates.
    clip_norm : float > 0, optional
        Clip the (preconditioned) stochastic gradient to this Euclidean norm before the update
        (Monte Carlo only: clipping makes the update nonlinear).
    """

    learning_rate: float | Schedule
    preconditioning: float = 0.0
    ema: float | None = None
    clip_norm: float | None = None
    name = "sgd"
    kind_code = KIND_SGD

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass(frozen=True)
class HeavyBall(Optimizer):
    """Heavy-ball momentum in the paper's form: m <- beta m + g ; theta <- theta - alpha m."""

    learning_rate: float | Schedule
    momentum: float = 0.9
    preconditioning: float = 0.0
    ema: float | None = None
    clip_norm: float | None = None
    name = "heavy_ball"
    kind_code = KIND_HEAVY_BALL

    def __post_init__(self) -> None:
        _check_common(self)
        object.__setattr__(self, "momentum", check_real(
            "momentum", self.momentum, type(self).__name__, low=0.0, high=1.0,
            closed=(True, False)))


@dataclass(frozen=True)
class Nesterov(HeavyBall):
    """Nesterov momentum: m <- beta m + g ; theta <- theta - alpha (g + beta m)."""

    name = "nesterov"
    kind_code = KIND_NESTEROV


def _check_unit(obj: Optimizer, key: str, closed_low: bool = True) -> None:
    object.__setattr__(obj, key, check_real(key, getattr(obj, key), type(obj).__name__, low=0.0,
                                            high=1.0, closed=(closed_low, False)))


def _check_eps(obj: Adam | RMSProp | Adagrad) -> None:
    eps = check_real("eps", obj.eps, type(obj).__name__, low=0.0)
    if eps <= 0:
        raise ParameterError(f"The 'eps' parameter of {type(obj).__name__} must be a float in "
                             f"(0, inf). Got {obj.eps!r} instead.")
    object.__setattr__(obj, "eps", eps)


class _Adaptive(Optimizer):
    """Adaptive optimizers act on the raw stochastic gradient g = h theta + xi.

    No fixed preconditioner: their own per-coordinate scaling is the point. Monte Carlo only.
    """

    preconditioning = 0.0

    def __post_init__(self) -> None:
        _check_common(self)


@dataclass(frozen=True)
class Adam(_Adaptive):
    r"""Adam with bias correction.

    m <- b1 m + (1 - b1) g, v <- b2 v + (1 - b2) g^2,
    theta <- theta - alpha_t m_hat / (sqrt(v_hat) + eps), m_hat = m / (1 - b1^t),
    v_hat = v / (1 - b2^t) (t = 1, 2, ...).
    """

    learning_rate: float | Schedule
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    ema: float | None = None
    clip_norm: float | None = None
    name = "adam"
    kind_code = KIND_ADAM

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_unit(self, "beta1")
        _check_unit(self, "beta2")
        _check_eps(self)


@dataclass(frozen=True)
class RMSProp(_Adaptive):
    """RMSProp: v <- decay v + (1 - decay) g^2, theta <- theta - alpha_t g / (sqrt(v) + eps).

    The second moment starts at v(0) = 0.
    """

    learning_rate: float | Schedule
    decay: float = 0.99
    eps: float = 1e-8
    ema: float | None = None
    clip_norm: float | None = None
    name = "rmsprop"
    kind_code = KIND_RMSPROP

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_unit(self, "decay")
        _check_eps(self)


@dataclass(frozen=True)
class Adagrad(_Adaptive):
    """Adagrad: v <- v + g^2, theta <- theta - alpha_t g / (sqrt(v) + eps), v(0) = 0."""

    learning_rate: float | Schedule
    eps: float = 1e-10
    ema: float | None = None
    clip_norm: float | None = None
    name = "adagrad"
    kind_code = KIND_ADAGRAD

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_eps(self)


@dataclass(frozen=True)
class SignSGD(_Adaptive):
    """sign-SGD: theta <- theta - alpha_t sign(g) (sign(0) = 0)."""

    learning_rate: float | Schedule
    ema: float | None = None
    clip_norm: float | None = None
    name = "sign_sgd"
    kind_code = KIND_SIGN

    def __post_init__(self) -> None:
        super().__post_init__()


OPTIMIZERS = {"sgd": SGD, "heavy_ball": HeavyBall, "momentum": HeavyBall, "nesterov": Nesterov,
              "adam": Adam, "rmsprop": RMSProp, "adagrad": Adagrad, "sign_sgd": SignSGD}


def optimizer_from_dict(d: dict[str, Any]) -> Optimizer:
    """Build an optimizer from ``{"name": ..., **params}`` (inverse of ``to_dict``).

    Parameters
    ----------
    d : dict
        The optimizer's name (a key of ``OPTIMIZERS``) and parameters.

    Returns
    -------
    Optimizer

    Raises
    ------
    ParameterError
        If ``d`` is not a dict, the name is unknown or a parameter is invalid.
    """
    if not isinstance(d, dict):
        raise ParameterError(f"optimizer_from_dict needs a dict. Got {type(d).__name__} instead.")
    d = dict(d)
    name = d.pop("name", None)
    if not isinstance(name, str) or name not in OPTIMIZERS:
        allowed = ", ".join(repr(k) for k in OPTIMIZERS)
        raise ParameterError(f"The 'name' of an optimizer must be one of {allowed}. "
                             f"Got {name!r} instead.")
    cls = OPTIMIZERS[name]
    try:
        return cls(**d)
    except TypeError as err:
        raise ParameterError(f"Bad parameters for optimizer {name!r}: {err}") from None
