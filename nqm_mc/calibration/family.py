r"""The fitted family: a power-law NQM with an additive loss floor.

Direction :math:`i = 1, 2, \dots, d` has curvature :math:`h_i = h_1 i^{-a}`, per-example
noise variance :math:`c_i = s\, i^{-b}` and initial variance :math:`v_0` (mean 0); the
measured loss is :math:`E[L_{\rm NQM}(t)] + L_\infty`. Seven parameters:
``h1, a, s, b, v0, dim, floor``.

The effective dimension enters continuously. The first ``n_exact`` directions are kept one by
one; the rest of the index range :math:`[n_{\rm exact} + 1/2,\ d + 1/2]` is cut into
``n_bins`` log-spaced bins, each represented by one direction at its geometric midpoint and
carrying the bin's (real-valued) width as a weight. Directions are independent and, with mean
zero, a direction's expected loss is linear in its pair (initial variance, noise variance), so
a weight :math:`w` is applied by scaling both by :math:`w`: the resulting NQM has
``n_exact + n_bins`` groups of multiplicity 1 and the same E[L(t)] as the weighted spectrum,
for every optimizer, schedule and batch size. Its loss *variance* is not that of d separate
directions, so use :func:`power_law_model` (integer d, every direction) for Monte Carlo.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nqm_mc.spec._checks import ParameterError
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import Optimizer
from nqm_mc.spec.schedules import checked_values

__all__ = ["PARAMS", "COORDS", "Family", "power_law_model", "stability_limit"]

#: the fitted parameters, in order
PARAMS = ("h1", "a", "s", "b", "v0", "dim", "floor")
#: the fit's coordinates (logarithms of the positive scales; the floor in units of the
#: smallest measured loss)
COORDS = ("log h1", "a", "log s", "b", "log v0", "log dim", "floor/min loss")


def stability_limit(optimizer: Optimizer, last_step: int) -> float:
    """Return the largest h1 at which ``optimizer`` is stable up to ``last_step`` (inf if any).

    The largest curvature direction decides: alpha h^(1-p) must stay below 2 (SGD),
    2 (1 + beta) (heavy ball) or 2 (1 + beta) / (1 + 2 beta) (Nesterov), at the largest learning
    rate the run uses.
    """
    lr = optimizer.learning_rate
    if lr.is_constant:
        lr_max = optimizer.base_learning_rate
    else:
        lr_max = float(np.max(checked_values(lr, max(int(last_step), 1), "learning_rate",
                                             "calibrate")))
    beta = float(getattr(optimizer, "momentum", 0.0))
    if optimizer.name == "heavy_ball":
        limit = 2.0 * (1.0 + beta)
    elif optimizer.name == "nesterov":
        limit = 2.0 * (1.0 + beta) / (1.0 + 2.0 * beta)
    else:
        limit = 2.0
    p = optimizer.preconditioning
    if lr_max <= 0:
        return math.inf
    if p >= 1.0:
        return math.inf if lr_max < limit else 0.0
    return float((limit / lr_max) ** (1.0 / (1.0 - p)))


def power_law_model(h1: float, a: float, s: float, b: float, v0: float, dim: int) -> NQM:
    """Return the power-law NQM with every direction listed (integer ``dim``), for simulation.

    Parameters
    ----------
    h1, a, s, b, v0 : float
        Curvature scale and exponent, noise scale and exponent, initial variance.
    dim : int
        Number of directions.

    Returns
    -------
    NQM
    """
    from nqm_mc.spec._checks import check_int, check_real
    owner = "power_law_model"
    h1 = check_real("h1", h1, owner, low=0.0)
    a = check_real("a", a, owner, low=0.0, closed=(True, False))
    s = check_real("s", s, owner, low=0.0, closed=(True, False))
    b = check_real("b", b, owner)
    v0 = check_real("v0", v0, owner, low=0.0, closed=(True, False))
    dim = check_int("dim", dim, owner, low=1, high=10 ** 7)
    i = np.arange(1, dim + 1, dtype=float)
    return NQM(h1 * i ** -a, s * i ** -b, initial_variance=v0, name="power_law")


class Family:
    """The weighted power-law spectrum and the map between parameters and fit coordinates.

    Parameters
    ----------
    n_exact : int
        Leading directions kept one by one.
    n_bins : int
        Log-spaced bins for the rest.
    loss_scale : float
        The unit of the floor coordinate (the smallest measured loss).
    """

    def __init__(self, n_exact: int = 8, n_bins: int = 32, loss_scale: float = 1.0) -> None:
        self.n_exact = int(n_exact)
        self.n_bins = int(n_bins)
        self.loss_scale = float(loss_scale)

    def settings(self) -> dict[str, Any]:
        """Return the family's settings (for provenance)."""
        return {"n_exact": self.n_exact, "n_bins": self.n_bins, "loss_scale": self.loss_scale}

    def spectrum(self, dim: float) -> tuple[np.ndarray, np.ndarray]:
        """Return representative indices and weights of the groups for a real ``dim`` >= 1."""
        m = self.n_exact
        i_exact = np.arange(1, m + 1, dtype=float)
        w_exact = np.clip(dim - i_exact + 1.0, 0.0, 1.0)
        if dim > m:
            edges = np.geomspace(m + 0.5, dim + 0.5, self.n_bins + 1)
            reps = np.sqrt(edges[:-1] * edges[1:])
            w = np.diff(edges)
        else:
            reps = np.full(self.n_bins, m + 1.0)
            w = np.zeros(self.n_bins)
        return np.concatenate([i_exact, reps]), np.concatenate([w_exact, w])

    def to_params(self, x: np.ndarray) -> dict[str, float]:
        """Coordinates to parameters."""
        return {"h1": float(np.exp(x[0])), "a": float(x[1]), "s": float(np.exp(x[2])),
                "b": float(x[3]), "v0": float(np.exp(x[4])), "dim": float(np.exp(x[5])),
                "floor": float(x[6] * self.loss_scale)}

    def to_coords(self, params: dict[str, float]) -> np.ndarray:
        """Parameters to coordinates."""
        for k in PARAMS:
            if k not in params:
                raise ParameterError(f"The parameters need {k!r}; got {sorted(params)}.")
        return np.array([math.log(params["h1"]), params["a"], math.log(params["s"]),
                         params["b"], math.log(params["v0"]), math.log(params["dim"]),
                         params["floor"] / self.loss_scale])

    def model(self, x: np.ndarray, bias: float = 1.0, noise: float = 1.0) -> NQM:
        """Return the NQM (without floor) at coordinates ``x``.

        ``bias`` and ``noise`` scale the initial and noise variances (0 switches one off; the
        expected loss is linear in each).
        """
        p = self.to_params(x)
        idx, w = self.spectrum(p["dim"])
        h = p["h1"] * idx ** -p["a"]
        c = noise * p["s"] * idx ** -p["b"] * w
        v = bias * p["v0"] * w
        return NQM(h, c, initial_variance=v, name="calibrated")
