"""Types shared by the annotations of the public modules (for type checkers only).

:class:`OptimizerSpec` is the interface the engines read from an optimizer specification
(:class:`~nqm_mc.spec.optimizers.SGD`, :class:`~nqm_mc.spec.optimizers.HeavyBall`,
:class:`~nqm_mc.spec.optimizers.Nesterov`, :class:`~nqm_mc.spec.optimizers.Adam`, ...). It is
a structural type, so every optimizer class satisfies it without inheriting from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, Union

if TYPE_CHECKING:
    from nqm_mc.spec.noise import FiniteData, Gaussian, StudentT

__all__ = ["OptimizerSpec", "NoiseSpec", "Dtype"]


class OptimizerSpec(Protocol):
    """What the engines read from an optimizer specification."""

    @property
    def name(self) -> str: ...

    @property
    def kind_code(self) -> int: ...

    @property
    def learning_rate(self) -> Any: ...  # a Schedule once checked

    @property
    def preconditioning(self) -> float: ...

    @property
    def ema(self) -> float | None: ...

    @property
    def clip_norm(self) -> float | None: ...

    @property
    def is_linear(self) -> bool: ...

    @property
    def is_constant(self) -> bool: ...

    @property
    def base_learning_rate(self) -> float: ...

    @property
    def kernel_params(self) -> tuple[float, float, float]: ...

    def with_(self, **changes: Any) -> Any: ...

    def to_dict(self) -> dict[str, Any]: ...


#: a law of the gradient noise
NoiseSpec = Union["Gaussian", "StudentT", "FiniteData"]
#: the state's floating-point precision
Dtype = Literal["float32", "float64"]
