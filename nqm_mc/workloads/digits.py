r"""Softmax regression on scikit-learn's digits, trained with SGD and heavy ball, in NumPy.

The data are the 1797 8x8 images of ``sklearn.datasets.load_digits`` (bundled with
scikit-learn, no download), pixels scaled to [0, 1] plus a constant feature: :math:`x_n \in
\mathbb{R}^{65}`, ten classes. The model is :math:`p_n = \operatorname{softmax}(W^T x_n)` with
:math:`W \in \mathbb{R}^{65 \times 10}` started at 0, and the training loss is

.. math::

    L(W) = \frac1N \sum_n -\log p_{n, y_n} + \frac{\lambda}{2} |W|^2,

convex, with a positive minimum (the ridge term keeps the minimiser finite). A minibatch of
size :math:`B` is drawn with replacement, so its gradient is unbiased with covariance
:math:`\Sigma / B`, :math:`\Sigma` the covariance of the per-example gradients -- the NQM's
noise model. The optimizers are the package's: SGD :math:`W \leftarrow W - \alpha g` and heavy
ball :math:`m \leftarrow \beta m + g`, :math:`W \leftarrow W - \alpha m`.

Gradient noise scale, exactly over the data set. Per example
:math:`g_n = x_n r_n^T` with :math:`r_n = p_n - e_{y_n}` (the ridge term is the same for every
example and adds no noise), :math:`G = \bar g + \lambda W`. The Hessian acts on a direction
:math:`V` as :math:`V^T H V = \frac1N\sum_n [\sum_k p_{nk} u_{nk}^2 - (p_n \cdot u_n)^2] +
\lambda |V|^2` with :math:`u_n = V^T x_n`. Hence

.. math::

    \operatorname{tr}\Sigma = \frac1N \sum_n |x_n|^2 |r_n|^2 - |\bar g|^2, \qquad
    \operatorname{tr}(H\Sigma) = \frac1N \sum_m g_m^T H g_m - \bar g^T H \bar g,

where :math:`g_m^T H g_m = \frac1N \sum_n (x_n \cdot x_m)^2 [\sum_k p_{nk} r_{mk}^2 -
(p_n \cdot r_m)^2] + \lambda |x_m|^2 |r_m|^2` costs one N x N product. Then
:math:`B_{simple} = \operatorname{tr}\Sigma / |G|^2` and
:math:`B_{noise} = \operatorname{tr}(H\Sigma) / G^T H G` (McCandlish et al. 2018).

References
----------
.. [1] S. McCandlish et al., "An Empirical Model of Large-Batch Training", arXiv:1812.06162.
.. [2] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes?", NeurIPS 2019,
   arXiv:1907.04164.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.spec._checks import ParameterError, check_int, check_real, check_steps

__all__ = ["Digits", "DigitsRuns", "train", "first_crossing"]

N_CLASSES = 10


def _softmax(z: np.ndarray) -> np.ndarray:
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class Digits:
    """Softmax regression on the digits data: loss, gradients and the exact noise scale.

    Parameters
    ----------
    l2 : float, default 1e-3
        Ridge coefficient lambda >= 0.

    Attributes
    ----------
    features : ndarray, shape (1797, 65)
        Pixels / 16 and a constant 1.
    labels : ndarray of int, shape (1797,)
        Classes 0..9.
    onehot : ndarray, shape (1797, 10)
        The labels one-hot.
    l2 : float
        The ridge coefficient.

    Raises
    ------
    ParameterError
        If ``l2`` is negative or not finite.
    ImportError
        If scikit-learn is not installed (``pip install scikit-learn``).
    """

    def __init__(self, l2: float = 1e-3) -> None:
        self.l2 = check_real("l2", l2, "Digits", low=0.0, closed=(True, False))
        from sklearn.datasets import load_digits  # bundled data: no download

        data = load_digits()
        x = np.asarray(data.data, dtype=np.float64) / 16.0
        self.features = np.hstack([x, np.ones((x.shape[0], 1))])
        self.labels = np.asarray(data.target, dtype=np.int64)
        self.onehot = np.eye(N_CLASSES)[self.labels]

    @property
    def n_examples(self) -> int:
        """Number of training examples (1797)."""
        return int(self.features.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """Shape of the weights W: (65, 10)."""
        return (int(self.features.shape[1]), N_CLASSES)

    def loss(self, weights: ArrayLike) -> np.ndarray:
        """Return the full training loss of ``weights`` of shape (..., 65, 10), shape (...)."""
        w = np.asarray(weights, dtype=np.float64)
        with np.errstate(all="ignore"):
            z = np.einsum("nd,...dk->...nk", self.features, w)
            zmax = z.max(axis=-1, keepdims=True)
            lse = np.log(np.exp(z - zmax).sum(-1)) + zmax[..., 0]
            nll = (lse - np.einsum("...nk,nk->...n", z, self.onehot)).mean(-1)
            out = nll + 0.5 * self.l2 * (w * w).sum((-2, -1))
        return np.asarray(np.where(np.isfinite(out), out, np.inf))

    def gradient(self, weights: ArrayLike) -> np.ndarray:
        """Return the full-batch gradient at ``weights`` (65, 10)."""
        w = np.asarray(weights, dtype=np.float64)
        r = _softmax(self.features @ w) - self.onehot
        return np.asarray(self.features.T @ r / self.n_examples + self.l2 * w)

    def per_example_gradients(self, weights: ArrayLike) -> np.ndarray:
        """Return every example's gradient of its loss term (no ridge), shape (1797, 65, 10)."""
        w = np.asarray(weights, dtype=np.float64)
        r = _softmax(self.features @ w) - self.onehot
        return np.asarray(self.features[:, :, None] * r[:, None, :])

    def _quad(self, p: np.ndarray, v: np.ndarray) -> float:
        u = self.features @ v
        pu = (p * u).sum(1)
        return float(((p * u * u).sum(1) - pu * pu).mean() + self.l2 * (v * v).sum())

    def noise_scale(self, weights: ArrayLike) -> tuple[float, float]:
        """Return the exact per-example (B_simple, B_noise) at ``weights`` (65, 10).

        Computed over the whole data set (module docstring): no sampling error.

        Parameters
        ----------
        weights : array_like, shape (65, 10)
            The point.

        Returns
        -------
        b_simple, b_noise : float
        """
        w = np.asarray(weights, dtype=np.float64)
        if w.shape != self.shape:
            raise ParameterError(f"The 'weights' parameter of Digits.noise_scale must have shape "
                                 f"{self.shape}. Got {w.shape} instead.")
        x, n = self.features, self.n_examples
        p = _softmax(x @ w)
        r = p - self.onehot
        gbar = x.T @ r / n
        big_g = gbar + self.l2 * w
        xx = np.einsum("nd,nd->n", x, x)
        rr = np.einsum("nk,nk->n", r, r)
        tr_sigma = float((xx * rr).mean() - (gbar * gbar).sum())
        k = x @ x.T
        a = p @ (r * r).T - (p @ r.T) ** 2  # [n, m]
        per_m = (k * k * a).mean(0) + self.l2 * xx * rr
        tr_h_sigma = float(per_m.mean() - self._quad(p, gbar))
        b_simple = tr_sigma / float((big_g * big_g).sum())
        b_noise = tr_h_sigma / self._quad(p, big_g)
        return b_simple, b_noise


