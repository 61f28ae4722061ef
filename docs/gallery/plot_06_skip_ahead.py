r"""
Skip-ahead sampling: two million steps in a few seconds
=======================================================

The paper's small-batch regime needs millions of steps: SGD at :math:`B = 4` on the paper's
model takes about 1.5 million steps to reach a loss of 0.01. Step by step, 200 runs of
:math:`d = 10^4` directions would take hours. For linear optimizers with Gaussian noise the
state of every direction moves between two *recorded* steps as one Gaussian step,
:math:`x(t_{k+1}) = \Phi_k x(t_k) + \eta_k`, :math:`\eta_k \sim N(0, \Sigma_k)`, so
``simulate(..., method="skip")`` draws the recorded states directly, at a cost per record
instead of per step, with exactly the law of the step-by-step process at those steps
(``docs/theory.md``, section 5.7; :mod:`nqm_mc.montecarlo.skip`).
"""

import time

import matplotlib.pyplot as plt
import numpy as np

from nqm_mc import NQM, SGD, loss_at, simulate, steps_to_target, style

style.use()

model = NQM.paper()  # d = 10^4, h_i = c_i = 1/i
opt, batch, n_steps, n_runs, target = SGD(0.0147), 4, 2_000_000, 200, 0.01

t0 = time.perf_counter()
res = simulate(model, opt, batch, n_steps, n_runs=n_runs, seed=1, method="skip",
               n_records=60)
elapsed = time.perf_counter() - t0

# %%
# :func:`nqm_mc.loss_at` evaluates the exact expected loss at any step in :math:`O(\log t)`;
# :func:`nqm_mc.steps_to_target` finds the exact first crossing of the target. The residual
# panel compares the two engines at each record, with a Bonferroni-corrected threshold.

exact_mean, exact_var, _ = loss_at(model, opt, batch, res.steps)
hit = steps_to_target(model, opt, batch, target)
z = (res.mean - exact_mean) / res.sem
z_star = style.bonferroni_z(z.size)
print(f"sampler: {res.meta['method']}, {elapsed:.1f} s for {n_runs} runs x {n_steps:,} steps "
      f"(d = {model.dim})")
print(f"E[L] at T: Monte Carlo {res.mean[-1]:.5f} ± {res.sem[-1]:.5f}, exact {exact_mean[-1]:.5f}")
print(f"largest |z| over {z.size} records: {np.abs(z).max():.2f} (z* = {z_star:.2f}); "
      f"exact first crossing of {target}: step {hit.steps:,}")

fig, ax, axz = style.mc_figure(plt)
ax.fill_between(res.steps, res.quantiles[0], res.quantiles[-1], color=style.BAND, alpha=0.3,
                lw=0, label="5–95 % of single runs (Monte Carlo)")
ax.plot(res.steps, exact_mean, color=style.EXACT, lw=1.3, label="exact E[L(t)]")
ax.errorbar(res.steps, res.mean, yerr=1.96 * res.sem, fmt="o", color=style.MONTE_CARLO,
            mfc="white", capsize=0, label=f"Monte Carlo mean ± 1.96 s.e. (N = {n_runs})")
style.target_line(ax, target)
ax.axvline(hit.steps, color=style.TARGET, lw=0.9, ls=":",
           label=f"first below target (exact): step {hit.steps:,}")
style.log_steps(ax, res.steps, label="")
style.log_y(ax, "loss L(t)")
style.title(ax, style.optimizer_text(opt, batch) + f", {n_steps:,} steps\n"
            f"{style.model_text(model)}, skip-ahead sampler, {len(res.steps)} records")
style.legend(ax)
style.residual_panel(axz, res.steps, z, z_star, f"5 % family-wise over {z.size} records")
style.log_steps(axz, res.steps)
plt.show()

# %%
# The Monte Carlo mean follows the exact curve over six decades of steps, and every residual
# stays inside the :math:`\pm z^*` lines. Only the 60 recorded steps were sampled, so hitting
# times are resolved to the record grid: to measure them, pass ``target=`` and a record grid
# dense around the crossing, :func:`nqm_mc.montecarlo.skip.crossing_grid`.
# ``method="auto"`` (the default) picks skip-ahead by itself when it is exact and faster;
# ``res.meta["method"]`` says which sampler ran.
