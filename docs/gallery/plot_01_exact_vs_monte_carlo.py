"""
Exact curve against Monte Carlo
===============================

The two engines answer the same question independently. The exact engine
(:func:`nqm_mc.expected_loss`) propagates the first and second moments of every direction and
returns :math:`E[L(t)]` and the exact variance of the loss of one run; the Monte Carlo engine
(:func:`nqm_mc.simulate`) runs noisy trajectories and returns their mean with its standard
error. Here heavy-ball momentum runs on a 500-direction version of the paper's model
(:math:`h_i = c_i = 1/i`).
"""

import matplotlib.pyplot as plt
import numpy as np

from nqm_mc import NQM, HeavyBall, expected_loss, simulate, steady_state

model = NQM.paper(500)
opt = HeavyBall(learning_rate=0.1, momentum=0.9)
batch, n_steps = 16, 2000

exact = expected_loss(model, opt, batch, n_steps)
mc = simulate(model, opt, batch, n_steps, n_runs=256, seed=1, record="log", n_records=60)
floor = steady_state(model, opt, batch).loss

# %%
# The exact mean at the Monte Carlo's recorded steps gives a z-score per step: the Monte Carlo
# mean minus the exact mean, in units of the Monte Carlo standard error. Independent of the
# step, z should look like draws from a standard normal.

ex_mean = exact.mean[mc.steps]
z = (mc.mean - ex_mean) / mc.sem
print(f"steady state E[L] = {floor:.4f}; Monte Carlo at T = {n_steps}: "
      f"{mc.mean[-1]:.4f} ± {mc.sem[-1]:.4f} (exact {exact.mean[-1]:.4f})")
print(f"largest |z| over {z.size} recorded steps: {np.abs(z).max():.2f}")

t = np.maximum(mc.steps, 0.5)  # draw step 0 at 0.5 on the log axis
fig, (ax, axz) = plt.subplots(2, 1, sharex=True, figsize=(6.4, 5.6),
                              gridspec_kw={"height_ratios": [3, 1]})
ax.plot(np.maximum(exact.steps, 0.5), exact.mean, color="k", lw=1.2, label="exact E[L(t)]")
ax.fill_between(np.maximum(exact.steps, 0.5), np.maximum(exact.mean - exact.std, 1e-4),
                exact.mean + exact.std, color="0.85", label="± one run's std (exact)")
ax.errorbar(t, mc.mean, yerr=2 * mc.sem, fmt="o", ms=3, color="C0",
            label="Monte Carlo mean ± 2 s.e. (256 runs)")
ax.axhline(floor, ls=":", color="C3", label=f"steady state {floor:.4f}")
ax.set(xscale="log", yscale="log", ylabel="loss",
       title=f"heavy ball, α = 0.1, β = 0.9, B = {batch}, d = 500")
ax.legend(fontsize=8)
axz.axhspan(-2, 2, color="0.9")
axz.plot(t, z, "o", ms=3, color="C0")
axz.axhline(0, color="k", lw=0.8)
axz.set(xlabel="step t (step 0 drawn at 0.5)", ylabel="z", ylim=(-4.5, 4.5))
fig.tight_layout()

# %%
# The Monte Carlo points lie on the exact curve within their error bars, and the residuals
# stay inside the shaded ±2 band at nearly every step. The grey band is much wider than the
# error bars: it is the spread of a *single* run, while the error bars shrink as one over the
# square root of the number of runs. The validation suite (``nqm-mc validate``) turns this
# comparison into formal tests with a multiple-comparison correction.
