"""Monte Carlo engine: same-noise NumPy stepper, reproducibility, agreement with exact."""

import math

import numpy as np
import pytest

from nqm_mc import NQM, SGD, HeavyBall, Nesterov, ParameterError, expected_loss
from nqm_mc.montecarlo import _rng
from nqm_mc.montecarlo.driver import simulate
from nqm_mc.results import load_result
from nqm_mc.spec import schedules as S
from tests.reference import step_rule

MODEL = NQM(np.array([1.0, 0.3, 0.05, 0.01]), np.array([0.8, 0.3, 0.1, 0.01]),
            multiplicities=[1, 3, 2, 4], initial_mean=[0.5, 0.0, -1.0, 2.0],
            initial_variance=[1.0, 0.5, 0.0, 2.0])

FAMILIES = {
    "sgd": SGD(0.5),
    "sgd_p_ema": SGD(0.3, preconditioning=0.5, ema=0.9),
    "heavy_ball": HeavyBall(0.1, 0.9),
    "heavy_ball_p": HeavyBall(0.05, 0.8, preconditioning=0.25),
    "nesterov_ema": Nesterov(0.1, 0.8, ema=0.95),
    "sgd_cosine": SGD(S.Warmup(S.CosineDecay(0.5, 40), 5)),
    "hb_step": HeavyBall(S.StepDecay(0.2, 0.5, 20), 0.7),
}


def numpy_stepper(model, opt, batch, n_steps, seed, trajectory, dtype=np.float64):
    """Slow reference: the update rule in NumPy, fed the same normals as the kernel."""
    h, c, mu0, v0 = model.expand()
    d = h.size
    hp = (h ** (-opt.preconditioning)).astype(dtype)
    z0 = _rng.normals(seed, trajectory, 0, d, purpose=_rng.PURPOSE_INITIAL, dtype=dtype)
    theta = (mu0 + np.sqrt(v0) * z0).astype(dtype)
    m = np.zeros(d)
    ema = theta.copy()
    lr_t = opt.learning_rate.values(n_steps)
    b_t = S.as_batch_schedule(batch).values(n_steps)
    gamma = opt.ema
    ro = (lambda th, e: e) if gamma is not None else (lambda th, e: th)
    losses = [0.5 * np.sum(h * ro(theta, ema) ** 2)]
    for t in range(n_steps):
        z = _rng.normals(seed, trajectory, t, d, dtype=dtype)
        g = hp * (h.astype(dtype) * theta + np.sqrt(c / b_t[t]).astype(dtype) * z)
        theta, m, ema = step_rule(opt.name, theta, m, ema, g, lr_t[t],
                                  getattr(opt, "momentum", 0.0), gamma)
        losses.append(0.5 * np.sum(h * ro(theta, ema) ** 2))
    return np.array(losses)


@pytest.mark.parametrize("name", FAMILIES)
def test_kernel_matches_numpy_stepper_with_same_noise(name):
    opt = FAMILIES[name]
    batch = S.PiecewiseConstantBatch([15], [4, 16])
    res = simulate(MODEL, opt, batch, 40, 3, seed=11, record="all", keep_paths=3)
    for k in range(3):
        ref = numpy_stepper(MODEL, opt, batch, 40, 11, k)
        np.testing.assert_allclose(res.paths[k], ref, rtol=1e-12, atol=1e-300)


@pytest.mark.parametrize("name", ["sgd_p_ema", "heavy_ball", "nesterov_ema"])
def test_float32_kernel_matches_float32_stepper(name):
    opt = FAMILIES[name]
    res = simulate(MODEL, opt, 8, 50, 3, seed=3, record="all", keep_paths=3, dtype="float32")
    for k in range(3):
        ref = numpy_stepper(MODEL, opt, 8, 50, 3, k, dtype=np.float32)
        # same float32 normals and rules; only the rounding order of a few products differs
        np.testing.assert_allclose(res.paths[k], ref, rtol=2e-5)
        # and a float64 run of the same trajectory is a different (finer) noise stream
        assert not np.allclose(res.paths[k], numpy_stepper(MODEL, opt, 8, 50, 3, k),
                               rtol=1e-7)


