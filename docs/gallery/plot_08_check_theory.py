r"""
Checking a theory, and catching a wrong one
===========================================

A closed form for SGD's expected loss on the noisy quadratic model, per direction,

.. math::

    E[\ell(t)] = q^t\,\ell(0) + (1 - q^t)\,\frac{\alpha c}{2B(2 - \alpha h)},
    \qquad q = (1 - \alpha h)^2,

is checked against Monte Carlo with :func:`nqm_mc.check`, beside the same formula with one
factor missing in its noise term (the :math:`1/(2 - \alpha h)`). The check reports the
sensitivity of the run (the smallest relative error it detects with probability 0.9) and
confirms it with a power check; :func:`nqm_mc.runs_needed` says how many runs a finer check
would take.
"""

import matplotlib.pyplot as plt
import numpy as np

import nqm_mc
from nqm_mc import style

style.use()

model = nqm_mc.NQM.binned(dim=200, n_bins=20)
opt, batch, n_steps, n_runs = nqm_mc.SGD(0.5), 4, 300, 4000
res = nqm_mc.simulate(model, opt, batch, n_steps, n_runs, seed=0, n_records=25,
                      progress=False)


def theory(steps, missing_factor=False):
    """E[L_t] at the steps, summed over directions."""
    h, c, n = model.curvatures, model.noise_variances, model.multiplicities
    a = opt.base_learning_rate
    q = (1 - a * h)[None, :] ** (2 * steps[:, None])
    start = h / 2 * (model.initial_mean ** 2 + model.initial_variance)
    floor = a * c / (2 * batch) if missing_factor else a * c / (2 * batch * (2 - a * h))
    return (n * (q * start + (1 - q) * floor)).sum(axis=1)


right = nqm_mc.check(res, mean=theory)
wrong = nqm_mc.check(res, mean=lambda t: theory(t, missing_factor=True))
print(right)
print()
print(f"wrong theory: passed = {wrong.passed}, max |z| = {wrong.max_abs_z:.1f} against "
      f"{wrong.threshold:.2f}")
print(f"sensitivity of {n_runs} runs: {100 * right.sensitivity:.2f} %; runs to detect a "
      f"0.2 % error: {nqm_mc.runs_needed(0.002, res)}")

# %%
# The figure: the Monte Carlo mean over both predictions, and the z-scores of each below.
fig, (ax, az) = plt.subplots(2, 1, figsize=(6.4, 5.6), sharex=True,
                             gridspec_kw={"height_ratios": [2.2, 1]})
t = res.steps
ax.errorbar(t, res.mean, yerr=1.96 * res.sem, fmt="o", ms=3, color=style.MONTE_CARLO,
            mfc="white", label=f"Monte Carlo mean ± 1.96 s.e. (N = {n_runs})")
ax.plot(t, right.mean.predicted, color=style.EXACT, lw=1.3, label="closed form")
ax.plot(t, wrong.mean.predicted, color=style.TARGET, ls="--", lw=1.3,
        label="closed form without 1/(2 - αh)")
style.log_steps(ax, t, "")
style.log_y(ax, "loss")
ax.legend(fontsize=7)
style.residual_panel(az, t, np.where(right.mean.tested, right.z, np.nan), right.threshold,
                     "family-wise 1e-4")
az.plot(t, np.clip(wrong.z, -12, 12), "s", ms=3, color=style.TARGET, mfc="white",
        label="wrong theory (clipped at ±12)")
az.legend(fontsize=7, loc="lower left")
style.log_steps(az, t)
plt.show()
