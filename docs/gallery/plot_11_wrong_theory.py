r"""
A wrong theory, caught
======================

The recurrence of the previous example, with one factor missing in its noise term: the
multiplicative part :math:`h_i^2 s_i` written as :math:`h_i s_i`,

.. math::

    s_i' = (1-\alpha h_i)^2 s_i + \frac{\alpha^2}{B}\Big(h_i\,s_i + h_i\sum_j h_j s_j
    + \sigma^2 h_i\Big) \quad\text{(wrong)}.

:func:`nqm_mc.check` rejects it at the family-wise threshold. Its sensitivity says how small a
relative error the same runs would have caught, and :func:`nqm_mc.runs_needed` how many runs
a smaller one would take.
"""

import matplotlib.pyplot as plt
import numpy as np

from nqm_mc import NQM, SGD, MinibatchLeastSquares, check, runs_needed, simulate, style

style.use()

model = NQM.power_law(50, 1.0, 1.0)
lr, batch, sigma2, n_steps, n_runs = 0.5, 4, 0.5, 300, 3000


def risk(steps, factor=True):
    h, _, mu0, v0 = model.expand()
    s = mu0 ** 2 + v0
    out = {}
    for t in range(int(steps.max()) + 1):
        out[t] = 0.5 * h @ s
        mult = (h * h if factor else h) * s  # factor=False: the factor h_i is missing
        s = (1 - lr * h) ** 2 * s + lr ** 2 / batch * (mult + h * (h @ s) + sigma2 * h)
    return np.array([out[int(t)] for t in steps])


res = simulate(model, SGD(lr), batch, n_steps, n_runs, seed=4, record="log", n_records=25,
               noise=MinibatchLeastSquares(sigma2), progress=False)
right = check(res, mean=risk, family_alpha=1e-5)
wrong = check(res, mean=lambda steps: risk(steps, factor=False),
              family_alpha=1e-5)
gap = np.max(np.abs(risk(res.steps, False) / risk(res.steps) - 1))
print(f"right theory: passed = {right.passed}, max |z| = {right.max_abs_z:.2f}")
print(f"wrong theory: passed = {wrong.passed}, max |z| = {wrong.max_abs_z:.2f} "
      f"(threshold {wrong.threshold:.2f}); it is off by up to {100 * gap:.1f} %")
print(f"sensitivity of these {n_runs} runs: {100 * right.sensitivity:.2f} % "
      f"(power check caught: {right.power_caught})")
print(f"runs needed to detect a 0.5 % error: {runs_needed(0.005, res, family_alpha=1e-5)}")

fig = wrong.plot(title="one factor missing in the noise term: rejected")
plt.show()