def test_float32_mean_agrees_with_exact_engine():
    from scipy.stats import norm
    opt = HeavyBall(0.1, 0.9, ema=0.9)
    n = 4000
    res = simulate(MODEL, opt, 4, 60, n, seed=9, record=6, dtype="float32")
    ex = expected_loss(MODEL, opt, 4, record=res.steps)
    se = np.sqrt(ex.variance / n)
    z = (res.mean - ex.mean) / se
    thresh = norm.isf(1e-5 / (2 * z.size))
    assert np.max(np.abs(z)) < thresh
    exw = expected_loss(MODEL, opt.with_(learning_rate=S.Constant(0.125)), 4, record=res.steps)
    assert np.max(np.abs(ex.mean - exw.mean) / se) > thresh + 4  # the power check's design
    assert np.max(np.abs((res.mean - exw.mean) / se)) > thresh


def test_bitwise_identical_across_threads_and_block_sizes():
    import numba
    opt = Nesterov(0.1, 0.8, ema=0.9)
    base = simulate(MODEL, opt, 4, 60, 103, seed=5, record=7, target=0.3, keep_paths=5,
                    threads=1, block_size=16)
    for threads, bs in [(numba.config.NUMBA_NUM_THREADS, 16), (1, 5), (2, 1), (2, 64)]:
        other = simulate(MODEL, opt, 4, 60, 103, seed=5, record=7, target=0.3, keep_paths=5,
                         threads=min(threads, numba.config.NUMBA_NUM_THREADS), block_size=bs)
        assert base.equals(other), (threads, bs)


def test_replay_one_trajectory_alone():
    # trajectory 37 of a big run equals the same trajectory run through the stepper alone
    opt = HeavyBall(0.1, 0.9)
    res = simulate(MODEL, opt, 4, 30, 64, seed=9, record="all", target=0.5, keep_paths=64)
    ref = numpy_stepper(MODEL, opt, 4, 30, 9, 37)
    np.testing.assert_allclose(res.paths[37], ref, rtol=1e-12)
    hit = np.flatnonzero(ref < 0.5)
    assert res.hitting_times[37] == (hit[0] if hit.size else -1)


def test_common_random_numbers_reduce_paired_variance():
    """Two learning rates with the same seed share noise: their difference varies far less."""
    n, T = 4000, 30
    a = simulate(MODEL, SGD(0.30), 4, T, n, seed=1, record=[T], keep_paths=n)
    b = simulate(MODEL, SGD(0.31), 4, T, n, seed=1, record=[T], keep_paths=n)
    c = simulate(MODEL, SGD(0.31), 4, T, n, seed=2, record=[T], keep_paths=n)
    paired = np.var(a.paths[:, -1] - b.paths[:, -1])
    unpaired = np.var(a.paths[:, -1] - c.paths[:, -1])
    assert paired < unpaired / 20


@pytest.mark.parametrize("name", FAMILIES)
def test_mean_agrees_with_exact_engine(name):
    """Every recorded step within a Bonferroni threshold (family-wise error 1e-5) of exact."""
    opt = FAMILIES[name]
    n = 4000
    res = simulate(MODEL, opt, 4, 60, n, seed=2024, record=6)
    ex = expected_loss(MODEL, opt, 4, record=res.steps)
    se = np.sqrt(ex.variance / n)
    live = se > 0
    z = (res.mean[live] - ex.mean[live]) / se[live]
    from scipy.stats import norm
    thresh = norm.isf(1e-5 / (2 * live.sum() * len(FAMILIES)))
    assert np.max(np.abs(z)) < thresh
    # power: a wrong reference (learning rate 25 % off, or the batch size halved for the
    # scheduled families) is rejected by the same test. By design its expected |z| exceeds the
    # threshold by at least 4, so the check misses it with probability below 3e-5.
    if opt.is_constant:
        exw = expected_loss(MODEL, opt.with_(learning_rate=S.Constant(
            opt.base_learning_rate * 1.25)), 4, record=res.steps)
    else:
        exw = expected_loss(MODEL, opt, 2, record=res.steps)
    assert np.max(np.abs(ex.mean[live] - exw.mean[live]) / se[live]) > thresh + 4
    zw = (res.mean[live] - exw.mean[live]) / se[live]
    assert np.max(np.abs(zw)) > thresh


