"""Non-aligned models: the dense exact recurrence, the dense Monte Carlo and the reduction of
a commuting preconditioner to the aligned engine (only diag(U^T C U) matters)."""

import numba
import numpy as np
import pytest
from scipy import stats

from nqm_mc import NQM, SGD, HeavyBall, Nesterov, ParameterError, expected_loss, simulate
from nqm_mc.spec import schedules as S
from nqm_mc.spec.optimizers import Adam
from nqm_mc.spec.rotated import RotatedNQM, expected_loss_dense, random_rotation, simulate_dense

BASE = NQM(np.array([1.0, 0.4, 0.1, 0.03]), np.array([0.6, 0.5, 0.2, 0.05]),
           multiplicities=[1, 2, 3, 4], initial_mean=[0.5, 0.0, -1.0, 0.3],
           initial_variance=[1.0, 0.5, 0.2, 2.0])
OPTS = [SGD(0.5, preconditioning=0.5), HeavyBall(0.1, 0.9, ema=0.9), Nesterov(0.1, 0.8),
        SGD(S.StepDecay(0.8, 0.5, 20), ema=0.95)]


def test_random_rotation_is_orthogonal_and_seeded():
    q = random_rotation(7, 3)
    np.testing.assert_allclose(q.T @ q, np.eye(7), atol=1e-12)
    assert np.array_equal(q, random_rotation(7, 3)) and not np.allclose(q, random_rotation(7, 4))


@pytest.mark.parametrize("rotate", ["noise", "hessian", "both"])
@pytest.mark.parametrize("k", range(len(OPTS)))
def test_commuting_preconditioner_reduces_to_the_aligned_engine(rotate, k):
    """E[L] of the full recurrence equals the aligned engine's on diag(U^T C U)."""
    m = RotatedNQM.from_nqm(BASE, rotate, seed=5)
    opt = OPTS[k]
    _, mean, _ = expected_loss_dense(m, opt, 4, 60)
    eq = expected_loss(m.equivalent_nqm(), opt, 4, 60)
    np.testing.assert_allclose(mean, eq.mean, rtol=1e-11)


def test_dense_recurrence_on_an_aligned_model_is_the_aligned_engine():
    """Identity bases: mean and exact variance equal the aligned engine's (an independent
    check of the dense recurrence, including the variance formula)."""
    h, c, mu0, v0 = BASE.expand()
    m = RotatedNQM(h, c, initial_mean=mu0, initial_variance=v0)
    for opt in OPTS:
        _, mean, var = expected_loss_dense(m, opt, 8, 50)
        ref = expected_loss(BASE, opt, 8, 50)
        np.testing.assert_allclose(mean, ref.mean, rtol=1e-11)
        np.testing.assert_allclose(var, ref.variance, rtol=1e-9)


def test_rotation_changes_the_variance_of_the_loss_not_its_mean():
    """Correlated noise across H's directions moves Var[L] (the dense formula, confirmed by
    the sample variance) while E[L] stays the aligned one."""
    m = RotatedNQM.from_nqm(BASE, "noise", seed=1)
    opt = SGD(0.5)
    steps = np.arange(0, 41, 10)
    _, mean, var = expected_loss_dense(m, opt, 1, record=steps)
    eq = expected_loss(m.equivalent_nqm(), opt, 1, record=steps)
    assert np.max(np.abs(var[1:] / eq.variance[1:] - 1)) > 0.1
    r = simulate_dense(m, opt, 1, 40, 20000, seed=2, record=steps)
    # Var of the sample variance ~ (kurtosis - 1) var^2 / n; kurtosis of a Gaussian quadratic
    # form is below 15 for these few directions: a loose, conservative bound
    se = np.sqrt(14 * var[1:] ** 2 / 20000)
    assert np.all(np.abs(r.variance[1:] - var[1:]) < 5 * se)
    assert np.any(np.abs(r.variance[1:] - eq.variance[1:]) > 5 * se)  # the aligned one fails


def test_dense_monte_carlo_matches_the_aligned_kernel_on_an_aligned_model():
    """Identity bases: the same normals drive both engines, so the paths agree to rounding."""
    h, c, mu0, v0 = BASE.expand()
    m = RotatedNQM(h, c, initial_mean=mu0, initial_variance=v0)
    for opt in OPTS[:3]:
        a = simulate(BASE, opt, 4, 30, 4, seed=3, record="all", keep_paths=4, progress=False)
        b = simulate_dense(m, opt, 4, 30, 4, seed=3, record="all", keep_paths=4)
        np.testing.assert_allclose(b.paths, a.paths, rtol=1e-10)


