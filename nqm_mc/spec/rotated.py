r"""Non-aligned noisy quadratic models.

A Hessian and a noise covariance that are not diagonal in the same basis (moderate dimension:
every step costs O(d^2) in Monte Carlo, O(d^3) exactly).

In parameter coordinates :math:`\theta \in R^d`

.. math:: L(\theta) = \tfrac12 \theta^T H \theta,\quad H = U_H\,\mathrm{diag}(h)\,U_H^T,\qquad
          g = H\theta + \xi,\quad E[\xi\xi^T] = C / B,\quad C = U_C\,\mathrm{diag}(c)\,U_C^T,

with :math:`\theta(0) \sim N(\mu_0, \mathrm{diag}(v_0))`. ``RotatedNQM.from_nqm`` rotates the
noise, the Hessian or both of an axis-aligned NQM by seeded random rotations.

Exact expected loss
-------------------
*A preconditioner that commutes with H* (P = H^p, including none): in H's eigenbasis
:math:`y = U_H^T\theta` every direction evolves on its own,
:math:`y_i \leftarrow y_i - \alpha h_i^{-p}(h_i y_i + \eta_i)` with
:math:`\eta = U_H^T\xi`. The loss :math:`\tfrac12\sum_i h_i y_i^2` needs only each
:math:`E[y_i^2]`, whose recurrence involves only :math:`E[\eta_i^2] = (U_H^T C U_H)_{ii} / B`:
the off-diagonal noise correlations move no expected loss. So the model is exactly the
aligned NQM with curvatures h, noise variances :math:`\mathrm{diag}(U_H^T C U_H)` and initial
moments :math:`(U_H^T\mu_0)_i` and :math:`(U_H^T \mathrm{diag}(v_0) U_H)_{ii}`
(``RotatedNQM.equivalent_nqm``), and the fast exact engine applies.

*A preconditioner that does not commute with H* (e.g. a fixed coordinate-wise diagonal P with
a rotated H): directions couple, and ``expected_loss_dense`` propagates the full covariance of
the state (theta, momentum, EMA: up to 3d x 3d) step by step,
:math:`S \leftarrow A S A^T + B_n (C / B_t) B_n^T`.

This module holds the model; the engines live with their kind:
:func:`~nqm_mc.exact.dense.expected_loss_dense` and
:func:`~nqm_mc.montecarlo.dense.simulate_dense`, both also importable from here.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.spec._checks import ParameterError, check_array, check_choice, check_int
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer

__all__ = ["RotatedNQM", "random_rotation", "expected_loss_dense", "simulate_dense"]  # noqa: F822

MAX_DIM = 4096  # dense d x d algebra

# the engines, imported on first use: they import this module, so this model layer names them
# by string only (no import statement, not even for type checking, points upward)
_ENGINES = {
    "expected_loss_dense": "nqm_mc.exact.dense",
    "_linear_map": "nqm_mc.exact.dense",
    "simulate_dense": "nqm_mc.montecarlo.dense",
    "_dense_runs": "nqm_mc.montecarlo.dense",
    "_matvec": "nqm_mc.montecarlo.dense",
    "DIVERGED": "nqm_mc.montecarlo.dense",
}


def __getattr__(name: str) -> Any:
    if name in _ENGINES:
        return getattr(importlib.import_module(_ENGINES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_ENGINES))


def random_rotation(d: int, seed: int) -> np.ndarray:
    """Return a Haar-random orthogonal d x d matrix.

    From numpy's Philox generator keyed by ``seed`` (QR of a Gaussian matrix with the signs of
    R's diagonal folded in).

    Parameters
    ----------
    d : int
        The dimension, in [1, MAX_DIM].
    seed : int
        The generator's key (>= 0).

    Returns
    -------
    ndarray, shape (d, d)

    Raises
    ------
    ParameterError
        If ``d`` or ``seed`` is out of range.
    """
    d = check_int("d", d, "random_rotation", low=1, high=MAX_DIM)
    seed = check_int("seed", seed, "random_rotation", low=0)
    rng = np.random.Generator(np.random.Philox(seed))
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))[None, :]


class RotatedNQM:
    """A noisy quadratic model with H = U_H diag(h) U_H^T and C = U_C diag(c) U_C^T.

    Parameters
    ----------
    curvatures : array_like, shape (d,)
        Eigenvalues h of the Hessian (>= 0).
    noise_variances : array_like, shape (d,)
        Eigenvalues c of the per-example noise covariance (>= 0).
    hessian_basis, noise_basis : array_like, shape (d, d), optional
        Orthogonal U_H and U_C (default: the identity).
    initial_mean, initial_variance : float or array_like, shape (d,)
        Mean and (diagonal) variance of theta(0).
    name : str, default "rotated"
        A label kept in provenance.

    Raises
    ------
    ParameterError
        If an array is not finite, has the wrong shape or leaves its range, a basis is not
        orthogonal, or d > MAX_DIM.
    """

    def __init__(self, curvatures: ArrayLike, noise_variances: ArrayLike,
                 hessian_basis: ArrayLike | None = None, noise_basis: ArrayLike | None = None,
                 initial_mean: ArrayLike = 0.0, initial_variance: ArrayLike = 1.0,
                 name: str = "rotated") -> None:
        owner = "RotatedNQM"
        h = check_array("curvatures", curvatures, owner, low=0.0)
        d = h.size
        if d > MAX_DIM:
            raise ParameterError(f"RotatedNQM is for moderate dimensions (d <= {MAX_DIM}: "
                                 f"dense d x d algebra). Got d = {d}.")
        c = check_array("noise_variances", noise_variances, owner, low=0.0, closed=(True, False))
        if c.size != d:
            raise ParameterError(f"The 'noise_variances' parameter of {owner} must have "
                                 f"{d} entries like 'curvatures'. Got {c.size} instead.")
        self.curvatures, self.noise_variances = h, c
        self.hessian_basis = self._basis("hessian_basis", hessian_basis, d)
        self.noise_basis = self._basis("noise_basis", noise_basis, d)
        self.initial_mean = check_array("initial_mean", initial_mean, owner, size=d).copy()
        self.initial_variance = check_array("initial_variance", initial_variance, owner,
                                            low=0.0, closed=(True, False), size=d).copy()
        self.name = name
        self.recipe: dict[str, Any] | None = None

    @staticmethod
    def _basis(name: str, u: ArrayLike | None, d: int) -> np.ndarray:
        if u is None:
            return np.eye(d)
        try:
            u = np.asarray(u, float)
        except (TypeError, ValueError, OverflowError):
            u = np.full((0,), np.nan)
        if u.shape != (d, d) or not np.all(np.isfinite(u)):
            raise ParameterError(f"The {name!r} parameter of RotatedNQM must be a finite "
                                 f"{d} x {d} matrix. Got shape {u.shape} instead.")
        if not np.allclose(u.T @ u, np.eye(d), atol=1e-10):
            raise ParameterError(f"The {name!r} parameter of RotatedNQM must be orthogonal "
                                 "(U^T U = I).")
        return u

    @classmethod
    def from_nqm(cls, base: NQM, rotate: str = "noise", seed: int = 0) -> RotatedNQM:
        """Rotate an aligned NQM by seeded Haar-random rotations.

        Parameters
        ----------
        base : NQM
            The aligned model (its groups expanded to single directions).
        rotate : {"noise", "hessian", "both"}, default "noise"
            Rotate C, H, or both (independent rotations).
        seed : int, default 0
            Keys the rotations.

        Returns
        -------
        RotatedNQM

        Raises
        ------
        ParameterError
            If ``base`` is not an NQM, ``rotate`` or ``seed`` is invalid, or the expanded
            dimension exceeds 4096.
        """
        if not isinstance(base, NQM):
            raise ParameterError(f"The 'base' parameter of RotatedNQM.from_nqm must be an NQM. "
                                 f"Got {type(base).__name__} instead.")
        rotate = check_choice("rotate", rotate, "RotatedNQM.from_nqm", ("noise", "hessian",
                                                                        "both"))
        seed = check_int("seed", seed, "RotatedNQM.from_nqm", low=0, high=2 ** 63 - 1)
        h, c, mu0, v0 = base.expand()
        d = h.size
        if d > 4096:
            raise ParameterError(f"RotatedNQM is for moderate dimensions (d <= 4096: dense "
                                 f"d x d algebra). Got d = {d}.")
        uh = random_rotation(d, 2 * seed) if rotate in ("hessian", "both") else None
        uc = random_rotation(d, 2 * seed + 1) if rotate in ("noise", "both") else None
        m = cls(h, c, uh, uc, mu0, v0, name=f"{base.name}, rotated {rotate} (seed {seed})")
        m.recipe = {"base": base.to_dict(), "rotate": rotate, "seed": seed}
        return m

    @property
    def dim(self) -> int:
        """The dimension d."""
        return self.curvatures.size

    def hessian(self) -> np.ndarray:
        """Return the d x d Hessian H = U_H diag(h) U_H^T."""
        u = self.hessian_basis
        return (u * self.curvatures[None, :]) @ u.T

    def noise_covariance(self) -> np.ndarray:
        """Return the d x d per-example noise covariance C = U_C diag(c) U_C^T."""
        u = self.noise_basis
        return (u * self.noise_variances[None, :]) @ u.T

    def noise_factor(self) -> np.ndarray:
        """Return L with L L^T = C: the noise is L z for z standard normal (per unit batch)."""
        return self.noise_basis * np.sqrt(self.noise_variances)[None, :]

    def initial_loss(self) -> float:
        """Return E[L(theta(0))]."""
        hm = self.hessian()
        return float(0.5 * (self.initial_mean @ hm @ self.initial_mean
                            + np.sum(np.diag(hm) * self.initial_variance)))

    def equivalent_nqm(self) -> NQM:
        """Return the aligned NQM with the same expected loss.

        The same under any preconditioner that commutes with H (module docstring): curvatures
        h, noise variances diag(U_H^T C U_H), initial moments in H's eigenbasis.
        """
        u = self.hessian_basis
        c_eff = np.einsum("ij,jk,ki->i", u.T, self.noise_covariance(), u)
        mu = u.T @ self.initial_mean
        v = np.einsum("ji,j,ji->i", u, self.initial_variance, u)
        return NQM(self.curvatures, np.maximum(c_eff, 0.0), initial_mean=mu,
                   initial_variance=np.maximum(v, 0.0), name=f"{self.name} (aligned)")

    def to_dict(self) -> dict[str, Any]:
        """Return the model as a plain dict (its recipe when built by :meth:`from_nqm`)."""
        if self.recipe is not None:
            return {"constructor": "rotated", **self.recipe}
        return {"constructor": "rotated_arrays", "curvatures": self.curvatures.tolist(),
                "noise_variances": self.noise_variances.tolist(),
                "hessian_basis": self.hessian_basis.tolist(),
                "noise_basis": self.noise_basis.tolist(),
                "initial_mean": self.initial_mean.tolist(),
                "initial_variance": self.initial_variance.tolist()}

    def __repr__(self) -> str:
        return f"RotatedNQM(d={self.dim}, {self.name!r})"


def _check(model: object, optimizer: object, preconditioner: ArrayLike | None, owner: str,
           linear: bool = True) -> np.ndarray:
    if not isinstance(model, RotatedNQM):
        raise ParameterError(f"The 'model' parameter of {owner} must be a RotatedNQM. Got "
                             f"{type(model).__name__} instead.")
    if not isinstance(optimizer, Optimizer) or (linear and not optimizer.is_linear):
        raise ParameterError(f"The 'optimizer' parameter of {owner} must be SGD, HeavyBall or "
                             f"Nesterov without clipping. Got {optimizer!r} instead.")
    d = model.dim
    if preconditioner is None:
        # P = H^p: P^-1 = U diag(h^-p) U^T
        u = model.hessian_basis
        return (u * (model.curvatures ** -optimizer.preconditioning)[None, :]) @ u.T
    if optimizer.preconditioning != 0:
        raise ParameterError(f"{owner}: give either the optimizer's preconditioning power or "
                             "a 'preconditioner', not both.")
    p = check_array("preconditioner", preconditioner, owner, low=0.0)
    if p.size != d:
        raise ParameterError(f"The 'preconditioner' parameter of {owner} must hold the {d} "
                             f"diagonal entries of P. Got {p.size} instead.")
    return np.diag(1.0 / p)
