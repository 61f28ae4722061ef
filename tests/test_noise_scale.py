"""The exact gradient noise scale: hand-computed values, Monte Carlo, critical batch size."""

import numpy as np
import pytest
from scipy import stats

from nqm_mc import NQM, SGD, HeavyBall, ParameterError, schedules, simulate
from nqm_mc.studies.noise_scale import (
    noise_scale,
    noise_scale_critical_batch,
    noise_scale_from_moments,
)

H = np.array([1.0, 0.1])
C = np.array([1.0, 0.1])
MODEL = NQM(H, C)  # theta(0) ~ N(0, I)


def _ratios(m2, h=H, c=C, p=0.0, n=(1.0, 1.0)):
    """B_simple and B_noise written out for two directions (preconditioned by h^-p)."""
    n = np.asarray(n, float)
    q = h ** -p
    b_simple = np.sum(n * c * q) / np.sum(n * h * h * q * m2)
    b_noise = np.sum(n * h * c * q * q) / np.sum(n * h ** 3 * q * q * m2)
    return b_simple, b_noise


def test_initial_state_by_hand():
    ns = noise_scale(MODEL, SGD(0.5), 4, [0])
    assert ns.b_simple[0] == pytest.approx(1.1 / 1.01, rel=1e-14)
    assert ns.b_noise[0] == pytest.approx(1.01 / 1.001, rel=1e-14)
    assert ns.loss[0] == pytest.approx(0.55, rel=1e-14)


def test_one_sgd_step_by_hand():
    # theta_1 = (1 - a h) theta_0 - a xi, xi ~ N(0, c / B)
    a, B = 0.5, 2
    m2 = (1 - a * H) ** 2 + a * a * C / B  # [0.375, 0.915]
    assert m2 == pytest.approx([0.375, 0.915])
    ns = noise_scale(MODEL, SGD(a), B, [1])
    bs, bn = _ratios(m2)
    assert ns.b_simple[0] == pytest.approx(bs, rel=1e-13)
    assert ns.b_noise[0] == pytest.approx(bn, rel=1e-13)
    assert bn == pytest.approx(1.01 / (0.375 + 0.001 * 0.915))


def test_two_heavy_ball_steps_by_hand():
    # theta_2 = [(1 - a h)^2 - a b h] theta_0 - [a (1 - a h) + a b] xi_0 - a xi_1
    a, b, B = 0.3, 0.8, 3
    k0 = (1 - a * H) ** 2 - a * b * H
    k1 = a * (1 - a * H) + a * b
    m2 = k0 ** 2 + (k1 ** 2 + a * a) * C / B
    ns = noise_scale(MODEL, HeavyBall(a, b), B, [2])
    bs, bn = _ratios(m2)
    assert ns.b_simple[0] == pytest.approx(bs, rel=1e-13)
    assert ns.b_noise[0] == pytest.approx(bn, rel=1e-13)


@pytest.mark.parametrize("basis", ["raw", "preconditioned"])
def test_preconditioned_step_by_hand(basis):
    # g~ = h^-p g: theta_1 = (1 - a h^(1-p)) theta_0 - a h^-p xi
    a, B, p = 0.4, 5, 0.5
    m2 = (1 - a * H ** (1 - p)) ** 2 + a * a * H ** (-2 * p) * C / B
    ns = noise_scale(MODEL, SGD(a, preconditioning=p), B, [1], basis=basis)
    bs, bn = _ratios(m2, p=p if basis == "preconditioned" else 0.0)
    assert ns.b_simple[0] == pytest.approx(bs, rel=1e-13)
    assert ns.b_noise[0] == pytest.approx(bn, rel=1e-13)
    assert ns.basis == basis and ns.preconditioning == p


def test_multiplicities_and_ema_ignored():
    model = NQM(H, C, multiplicities=[3, 5], initial_variance=[2.0, 0.5])
    ns = noise_scale(model, SGD(0.5, ema=0.9), 1, [0])
    bs, bn = _ratios(np.array([2.0, 0.5]), n=(3, 5))
    assert ns.b_simple[0] == pytest.approx(bs, rel=1e-14)
    assert ns.b_noise[0] == pytest.approx(bn, rel=1e-14)


def test_schedule_path_matches_constant_path():
    # a piecewise schedule with equal pieces runs the per-step recurrences: same values
    steps = [0, 3, 17, 40]
    const = noise_scale(MODEL, HeavyBall(0.2, 0.5), 8, steps)
    sched = noise_scale(MODEL, HeavyBall(schedules.PiecewiseConstant([10], [0.2, 0.2]), 0.5),
                        8, steps)
    np.testing.assert_allclose(sched.b_noise, const.b_noise, rtol=1e-12)
    np.testing.assert_allclose(sched.b_simple, const.b_simple, rtol=1e-12)


def test_steady_state_limit():
    # at the SGD steady state E theta^2 = a c / (B h (2 - a h))
    a, B = 0.5, 16
    ns = noise_scale(MODEL, SGD(a), B, [10 ** 6])
    m2 = a * C / (B * H * (2 - a * H))
    assert ns.b_noise[0] == pytest.approx(_ratios(m2)[1], rel=1e-10)


def test_from_moments_broadcasts():
    m2 = np.ones((4, 3, 2))
    bs, bn = noise_scale_from_moments(MODEL, m2)
    assert bs.shape == (4, 3) and np.allclose(bn, 1.01 / 1.001)
    bs0, bn0 = noise_scale_from_moments(MODEL, np.zeros(2))
    assert np.isinf(bs0) and np.isinf(bn0)


