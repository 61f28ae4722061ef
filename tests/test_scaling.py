"""The paper's NQM predictions as quantitative checks on tuned studies (steps to target:
docs/theory.md, section 4)."""

import numpy as np
import pytest

from nqm_mc import NQM, ParameterError
from nqm_mc.studies.scaling import tune

MODEL = NQM.binned()
TARGET = 0.01


@pytest.fixture(scope="module")
def sgd_p0():
    return tune(MODEL, "sgd", [4, 8, 16, 2 ** 18], TARGET)


@pytest.fixture(scope="module")
def momentum_p0():
    return tune(MODEL, "heavy_ball", [4, 2 ** 18], TARGET)


def test_perfect_scaling_at_small_batch(sgd_p0):
    slope = np.polyfit(np.log(sgd_p0.batch_sizes[:3]), np.log(sgd_p0.steps[:3]), 1)[0]
    assert abs(slope + 1) < 0.05
    # the optimal learning rate grows in proportion to B there too
    lr_slope = np.polyfit(np.log(sgd_p0.batch_sizes[:3]), np.log(sgd_p0.learning_rate[:3]), 1)[0]
    assert abs(lr_slope - 1) < 0.1


def test_momentum_equals_sgd_at_small_batch_and_wins_at_large(sgd_p0, momentum_p0):
    s_small, s_large = sgd_p0.steps[0], sgd_p0.steps[-1]
    m_small, m_large = momentum_p0.steps
    assert abs(m_small / s_small - 1) < 0.15
    assert s_large / m_large >= 10
    # same effective learning rate at small B
    eff = momentum_p0.effective_learning_rate[0]
    assert abs(np.log(eff / sgd_p0.learning_rate[0])) < np.log(1.5)


def test_critical_batch_size_increases_with_preconditioning():
    bs = [2 ** k for k in range(2, 21, 2)]
    crit = [tune(MODEL, "sgd", bs, TARGET, preconditioning=p).critical_batch_size()["fit"]
            for p in (0.0, 0.25, 0.5, 0.75)]
    assert np.all(np.diff(crit) > 0), crit


def test_ema_helps_at_small_batch_and_is_redundant_at_large(sgd_p0):
    ema = tune(MODEL, "ema", [4, 2 ** 18], TARGET)
    assert ema.steps[0] < 0.9 * sgd_p0.steps[0]
    assert abs(ema.steps[1] / sgd_p0.steps[-1] - 1) < 0.02


def test_refined_search_never_needs_more_steps():
    bs = [4, 256, 2 ** 14]
    for fam in ("sgd", "heavy_ball"):
        g = tune(MODEL, fam, bs, TARGET, grid_size=(30, 8))
        r = tune(MODEL, fam, bs, TARGET, grid_size=(30, 8), search="refine")
        assert np.all(r.steps <= g.steps)
        assert np.any(r.steps < g.steps)


def test_critical_batch_size_definitions_on_a_synthetic_curve():
    from nqm_mc.studies.scaling import ScalingResult
    B = 2.0 ** np.arange(2, 21)
    S = 100.0 * (1 + 5000.0 / B)
    r = ScalingResult("sgd", 0.0, 0.01, "grid", B, S, B * 0, B * 0, B * 0)
    c = r.critical_batch_size()
    assert abs(c["fit"] / 5000 - 1) < 1e-6 and abs(c["fit_S_min"] / 100 - 1) < 1e-6
    # S > 2 S(4) 4 / B  <=>  1 + 5000 / B > 2 (1 + 5000 / 4) 4 / B  <=>  B > 5004
    assert c["doubling"] == 8192


@pytest.mark.parametrize("kw,name", [({"family": "adam"}, "family"),
                                     ({"batch_sizes": [0, 4]}, "batch_sizes"),
                                     ({"preconditioning": 1.5}, "preconditioning"),
                                     ({"target": -1.0}, "target")])
def test_bad_input(kw, name):
    args = {"model": MODEL, "family": "sgd", "batch_sizes": [4], "target": TARGET}
    args.update(kw)
    with pytest.raises(ParameterError, match=name):
        tune(**args)


def test_schedule_loss_and_gradient_match_the_exact_engine_and_finite_differences():
    from nqm_mc import SGD, expected_loss
    from nqm_mc.spec import schedules as S
    from nqm_mc.studies.schedule_opt import final_loss
    model = NQM.binned(dim=2000, n_bins=30).with_initial_state(0.3, 0.7)
    lr, ell, B, p = np.array([0.4, 0.05, 0.01, 0.002]), 300, 8, 0.5
    loss, grad = final_loss(model, B, lr, ell, preconditioning=p)
    sched = S.PiecewiseConstant([ell, 2 * ell, 3 * ell], lr.tolist())
    ex = expected_loss(model, SGD(sched, preconditioning=p), B, record=[4 * ell])
    assert abs(loss / ex.mean[-1] - 1) < 1e-12
    for k in range(lr.size):
        x = np.log(lr)
        x[k] += 1e-6
        up = final_loss(model, B, np.exp(x), ell, preconditioning=p)[0]
        x[k] -= 2e-6
        down = final_loss(model, B, np.exp(x), ell, preconditioning=p)[0]
        assert abs(grad[k] - (up - down) / 2e-6) < 1e-6 * (1 + abs(grad[k]))


def test_optimal_schedule_beats_constant_at_small_batch(sgd_p0):
    from nqm_mc.studies.schedule_opt import optimal_schedule
    o = optimal_schedule(MODEL, 4, TARGET, n_pieces=10)
    lb = MODEL.lower_bound_steps(TARGET, 4)
    const = sgd_p0.steps[0]
    assert lb <= o.steps < const and (o.steps - lb) < 0.25 * (const - lb)
    assert np.all(o.learning_rates <= o.cap * (1 + 1e-12))
    assert np.all(np.diff(o.learning_rates) <= 1e-12)  # a decaying schedule
    # the optimised schedule reaches the target at the length found
    from nqm_mc.studies.schedule_opt import final_loss
    assert final_loss(MODEL, 4, o.learning_rates, o.piece_length)[0] < TARGET


def test_monte_carlo_confirms_tuned_steps(momentum_p0):
    from nqm_mc.studies.scaling import monte_carlo_confirmation
    last = len(momentum_p0.batch_sizes) - 1
    rows = monte_carlo_confirmation(MODEL, momentum_p0, [0, last], n_runs=64, seed=5)
    assert rows[0]["method"] == "skip"  # the smallest batch: a long run, skipped exactly
    for row in rows:
        assert row["exact_in_interval"], row


@pytest.mark.parametrize("family,p,batch,hint", [("heavy_ball", 0.0, 4.0, None),
                                                ("heavy_ball", 0.5, 2.0 ** 14, 57),
                                                ("sgd", 0.25, 64.0, 3),
                                                ("ema", 0.0, 1024.0, None)])
def test_pruned_grid_minimum_is_the_full_grid_argmin(family, p, batch, hint):
    from nqm_mc.studies.scaling import _evaluate, grid_minimum, reference_grid
    alphas, seconds = reference_grid(family, (40, 10))
    full = _evaluate(MODEL, family, p, TARGET, batch, alphas, seconds, "exact")
    s, k, n_seed = grid_minimum(MODEL, family, p, TARGET, batch, alphas, seconds, hint=hint)
    assert k == int(np.argmin(full)) and s.flat[k] == full.min()
    assert np.array_equal(s[np.isfinite(s)], full[np.isfinite(s)])  # what it reports is exact
    assert n_seed < full.size / 4
