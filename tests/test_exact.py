"""Exact engine: closed forms, recurrences vs O(log t), schedules, steps to target."""

import numpy as np
import pytest

from nqm_mc import (
    NQM,
    SGD,
    HeavyBall,
    Nesterov,
    ParameterError,
    expected_loss,
    loss_at,
    steady_state,
    steps_to_target,
    steps_to_target_batch,
)
from nqm_mc.spec import schedules as S
from tests.reference import moments_reference, notebook_steps

RTOL = 1e-10


@pytest.fixture(scope="module")
def small():
    h = np.array([1.0, 0.3, 0.05, 0.002])
    return NQM(h, 0.7 * h, multiplicities=[1, 2, 3, 1], initial_mean=[0.5, 0, -1, 2],
               initial_variance=[1.0, 0.5, 0.0, 2.0])


def test_sgd_closed_form_transient(small):
    lr, B, T = 0.4, 8, 60
    h, c, n = small.curvatures, small.noise_variances, small.multiplicities
    r = 1 - lr * h
    l0 = 0.5 * h * (small.initial_mean ** 2 + small.initial_variance)
    ss = lr * c / (2 * B * (2 - lr * h))
    t = np.arange(T + 1)[:, None]
    closed = (n * (r ** (2 * t) * l0 + (1 - r ** (2 * t)) * ss)).sum(1)
    curve = expected_loss(small, SGD(lr), B, T)
    np.testing.assert_allclose(curve.mean, closed, rtol=RTOL)
    m, _, _ = loss_at(small, SGD(lr), B, np.arange(T + 1))
    np.testing.assert_allclose(m, closed, rtol=RTOL)


def test_sgd_closed_form_variance(small):
    lr, B, t = 0.3, 2, 17
    h, c, n = small.curvatures, small.noise_variances, small.multiplicities
    r = 1 - lr * h
    mean = r ** t * small.initial_mean
    noise = lr ** 2 * c / B * (1 - r ** (2 * t)) / (1 - r ** 2)
    var = r ** (2 * t) * small.initial_variance + noise
    exact_var = np.sum(n * h ** 2 * (var ** 2 / 2 + mean ** 2 * var))
    _, v, _ = loss_at(small, SGD(lr), B, t)
    assert v == pytest.approx(exact_var, rel=RTOL)
    assert expected_loss(small, SGD(lr), B, t).variance[-1] == pytest.approx(exact_var, rel=RTOL)


@pytest.mark.parametrize("p", [0.0, 0.25, 0.5, 1.0])
def test_preconditioned_sgd_steady_state(small, p):
    lr, B = 0.5, 16
    h, c, n = small.curvatures, small.noise_variances, small.multiplicities
    # per direction: E[l] = alpha c h^-p / (2B(2 - alpha h^(1-p))) ; sum with multiplicities
    closed = np.sum(n * lr * c * h ** (-p) / (2 * B * (2 - lr * h ** (1 - p))))
    ss = steady_state(small, SGD(lr, preconditioning=p), B)
    assert ss.stable and ss.loss == pytest.approx(closed, rel=1e-12)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 0.99])
def test_heavy_ball_theorem1(small, beta):
    lr, B = 0.3, 4
    h, c, n = small.curvatures, small.noise_variances, small.multiplicities
    closed = np.sum(n * (1 + beta) * lr * c / (2 * B * (2 * beta + 2 - lr * h) * (1 - beta)))
    ss = steady_state(small, HeavyBall(lr, beta), B)
    assert ss.loss == pytest.approx(closed, rel=1e-11)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 0.9, 0.999])
def test_ema_theorem2(small, gamma):
    lr, B = 0.7, 4
    h, c, n = small.curvatures, small.noise_variances, small.multiplicities
    r = 1 - lr * h
    sgd = lr * c / (2 * B * (2 - lr * h))
    closed = np.sum(n * sgd * (1 - gamma) * (1 + r * gamma) / ((1 + gamma) * (1 - r * gamma)))
    ss = steady_state(small, SGD(lr, ema=gamma), B)
    assert ss.loss == pytest.approx(closed, rel=1e-11)


