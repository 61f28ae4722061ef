"""Statistics of the validation suite: z-scores against exact moments, Holm-Bonferroni, the exact
law of the loss (a generalised chi-square) and the standard error of a sample variance.

Under Gaussian noise and a Gaussian start every linear optimizer's iterate is Gaussian, each
direction independent: the readout x_g of a direction in group g is N(mu_g, v_g). The loss
L = sum_g (h_g / 2) sum_{j <= m_g} x_gj^2 is then a weighted sum of noncentral chi-squares with
weights lambda_g = h_g v_g / 2, m_g degrees of freedom and noncentrality m_g mu_g^2 / v_g.
"""

import math

import numpy as np
from scipy import stats


def two_sided_p(z):
    """P(|N(0,1)| >= |z|)."""
    return 2.0 * stats.norm.sf(np.abs(np.asarray(z, dtype=float)))


def holm(pvalues, alpha):
    """Holm-Bonferroni. Returns (reject mask, adjusted p-values) for a family-wise error alpha."""
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


def max_abs_z_threshold(n_comparisons, alpha):
    """Bonferroni threshold on max |z| for n two-sided comparisons at family-wise error alpha."""
    return float(stats.norm.isf(alpha / (2 * max(n_comparisons, 1))))


class LossLaw:
    """The exact law of the loss at one step from per-group readout means and second moments."""

    def __init__(self, curvatures, multiplicities, mean, second_moment):
        h = np.asarray(curvatures, float)
        m = np.asarray(multiplicities, float)
        mu = np.asarray(mean, float)
        v = np.maximum(np.asarray(second_moment, float) - mu ** 2, 0.0)
        random = v > 0
        self.offset = float(np.sum(0.5 * h[~random] * m[~random] * mu[~random] ** 2))
        self.lam = 0.5 * h[random] * v[random]
        self.dof = m[random]
        self.nc = m[random] * mu[random] ** 2 / v[random]

    def cumulant(self, r):
        """r-th cumulant of the loss."""
        c = 2.0 ** (r - 1) * math.factorial(r - 1)
        k = np.sum(c * self.lam ** r * (self.dof + r * self.nc))
        return float(k + (self.offset if r == 1 else 0.0))

    @property
    def mean(self):
        return self.cumulant(1)

    @property
    def variance(self):
        return self.cumulant(2)

    def variance_se(self, n):
        """Standard error of the sample variance of n draws: sqrt((mu4 - sigma^4) / n) with
        mu4 = kappa4 + 3 kappa2^2."""
        return math.sqrt((self.cumulant(4) + 2.0 * self.cumulant(2) ** 2) / n)

    def sample(self, n, seed):
        """n independent draws of the loss from its exact law (NumPy's generator, a stream
        independent of the engine's)."""
        rs = np.random.default_rng(seed)
        out = np.full(n, self.offset)
        for lam, k, nc in zip(self.lam, self.dof, self.nc, strict=True):
            draw = rs.noncentral_chisquare(k, nc, n) if nc > 0 else rs.chisquare(k, n)
            out += lam * draw
        return out


def ks_against_law(sample, law, seed=0, ref_factor=50):
    """Kolmogorov-Smirnov test of a sample against the exact law, through a reference sample
    ``ref_factor`` times larger drawn from that law. Returns (statistic, p-value)."""
    sample = np.asarray(sample, float)
    ref = law.sample(ref_factor * sample.size, seed)
    res = stats.ks_2samp(sample, ref)
    return float(res.statistic), float(res.pvalue)


def band_moments(model, labels, n_bands, group_mean, group_second_moment):
    """Exact mean over each band's directions of the readout's square, and the variance of that
    per-trajectory band average: Var(x^2) = 2 v^2 + 4 mu^2 v for x ~ N(mu, v)."""
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
