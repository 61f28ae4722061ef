"""The exact engine reads schedules as runs of constant hyperparameters.

- Every step recorded: the run-based curve equals, bit for bit, a per-step recurrence written
  here in NumPy from the per-step arrays ``checked_values`` gives (the operations and the
  summation order of the engine's one-group step; no jumps, no runs), for every schedule kind,
  every optimizer family and a user schedule with only ``values()``.
- Sparse records: gaps inside runs are jumped; the curve agrees with the stepped one to 1e-12
  relative (mean) and the user schedule gives the built-in's bits.
- No per-step arrays: a constant rate to step 10^12 and a step decay over 10^10 steps cost
  milliseconds and no memory per step.
- The blocked, parallel stepping gives the same bits for 1 and 2 threads in fresh processes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import tracemalloc

import numpy as np
import pytest

from nqm_mc import NQM, SGD, HeavyBall, Nesterov, expected_loss
from nqm_mc.exact.lowering import joint_runs, lower
from nqm_mc.spec import schedules as S
from nqm_mc.spec.schedules import Pieces, checked_pieces, checked_values

T = 300


@pytest.fixture(scope="module")
def model():
    """Seven groups (so 7 chunks of one group) with a deterministic and a random start."""
    h = np.array([1.0, 0.6, 0.3, 0.1, 0.05, 0.01, 0.002])
    return NQM(h, 0.7 * h, multiplicities=[1, 2, 3, 1, 4, 1, 2],
               initial_mean=[0.5, 0.0, -1.0, 2.0, 0.3, -0.2, 1.0],
               initial_variance=[1.0, 0.5, 0.0, 2.0, 0.1, 0.0, 0.4])


class ByValues(S.Schedule):
    """A user's schedule with only values(): the default pieces run-length encode them."""

    def __init__(self, inner: S.Schedule) -> None:
        self.inner = inner

    def values(self, n_steps: int) -> np.ndarray:
        return np.array(self.inner.values(n_steps), dtype=np.float64)


SCHEDULES = {
    "constant": S.Constant(0.3),
    "piecewise": S.PiecewiseConstant([40, 41, 200], [0.3, 0.1, 0.2, 0.05]),
    "step_decay": S.StepDecay(0.4, 0.5, 70),
    "exponential": S.ExponentialDecay(0.4, 0.5, 60),
    "linear": S.LinearDecay(0.4, 0.01, 150),
    "cosine": S.CosineDecay(0.4, 250, 0.01),
    "warmup_cosine": S.Warmup(S.CosineDecay(0.4, 200, 0.01), 30),
    "warmup_step": S.Warmup(S.StepDecay(0.4, 0.5, 90), 25),
    "user_values": ByValues(S.CosineDecay(0.4, 120, 0.01)),
    "user_values_steps": ByValues(S.StepDecay(0.4, 0.5, 70)),
}
BATCHES = {"const": 8, "pieces": S.PiecewiseConstantBatch([20, 150, 151], [2, 16, 4, 32])}
FAMILIES = {
    "sgd": lambda lr: SGD(lr),
    "sgd_ema_p": lambda lr: SGD(lr, ema=0.9, preconditioning=0.5),
    "hb": lambda lr: HeavyBall(lr, 0.8),
    "hb_ema": lambda lr: HeavyBall(lr, 0.8, ema=0.95),
    "nesterov_ema_p": lambda lr: Nesterov(lr, 0.7, ema=0.9, preconditioning=0.25),
}


def _form(kind, has_ema, h, hp, lr, beta, gamma):
    """(A, b) per group as NumPy arrays (G, 3, 3), (G, 3): fill_linear_form's operations."""
    G = h.size
    A = np.zeros((G, 3, 3))
    b = np.zeros((G, 3))
    heff = h * hp
    x = lr * heff
    if kind == "sgd":
        A[:, 0, 0] = 1.0 - x
        b[:, 0] = -lr * hp
        k = 1
    else:
        if kind == "hb":
            A[:, 0, 0] = 1.0 - x
            A[:, 0, 1] = -lr * beta
            b[:, 0] = -lr * hp
        else:
            A[:, 0, 0] = 1.0 - (1.0 + beta) * x
            A[:, 0, 1] = -lr * beta * beta
            b[:, 0] = -lr * (1.0 + beta) * hp
        A[:, 1, 0] = heff
        A[:, 1, 1] = beta
        b[:, 1] = hp
        k = 2
    if has_ema:
        for j in range(k):
            A[:, k, j] = (1.0 - gamma) * A[:, 0, j]
        A[:, k, k] = gamma
        b[:, k] = (1.0 - gamma) * b[:, 0]
        k += 1
    return k, A, b


