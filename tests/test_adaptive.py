"""Adaptive optimizers, clipping and non-Gaussian noise in the Monte Carlo engine."""

import numpy as np
import pytest
from scipy import stats

from nqm_mc import NQM, SGD, HeavyBall, Nesterov, ParameterError, expected_loss
from nqm_mc.montecarlo import _rng
from nqm_mc.montecarlo.driver import simulate
from nqm_mc.spec import schedules as S
from nqm_mc.spec.noise import FiniteData, Gaussian, StudentT, noise_from_dict
from nqm_mc.spec.optimizers import Adagrad, Adam, RMSProp, SignSGD, optimizer_from_dict
from tests.reference import AdaptiveStepper

MODEL = NQM(np.array([1.0, 0.3, 0.05, 0.01]), np.array([0.8, 0.3, 0.1, 0.01]),
            multiplicities=[1, 3, 2, 4], initial_mean=[0.5, 0.0, -1.0, 2.0],
            initial_variance=[1.0, 0.5, 0.0, 2.0])

RULES = {
    "adam": Adam(0.05),
    "adam_ema": Adam(S.CosineDecay(0.05, 40), beta1=0.8, beta2=0.99, eps=1e-6, ema=0.9),
    "rmsprop": RMSProp(0.02, decay=0.9),
    "adagrad": Adagrad(0.3),
    "sign_sgd": SignSGD(0.01),
    "sgd_clip": SGD(0.5, clip_norm=0.7),
    "heavy_ball_clip": HeavyBall(0.1, 0.9, clip_norm=0.5),
    "nesterov_clip_ema": Nesterov(0.1, 0.8, ema=0.95, clip_norm=0.3),
    "adam_clip": Adam(0.05, clip_norm=0.2),
}


def stepper(model, opt, batch, n_steps, seed, trajectory, noise=None):
    """Slow reference on the same noise as the kernel (Gaussian normals of _rng.normals)."""
    h, c, mu0, v0 = model.expand()
    d = h.size
    z0 = _rng.normals(seed, trajectory, 0, d, purpose=_rng.PURPOSE_INITIAL)
    theta = mu0 + np.sqrt(v0) * z0
    ema = theta.copy()
    st = AdaptiveStepper(opt, d)
    hp = h ** (-opt.preconditioning)
    lr_t = opt.learning_rate.values(n_steps)
    ro = (lambda th, e: e) if opt.ema is not None else (lambda th, e: th)
    losses = [0.5 * np.sum(h * ro(theta, ema) ** 2)]
    for t in range(n_steps):
        z = _rng.normals(seed, trajectory, t, d) if noise is None else noise(t)
        g = hp * (h * theta + np.sqrt(c / batch) * z)
        theta = st.step(theta, g, lr_t[t])
        if opt.ema is not None:
            ema = opt.ema * ema + (1 - opt.ema) * theta
        losses.append(0.5 * np.sum(h * ro(theta, ema) ** 2))
    return np.array(losses)


@pytest.mark.parametrize("name", RULES)
def test_rule_matches_numpy_stepper_with_same_noise(name):
    opt = RULES[name]
    res = simulate(MODEL, opt, 4, 40, 3, seed=11, record="all", keep_paths=3, progress=False)
    for k in range(3):
        np.testing.assert_allclose(res.paths[k], stepper(MODEL, opt, 4, 40, 11, k),
                                   rtol=1e-11, atol=1e-300)


def test_clipping_is_active_in_the_tests():
    """The clipping thresholds above bind: the same runs without clipping differ."""
    for name in ("sgd_clip", "heavy_ball_clip", "adam_clip"):
        a = simulate(MODEL, RULES[name], 4, 40, 3, seed=11, record="all", progress=False)
        b = simulate(MODEL, RULES[name].with_(clip_norm=None), 4, 40, 3, seed=11,
                     record="all", progress=False)
        assert not np.allclose(a.mean, b.mean, rtol=1e-3)


