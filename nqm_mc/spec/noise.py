"""Gradient-noise laws for the Monte Carlo engine, all with the model's covariance.

The stochastic gradient of direction i is h_i theta_i + sqrt(c_i / B) z_i, where z has zero
mean and unit variance, independently across steps, under every law:

* ``Gaussian()``: z standard normal (the NQM of the paper; the fast kernels).
* ``StudentT(nu)``: z Student-t with nu > 2 degrees of freedom, scaled to unit variance
  (heavy tails: the kurtosis is infinite for nu <= 4).
* ``FiniteData(n, seed)``: a finite training set. n per-example noise vectors s_k (standard
  normal draws from ``seed``, then centred and scaled so that, per direction, their mean is 0
  and their population variance 1) are fixed for the whole run; each step averages a batch of B
  of them drawn without replacement, rescaled by the inverse finite-population correction
  sqrt((n - 1) / (n - B)) so that the batch mean again has variance c / B. It needs B < n.

The exact engine's expected loss depends on the noise only through its second moments, so it
holds under every law for the linear optimizers; the distribution of the loss (quantiles,
hitting times) does not (see ``nqm-mc noise-study``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import DTypeLike

from nqm_mc.spec._checks import ParameterError, check_int, check_real
from nqm_mc.spec.codes import NOISE_FINITE, NOISE_GAUSSIAN, NOISE_STUDENT_T

__all__ = ["Gaussian", "StudentT", "FiniteData", "noise_from_dict", "as_noise"]



@dataclass(frozen=True)
class Gaussian:
    """Gaussian gradient noise (the default)."""

    code = NOISE_GAUSSIAN
    name = "gaussian"

    def to_dict(self) -> dict[str, Any]:
        """Return the law as a plain dict (inverse of :func:`noise_from_dict`)."""
        return {"name": self.name}


@dataclass(frozen=True)
class StudentT:
    """Student-t gradient noise with ``nu`` > 2 degrees of freedom, unit variance."""

    nu: float
    code = NOISE_STUDENT_T
    name = "student_t"

    def __post_init__(self) -> None:
        nu = check_real("nu", self.nu, "StudentT", low=2.0)
        if nu <= 2.0:
            raise ParameterError(f"The 'nu' parameter of StudentT must be a float in (2, inf) "
                                 f"(finite variance). Got {self.nu!r} instead.")
        object.__setattr__(self, "nu", nu)

    def to_dict(self) -> dict[str, Any]:
        """Return the law as a plain dict (inverse of :func:`noise_from_dict`)."""
        return {"name": self.name, "nu": self.nu}


@dataclass(frozen=True)
class FiniteData:
    """Minibatches without replacement from ``n`` fixed per-example gradients."""

    n: int
    seed: int = 0
    code = NOISE_FINITE
    name = "finite_data"

    def __post_init__(self) -> None:
        object.__setattr__(self, "n", check_int("n", self.n, "FiniteData", low=2))
        object.__setattr__(self, "seed", check_int("seed", self.seed, "FiniteData", low=0,
                                                   high=2 ** 64 - 1))

    def to_dict(self) -> dict[str, Any]:
        """Return the law as a plain dict (inverse of :func:`noise_from_dict`)."""
        return {"name": self.name, "n": self.n, "seed": self.seed}

    def examples(self, d: int, dtype: DTypeLike = np.float64) -> np.ndarray:
        """Return the (n, d) standardised per-example noise.

        Mean 0 and population variance 1 per column, from numpy's Philox generator keyed by
        ``seed``.

        Parameters
        ----------
        d : int
            Number of directions (columns).
        dtype : dtype, default float64
            The result's floating-point type.

        Returns
        -------
        ndarray, shape (n, d)
            C-contiguous.
        """
        rng = np.random.Generator(np.random.Philox(self.seed))
        s = rng.standard_normal((self.n, d))
        s -= s.mean(0)
        s /= np.sqrt((s ** 2).mean(0))
        return np.ascontiguousarray(s, dtype=dtype)


NOISES = {"gaussian": Gaussian, "student_t": StudentT, "finite_data": FiniteData}


def noise_from_dict(d: dict[str, Any]) -> Gaussian | StudentT | FiniteData:
    """Build a noise law from ``{"name": ..., **params}`` (inverse of ``to_dict``).

    Parameters
    ----------
    d : dict
        The law's name (a key of ``NOISES``) and parameters.

    Returns
    -------
    Gaussian, StudentT or FiniteData

    Raises
    ------
    ParameterError
        If ``d`` is not a dict, the name is unknown or a parameter is invalid.
    """
    if not isinstance(d, dict):
        raise ParameterError(f"noise_from_dict needs a dict. Got {type(d).__name__} instead.")
    d = dict(d)
    name = d.pop("name", None)
    if not isinstance(name, str) or name not in NOISES:
        raise ParameterError("The 'name' of a noise law must be one of "
                             f"{', '.join(map(repr, NOISES))}. Got {name!r} instead.")
    try:
        return NOISES[name](**d)
    except TypeError as err:
        raise ParameterError(f"Bad parameters for noise {name!r}: {err}") from None


def as_noise(noise: object, owner: str) -> Gaussian | StudentT | FiniteData:
    """Coerce a noise argument to a law.

    Parameters
    ----------
    noise : Gaussian, StudentT, FiniteData, "gaussian" or None
        None or "gaussian" gives ``Gaussian()``; a law passes through.
    owner : str
        The function taking the argument, named in error messages.

    Returns
    -------
    Gaussian, StudentT or FiniteData

    Raises
    ------
    ParameterError
        If ``noise`` is anything else.
    """
    if noise is None or (isinstance(noise, str) and noise == "gaussian"):
        return Gaussian()
    if isinstance(noise, (Gaussian, StudentT, FiniteData)):
        return noise
    raise ParameterError(f"The 'noise' parameter of {owner} must be Gaussian(), StudentT(nu) or "
                         f"FiniteData(n, seed). Got {noise!r} instead.")