def per_step_curve(model, opt, batch, n_steps):
    """E[L], Var[L], E[L_theta] at every step 0..n_steps by the per-step recurrence.

    Written from the per-step arrays (checked_values), stepping every update; the operations,
    their order and the summation order over groups (chunks of groups summed in order, then
    the chunks) are those the engine documents, so the result must be its bits.
    """
    kind = {"SGD": "sgd", "HeavyBall": "hb", "Nesterov": "nesterov"}[type(opt).__name__]
    has_ema = opt.ema is not None
    beta = float(getattr(opt, "momentum", 0.0))
    gamma = float(opt.ema) if has_ema else 0.0
    h = model.curvatures
    hp = h ** (-opt.preconditioning)
    c, n = model.noise_variances, model.multiplicities.astype(np.float64)
    mu0, v0 = model.initial_mean, model.initial_variance
    Tn = max(n_steps, 1)
    lr_t = checked_values(opt.learning_rate, Tn)
    b_t = checked_values(S.as_batch_schedule(batch), Tn, "batch_size")
    G = h.size
    k, A, b = _form(kind, has_ema, h, hp, lr_t[0], beta, gamma)
    ro = k - 1 if has_ema else 0
    mu = np.zeros((G, 3))
    Sm = np.zeros((G, 3, 3))
    mu[:, 0] = mu0
    Sm[:, 0, 0] = mu0 * mu0 + v0
    if has_ema:
        mu[:, ro] = mu0
        Sm[:, 0, ro] = Sm[:, 0, 0]
        Sm[:, ro, 0] = Sm[:, 0, 0]
        Sm[:, ro, ro] = Sm[:, 0, 0]
    nc = min(G, 64)
    # the chunk of each group: the engine's chunks are groups ch G // nc .. (ch + 1) G // nc - 1
    chunk = np.searchsorted([ch * G // nc for ch in range(nc)], np.arange(G), side="right") - 1
    out = np.zeros((3, nc, n_steps + 1))
    for t in range(n_steps + 1):
        m1 = mu[:, ro].copy()
        m2 = Sm[:, ro, ro].copy()
        var = np.maximum(m2 - m1 * m1, 0.0)
        vals = (0.5 * n * h * m2, n * h * h * (0.5 * var * var + m1 * m1 * var),
                0.5 * n * h * Sm[:, 0, 0])
        for g in range(G):  # in group order, as the kernel adds them
            for i in range(3):
                out[i, chunk[g], t] += vals[i][g]
        if t == n_steps:
            break
        if t > 0 and lr_t[t] != lr_t[t - 1]:
            k, A, b = _form(kind, has_ema, h, hp, lr_t[t], beta, gamma)
        q = c / b_t[t]
        if k == 2:  # _sandwich2_inplace, then the noise
            m00, m01, m10, m11 = A[:, 0, 0], A[:, 0, 1], A[:, 1, 0], A[:, 1, 1]
            x00, x01, x10, x11 = Sm[:, 0, 0], Sm[:, 0, 1], Sm[:, 1, 0], Sm[:, 1, 1]
            t00 = m00 * x00 + m01 * x10
            t01 = m00 * x01 + m01 * x11
            t10 = m10 * x00 + m11 * x10
            t11 = m10 * x01 + m11 * x11
            new = [[t00 * m00 + t01 * m01, t00 * m10 + t01 * m11],
                   [t10 * m00 + t11 * m01, t10 * m10 + t11 * m11]]
            u0 = m00 * mu[:, 0] + m01 * mu[:, 1]
            u1 = m10 * mu[:, 0] + m11 * mu[:, 1]
            for i in range(2):
                for j in range(2):
                    Sm[:, i, j] = new[i][j] + q * b[:, i] * b[:, j]
            mu[:, 0], mu[:, 1] = u0, u1
            continue
        tmp = np.zeros((G, k, k))
        Tm = np.zeros((G, k, k))
        nm = np.zeros((G, k))
        for i in range(k):
            for j in range(k):
                s = np.zeros(G)
                for m in range(k):
                    s = s + A[:, i, m] * Sm[:, m, j]
                tmp[:, i, j] = s
        for i in range(k):
            for j in range(k):
                s = np.zeros(G)
                for m in range(k):
                    s = s + tmp[:, i, m] * A[:, j, m]
                Tm[:, i, j] = s
            s = np.zeros(G)
            for j in range(k):
                s = s + A[:, i, j] * mu[:, j]
            nm[:, i] = s
        for i in range(k):
            mu[:, i] = nm[:, i]
            for j in range(k):
                Sm[:, i, j] = Tm[:, i, j] + q * b[:, i] * b[:, j]
    return out.sum(axis=1)


def _bits_equal(a, b):
    return np.array_equal(np.asarray(a).view(np.uint64), np.asarray(b).view(np.uint64))


@pytest.mark.parametrize("family", list(FAMILIES))
@pytest.mark.parametrize("sched", list(SCHEDULES))
def test_every_step_recorded_gives_the_per_step_bits(model, sched, family):
    """Dense records (nothing jumped): the run-based path gives the per-step path's bits, for
    every schedule kind (built-in and a user's values()), batch schedules and every family."""
    opt = FAMILIES[family](SCHEDULES[sched])
    for bname, batch in BATCHES.items():
        ref = per_step_curve(model, opt, batch, T)
        got = expected_loss(model, opt, batch, T)
        for name, r, g in zip(("mean", "variance", "mean_theta"), ref,
                              (got.mean, got.variance, got.mean_theta), strict=True):
            assert _bits_equal(r, g), (sched, family, bname, name,
                                       np.max(np.abs(r / g - 1)))


def test_the_reference_catches_a_wrong_step(model):
    """Power check: the bitwise comparison tells a rate off in the 13th digit at one step."""
    base = np.asarray(S.CosineDecay(0.4, 250, 0.01).values(T))

    class Nudged(S.Schedule):
        def values(self, n_steps):
            v = base[:n_steps].copy()
            v[min(100, n_steps - 1)] *= 1 + 1e-13
            return v

    ref = per_step_curve(model, SGD(Nudged()), 8, T)
    got = expected_loss(model, SGD(S.CosineDecay(0.4, 250, 0.01)), 8, T)
    assert _bits_equal(ref[0][:101], got.mean[:101])
    assert not _bits_equal(ref[0][101:], got.mean[101:])


SPARSE_REC = np.unique(np.r_[0, 1, 63, 64, 65, 69, 70, 71, 139, 140, 141, 255, 299, T,
                             np.geomspace(1, T, 12).round().astype(np.int64)])


@pytest.mark.parametrize("sched", ["constant", "piecewise", "step_decay", "warmup_step",
                                   "cosine", "user_values_steps"])
@pytest.mark.parametrize("family", ["sgd", "hb_ema", "nesterov_ema_p"])
def test_sparse_records_jump_inside_runs(model, sched, family):
    """Sparse records: the long gaps inside runs are jumped; the values agree with the stepped
    curve to 1e-12 relative (mean and E[L_theta]) and 1e-10 (variance, a difference)."""
    opt = FAMILIES[family](SCHEDULES[sched])
    batch = BATCHES["pieces"]
    dense = expected_loss(model, opt, batch, T)
    sparse = expected_loss(model, opt, batch, record=SPARSE_REC)
    np.testing.assert_allclose(sparse.mean, dense.mean[SPARSE_REC], rtol=1e-12, atol=0)
    np.testing.assert_allclose(sparse.mean_theta, dense.mean_theta[SPARSE_REC], rtol=1e-12,
                               atol=0)
    np.testing.assert_allclose(sparse.variance, dense.variance[SPARSE_REC], rtol=1e-10,
                               atol=1e-300)


def test_user_values_give_the_builtin_bits_with_jumps(model):
    """A user schedule with only values() is run-length encoded into the built-in's runs, so
    with sparse records it jumps the same gaps and gives the same bits."""
    rec = np.array([0, 5, 100, 1000, 5000, 20000])
    for inner in (S.StepDecay(0.4, 0.5, 700), S.PiecewiseConstant([3000], [0.3, 0.05])):
        for fam in ("sgd", "hb_ema"):
            a = expected_loss(model, FAMILIES[fam](inner), 8, record=rec)
            b = expected_loss(model, FAMILIES[fam](ByValues(inner)), 8, record=rec)
            assert _bits_equal(a.mean, b.mean) and _bits_equal(a.variance, b.variance)


def test_joint_runs_merge_both_schedules():
    lr = Pieces(np.array([0, 10, 20]), np.array([1.0, 0.5, 0.5]), 30)
    batch = Pieces(np.array([0, 15]), np.array([4.0, 8.0]), 30)
    starts, lv, bv = joint_runs(lr, batch)
    # the equal neighbours at 20 are one run; 10 and 15 start runs
    assert starts.tolist() == [0, 10, 15]
    assert lv.tolist() == [1.0, 0.5, 0.5] and bv.tolist() == [4.0, 4.0, 8.0]
    # expanding the merged runs gives the per-step arrays
    ends = np.append(starts[1:], 30)
    assert np.array_equal(np.repeat(lv, ends - starts), np.repeat(lr.values, lr.lengths))
    assert np.array_equal(np.repeat(bv, ends - starts), np.repeat(batch.values, batch.lengths))


def test_lowering_has_no_per_step_arrays():
    m = NQM.paper(100)
    form = lower(m, HeavyBall(S.StepDecay(0.1, 0.5, 10 ** 8), 0.9), 16, 10 ** 10)
    assert form.starts.size == form.lr.size == form.batch.size == 100
    assert form.n_steps == 10 ** 10
    p = checked_pieces(S.StepDecay(0.1, 0.5, 10 ** 8), 10 ** 10)
    assert np.array_equal(form.starts, p.starts) and np.array_equal(form.lr, p.values)


def test_far_horizons_cost_no_memory_per_step():
    """A constant rate to step 10^12, and a step decay over 10^10 steps with 100 log-spaced
    records, in well under a second and without memory per step."""
    m = NQM.paper(200)
    expected_loss(m, SGD(0.01), 16, record=[10])  # compiled outside the measurement
    tracemalloc.start()
    t0 = time.perf_counter()
    c = expected_loss(m, SGD(0.01), 16, record=[10 ** 12])
    rec = np.unique(np.geomspace(1, 10 ** 10, 100).astype(np.int64))
    d = expected_loss(m, HeavyBall(S.StepDecay(0.1, 0.5, 10 ** 9), 0.9, ema=0.99), 16,
                      record=rec)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5e6, peak
    assert elapsed < 5.0  # generous on a loaded machine; milliseconds when idle
    assert np.isfinite(c.mean).all() and np.isfinite(d.mean).all()
    # the constant rate has settled at the steady state; the decayed one below it
    from nqm_mc import steady_state
    assert c.mean[0] == pytest.approx(steady_state(m, SGD(0.01), 16).loss, rel=1e-9)
    assert d.mean[-1] < d.mean[50]


_THREADS = textwrap.dedent("""
    import hashlib, json
    import numpy as np
    from nqm_mc import NQM, SGD, HeavyBall, Nesterov, expected_loss
    from nqm_mc.spec import schedules as S
    m = NQM.paper(1000)  # 1000 groups: 64 chunks, blocks of groups, several tasks per thread
    out = {}
    rec = np.unique(np.geomspace(1, 3000, 30).astype(np.int64))
    for name, opt in [("sgd_cosine", SGD(S.CosineDecay(0.5, 2000, 0.005))),
                      ("hb_ema_warmup", HeavyBall(S.Warmup(S.CosineDecay(0.2, 1500), 100), 0.9,
                                                  ema=0.99)),
                      ("nesterov_steps", Nesterov(S.StepDecay(0.2, 0.5, 400), 0.8))]:
        c = expected_loss(m, opt, S.PiecewiseConstantBatch([700], [8, 64]), record=rec,
                          group_moments=True)
        h = hashlib.sha256()
        for a in (c.mean, c.variance, c.mean_theta, c.group_mean, c.group_second_moment):
            h.update(np.ascontiguousarray(a).tobytes())
        out[name] = h.hexdigest()
    print(json.dumps(out))
""")


def test_same_bits_for_one_and_two_threads():
    digests = []
    for n in (1, 2):
        env = {**os.environ, "NUMBA_NUM_THREADS": str(n)}
        proc = subprocess.run([sys.executable, "-c", _THREADS], env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-2000:]
        digests.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert digests[0] == digests[1]
    assert len(set(digests[0].values())) == 3


def test_joint_covariance_jumps_inside_runs(model):
    """loss_covariance on piecewise-constant schedules jumps the long gaps between the steps
    of its pairs; naming every step in between (so that everything is stepped) gives the same
    covariances to 1e-10 relative, and a rate changed by 1 % is told apart."""
    from nqm_mc import loss_covariance
    sched = S.PiecewiseConstant([150, 700], [0.3, 0.1, 0.02])
    pairs = np.array([(5, 600), (100, 1200), (149, 150), (700, 1400), (1000, 1001)])
    for opt in (SGD(sched), HeavyBall(sched, 0.8, ema=0.95)):
        batch = S.PiecewiseConstantBatch([400], [4, 32])
        sparse = loss_covariance(model, opt, batch, pairs)
        every = np.stack([np.arange(1401), np.arange(1401)], axis=1)
        stepped = loss_covariance(model, opt, batch, np.concatenate([pairs, every]))
        np.testing.assert_allclose(sparse.covariance, stepped.covariance[:len(pairs)],
                                   rtol=1e-10, atol=0)
        np.testing.assert_allclose(sparse.mean, stepped.mean[:len(pairs)], rtol=1e-12, atol=0)
        wrong = loss_covariance(model, type(opt)(S.PiecewiseConstant([150, 700],
                                                                      [0.3, 0.1, 0.0202]),
                                                 **({"momentum": 0.8, "ema": 0.95}
                                                    if isinstance(opt, HeavyBall) else {})),
                                batch, pairs)
        assert np.max(np.abs(wrong.covariance[3:] / sparse.covariance[3:] - 1)) > 1e-4


def test_dense_engine_follows_the_runs():
    """The dense engine reads the runs too: a step decay over 10^9 steps is not expanded."""
    from nqm_mc.spec.rotated import RotatedNQM, expected_loss_dense
    rot = RotatedNQM.from_nqm(NQM.paper(6), rotate="both", seed=3)
    opt = SGD(S.StepDecay(0.3, 0.5, 10 ** 8))
    tracemalloc.start()
    steps, mean, _ = expected_loss_dense(rot, opt, 8, record=[0, 5, 40])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5e6
    ref = expected_loss_dense(rot, SGD(0.3), 8, record=[0, 5, 40])[1]
    assert _bits_equal(mean, ref)


@pytest.mark.parametrize("opt", [SGD(S.CosineDecay(0.5, 10 ** 13)),
                                 SGD(S.LinearDecay(0.5, 0.01, 10 ** 13)),
                                 SGD(S.Warmup(0.5, 10 ** 13)),
                                 SGD(ByValues(S.Constant(0.5)))])
def test_a_schedule_changing_every_step_too_far_is_refused_by_name(opt):
    """Runs of one update each cost memory per update: beyond physical memory the call is
    refused with a ParameterError naming the schedule, before allocating."""
    from nqm_mc import ParameterError
    with pytest.raises(ParameterError, match="Decay|Warmup|ByValues|GB"):
        expected_loss(NQM.paper(10), opt, 16, record=[10 ** 13])