@pytest.mark.parametrize("call, match", [
    (lambda: noise_scale("m", SGD(0.1), 1, [0]), "'model'"),
    (lambda: noise_scale(MODEL, "sgd", 1, [0]), "'optimizer'"),
    (lambda: noise_scale(MODEL, SGD(0.1), 0, [0]), "'batch_size'"),
    (lambda: noise_scale(MODEL, SGD(0.1), 1, [-1]), "'steps'"),
    (lambda: noise_scale(MODEL, SGD(0.1), 1, []), "'steps'"),
    (lambda: noise_scale(MODEL, SGD(0.1), 1, [0], basis="x"), "'basis'"),
    (lambda: noise_scale_from_moments(MODEL, np.ones(3)), "'second_moments'"),
    (lambda: noise_scale_from_moments(MODEL, [-1.0, 1.0]), "'second_moments'"),
    (lambda: noise_scale_from_moments(MODEL, np.ones(2), preconditioning=2), "'precond"),
    (lambda: noise_scale_critical_batch(MODEL, -1.0), "'target'"),
    (lambda: noise_scale_critical_batch(MODEL, 0.1, family="adam"), "'family'"),
    (lambda: noise_scale_critical_batch(MODEL, 0.1, batch_sizes=[0]), "'batch_sizes'"),
])
def test_bad_input(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


# ---------------------------------------------------------------------------- Monte Carlo
MC_MODEL = NQM([1.0, 0.1, 0.01], [2.0, 0.3, 0.05], multiplicities=[1, 2, 3],
               initial_mean=[0.5, -1.0, 1.0], initial_variance=[1.0, 0.5, 2.0])
MC_STEPS = np.array([0, 1, 5, 30, 200])


def _mc_z(exact_optimizer, batch, n_runs=4000, seed=11):
    """z-scores of the Monte Carlo |G|^2 and G^T H G against the exact engine's, and B's."""
    from nqm_mc.studies.noise_scale import theta_second_moments

    res = simulate(MC_MODEL, HeavyBall(0.4, 0.6), 2, int(MC_STEPS[-1]), n_runs, seed=seed,
                   record=MC_STEPS, n_bands=3)
    assert np.array_equal(res.steps, MC_STEPS)
    est = res.band_mean_square  # (R, 3): one group per band
    # exact moments of the configuration being tested
    m2 = theta_second_moments(MC_MODEL, exact_optimizer, batch, MC_STEPS)
    # the true law (for the standard errors): mean and variance per group
    from nqm_mc import expected_loss

    true = expected_loss(MC_MODEL, HeavyBall(0.4, 0.6), 2, record=MC_STEPS, group_moments=True)
    m1, s2 = true.group_mean, true.group_second_moment
    var_sq = 2 * (s2 - m1 ** 2) ** 2 + 4 * m1 ** 2 * (s2 - m1 ** 2)  # Var(theta^2), Gaussian
    h, n = MC_MODEL.curvatures, MC_MODEL.multiplicities.astype(float)
    zs = []
    for w in (n * h * h, n * h ** 3):
        se = np.sqrt((w * w * var_sq / (n * n_runs)).sum(1))
        zs.append((est @ w - m2 @ w) / se)
    b_mc = noise_scale_from_moments(MC_MODEL, est)
    b_ex = noise_scale_from_moments(MC_MODEL, m2)
    return np.concatenate(zs), b_mc, b_ex


def test_monte_carlo_agrees():
    z, (bs_mc, bn_mc), (bs_ex, bn_ex) = _mc_z(HeavyBall(0.4, 0.6), 2)
    # two denominators at 5 steps (the one at step 0 has a standard error too: theta(0) random)
    thr = stats.norm.isf(1e-5 / (2 * z.size))
    assert np.all(np.abs(z) < thr), (z, thr)
    # and the noise scales themselves are close (a few standard errors of ~1-2 %)
    np.testing.assert_allclose(bn_mc, bn_ex, rtol=0.1)
    np.testing.assert_allclose(bs_mc, bs_ex, rtol=0.1)


def test_monte_carlo_power():
    # a deliberately wrong answer: the moments of a run at twice the batch size
    z, _, _ = _mc_z(HeavyBall(0.4, 0.6), 4)
    thr = stats.norm.isf(1e-5 / (2 * z.size))
    assert np.max(np.abs(z)) > thr


# ---------------------------------------------------------------------------- critical batch
def test_critical_batch_small_model():
    model = NQM.power_law(64, 1.0, 1.0)
    cmp = noise_scale_critical_batch(model, 0.05, batch_sizes=[1, 4, 16, 64, 256],
                                     grid_size=(40, 5))
    row = cmp.to_row()
    assert set(row) >= {"b_simple", "b_noise", "nqm_fit", "ratio"}
    assert cmp.predicted == cmp.b_noise_at_target[0]
    assert np.isfinite(cmp.predicted) and cmp.nqm_fit is not None
    assert cmp.ratio == pytest.approx(cmp.predicted / cmp.nqm_fit)
    # each entry is the noise scale of the tuned run at its crossing
    from nqm_mc.studies.scaling import optimizer_for

    i = 2
    ns = noise_scale(model, optimizer_for(cmp.scaling, i), 16, [int(cmp.steps[i])])
    assert cmp.b_noise_at_target[i] == ns.b_noise[0]


@pytest.mark.slow
def test_readme_noise_scale_example_runs_verbatim():
    import pathlib
    import re
    import subprocess
    import sys

    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    code = re.search(r"## The gradient noise scale as a baseline\s+```python\n(.*?)```", readme,
                     re.S).group(1)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