def test_clipping_that_never_binds_is_the_fast_kernel_bit_for_bit():
    opt = HeavyBall(0.1, 0.9, ema=0.9)
    fast = simulate(MODEL, opt, 4, 60, 20, seed=2, record="all", keep_paths=5, target=1.0,
                    progress=False)
    slow = simulate(MODEL, opt.with_(clip_norm=1e12), 4, 60, 20, seed=2, record="all",
                    keep_paths=5, target=1.0, progress=False)
    for f in ("mean", "variance", "paths", "band_mean_square", "hitting_times"):
        assert np.array_equal(getattr(fast, f), getattr(slow, f)), f


NOISE_FREE = NQM(MODEL.curvatures, np.zeros(4), multiplicities=[1, 3, 2, 4],
                 initial_mean=[0.5, 0.2, -1.0, 2.0], initial_variance=np.zeros(4))


@pytest.mark.parametrize("name", ["adam", "rmsprop", "adagrad", "sign_sgd", "sgd_clip"])
def test_noise_free_runs_are_the_deterministic_iteration(name):
    opt = RULES[name]
    res = simulate(NOISE_FREE, opt, 4, 50, 32, seed=3, record="all", progress=False)
    ref = stepper(NOISE_FREE, opt, 4, 50, 3, 0)
    np.testing.assert_allclose(res.mean, ref, rtol=1e-12)
    assert np.all(res.variance <= 1e-24 * np.maximum(ref, 1e-300) ** 2)


def test_noise_free_limits_between_rules():
    """Without noise: RMSProp and Adagrad with eps >> |g| are SGD with lr / eps; Adam with
    beta1 = beta2 = 0 and eps -> 0 is sign-SGD (exactly, with eps = 1e-300)."""
    T = 60
    sgd = simulate(NOISE_FREE, SGD(0.2), 4, T, 16, record="all", progress=False).mean
    for opt in (RMSProp(0.2 * 1e6, eps=1e6), Adagrad(0.2 * 1e6, eps=1e6)):
        got = simulate(NOISE_FREE, opt, 4, T, 16, record="all", progress=False).mean
        np.testing.assert_allclose(got, sgd, rtol=1e-4)
    sign = simulate(NOISE_FREE, SignSGD(0.01), 4, T, 16, record="all", progress=False).mean
    adam = simulate(NOISE_FREE, Adam(0.01, beta1=0.0, beta2=0.0, eps=1e-300), 4, T, 16,
                    record="all", progress=False).mean
    np.testing.assert_allclose(adam, sign, rtol=1e-12)


def test_adaptive_results_save_and_load(tmp_path):
    from nqm_mc.results import load_result
    res = simulate(MODEL, Adam(0.05, clip_norm=1.0), 4, 30, 20, seed=1, progress=False,
                   noise=StudentT(4.0))
    res.save(tmp_path / "r")
    back = load_result(tmp_path / "r")
    np.testing.assert_array_equal(back.mean, res.mean)
    assert optimizer_from_dict(back.spec["optimizer"]) == Adam(0.05, clip_norm=1.0)
    assert noise_from_dict(back.spec["noise"]) == StudentT(4.0)


@pytest.mark.parametrize("bad", [
    lambda: Adam(0.1, beta1=1.0), lambda: Adam(0.1, beta2=-0.1), lambda: Adam(0.1, eps=0.0),
    lambda: RMSProp(0.1, decay=1.5), lambda: Adagrad(-1.0), lambda: SignSGD(float("nan")),
    lambda: SGD(0.1, clip_norm=0.0), lambda: StudentT(2.0), lambda: StudentT(float("inf")),
    lambda: FiniteData(1), lambda: FiniteData(10, seed=-1),
    lambda: simulate(MODEL, SGD(0.1), 16, 5, 2, noise=FiniteData(16)),
    lambda: simulate(MODEL, SGD(0.1), 4, 5, 2, noise="cauchy"),
    lambda: expected_loss(MODEL, Adam(0.1), 4, 5),
    lambda: expected_loss(MODEL, SGD(0.1, clip_norm=1.0), 4, 5),
])
def test_bad_input_is_a_parameter_error(bad):
    with pytest.raises(ParameterError):
        bad()


