"""The joint law of the loss at two steps: exact two-time covariances against a direct
computation and a brute-force Monte Carlo, and the lag statistics of kept paths (estimates,
influence-function standard errors calibrated over seeds, power)."""

import numpy as np
import pytest
from scipy import stats

from nqm_mc import NQM, SGD, HeavyBall, Nesterov, ParameterError, expected_loss, loss_covariance
from nqm_mc.joint_stats import (
    lag_correlation,
    lag_covariance,
    lag_covariance_difference,
    pair_columns,
)
from nqm_mc.spec import schedules as S

MODEL = NQM(np.array([1.0, 0.3, 0.05]), np.array([0.5, 0.4, 0.1]), multiplicities=[1, 2, 3],
            initial_mean=[0.5, -1.0, 1.5], initial_variance=[0.3, 1.0, 0.5])


# ------------------------------------------------------------------ a direct reference
def _rule(kind, lr, beta, gamma, p, h, state, xi):
    """One update as written in the model's definition (not as matrices)."""
    theta, m, e = state
    g = h ** (-p) * (h * theta + xi)
    if kind == "sgd":
        theta = theta - lr * g
    elif kind == "heavy_ball":
        m = beta * m + g
        theta = theta - lr * m
    else:
        m = beta * m + g
        theta = theta - lr * (g + beta * m)
    if gamma is not None:
        e = gamma * e + (1 - gamma) * theta
    return np.array([theta, m, e])


def _direct_readout(kind, lrs, batches, beta, gamma, p, h, c, mu0, v0, T):
    """Readout at steps 0..T of one direction as an explicit linear function of the
    independent Gaussians (theta(0), xi_0, ..., xi_{T-1}): rows of coefficients, a constant
    and the Gaussians' variances."""
    n_g = 1 + T
    coef = np.zeros((3, n_g))
    const = np.array([mu0, 0.0, mu0])
    coef[0, 0] = 1.0
    coef[2, 0] = 1.0
    var = np.concatenate([[v0], c / np.asarray(batches[:T], float)])
    rows, consts = [], []
    ro = 2 if gamma is not None else 0
    for t in range(T + 1):
        rows.append(coef[ro].copy())
        consts.append(const[ro])
        if t == T:
            break
        # the rule is affine in (state, xi): apply it to the constant and to each coefficient
        new_const = _rule(kind, lrs[t], beta, gamma, p, h, const, 0.0)
        zero = _rule(kind, lrs[t], beta, gamma, p, h, np.zeros(3), 0.0)
        new = np.zeros_like(coef)
        for j in range(n_g):
            new[:, j] = _rule(kind, lrs[t], beta, gamma, p, h, coef[:, j], 0.0) - zero
        new[:, 1 + t] += _rule(kind, lrs[t], beta, gamma, p, h, np.zeros(3), 1.0) - zero
        coef, const = new, new_const
    return np.array(rows), np.array(consts), var


def _direct_cov(model, kind, lrs, batches, beta, gamma, p, pairs):
    T = int(np.max(pairs))
    out = np.zeros(len(pairs))
    for g in range(model.n_groups):
        rows, consts, var = _direct_readout(
            kind, lrs, batches, beta, gamma, p, model.curvatures[g], model.noise_variances[g],
            model.initial_mean[g], model.initial_variance[g], T)
        h, n = model.curvatures[g], model.multiplicities[g]
        for i, (s, t) in enumerate(pairs):
            cst = np.sum(rows[s] * rows[t] * var)
            out[i] += n * h * h / 4 * (2 * cst ** 2 + 4 * consts[s] * consts[t] * cst)
    return out