def test_steady_state_at_critical_damping():
    # beta = (1 - sqrt(alpha h))^2: a defective map; the closed form still holds
    h = np.array([0.01])
    lr = 0.5
    beta = (1 - np.sqrt(lr * h[0])) ** 2
    m = NQM(h, h)
    closed = (1 + beta) * lr * h[0] / (2 * 1 * (2 * beta + 2 - lr * h[0]) * (1 - beta))
    assert steady_state(m, HeavyBall(lr, beta), 1).loss == pytest.approx(closed, rel=1e-11)
    # and the O(log t) evaluator agrees with the recurrence there
    c = expected_loss(m, HeavyBall(lr, beta), 1, 3000)
    np.testing.assert_allclose(loss_at(m, HeavyBall(lr, beta), 1, c.steps)[0], c.mean, rtol=1e-9)


OPTS = [SGD(0.3), SGD(0.2, preconditioning=0.5), SGD(0.3, ema=0.9), HeavyBall(0.1, 0.9),
        HeavyBall(0.05, 0.99, preconditioning=0.25, ema=0.95), Nesterov(0.1, 0.9),
        Nesterov(0.2, 0.5, ema=0.8)]


@pytest.mark.parametrize("opt", OPTS, ids=lambda o: f"{o.name}-p{o.preconditioning}-ema{o.ema}")
def test_recurrence_matches_log_time_evaluator(small, opt):
    T = 500
    curve = expected_loss(small, opt, 32, T)
    m, v, mth = loss_at(small, opt, 32, curve.steps)
    np.testing.assert_allclose(m, curve.mean, rtol=1e-9)
    np.testing.assert_allclose(v, curve.variance, rtol=1e-8)
    np.testing.assert_allclose(mth, curve.mean_theta, rtol=1e-9)
    # far future: O(log t) converges to the steady state
    assert loss_at(small, opt, 32, 2 ** 40)[0] == pytest.approx(
        steady_state(small, opt, 32).loss, rel=1e-9)


SCHEDULES = [S.Constant(0.3), S.PiecewiseConstant([10, 30], [0.5, 0.2, 0.05]),
             S.StepDecay(0.5, 0.5, 15), S.ExponentialDecay(0.5, 0.9, 5),
             S.LinearDecay(0.5, 0.01, 40), S.CosineDecay(0.5, 40, 0.01),
             S.Warmup(S.CosineDecay(0.5, 30), 10)]


@pytest.mark.parametrize("sched", SCHEDULES, ids=lambda s: s.kind)
@pytest.mark.parametrize("family", ["sgd", "heavy_ball", "nesterov", "sgd_ema"])
def test_schedules_against_numpy_reference(small, sched, family):
    T = 60
    batch = S.PiecewiseConstantBatch([20, 45], [4, 16, 64])
    gamma = 0.9 if family == "sgd_ema" else None
    name = "sgd" if family == "sgd_ema" else family
    cls = {"sgd": SGD, "heavy_ball": HeavyBall, "nesterov": Nesterov}[name]
    kw = {} if name == "sgd" else {"momentum": 0.8}
    opt = cls(sched, preconditioning=0.3, ema=gamma, **kw)
    curve = expected_loss(small, opt, batch, T)
    h, c, n = (np.repeat(a, small.multiplicities) for a in (small.curvatures,
                                                             small.noise_variances, [1] * 4))
    mu0 = np.repeat(small.initial_mean, small.multiplicities)
    v0 = np.repeat(small.initial_variance, small.multiplicities)
    ref, ref_th = moments_reference(h, c, mu0, v0, name, sched.values(T), batch.values(T),
                                    beta=kw.get("momentum", 0.0), gamma=gamma, p=0.3)
    np.testing.assert_allclose(curve.mean, ref, rtol=1e-11)
    np.testing.assert_allclose(curve.mean_theta, ref_th, rtol=1e-11)


SPARSE = [  # (optimizer, batch, the optimizer with its rate after step 2000 off by 1 %)
    (SGD(S.StepDecay(0.3, 0.5, 700), preconditioning=0.3), S.PiecewiseConstantBatch([900], [4, 32]),
     SGD(S.PiecewiseConstant([700, 1400, 2000, 2100], [0.3, 0.15, 0.075, 0.0375 * 1.01, 0.0375]),
         preconditioning=0.3)),
    (HeavyBall(S.PiecewiseConstant([130, 2000], [0.1, 0.05, 0.02]), 0.9, ema=0.95), 8,
     HeavyBall(S.PiecewiseConstant([130, 2000], [0.1, 0.05, 0.0202]), 0.9, ema=0.95)),
    (Nesterov(0.1, 0.8, ema=0.9), 16,
     Nesterov(S.PiecewiseConstant([2000], [0.1, 0.101]), 0.8, ema=0.9))]


