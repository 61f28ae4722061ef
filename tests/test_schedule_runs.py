"""Schedules reach the Monte Carlo kernels as runs of constant hyperparameters.

The lowering merges the learning-rate and batch-size runs (:func:`merged_runs`); the step
kernels, the generated user-rule kernels, the dense engine and the skip-ahead transitions walk
the runs. Checked here: the runs are the per-update values, a schedule split into more runs than
it needs gives the same bits everywhere, a constant schedule over 10^12 updates costs one run,
and the scalar SGD transitions give the general kernel's bits (overflow included).
"""

from dataclasses import dataclass

import numpy as np
import pytest
from scipy import stats

from nqm_mc import NQM, SGD, HeavyBall, UpdateRule, loss_at, simulate
from nqm_mc.montecarlo import _skip_kernels as SK
from nqm_mc.montecarlo.lowering import hyper_runs, lower, merged_runs, record_steps
from nqm_mc.spec import schedules as S
from nqm_mc.spec.noise import Gaussian
from nqm_mc.spec.schedules import Pieces, checked_values

MODEL = NQM(np.array([1.0, 0.3, 0.05, 0.01]), np.array([0.5, 1.0, 1.5, 2.0]),
            multiplicities=np.array([3, 5, 2, 6]))
KW = {"seed": 5, "record": "all", "keep_paths": 3, "progress": False}


def _expand(start, values, n):
    return np.repeat(values, np.diff(np.append(start, n)))


def _lowered(opt, batch, n, dtype="float64"):
    steps = record_steps(n, "log", 10)
    inp, _ = lower(MODEL, opt, batch, n, dtype, Gaussian(), 0, steps, None, 4)
    return inp.schedule


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_lowered_runs_are_the_per_update_values(dtype):
    lr = S.Warmup(S.StepDecay(0.4, 0.5, 30), 7)
    batch = S.PiecewiseConstantBatch([12, 50], [4, 16, 64])
    n = 120
    sch = _lowered(SGD(lr), batch, n, dtype)
    ft = np.float32 if dtype == "float32" else np.float64
    assert sch.start[0] == 0 and np.all(np.diff(sch.start) > 0)
    rates = checked_values(lr, n)
    sizes = checked_values(batch, n, "batch_size", "simulate")
    assert np.array_equal(_expand(sch.start, sch.learning_rate, n), rates.astype(ft))
    assert np.array_equal(_expand(sch.start, sch.batch, n), sizes.astype(np.int64))
    assert np.array_equal(_expand(sch.start, sch.inv_sqrt_batch, n),
                          (1.0 / np.sqrt(sizes)).astype(ft))
    # a run starts exactly where the rate or the batch size changes
    change = np.flatnonzero((np.diff(rates) != 0) | (np.diff(sizes) != 0)) + 1
    assert np.array_equal(sch.start, np.r_[0, change])


def test_constant_schedule_over_a_trillion_updates_is_one_run():
    sch = _lowered(SGD(0.1), 8, 10 ** 12)
    assert sch.start.tolist() == [0] and sch.learning_rate.size == 1
    start, (lr, isb) = hyper_runs(SGD(S.CosineDecay(0.5, 1000, 0.01)), 4, 10 ** 12)
    assert start.size == 1001 and lr[-1] == 0.01 and isb.tolist() == [0.5] * 1001


def test_merged_runs_merge_equal_neighbours():
    start, (a, b) = merged_runs([(np.array([0, 3, 5]), np.array([1.0, 1.0, 2.0])),
                                 (np.array([0, 4]), np.array([7, 7]))])
    assert start.tolist() == [0, 5] and a.tolist() == [1.0, 2.0] and b.tolist() == [7, 7]


@dataclass(frozen=True)
class _SplitRuns(S.Schedule):
    """The schedule ``inner`` with each of its runs cut in two (neighbours of equal value),
    and no ``values``: the engines must take its runs as they come."""

    inner: S.Schedule

    def values(self, n_steps):
        return checked_values(self.inner, n_steps)

    def pieces(self, n_steps):
        p = S.checked_pieces(self.inner, n_steps)
        mid = p.starts + np.maximum(p.lengths // 2, 1)
        cut = mid < np.append(p.starts[1:], n_steps)
        starts = np.sort(np.r_[p.starts, mid[cut]])
        return Pieces(starts, p.at(starts), n_steps)


SPLIT = [SGD(S.StepDecay(0.4, 0.5, 25)), HeavyBall(S.Warmup(S.CosineDecay(0.05, 60), 9), 0.9,
                                                   ema=0.9)]


@pytest.mark.parametrize("opt", SPLIT, ids=["sgd_step_decay", "hb_warmup_cosine_ema"])
@pytest.mark.parametrize("method", ["step", "skip"])
def test_runs_cut_in_two_give_the_same_bits(opt, method):
    split = opt.with_(learning_rate=_SplitRuns(opt.learning_rate))
    assert len(split.learning_rate.pieces(90)) > len(opt.learning_rate.pieces(90))
    a = simulate(MODEL, opt, 8, 90, 24, method=method, **KW)
    b = simulate(MODEL, split, 8, 90, 24, method=method, **KW)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.paths, b.paths)


def _scaled_sgd(theta, g, lr, alpha):
    return theta - alpha * g


def test_user_rule_hyper_schedule_walks_its_runs():
    """A hyperparameter schedule of a user rule (its own runs, apart from the learning
    rate's) gives the bits of the built-in optimizer with that schedule as learning rate."""
    sched = S.Warmup(S.StepDecay(0.4, 0.5, 20), 5)
    rule = UpdateRule(_scaled_sgd, S.CosineDecay(1.0, 70), hyper={"alpha": sched})
    a = simulate(MODEL, SGD(sched), S.PiecewiseConstantBatch([33], [8, 32]), 70, 24, **KW)
    b = simulate(MODEL, rule, S.PiecewiseConstantBatch([33], [8, 32]), 70, 24, **KW)
    assert np.array_equal(a.mean, b.mean) and np.array_equal(a.paths, b.paths)