PAIRS = [(0, 0), (0, 7), (3, 3), (3, 20), (20, 3), (7, 40), (20, 40), (40, 40)]
CONFIGS = [
    ("sgd", SGD(0.7), 4, dict(beta=0.0, gamma=None, p=0.0)),
    ("sgd", SGD(S.PiecewiseConstant([10, 25], [0.9, 0.3, 0.1]), preconditioning=0.5),
     S.PiecewiseConstantBatch([15], [2, 16]), dict(beta=0.0, gamma=None, p=0.5)),
    ("heavy_ball", HeavyBall(S.Warmup(S.CosineDecay(0.2, 40), 5), 0.8, ema=0.9), 4,
     dict(beta=0.8, gamma=0.9, p=0.0)),
    ("nesterov", Nesterov(0.1, 0.85, preconditioning=0.25, ema=0.7),
     S.PiecewiseConstantBatch([5, 30], [1, 3, 9]), dict(beta=0.85, gamma=0.7, p=0.25)),
    ("sgd", SGD(S.ExponentialDecay(0.9, 0.95), ema=0.95), 2, dict(beta=0.0, gamma=0.95, p=0.0)),
]


@pytest.mark.parametrize("kind, opt, batch, kw", CONFIGS)
def test_covariance_matches_a_direct_computation(kind, opt, batch, kw):
    T = 40
    lrs = opt.learning_rate.values(T)
    batches = S.as_batch_schedule(batch).values(T)
    ref = _direct_cov(MODEL, kind, lrs, batches, kw["beta"], kw["gamma"], kw["p"], PAIRS)
    got = loss_covariance(MODEL, opt, batch, PAIRS)
    np.testing.assert_allclose(got.covariance, ref, rtol=1e-10, atol=1e-14)
    # the diagonal is the engine's variance; the marginals are the engine's
    ex = expected_loss(MODEL, opt, batch, record=[0, 3, 7, 20, 40])
    var = dict(zip(ex.steps.tolist(), ex.variance, strict=True))
    mean = dict(zip(ex.steps.tolist(), ex.mean, strict=True))
    for (s, t), v, m in zip(PAIRS, got.variance, got.mean, strict=True):
        np.testing.assert_allclose(v, [var[s], var[t]], rtol=1e-10)
        np.testing.assert_allclose(m, [mean[s], mean[t]], rtol=1e-10)
    assert got.covariance[3] == got.covariance[4]  # symmetric
    np.testing.assert_allclose(got.correlation[[2, 7]], 1.0)
    assert np.all(np.abs(got.correlation) <= 1.0)


def test_deterministic_start_gives_zero_covariance_and_undefined_correlation_at_step_0():
    model = NQM(MODEL.curvatures, MODEL.noise_variances, MODEL.multiplicities,
                initial_mean=1.0, initial_variance=0.0)
    got = loss_covariance(model, SGD(0.5), 4, [(0, 10), (5, 10)])
    assert got.covariance[0] == 0.0 and np.isnan(got.correlation[0])
    assert got.covariance[1] > 0 and 0 < got.correlation[1] < 1


@pytest.mark.parametrize("opt", [SGD(3.0), SGD(S.PiecewiseConstant([10], [0.5, 3.0]))])
def test_divergence_is_reported_not_nan(opt):
    got = loss_covariance(MODEL, opt, 4, [(0, 5), (100, 4000)])
    assert got.diverged and "overflow" in got.reason
    assert np.isfinite(got.covariance[0]) and got.covariance[1] == np.inf
    assert not np.isnan(got.covariance).any()
    # an unstable constant configuration is called divergent before it overflows
    early = loss_covariance(MODEL, SGD(3.0), 4, [(0, 5)])
    assert early.diverged and "spectral radius" in early.reason
    assert np.isfinite(early.covariance).all()


@pytest.mark.parametrize("bad, match", [
    ([(0, -1)], "int steps in"), ([(0.5, 2)], "int steps in"), ([(True, 2)], "int steps in"),
    ([1, 2, 3], "pairs of int steps"), ("12", "pairs of int steps"), ([], "pairs of int steps"),
    ([(1, 2 ** 63)], "int steps in"),
])
def test_bad_pairs_are_refused_by_name(bad, match):
    with pytest.raises(ParameterError, match="'pairs' parameter of loss_covariance") as e:
        loss_covariance(MODEL, SGD(0.5), 4, bad)
    assert match in str(e.value)


