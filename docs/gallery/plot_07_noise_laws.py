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

from nqm_mc import NQM, SGD, expected_loss, simulate, style
from nqm_mc.spec.noise import FiniteData, Gaussian, StudentT

style.use()

model = NQM.paper(100)
opt, batch, n_steps, target, n_runs = SGD(0.5), 4, 400, 0.25, 1024
laws = [Gaussian(), StudentT(3.0), FiniteData(16, seed=0)]

exact = expected_loss(model, opt, batch, n_steps)
results = {style.noise_text(law): simulate(model, opt, batch, n_steps, n_runs=n_runs, seed=3,
                                           noise=law, target=target, record="all")
           for law in laws}

fig, (ax, axh) = plt.subplots(1, 2, figsize=(9, 4.2))
ax.plot(exact.steps, exact.mean, color=style.EXACT, lw=1.3, label="exact E[L(t)]")
for i, (name, r) in enumerate(results.items()):
    c = style.CYCLE[i]
    ax.fill_between(r.steps, r.mean - 1.96 * r.sem, r.mean + 1.96 * r.sem, color=c,
                    alpha=0.25, lw=0)
    ax.plot(r.steps, r.mean, color=c, ls="--", lw=1, label=f"{name}: mean ± 1.96 s.e.")
    ax.plot(r.steps, r.quantiles[0], color=c, ls=":", lw=1)
    hs = r.hitting_summary()
    ht = r.hitting_times[r.hitting_times >= 0]
    axh.hist(ht, bins=np.arange(30, 200, 5), histtype="step", color=c, lw=1.3,
             label=f"{name}: {hs['mean']:.1f} ± {hs['sem']:.1f}")
    z = (r.mean[-1] - exact.mean[-1]) / r.sem[-1]
    print(f"{name:20s} E[L(T)] = {r.mean[-1]:.4f} ± {r.sem[-1]:.4f} (z = {z:+.2f} against exact)"
          f"; 5 % quantile {r.quantiles[0, -1]:.4f}; steps to L < {target}: mean "
          f"{hs['mean']:.1f} ± {hs['sem']:.1f}")
ax.plot([], [], color="0.35", ls=":", lw=1, label="5 % quantile of single runs (dotted)")
style.target_line(ax, target)
style.log_steps(ax, exact.steps)
style.log_y(ax, "loss L(t)")
style.title(ax, "Monte Carlo mean and 5 % quantile per law")
style.legend(ax, loc="lower left")
axh.set(xlabel=f"first step with loss < {target}", ylabel="runs")
style.title(axh, f"hitting times of {target}, {n_runs} runs per law (mean ± s.e.)")
style.legend(axh, loc="upper right")
fig.suptitle(style.optimizer_text(opt, batch) + f", {style.model_text(model)}: "
             "three noise laws, one covariance", fontsize=10)
plt.show()

# %%
# The three means lie on the exact curve within their standard errors (second moments alone
# decide the expected loss), but the distributions around them differ: the lower quantile of
# the loss sits lower for the two non-Gaussian laws, and the mean hitting times differ by
# several standard errors. Heavy tails make rare large steps (the spike in the Student-t mean
# is one such draw, and why its standard error is twice the Gaussian's); the finite dataset
# reuses its 16 per-example gradients at every step. ``nqm-mc noise-study`` runs this
# comparison with two-sample Kolmogorov-Smirnov tests of the hitting times.
