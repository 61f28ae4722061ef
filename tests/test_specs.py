"""Specs refuse bad input with an error naming the parameter and the value received."""

import math

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
from nqm_mc.spec.optimizers import optimizer_from_dict


@pytest.mark.parametrize("kwargs,name,value", [
    (dict(curvatures=[1.0, -0.1], noise_variances=[1, 1]), "curvatures", "-0.1"),
    (dict(curvatures=[1.0, math.nan], noise_variances=[1, 1]), "curvatures", "nan"),
    (dict(curvatures=[1.0, 0.0], noise_variances=[1, 1]), "curvatures", "0.0"),
    (dict(curvatures=[1.0], noise_variances=[-1.0]), "noise_variances", "-1.0"),
    (dict(curvatures=[1.0, 2.0], noise_variances=[1.0]), "noise_variances", "length 2"),
    (dict(curvatures=[1.0], noise_variances=[1.0], multiplicities=[0]), "multiplicities", "0"),
    (dict(curvatures=[1.0], noise_variances=[1.0], multiplicities=[1.5]), "multiplicities",
     "1.5"),
    (dict(curvatures=[1.0], noise_variances=[1.0], initial_variance=-1), "initial_variance",
     "-1"),
    (dict(curvatures=[1.0], noise_variances=[1.0], initial_mean=math.inf), "initial_mean",
     "inf"),
    (dict(curvatures="abc", noise_variances=[1.0]), "curvatures", "abc"),
    (dict(curvatures=[], noise_variances=[]), "curvatures", "empty"),
])
def test_model_bad_input(kwargs, name, value):
    with pytest.raises(ParameterError, match=f"'{name}'.*{value}"):
        NQM(**kwargs)


def test_model_constructors_bad_input():
    with pytest.raises(ParameterError, match="'dim'.*0"):
        NQM.paper(0)
    with pytest.raises(ParameterError, match="'n_bins'.*1"):
        NQM.binned(100, 1)
    with pytest.raises(ParameterError, match="'noise_scale'.*-2"):
        NQM.power_law(10, noise_scale=-2)


def test_model_roundtrip_and_binned_counts():
    for m in (NQM.paper(50), NQM.binned(1000, 20), NQM.power_law(30, 1.5, 0.5, 2.0),
              NQM([1.0, 0.1], [0.5, 0.5], [2, 3], [1.0, 0.0], [0.0, 1.0])):
        assert NQM.from_dict(m.to_dict()) == m
    b = NQM.binned()
    assert b.dim == 10_000 and b.curvatures[0] == 1.0 and b.curvatures[-1] == 1e-4
    # each 1/i rounded down to the largest bin value <= 1/i
    bins = np.geomspace(1, 1e-4, 100)
    h = 1 / np.arange(1, 10_001)
    idx = np.array([np.flatnonzero(bins <= x)[0] for x in h[::97]])
    assert np.all(np.isin(bins[idx], b.curvatures))
    assert NQM.paper().initial_loss() == pytest.approx(4.894, abs=1e-3)


@pytest.mark.parametrize("factory,name,value", [
    (lambda: SGD(-0.1), "learning_rate", "-0.1"),
    (lambda: SGD(0.0), "learning_rate", "0.0"),
    (lambda: SGD(math.nan), "learning_rate", "nan"),
    (lambda: SGD("fast"), "learning_rate", "fast"),
    (lambda: SGD(0.1, preconditioning=1.5), "preconditioning", "1.5"),
    (lambda: SGD(0.1, ema=1.0), "ema", "1.0"),
    (lambda: HeavyBall(0.1, momentum=1.0), "momentum", "1.0"),
    (lambda: HeavyBall(0.1, momentum=-0.5), "momentum", "-0.5"),
    (lambda: Nesterov(0.1, momentum=1.2), "momentum", "1.2"),
    (lambda: S.Constant(-1), "value", "-1"),
    (lambda: S.PiecewiseConstant([5, 3], [1, 1, 1]), "boundaries", "strictly increasing"),
    (lambda: S.PiecewiseConstant([5], [1]), "values", "Got 1"),
    (lambda: S.StepDecay(1.0, 1.5, 10), "factor", "1.5"),
    (lambda: S.ExponentialDecay(1.0, 0.9, 0), "decay_steps", "0"),
    (lambda: S.LinearDecay(1.0, -0.1, 10), "final", "-0.1"),
    (lambda: S.CosineDecay(1.0, 0), "decay_steps", "0"),
    (lambda: S.Warmup(S.Constant(1.0), 0), "warmup_steps", "0"),
    (lambda: S.ConstantBatch(0), "batch_size", "0"),
    (lambda: S.PiecewiseConstantBatch([10], [4, 0]), r"sizes\[1\]", "0"),
    (lambda: optimizer_from_dict({"name": "adamw", "learning_rate": 0.1}), "name", "adamw"),
    (lambda: S.schedule_from_dict({"kind": "triangle"}), "kind", "triangle"),
])
def test_optimizer_and_schedule_bad_input(factory, name, value):
    with pytest.raises(ParameterError, match=f"'{name}'.*{value}"):
        factory()


def test_engine_bad_input():
    m = NQM([1.0, 0.1], [1.0, 0.1])
    with pytest.raises(ParameterError, match="'batch_size'.*0"):
        expected_loss(m, SGD(0.1), 0, 10)
    with pytest.raises(ParameterError, match="'batch_size'.*-4"):
        steps_to_target(m, SGD(0.1), -4, 0.01)
    with pytest.raises(ParameterError, match="'n_steps'.*-1"):
        expected_loss(m, SGD(0.1), 4, -1)
    with pytest.raises(ParameterError, match="'target'.*-0.01"):
        steps_to_target(m, SGD(0.1), 4, -0.01)
    with pytest.raises(ParameterError, match="'method'.*'fast'"):
        steps_to_target(m, SGD(0.1), 4, 0.01, method="fast")
    with pytest.raises(ParameterError, match="'model'.*dict"):
        steady_state({"h": 1}, SGD(0.1), 4)
    with pytest.raises(ParameterError, match="'optimizer'.*str"):
        steady_state(m, "sgd", 4)
    with pytest.raises(ParameterError, match="constant learning rate"):
        loss_at(m, SGD(S.StepDecay(0.1, 0.5, 10)), 4, 10)
    with pytest.raises(ParameterError, match="'t'.*-3"):
        loss_at(m, SGD(0.1), 4, -3)
    with pytest.raises(ParameterError, match="'momenta'.*1.0"):
        steps_to_target_batch(m, HeavyBall(0.1, 0.5), 0.01, 4, [0.1], [0.5, 1.0])
    with pytest.raises(ParameterError, match="'learning_rates'.*nan"):
        steps_to_target_batch(m, SGD(0.1), 0.01, 4, [0.1, math.nan])


def test_specs_are_immutable_and_roundtrip():
    o = Nesterov(S.Warmup(S.CosineDecay(0.5, 100), 10), 0.9, preconditioning=0.5, ema=0.99)
    assert optimizer_from_dict(o.to_dict()) == o
    with pytest.raises(AttributeError):
        o.momentum = 0.5
    with pytest.raises(AttributeError):
        NQM.paper(10).curvatures = None
    assert o.effective_learning_rate == pytest.approx(o.base_learning_rate / 0.1)
