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

from nqm_mc import NQM, SGD, loss_at, simulate, steps_to_target

model = NQM.paper()  # d = 10^4, h_i = c_i = 1/i
opt, batch, n_steps = SGD(0.0147), 4, 2_000_000

t0 = time.perf_counter()
res = simulate(model, opt, batch, n_steps, n_runs=200, seed=1, method="skip", n_records=60)
elapsed = time.perf_counter() - t0

# %%
# :func:`nqm_mc.loss_at` evaluates the exact expected loss at any step in :math:`O(\log t)`;
# :func:`nqm_mc.steps_to_target` finds the exact first crossing of the target.

exact_mean, exact_var, _ = loss_at(model, opt, batch, res.steps)
hit = steps_to_target(model, opt, batch, 0.01)
z = (res.mean - exact_mean) / res.sem
print(f"sampler: {res.meta['method']}, {elapsed:.1f} s for 200 runs x {n_steps:,} steps "
      f"(d = {model.dim})")
print(f"E[L] at T: Monte Carlo {res.mean[-1]:.5f} ± {res.sem[-1]:.5f}, exact {exact_mean[-1]:.5f}")
print(f"largest |z| over {z.size} records: {np.abs(z).max():.2f}; "
      f"exact first crossing of 0.01: step {hit.steps:,}")

t = np.maximum(res.steps, 0.5)
fig, ax = plt.subplots(figsize=(6.4, 4.6))
ax.fill_between(t, res.quantiles[0], res.quantiles[-1], color="C0", alpha=0.2,
                label="5-95 % of runs (Monte Carlo)")
ax.errorbar(t, res.mean, yerr=2 * res.sem, fmt="o", ms=3, color="C0",
            label="Monte Carlo mean ± 2 s.e. (200 runs, skip-ahead)")
ax.plot(t, exact_mean, color="k", lw=1, label="exact E[L(t)]")
ax.axhline(0.01, color="C3", ls=":", label="target 0.01")
ax.axvline(hit.steps, color="C3", lw=0.8, label=f"exact crossing, step {hit.steps:,}")
ax.set(xscale="log", yscale="log", xlabel="step t (step 0 drawn at 0.5)", ylabel="loss",
       title=f"SGD α = 0.0147, B = 4, d = 10^4, {n_steps:,} steps")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# The Monte Carlo mean follows the exact curve over six decades of steps. Only the 60 recorded
# steps were sampled, so hitting times are resolved to the record grid: to measure them, pass
# ``target=`` and a record grid dense around the crossing,
# :func:`nqm_mc.montecarlo.skip.crossing_grid`. ``method="auto"`` (the default) picks
# skip-ahead by itself when it is exact and faster; ``res.meta["method"]`` says which sampler
# ran.
