"""The skip-ahead sampler: transitions against a brute-force product of the update rule, the
factorisation of singular covariances, the law at every recorded step against the exact
engine (with a power check), reproducibility and the method choice."""

import numpy as np
import pytest
from scipy import stats

from nqm_mc import NQM, SGD, HeavyBall, Nesterov, ParameterError, expected_loss, simulate
from nqm_mc.montecarlo import _rng
from nqm_mc.montecarlo._skip_kernels import factor_psd
from nqm_mc.montecarlo.skip import crossing_grid, transitions
from nqm_mc.spec import schedules as S
from nqm_mc.spec.noise import StudentT
from nqm_mc.spec.optimizers import Adam
from tests.reference import step_rule

FAMILY_WISE = 1e-5  # chance that a correct sampler fails a whole test


def _threshold(n_tests):
    return stats.norm.isf(FAMILY_WISE / (2 * n_tests))


def _brute(h, c, opt, lr_t, B_t, t0, t1):
    """Phi and Sigma of steps t0 .. t1 - 1 by applying the update rule (tests/reference.py) to
    the basis states and to unit noises, one step at a time (no shared code with the kernels)."""
    name = {0: "sgd", 1: "heavy_ball", 2: "nesterov"}[opt.kind_code]
    beta = getattr(opt, "momentum", 0.0)
    gamma = opt.ema
    a = h ** (1 - opt.preconditioning)
    b = h ** (-opt.preconditioning) * np.sqrt(c)
    idx = [0] + ([1] if name != "sgd" else []) + ([2] if gamma is not None else [])
    s = len(idx)
    Phi = np.eye(s)
    Sig = np.zeros((s, s))
    for t in range(t0, t1):
        def apply(x, z, t=t):
            full = np.zeros(3)
            full[idx] = x
            g = a * full[0] + b * z / np.sqrt(B_t[t])
            th, m, e = step_rule(name, full[0], full[1], full[2], g, lr_t[t], beta, gamma)
            return np.array([th, m, e])[idx]
        A = np.column_stack([apply(np.eye(s)[j], 0.0) for j in range(s)])
        bv = apply(np.zeros(s), 1.0)
        Phi = A @ Phi
        Sig = A @ Sig @ A.T + np.outer(bv, bv)
    return Phi, Sig


OPTIMIZERS = [SGD(0.3), SGD(0.2, ema=0.9, preconditioning=0.5), HeavyBall(0.05, 0.9),
              Nesterov(0.04, 0.8, ema=0.95), HeavyBall(0.02, 0.99, preconditioning=0.25,
                                                       ema=0.99)]


