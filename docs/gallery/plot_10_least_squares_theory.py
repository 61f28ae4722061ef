r"""
Your own theory: SGD on least squares, against real minibatches
===============================================================

Least-squares regression with Gaussian features :math:`x \sim N(0, H)` and labels
:math:`y = x^\top\theta^* + \varepsilon`, :math:`\varepsilon \sim N(0, \sigma^2)`, trained by
online SGD on fresh minibatches of :math:`B` examples. Measured from the optimum, the
minibatch gradient :math:`g = \frac1B\sum_b x_b(x_b^\top\theta - \varepsilon_b)` has mean
:math:`H\theta` and, by Isserlis' theorem, covariance
:math:`\frac1B[H\theta\theta^\top H + \mathrm{tr}(H\theta\theta^\top)H + \sigma^2 H]`: the noise
grows with the iterate. With :math:`H` diagonal, the second moments
:math:`s_i = E[\theta_i^2]` then follow exactly

.. math::

    s_i' = (1-\alpha h_i)^2 s_i + \frac{\alpha^2}{B}\Big(h_i^2 s_i + h_i\sum_j h_j s_j
    + \sigma^2 h_i\Big), \qquad E[L_t] = \tfrac12 \sum_i h_i s_i .

This example writes that recurrence, as a user would, and checks it with
:func:`nqm_mc.check` against Monte Carlo runs that sample the actual minibatches
(:func:`~nqm_mc.MinibatchLeastSquares`: :math:`B(d+1)` fresh normals per step).
"""

import matplotlib.pyplot as plt
import numpy as np

from nqm_mc import NQM, SGD, MinibatchLeastSquares, check, simulate, style

style.use()

model = NQM.power_law(50, 1.0, 1.0)  # the spectrum of H: h_i = 1/i
lr, batch, sigma2, n_steps, n_runs = 0.5, 4, 0.5, 300, 3000


def risk(steps):
    """E[L_t] at the given steps, by the recurrence above."""
    h, _, mu0, v0 = model.expand()
    s = mu0 ** 2 + v0
    out = {}
    for t in range(int(steps.max()) + 1):
        out[t] = 0.5 * h @ s
        s = (1 - lr * h) ** 2 * s + lr ** 2 / batch * (h * h * s + h * (h @ s) + sigma2 * h)
    return np.array([out[int(t)] for t in steps])


res = simulate(model, SGD(lr), batch, n_steps, n_runs, seed=1, record="log", n_records=25,
               noise=MinibatchLeastSquares(sigma2), progress=False)
v = check(res, mean=risk, family_alpha=1e-5)
print(v)
print(f"passed: {v.passed}; max |z| = {v.max_abs_z:.2f} against the family-wise threshold "
      f"{v.threshold:.2f}; this run detects a {100 * v.sensitivity:.2f} % error "
      f"(power check caught: {v.power_caught})")

fig = v.plot(title="SGD on least squares: recurrence vs real minibatches")
plt.show()

# %%
# Every record lies within the family-wise threshold. The same recurrence without the
# iterate-dependent terms is the additive NQM; under multiplicative noise the floor and the
# speed both depend on the loss itself, which is what changes the critical batch size
# (``python benchmarks/user_rules_report.py``, section 5).
