"""The statistics of the theory check and of the validation suite.

z-scores against standard errors, Holm-Bonferroni and the Bonferroni threshold on the largest
:math:`|z|`, the sensitivity of a run to a relative deviation of the mean, the exact law of the
loss (a generalised chi-square) and the standard error of a sample variance
(``docs/theory.md``, section 6; the statistics of two records are in
:mod:`nqm_mc.joint_stats`). :func:`nqm_mc.check` is built from these functions, and so is every
case of ``python -m validation``.

Under Gaussian noise and a Gaussian start every linear optimizer's iterate is Gaussian, each
direction independent: the readout x_g of a direction in group g is N(mu_g, v_g). The loss
L = sum_g (h_g / 2) sum_{j <= m_g} x_gj^2 is then a weighted sum of noncentral chi-squares with
weights lambda_g = h_g v_g / 2, m_g degrees of freedom and noncentrality m_g mu_g^2 / v_g.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from numpy.typing import ArrayLike

if TYPE_CHECKING:
    from nqm_mc.spec.model import NQM

__all__ = ["two_sided_p", "holm", "max_abs_z_threshold", "power_z", "sensitivity", "LossLaw",
           "ks_against_law", "band_moments", "sample_variance_se"]


def two_sided_p(z: ArrayLike) -> np.ndarray:
    r"""Return the two-sided p-value :math:`P(|N(0,1)| \ge |z|)` of z-scores.

    Parameters
    ----------
    z : array_like
        z-scores.

    Returns
    -------
    ndarray
        p-values, elementwise.
    """
    from scipy import stats  # scipy.stats takes half a second to import

    return 2.0 * stats.norm.sf(np.abs(np.asarray(z, dtype=float)))


def holm(pvalues: ArrayLike, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    r"""Apply the Holm-Bonferroni procedure.

    Parameters
    ----------
    pvalues : array_like
        The family's p-values.
    alpha : float
        Family-wise error.

    Returns
    -------
    reject : ndarray of bool
        Hypotheses rejected.
    adjusted : ndarray
        Holm-adjusted p-values (reject where ``adjusted <= alpha``).

    Notes
    -----
    With the p-values sorted, :math:`p_{(1)} \le \dots \le p_{(m)}`, the adjusted value of
    :math:`p_{(i)}` is :math:`\max_{j \le i} \min(1, (m - j + 1) p_{(j)})`
    (``docs/theory.md``, section 6.1).
    """
    p = np.asarray(pvalues, dtype=float)
    n = p.size
    if n == 0:
        return np.zeros(0, bool), np.zeros(0)
    order = np.argsort(p)
    adj = np.empty(n)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (n - rank) * p[i]))
        adj[i] = running
    return adj <= alpha, adj


def max_abs_z_threshold(n_comparisons: int, alpha: float) -> float:
    r"""Return the Bonferroni threshold on max :math:`|z|` for n two-sided comparisons.

    Parameters
    ----------
    n_comparisons : int
        Number of comparisons (at least 1 is used).
    alpha : float
        Family-wise error.

    Returns
    -------
    float
        :math:`z^\star` with :math:`P(|N(0,1)| > z^\star) = \alpha / n`.
    """
    from scipy import stats

    return float(stats.norm.isf(alpha / (2 * max(n_comparisons, 1))))


def power_z(power: float) -> float:
    r"""Return the margin over the threshold at which a shift is detected with this probability.

    A deviation whose expected z-score is :math:`z^\star + z_\beta` exceeds the threshold
    :math:`z^\star` with probability ``power`` (the far tail neglected):
    :math:`z_\beta = \Phi^{-1}(\text{power})`, 0 for a power of 1/2.

    Parameters
    ----------
    power : float in (0, 1)
        Probability of detection.

    Returns
    -------
    float
    """
    from scipy import stats

    return float(stats.norm.ppf(power))


def sensitivity(steps: ArrayLike, mean: ArrayLike, se: ArrayLike, live: ArrayLike,
                threshold: float, power: float = 0.5) -> tuple[float, int, float]:
    r"""Return the smallest relative deviation of the mean that a run detects.

    A shift of the mean by a fraction :math:`\delta` at record :math:`r` has expected
    z-score :math:`\delta\,m_r / \mathrm{se}_r`; it is detected with probability ``power``
    when that reaches :math:`z^\star + \Phi^{-1}(\text{power})`, so
    :math:`\delta_r = (z^\star + \Phi^{-1}(\text{power}))\,\mathrm{se}_r / |m_r|`.

    Parameters
    ----------
    steps, mean, se : array_like, shape (R,)
        Recorded steps, the mean and its standard error.
    live : array_like of bool, shape (R,)
        Records that are tested (nonzero standard error).
    threshold : float
        The family-wise threshold :math:`z^\star` on :math:`|z|`.
    power : float in (0, 1), default 0.5
        Probability of detection (1/2: the expected :math:`|z|` equals the threshold).

    Returns
    -------
    sensitivity : float
        The minimum of :math:`\delta_r` over live records after step 0: the resolution for a
        deviation present at every record (as a wrong coefficient makes it once the transient
        from the start is over). NaN when no record qualifies.
    step : int
        The step where it is reached (-1 when none).
    worst : float
        The maximum over those records: what a deviation confined to one unknown record needs.

    Notes
    -----
    Step 0 is left out: no error of an update rule or of a theory of the dynamics shows there.
    """
    steps, mean, se = np.asarray(steps), np.asarray(mean, float), np.asarray(se, float)
    sel = np.asarray(live, bool) & (steps > 0) & (np.abs(mean) > 0)
    if not sel.any():
        return float("nan"), -1, float("nan")
    rel = (threshold + power_z(power)) * se[sel] / np.abs(mean[sel])
    i = int(np.argmin(rel))
    return float(rel[i]), int(steps[sel][i]), float(rel.max())


def sample_variance_se(paths: ArrayLike) -> np.ndarray:
    r"""Return the standard error of the sample variance of each column, from the sample.

    :math:`\mathrm{se}(s^2) = \sqrt{(\hat\mu_4 - s^4)/n}`, with :math:`\hat\mu_4` the
    sample fourth central moment; non-finite entries are left out of their column.

    Parameters
    ----------
    paths : array_like, shape (n, R)
        Losses of n runs at R records.

    Returns
    -------
    ndarray, shape (R,)
        NaN for a column with fewer than 3 finite values.
    """
    x = np.asarray(paths, float)
    out = np.full(x.shape[1], np.nan)
    for r in range(x.shape[1]):
        col = x[:, r][np.isfinite(x[:, r])]
        if col.size < 3:
            continue
        c = col - col.mean()
        m4 = float(np.mean(c ** 4))
        s2 = float(np.mean(c ** 2))
        out[r] = math.sqrt(max(m4 - s2 * s2, 0.0) / col.size)
    return out


class LossLaw:
    r"""The exact law of the loss at one step from per-group readout means and second moments.

    Parameters
    ----------
    curvatures, multiplicities : array_like, shape (G,)
        The model's groups.
    mean, second_moment : array_like, shape (G,)
        Per-group mean :math:`m_g` and uncentred second moment of the readout.

    Notes
    -----
    With :math:`v_g = S_g - m_g^2`, the loss is a constant (groups with :math:`v_g = 0`) plus
    :math:`\sum_g \lambda_g \chi'^2_{n_g}(\mathrm{nc}_g)` with :math:`\lambda_g = h_g v_g / 2`
    and :math:`\mathrm{nc}_g = n_g m_g^2 / v_g`; its cumulants are
    :math:`\kappa_r = 2^{r-1}(r-1)!\sum_g \lambda_g^r (n_g + r\,\mathrm{nc}_g)`
    (``docs/theory.md``, section 6.1).
    """

    def __init__(self, curvatures: ArrayLike, multiplicities: ArrayLike, mean: ArrayLike,
                 second_moment: ArrayLike) -> None:
        h = np.asarray(curvatures, float)
        m = np.asarray(multiplicities, float)
        mu = np.asarray(mean, float)
        v = np.maximum(np.asarray(second_moment, float) - mu ** 2, 0.0)
        random = v > 0
        self.offset = float(np.sum(0.5 * h[~random] * m[~random] * mu[~random] ** 2))
        self.lam = 0.5 * h[random] * v[random]
        self.dof = m[random]
        self.nc = m[random] * mu[random] ** 2 / v[random]

    def cumulant(self, r: int) -> float:
        """Return the r-th cumulant of the loss (the constant part is added for r = 1)."""
        c = 2.0 ** (r - 1) * math.factorial(r - 1)
        k = np.sum(c * self.lam ** r * (self.dof + r * self.nc))
        return float(k + (self.offset if r == 1 else 0.0))

    @property
    def mean(self) -> float:
        """The expected loss (first cumulant)."""
        return self.cumulant(1)

    @property
    def variance(self) -> float:
        """The variance of the loss (second cumulant)."""
        return self.cumulant(2)

    def variance_se(self, n: float) -> float:
        """Return the standard error of the sample variance of n draws.

        It is sqrt((mu4 - sigma^4) / n) with mu4 = kappa4 + 3 kappa2^2.
        """
        return math.sqrt((self.cumulant(4) + 2.0 * self.cumulant(2) ** 2) / n)

    def sample(self, n: int, seed: int) -> np.ndarray:
        """Draw n independent losses from the exact law.

        NumPy's generator is used: a stream independent of the engine's.
        """
        rs = np.random.default_rng(seed)
        out = np.full(n, self.offset)
        for lam, k, nc in zip(self.lam, self.dof, self.nc, strict=True):
            draw = rs.noncentral_chisquare(k, nc, n) if nc > 0 else rs.chisquare(k, n)
            out += lam * draw
        return out


def ks_against_law(sample: ArrayLike, law: LossLaw, seed: int = 0,
                   ref_factor: int = 50) -> tuple[float, float]:
    """Test a sample against the exact law (two-sample Kolmogorov-Smirnov).

    The reference sample is ``ref_factor`` times larger, drawn from the law.

    Parameters
    ----------
    sample : array_like
        Losses.
    law : LossLaw
        The exact law.
    seed : int, default 0
        Seed of the reference sample.
    ref_factor : int, default 50
        Size of the reference sample relative to ``sample``.

    Returns
    -------
    statistic, p_value : float
    """
    sample = np.asarray(sample, float)
    ref = law.sample(ref_factor * sample.size, seed)
    from scipy import stats

    res = stats.ks_2samp(sample, ref)
    return float(res.statistic), float(res.pvalue)


def band_moments(model: NQM, labels: np.ndarray, n_bands: int, group_mean: np.ndarray,
                 group_second_moment: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the exact per-band mean of the readout's square and its variance.

    The mean is over each band's directions; the variance is that of one trajectory's band
    average, from Var(x^2) = 2 v^2 + 4 mu^2 v for x ~ N(mu, v).

    Parameters
    ----------
    model : NQM
        The model (multiplicities weight the groups).
    labels : ndarray of int, shape (G,)
        Band of each group (``NQM.curvature_groups``).
    n_bands : int
        Number of bands.
    group_mean, group_second_moment : ndarray, shape (R, G)
        Exact per-group readout moments at R recorded steps.

    Returns
    -------
    mean, var : ndarray, shape (R, n_bands)
        Band means and per-trajectory variances.
    counts : ndarray, shape (n_bands,)
        Directions per band.
    """
    m = model.multiplicities.astype(float)
    v = np.maximum(group_second_moment - group_mean ** 2, 0.0)
    var_sq = 2 * v ** 2 + 4 * group_mean ** 2 * v
    counts = np.bincount(labels, weights=m, minlength=n_bands)
    R = group_mean.shape[0]
    mean = np.zeros((R, n_bands))
    var = np.zeros((R, n_bands))
    for b in range(n_bands):
        sel = labels == b
        if counts[b] == 0:
            continue
        mean[:, b] = (group_second_moment[:, sel] * m[sel]).sum(1) / counts[b]
        var[:, b] = (var_sq[:, sel] * m[sel]).sum(1) / counts[b] ** 2
    return mean, var, counts