@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: repr(o)[:40])
def test_transitions_equal_the_product_of_update_rules(opt):
    model = NQM(np.array([1.0, 0.3, 0.01]), np.array([0.5, 1.0, 2.0]))
    opt = opt.with_(learning_rate=S.PiecewiseConstant(
        [7, 19], [opt.base_learning_rate, 0.5 * opt.base_learning_rate,
                  0.25 * opt.base_learning_rate]))
    batch = S.PiecewiseConstantBatch([11], [4, 16])
    steps = np.array([0, 1, 3, 10, 11, 30, 64])
    phi, fac = transitions(model, opt, batch, steps)
    lr_t = opt.learning_rate.values(64)
    B_t = batch.values(64)
    for k in range(steps.size - 1):
        for g in range(3):
            P, Sig = _brute(model.curvatures[g], model.noise_variances[g], opt, lr_t, B_t,
                            steps[k], steps[k + 1])
            F = fac[k, :, :, g]
            np.testing.assert_allclose(phi[k, :, :, g], P, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(F @ F.T, Sig, rtol=1e-10, atol=1e-14 * np.abs(Sig).max())


def _per_group_compositions(model, opt, batch, steps):
    """(Phi, F) by one composition per group and step (the kernels' one-step map, power and
    composition, applied group by group): the bits the chunked build must reproduce."""
    from nqm_mc.montecarlo import _skip_kernels as SK
    from nqm_mc.montecarlo.skip import state_size
    T = int(steps[-1])
    lr_t = opt.learning_rate.values(T)
    isb_t = 1.0 / np.sqrt(batch.values(T) if hasattr(batch, "values") else np.full(T, batch))
    p = opt.preconditioning
    a_g = model.curvatures ** (-p) * model.curvatures
    b_g = model.curvatures ** (-p) * np.sqrt(model.noise_variances)
    s = state_size(opt)
    beta = float(getattr(opt, "momentum", 0.0))
    gamma = float(opt.ema or 0.0)
    w = [np.empty((s, s)) for _ in range(10)]
    bv, done = np.empty(s), np.empty(s, np.bool_)
    phi = np.empty((steps.size - 1, s, s, model.n_groups))
    fac = np.empty_like(phi)
    for g in range(model.n_groups):
        for k in range(steps.size - 1):
            P, S_ = np.eye(s), np.zeros((s, s))
            for t in range(steps[k], steps[k + 1]):
                A = w[0]
                SK._one_step(opt.kind_code, opt.ema is not None, a_g[g], b_g[g], lr_t[t],
                             isb_t[t], beta, gamma, A, bv)
                SK._run_power(A, bv, 1, *w[1:9])
                SK._compose(w[1], w[2], P, S_, w[7], w[8])
            phi[k, :, :, g] = P
            SK.factor_psd(S_, fac[k, :, :, g], w[9], done)
    return phi, fac


@pytest.mark.parametrize("opt", [SGD(S.CosineDecay(0.5, 40, 0.01)),
                                 HeavyBall(S.Warmup(S.CosineDecay(0.05, 40), 9), 0.9, ema=0.9),
                                 Nesterov(S.LinearDecay(0.04, 0.004, 40), 0.8,
                                          preconditioning=0.5)],
                         ids=["sgd_cosine", "hb_ema_warmup", "nesterov_linear"])
def test_schedules_changing_every_step_chunked_build(opt):
    """Schedules that change every step are built as vectors over chunks of groups: the same
    bits as one composition per group and step, and the brute-force product of the update
    rule, over more groups than one chunk (70: a full chunk and a partial one)."""
    from nqm_mc.montecarlo._skip_kernels import GROUP_CHUNK
    G = GROUP_CHUNK + 6
    model = NQM(np.geomspace(1.0, 1e-3, G), np.geomspace(0.5, 2.0, G))
    steps = np.array([1, 2, 5, 17, 40])
    phi, fac = transitions(model, opt, 8, steps)
    ref_phi, ref_fac = _per_group_compositions(model, opt, 8, np.r_[0, steps])
    assert np.array_equal(phi, ref_phi) and np.array_equal(fac, ref_fac)
    lr_t = opt.learning_rate.values(40)
    B_t = np.full(40, 8)
    grid = np.r_[0, steps]
    for g in (0, GROUP_CHUNK - 1, GROUP_CHUNK, G - 1):
        for k in range(grid.size - 1):
            P, Sig = _brute(model.curvatures[g], model.noise_variances[g], opt, lr_t, B_t,
                            grid[k], grid[k + 1])
            F = fac[k, :, :, g]
            np.testing.assert_allclose(phi[k, :, :, g], P, rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(F @ F.T, Sig, rtol=1e-10, atol=1e-14 * np.abs(Sig).max())
    # power: a rate off by 1 % at one step is seen
    wrong = opt.with_(learning_rate=S.PiecewiseConstant(
        list(range(1, 40)), list(lr_t * np.where(np.arange(40) == 20, 1.01, 1.0))))
    assert not np.allclose(transitions(model, wrong, 8, steps)[0], phi, rtol=1e-9, atol=0)


def test_factor_of_singular_and_nearly_singular_covariances():
    rs = np.random.default_rng(0)
    W, done = np.empty((3, 3)), np.empty(3, np.bool_)
    cases = []
    v = rs.standard_normal(3)
    cases.append(np.outer(v, v))                        # rank 1 (one step)
    U = rs.standard_normal((3, 2))
    cases.append(U @ U.T)                               # rank 2
    x = np.array([1.0, 1.0 + 1e-9, 1.0 - 1e-9])
    cases.append(np.outer(x, x) + 1e-20 * np.eye(3))    # EMA following theta closely
    bad = np.outer(v, v)
    bad[2, 2] -= 1e-16 * bad[2, 2]                      # rounding made it slightly indefinite
    cases.append(bad)
    cases.append(np.zeros((3, 3)))
    for Sig in cases:
        F = np.empty((3, 3))
        factor_psd(Sig, F, W, done)
        assert np.all(np.isfinite(F))
        np.testing.assert_allclose(F @ F.T, Sig, atol=1e-12 * max(np.abs(Sig).max(), 1e-300))


def _cosine(lr0):
    return S.Warmup(S.CosineDecay(lr0, 3000, lr0 / 100), 100)


# (name, optimizer, the same with its learning rate 5 % high (the power check), batch, dtype)
CASES = [
    ("sgd", SGD(0.3), SGD(0.315), 8, "float64"),
    ("heavy_ball_p", HeavyBall(0.05, 0.9, preconditioning=0.5),
     HeavyBall(0.0525, 0.9, preconditioning=0.5), 16, "float64"),
    ("nesterov_ema", Nesterov(0.05, 0.9, ema=0.9), Nesterov(0.0525, 0.9, ema=0.9), 8,
     "float64"),
    ("near_critical", HeavyBall(0.002, 0.999), HeavyBall(0.0021, 0.999), 8, "float64"),
    ("cosine_warmup", SGD(_cosine(0.3)), SGD(_cosine(0.315)), 8, "float64"),
    ("batch_schedule", HeavyBall(0.05, 0.9, ema=0.99), HeavyBall(0.0525, 0.9, ema=0.99),
     S.PiecewiseConstantBatch([300, 1500], [4, 16, 64]), "float64"),
    ("float32", HeavyBall(0.05, 0.9, preconditioning=0.25, ema=0.95),
     HeavyBall(0.0525, 0.9, preconditioning=0.25, ema=0.95), 16, "float32"),
]


@pytest.mark.parametrize("name,opt,wrong_opt,batch,dtype", CASES, ids=[c[0] for c in CASES])
def test_law_at_every_record_matches_the_exact_engine(name, opt, wrong_opt, batch, dtype):
    model = NQM.paper(100)
    n_runs, T = 1600, 3000
    res = simulate(model, opt, batch, T, n_runs, seed=7, method="skip", dtype=dtype,
                   record="log", n_records=40, progress=False)
    assert res.meta["method"] == "skip"
    ex = expected_loss(model, opt, batch, record=res.steps)
    se = ex.std / np.sqrt(res.n_finite)
    z = (res.mean - ex.mean)[1:] / se[1:]
    thr = _threshold(2 * z.size)  # this test and its power check, every record
    assert np.abs(z).max() < thr, (name, np.abs(z).max(), thr)
    # power: a learning rate 5 % high is rejected at the same threshold
    wrong = expected_loss(model, wrong_opt, batch, record=res.steps)
    zw = (res.mean - wrong.mean)[1:] / se[1:]
    assert np.abs(zw).max() > thr, (name, np.abs(zw).max(), thr)


def test_skip_and_step_agree_in_distribution():
    """Two-sample check on one configuration: the final loss of skip and step runs (KS)."""
    model, opt = NQM.paper(50), HeavyBall(0.05, 0.9, ema=0.9)
    kw = dict(n_steps=400, n_runs=800, record="log", n_records=20, keep_paths=800,
              progress=False)
    a = simulate(model, opt, 8, seed=1, method="skip", **kw)
    b = simulate(model, opt, 8, seed=2, method="step", **kw)
    assert a.meta["method"] == "skip" and b.meta["method"] == "step"
    np.testing.assert_array_equal(a.steps, b.steps)
    p = min(stats.ks_2samp(a.paths[:, r], b.paths[:, r]).pvalue for r in (5, 12, 19))
    assert p > FAMILY_WISE / 3


def test_bitwise_reproducible_and_replayable():
    model, opt = NQM.paper(300), Nesterov(0.05, 0.9, ema=0.9)
    kw = dict(n_steps=2000, n_runs=40, seed=11, record="log", n_records=30, keep_paths=40,
              method="skip", progress=False)
    a = simulate(model, opt, 8, threads=1, **kw)
    b = simulate(model, opt, 8, threads=2, block_size=48, **kw)
    assert a.equals(b)
    # replay trajectory 21 alone from the transitions and its own normals
    phi, fac = transitions(model, opt, 8, a.steps)
    k = 21
    z0 = _rng.normals(11, k, 0, 300, purpose=_rng.PURPOSE_INITIAL)
    x = np.zeros((3, 300))
    x[0] = model.initial_mean + np.sqrt(model.initial_variance) * z0
    x[2] = x[0]
    h = model.curvatures
    for i in range(1, a.steps.size):
        w = _rng.normals(11, k, i - 1, 3 * 300, purpose=_rng.PURPOSE_SKIP).reshape(3, 300)
        x = np.einsum("abg,bg->ag", phi[i - 1], x) + np.einsum("abg,bg->ag", fac[i - 1], w)
        assert a.paths[k, i] == pytest.approx(0.5 * np.sum(h * x[2] ** 2), rel=1e-9)


def test_method_choice_and_refusals():
    model = NQM.paper(20)
    r = simulate(model, SGD(0.1), 8, 2000, 16, progress=False)
    assert r.meta["method"] == "skip" and r.meta["hitting_resolution"] == "recorded steps"
    r = simulate(model, SGD(0.1), 8, 2000, 16, target=0.5, progress=False)
    assert r.meta["method"] == "step" and r.meta["hitting_resolution"] == "every step"
    r = simulate(model, Adam(0.01), 8, 200, 16, progress=False)
    assert r.meta["method"] == "step"
    r = simulate(model, SGD(0.1), 8, 20, 16, record="all", progress=False)
    assert r.meta["method"] == "step"  # every step recorded: nothing to skip
    with pytest.raises(ParameterError, match="linear"):
        simulate(model, Adam(0.01), 8, 200, 16, method="skip")
    with pytest.raises(ParameterError, match="Gaussian"):
        simulate(model, SGD(0.1), 8, 200, 16, method="skip", noise=StudentT(5))
    with pytest.raises(ParameterError, match="method"):
        simulate(model, SGD(0.1), 8, 200, 16, method="fast")


def test_hitting_times_at_recorded_steps_and_crossing_grid():
    model, opt = NQM.paper(100), SGD(0.3)
    grid = crossing_grid(model, opt, 8, 0.05, 5000, n_records=30, n_dense=40)
    r = simulate(model, opt, 8, 5000, 64, record=grid, target=0.05, method="skip",
                 progress=False)
    hits = r.hitting_times[r.hitting_times >= 0]
    assert hits.size > 0 and np.isin(hits, r.steps).all()
    assert r.meta["hitting_resolution"] == "recorded steps"


def test_overflowing_transitions_report_divergence_and_auto_takes_the_step_kernel():
    """A state that starts exactly at the optimum of a diverging configuration: the noise
    covariance overflows between two records. Skip must report the divergence (not a loss of
    0), and "auto" runs the step kernel."""
    model = NQM([1.0], [1.0], initial_mean=[0.0], initial_variance=[0.0])
    kw = dict(n_steps=1000, n_runs=16, record=[0, 1000], progress=False)
    skip = simulate(model, SGD(2.5), 1, method="skip", **kw)
    step = simulate(model, SGD(2.5), 1, method="step", **kw)
    assert skip.n_diverged[-1] == 16 == step.n_diverged[-1]
    auto = simulate(model, SGD(2.5), 1, **kw)
    assert auto.meta["method"] == "step" and auto.equals(step)


def test_auto_takes_the_step_kernel_when_transitions_would_be_large(monkeypatch):
    from nqm_mc.montecarlo import driver
    monkeypatch.setattr(driver, "AUTO_SKIP_BYTES", 1.0)
    r = simulate(NQM.paper(20), SGD(0.1), 8, 2000, 16, progress=False)
    assert r.meta["method"] == "step"


def test_hitting_summary_leaves_out_interrupted_runs():
    r = simulate(NQM.paper(20), SGD(0.1), 8, 50, 16, target=0.5, method="step", progress=False)
    r.hitting_times[:4] = -3
    r.hitting_times[4:8] = -1
    h = r.hitting_summary()
    assert h["n_interrupted"] == 4 and h["n_runs"] == 12
    assert h["fraction_never"] == pytest.approx(4 / 12)


def test_record_steps_of_zero_steps():
    from nqm_mc.montecarlo.lowering import record_steps
    assert record_steps(0, "log").tolist() == [0]
    assert record_steps(0, "all").tolist() == [0]
