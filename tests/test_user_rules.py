"""User update rules and gradient noise: the built-ins' bits through the same door, errors,
NaN, interruption, and the least-squares noise laws against their exact risk recurrence.

Statistical tests compare Monte Carlo means with exact values by z-scores against the runs'
standard errors, with a two-sided threshold for a family-wise false-failure probability of
1e-5 over every comparison of the test (fixed seeds), and a power check that a deliberately
wrong prediction is rejected.
"""

import json
import math
import os
import signal
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest
from scipy.stats import norm

from nqm_mc import NQM, SGD, HeavyBall, simulate
from nqm_mc.montecarlo._interrupt import new_flag
from nqm_mc.montecarlo.driver import _job, run_range
from nqm_mc.montecarlo.user_kernels import RuleError
from nqm_mc.spec._checks import ParameterError
from nqm_mc.spec.optimizers import Adam, Optimizer
from nqm_mc.spec.rule_library import adam_rule, heavy_ball_rule, sgd_rule
from nqm_mc.spec.schedules import CosineDecay
from nqm_mc.spec.user import (
    GradientNoise,
    LeastSquaresNoise,
    MinibatchLeastSquares,
    UpdateRule,
)
from tests.test_signals import _stop, wait_until_busy

FAMILY_ALPHA = 1e-5
MODEL = NQM.power_law(300, 1.0, 1.0)
KW = dict(seed=17, record=9, target=0.3, keep_paths=5, progress=False)
PAIRS = [(SGD(0.3), sgd_rule(0.3)), (HeavyBall(0.1, 0.8), heavy_ball_rule(0.1, 0.8)),
         (Adam(0.02), adam_rule(0.02))]


def threshold(n: int) -> float:
    """Two-sided z threshold of n comparisons at family-wise level FAMILY_ALPHA (Bonferroni)."""
    return float(norm.isf(FAMILY_ALPHA / (2 * n)))


@pytest.mark.parametrize("builtin,rule", PAIRS, ids=["sgd", "heavy_ball", "adam"])
def test_builtins_written_as_rules_give_their_bits(builtin, rule):
    a = simulate(MODEL, builtin, 8, 60, 100, **KW)
    b = simulate(MODEL, rule, 8, 60, 100, **KW)
    for k in ("mean", "variance", "sem", "quantiles", "mean_theta", "band_mean_square",
              "paths", "hitting_times", "n_finite", "n_diverged"):
        np.testing.assert_array_equal(getattr(a, k), getattr(b, k), err_msg=k)
    assert b.spec["optimizer"]["name"] == builtin.name
    assert b.spec["optimizer"]["user_rule"].startswith("nqm_mc.spec.rule_library.")


def test_float32_sgd_rule_gives_the_builtin_bits():
    a = simulate(MODEL, SGD(0.3), 8, 40, 32, dtype="float32", **KW)
    b = simulate(MODEL, sgd_rule(0.3), 8, 40, 32, dtype="float32", **KW)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.paths, b.paths)


def _ema_update(theta, g, e, lr, gamma):
    theta = theta - lr * g
    return theta, gamma * e + (1.0 - gamma) * theta


def test_state_readout_and_schedule_give_the_builtin_ema_bits():
    lr = CosineDecay(0.3, 60)
    rule = UpdateRule(_ema_update, lr, state={"e": "theta"}, hyper={"gamma": 0.9},
                      readout="e", name="sgd_ema")
    a = simulate(MODEL, SGD(lr, ema=0.9), 8, 60, 48, **KW)
    b = simulate(MODEL, rule, 8, 60, 48, **KW)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.mean_theta, b.mean_theta)
    assert np.array_equal(a.hitting_times, b.hitting_times)
    assert not np.array_equal(b.mean, b.mean_theta)  # the readout is the average


def _sgd_with_loss(theta, g, lr, loss, grad_sq):
    return theta - lr * g + 0.0 * (loss + grad_sq)


def test_one_pass_kernel_gives_the_windowed_kernels_bits():
    """A rule that takes the reductions runs one pass per step; same bits as the window."""
    a = simulate(MODEL, sgd_rule(0.3), 8, 150, 40, **KW)
    b = simulate(MODEL, UpdateRule(_sgd_with_loss, 0.3), 8, 150, 40, **KW)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.paths, b.paths)
    assert np.array_equal(a.hitting_times, b.hitting_times)


def _normalized(theta, g, lr, grad_sq, dim):
    return theta - lr * g / math.sqrt(grad_sq / dim)


def test_normalised_rule_runs_and_differs_from_sgd():
    res = simulate(MODEL, UpdateRule(_normalized, 0.05), 8, 100, 32, **KW)
    ref = simulate(MODEL, sgd_rule(0.05), 8, 100, 32, **KW)
    assert np.isfinite(res.mean).all() and not np.array_equal(res.mean, ref.mean)
    assert res.mean[-1] < res.mean[0]