# ---------------------------------------------------------------- noise laws
def test_student_t_law():
    """Unit variance and the t law (KS against scipy), with a power check: the unscaled
    variates are rejected as unit-variance t_4 draws... and as normals."""
    nu = 5.0
    z = np.empty(200_000)
    _rng.fill_student_t(z, z.size, np.uint32(7), np.uint32(0), np.uint32(1), np.uint32(2), nu)
    scale = np.sqrt((nu - 2) / nu)
    assert stats.kstest(z / scale, "t", args=(nu,)).pvalue > 1e-3
    assert stats.kstest(z, "norm").pvalue < 1e-6  # power: heavier tails than a normal
    assert stats.kstest(z / scale, "t", args=(3.0,)).pvalue < 1e-6  # power: wrong nu
    # variance 1: for nu = 5 the kurtosis is 9, so se(var) = sqrt(8 / n)
    assert abs(z.var() - 1.0) < 5 * np.sqrt(8 / z.size)


def test_student_t_elements_replay_alone_and_later_rounds_are_used():
    """Element i of a step depends on (seed, trajectory, step, i) only: a longer or shorter
    fill gives it the same bits, float32 is the rounded float64; the elements whose first
    Philox call failed twice (about 4.6 %) take later rounds, whose variates have the same law
    as the others (KS against t_nu, with a power check on a wrong nu)."""
    nu = 4.0
    n = 100_000
    z = np.empty(n)
    key = (np.uint32(7), np.uint32(0), np.uint32(1), np.uint32(2))
    _rng.fill_student_t(z, n, *key, nu)
    short = np.empty(301)
    _rng.fill_student_t(short, 301, *key, nu)
    assert np.array_equal(short, z[:301])
    z32 = np.empty(1001, np.float32)
    _rng.fill_student_t(z32, 1001, *key, nu)
    assert np.array_equal(z32, z[:1001].astype(np.float32))
    # which elements needed a second round: both attempts of their first call outside the disc
    words = np.empty((n, 4), np.uint32)
    _rng.philox_block(0, key[0], np.uint32(_rng.PURPOSE_STUDENT), key[1], key[2], key[3], n,
                      words)
    uv = (words.astype(np.float64) + 0.5) / 2 ** 31 - 1.0
    late = ((uv[:, 0] ** 2 + uv[:, 1] ** 2) >= 1) & ((uv[:, 2] ** 2 + uv[:, 3] ** 2) >= 1)
    p = (1 - np.pi / 4) ** 2
    assert abs(late.mean() - p) < 5 * np.sqrt(p * (1 - p) / n)
    scale = np.sqrt((nu - 2) / nu)
    assert np.all(np.isfinite(z))
    assert stats.kstest(z[late] / scale, "t", args=(nu,)).pvalue > 1e-4
    assert stats.kstest(z[late] / scale, "t", args=(1.5,)).pvalue < 1e-6  # power


def test_libm_free_expm1_and_log():
    """The vectorisable expm1 and -2 ln used by the Student-t sampler, against numpy, over
    their whole ranges: within 4 ulp."""
    from numba import njit

    @njit
    def both(y, w, e, lg):
        for i in range(y.shape[0]):
            e[i] = _rng.expm1_pos(y[i])
            lg[i] = _rng.neg2log(w[i])

    y = np.r_[0.0, np.geomspace(1e-300, 44.0, 20_000), np.linspace(0, 44, 20_001)]
    w = np.r_[2.0 ** -63, np.geomspace(2.0 ** -63, 1 - 2 ** -53, 40_001)]
    e, lg = np.empty_like(y), np.empty_like(w)
    both(y, w, e, lg)
    eps = np.finfo(float).eps
    assert np.all(np.abs(e - np.expm1(y)) <= 4 * eps * np.abs(np.expm1(y)))
    ref = -2 * np.log(w)
    assert np.all(np.abs(lg - ref) <= 4 * eps * np.maximum(np.abs(ref), 1e-300))


