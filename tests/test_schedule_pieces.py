"""Schedules as runs of constant values: ``pieces(n)`` against ``values(n)``, bit for bit."""

from __future__ import annotations

import numpy as np
import pytest

import nqm_mc.spec.schedules as S
from nqm_mc.spec._checks import ParameterError

SCHEDULES = [
    S.Constant(0.3),
    S.PiecewiseConstant([3, 7], [1.0, 0.5, 0.5]),
    S.StepDecay(1.0, 0.5, 4),
    S.StepDecay(1.0, 1.0, 4),
    S.StepDecay(1e300, 0.5, 1),
    S.StepDecay(1e-300, 0.1, 2),
    S.ExponentialDecay(1.0, 0.9, 3),
    S.LinearDecay(1.0, 0.1, 10),
    S.LinearDecay(0.2, 0.2, 10),
    S.CosineDecay(0.5, 10, 0.005),
    S.CosineDecay(0.5, 10),
    S.Warmup(S.CosineDecay(1.0, 10), 5),
    S.Warmup(S.StepDecay(1.0, 0.5, 3), 4, 0.1),
    S.Warmup(0.5, 3),
    S.ConstantBatch(16),
    S.PiecewiseConstantBatch([2, 5], [4, 8, 8]),
]
LENGTHS = [0, 1, 2, 3, 4, 5, 9, 10, 11, 12, 30, 101, 5000]


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_pieces_expand_to_values_bit_for_bit(schedule):
    for n in LENGTHS:
        values = S.checked_values(schedule, n, "x", "test")
        pieces = S.checked_pieces(schedule, n, "x", "test")
        assert pieces.expand().tobytes() == values.tobytes(), n
        assert pieces.n_steps == n and len(pieces) <= max(n, 0)
        if n:
            t = np.arange(n)
            assert np.array_equal(pieces.at(t), values)
            assert pieces.lengths.sum() == n and pieces.ends[-1] == n


@pytest.mark.parametrize("schedule, runs", [
    (S.Constant(0.1), 1), (S.ConstantBatch(8), 1), (S.PiecewiseConstant([10, 20], [1, 2, 3]), 3),
    (S.StepDecay(1.0, 0.5, 1000), 1076), (S.CosineDecay(0.5, 100, 0.01), 101),
    (S.Warmup(S.LinearDecay(1.0, 0.5, 50), 10), 61),
])
def test_pieces_cost_per_run_not_per_update(schedule, runs):
    p = S.checked_pieces(schedule, 2**62, "x", "test")
    assert len(p) == runs and p.n_steps == 2**62
    # the held value is the one values() gives just after the last change
    last = int(p.starts[-1])
    assert p.values[-1] == S.checked_values(schedule, last + 2, "x", "test")[-1]


def test_evaluation_at_a_far_step_is_cheap():
    assert S.Constant(0.1)(2**62) == 0.1
    assert S.CosineDecay(0.5, 10, 0.005)(10**15) == 0.005
    with pytest.raises(ParameterError, match="ExponentialDecay would need about"):
        S.ExponentialDecay(1.0, 0.9)(10**15)


class _Ramp(S.Schedule):
    """A schedule of a user's own with values() only."""

    def values(self, n_steps):
        return 0.1 + 0.01 * np.minimum(np.arange(n_steps), 5)


class _BadPieces(S.Schedule):
    def __init__(self, pieces):
        self._p = pieces

    def values(self, n_steps):  # pragma: no cover - not used
        return np.ones(n_steps)

    def pieces(self, n_steps):
        return self._p(n_steps)


def test_user_schedule_gets_default_pieces():
    p = S.checked_pieces(_Ramp(), 20, "learning_rate", "SGD")
    assert len(p) == 6 and p.expand().tobytes() == _Ramp().values(20).tobytes()


@pytest.mark.parametrize("make, match", [
    (lambda n: S.Pieces(np.array([1]), np.array([0.1]), n), "do not tile"),
    (lambda n: S.Pieces(np.array([0, 0]), np.array([0.1, 0.2]), n), "do not tile"),
    (lambda n: S.Pieces(np.array([0, 5]), np.array([0.1, 0.2]), n + 1), "do not tile"),
    (lambda n: S.Pieces(np.array([0, 3]), np.array([0.1, -0.2]), n), r"-0\.2 at index 3"),
    (lambda n: S.Pieces(np.array([0, 3]), np.array([0.1, np.nan]), n), "nan at index 3"),
    (lambda n: np.ones(n), "instead of Pieces"),
])
def test_bad_pieces_are_refused_naming_the_schedule(make, match):
    with pytest.raises(ParameterError, match=match) as err:
        S.checked_pieces(_BadPieces(make), 10, "learning_rate", "SGD")
    assert "'learning_rate' parameter of SGD" in str(err.value)


def test_batch_pieces_must_be_whole_numbers():
    class Half(S.BatchSchedule):
        def values(self, n_steps):
            return np.full(n_steps, 2.5)

    with pytest.raises(ParameterError, match=r"batch size 2\.5 at index 0"):
        S.checked_pieces(Half(), 4, "batch_size", "simulate")


def test_from_values_holds_the_last_value():
    p = S.Pieces.from_values([1.0, 1.0, 2.0], 10)
    assert list(p.starts) == [0, 2] and list(p.lengths) == [2, 8]
    with pytest.raises(ValueError):
        S.Pieces.from_values([1.0, 2.0], 1)