@numba.njit
def _clip_scale(grad_sq, clip):
    nrm = math.sqrt(grad_sq)
    return clip / nrm if nrm > clip else 1.0


def _clipped_sgd(theta, g, lr, scale, clipping):
    return theta - lr * (g * scale if clipping > 0.0 else g)


def _clip_prepare(grad_sq, clip):
    s = _clip_scale(grad_sq, clip)
    return s, 1.0 if s != 1.0 else 0.0


def test_clipping_by_norm_written_as_a_rule_gives_the_builtin_bits():
    """Clipping by the global norm (a reduction, computed once per step in prepare)."""
    rule = UpdateRule(_clipped_sgd, 0.3, hyper={"clip": 0.5}, prepare=_clip_prepare,
                      prepared=("scale", "clipping"), name="clipped_sgd")
    a = simulate(MODEL, SGD(0.3, clip_norm=0.5), 8, 60, 32, **KW)
    b = simulate(MODEL, rule, 8, 60, 32, **KW)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.paths, b.paths)
    assert not np.array_equal(a.mean, simulate(MODEL, SGD(0.3), 8, 60, 32, **KW).mean)


def _bits_script() -> str:
    return textwrap.dedent("""
        import hashlib, json
        import numpy as np
        from nqm_mc import NQM, SGD, HeavyBall, simulate
        from nqm_mc.spec.optimizers import Adam
        from nqm_mc.spec.rule_library import adam_rule, heavy_ball_rule, sgd_rule
        m = NQM.power_law(300, 1.0, 1.0)
        kw = dict(seed=17, record=9, target=0.3, keep_paths=5, progress=False)
        out = {}
        for b, u in [(SGD(0.3), sgd_rule(0.3)), (HeavyBall(0.1, 0.8), heavy_ball_rule(0.1, 0.8)),
                     (Adam(0.02), adam_rule(0.02))]:
            for tag, o in (("builtin", b), ("user", u)):
                r = simulate(m, o, 8, 60, 100, block_size=32, **kw)
                h = hashlib.sha256()
                for a in (r.mean, r.variance, r.paths, r.hitting_times, r.band_mean_square):
                    h.update(np.ascontiguousarray(a).tobytes())
                out[b.name + "/" + tag] = h.hexdigest()
        print(json.dumps(out))
    """)


