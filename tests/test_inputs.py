"""Every input path of the public API is checked at the boundary, before any work: bad values
raise ParameterError naming the parameter and the value received."""

import math
import pathlib
import re

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
    simulate,
    stability,
    steady_state,
    steps_to_target,
    steps_to_target_batch,
)
from nqm_mc.spec._checks import check_memory, check_steps
from nqm_mc.spec.noise import FiniteData, StudentT
from nqm_mc.spec.optimizers import Adam
from nqm_mc.spec.schedules import (
    BatchSchedule,
    ConstantBatch,
    CosineDecay,
    PiecewiseConstant,
    PiecewiseConstantBatch,
    Schedule,
    StepDecay,
    Warmup,
    checked_values,
)

M = NQM.paper(20)


class _Values(Schedule):
    """A user's learning-rate schedule returning whatever ``fn(n)`` gives."""

    def __init__(self, fn):
        self.fn = fn

    def values(self, n):
        return self.fn(n)

    def __repr__(self):
        return "UserSchedule()"


class _Batches(BatchSchedule):
    def __init__(self, fn):
        self.fn = fn

    def values(self, n):
        return self.fn(n)

    def __repr__(self):
        return "UserBatches()"


def _with(n, i, value, base=0.1):
    v = np.full(n, base)
    v[min(i, n - 1)] = value
    return v


BAD_LR = [
    (lambda n: np.full(max(n - 3, 0), 0.1), "shape"),  # too few values: segfaulted
    (lambda n: np.full(n + 5, 0.1), "shape"),
    (lambda n: np.full((n, 1), 0.1), "shape"),
    (lambda n: 0.1, "shape"),
    (lambda n: _with(n, 3, -0.1), "-0.1 at index 3"),
    (lambda n: _with(n, 4, math.nan), "nan at index 4"),
    (lambda n: _with(n, 0, math.inf), "inf at index 0"),
    (lambda n: ["a"] * n, "UserSchedule"),
    (lambda n: None, "UserSchedule"),
]
BAD_BATCH = [
    (lambda n: np.full(1, 4.0), "shape"),
    (lambda n: _with(n, 2, 0.0, 4.0), "0.0 at index 2"),
    (lambda n: _with(n, 5, 2.5, 4.0), "2.5 at index 5"),
    (lambda n: _with(n, 1, 1e19, 4.0), "1e\\+19 at index 1"),
    (lambda n: _with(n, 3, math.nan, 4.0), "nan at index 3"),
]


@pytest.mark.parametrize("fn,match", BAD_LR)
def test_user_learning_rate_schedule_output_is_checked(fn, match):
    opt = SGD(_Values(fn))
    for call in (lambda: expected_loss(M, opt, 4, 10),
                 lambda: simulate(M, opt, 4, 10, 16, progress=False)):
        with pytest.raises(ParameterError, match=match):
            call()
    with pytest.raises(ParameterError, match="'schedule' parameter of Warmup.*UserSchedule"):
        SGD(Warmup(_Values(fn), 2)).learning_rate(8)


@pytest.mark.parametrize("fn,match", BAD_BATCH)
def test_user_batch_schedule_output_is_checked(fn, match):
    b = _Batches(fn)
    for call in (lambda: expected_loss(M, SGD(0.1), b, 10),
                 lambda: simulate(M, SGD(0.1), b, 10, 16, progress=False),
                 lambda: simulate(M, SGD(0.1), b, 10, 16, progress=False,
                                  noise=FiniteData(64))):
        with pytest.raises(ParameterError, match=f"'batch_size'.*UserBatches.*{match}"):
            call()


def test_schedule_error_names_parameter_owner_and_first_bad_index():
    opt = SGD(_Values(lambda n: _with(n, 7, -2.0)))
    with pytest.raises(ParameterError) as err:
        expected_loss(M, opt, 4, 10)
    msg = str(err.value)
    assert "'learning_rate' parameter of expected_loss" in msg
    assert "UserSchedule()" in msg and "values(10)" in msg and "-2.0 at index 7" in msg


def test_constant_user_schedule_checked_when_an_optimizer_is_built():
    class Bad(Schedule):
        is_constant = True

        def values(self, n):
            return np.full(n, -1.0)

    with pytest.raises(ParameterError, match="learning_rate"):
        SGD(Bad())


