r"""
A learning-rate schedule: warmup and cosine decay
=================================================

A schedule is any object of :mod:`nqm_mc.spec.schedules` (also importable as
``nqm_mc.schedules``) passed as the learning rate. Both engines accept it unchanged. Here
heavy-ball momentum with a linear warmup followed by a cosine decay is compared with the
constant learning rate it starts from, on the paper's model with :math:`d = 300` and a small
batch, where the gradient noise sets the loss floor.
"""

import matplotlib.pyplot as plt
import numpy as np

from nqm_mc import NQM, HeavyBall, expected_loss, simulate, steady_state, style
from nqm_mc.spec.schedules import CosineDecay, Warmup

style.use()

model = NQM.paper(300)
batch, n_steps, n_runs = 8, 3000, 128
schedule = Warmup(CosineDecay(initial=0.1, decay_steps=n_steps - 50, final=0.001),
                  warmup_steps=50)
runs = {"constant α = 0.1": HeavyBall(0.1, 0.9),
        "warmup 50 + cosine 0.1 → 0.001": HeavyBall(schedule, 0.9)}

fig, (ax_lr, ax) = plt.subplots(2, 1, sharex=True, figsize=(6, 5.4),
                                gridspec_kw={"height_ratios": [1, 3]})
t = np.arange(n_steps)
for i, (name, opt) in enumerate(runs.items()):
    kw = style.family_style("heavy_ball", index=i)
    lr = schedule.values(n_steps) if i else np.full(n_steps, 0.1)
    ax_lr.plot(t, lr, color=kw["color"], ls=kw["ls"])
    curve = expected_loss(model, opt, batch, n_steps)
    mc = simulate(model, opt, batch, n_steps, n_runs=n_runs, seed=2, n_records=40)
    ax.plot(curve.steps, curve.mean, color=kw["color"], ls=kw["ls"],
            label=f"{name}: E[L(T)] = {curve.mean[-1]:.4f}")
    ax.errorbar(mc.steps, mc.mean, yerr=1.96 * mc.sem, fmt=kw["marker"], color=kw["color"],
                mfc="white", ms=3, capsize=0)
    print(f"{name:32s} exact {curve.mean[-1]:.5f}, Monte Carlo {mc.mean[-1]:.5f} "
          f"± {mc.sem[-1]:.5f}")
ax.errorbar([], [], yerr=[], fmt="s", color="0.35", mfc="white", ms=3, capsize=0,
            label=f"Monte Carlo mean ± 1.96 s.e. (N = {n_runs})")
floor = steady_state(model, runs["constant α = 0.1"], batch).loss
style.steady_line(ax, floor, f"steady state of constant α = 0.1: {floor:.4f}")
style.log_y(ax_lr, "learning rate α_t")
style.title(ax_lr, f"heavy ball: β = 0.9, B = {batch}, {style.model_text(model)}\n"
            f"constant α = 0.1 against {style.schedule_text(schedule)}")
style.log_steps(ax, t)
style.log_y(ax, "loss L(t): lines exact, points Monte Carlo")
style.legend(ax, loc="lower left")
plt.show()

# %%
# During the warmup the scheduled run lags behind; afterwards both descend together until the
# constant run reaches its noise floor, the steady state of :math:`\alpha = 0.1`, and stays
# there. The decaying learning rate keeps lowering the floor as it goes, so the schedule ends
# more than ten times lower. The same schedule can be written in a TOML file
# (``examples/heavy_ball_cosine.toml``) and run with ``nqm-mc simulate -c``.
