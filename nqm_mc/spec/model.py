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

import numpy as np

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


def _check_dim(dim, owner, low=1, bytes_per_dim=48):
    dim = check_int("dim", dim, owner, low=low, high=MAX_MULTIPLICITY)
    check_memory(float(bytes_per_dim) * dim, owner, f"a model of dimension {dim}",
                 "Use fewer directions, or NQM.binned / multiplicities for a large spectrum.")
    return dim

__all__ = ["NQM"]


class NQM:
    """A noisy quadratic model: curvatures, noise variances, multiplicities and initial state.

    Parameters
    ----------
    curvatures : array_like, shape (G,)
        Hessian eigenvalues :math:`h_i > 0`, one per group of directions.
    noise_variances : array_like, shape (G,)
        Per-example gradient-noise variances :math:`c_i \\ge 0` (batch size B divides them).
    multiplicities : array_like of int, shape (G,), optional
        Number of independent directions in each group (default 1).
    initial_mean, initial_variance : float or array_like, shape (G,)
        Mean and variance of :math:`\\theta_i(0)`; variance 0 gives a deterministic start.
    name : str, optional
        A label kept in provenance.

    Examples
    --------
    >>> model = NQM.paper()               # d = 10^4, h_i = 1/i, c_i = h_i, theta(0) ~ N(0, I)
    >>> round(model.initial_loss(), 3)
    4.894
    """

    __slots__ = ("curvatures", "noise_variances", "multiplicities", "initial_mean",
                 "initial_variance", "name", "_recipe")

    def __init__(self, curvatures, noise_variances, multiplicities=None, initial_mean=0.0,
                 initial_variance=1.0, name="custom"):
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

    def __setattr__(self, key, value):
        raise AttributeError("NQM is immutable")

    # ---------------------------------------------------------------- constructors
    @classmethod
    def paper(cls, dim=10_000):
        """The paper's default model: h_i = 1/i, c_i = h_i (C = H), theta(0) ~ N(0, I)."""
        dim = _check_dim(dim, "NQM.paper")
        h = 1.0 / np.arange(1, dim + 1, dtype=np.float64)
        m = cls(h, h, name="paper")
        object.__setattr__(m, "_recipe", {"constructor": "paper", "dim": dim})
        return m

    @classmethod
    def power_law(cls, dim, curvature_exponent=1.0, noise_exponent=1.0, noise_scale=1.0,
                  initial_variance=1.0):
        """h_i = i^-a, c_i = s * i^-b for i = 1..dim."""
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
    def binned(cls, dim=10_000, n_bins=100):
        """The reference notebook's quantised spectrum of h_i = 1/i.

        Bin values are ``geomspace(1, 1/dim, n_bins)``; each h_i = 1/i is rounded down to the
        largest bin value <= h_i, bins carry the counts as multiplicities, and the noise
        variance of a bin is its value (C = H). Empty bins are dropped (they carry no loss).
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
    def n_groups(self):
        """Number of groups (distinct (h, c) pairs)."""
        return int(self.curvatures.shape[0])

    @property
    def dim(self):
        """Total number of directions, sum of multiplicities."""
        return int(self.multiplicities.sum())

    def initial_loss(self):
        """Expected loss at t = 0: 1/2 sum n h (mu0^2 + v0)."""
        return float(0.5 * np.sum(self.multiplicities * self.curvatures
                                  * (self.initial_mean ** 2 + self.initial_variance)))

    def lower_bound_steps(self, target, batch_size):
        """Information-theoretic lower bound d / (2 L_target B) (valid for C = H)."""
        target = check_real("target", target, "NQM.lower_bound_steps", low=0.0)
        batch_size = check_real("batch_size", batch_size, "NQM.lower_bound_steps", low=0.0,
                                high=float(MAX_BATCH), closed=(False, True))
        return self.dim / (2.0 * target * batch_size)

    def expand(self):
        """Per-direction arrays (h, c, mu0, v0), each copy of a group listed separately."""
        rep = self.multiplicities
        return (np.repeat(self.curvatures, rep), np.repeat(self.noise_variances, rep),
                np.repeat(self.initial_mean, rep), np.repeat(self.initial_variance, rep))

    def curvature_groups(self, n_groups=8):
        """Assign each group to one of ``n_groups`` log-spaced curvature bands.

        Returns (labels, edges): ``labels[g]`` is the band of group g and ``edges`` the band
        edges in curvature (decreasing), so per-band statistics can be reported.
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
    def to_dict(self):
        """A JSON-ready description (the recipe when built by a constructor, else the arrays)."""
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
    def from_dict(cls, d):
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict):
            raise ParameterError(f"NQM.from_dict needs a dict. Got {type(d).__name__} instead.")
        d = dict(d)
        kind = d.pop("constructor", "arrays")
        makers = {"paper": cls.paper, "power_law": cls.power_law, "binned": cls.binned,
                  "arrays": cls}
        if not isinstance(kind, str) or kind not in makers:
            raise ParameterError(f"Unknown NQM constructor {kind!r}.")
        try:
            return makers[kind](**d)
        except TypeError as err:
            raise ParameterError(f"Bad parameters for NQM constructor {kind!r}: {err}") from None

    def with_initial_state(self, initial_mean=0.0, initial_variance=1.0):
        """A copy with another initial mean and variance."""
        return NQM(self.curvatures, self.noise_variances, self.multiplicities,
                   initial_mean, initial_variance, name=self.name)

    def __eq__(self, other):
        if not isinstance(other, NQM):
            return NotImplemented
        return all(np.array_equal(getattr(self, f), getattr(other, f)) for f in (
            "curvatures", "noise_variances", "multiplicities", "initial_mean",
            "initial_variance"))

    def __hash__(self):
        return hash((self.curvatures.tobytes(), self.noise_variances.tobytes()))

    def __repr__(self):
        return (f"NQM(name={self.name!r}, groups={self.n_groups}, dim={self.dim}, "
                f"h=[{self.curvatures.min():.3g}, {self.curvatures.max():.3g}])")
