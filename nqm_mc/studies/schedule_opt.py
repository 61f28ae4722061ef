r"""Optimal piecewise-constant learning-rate schedules for (preconditioned) SGD on an NQM.

With n equal pieces of length l and learning rate a_k in piece k, every direction's second
moment s evolves in closed form over a piece (mean-zero start; a nonzero initial mean enters
through the same recurrence on mu^2 without the noise term):

    r = (1 - a x)^2,  x = h^(1-p);   q = a^2 h^(-2p) c / B;   G = (1 - r^l) / (1 - r)
    s  <-  r^l s + q G

The final expected loss L = sum_g m_g h_g s_g / 2 is minimised over log a_k with L-BFGS-B under
the stability cap a <= 2 / (x_max + x_min) (``docs/theory.md``, section 3.5: SGD is stable for
0 < a x < 2), starting from log a = -5. Its
gradient with respect to every log a_k comes from one backward pass through the pieces
(adjoint lambda_k = r_k^l lambda_{k+1}), derived by hand -- no autograd. The smallest total
length reaching a target is then found by bisection over the piece length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize

from nqm_mc.exact._args import _check_model
from nqm_mc.spec._checks import (
    MAX_BATCH,
    MAX_STEP,
    ParameterError,
    check_array,
    check_int,
    check_real,
)
from nqm_mc.spec.model import NQM

LOG_LR_START = -5.0


def _dG_dr(r: np.ndarray, ell: int) -> np.ndarray:
    """d/dr of (1 - r^l) / (1 - r) = sum_{j<l} r^j, stable near r = 1."""
    e = 1.0 - r
    small = ell * e < 1e-3
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        exact = (-ell * r ** (ell - 1) * e + (1.0 - r ** ell)) / (e * e)
    series = ell * (ell - 1) / 2.0 - e * (ell - 1) * ell * (ell - 2) / 3.0
    return np.where(small, series, exact)


def _G(r: np.ndarray, ell: int) -> np.ndarray:
    e = 1.0 - r
    with np.errstate(divide="ignore", invalid="ignore"):
        exact = -np.expm1(ell * np.log(np.maximum(r, 1e-300))) / e
    return np.where(ell * e < 1e-8, ell - e * ell * (ell - 1) / 2.0, exact)


class _Problem:
    def __init__(self, model: NQM, batch_size: float, p: float) -> None:
        h = model.curvatures
        self.w = 0.5 * h * model.multiplicities
        self.x = h ** (1.0 - p)
        self.kappa = h ** (-2.0 * p) * model.noise_variances / batch_size
        self.s0 = model.initial_variance + model.initial_mean ** 2
        self.cap = 2.0 / (self.x.max() + self.x.min())

    def loss_and_grad(self, log_lr: np.ndarray, ell: int) -> tuple[float, np.ndarray]:
        """Return the final expected loss and its gradient with respect to log learning rates."""
        a = np.exp(log_lr)
        n = a.size
        s = self.s0.copy()
        states: list[np.ndarray] = []
        parts: list[tuple[Any, ...]] = []
        for k in range(n):
            u = 1.0 - a[k] * self.x
            r = u * u
            rl = r ** ell
            G = _G(r, ell)
            q = a[k] ** 2 * self.kappa
            states.append(s)
            parts.append((u, r, rl, G, q))
            s = rl * s + q * G
        loss = float(self.w @ s)
        lam = self.w.copy()
        grad = np.empty(n)
        for k in range(n - 1, -1, -1):
            u, r, rl, G, q = parts[k]
            dr = -2.0 * self.x * u  # dr/da
            with np.errstate(invalid="ignore"):
                drl = np.where(r > 0, ell * rl / np.where(r > 0, r, 1.0), 0.0) * dr
            dG = _dG_dr(r, ell) * dr
            dq = 2.0 * a[k] * self.kappa
            ds = drl * states[k] + dq * G + q * dG  # d s_{k+1} / d a_k
            grad[k] = float(lam @ ds) * a[k]  # chain rule to log a_k
            lam = lam * rl
        return loss, grad

    def optimise(self, n_pieces: int, ell: int,
                 x0: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        x0 = np.full(n_pieces, LOG_LR_START) if x0 is None else x0
        bounds = [(-30.0, np.log(self.cap))] * n_pieces
        res = optimize.minimize(self.loss_and_grad, x0, args=(ell,), jac=True,
                                method="L-BFGS-B", bounds=bounds,
                                options={"maxiter": 2000, "ftol": 1e-15, "gtol": 1e-12})
        return float(res.fun), res.x


@dataclass
class OptimalSchedule:
    """The optimal n-piece schedule reaching ``target`` in the fewest steps.

    Attributes
    ----------
    steps : int or None
        n_pieces x piece_length; None when even the longest schedule tried cannot reach the
        target.
    piece_length : int or None
        Updates per piece.
    learning_rates : ndarray
        One per piece.
    final_loss : float
        Expected loss after the schedule.
    target, batch_size, preconditioning : float
        The problem.
    cap : float
        The stability cap on every learning rate, 2 / (x_max + x_min) with x = h^(1-p).
    """

    steps: int | None  # n_pieces x piece_length; None when even a long schedule cannot reach
    piece_length: int | None
    learning_rates: np.ndarray  # one per piece
    final_loss: float
    target: float
    batch_size: float
    preconditioning: float
    cap: float

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict of every field."""
        return {"steps": self.steps, "piece_length": self.piece_length,
                "learning_rates": self.learning_rates.tolist(), "final_loss": self.final_loss,
                "target": self.target, "batch_size": self.batch_size,
                "preconditioning": self.preconditioning, "cap": self.cap}


