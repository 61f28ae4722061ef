"""Every public name that earlier versions exported still imports from the same path (the
moved modules with a DeprecationWarning naming the new one), and is the same object as at its
new place in the layered layout."""

import contextlib
import importlib
import pickle

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


#: old paths that warn (all of NOW but nqm_mc.schedules, also the attribute nqm_mc.schedules)
DEPRECATED = {**{old: new for old, new in NOW.items() if old != "nqm_mc.schedules"},
              "nqm_mc.rotated": "nqm_mc.spec.rotated"}


def _warns(module):
    if module in DEPRECATED:
        return pytest.warns(DeprecationWarning, match=DEPRECATED[module].replace(".", r"\."))
    return contextlib.nullcontext()


@pytest.mark.parametrize("module", sorted(EARLIER))
def test_earlier_public_names_still_import(module):
    mod = importlib.import_module(module)
    for name in EARLIER[module]:
        with _warns(module):
            assert hasattr(mod, name), f"{module} lost {name}"
    for name in EARLIER[module]:  # `from module import name` works too
        with _warns(module):
            exec(f"from {module} import {name}", {})


@pytest.mark.parametrize("old,new", sorted(NOW.items()))
def test_earlier_paths_give_the_layered_objects(old, new):
    a, b = importlib.import_module(old), importlib.import_module(new)
    if old not in DEPRECATED:
        assert a is b and a.__name__ == new
    for name in EARLIER[old]:
        with _warns(old):
            assert getattr(a, name) is getattr(b, name)


def test_a_pickle_of_the_earlier_layout_loads_with_a_warning():
    from nqm_mc.spec.model import NQM
    from nqm_mc.studies.scaling import tune
    for obj, new, old in ((NQM, b"nqm_mc.spec.model", b"nqm_mc.model"),
                          (tune, b"nqm_mc.studies.scaling", b"nqm_mc.scaling")):
        data = pickle.dumps(obj, protocol=2)  # a global by its module's path, as text
        assert new + b"\n" in data
        with pytest.warns(DeprecationWarning, match=new.decode().replace(".", r"\.")):
            assert pickle.loads(data.replace(new, old)) is obj


def test_private_modules_of_the_earlier_layout_are_gone():
    for old in ("nqm_mc._validate", "nqm_mc._rng", "nqm_mc._mc_kernels"):
        with pytest.raises(ImportError):
            importlib.import_module(old)


def test_top_level_all_is_importable():
    import nqm_mc
    for name in nqm_mc.__all__:
        assert hasattr(nqm_mc, name), name