@dataclass(frozen=True)
class DigitsRuns:
    """Training curves at one batch size over a grid of learning rates and seeds.

    Attributes
    ----------
    batch_size : int
        B.
    learning_rates : ndarray, shape (L,)
        The learning rates.
    momentum : float
        Heavy-ball beta (0 for SGD).
    steps : ndarray of int64, shape (R,)
        The recorded steps (0 included).
    loss : ndarray, shape (L, S, R)
        Full training loss per learning rate, seed and record (inf after divergence).
    weights : ndarray, shape (L, S, 65, 10) or (L, S, R, 65, 10)
        The final weights, or the weights at every record with ``keep_weights=True``.
    seed : int
        The seed.
    """

    batch_size: int
    learning_rates: np.ndarray
    momentum: float
    steps: np.ndarray
    loss: np.ndarray
    weights: np.ndarray
    seed: int

    @property
    def mean_loss(self) -> np.ndarray:
        """Loss averaged over seeds, shape (L, R)."""
        with np.errstate(invalid="ignore"):
            return np.asarray(self.loss.mean(axis=1))

    def standard_error(self) -> np.ndarray:
        """Return the standard error of ``mean_loss`` over seeds, (L, R); nan with one seed."""
        s = self.loss.shape[1]
        if s < 2:
            return np.full(self.mean_loss.shape, np.nan)
        with np.errstate(invalid="ignore"):
            return np.asarray(self.loss.std(axis=1, ddof=1) / np.sqrt(s))


