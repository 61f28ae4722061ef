r"""A model of the residuals' dependence, estimated by restricted maximum likelihood (REML).

The log residuals of a training curve are not independent: one run's deviation from its
expectation persists over many steps (the same trajectories), and a fit of a few parameters
absorbs much of that slow deviation, so the residuals *look* smaller and less correlated than
the noise that made them. The model here is, per curve :math:`r`, a Gaussian AR(1) sequence
over the curve's (log-spaced) points with a scale that may drift with log step:

.. math::

    \Sigma_r[k, l] = \sigma_r e^{\gamma (u_k - 1/2)}\, \sigma_r e^{\gamma (u_l - 1/2)}\,
    \rho^{|k - l|}, \qquad u_k \in [0, 1] \text{ the point's position in log step},

independent between curves. Its parameters :math:`(\sigma_r, \gamma, \rho)` maximise the
restricted likelihood of the residuals of the linearised fit, which accounts for the
directions the seven fitted coordinates absorb (the columns of the Jacobian):

.. math::

    \ell_R = -\tfrac12 \left[\log|\Sigma| + \log|Q^T \Sigma^{-1} Q|
    + e^T (\Sigma^{-1} - \Sigma^{-1} Q (Q^T\Sigma^{-1}Q)^{-1} Q^T \Sigma^{-1}) e\right],

with :math:`Q` an orthonormal basis of the Jacobian's range.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import linalg, optimize

__all__ = ["ResidualModel", "fit_residual_model"]


class ResidualModel:
    """The fitted AR(1) residual model.

    ``sigma`` per curve, ``gamma``, ``rho`` and the Cholesky factor of the full covariance.
    """

    def __init__(self, sigma: np.ndarray, gamma: float, rho: float, chol: np.ndarray) -> None:
        self.sigma = sigma
        self.gamma = gamma
        self.rho = rho
        self.chol = chol

    def draw(self, rng: np.random.Generator) -> np.ndarray:
        """Return one Gaussian draw of all residuals."""
        return self.chol @ rng.standard_normal(self.chol.shape[0])

    def to_dict(self) -> dict[str, object]:
        """Return the parameters (for provenance)."""
        return {"sigma": self.sigma.tolist(), "gamma": self.gamma, "rho": self.rho}


def _cov(theta: np.ndarray, pos: list[np.ndarray]) -> np.ndarray:
    R = len(pos)
    gamma = theta[R]
    rho = math.tanh(theta[R + 1])
    n = sum(p.size for p in pos)
    S = np.zeros((n, n))
    i = 0
    for r, u in enumerate(pos):
        m = u.size
        k = np.arange(m)
        sd = math.exp(theta[r]) * np.exp(gamma * (u - 0.5))
        S[i:i + m, i:i + m] = np.outer(sd, sd) * rho ** np.abs(k[:, None] - k[None, :])
        i += m
    return S


def _neg_reml(theta: np.ndarray, e: np.ndarray, Q: np.ndarray, pos: list[np.ndarray]) -> float:
    S = _cov(theta, pos)
    S[np.diag_indices_from(S)] *= 1 + 1e-10
    try:
        c = linalg.cho_factor(S, lower=True)
    except linalg.LinAlgError:
        return 1e300
    logdet = 2.0 * float(np.sum(np.log(np.diag(c[0]))))
    Si_e = linalg.cho_solve(c, e)
    Si_Q = linalg.cho_solve(c, Q)
    M = Q.T @ Si_Q
    try:
        cm = linalg.cho_factor(M, lower=True)
    except linalg.LinAlgError:
        return 1e300
    logdet_m = 2.0 * float(np.sum(np.log(np.diag(cm[0]))))
    b = Q.T @ Si_e
    quad = float(e @ Si_e - b @ linalg.cho_solve(cm, b))
    return 0.5 * (logdet + logdet_m + quad)


def fit_residual_model(residuals: list[np.ndarray], steps: list[np.ndarray],
                       jac: np.ndarray) -> ResidualModel:
    """Estimate the AR(1) residual model by REML.

    Parameters
    ----------
    residuals : list of ndarray
        Log residuals of each curve at the best fit.
    steps : list of ndarray
        The steps of those points.
    jac : ndarray, shape (n, p)
        Jacobian of the residuals with respect to the fit's coordinates.

    Returns
    -------
    ResidualModel
    """
    e = np.concatenate(residuals)
    pos = []
    for s in steps:
        lt = np.log1p(s.astype(float))
        span = lt[-1] - lt[0]
        pos.append((lt - lt[0]) / span if span > 0 else np.zeros_like(lt))
    U, sv, _ = np.linalg.svd(jac, full_matrices=False)
    Q = U[:, sv > sv[0] * 1e-8] if sv.size and sv[0] > 0 else np.zeros((e.size, 0))
    R = len(residuals)
    theta0 = np.concatenate([[math.log(max(float(np.sqrt(np.mean(r ** 2))), 1e-12))
                              for r in residuals], [0.0, math.atanh(0.5)]])
    bounds = [(t - 10, t + 10) for t in theta0[:R]] + [(-5.0, 5.0), (-0.5, 3.8)]
    res = optimize.minimize(_neg_reml, theta0, args=(e, Q, pos), method="L-BFGS-B",
                            bounds=bounds)
    theta = res.x
    S = _cov(theta, pos)
    S[np.diag_indices_from(S)] *= 1 + 1e-10
    chol = np.linalg.cholesky(S)
    return ResidualModel(np.exp(theta[:R]), float(theta[R]), float(math.tanh(theta[R + 1])),
                         chol)