@pytest.mark.parametrize("opt, batch, wrong", SPARSE,
                         ids=["sgd_step_batch", "hb_ema_pieces", "nesterov_ema"])
def test_sparse_records_jump_and_match_the_dense_curve(small, opt, batch, wrong):
    """Sparse records on piecewise-constant hyperparameters jump over the long gaps (doubling)
    and agree with the dense per-step curve at the same steps, around and across the changes of
    the schedules and at loss_at's values under constant ones; a rate changed by 1 % after step
    2000 is told apart."""
    T = 3000
    rec = np.unique(np.r_[0, 1, 63, 64, 65, 129, 130, 131, 700, 899, 900, 1400, 2000, 2999, T,
                          np.geomspace(1, T, 25).round().astype(np.int64)])
    sparse = expected_loss(small, opt, batch, record=rec)
    dense = expected_loss(small, opt, batch, T)
    np.testing.assert_allclose(sparse.mean, dense.mean[rec], rtol=1e-11)
    np.testing.assert_allclose(sparse.variance, dense.variance[rec], rtol=1e-10)
    np.testing.assert_allclose(sparse.mean_theta, dense.mean_theta[rec], rtol=1e-11)
    if opt.is_constant:
        m, v, mth = loss_at(small, opt, batch, rec)
        np.testing.assert_allclose(sparse.mean, m, rtol=1e-11)
        np.testing.assert_allclose(sparse.variance, v, rtol=1e-10)
    off = expected_loss(small, wrong, batch, record=rec).mean
    assert np.max(np.abs(off / sparse.mean - 1)[rec > 2000]) > 1e-4
    np.testing.assert_allclose(off[rec <= 2000], sparse.mean[rec <= 2000], rtol=1e-11)


def test_group_moments(small):
    c = expected_loss(small, HeavyBall(0.1, 0.9), 4, 50, group_moments=True)
    assert c.group_mean.shape == (51, 4)
    np.testing.assert_allclose(0.5 * (small.multiplicities * small.curvatures
                                      * c.group_second_moment).sum(1), c.mean, rtol=1e-12)
    np.testing.assert_allclose(c.group_mean[0], small.initial_mean)


# ----------------------------------------------------------------- steps to target
def test_calibration_point_reference_notebook():
    """SGD, p = 0, B = 4, target 0.01: the notebook reports 1,507,367 (its convention)."""
    m = NQM.binned()
    lrs = np.logspace(-5, 0.5, 100)
    s = steps_to_target_batch(m, SGD(0.1), 0.01, 4, lrs, method="reference")
    ok = s > 0
    i = np.argmin(np.where(ok, s, np.iinfo(np.int64).max))
    assert s[i] == 1_507_367
    assert lrs[i] == pytest.approx(0.01468, rel=1e-3)
    # the exact first crossing differs by the notebook's off-by-one and its 1e-8 term
    ex = steps_to_target(m, SGD(lrs[i]), 4, 0.01)
    assert 1_507_368 <= ex.steps <= 1_507_368 * 1.001


@pytest.mark.parametrize("kind,opt,B", [
    ("sgd", SGD(0.01468), 4), ("sgd", SGD(0.1, preconditioning=0.5), 1024),
    ("momentum", HeavyBall(0.005, 0.9), 64), ("momentum", HeavyBall(0.3, 0.5,
                                                                   preconditioning=0.25), 4096),
    ("ema", SGD(0.05, ema=0.99), 16), ("ema", SGD(0.05, preconditioning=0.5, ema=0.9), 1024),
])
def test_reference_method_matches_notebook_math(kind, opt, B):
    m = NQM.binned()
    expected = notebook_steps(m.curvatures, m.multiplicities, B, opt.base_learning_rate, 0.01,
                              kind, momentum=getattr(opt, "momentum", 0.0),
                              decay=opt.ema or 0.0, p=opt.preconditioning)
    got = steps_to_target(m, opt, B, 0.01, method="reference").steps
    assert got == expected
    # these curves are monotone: the exact first crossing equals plain bisection's ...
    exact = steps_to_target(m, opt, B, 0.01).steps
    assert exact == steps_to_target(m, opt, B, 0.01, method="bisect").steps
    if kind == "sgd":
        # ... and differs from the notebook's by its off-by-one and its 1e-8 term, which
        # lowers SGD's steady state of the flattest directions (1 - rho ~ 2 alpha h ~ 3e-6)
        assert 0 < exact - got <= 1e-3 * got
    else:
        assert exact == got + 1