def test_schedules_may_reach_zero_learning_rate():
    """Rates >= 0 are allowed at individual steps (0 skips an update, as a cosine decay to 0
    does at its end); a constant rate must be > 0."""
    cur = expected_loss(M, SGD(CosineDecay(0.5, 5)), 4, 10)
    assert np.all(np.isfinite(cur.mean))
    assert cur.mean[-1] == cur.mean[-2]  # rate 0 after step 5: no update, no noise
    with pytest.raises(ParameterError, match="learning_rate"):
        SGD(0.0)


def test_every_values_call_goes_through_checked_values():
    """Grep guard: the engines call ``values(`` only inside checked_values (schedule_base)."""
    root = pathlib.Path(__file__).parents[1] / "nqm_mc"
    calls = []
    for path in root.rglob("*.py"):
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#")[0]
            if re.search(r"\.values\([^)]", code) and "def values" not in code and \
                    "checked_values" not in code and "``" not in code:
                calls.append(f"{path.name}:{i}: {line.strip()}")
    assert calls == ["schedule_base.py:{}: raw = schedule.values(n_steps)".format(
        next(i for i, ln in enumerate((root / "spec" / "schedule_base.py").read_text()
                                      .splitlines(), 1)
             if "raw = schedule.values(n_steps)" in ln))]


def test_checked_values_passes_good_schedules_through():
    out = checked_values(StepDecay(0.1, 0.5, 3), 7)
    assert out.dtype == np.float64 and out.shape == (7,)
    b = checked_values(PiecewiseConstantBatch([2], [4, 8]), 4, "batch_size", "simulate")
    assert b.tolist() == [4, 4, 8, 8]
    with pytest.raises(ParameterError, match="must be a schedule"):
        checked_values(0.1, 3)


# ------------------------------------------------------------------ integers in the kernels
@pytest.mark.parametrize("t", [2 ** 63, 2 ** 64, 2 ** 62 + 1, -1, [1, 2 ** 63], 1.0, True,
                               [True], "3", None, np.array([2 ** 63], np.uint64)])
def test_loss_at_refuses_steps_past_the_kernel(t):
    with pytest.raises(ParameterError, match="'t' parameter of loss_at"):
        loss_at(M, SGD(0.1), 8, t)


def test_loss_at_accepts_the_full_range_and_keeps_the_shape():
    L0 = loss_at(M, SGD(0.1), 8, 0)[0]
    Lbig = loss_at(M, SGD(0.1), 8, 2 ** 62)[0]
    assert Lbig < L0  # not the t = 0 loss (2^63 wrapped to it before)
    out = loss_at(M, SGD(0.1), 8, np.array([[0, 1], [2, 2 ** 62]], np.uint64))
    assert out[0].shape == (2, 2)
    assert out[0][0, 0] == pytest.approx(L0, rel=1e-14)
    assert out[0][1, 1] == pytest.approx(Lbig, rel=1e-14)
    assert loss_at(M, SGD(0.1), 8, [])[0].shape == (0,)


@pytest.mark.parametrize("call,name", [
    (lambda: simulate(M, SGD(0.1), 4, 10, 16, block_size=2 ** 40), "block_size"),
    (lambda: simulate(M, SGD(0.1), 4, 10, 16, n_bands=10 ** 6), "n_bands"),
    (lambda: simulate(M, SGD(0.1), 4, 10, 16, seed=2 ** 64), "seed"),
    (lambda: simulate(M, SGD(0.1), 4, 2 ** 32, 16), "n_steps"),
    (lambda: simulate(M, SGD(0.1), 4, 10, 2 ** 32), "n_runs"),
    (lambda: simulate(M, SGD(0.1), 4, 10, 16, record=2 ** 63), "record"),
    (lambda: simulate(M, SGD(0.1), 4, 10, 16, n_records=2 ** 40), "n_records"),
    (lambda: expected_loss(M, SGD(0.1), 4, 2 ** 62 + 1), "n_steps"),
    (lambda: expected_loss(M, SGD(0.1), 4, 10, record_every=2 ** 63), "record_every"),
    (lambda: steps_to_target_batch(M, SGD(0.1), 0.01, 4, [0.1], caps=2 ** 64 - 1), "caps"),
    (lambda: steps_to_target_batch(M, SGD(0.1), 0.01, 4, [0.1], caps=1e30), "caps"),
    (lambda: StepDecay(0.1, 0.5, 2 ** 70), "step_size"),
    (lambda: PiecewiseConstant([2 ** 63], [0.1, 0.2]), "boundaries\\[0\\]"),
    (lambda: NQM(M.curvatures, M.noise_variances, multiplicities=np.full(20, 1e300)),
     "multiplicities"),
    (lambda: NQM(M.curvatures, M.noise_variances, multiplicities=np.full(20, 2.0 ** 52)),
     "multiplicities"),
])
def test_integers_are_bounded_by_what_the_kernels_hold(call, name):
    with pytest.raises(ParameterError, match=f"'{name}'"):
        call()


