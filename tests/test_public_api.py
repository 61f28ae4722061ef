"""Every public name that earlier versions exported still imports from the same path, and is
the same object as at its new place in the layered layout."""

import importlib

import pytest

#: module path -> public names, as exported before the package was organised in layers
EARLIER = {
    "nqm_mc": ["HeavyBall", "NQM", "Nesterov", "ParameterError", "SGD", "SimulationResult",
               "__version__", "expected_loss", "load_result", "loss_at", "schedules",
               "simulate", "stability", "steady_state", "steps_to_target",
               "steps_to_target_batch"],
    "nqm_mc.model": ["NQM"],
    "nqm_mc.optimizers": ["Adagrad", "Adam", "HeavyBall", "Nesterov", "OPTIMIZERS",
                          "Optimizer", "RMSProp", "SGD", "SignSGD", "optimizer_from_dict"],
    "nqm_mc.schedules": ["BatchSchedule", "Constant", "ConstantBatch", "CosineDecay",
                         "ExponentialDecay", "LinearDecay", "PiecewiseConstant",
                         "PiecewiseConstantBatch", "Schedule", "StepDecay", "Warmup",
                         "as_batch_schedule", "as_schedule", "schedule_from_dict"],
    "nqm_mc.noise": ["FiniteData", "Gaussian", "StudentT", "as_noise", "noise_from_dict"],
    "nqm_mc.exact": ["ExactCurve", "SteadyState", "StepsToTarget", "expected_loss", "loss_at",
                     "stability", "steady_state", "steps_to_target", "steps_to_target_batch"],
    "nqm_mc.montecarlo": ["record_steps", "simulate", "simulate_many"],
    "nqm_mc.results": ["SimulationResult", "load_result", "provenance"],
    "nqm_mc.rotated": ["RotatedNQM", "expected_loss_dense", "random_rotation",
                       "simulate_dense"],
    "nqm_mc.scaling": ["FAMILIES", "ScalingResult", "grid_minimum", "monte_carlo_confirmation",
                       "optimizer_for", "reference_grid", "tune"],
    "nqm_mc.schedule_opt": ["LOG_LR_START", "OptimalSchedule", "final_loss",
                            "optimal_schedule"],
    "nqm_mc.reproduce": ["POWERS", "run"],
    "nqm_mc.studies": ["adam_proxy_study", "mc_steps_to_target", "noise_study"],
    "nqm_mc.distributed": ["DaskExecutor"],
    "nqm_mc.plotting": ["plot_exact", "plot_hitting_times", "plot_mean", "plot_paths",
                        "plot_quantiles", "plot_scaling"],
    "nqm_mc.config": ["Experiment", "load", "parse"],
    "nqm_mc.cli": ["build_parser", "main"],
}

#: earlier path -> its place in the layers
NOW = {"nqm_mc.model": "nqm_mc.spec.model", "nqm_mc.optimizers": "nqm_mc.spec.optimizers",
       "nqm_mc.schedules": "nqm_mc.spec.schedules", "nqm_mc.noise": "nqm_mc.spec.noise",
       "nqm_mc.scaling": "nqm_mc.studies.scaling",
       "nqm_mc.schedule_opt": "nqm_mc.studies.schedule_opt",
       "nqm_mc.reproduce": "nqm_mc.studies.reproduce",
       "nqm_mc.distributed": "nqm_mc.montecarlo.distributed"}


@pytest.mark.parametrize("module", sorted(EARLIER))
def test_earlier_public_names_still_import(module):
    mod = importlib.import_module(module)
    missing = [n for n in EARLIER[module] if not hasattr(mod, n)]
    assert not missing, f"{module} lost {missing}"
    for name in EARLIER[module]:  # `from module import name` works too
        exec(f"from {module} import {name}", {})


@pytest.mark.parametrize("old,new", sorted(NOW.items()))
def test_earlier_paths_are_the_layered_modules(old, new):
    a, b = importlib.import_module(old), importlib.import_module(new)
    assert a is b and a.__name__ == new
    for name in EARLIER[old]:
        assert getattr(a, name) is getattr(b, name)


def test_top_level_all_is_importable():
    import nqm_mc
    for name in nqm_mc.__all__:
        assert hasattr(nqm_mc, name), name