def test_sample_variance_and_sem_match_exact():
    """The sample variance against the exact variance, with the standard error of a sample
    variance, sqrt((m4 - s^4) / n), from the kept paths; Bonferroni over the recorded steps."""
    from scipy.stats import norm
    n = 20000
    opt = HeavyBall(0.1, 0.9)
    res = simulate(MODEL, opt, 4, 40, n, seed=77, record=[0, 10, 40], keep_paths=n)
    ex = expected_loss(MODEL, opt, 4, record=res.steps)
    x = res.paths
    m4 = np.mean((x - x.mean(0)) ** 4, axis=0)
    se_var = np.sqrt((m4 - res.variance ** 2) / n)
    thresh = norm.isf(1e-5 / (2 * res.steps.size))
    z = (res.variance - ex.variance) / se_var
    assert np.max(np.abs(z)) < thresh
    np.testing.assert_allclose(res.sem, np.sqrt(res.variance / n), rtol=1e-12)
    np.testing.assert_allclose(res.variance, x.var(0, ddof=1), rtol=1e-9)
    wrong = expected_loss(MODEL, opt, 3, record=res.steps).variance  # batch 3 instead of 4
    assert np.max(np.abs(ex.variance - wrong)[1:] / se_var[1:]) > thresh + 4
    assert np.max(np.abs((res.variance - wrong) / se_var)) > thresh


def test_hitting_times_quantiles_and_bands():
    res = simulate(MODEL, SGD(0.5), 4, 100, 500, seed=3, record=10, target=0.5)
    summ = res.hitting_summary()
    assert 0 <= summ["fraction_never"] <= 1 and summ["mean"] > 0
    q = res.quantiles
    assert np.all(np.diff(q, axis=0)[:, 1:] >= 0)  # ordered levels
    assert res.band_mean_square.shape == (res.steps.size, 8)


def test_save_and_load_roundtrip(tmp_path):
    res = simulate(MODEL, HeavyBall(0.1, 0.9, ema=0.9), 4, 30, 50, seed=1, record=5,
                   target=0.4, keep_paths=3)
    p = res.save(str(tmp_path / "run"))
    back = load_result(p)
    assert back.equals(res)
    assert back.meta["provenance"]["rng"].startswith("Philox4x32-10")
    assert back.spec["seed"] == 1


def test_divergence_is_counted_not_nan():
    res = simulate(MODEL, SGD(2.5), 4, 2000, 20, seed=0, record="log", target=1e-6)
    assert res.n_diverged[-1] == 20
    assert np.all(res.hitting_times == -2)
    assert np.isnan(res.mean[-1]) and res.n_finite[-1] == 0
    assert np.all(res.n_finite[:3] == 20)


def test_million_trajectories_small_model():
    m = NQM([1.0, 0.1], [1.0, 0.1])
    res = simulate(m, SGD(0.5), 16, 20, 1_000_000, seed=0, record=[0, 20])
    ex = expected_loss(m, SGD(0.5), 16, record=res.steps)
    z = (res.mean - ex.mean) / np.sqrt(ex.variance / 1_000_000)
    assert np.all(np.abs(z) < 5) and res.n_finite[-1] == 1_000_000


@pytest.mark.parametrize("kw,name", [
    (dict(n_runs=0), "n_runs"), (dict(n_steps=-1), "n_steps"), (dict(seed=-1), "seed"),
    (dict(dtype="float16"), "dtype"), (dict(record="sometimes"), "record"),
    (dict(batch_size=0), "batch_size"), (dict(target=math.nan), "target"),
    (dict(threads=0), "threads"), (dict(keep_paths=99), "keep_paths"),
])
def test_simulate_bad_input(kw, name):
    args = dict(model=MODEL, optimizer=SGD(0.1), batch_size=4, n_steps=10, n_runs=5)
    args.update(kw)
    with pytest.raises(ParameterError, match=f"'{name}'"):
        simulate(**args)