def test_integer_bounds_elsewhere():
    from nqm_mc.spec.rotated import random_rotation
    from nqm_mc.studies.scaling import tune
    from nqm_mc.studies.schedule_opt import optimal_schedule
    with pytest.raises(ParameterError, match="'n_pieces'"):
        optimal_schedule(M, 4, 0.05, n_pieces=10 ** 9)
    with pytest.raises(ParameterError, match="'max_piece_length'"):
        optimal_schedule(M, 4, 0.05, max_piece_length=2 ** 63)
    with pytest.raises(ParameterError, match="'refine_rounds'"):
        tune(M, "sgd", [4], 0.05, refine_rounds=10 ** 9)
    with pytest.raises(ParameterError, match="'grid_size"):
        tune(M, "sgd", [4], 0.05, grid_size=(10 ** 12, 3))
    with pytest.raises(ParameterError, match="'d'"):
        random_rotation(10 ** 6, 0)
    with pytest.raises(ParameterError, match="GB"):
        NQM.paper(10 ** 15)
    with pytest.raises(ParameterError, match="'n_groups'"):
        M.curvature_groups(10 ** 12)


# ------------------------------------------------------------------ batch sizes
HUGE = [10 ** 19, 2 ** 53 + 1, 2 ** 64, 1e300, float(2 ** 60)]
BAD_TYPES = ["abc", True, False, 2.5, math.nan, math.inf, None, [4], 0, -4]


def _batch_calls(b):
    return [
        lambda: simulate(M, SGD(0.1), b, 10, 16, progress=False),
        lambda: simulate(M, SGD(0.1), batch_size=b, n_steps=10, n_runs=16,
                         noise=FiniteData(16), progress=False),
        lambda: expected_loss(M, SGD(0.1), b, 10),
        lambda: steps_to_target(M, SGD(0.1), b, 0.05),
        lambda: stability(M, SGD(0.1), b),
        lambda: steady_state(M, SGD(0.1), b),
        lambda: loss_at(M, SGD(0.1), b, 5),
        lambda: ConstantBatch(b),
        lambda: PiecewiseConstantBatch([3], [4, b]),
    ]


@pytest.mark.parametrize("b", HUGE + BAD_TYPES, ids=repr)
def test_batch_size_is_an_integer_in_range_everywhere(b):
    for call in _batch_calls(b):
        with pytest.raises(ParameterError, match="batch_size|sizes"):
            call()


@pytest.mark.parametrize("b", [10 ** 19, 2.5, "abc", True, math.nan, 0])
def test_batch_size_arrays_are_checked(b):
    from nqm_mc.studies.scaling import tune
    with pytest.raises(ParameterError, match="'batch_sizes'"):
        steps_to_target_batch(M, SGD(0.1), 0.01, [4, b], 0.1)
    with pytest.raises(ParameterError, match="'batch_sizes'"):
        tune(M, "sgd", [4, b], 0.05)


def test_batch_size_accepts_int_like_values_up_to_2_to_53():
    ref = expected_loss(M, SGD(0.1), 4, 5).mean
    for b in (4.0, np.int64(4), np.uint8(4), np.float32(4.0)):
        np.testing.assert_array_equal(expected_loss(M, SGD(0.1), b, 5).mean, ref)
    assert np.all(np.isfinite(expected_loss(M, SGD(0.1), 2 ** 53, 5).mean))
    assert np.isfinite(loss_at(M, SGD(0.1), 2 ** 53, 5)[0])
    assert stability(M, SGD(0.1), 2 ** 53).stable