def test_skip_over_four_billion_constant_updates_against_the_exact_law():
    """A constant schedule over 4e9 updates (the most simulate counts; 32 GB as per-update
    arrays): one run, transitions by doubling; the mean at every record is the exact one
    (z-test, Bonferroni over the records), and a mean 5 % off is caught."""
    T = 4 * 10 ** 9
    steps = np.array([0, 10, 1000, 10 ** 6, 10 ** 9, T])
    res = simulate(MODEL, SGD(0.5), 4, T, 4000, seed=11, record=steps, method="skip",
                   progress=False)
    early = loss_at(MODEL, SGD(0.5), 4, steps[:4])  # the last records are stationary
    mean = np.r_[early[0], [early[0][-1]] * 2]
    var = np.r_[early[1], [early[1][-1]] * 2]
    z = (res.mean - mean) / np.sqrt(var / res.n_finite)
    z_star = stats.norm.isf(1e-5 / (2 * steps.size))
    assert np.all(np.abs(z[1:]) < z_star), z
    assert np.max(np.abs((res.mean - 1.05 * mean) / np.sqrt(var / res.n_finite))[1:]) > z_star


def _sgd_general(a_g, b_g, lr_r, isb_r, seg, grid):
    K = grid.size - 1
    phi, fac = np.zeros((K, 1, 1, a_g.size)), np.zeros((K, 1, 1, a_g.size))
    with np.errstate(over="ignore", invalid="ignore"):
        SK.build_transitions(0, False, a_g, b_g, 0.0, 0.0, lr_r, isb_r, seg, grid, phi, fac)
    return phi, fac


@pytest.mark.parametrize("growth", [1.0, 3.0], ids=["converging", "overflowing"])
def test_scalar_sgd_transitions_give_the_general_kernels_bits(growth):
    """Runs of one update and of many, cut by the record grid, over more groups than a chunk;
    with rates that make the covariance overflow (growth 3), where inf must appear at the
    same interval in both."""
    G = SK.GROUP_CHUNK + 9
    a_g = np.geomspace(1.0, 1e-3, G)
    b_g = np.geomspace(0.5, 2.0, G)
    rng = np.random.default_rng(0)
    lengths = np.r_[np.ones(40, np.int64), rng.integers(1, 300, 40)]
    rng.shuffle(lengths)
    seg = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    n = int(seg[-1])
    lr_r = growth * rng.uniform(0.05, 1.9, lengths.size)
    isb_r = 1.0 / np.sqrt(rng.integers(1, 64, lengths.size).astype(float))
    grid = np.unique(np.r_[0, rng.integers(1, n, 30), n]).astype(np.int64)
    phi, fac = np.zeros((grid.size - 1, 1, 1, G)), np.zeros((grid.size - 1, 1, 1, G))
    with np.errstate(over="ignore", invalid="ignore"):
        SK.build_transitions_sgd(a_g, b_g, lr_r, isb_r, seg, grid, phi, fac)
    ref_phi, ref_fac = _sgd_general(a_g, b_g, lr_r, isb_r, seg, grid)
    assert np.array_equal(phi, ref_phi, equal_nan=True)
    assert np.array_equal(fac, ref_fac, equal_nan=True)
    if growth > 1:
        assert np.isinf(fac).any() and np.isfinite(fac[0]).all()
    # power: one rate 1e-12 relative off changes the bits
    lr_w = lr_r.copy()
    lr_w[lengths.size // 2] *= 1 + 1e-12
    assert not np.array_equal(_sgd_general(a_g, b_g, lr_w, isb_r, seg, grid)[1], ref_fac,
                              equal_nan=True)


@pytest.mark.parametrize("opt,dtype", [(SGD(S.CosineDecay(0.5, 60)), "float64"),
                                       (HeavyBall(0.05, 0.9, ema=0.9), "float32")],
                         ids=["sgd_64", "hb_ema_32"])
def test_background_compile_has_the_signature_the_blocks_call(opt, dtype):
    """The skip-ahead sampler is compiled in the background, while the transitions are built,
    for the argument types the blocks pass (else it would compile twice)."""
    import numba

    from nqm_mc.montecarlo import _interrupt
    from nqm_mc.montecarlo._statistics import band_runs
    from nqm_mc.montecarlo.driver import _job
    from nqm_mc.montecarlo.lowering import new_statistics
    from nqm_mc.montecarlo.skip import sampler_signature
    job = _job(MODEL, opt, 8, 60, 40, 0, "log", 10, None, 2, dtype, None, 16, 4, None, "skip")
    inp, sk = job.plan.inputs, job.plan.skip
    run_start, run_band = band_runs(inp.directions.band)
    out = new_statistics(2, job.steps.size, 4, 32, 2)
    real = (inp.rule, inp.directions, inp.recording, inp.stream, sk.group, sk.grid, sk.phi,
            sk.fac, sk.state, 0, 0, 2, 1, 16, 40, 2, run_start, run_band, out,
            _interrupt.new_flag())
    assert tuple(numba.typeof(x) for x in real) == sampler_signature(inp, sk.state)
    assert len(sk.state) == sk.phi.shape[1]
    # the planted mismatch is seen: another state size is another signature
    assert sampler_signature(inp, sk.state + (0,)) != sampler_signature(inp, sk.state)
