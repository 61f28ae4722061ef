"""TOML experiment files: every key checked, flags override the file, examples run."""

import json
import pathlib

import pytest

from nqm_mc import HeavyBall, ParameterError
from nqm_mc.config import load, parse
from nqm_mc.spec import schedules as S
from tests.test_cli import run

EXAMPLES = sorted(pathlib.Path(__file__).parent.parent.joinpath("examples").glob("*.toml"))


def test_examples_parse():
    assert len(EXAMPLES) >= 3
    for path in EXAMPLES:
        exp = load(path)
        assert exp.model is not None and exp.optimizer is not None and exp.run


def test_parse_builds_the_objects():
    exp = parse({"model": {"kind": "binned", "dim": 1000, "n_bins": 20},
                 "optimizer": {"kind": "heavy_ball", "momentum": 0.9, "learning_rate": {
                     "kind": "warmup", "warmup_steps": 5,
                     "schedule": {"kind": "step_decay", "initial": 0.1, "factor": 0.5,
                                  "step_size": 10}}},
                 "batch": {"boundaries": [10], "sizes": [4, 8]}, "run": {"target": 1}})
    assert exp.model.dim == 1000 and exp.model.n_groups < 20
    assert exp.optimizer == HeavyBall(S.Warmup(S.StepDecay(0.1, 0.5, 10), 5), 0.9)
    assert exp.batch_size == S.PiecewiseConstantBatch([10], [4, 8])
    assert exp.run == {"target": 1}


@pytest.mark.parametrize("data,needle", [
    ({"modle": {}}, "unknown section [modle]"),
    ({"model": {"kind": "paper", "dimm": 3}}, "'model.dimm'"),
    ({"model": {"kind": "spiral"}}, "'model.kind'"),
    ({"model": {"kind": "arrays", "curvatures": [1.0, float("nan")],
                "noise_variances": [1, 1]}}, "curvatures"),
    ({"optimizer": {"kind": "adamw", "learning_rate": 1}}, "'optimizer.kind'"),
    ({"optimizer": {"kind": "adam", "learning_rate": 1, "momentum": 0.9}}, "'optimizer.momentum'"),
    ({"optimizer": {"kind": "adam", "learning_rate": 0.1, "beta2": 1.0}}, "beta2"),
    ({"optimizer": {"kind": "sgd"}}, "missing key 'optimizer.learning_rate'"),
    ({"optimizer": {"kind": "sgd", "learning_rate": -1}}, "learning_rate"),
    ({"optimizer": {"kind": "heavy_ball", "learning_rate": 0.1, "momentum": 1.0}}, "momentum"),
    ({"optimizer": {"kind": "sgd", "learning_rate": {"kind": "cosine_decay", "inital": 1}}},
     "'optimizer.learning_rate.inital'"),
    ({"batch": {"size": 0}}, "batch_size"),
    ({"batch": {"size": 4, "sizes": [1]}}, "'batch'"),
    ({"run": {"setps": 1}}, "'run.setps'"),
    ({"run": {"steps": "ten"}}, "'run.steps'"),
    ({"output": {"dir": 3}}, "'output.dir'"),
])
def test_bad_keys_and_values_name_the_key(data, needle):
    with pytest.raises(ParameterError) as err:
        parse(data, "exp.toml")
    assert needle in str(err.value) and str(err.value).startswith("exp.toml")


def test_cli_flags_override_the_file(tmp_path):
    cfg = tmp_path / "e.toml"
    cfg.write_text('[model]\nkind = "paper"\ndim = 200\n[optimizer]\nkind = "heavy_ball"\n'
                   'learning_rate = 0.05\nmomentum = 0.5\n[batch]\nsize = 8\n'
                   '[run]\nsteps = 40\nruns = 32\nseed = 3\n[output]\ndir = "'
                   + str(tmp_path / "out") + '"\n')
    r = run("simulate", "-c", str(cfg), "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["n_runs"] == 32 and (tmp_path / "out" / "simulation.npz").exists()
    side = json.loads((tmp_path / "out" / "simulation.json").read_text())["spec"]
    assert side["optimizer"]["momentum"] == 0.5 and side["batch_size"] == 8
    r = run("simulate", "-c", str(cfg), "--json", "--quiet", "--momentum", "0.7", "--runs",
            "16", "-B", "4", "--out", str(tmp_path / "o2"))
    assert r.returncode == 0, r.stderr
    side = json.loads((tmp_path / "o2" / "simulation.json").read_text())["spec"]
    assert side["optimizer"]["momentum"] == 0.7 and side["n_runs"] == 16
    assert side["batch_size"] == 4
    assert side["optimizer"]["learning_rate"] == {"kind": "constant", "value": 0.05}


@pytest.mark.parametrize("content,needle", [("[run]\nsetps = 3\n", "run.setps"),
                                            ("[run\nsteps = 3\n", "invalid TOML"),
                                            ("[optimizer]\nkind = 'sgd'\nlearning_rate = 0\n",
                                             "learning_rate")])
def test_malformed_config_is_one_line_exit_2(tmp_path, content, needle):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(content)
    for cmd in ("simulate", "exact"):
        r = run(cmd, "-c", str(cfg), "--out", str(tmp_path))
        assert r.returncode == 2 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1 and needle in r.stderr


def test_plot_command_writes_every_figure(tmp_path):
    r = run("simulate", "--dim", "100", "--steps", "50", "--runs", "64", "--keep-paths", "5",
            "--target", "5", "--quiet", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    r = run("plot", str(tmp_path / "simulation.npz"), "--out", str(tmp_path / "f"))
    assert r.returncode == 0, r.stderr
    for kind in ("mean", "quantiles", "paths", "hitting"):
        assert (tmp_path / "f" / f"simulation_{kind}.png").stat().st_size > 10_000
    r = run("plot", str(tmp_path / "missing.npz"), "--out", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr


def test_adaptive_optimizer_from_a_file():
    from nqm_mc.spec.optimizers import Adam
    exp = parse({"optimizer": {"kind": "adam", "learning_rate": 0.01, "beta2": 0.99,
                               "clip_norm": 2.0}}, "exp.toml")
    assert exp.optimizer == Adam(0.01, beta2=0.99, clip_norm=2.0)