def train(problem: Digits, batch_size: int, learning_rates: ArrayLike, record: ArrayLike, *,
          momentum: float = 0.0, n_seeds: int = 4, seed: int = 0,
          chunk: int = 256, keep_weights: bool = False) -> DigitsRuns:
    """Train softmax regression at one batch size for every learning rate and seed at once.

    Minibatches are drawn with replacement from a generator keyed by (seed, batch size, seed
    index), so every learning rate sees the same minibatches (common random numbers) and a run
    does not depend on which other learning rates are trained beside it. Results are
    reproducible bit for bit for a seed.

    Parameters
    ----------
    problem : Digits
        The problem.
    batch_size : int
        B in [1, 2^20].
    learning_rates : array_like of float
        Learning rates alpha > 0.
    record : array_like of int
        Steps at which to record the full training loss (0 is always recorded).
    momentum : float in [0, 1), default 0
        Heavy-ball beta (0: SGD).
    n_seeds : int, default 4
        Independent runs per learning rate.
    seed : int, default 0
        Key of the minibatch streams.
    chunk : int, default 256
        Steps of minibatch indices drawn per call (memory only; results do not depend on it).
    keep_weights : bool, default False
        Keep the weights at every recorded step (for the noise scale along training).

    Returns
    -------
    DigitsRuns

    Raises
    ------
    ParameterError
        If an argument is invalid.
    """
    owner = "train"
    if not isinstance(problem, Digits):
        raise ParameterError(f"The 'problem' parameter of {owner} must be a Digits. "
                             f"Got {type(problem).__name__} instead.")
    batch_size = check_int("batch_size", batch_size, owner, low=1, high=2 ** 20)
    lrs = np.atleast_1d(np.asarray(learning_rates, dtype=np.float64))
    if lrs.ndim != 1 or lrs.size == 0 or not np.all(np.isfinite(lrs)) or np.any(lrs <= 0):
        raise ParameterError(f"The 'learning_rates' parameter of {owner} must be a non-empty "
                             f"list of floats in (0, inf). Got {learning_rates!r} instead.")
    steps = np.union1d([0], check_steps("record", record, owner, high=10 ** 9))
    beta = check_real("momentum", momentum, owner, low=0.0, high=1.0, closed=(True, False))
    n_seeds = check_int("n_seeds", n_seeds, owner, low=1, high=10_000)
    seed = check_int("seed", seed, owner, low=0, high=2 ** 63 - 1)
    chunk = check_int("chunk", chunk, owner, low=1, high=2 ** 20)
    x, y = problem.features, problem.onehot
    n = problem.n_examples
    d, k = problem.shape
    n_lr = lrs.size
    w = np.zeros((n_lr, n_seeds, d, k))
    m = np.zeros_like(w)
    alpha = lrs[:, None, None, None]
    rngs = [np.random.default_rng([seed, batch_size, j]) for j in range(n_seeds)]
    loss = np.empty((n_lr, n_seeds, steps.size))
    loss[:, :, 0] = problem.loss(w)
    kept = np.zeros((n_lr, n_seeds, steps.size, d, k)) if keep_weights else None
    rec = 1
    idx = np.empty((n_seeds, 0, batch_size), dtype=np.int64)
    pos = 0
    with np.errstate(all="ignore"):
        for t in range(int(steps[-1])):
            if pos == idx.shape[1]:
                size = min(chunk, int(steps[-1]) - t)
                idx = np.stack([g.integers(0, n, size=(size, batch_size)) for g in rngs])
                pos = 0
            ib = idx[:, pos]
            pos += 1
            xb, yb = x[ib], y[ib]  # (S, B, D), (S, B, K)
            z = np.einsum("sbd,lsdk->lsbk", xb, w)
            r = _softmax(z) - yb
            g = np.einsum("sbd,lsbk->lsdk", xb, r) / batch_size + problem.l2 * w
            if beta > 0.0:
                m = beta * m + g
                w = w - alpha * m
            else:
                w = w - alpha * g
            if t + 1 == steps[rec]:
                loss[:, :, rec] = problem.loss(w)
                if kept is not None:
                    kept[:, :, rec] = w
                rec += 1
    return DigitsRuns(batch_size, lrs, beta, steps, loss, w if kept is None else kept, seed)


def first_crossing(steps: ArrayLike, loss: ArrayLike, target: float) -> float:
    """Return the first step at which a recorded curve falls below ``target``, interpolated.

    Between the last record above the target and the first below it, log loss is interpolated
    linearly in log step (linearly in step from step 0). Returns inf when no record is below.

    Parameters
    ----------
    steps : array_like of int, shape (R,)
        Increasing recorded steps.
    loss : array_like, shape (R,)
        The loss at them.
    target : float
        The target, > 0.

    Returns
    -------
    float
    """
    s = np.asarray(steps, dtype=np.float64)
    v = np.asarray(loss, dtype=np.float64)
    target = check_real("target", target, "first_crossing", low=0.0)
    below = np.flatnonzero(v < target)
    if below.size == 0:
        return float("inf")
    i = int(below[0])
    if i == 0:
        return float(s[0])
    s0, s1, l0, l1 = s[i - 1], s[i], np.log(v[i - 1]), np.log(v[i])
    f = (l0 - np.log(target)) / (l0 - l1)
    if s0 <= 0:
        return float(s0 + f * (s1 - s0))
    return float(np.exp(np.log(s0) + f * (np.log(s1) - np.log(s0))))


def log_record(n_steps: int, per_decade: int = 24) -> np.ndarray:
    """Return about ``per_decade`` log-spaced steps per decade from 1 to ``n_steps``, and 0."""
    n_steps = check_int("n_steps", n_steps, "log_record", low=1, high=10 ** 9)
    k = int(np.ceil(np.log10(max(n_steps, 10)) * per_decade)) + 1
    return np.union1d([0], np.unique(np.geomspace(1, n_steps, k).round().astype(np.int64)))