# ------------------------------------------------------------------ sizes and records
def test_expected_loss_refuses_huge_outputs_before_allocating():
    with pytest.raises(ParameterError, match=r"GB.*record=") as err:
        expected_loss(M, SGD(0.1), 8, n_steps=10 ** 12)
    assert "expected_loss would need about" in str(err.value)
    # sparse records on constant hyperparameters: runs, not per-step arrays, so a far step
    # costs O(log t) (it was refused for the memory of 10^12 learning rates)
    far = expected_loss(M, SGD(0.1), 8, record=[0, 10 ** 12])
    assert far.mean[1] == pytest.approx(loss_at(M, SGD(0.1), 8, 10 ** 12)[0], rel=1e-12)


def test_expected_loss_with_zero_steps_gives_the_initial_statistics():
    cur = expected_loss(M, HeavyBall(0.1, 0.5), 8, 0)
    assert cur.steps.tolist() == [0]
    assert cur.mean[0] == pytest.approx(M.initial_loss())


@pytest.mark.parametrize("record", [[-1, 3], [2 ** 63], [1.5], [True, 2], [[1, 2]], [], "abc",
                                    [math.nan], None if False else {1: 2}, [1, "2"]])
def test_record_arrays_are_checked(record):
    with pytest.raises(ParameterError, match="'record'"):
        expected_loss(M, SGD(0.1), 4, record=record)
    with pytest.raises(ParameterError, match="'record'"):
        simulate(M, SGD(0.1), 4, 10, 16, record=record, progress=False)


def test_record_is_sorted_and_bounded_by_n_steps():
    assert expected_loss(M, SGD(0.1), 4, record=[5, 2, 2, 3.0]).steps.tolist() == [2, 3, 5]
    r = simulate(M, SGD(0.1), 4, 10, 16, record=[10, 0, 5, 5], progress=False)
    assert r.steps.tolist() == [0, 5, 10]
    with pytest.raises(ParameterError, match=r"'record'.*\[0, 10\].*11"):
        simulate(M, SGD(0.1), 4, 10, 16, record=[0, 11], progress=False)


def test_simulate_refuses_huge_records_before_allocating():
    with pytest.raises(ParameterError, match=r"simulate would need about .* GB.*record"):
        simulate(M, SGD(0.1), 4, 10 ** 7, 16, record="all", progress=False)
    with pytest.raises(ParameterError, match="GB"):
        simulate(M, SGD(0.1), 4, 10 ** 7, 2 ** 20, record=1, keep_paths=2 ** 20,
                 progress=False)
    with pytest.raises(ParameterError, match="GB"):
        simulate(M, SGD(0.1), 4, 10, 16, noise=FiniteData(2 ** 40), progress=False)


def test_check_memory_and_check_steps_helpers():
    check_memory(10, "f", "x", "hint", limit=100)
    with pytest.raises(ParameterError, match=r"f would need about 2e-07 GB for x.*hint"):
        check_memory(200, "f", "x", "hint", limit=100)
    assert check_steps("r", np.array([3, 1, 3]), "f").tolist() == [1, 3]
    with pytest.raises(ParameterError, match="-1 at index 1"):
        check_steps("r", np.array([3, -1]), "f")


# ------------------------------------------------------------------ specs
@pytest.mark.parametrize("field,value", [
    ("curvatures", [1.0, math.nan]), ("curvatures", [1.0, math.inf]), ("curvatures", [0.0, 1]),
    ("noise_variances", [1.0, math.nan]), ("noise_variances", [-1.0, 1.0]),
    ("multiplicities", [1, math.inf]), ("multiplicities", [1, 2.5]), ("multiplicities", [0, 1]),
    ("initial_mean", [0.0, math.inf]), ("initial_variance", [math.nan, 1.0]),
    ("initial_variance", [-1.0, 1.0]), ("curvatures", "ab"), ("curvatures", [[1.0], [2.0]]),
    ("curvatures", [10 ** 400, 1]),
])
def test_nqm_refuses_bad_arrays(field, value):
    kw = {"curvatures": [1.0, 0.5], "noise_variances": [1.0, 0.5]}
    kw[field] = value
    with pytest.raises(ParameterError, match=f"'{field}'"):
        NQM(**kw)