def final_loss(model: NQM, batch_size: float, learning_rates: ArrayLike, piece_length: int,
               preconditioning: float = 0.0) -> tuple[float, np.ndarray]:
    r"""Return E[L] after a piecewise-constant schedule and its gradient w.r.t. log rates.

    Parameters
    ----------
    model : NQM
        The model.
    batch_size : float
        Batch size, in (0, 2^53].
    learning_rates : array_like
        One learning rate > 0 per piece.
    piece_length : int
        Updates per piece.
    preconditioning : float, default 0.0
        Power p in [0, 1] of P = H^p.

    Returns
    -------
    loss : float
        The expected loss after the last piece.
    grad : ndarray
        Its gradient with respect to the log learning rates.

    Raises
    ------
    ParameterError
        If an argument is invalid.

    Notes
    -----
    Over a piece of length :math:`l` with learning rate :math:`a`, each direction's second
    moment follows (mean-zero noise; :math:`x = h^{1-p}`)

    .. math::

        r = (1 - a x)^2,\quad q = a^2 h^{-2p} c / B,\quad G = \frac{1 - r^l}{1 - r},\qquad
        s \leftarrow r^l s + q G ,

    and :math:`E[L] = \tfrac12 \sum_g n_g h_g s_g`; the gradient comes from one backward
    (adjoint) pass through the pieces.
    """
    owner = "final_loss"
    _check_model(model, owner)
    batch_size = check_real("batch_size", batch_size, owner, low=0.0, high=float(MAX_BATCH),
                            closed=(False, True))
    p = check_real("preconditioning", preconditioning, owner, low=0.0, high=1.0,
                   closed=(True, True))
    lrs = check_array("learning_rates", learning_rates, owner, low=0.0)
    ell = check_int("piece_length", piece_length, owner, low=1, high=MAX_STEP)
    prob = _Problem(model, batch_size, p)
    return prob.loss_and_grad(np.log(lrs), ell)


def optimal_schedule(model: NQM, batch_size: float, target: float, n_pieces: int = 10,
                     preconditioning: float = 0.0,
                     max_piece_length: int = 2 ** 40) -> OptimalSchedule:
    """Find the fewest steps to ``target`` for SGD with an optimised n-piece schedule.

    The piece length is found by doubling, then bisection; at each length the log learning
    rates are optimised by L-BFGS-B under the stability cap (see the module docstring).

    Parameters
    ----------
    model : NQM
        The model.
    batch_size : float
        Batch size, in (0, 2^53].
    target : float
        Loss target, below the initial loss.
    n_pieces : int, default 10
        Number of equal pieces.
    preconditioning : float, default 0.0
        Power p in [0, 1] of P = H^p.
    max_piece_length : int, default 2^40
        Longest piece tried before giving up.

    Returns
    -------
    OptimalSchedule
        ``steps`` is None if the target was not reached with ``max_piece_length``.

    Raises
    ------
    ParameterError
        If an argument is invalid or the target is above the initial loss.

    References
    ----------
    .. [1] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes? Insights
       From a Noisy Quadratic Model", NeurIPS 2019, arXiv:1907.04164.
    """
    owner = "optimal_schedule"
    _check_model(model, owner)
    batch_size = check_real("batch_size", batch_size, owner, low=0.0, high=float(MAX_BATCH),
                            closed=(False, True))
    target = check_real("target", target, owner, low=0.0)
    n_pieces = check_int("n_pieces", n_pieces, owner, low=1, high=10_000)
    max_piece_length = check_int("max_piece_length", max_piece_length, owner, low=1,
                                 high=MAX_STEP // n_pieces)
    p = check_real("preconditioning", preconditioning, owner, low=0.0, high=1.0,
                   closed=(True, True))
    if model.initial_loss() < target:
        raise ParameterError(f"The 'target' parameter of {owner} is above the initial loss "
                             f"{model.initial_loss():.6g}: nothing to optimise.")
    prob = _Problem(model, batch_size, p)
    lo, hi = 0, 1
    best: Any = None
    x_warm = None
    while True:  # grow until reachable
        f, x = prob.optimise(n_pieces, hi, x_warm)
        if f < target:
            best = (hi, f, x)
            break
        x_warm = x
        if hi >= max_piece_length:
            return OptimalSchedule(None, None, np.exp(x), f, target, batch_size, p, prob.cap)
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        f, x = prob.optimise(n_pieces, mid, best[2])
        if f < target:
            hi, best = mid, (mid, f, x)
        else:
            lo = mid
    ell, f, x = best
    return OptimalSchedule(n_pieces * ell, ell, np.exp(x), f, target, batch_size, p, prob.cap)