def test_first_crossing_on_oscillating_curve():
    """An under-damped example (docs/theory.md, section 4): heavy ball, p = 0.25, B = 2^16,
    alpha = 2.85, beta = 0.911."""
    m = NQM.binned()
    opt = HeavyBall(2.85, 0.911, preconditioning=0.25)
    res = steps_to_target(m, opt, 2 ** 16, 0.01)
    curve = expected_loss(m, opt, 2 ** 16, 400)
    below = np.flatnonzero(curve.mean < 0.01)
    assert res.steps == below[0] == 68
    assert curve.mean[69] >= 0.01  # it rises above the target again: not monotone


def test_exact_beats_bisection_when_bisection_hits_a_later_crossing():
    # one fast under-damped direction dipping early, one slow direction keeping the loss up
    m = NQM([1.0, 1e-3], [0.0, 0.0], initial_variance=[1.0, 0.02])
    opt = HeavyBall(1.0, 0.81)
    target = 0.2
    curve = expected_loss(m, opt, 1, 5000)
    first = int(np.flatnonzero(curve.mean < target)[0])
    assert steps_to_target(m, opt, 1, target).steps == first
    bis = steps_to_target(m, opt, 1, target, method="bisect").steps
    assert curve.mean[bis] < target
    assert bis > first  # plain bisection lands on a later crossing


def test_target_a_billion_steps_away():
    m = NQM.binned()
    res = steps_to_target(m, SGD(1e-5), 4, 0.01)
    assert res.steps > 10 ** 9
    t = res.steps
    assert loss_at(m, SGD(1e-5), 4, t)[0] < 0.01 <= loss_at(m, SGD(1e-5), 4, t - 1)[0]
    assert res.evaluations < 100


def test_unreachable_and_divergent():
    m = NQM.binned()
    r = steps_to_target(m, SGD(0.5), 4, 0.01)
    assert r.status == "unreachable" and r.steps is None
    assert r.steady_state_loss == pytest.approx(steady_state(m, SGD(0.5), 4).loss)
    assert "steady-state loss" in r.reason
    d = steps_to_target(m, SGD(2.5), 4, 0.01)
    assert d.status == "diverges" and "spectral radius" in d.reason
    ss = steady_state(m, HeavyBall(3.9, 0.9), 4)
    assert not ss.stable and ss.loss == np.inf
    c = expected_loss(m, SGD(2.5), 4, 5000)
    assert c.diverged and "diverges" in c.reason
    assert np.all(np.isfinite(c.mean[:10])) and c.mean[-1] == np.inf


def test_batch_matches_single():
    m = NQM.binned()
    lrs = np.logspace(-3, 0.5, 7)
    betas = np.array([0.0, 0.5, 0.9, 0.99])
    grid = steps_to_target_batch(m, HeavyBall(0.1, 0.5), 0.01, 256, lrs[:, None],
                                 betas[None, :])
    for i, lr in enumerate(lrs):
        for j, b in enumerate(betas):
            r = steps_to_target(m, HeavyBall(lr, b), 256, 0.01)
            code = {"unreachable": -1, "diverges": -2}.get(r.status, r.steps)
            assert grid[i, j] == code


@pytest.mark.parametrize("opt", [SGD(1.5), HeavyBall(0.8, 0.7), Nesterov(0.8, 0.7),
                                 Nesterov(1.9, 0.3, preconditioning=0.5)],
                         ids=lambda o: o.name)
def test_stability_radius_matches_eigenvalues(opt):
    from nqm_mc import stability
    h = np.array([2.0, 1.0, 0.3, 0.01])
    m = NQM(h, h)
    hp = h ** (-opt.preconditioning)
    lr, beta = opt.base_learning_rate, getattr(opt, "momentum", 0.0)
    rho = []
    for hi, pi in zip(h, hp, strict=True):
        x = lr * hi * pi
        if opt.name == "sgd":
            A = np.array([[1 - x]])
        elif opt.name == "heavy_ball":
            A = np.array([[1 - x, -lr * beta], [hi * pi, beta]])
        else:
            A = np.array([[1 - (1 + beta) * x, -lr * beta ** 2], [hi * pi, beta]])
        rho.append(np.abs(np.linalg.eigvals(A)).max())
    st = stability(m, opt)
    assert st.spectral_radius == pytest.approx(max(rho), rel=1e-9)
    assert st.stable == (max(rho) < 1)


