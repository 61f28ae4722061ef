"""
Exact curve against Monte Carlo
===============================

The two engines answer the same question independently. The exact engine
(:func:`nqm_mc.expected_loss`) propagates the first and second moments of every direction and
returns :math:`E[L(t)]` and the exact variance of the loss of one run; the Monte Carlo engine
(:func:`nqm_mc.simulate`) runs noisy trajectories and returns their mean with its standard
error. Here heavy-ball momentum runs on a 500-direction version of the paper's model
(:math:`h_i = c_i = 1/i`).

The figures of this gallery are drawn in the package's figure style:
:func:`nqm_mc.style.use` applies its matplotlib settings, and the helpers of
:mod:`nqm_mc.style` draw the recurring elements (titles with the hyperparameter values,
steady states, targets, the residual panel, step axes that show step 0).
"""

import matplotlib.pyplot as plt
import numpy as np

from nqm_mc import NQM, HeavyBall, expected_loss, simulate, steady_state, style

style.use()

model = NQM.paper(500)
opt = HeavyBall(learning_rate=0.1, momentum=0.9)
batch, n_steps, n_runs = 16, 2000, 256

exact = expected_loss(model, opt, batch, n_steps)
mc = simulate(model, opt, batch, n_steps, n_runs=n_runs, seed=1, record="log", n_records=60)
floor = steady_state(model, opt, batch).loss

# %%
# The exact mean at the Monte Carlo's recorded steps gives a z-score per step: the Monte Carlo
# mean minus the exact mean, in units of the Monte Carlo standard error. Independent of the
# step, z should look like draws from a standard normal. With many steps, some :math:`|z|`
# is bound to exceed 2, so the threshold :math:`z^*` of the residual panel is Bonferroni
# corrected: all :math:`|z|` stay below it with probability 95 % when the engines agree.

ex_mean = exact.mean[mc.steps]
z = (mc.mean - ex_mean) / mc.sem
z_star = style.bonferroni_z(z.size)
print(f"steady state E[L] = {floor:.4f}; Monte Carlo at T = {n_steps}: "
      f"{mc.mean[-1]:.4f} ± {mc.sem[-1]:.4f} (exact {exact.mean[-1]:.4f})")
print(f"largest |z| over {z.size} recorded steps: {np.abs(z).max():.2f} (z* = {z_star:.2f})")

fig, ax, axz = style.mc_figure(plt)
ax.fill_between(exact.steps, np.maximum(exact.mean - exact.std, 1e-4), exact.mean + exact.std,
                color=style.BAND, alpha=0.3, lw=0, label="± one run's s.d. (exact)")
ax.plot(exact.steps, exact.mean, color=style.EXACT, lw=1.3, label="exact E[L(t)]")
ax.errorbar(mc.steps, mc.mean, yerr=1.96 * mc.sem, fmt="o", color=style.MONTE_CARLO,
            mfc="white", capsize=0, label=f"Monte Carlo mean ± 1.96 s.e. (N = {n_runs})")
style.steady_line(ax, floor)
style.log_steps(ax, exact.steps, label="")
style.log_y(ax, "loss L(t)")
style.title(ax, style.optimizer_text(opt, batch) + f"\n{style.model_text(model)}")
style.legend(ax)
style.residual_panel(axz, mc.steps, z, z_star, f"5 % family-wise over {z.size} steps")
style.log_steps(axz, mc.steps)
plt.show()

# %%
# The Monte Carlo points lie on the exact curve within their error bars, and every residual
# stays inside the :math:`\pm z^*` lines. The light blue band is much wider than the error
# bars: it is the spread of a *single* run, while the error bars shrink as one over the
# square root of the number of runs. The validation suite (``nqm-mc validate``) turns this
# comparison into formal tests with the same multiple-comparison correction.