def test_bad_model_and_nonlinear_optimizer_are_refused():
    from nqm_mc.spec.optimizers import Adam
    with pytest.raises(ParameterError, match="'model' parameter of loss_covariance"):
        loss_covariance("model", SGD(0.5), 4, [(0, 1)])
    with pytest.raises(ParameterError, match="'optimizer' parameter of loss_covariance"):
        loss_covariance(MODEL, Adam(0.1), 4, [(0, 1)])
    with pytest.raises(ParameterError, match="batch_size"):
        loss_covariance(MODEL, SGD(0.5), 0, [(0, 1)])


# ------------------------------------------------------------------ brute-force Monte Carlo
def _numpy_paths(model, opt_kind, lr, beta, gamma, batch, steps, n, seed):
    """Brute-force NumPy stepper (every direction, every step) -> losses at ``steps``."""
    rng = np.random.default_rng(seed)
    h = np.repeat(model.curvatures, model.multiplicities)
    c = np.repeat(model.noise_variances, model.multiplicities)
    theta = (np.repeat(model.initial_mean, model.multiplicities)
             + np.sqrt(np.repeat(model.initial_variance, model.multiplicities))
             * rng.standard_normal((n, h.size)))
    m = np.zeros_like(theta)
    e = theta.copy()
    out = np.empty((n, len(steps)))
    col = {s: i for i, s in enumerate(steps)}
    for t in range(max(steps) + 1):
        if t in col:
            x = e if gamma is not None else theta
            out[:, col[t]] = 0.5 * (h * x * x).sum(1)
        g = h * theta + np.sqrt(c / batch) * rng.standard_normal(theta.shape)
        if opt_kind == "heavy_ball":
            m = beta * m + g
            theta = theta - lr * m
        else:
            theta = theta - lr * g
        if gamma is not None:
            e = gamma * e + (1 - gamma) * theta
    return out


def test_covariance_matches_a_brute_force_monte_carlo_and_catches_a_wrong_one():
    """z-tests of the sample covariance and correlation of a NumPy stepper's losses (fixed
    seed; Bonferroni over 2 x 6 comparisons at 1e-5), and the power check: a covariance 20 %
    low and a correlation 0.05 low are rejected."""
    steps = [0, 2, 10, 11, 30, 60]
    pairs_steps = [(0, 10), (2, 11), (10, 11), (10, 30), (30, 60), (2, 60)]
    opt = HeavyBall(0.15, 0.7, ema=0.8)
    paths = _numpy_paths(MODEL, "heavy_ball", 0.15, 0.7, 0.8, 4, steps, 40_000, seed=3)
    ex = loss_covariance(MODEL, opt, 4, pairs_steps)
    cols = pair_columns(steps, pairs_steps)
    thr = stats.norm.isf(1e-5 / (2 * 12))
    cov = lag_covariance(paths, cols, ex.covariance)
    corr = lag_correlation(paths, cols, ex.correlation)
    assert np.max(np.abs(cov.z)) < thr, cov.z
    assert np.max(np.abs(corr.z)) < thr, corr.z
    assert np.all(cov.n_runs == 40_000)
    # power: the covariance 20 % low, the correlation 0.05 low
    assert np.max(np.abs(lag_covariance(paths, cols, 0.8 * ex.covariance).z)) > thr + 4
    assert np.max(np.abs(lag_correlation(paths, cols, ex.correlation - 0.05).z)) > thr + 4


