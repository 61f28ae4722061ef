r"""
Your own optimizer: a Lion-like rule against SGD and heavy ball
===============================================================

A user rule is a function of one direction's scalars, compiled into the same kernels as the
built-in optimizers (all threads, the same bits for any thread count). Here a Lion-like
update, the sign of an interpolation between the momentum and the gradient,

.. math::

    c = \beta_1 m + (1-\beta_1) g,\qquad \theta \leftarrow \theta - \alpha_t\,\mathrm{sign}(c),
    \qquad m \leftarrow \beta_2 m + (1-\beta_2) g,

runs on the paper's NQM beside SGD and heavy ball, each with a cosine learning-rate decay
(a sign update moves every direction by the full step, so it needs its step to shrink).
The same seed gives the three optimizers the same noise (common random numbers).
"""

import matplotlib.pyplot as plt

from nqm_mc import NQM, SGD, HeavyBall, UpdateRule, simulate, style
from nqm_mc.spec.schedules import CosineDecay

style.use()


def lion(theta, g, m, lr, beta1, beta2):
    c = beta1 * m + (1.0 - beta1) * g
    sign = 1.0 if c > 0 else (-1.0 if c < 0 else 0.0)
    return theta - lr * sign, beta2 * m + (1.0 - beta2) * g


model = NQM.paper(200)
batch, n_steps, n_runs, target = 16, 600, 256, 0.3
optimizers = {
    "SGD": SGD(CosineDecay(0.5, n_steps)),
    "heavy ball (beta 0.9)": HeavyBall(CosineDecay(0.05, n_steps), 0.9),
    "Lion-like rule": UpdateRule(lion, CosineDecay(0.01, n_steps), state=("m",),
                                 hyper={"beta1": 0.9, "beta2": 0.99}, name="lion"),
}
results = {name: simulate(model, opt, batch, n_steps, n_runs, seed=0, target=target,
                          record="log", n_records=60, progress=False)
           for name, opt in optimizers.items()}

fig, ax = plt.subplots(figsize=(6.4, 4.2))
for i, (name, r) in enumerate(results.items()):
    c = style.CYCLE[i]
    ax.fill_between(r.steps, r.mean - 1.96 * r.sem, r.mean + 1.96 * r.sem, color=c, alpha=0.25,
                    lw=0)
    ax.plot(r.steps, r.mean, color=c, lw=1.2, label=f"{name}: mean ± 1.96 s.e.")
    hs = r.hitting_summary()
    print(f"{name:24s} E[L(T)] = {r.mean[-1]:.4f} ± {r.sem[-1]:.4f}; steps to L < {target}: "
          f"mean {hs['mean']:.1f} ± {hs['sem']:.1f} "
          f"({100 * (1 - hs['fraction_never'] - hs['fraction_diverged']):.0f} % of runs hit)")
style.target_line(ax, target)
style.log_steps(ax, results["SGD"].steps)
style.log_y(ax, "loss L(t)")
style.title(ax, f"B = {batch}, {n_runs} runs each, cosine decay; {style.model_text(model)}")
style.legend(ax, loc="lower left")
plt.show()

# %%
# The rule's kernel is generated from its source, compiled once and cached on disk: a
# second run of this script loads it. The sign update takes equal steps in every direction,
# so it moves the flat, low-curvature directions much faster than SGD early on, but with a
# fixed step it would stall at a loss set by the step size; the cosine decay takes it down.