@pytest.mark.parametrize("make,name", [
    (lambda: HeavyBall(0.1, 1.0), "momentum"), (lambda: Nesterov(0.1, 1.5), "momentum"),
    (lambda: HeavyBall(0.1, math.nan), "momentum"), (lambda: SGD(-0.1), "learning_rate"),
    (lambda: SGD(math.inf), "learning_rate"), (lambda: SGD("0.1"), "learning_rate"),
    (lambda: SGD(True), "learning_rate"), (lambda: SGD(0.1, ema=1.0), "ema"),
    (lambda: SGD(0.1, ema=-0.1), "ema"), (lambda: SGD(0.1, preconditioning=1.5),
                                          "preconditioning"),
    (lambda: SGD(0.1, clip_norm=0.0), "clip_norm"), (lambda: Adam(0.1, beta1=1.0), "beta1"),
    (lambda: Adam(0.1, eps=0.0), "eps"), (lambda: StudentT(2.0), "nu"),
    (lambda: FiniteData(1), "'n'"), (lambda: SGD(10 ** 400), "learning_rate"),
    (lambda: CosineDecay(0.1, 0), "decay_steps"), (lambda: Warmup(0.1, 2, start=-1), "start"),
])
def test_optimizer_and_noise_specs_refuse_bad_values(make, name):
    with pytest.raises(ParameterError, match=name):
        make()


def test_dict_constructors_refuse_non_dicts_and_unhashable_kinds():
    from nqm_mc.spec.noise import noise_from_dict
    from nqm_mc.spec.optimizers import optimizer_from_dict
    from nqm_mc.spec.schedules import schedule_from_dict
    for fn in (noise_from_dict, optimizer_from_dict, schedule_from_dict, NQM.from_dict):
        with pytest.raises(ParameterError):
            fn([1, 2])
    with pytest.raises(ParameterError):
        schedule_from_dict({"kind": [1]})
    with pytest.raises(ParameterError):
        optimizer_from_dict({"name": {}})
    with pytest.raises(ParameterError):
        NQM.from_dict({"constructor": "paper", "bogus": 1})


def test_rotated_models_check_their_inputs():
    from nqm_mc.spec.rotated import RotatedNQM, expected_loss_dense, simulate_dense
    rm = RotatedNQM.from_nqm(NQM.paper(4), "noise", seed=1)
    short = SGD(_Values(lambda n: np.full(1, 0.1)))
    with pytest.raises(ParameterError, match="'learning_rate'.*shape"):
        expected_loss_dense(rm, short, 4, 5)
    with pytest.raises(ParameterError, match="'learning_rate'.*shape"):
        simulate_dense(rm, short, 4, 5, 4)
    for b in (10 ** 19, "abc", 2.5):
        with pytest.raises(ParameterError, match="'batch_size'"):
            expected_loss_dense(rm, SGD(0.1), b, 5)
        with pytest.raises(ParameterError, match="'batch_size'"):
            simulate_dense(rm, SGD(0.1), b, 5, 4)
    with pytest.raises(ParameterError, match="'record'"):
        expected_loss_dense(rm, SGD(0.1), 4, record=[-1, 2])
    with pytest.raises(ParameterError, match="'n_steps'"):
        expected_loss_dense(rm, SGD(0.1), 4, 2 ** 63)
    with pytest.raises(ParameterError, match="'n_steps' or 'record'"):
        expected_loss_dense(rm, SGD(0.1), 4)
    with pytest.raises(ParameterError, match="GB"):
        simulate_dense(rm, SGD(0.1), 4, 10 ** 6, 2 ** 30, record="all")
    with pytest.raises(ParameterError, match="'initial_mean'"):
        RotatedNQM([1.0, 0.5], [1.0, 1.0], initial_mean="abc")
    with pytest.raises(ParameterError, match="'initial_variance'"):
        RotatedNQM([1.0, 0.5], [1.0, 1.0], initial_variance=[1.0, 2.0, 3.0])
    with pytest.raises(ParameterError, match="'hessian_basis'"):
        RotatedNQM([1.0, 0.5], [1.0, 1.0], hessian_basis="ab")
    steps, mean, _ = expected_loss_dense(rm, SGD(0.1), 4, record=[3, 0])
    assert steps.tolist() == [0, 3] and mean[0] == pytest.approx(rm.initial_loss())