def test_bits_for_one_and_two_threads_in_fresh_processes():
    # the kernels the children need, compiled here first (under the test run's compile lock),
    # so that a cold run's children load them from the disk cache instead of compiling them
    for pair in PAIRS:
        for optimizer in pair:
            simulate(MODEL, optimizer, 8, 5, 16, progress=False)
    digests = []
    for n in (1, 2):
        env = {**os.environ, "NUMBA_NUM_THREADS": str(n)}
        proc = subprocess.run([sys.executable, "-c", _bits_script()], env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        digests.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert digests[0] == digests[1]
    for name in ("sgd", "heavy_ball", "adam"):
        assert digests[0][f"{name}/builtin"] == digests[0][f"{name}/user"], name


# --- errors -----------------------------------------------------------------------------------

def _bad_attribute(theta, g, lr):
    return theta - lr * g.nothing


def _three_values(theta, g, m, lr):
    return theta - lr * g, m, m


def test_a_rule_that_does_not_compile_gets_one_sentence_with_its_line():
    with pytest.raises(RuleError) as err:
        simulate(MODEL, UpdateRule(_bad_attribute, 0.1), 8, 10, 16, progress=False)
    msg = str(err.value)
    assert msg.startswith("The update function of rule '_bad_attribute' does not compile")
    assert "test_user_rules.py, line" in msg and "g.nothing" in msg
    assert "\n" not in msg


def test_a_rule_returning_the_wrong_shape_names_the_shape_and_line():
    with pytest.raises(RuleError) as err:
        simulate(MODEL, UpdateRule(_three_values, 0.1, state=("m",)), 8, 10, 16,
                 progress=False)
    msg = str(err.value)
    assert "must return (theta, m): 2 numbers; it returns a tuple of 3" in msg
    assert "return theta - lr * g, m, m" in msg and "\n" not in msg


def test_bad_rule_arguments_are_parameter_errors():
    with pytest.raises(ParameterError, match="takes 'beta', which is neither"):
        UpdateRule(lambda theta, g, beta: theta, 0.1)
    with pytest.raises(ParameterError, match="'learning_rate' parameter of UpdateRule"):
        UpdateRule(_ema_update, -1.0)
    with pytest.raises(ParameterError, match="readout"):
        UpdateRule(_ema_update, 0.1, state=("e",), hyper={"gamma": 0.5}, readout="e")
    with pytest.raises(ParameterError, match="used twice"):
        UpdateRule(_ema_update, 0.1, state=("e",), hyper={"e": 0.5, "gamma": 0.1})
    with pytest.raises(ParameterError, match="must take 'g'"):
        GradientNoise(lambda theta: None, lambda dim, batch: 0)
    with pytest.raises(ParameterError, match="label_variance"):
        LeastSquaresNoise(-1.0)
    with pytest.raises(ParameterError, match="'method' parameter of simulate can be 'skip'"):
        simulate(MODEL, sgd_rule(0.1), 8, 10, 16, method="skip", progress=False)


def test_an_optimizer_subclass_points_to_the_user_rule_door():
    class Lion(Optimizer):
        name = "lion"

    with pytest.raises(ParameterError, match="UpdateRule") as err:
        simulate(MODEL, Lion(), 8, 10, 16, progress=False)
    assert "subclass of Optimizer" in str(err.value)


# --- NaN, divergence, interruption ------------------------------------------------------------

def _nan_after_five(theta, g, lr, t):
    return theta - lr * g if t < 5 else theta * math.nan


def test_nan_from_a_rule_is_reported_as_nan():
    with pytest.warns(RuntimeWarning, match="produced NaN in 16 of 16 runs"):
        res = simulate(MODEL, UpdateRule(_nan_after_five, 0.1), 8, 20, 16, record="all",
                       keep_paths=2, target=1e-9, progress=False)
    assert np.isfinite(res.mean[:6]).all() and np.isnan(res.mean[6:]).all()
    assert np.isnan(res.paths[:, 6:]).all() and np.isfinite(res.paths[:, :6]).all()
    assert res.meta["nan_runs"] == 16 and res.meta["first_nan"] == {"run": 0, "step": 6}


def test_overflow_is_a_divergence_not_nan(recwarn):
    res = simulate(MODEL, sgd_rule(50.0), 8, 300, 16, record="all", keep_paths=1,
                   progress=False)
    assert res.n_diverged[-1] == 16 and "nan_runs" not in res.meta
    assert np.isinf(res.paths[0, -1])
    assert not [w for w in recwarn if "NaN" in str(w.message)]


def test_stop_flag_stops_user_kernels():
    job = _job(MODEL, adam_rule(0.02), 8, 200, 64, 0, "log", 10, None, 0, "float64", None, 16,
               8)
    flag = new_flag()
    flag[0] = 1
    part = run_range(job.plan, 0, 4, flag)
    assert (part["records"] == -1).all() and (part["hits"] == -3).all()


SIGINT_SCRIPT = textwrap.dedent("""
    import json
    from nqm_mc import NQM, simulate
    from nqm_mc.spec.rule_library import adam_rule
    simulate(NQM.paper(1000), adam_rule(0.01), 32, 10, 16, progress=False)  # compile
    print("started", flush=True)
    r = simulate(NQM.paper(1000), adam_rule(0.01), 32, 2_000_000, 16, progress=False,
                 on_interrupt="return")
    print(json.dumps({"interrupted": r.meta["interrupted"],
                      "started": r.meta["runs_started"]}))
""")


def test_sigint_stops_a_user_rule_within_seconds():
    proc = subprocess.Popen([sys.executable, "-c", SIGINT_SCRIPT], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "started"
    wait_until_busy(proc, 1.0)
    latency, out, err = _stop(proc, signal.SIGINT)
    assert proc.returncode == 0, err[-2000:]
    info = json.loads(out.strip().splitlines()[-1])
    assert info["interrupted"] and info["started"] >= 1
    assert latency < 10.0, latency


def test_the_compiled_kernel_is_in_the_disk_cache():
    """Fast counterpart of the next test: after a run, the generated module's kernel has an
    entry in numba's on-disk index (what a second process loads)."""
    from nqm_mc.montecarlo.user_kernels import _cached, kernel_dir, kernel_for
    rule = heavy_ball_rule(0.1, 0.5)
    simulate(NQM.paper(50), rule, 4, 5, 16, progress=False)
    mod = kernel_for(rule)
    assert _cached(mod.run_block)
    assert os.path.dirname(mod.__file__) == str(kernel_dir())


@pytest.mark.slow
def test_second_process_loads_the_compiled_kernel(tmp_path):
    script = textwrap.dedent("""
        import time
        from nqm_mc import NQM, simulate
        from nqm_mc.spec.rule_library import heavy_ball_rule
        t = time.perf_counter()
        simulate(NQM.paper(50), heavy_ball_rule(0.1, 0.5), 4, 5, 16, progress=False)
        print(time.perf_counter() - t)
    """)
    env = {**os.environ, "NQM_MC_KERNEL_DIR": str(tmp_path)}
    first = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                           text=True, timeout=600)
    second = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600)
    assert "compiling the kernel of update rule 'heavy_ball'" in first.stderr
    assert "compiling" not in second.stderr, second.stderr
    assert list(tmp_path.glob("__pycache__/*.nbi"))