_VECTOR_WIDTH_SCRIPT = """
import hashlib, sys
import numpy as np
from nqm_mc import NQM, HeavyBall, expected_loss, simulate, steps_to_target
m = NQM.paper(300)
h = hashlib.sha256()
for dt in ("float64", "float32"):
    r = simulate(m, HeavyBall(0.3, 0.8, ema=0.9), 16, 200, 40, seed=7, target=0.5,
                 keep_paths=3, dtype=dt, progress=False)
    for a in (r.mean, r.variance, r.paths, r.band_mean_square, r.hitting_times):
        h.update(np.ascontiguousarray(a).tobytes())
h.update(expected_loss(m, HeavyBall(0.3, 0.8), 16, 500).mean.tobytes())
h.update(str(steps_to_target(NQM.binned(), HeavyBall(0.5, 0.99), 1024, 0.01).steps).encode())
print(h.hexdigest())
"""


@pytest.mark.slow
def test_vector_width_changes_speed_not_bits(tmp_path):
    """On an AVX-512 machine the package asks numba for 512-bit vectors; the results must be
    the bits of numba's default (256-bit) build. Elsewhere both runs use the same code."""
    import os
    import subprocess
    import sys
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CPU_FEATURES"}
    digests = []
    for width in ("512", "256"):
        out = subprocess.run([sys.executable, "-c", _VECTOR_WIDTH_SCRIPT], check=True,
                             capture_output=True, text=True,
                             env={**env, "NQM_MC_VECTOR_WIDTH": width,
                                  "NUMBA_CACHE_DIR": str(tmp_path / width)})
        digests.append(out.stdout.strip())
    assert digests[0] == digests[1]


def _numpy_merge(count, mean, m2, theta, band, gc, gm, gs, gt, gb, cross=True):
    """Chan et al.'s merge written with NumPy, one group at a time (the reference)."""
    for b in range(gc.shape[0]):
        prev, c = count.copy(), gc[b]
        tot = count + c
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            delta = gm[b] - mean
            frac = np.where(tot > 0, c / np.where(tot > 0, tot, 1), 0.0)
            new_mean = mean + delta * frac
            new_m2 = m2 + gs[b] + (delta * delta * prev * frac if cross else 0.0)
            keep = c > 0
            count, mean, m2 = tot, np.where(keep, new_mean, mean), np.where(keep, new_m2, m2)
            theta = np.where(count > 0, (theta * prev + gt[b] * c)
                             / np.where(count > 0, count, 1), theta)
        band = band + gb[b]
    return count, mean, m2, theta, band


def test_compiled_group_merge_gives_the_numpy_merge_bits():
    """The driver's merge of per-group statistics (one compiled loop) gives the bits of the
    NumPy merge it replaced, with empty groups, a record no run reached and an infinite
    theta; a merge without the cross term (a wrong answer) is told apart."""
    from nqm_mc.montecarlo._statistics import merge_groups
    rs = np.random.default_rng(5)
    nb, R, Q = 40, 6, 3
    gc = rs.integers(0, 17, (nb, R)).astype(float)
    gc[::7] = 0.0
    gc[:, -1] = 0.0
    gm = rs.lognormal(0, 2, (nb, R))
    gs = rs.lognormal(0, 3, (nb, R))
    gt = rs.lognormal(0, 1, (nb, R))
    gt[3, 2] = np.inf
    gb = rs.normal(size=(nb, R, Q))
    ref = _numpy_merge(np.zeros(R), np.zeros(R), np.zeros(R), np.zeros(R), np.zeros((R, Q)),
                       gc, gm, gs, gt, gb)
    got = [np.zeros(R), np.zeros(R), np.zeros(R), np.zeros(R), np.zeros((R, Q))]
    merge_groups(*got, gc, gm, gs, gt, gb)
    for a, b in zip(got, ref, strict=True):
        assert np.array_equal(a, b, equal_nan=True)
    wrong = _numpy_merge(np.zeros(R), np.zeros(R), np.zeros(R), np.zeros(R), np.zeros((R, Q)),
                         gc, gm, gs, gt, gb, cross=False)
    assert not np.array_equal(got[2], wrong[2])
