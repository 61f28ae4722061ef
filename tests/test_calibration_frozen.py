"""Calibration predictions with frozen tail directions (alpha h^(1-p) below float64 epsilon).

A fit with dim = 1e8 and a = 3.3 has h_d ~ 1e-26 h1: the exact engine counts such a direction
as marginal (1 - alpha h rounds to 1) and reports divergence, while its loss stays constant
over any practical horizon. The calibration splits these groups off
(:func:`nqm_mc.calibration.predict.split_frozen`).
"""

from __future__ import annotations

import numpy as np
import pytest

import nqm_mc as nm
from nqm_mc.calibration import predict as P
from nqm_mc.calibration.family import Family
from nqm_mc.calibration.fit import Calibration
from nqm_mc.exact import loss_at, steps_to_target_batch

PARAMS = {"h1": 1.0, "a": 3.3, "s": 0.5, "b": 1.0, "v0": 1.0, "dim": 1e8, "floor": 0.01}


def _cal(**kw):
    fam = Family()
    return Calibration([], fam, fam.to_coords(dict(PARAMS, **kw)), np.empty((0, 7)), {},
                       {"rms": 0.0}, [], (np.zeros(7), np.zeros(7)))


@pytest.fixture(scope="module")
def cal():
    return _cal()


def test_the_tail_is_below_epsilon_and_the_engine_alone_diverges(cal):
    m = cal.model
    assert 0.5 * m.curvatures.min() < 1e-17
    assert steps_to_target_batch(m, nm.SGD(0.05), 0.005, 64, 0.05) == -2


@pytest.mark.parametrize("opt, target, batches", [
    (nm.SGD(0.05), 0.015, [64, 1024]),
    (nm.SGD(0.5), 0.012, [1024]),
    (nm.HeavyBall(0.05, 0.9), 0.02, [64, 1024]),
])
def test_steps_to_target_is_the_first_crossing_of_predict_loss(cal, opt, target, batches):
    steps = cal.steps_to_target(target, opt, batches).value
    assert np.all(np.isfinite(steps)) and np.all(steps > 10)
    for s, b in zip(steps.astype(int), batches, strict=True):
        curve = cal.predict_loss(opt, b, np.arange(s + 1)).value
        assert curve[s] < target and np.all(curve[:s] >= target)


def test_the_split_keeps_the_loss_and_predict_loss_needs_none(cal):
    opt, t = nm.SGD(0.5), np.array([0, 10, 1000, 10 ** 5])
    mask = 0.5 * cal.model.curvatures < P.FROZEN_X
    fz = P.split_frozen(cal.model, mask, 0.0)
    assert 0 < mask.sum() < mask.size and fz.model is not None and fz.loss > 0
    full = cal.predict_loss(opt, 64, t).value
    split = loss_at(fz.model, opt, 64, t)[0] + fz.loss + cal.floor
    drift = 0.5 * fz.decay + 0.5 ** 2 * fz.noise / 64  # the bound on the change per step
    assert np.all(np.abs(full - split) <= drift * t + 1e-15)
    assert drift * 1e5 < 1e-6 * full[-1]


def test_tuned_and_critical_batch_size_are_finite(cal):
    t = cal.tuned(0.015, [4, 64, 1024], max_samples=0, grid_size=(20, 5))
    steps, lrs = t["steps"].value, t["learning_rate"].value
    assert np.all(np.isfinite(steps)) and np.all(np.diff(steps) <= 0)
    for s, lr, b in zip(steps, lrs, [4, 64, 1024], strict=True):
        assert cal.steps_to_target(0.015, nm.SGD(lr), [b]).value[0] == s
    hb = cal.tuned(0.015, [4, 1024], family="heavy_ball", max_samples=0, grid_size=(20, 5))
    assert np.all(np.isfinite(hb["steps"].value))
    ema = cal.tuned(0.015, [64], ema=True, max_samples=0, grid_size=(20, 5))
    assert np.isfinite(ema["steps"].value[0])
    c = cal.critical_batch_size(0.015, batch_sizes=[1, 16, 256, 4096], max_samples=0,
                                grid_size=(20, 5))
    assert 1 < c.value < 4096


def test_every_group_frozen_is_reached_at_step_0_or_never():
    m = nm.NQM([1e-20, 1e-22], [1.0, 1.0], initial_variance=[1e19, 1e21])  # loss 0.1
    bs = np.array([1, 8])
    assert np.all(P._steps_member(m, 0.0, 0.11, nm.SGD(0.5), bs) == 0)
    assert np.all(np.isinf(P._steps_member(m, 0.0, 0.1, nm.SGD(0.5), bs)))
    r = P._tune_member(m, 0.0, 0.11, "sgd", bs, 0.0, None, (10, 3))
    assert np.all(r.steps == 0)


def test_a_frozen_group_with_growing_noise_is_not_trusted():
    """Power check: a frozen group whose noise grows its loss fast is caught by the horizon."""
    m = nm.NQM([1.0, 1e-20], [0.01, 1e26], initial_variance=[1.0, 1.0])
    opt, b = nm.SGD(0.5), np.array([1])
    assert np.isinf(P._steps_member(m, 0.0, 0.1, opt, b)[0])
    assert loss_at(m, opt, 1, 100)[0] > 0.1  # the noise: 0.5 h alpha^2 c t / B = 1.25e5
    quiet = nm.NQM([1.0, 1e-20], [0.01, 1.0], initial_variance=[1.0, 1.0])
    s = P._steps_member(quiet, 0.0, 0.1, opt, b)[0]
    assert np.isfinite(s) and loss_at(quiet, opt, 1, int(s))[0] < 0.1


def test_models_without_frozen_groups_are_unchanged():
    """Bit-identical to the unreduced calls (what the code did before the split)."""
    m = _cal(dim=1e4, a=1.2).model
    assert not np.any(1e-5 * m.curvatures < P.FROZEN_X)
    bs = np.array([4, 64, 1024])
    for opt in (nm.SGD(0.5), nm.HeavyBall(0.05, 0.9)):
        kw = {"momenta": 0.9} if opt.has_momentum else {}
        ref = steps_to_target_batch(m, opt, 0.05, bs, opt.base_learning_rate, **kw)
        ref = np.where(ref >= 0, ref.astype(float), np.inf)
        assert np.array_equal(P._steps_member(m, 0.0, 0.05, opt, bs), ref)
    # tuning: the grid of the stability limit, brute force over it (no extension needed here)
    alphas, _ = P.stability_grid(m, "sgd", (20, 5), 0.0)
    for ema in (None, 0.9):
        got = P._tune_member(m, 0.0, 0.05, "sgd", bs, 0.0, ema, (20, 5))
        assert got.meta["alpha_range"] == [alphas[0], alphas[-1]]
        for k, b in enumerate(bs):
            s = steps_to_target_batch(m, nm.SGD(0.1, ema=ema), 0.05, int(b),
                                      alphas).astype(float)
            s[s < 0] = np.inf
            j = int(np.argmin(s))
            assert got.steps[k] == s[j] and got.learning_rate[k] == alphas[j]
