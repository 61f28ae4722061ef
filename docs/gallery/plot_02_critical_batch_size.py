r"""
Steps to target against batch size: the critical batch size
=============================================================

The paper's central figure. For each batch size B the learning rate (and, for heavy ball,
the momentum) is tuned to reach a loss target in the fewest steps; the tuned steps are then
plotted against B. At small B the steps halve when B doubles (perfect scaling: each step
averages more examples, and the learning rate can grow in proportion). Beyond the *critical
batch size* the curvature, not the noise, limits the learning rate, and larger batches stop
paying off.

Everything here is exact (:func:`nqm_mc.studies.scaling.tune` searches a grid of
hyperparameters with :func:`nqm_mc.steps_to_target_batch`, the exact first crossing), on
:meth:`NQM.binned() <nqm_mc.NQM.binned>`: the paper's spectrum :math:`h_i = c_i = 1/i`,
:math:`d = 10^4`, grouped into 100 bins, which keeps the search cheap.
"""

import matplotlib.pyplot as plt
import numpy as np

from nqm_mc import NQM, style
from nqm_mc.studies.scaling import tune

style.use()

model = NQM.binned()
batch_sizes = 2 ** np.arange(0, 19, 2)  # 1, 4, ..., 2^18
target = 0.01

sgd = tune(model, "sgd", batch_sizes, target)
hb = tune(model, "heavy_ball", batch_sizes, target, grid_size=(40, 10))

# %%
# :meth:`~nqm_mc.studies.scaling.ScalingResult.critical_batch_size` reports two definitions:
# the smallest batch size whose steps exceed twice the perfect-scaling extrapolation from the
# smallest batch size ("doubling"), and :math:`B_\mathrm{crit}` of the fit
# :math:`S(B) = S_\mathrm{min}(1 + B_\mathrm{crit}/B)` ("fit"). The figure marks the doubling
# one. The information-theoretic lower bound :math:`d / (2 L B)`
# (:meth:`NQM.lower_bound_steps <nqm_mc.NQM.lower_bound_steps>`) holds for any optimizer.

fig, ax = plt.subplots(figsize=(6, 4.6))
ax.plot(batch_sizes, sgd.steps[0] * batch_sizes[0] / batch_sizes, color="0.6", lw=0.9,
        ls=(0, (1, 2)), label="perfect scaling from B = 1")
style.bound_line(ax, batch_sizes, sgd.lower_bound, "lower bound d / (2 L B)")
for family, r, tuned in (("sgd", sgd, "tuned α"), ("heavy_ball", hb, "tuned α, β")):
    crit = r.critical_batch_size()
    print(f"{style.family_name(family):20s} steps at B = 1: {r.steps[0]:>9.0f}   "
          f"at B = 2^18: {r.steps[-1]:>6.0f}   "
          f"critical B: doubling {crit['doubling']:.0f}, fit {crit['fit']:.0f}")
    kw = style.family_style(family, p=0.0)
    ax.plot(batch_sizes, r.steps, **kw, label=f"{style.family_name(family)} ({tuned}), "
            f"critical B = {crit['doubling']:.0f}")
    k = list(batch_sizes).index(crit["doubling"])
    ax.plot(batch_sizes[k], r.steps[k], "o", ms=11, mfc="none", mec=style.TARGET, mew=1.2)
ax.plot([], [], "o", ms=11, mfc="none", mec=style.TARGET, mew=1.2,
        label="critical B: steps > 2× perfect scaling")
ax.set_xscale("log", base=2)
ax.set_xticks(batch_sizes)
ax.set_xlabel("batch size B")
style.log_y(ax, f"steps to E[L] < {target}")
style.title(ax, f"Tuned steps to target {target} against batch size, p = 0\n"
            f"{style.model_text(model)} in 100 bins, h_i = c_i = 1/i")
style.legend(ax, loc="lower left")
plt.show()

# %%
# Both optimizers follow perfect scaling at small batch sizes, where they need the same number
# of steps: with small learning rates, momentum :math:`\beta` only rescales the effective
# learning rate :math:`\alpha/(1-\beta)`. SGD (dashed) leaves the perfect-scaling line first
# (circled: the "doubling" critical batch size); heavy ball (solid) keeps scaling to batch
# sizes about 16 times larger and ends with far fewer steps. Both stay well above the lower
# bound at large batch sizes, where the curvature rather than the noise sets the pace. The
# command ``nqm-mc scaling --optimizer heavy_ball`` runs the same study from the shell and
# writes it as a CSV file.
