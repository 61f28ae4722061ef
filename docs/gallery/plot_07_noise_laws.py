r"""
Noise laws with the same covariance
===================================

The exact engine depends only on the second moments of the gradient noise, so its expected
loss holds for any law with covariance :math:`C/B`. The Monte Carlo engine can draw the noise
from other laws with the same covariance: Student-t (:class:`~nqm_mc.spec.noise.StudentT`,
heavy tails) or minibatches drawn without replacement from a finite dataset of ``n`` fixed
per-example gradients (:class:`~nqm_mc.spec.noise.FiniteData`). This example shows what
changes and what does not.
"""

import matplotlib.pyplot as plt
import numpy as np

from nqm_mc import NQM, SGD, expected_loss, simulate
from nqm_mc.spec.noise import FiniteData, Gaussian, StudentT

model = NQM.paper(100)
opt, batch, n_steps, target = SGD(0.5), 4, 400, 0.25
laws = {"Gaussian": Gaussian(), "Student-t, ν = 3": StudentT(3.0),
        "finite data, n = 16": FiniteData(16, seed=0)}

exact = expected_loss(model, opt, batch, n_steps)
results = {name: simulate(model, opt, batch, n_steps, n_runs=1024, seed=3, noise=law,
                          target=target, record="all")
           for name, law in laws.items()}

fig, (ax, axh) = plt.subplots(1, 2, figsize=(9.6, 4.2))
ax.plot(np.maximum(exact.steps, 0.5), exact.mean, color="k", lw=1, label="exact E[L(t)]")
for i, (name, r) in enumerate(results.items()):
    ax.plot(np.maximum(r.steps, 0.5), r.mean, color=f"C{i}", lw=1, label=f"{name}: mean")
    ax.plot(np.maximum(r.steps, 0.5), r.quantiles[0], color=f"C{i}", lw=0.8, ls="--")
    hs = r.hitting_summary()
    ht = r.hitting_times[r.hitting_times >= 0]
    axh.hist(ht, bins=np.arange(0, 200, 5), histtype="step", color=f"C{i}",
             label=f"{name}: mean {hs['mean']:.1f} ± {hs['sem']:.1f}")
    z = (r.mean[-1] - exact.mean[-1]) / r.sem[-1]
    print(f"{name:20s} E[L(T)] = {r.mean[-1]:.4f} ± {r.sem[-1]:.4f} (z = {z:+.2f} against exact)"
          f"; 5 % quantile {r.quantiles[0, -1]:.4f}; steps to L < {target}: mean "
          f"{hs['mean']:.1f} ± {hs['sem']:.1f}")
ax.axhline(target, color="C3", ls=":", label=f"target {target}")
ax.set(xscale="log", yscale="log", xlabel="step t (step 0 drawn at 0.5)", ylabel="loss",
       title="mean (solid) and 5 % quantile (dashed)")
ax.legend(fontsize=7)
axh.set(xlabel=f"first step with loss < {target}", ylabel="runs",
        title="hitting times, 1024 runs per law")
axh.legend(fontsize=7)
fig.suptitle(f"SGD α = 0.5, B = {batch}, d = 100: three noise laws, one covariance",
             fontsize=10)
fig.tight_layout()

# %%
# The three means lie on the exact curve within their standard errors (second moments alone
# decide the expected loss), but the distributions around them differ: the lower quantile of
# the loss sits lower for the two non-Gaussian laws, and the mean hitting times differ by
# several standard errors. Heavy tails make rare large steps (the spike in the Student-t mean
# is one such draw, and why its standard error is twice the Gaussian's); the finite dataset
# reuses its 16 per-example gradients at every step. ``nqm-mc noise-study`` runs this
# comparison with two-sample Kolmogorov-Smirnov tests of the hitting times.