def test_lag_standard_errors_are_calibrated_over_seeds():
    """Over 400 independent samples from the exact bivariate law of (L_s, L_t) (a loss with
    few degrees of freedom, so that the product statistic is skewed), the z of the sample
    covariance and correlation have mean 0 and variance 1 (chi-square 1e-4 interval)."""
    h = np.array([1.0, 0.2])
    mult = np.array([1, 3])
    mu_s, mu_t = np.array([0.5, 0.0]), np.array([0.3, 0.1])
    vs, vt, cst = np.array([1.0, 0.5]), np.array([0.8, 0.6]), np.array([0.6, 0.2])
    w = 0.25 * mult * h * h
    true_cov = float(np.sum(w * (2 * cst ** 2 + 4 * mu_s * mu_t * cst)))
    var_s = float(np.sum(w * (2 * vs ** 2 + 4 * mu_s ** 2 * vs)))
    var_t = float(np.sum(w * (2 * vt ** 2 + 4 * mu_t ** 2 * vt)))
    true_corr = true_cov / np.sqrt(var_s * var_t)
    k, n = 400, 1500
    rng = np.random.default_rng(7)
    zc, zr = np.empty(k), np.empty(k)
    for i in range(k):
        ls = np.zeros(n)
        lt = np.zeros(n)
        for g in range(h.size):
            for _ in range(mult[g]):
                cov = [[vs[g], cst[g]], [cst[g], vt[g]]]
                x = rng.multivariate_normal([mu_s[g], mu_t[g]], cov, size=n)
                ls += 0.5 * h[g] * x[:, 0] ** 2
                lt += 0.5 * h[g] * x[:, 1] ** 2
        paths = np.column_stack([ls, lt])
        zc[i] = lag_covariance(paths, (0, 1), true_cov).z[0]
        zr[i] = lag_correlation(paths, (0, 1), true_corr).z[0]
    lo, hi = stats.chi2.ppf([5e-5, 1 - 5e-5], k - 1) / (k - 1)
    for z in (zc, zr):
        assert abs(z.mean()) < 4.5 / np.sqrt(k), z.mean()
        assert lo < z.var(ddof=1) < hi, z.var(ddof=1)


def test_two_sample_difference_and_bad_input():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((3000, 3)).cumsum(1)
    b = rng.standard_normal((2000, 3)).cumsum(1)
    d = lag_covariance_difference(a, b, [(0, 1), (0, 2)])
    assert np.all(np.abs(d.z) < 5) and np.all(d.n_runs == 2000)
    c = rng.standard_normal((3000, 3))  # independent records: covariance 0 instead of 1
    assert np.min(np.abs(lag_covariance_difference(a, c, [(0, 1), (0, 2)]).z)) > 10
    with pytest.raises(ParameterError, match="'paths' parameter of lag_covariance"):
        lag_covariance([1, 2, 3], (0, 1))
    with pytest.raises(ParameterError, match="'pairs' parameter of lag_covariance"):
        lag_covariance(a, (0, 3))
    with pytest.raises(ParameterError, match="'predicted' parameter of lag_correlation"):
        lag_correlation(a, [(0, 1), (1, 2)], [0.5])
    with pytest.raises(ParameterError, match="'paths_b' parameter"):
        lag_covariance_difference(a, b[:, :2], (0, 1))
    with pytest.raises(ParameterError, match="step 5"):
        pair_columns([0, 1, 2], [(0, 5)])
    assert pair_columns([0, 10, 20], [(10, 20), (0, 0)]).tolist() == [[1, 2], [0, 0]]
    assert pair_columns([20, 0, 10], [(10, 20)]).tolist() == [[2, 0]]
    # diverged runs (inf) are left out of the pair; too few finite runs give nan, not an error
    a2 = a.copy()
    a2[:10, 2] = np.inf
    st = lag_covariance(a2, [(0, 1), (0, 2)])
    assert st.n_runs.tolist() == [3000, 2990] and np.isfinite(st.estimate).all()
    assert np.isnan(lag_covariance(a[:2], (0, 1)).estimate[0])
    # nan = no prediction for that pair; inf is refused
    st = lag_correlation(a, [(0, 1), (1, 2)], [np.nan, 0.8])
    assert np.isnan(st.z[0]) and np.isfinite(st.z[1])
    with pytest.raises(ParameterError, match="'predicted' parameter of lag_covariance"):
        lag_covariance(a, [(0, 1)], [np.inf])