def test_finite_data_batches_are_without_replacement_and_unit_variance():
    n, B = 50, 20
    perm = np.arange(n)
    seen = np.zeros(n)
    for t in range(2000):
        _rng.sample_without_replacement(perm, B, np.uint32(t), np.uint32(0), np.uint32(3),
                                        np.uint32(4))
        assert len(set(perm[:B].tolist())) == B and sorted(perm.tolist()) == list(range(n))
        seen[perm[:B]] += 1
    # every example equally likely: counts ~ Binomial(2000, B / n)
    p = B / n
    z = (seen - 2000 * p) / np.sqrt(2000 * p * (1 - p))
    assert np.abs(z).max() < 4.0
    s = FiniteData(n, seed=1).examples(3)
    np.testing.assert_allclose(s.mean(0), 0, atol=1e-14)
    np.testing.assert_allclose((s ** 2).mean(0), 1, rtol=1e-12)


def test_finite_data_kernel_matches_numpy_stepper():
    """Same batches (the kernel's own sampler replayed) and the same rule in NumPy."""
    data = FiniteData(40, seed=5)
    h, c, mu0, v0 = MODEL.expand()
    ex = data.examples(h.size)

    def noise_of(traj):
        perm = np.arange(40)

        def z(t):
            _rng.sample_without_replacement(perm, 4, np.uint32(t), np.uint32(0),
                                            np.uint32(9), np.uint32(traj))
            return ex[perm[:4]].sum(0) * np.sqrt((40 - 1) / (40 - 4)) / np.sqrt(4)
        return z

    opt = HeavyBall(0.1, 0.9)
    res = simulate(MODEL, opt, 4, 30, 3, seed=9, record="all", keep_paths=3, noise=data,
                   progress=False)
    for k in range(3):
        np.testing.assert_allclose(res.paths[k], stepper(MODEL, opt, 4, 30, 9, k,
                                                         noise=noise_of(k)), rtol=1e-11)


def test_gaussian_noise_object_is_the_default():
    a = simulate(MODEL, SGD(0.3), 4, 20, 8, seed=1, progress=False)
    b = simulate(MODEL, SGD(0.3), 4, 20, 8, seed=1, progress=False, noise=Gaussian())
    assert np.array_equal(a.mean, b.mean)


def test_finite_population_correction_is_needed_and_caught():
    """Power check of the finite-data law: the exact mean with the model's covariance is
    accepted, the mean without the correction (noise variance c/B (n - B)/(n - 1)) rejected."""
    n, B, T = 20, 12, 60
    steps = np.arange(0, T + 1, 5)
    opt = SGD(0.8)
    res = simulate(MODEL, opt, B, T, 4000, seed=3, record=steps, noise=FiniteData(n, seed=4),
                   progress=False)
    right = expected_loss(MODEL, opt, B, record=steps).mean
    shrunk = NQM(MODEL.curvatures, MODEL.noise_variances * (n - B) / (n - 1),
                 MODEL.multiplicities, MODEL.initial_mean, MODEL.initial_variance)
    wrong = expected_loss(shrunk, opt, B, record=steps).mean
    live = res.sem > 0
    thr = stats.norm.isf(1e-4 / 2 / live.sum())  # Bonferroni over the recorded steps
    z_right = (res.mean - right)[live] / res.sem[live]
    z_wrong = (res.mean - wrong)[live] / res.sem[live]
    assert np.abs(z_right).max() < thr
    assert np.abs(z_wrong).max() > thr


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_general_kernel_equals_fast_kernel_on_a_large_model(dtype):
    """Several loss chunks (d = 2100: full chunks paired, a ragged last one): the general
    kernel's losses, summed by half_quadratic, are the fast kernel's bits."""
    m = NQM.paper(2100)
    opt = HeavyBall(0.3, 0.8, ema=0.9)
    kw = dict(seed=4, record="all", keep_paths=3, target=1.0, dtype=dtype, progress=False)
    fast = simulate(m, opt, 8, 20, 6, **kw)
    slow = simulate(m, opt.with_(clip_norm=1e12), 8, 20, 6, **kw)
    for f in ("mean", "paths", "band_mean_square", "hitting_times", "mean_theta"):
        assert np.array_equal(getattr(fast, f), getattr(slow, f)), f
