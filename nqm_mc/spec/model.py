r"""The noisy quadratic model (NQM) specification.

In the Hessian's eigenbasis, direction :math:`i` has curvature :math:`h_i > 0`, per-example
gradient-noise variance :math:`c_i \ge 0`, multiplicity :math:`n_i \ge 1` (the number of
independent directions that share :math:`(h_i, c_i)`) and initial state
:math:`\theta_i(0) \sim N(\mu_{0,i}, v_{0,i})`.

.. math::

    L(\theta) = \tfrac12 \sum_i n_i h_i \theta_i^2, \qquad
    g_i = h_i \theta_i + \xi_i, \quad \xi_i \sim N(0, c_i / B).

The Monte Carlo engine simulates each of the :math:`n_i` copies of a group; the exact engine
multiplies by :math:`n_i`.

References
----------
G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes? Insights From a Noisy
Quadratic Model", NeurIPS 2019, arXiv:1907.04164.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.spec._checks import (
    MAX_BATCH,
    ParameterError,
    check_array,
    check_int,
    check_memory,
    check_real,
)

#: Largest multiplicity of a group, and largest total dimension: counts stay exact in float64
#: and far from int64's limit when summed.
MAX_MULTIPLICITY = 2 ** 53


def _check_dim(dim: int, owner: str, low: int = 1, bytes_per_dim: int = 48) -> int:
    dim = check_int("dim", dim, owner, low=low, high=MAX_MULTIPLICITY)
    check_memory(float(bytes_per_dim) * dim, owner, f"a model of dimension {dim}",
                 "Use fewer directions, or NQM.binned / multiplicities for a large spectrum.")
    return dim

__all__ = ["NQM"]


class NQM:
    r"""A noisy quadratic model: curvatures, noise variances, multiplicities and initial state.

    The loss is :math:`L(\theta) = \tfrac12 \sum_i n_i h_i \theta_i^2` and a minibatch of size
    :math:`B` returns :math:`g_i = h_i\theta_i + \xi_i` with :math:`E[\xi_i^2] = c_i / B`
    (``docs/theory.md``, section 1). Instances are immutable.

    Parameters
    ----------
    curvatures : array_like, shape (G,)
        Hessian eigenvalues :math:`h_i > 0`, one per group of directions.
    noise_variances : array_like, shape (G,)
        Per-example gradient-noise variances :math:`c_i \ge 0` (batch size B divides them).
    multiplicities : array_like of int, shape (G,), optional
        Number of independent directions in each group (default 1).
    initial_mean, initial_variance : float or array_like, shape (G,)
        Mean and variance of :math:`\theta_i(0)`; variance 0 gives a deterministic start.
    name : str, optional
        A label kept in provenance.

    Raises
    ------
    ParameterError
        If an array is not finite, has the wrong length or leaves its range, or the
        multiplicities are not integers summing to at most 2^53.

    References
    ----------
    .. [1] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes? Insights
       From a Noisy Quadratic Model", NeurIPS 2019, arXiv:1907.04164.

    Examples
    --------
    >>> model = NQM.paper()               # d = 10^4, h_i = 1/i, c_i = h_i, theta(0) ~ N(0, I)
    >>> round(model.initial_loss(), 3)
    4.894
    """

    __slots__ = ("curvatures", "noise_variances", "multiplicities", "initial_mean",
                 "initial_variance", "name", "_recipe")

    curvatures: np.ndarray
    noise_variances: np.ndarray
    multiplicities: np.ndarray
    initial_mean: np.ndarray
    initial_variance: np.ndarray
    name: str
    _recipe: dict[str, Any] | None

    def __init__(self, curvatures: ArrayLike, noise_variances: ArrayLike,
                 multiplicities: ArrayLike | None = None, initial_mean: ArrayLike = 0.0,
                 initial_variance: ArrayLike = 1.0, name: str = "custom") -> None:
        owner = "NQM"
        h = check_array("curvatures", curvatures, owner, low=0.0)
        g = h.shape[0]
        c = check_array("noise_variances", noise_variances, owner, low=0.0,
                        closed=(True, False), size=g)
        if multiplicities is None:
            n = np.ones(g, dtype=np.int64)
        else:
            nf = check_array("multiplicities", multiplicities, owner, low=1.0,
                             high=float(MAX_MULTIPLICITY), closed=(True, True), size=g)
            if np.any(nf != np.round(nf)):
                i = int(np.flatnonzero(nf != np.round(nf))[0])
                raise ParameterError(
                    f"The 'multiplicities' parameter of NQM must hold integers >= 1. "
                    f"Got {nf[i]!r} at index {i} instead.")
            n = nf.astype(np.int64)
            if nf.sum() > MAX_MULTIPLICITY:
                raise ParameterError(
                    f"The 'multiplicities' parameter of NQM must sum to at most 2^53 "
                    f"directions. Got a sum of {nf.sum():.6g} instead.")
        n.setflags(write=False)
        mu = check_array("initial_mean", initial_mean, owner, size=g)
        v = check_array("initial_variance", initial_variance, owner, low=0.0,
                        closed=(True, False), size=g)
        object.__setattr__(self, "curvatures", h)
        object.__setattr__(self, "noise_variances", c)
        object.__setattr__(self, "multiplicities", n)
        object.__setattr__(self, "initial_mean", mu)
        object.__setattr__(self, "initial_variance", v)
        object.__setattr__(self, "name", str(name))
        object.__setattr__(self, "_recipe", None)

    def __setattr__(self, key: str, value: Any) -> None:
        raise AttributeError("NQM is immutable")

    # ---------------------------------------------------------------- constructors
    @classmethod
    def paper(cls, dim: int = 10_000) -> NQM:
        r"""Build the paper's default model.

        :math:`h_i = c_i = 1/i` for :math:`i = 1..d` (:math:`C = H`) and
        :math:`\theta(0) \sim N(0, I)`.

        Parameters
        ----------
        dim : int, default 10000
            Number of directions d.

        Returns
        -------
        NQM
            The model, recorded in provenance by its recipe.

        Raises
        ------
        ParameterError
            If ``dim`` is not an integer in [1, 2^53] or the arrays would not fit in memory.
        """
        dim = _check_dim(dim, "NQM.paper")
        h = 1.0 / np.arange(1, dim + 1, dtype=np.float64)
        m = cls(h, h, name="paper")
        object.__setattr__(m, "_recipe", {"constructor": "paper", "dim": dim})
        return m

    @classmethod
    def power_law(cls, dim: int, curvature_exponent: float = 1.0, noise_exponent: float = 1.0,
                  noise_scale: float = 1.0, initial_variance: float = 1.0) -> NQM:
        r"""Build a power-law spectrum :math:`h_i = i^{-a}`, :math:`c_i = s\, i^{-b}`.

        Parameters
        ----------
        dim : int
            Number of directions, :math:`i = 1..d`.
        curvature_exponent : float, default 1.0
            :math:`a \ge 0`.
        noise_exponent : float, default 1.0
            :math:`b`.
        noise_scale : float, default 1.0
            :math:`s \ge 0`.
        initial_variance : float, default 1.0
            Variance of :math:`\theta_i(0)` (mean 0).

        Returns
        -------
        NQM
            The model, recorded in provenance by its recipe.

        Raises
        ------
        ParameterError
            If a parameter is not finite or leaves its range.
        """
        owner = "NQM.power_law"
        dim = _check_dim(dim, owner)
        a = check_real("curvature_exponent", curvature_exponent, owner, low=0.0,
                       closed=(True, False))
        b = check_real("noise_exponent", noise_exponent, owner)
        s = check_real("noise_scale", noise_scale, owner, low=0.0, closed=(True, False))
        v0 = check_real("initial_variance", initial_variance, owner, low=0.0,
                        closed=(True, False))
        i = np.arange(1, dim + 1, dtype=np.float64)
        m = cls(i ** -a, s * i ** -b, initial_variance=v0, name="power_law")
        object.__setattr__(m, "_recipe", {
            "constructor": "power_law", "dim": dim, "curvature_exponent": a,
            "noise_exponent": b, "noise_scale": s, "initial_variance": v0})
        return m

    @classmethod
    def binned(cls, dim: int = 10_000, n_bins: int = 100) -> NQM:
        """Build the reference notebook's quantised spectrum of h_i = 1/i.

        Bin values are ``geomspace(1, 1/dim, n_bins)``; each h_i = 1/i is rounded down to the
        largest bin value <= h_i, bins carry the counts as multiplicities, and the noise
        variance of a bin is its value (C = H). Empty bins are dropped (they carry no loss).

        Parameters
        ----------
        dim : int, default 10000
            Number of directions before binning (at least 2).
        n_bins : int, default 100
            Number of log-spaced bin values (at least 2).

        Returns
        -------
        NQM
            At most ``n_bins`` groups whose multiplicities sum to ``dim``.
        """
        owner = "NQM.binned"
        n_bins = check_int("n_bins", n_bins, owner, low=2, high=MAX_MULTIPLICITY)
        dim = _check_dim(dim, owner, low=2, bytes_per_dim=24 + n_bins)
        full = 1.0 / np.arange(1, dim + 1, dtype=np.float64)
        bins = np.geomspace(full[0], full[-1], n_bins)
        # index of the largest bin value <= h (bins decrease): count of bins strictly above h
        idx = np.minimum(np.sum(bins[None, :] > full[:, None], axis=1), n_bins - 1)
        counts = np.bincount(idx, minlength=n_bins)
        keep = counts > 0
        m = cls(bins[keep], bins[keep], multiplicities=counts[keep], name="binned")
        object.__setattr__(m, "_recipe", {"constructor": "binned", "dim": dim,
                                          "n_bins": n_bins})
        return m

    # ---------------------------------------------------------------- properties
    @property
    def n_groups(self) -> int:
        """Number of groups (distinct (h, c) pairs)."""
        return int(self.curvatures.shape[0])

    @property
    def dim(self) -> int:
        """Total number of directions, sum of multiplicities."""
        return int(self.multiplicities.sum())

    def initial_loss(self) -> float:
        r"""Return the expected loss at t = 0.

        Returns
        -------
        float
            :math:`E[L(0)] = \tfrac12 \sum_g n_g h_g (\mu_{0,g}^2 + v_{0,g})`.
        """
        return float(0.5 * np.sum(self.multiplicities * self.curvatures
                                  * (self.initial_mean ** 2 + self.initial_variance)))

    def lower_bound_steps(self, target: float, batch_size: float) -> float:
        """Return the information-theoretic lower bound d / (2 L_target B) on steps.

        Valid for C = H (the paper's model).

        Parameters
        ----------
        target : float
            Loss target, > 0.
        batch_size : float
            Batch size, in (0, 2^53].

        Returns
        -------
        float
            The bound, in steps.
        """
        target = check_real("target", target, "NQM.lower_bound_steps", low=0.0)
        batch_size = check_real("batch_size", batch_size, "NQM.lower_bound_steps", low=0.0,
                                high=float(MAX_BATCH), closed=(False, True))
        return self.dim / (2.0 * target * batch_size)

    def expand(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Return per-direction arrays, each copy of a group listed separately.

        Returns
        -------
        h, c, mu0, v0 : ndarray, shape (d,)
            Curvatures, noise variances, initial means and initial variances.
        """
        rep = self.multiplicities
        return (np.repeat(self.curvatures, rep), np.repeat(self.noise_variances, rep),
                np.repeat(self.initial_mean, rep), np.repeat(self.initial_variance, rep))

    def curvature_groups(self, n_groups: int = 8) -> tuple[np.ndarray, np.ndarray]:
        """Assign each group to one of ``n_groups`` log-spaced curvature bands.

        Parameters
        ----------
        n_groups : int, default 8
            Number of bands, in [1, 2^20].

        Returns
        -------
        labels : ndarray of int64, shape (G,)
            ``labels[g]`` is the band of group g.
        edges : ndarray, shape (n_groups + 1,)
            The band edges in curvature (decreasing); two edges if all curvatures are equal.
        """
        n_groups = check_int("n_groups", n_groups, "NQM.curvature_groups", low=1, high=2 ** 20)
        lh = np.log(self.curvatures)
        lo, hi = lh.min(), lh.max()
        if hi == lo:
            return np.zeros(self.n_groups, np.int64), np.array([np.exp(hi), np.exp(lo)])
        edges = np.linspace(hi, lo, n_groups + 1)
        labels = np.minimum(((hi - lh) / (hi - lo) * n_groups).astype(np.int64), n_groups - 1)
        return labels, np.exp(edges)

    # ---------------------------------------------------------------- provenance
    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready description.

        Returns
        -------
        dict
            The recipe when built by a constructor (and the initial state is the
            constructor's), else the arrays; :meth:`from_dict` inverts it.
        """
        if self._recipe is not None and np.all(self.initial_mean == 0) and \
                (self._recipe.get("constructor") != "paper" or np.all(self.initial_variance == 1)):
            return dict(self._recipe)
        return {"constructor": "arrays", "name": self.name,
                "curvatures": self.curvatures.tolist(),
                "noise_variances": self.noise_variances.tolist(),
                "multiplicities": self.multiplicities.tolist(),
                "initial_mean": self.initial_mean.tolist(),
                "initial_variance": self.initial_variance.tolist()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NQM:
        """Build a model from the output of :meth:`to_dict`.

        Parameters
        ----------
        d : dict
            ``{"constructor": ..., **parameters}``.

        Returns
        -------
        NQM

        Raises
        ------
        ParameterError
            If ``d`` is not a dict, names an unknown constructor or bad parameters.
        """
        if not isinstance(d, dict):
            raise ParameterError(f"NQM.from_dict needs a dict. Got {type(d).__name__} instead.")
        d = dict(d)
        kind = d.pop("constructor", "arrays")
        makers: dict[str, Callable[..., NQM]] = {
            "paper": cls.paper, "power_law": cls.power_law, "binned": cls.binned, "arrays": cls}
        if not isinstance(kind, str) or kind not in makers:
            raise ParameterError(f"Unknown NQM constructor {kind!r}.")
        try:
            return makers[kind](**d)
        except TypeError as err:
            raise ParameterError(f"Bad parameters for NQM constructor {kind!r}: {err}") from None

    def with_initial_state(self, initial_mean: ArrayLike = 0.0,
                           initial_variance: ArrayLike = 1.0) -> NQM:
        """Return a copy with another initial mean and variance.

        Parameters
        ----------
        initial_mean, initial_variance : float or array_like, shape (G,)
            The new initial state.

        Returns
        -------
        NQM
        """
        return NQM(self.curvatures, self.noise_variances, self.multiplicities,
                   initial_mean, initial_variance, name=self.name)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NQM):
            return NotImplemented
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in (
            "curvatures", "noise_variances", "multiplicities", "initial_mean",
            "initial_variance"))

    def __hash__(self) -> int:
        return hash((self.curvatures.tobytes(), self.noise_variances.tobytes()))

    def __repr__(self) -> str:
        return (f"NQM(name={self.name!r}, groups={self.n_groups}, dim={self.dim}, "
                f"h=[{self.curvatures.min():.3g}, {self.curvatures.max():.3g}])")