def test_caps_cut_the_search_without_changing_what_is_found():
    m = NQM.binned()
    lrs = np.logspace(-3, 0.5, 9)[:, None]
    betas = np.array([0.0, 0.5, 0.9, 0.99])[None, :]
    opt = HeavyBall(0.1, 0.5)
    full = steps_to_target_batch(m, opt, 0.01, 256, lrs, betas)
    reached = full[full >= 0]
    cap = int(np.median(reached))
    capped = steps_to_target_batch(m, opt, 0.01, 256, lrs, betas, caps=cap)
    below = (full >= 0) & (full < cap)
    assert np.array_equal(capped[below], full[below])
    assert np.all(capped[(full >= cap)] == -4)
    assert np.array_equal(capped[full < 0], full[full < 0])  # statuses are not caps' business
    caps = np.where(np.arange(4)[None, :] == 1, -1, 0)  # a negative cap skips
    part = steps_to_target_batch(m, opt, 0.01, 256, lrs, betas, caps=caps)
    assert np.all(part[:, 1] == -4) and np.array_equal(part[:, [0, 2, 3]], full[:, [0, 2, 3]])
    with pytest.raises(ParameterError, match="'caps'"):
        steps_to_target_batch(m, opt, 0.01, 256, lrs, betas, caps=2.5)
    with pytest.raises(ParameterError, match="'caps'.*exact"):
        steps_to_target_batch(m, opt, 0.01, 256, lrs, betas, caps=10, method="reference")


@pytest.mark.parametrize("A", [[[0.3, 0.9], [-0.2, 0.9]], [[0.99, 0.1], [0.0, 0.5]],
                               [[1e-9, -0.3], [0.7, 0.2]], [[0.0, 0.0], [0.4, 0.0]],
                               [[0.5, 0.0], [0.0, 0.5]], [[0.2]]])
def test_small_eigendecomposition_matches_lapack(A):
    from nqm_mc.exact._linalg import _eig2, _inv_small
    A = np.array(A, float)
    k = A.shape[0]
    lam, V = _eig2(k, A)
    assert np.allclose(np.sort_complex(lam), np.sort_complex(np.linalg.eigvals(A)), atol=1e-14)
    Vi = np.zeros((k, k), complex)
    if _inv_small(k, V, Vi):
        assert np.allclose(V @ np.diag(lam) @ Vi, A, atol=1e-12)
    else:  # only a defective matrix (one eigenvector for a repeated eigenvalue) has no inverse
        assert np.isclose(lam[0], lam[1])
        assert np.linalg.matrix_rank(A - lam[0].real * np.eye(k)) == 1
    M = np.random.default_rng(1).normal(size=(3, 3)) + 1j
    out = np.zeros((3, 3), complex)
    assert _inv_small(3, M, out) and np.allclose(out @ M, np.eye(3))


@pytest.mark.parametrize("B", [pytest.param(4, marks=pytest.mark.slow), 2 ** 16])
def test_reference_method_on_the_heavy_ball_grid_matches_notebook_math(B):
    """The grid-wide bisection (state kept at lo, powers per depth) gives the notebook's counts
    on random cells of its heavy-ball grid, including heavily under-damped ones. B = 4 (the
    notebook's step-by-step reference is long at a small batch: about 100 s measured on a
    loaded 2-core machine) runs with the slow tests; B = 2^16, the same code on the same
    cells, in the default run."""
    from nqm_mc.studies.scaling import reference_grid
    m = NQM.binned()
    alphas, betas = reference_grid("heavy_ball")
    rng = np.random.default_rng(5)
    ia = rng.integers(alphas.size, size=24)
    ib = np.concatenate([rng.integers(betas.size, size=20), [0, 1, 2, 3]])  # beta -> 1 too
    got = steps_to_target_batch(m, HeavyBall(0.1, 0.5, preconditioning=0.25), 0.01, B,
                                alphas[ia], betas[ib], method="reference")
    checked = 0
    for a, b, g in zip(alphas[ia], betas[ib], got, strict=True):
        if g <= 0:
            continue  # divergent or unreachable: the notebook's bisection has no answer
        with np.errstate(over="ignore", invalid="ignore"):
            ref = notebook_steps(m.curvatures, m.multiplicities, B, a, 0.01, "momentum",
                                 momentum=b, p=0.25)
        assert g == ref, (a, b)
        checked += 1
    assert checked >= 6
