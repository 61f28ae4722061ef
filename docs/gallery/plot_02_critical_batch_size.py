"""
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

from nqm_mc import NQM
from nqm_mc.studies.scaling import tune

model = NQM.binned()
batch_sizes = 2 ** np.arange(0, 19, 2)  # 1, 4, ..., 2^18
target = 0.01

sgd = tune(model, "sgd", batch_sizes, target)
hb = tune(model, "heavy_ball", batch_sizes, target, grid_size=(40, 10))

# %%
# :meth:`~nqm_mc.studies.scaling.ScalingResult.critical_batch_size` reports two definitions:
# the smallest batch size whose steps exceed twice the perfect-scaling extrapolation from the
# smallest batch size ("doubling"), and :math:`B_\mathrm{crit}` of the fit
# :math:`S(B) = S_\mathrm{min}(1 + B_\mathrm{crit}/B)` ("fit").

for name, r in (("SGD", sgd), ("heavy ball", hb)):
    crit = r.critical_batch_size()
    print(f"{name:10s} steps at B = 1: {r.steps[0]:>9.0f}   at B = 2^18: {r.steps[-1]:>6.0f}   "
          f"critical B: doubling {crit['doubling']:.0f}, fit {crit['fit']:.0f}")

fig, ax = plt.subplots(figsize=(6.4, 4.6))
ideal = sgd.steps[0] * batch_sizes[0] / batch_sizes
ax.plot(batch_sizes, ideal, ":", color="0.5", label="perfect scaling from B = 1")
ax.plot(batch_sizes, sgd.steps, "o--", color="C0", label="SGD (tuned α)")
ax.plot(batch_sizes, hb.steps, "s-", color="C1", label="heavy ball (tuned α, β)")
for name, r, c in (("SGD", sgd, "C0"), ("heavy ball", hb, "C1")):
    b = r.critical_batch_size()["doubling"]
    if b is not None:
        ax.axvline(b, color=c, lw=0.8, ls="-.", label=f"{name}: critical B (doubling) = {b:.0f}")
ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel=f"steps to E[L] < {target}",
       ylim=(100, 2e7), title="tuned steps to target, NQM.binned() (d = 10^4)")
ax.legend(fontsize=8)
fig.tight_layout()

# %%
# Both optimizers follow perfect scaling at small batch sizes, where they need the same number
# of steps: with small learning rates, momentum :math:`\beta` only rescales the effective
# learning rate :math:`\alpha/(1-\beta)`. SGD leaves the perfect-scaling line first
# (dash-dotted line: the "doubling" critical batch size); heavy ball keeps scaling to batch
# sizes about 16 times larger and ends with far fewer steps. The command
# ``nqm-mc scaling --optimizer heavy_ball`` runs the same study from the shell and writes it
# as a CSV file.