# --- least-squares noise against the exact risk recurrence -----------------------------------

LS = NQM.power_law(50, 1.0, 1.0)
LS_LR, LS_B, LS_S2, LS_T = 0.5, 4, 0.5, 300


def ls_risk(steps, lr=LS_LR, batch=LS_B, s2=LS_S2, missing_factor=False):
    """E[L_t] of SGD on least squares with Gaussian features: per direction
    s' = (1 - a h)^2 s + (a^2 / B)(h^2 s + h sum_j h_j s_j + s2 h); missing_factor drops the
    factor h of h^2 s (a deliberately wrong theory)."""
    h, _, mu0, v0 = LS.expand()
    s = mu0 ** 2 + v0
    out = np.empty(len(steps))
    want = {int(t): k for k, t in enumerate(steps)}
    for t in range(int(max(steps)) + 1):
        if t in want:
            out[want[t]] = 0.5 * np.sum(h * s)
        mult = (h if missing_factor else h * h) * s
        s = (1 - lr * h) ** 2 * s + lr ** 2 / batch * (mult + h * np.sum(h * s) + s2 * h)
    return out


@pytest.mark.parametrize("noise", [LeastSquaresNoise(LS_S2), MinibatchLeastSquares(LS_S2)],
                         ids=["gaussian_multiplicative", "real_minibatch"])
def test_least_squares_noise_follows_the_exact_recurrence(noise):
    res = simulate(LS, SGD(LS_LR), LS_B, LS_T, 3000, seed=2, record="log", n_records=20,
                   noise=noise, progress=False)
    z = (res.mean - ls_risk(res.steps)) / res.sem
    thr = threshold(res.steps.size - 1)  # step 0 is the initial law, not the noise
    assert np.abs(z[1:]).max() < thr, (z, thr)
    wrong = (res.mean - ls_risk(res.steps, missing_factor=True)) / res.sem
    assert np.abs(wrong[1:]).max() > thr  # power: the wrong theory is rejected
    assert (res.n_diverged == 0).all()


def test_gaussian_law_against_the_real_minibatch():
    """Two-sample z-test (independent seeds): the O(d) Gaussian law and the O(Bd) minibatch
    have the same expected risk at every record."""
    kw = dict(record="log", n_records=15, progress=False)
    a = simulate(LS, SGD(LS_LR), LS_B, 150, 3000, seed=5, noise=LeastSquaresNoise(LS_S2), **kw)
    b = simulate(LS, SGD(LS_LR), LS_B, 150, 3000, seed=6, noise=MinibatchLeastSquares(LS_S2),
                 **kw)
    z = (a.mean - b.mean) / np.hypot(a.sem, b.sem)
    assert np.abs(z).max() < threshold(z.size), z
    # power: the additive NQM of the same spectrum (c = s2 h) is rejected by the same test
    c = simulate(NQM(LS.curvatures, LS_S2 * LS.curvatures, multiplicities=LS.multiplicities,
                     initial_mean=0.0, initial_variance=1.0),
                 SGD(LS_LR), LS_B, 150, 3000, seed=6, **kw)
    zc = (a.mean - c.mean) / np.hypot(a.sem, c.sem)
    assert np.abs(zc).max() > threshold(z.size)


def test_user_noise_with_a_user_rule_and_the_noise_arguments():
    def gradient(g, theta, h, c, z, batch, scale):
        for i in range(theta.shape[0]):
            g[i] = h[i] * theta[i] + scale * math.sqrt(c[i] / batch) * z[i]

    noise = GradientNoise(gradient, lambda dim, batch: dim, {"scale": 1.0}, name="additive")
    a = simulate(MODEL, heavy_ball_rule(0.1, 0.8), 8, 60, 32, noise=noise, **KW)
    b = simulate(MODEL, HeavyBall(0.1, 0.8), 8, 60, 32, **KW)
    # the same normals (the first d of the step), the same gradient up to rounding
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10)


def test_least_squares_noise_in_float32_follows_the_recurrence():
    """The user noise compiled for a float32 state (normals and gradient in float32)."""
    res = simulate(LS, SGD(LS_LR), LS_B, 200, 2000, seed=8, record="log", n_records=12,
                   noise=LeastSquaresNoise(LS_S2), dtype="float32", progress=False)
    z = (res.mean - ls_risk(res.steps)) / res.sem
    assert np.abs(z[1:]).max() < threshold(res.steps.size - 1), z
    wrong = (res.mean - ls_risk(res.steps, missing_factor=True)) / res.sem
    assert np.abs(wrong[1:]).max() > threshold(res.steps.size - 1)