def test_dense_monte_carlo_against_the_recurrence_with_power_check():
    """Non-commuting case (diagonal P, rotated H): MC means within the Bonferroni threshold of
    the full recurrence; the aligned engine's answer (which ignores the coupling) and a 5 %
    higher learning rate are both rejected."""
    m = RotatedNQM.from_nqm(BASE, "both", seed=7)
    pre = np.sqrt(np.diag(m.hessian()))
    opt = HeavyBall(0.1, 0.8)
    steps = np.arange(0, 61, 5)
    _, mean, var = expected_loss_dense(m, opt, 4, record=steps, preconditioner=pre)
    n = 20000
    r = simulate_dense(m, opt, 4, 60, n, seed=4, record=steps, preconditioner=pre)
    live = var > 0
    z = (r.mean - mean)[live] / np.sqrt(var[live] / n)
    thr = stats.norm.isf(1e-4 / 2 / live.sum())
    assert np.abs(z).max() < thr
    wrong_lr = expected_loss_dense(m, opt.with_(learning_rate=0.105), 4, record=steps,
                                   preconditioner=pre)[1]
    assert (np.abs((r.mean - wrong_lr)[live] / np.sqrt(var[live] / n))).max() > thr
    # a commuting proxy with the same diagonal as the preconditioner's mean is a different
    # model: P = H^0.5 instead of diag(H)^0.5
    other = expected_loss_dense(m, opt.with_(preconditioning=0.5), 4, record=steps)[1]
    assert (np.abs((r.mean - other)[live] / np.sqrt(var[live] / n))).max() > thr


def test_dense_monte_carlo_is_reproducible_across_threads():
    m = RotatedNQM.from_nqm(BASE, "both", seed=1)
    kw = dict(seed=9, record="all", keep_paths=5, target=0.5)
    a = simulate_dense(m, HeavyBall(0.1, 0.9, ema=0.9), 4, 40, 64, threads=1, **kw)
    b = simulate_dense(m, HeavyBall(0.1, 0.9, ema=0.9), 4, 40, 64,
                       threads=numba.config.NUMBA_NUM_THREADS, **kw)
    for f in ("mean", "variance", "quantiles", "paths", "hitting_times"):
        assert np.array_equal(getattr(a, f), getattr(b, f), equal_nan=True), f


def test_dense_divergence_is_reported():
    m = RotatedNQM.from_nqm(BASE, "both", seed=1)
    r = simulate_dense(m, SGD(3.0), 4, 800, 8, seed=1, target=1e-9)
    assert r.n_diverged[-1] == 8 and np.all(r.hitting_times == -2)
    assert np.all(np.isinf(expected_loss_dense(m, SGD(3.0), 4, 800)[1][-1:]))


@pytest.mark.parametrize("bad", [
    lambda: RotatedNQM([1.0, 0.5], [1.0, 1.0], hessian_basis=[[1, 1], [0, 1]]),
    lambda: RotatedNQM([1.0, -0.5], [1.0, 1.0]),
    lambda: RotatedNQM([1.0, 0.5], [1.0]),
    lambda: RotatedNQM.from_nqm(BASE, "sideways"),
    lambda: RotatedNQM.from_nqm("paper"),
    lambda: expected_loss_dense(RotatedNQM.from_nqm(BASE), Adam(0.1), 4, 5),
    lambda: expected_loss_dense(RotatedNQM.from_nqm(BASE), SGD(0.1, preconditioning=0.5), 4,
                                5, preconditioner=np.ones(10)),
    lambda: expected_loss_dense(RotatedNQM.from_nqm(BASE), SGD(0.1), 4, 5,
                                preconditioner=np.ones(3)),
    lambda: simulate_dense(RotatedNQM.from_nqm(BASE), SGD(0.1), 4, 5, 0),
    lambda: simulate_dense(BASE, SGD(0.1), 4, 5, 4),
])
def test_bad_input_is_a_parameter_error(bad):
    with pytest.raises(ParameterError):
        bad()


@pytest.mark.parametrize("opt", [Adam(0.05), SGD(0.5, clip_norm=0.5)])
def test_dense_adaptive_rules_match_a_numpy_stepper(opt):
    """Adam and clipping on a rotated model: same normals, the rule written in NumPy."""
    from nqm_mc.montecarlo import _rng
    from tests.reference import AdaptiveStepper
    m = RotatedNQM.from_nqm(BASE, "both", seed=2)
    H, L = m.hessian(), m.noise_factor()
    r = simulate_dense(m, opt, 4, 30, 3, seed=5, record="all", keep_paths=3)
    for k in range(3):
        th = m.initial_mean + np.sqrt(m.initial_variance) * _rng.normals(
            5, k, 0, m.dim, purpose=_rng.PURPOSE_INITIAL)
        st = AdaptiveStepper(opt, m.dim)
        ref = [0.5 * th @ H @ th]
        for t in range(30):
            g = H @ th + L @ _rng.normals(5, k, t, m.dim) / 2.0
            th = st.step(th, g, opt.base_learning_rate)
            ref.append(0.5 * th @ H @ th)
        np.testing.assert_allclose(r.paths[k], ref, rtol=1e-10)