# ------------------------------------------------------------------ any input
def _small_or_invalid():
    import math

    from hypothesis import strategies as st
    return st.one_of(st.integers(0, 30), st.integers(-2 ** 70, -1),
                     st.integers(2 ** 62 + 1, 2 ** 70),
                     st.floats(allow_nan=True).filter(
                         lambda x: not (math.isfinite(x) and x.is_integer())),
                     st.text(max_size=2), st.none(), st.booleans())


def test_any_pairs_and_paths_give_a_result_or_a_parameter_error():
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    item = _small_or_invalid()
    pairs = st.one_of(item, st.lists(item, max_size=3),
                      st.lists(st.lists(item, min_size=0, max_size=3), max_size=3))

    @settings(max_examples=60, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(pairs, st.one_of(st.integers(1, 8), item))
    def exact(p, b):
        try:
            r = loss_covariance(MODEL, SGD(0.3), b, p)
        except ParameterError:
            return
        assert r.covariance.shape == (r.pairs.shape[0],) and not np.isnan(r.covariance).any()

    @settings(max_examples=100, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(st.one_of(item, st.lists(st.lists(st.floats(), min_size=2, max_size=2),
                                    max_size=6)),
           pairs, st.one_of(st.none(), item, st.lists(st.floats(), max_size=2)))
    def sampled(paths, p, pred):
        for fn in (lag_covariance, lag_correlation):
            try:
                fn(paths, p, pred)
            except ParameterError:
                pass

    exact()
    sampled()


@pytest.mark.parametrize("opt, batch", [
    (HeavyBall(0.1, 0.9, ema=0.9), 4), (Nesterov(0.05, 0.9, preconditioning=0.5), 2),
    (HeavyBall(0.0101, 0.81), 4),  # near-critical damping
    (SGD(0.8, ema=0.95), S.ConstantBatch(8)),
])
def test_repeated_squaring_matches_the_per_step_recurrence(opt, batch):
    """Constant hyperparameters jump by squaring; a schedule equal to the constant (one
    piece) takes the per-step path: the two agree."""
    from nqm_mc.exact import joint
    pairs = np.array([(0, 0), (3, 200), (150, 151), (400, 1000), (999, 1000)])
    fast = loss_covariance(MODEL, opt, batch, pairs)
    b = S.as_batch_schedule(batch)
    slow_cov, slow_mean, slow_var = joint._per_step(MODEL, opt, b, pairs, "test")
    np.testing.assert_allclose(fast.covariance, slow_cov, rtol=1e-9, atol=1e-300)
    np.testing.assert_allclose(fast.mean, slow_mean, rtol=1e-10)
    np.testing.assert_allclose(fast.variance, slow_var, rtol=1e-9)


def test_far_steps_reach_the_stationary_covariance():
    """At any horizon up to 2^62: far into the steady state the covariance depends on the lag
    only, and the correlation at lag 0 is 1."""
    opt = HeavyBall(0.1, 0.9, ema=0.9)
    lags = [0, 1, 5, 50]
    near = loss_covariance(MODEL, opt, 4, [(10 ** 4, 10 ** 4 + k) for k in lags])
    far = loss_covariance(MODEL, opt, 4, [(2 ** 61, 2 ** 61 + k) for k in lags])
    np.testing.assert_allclose(far.covariance, near.covariance, rtol=1e-8)
    assert far.correlation[0] == pytest.approx(1.0) and not far.diverged
    assert np.all(np.diff(far.correlation) < 0)


def test_bits_do_not_depend_on_the_thread_count():
    import numba
    model = NQM.binned(dim=500, n_bins=70)
    calls = [(SGD(0.5, ema=0.9), 4), (HeavyBall(S.CosineDecay(0.2, 300), 0.9), 8)]
    pairs = [(5, 10), (100, 300), (299, 300)]
    before = numba.get_num_threads()
    try:
        out = []
        for k in (1, before):
            numba.set_num_threads(k)
            out.append([loss_covariance(model, o, b, pairs).covariance for o, b in calls])
    finally:
        numba.set_num_threads(before)
    for a, b in zip(out[0], out[1], strict=True):
        assert a.tobytes() == b.tobytes()
