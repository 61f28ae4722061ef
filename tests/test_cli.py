"""The command line, driven as a user would: ``main(argv)`` in this process (the code that
``python -m nqm_mc`` runs) for most commands, a real process for the entry point, Ctrl-C and
the README's script."""

import json
import subprocess
import sys

import pytest

from tests.cli_inprocess import run


def run_process(*args):
    return subprocess.run([sys.executable, "-m", "nqm_mc", *args], capture_output=True,
                          text=True, timeout=600)


def test_exact_and_simulate_json(tmp_path):
    r = run("exact", "--dim", "200", "--steps", "500", "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["status"] in ("reached", "unreachable") and s["final_loss"] < s["initial_loss"]
    assert (tmp_path / "exact_curve.png").exists()
    r = run("simulate", "--dim", "100", "--steps", "50", "--runs", "40", "--out", str(tmp_path),
            "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["n_runs"] == 40 and (tmp_path / "simulation.npz").exists()
    assert abs(s["final_mean"] - s["exact_final_mean"]) < 6 * s["final_sem"]


def test_bad_input_is_one_line_exit_2(tmp_path):
    for args in (["exact", "--lr", "-0.1"], ["simulate", "--batch-size", "0"],
                 ["exact", "--momentum", "1.0", "--optimizer", "heavy_ball"]):
        r = run(*args, "--out", str(tmp_path))
        assert r.returncode == 2, (args, r.stderr)
        assert "Traceback" not in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_info():
    r = run_process("info", "--json")  # the entry point, in a process of its own
    assert r.returncode == 0 and "numba" in json.loads(r.stdout)


def test_scaling_and_validate_subcommands(tmp_path):
    r = run("scaling", "--batch-sizes", "4,64,1024", "--out", str(tmp_path), "--json")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["steps"][0] == 1508044 and (tmp_path / "scaling_sgd_p0.0.csv").exists()
    r = run("scaling", "--batch-sizes", "4,abc", "--out", str(tmp_path))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    r = run("validate", "--case", "near_critical", "--out", str(tmp_path / "v"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "v" / "summary.md").exists()


def _help_example(cmd):
    r = run(cmd, "--help")
    assert r.returncode == 0, cmd
    lines = r.stdout.splitlines()
    i = next(k for k, line in enumerate(lines) if line.strip() == "example:")
    return lines[i + 1].strip()


def _run_example(example, cwd):
    """Run a help example verbatim (``a && b`` in order), nqm-mc as ``main`` in-process."""
    for part in example.split("&&"):
        words = part.split()
        assert words[0] == "nqm-mc", example
        r = run(*words[1:], cwd=cwd)
        assert r.returncode == 0, (example, r.stdout[-2000:], r.stderr[-2000:])


@pytest.mark.parametrize("cmd", ["exact", "simulate", "scaling", "plot", "info",
                                 pytest.param("validate", marks=pytest.mark.slow),
                                 pytest.param("noise-study", marks=pytest.mark.slow)])
def test_every_help_example_runs_verbatim(cmd, tmp_path):
    _run_example(_help_example(cmd), tmp_path)
    if cmd == "noise-study":
        for ext in ("png", "md", "csv", "json"):
            assert (tmp_path / "noise-study" / f"noise_study.{ext}").exists()


@pytest.mark.slow
def test_adam_proxy_help_example_writes_figure_and_table(tmp_path):
    _run_example(_help_example("adam-proxy"), tmp_path)
    for ext in ("png", "md", "csv", "json"):
        assert (tmp_path / "adam-proxy" / f"adam_proxy.{ext}").exists()
    out = json.loads((tmp_path / "adam-proxy" / "adam_proxy.json").read_text())
    assert out["best_p"] in (0.0, 0.25, 0.5, 0.75, 1.0)
    assert all(s > 0 for s in out["adam"]["steps"])


def test_simulate_adaptive_and_noise_flags(tmp_path):
    r = run("simulate", "--optimizer", "adam", "--lr", "0.01", "--dim", "50", "--runs", "16",
            "--steps", "50", "--noise", "student_t", "--nu", "4", "--clip-norm", "3",
            "--out", str(tmp_path), "--json", "--quiet")
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["final_mean"] > 0 and s["exact_final_mean"] is None  # no exact value for Adam
    side = json.loads((tmp_path / "simulation.json").read_text())  # the readable copy
    assert side["spec"]["optimizer"]["name"] == "adam"
    assert side["spec"]["optimizer"]["clip_norm"] == 3.0
    assert side["spec"]["noise"] == {"name": "student_t", "nu": 4.0}
    r = run("simulate", "--optimizer", "rmsprop", "-p", "0.5", "--runs", "2", "--steps", "2")
    assert r.returncode == 2 and "preconditioning" in r.stderr and "Traceback" not in r.stderr
    r = run("exact", "--optimizer", "adam", "--dim", "10", "--steps", "10")
    assert r.returncode == 2 and "nonlinear" in r.stderr
    r = run("simulate", "--noise", "finite_data", "--dataset-size", "8", "-B", "8",
            "--runs", "2", "--steps", "2")
    assert r.returncode == 2 and "dataset size" in r.stderr


@pytest.mark.slow
def test_reproduce_help_example_runs_verbatim(tmp_path):
    _run_example(_help_example("reproduce"), tmp_path)
    assert (tmp_path / "figures" / "momentum_vs_sgd.png").exists()


@pytest.mark.slow
def test_reproduce_quick_writes_every_figure(tmp_path):
    r = run("reproduce", "--quick", "--out", str(tmp_path))
    assert r.returncode == 0, r.stderr
    for name in ("loss_curves", "steps_vs_batch_targets", "optimal_lr_vs_batch",
                 "momentum_vs_sgd", "effective_lr", "ema_vs_sgd", "schedules_vs_constant",
                 "schedule_shapes", "mc_confirmation", "critical_batch_sizes"):
        assert (tmp_path / f"{name}.csv").exists(), name
    # the terminal summary carries every curve's critical batch size, as a table
    assert "critical batch sizes" in r.stdout and "{" not in r.stdout and "nan" not in r.stdout
    assert "heavy_ball   0.5    0.01" in r.stdout
    rows = (tmp_path / "critical_batch_sizes.csv").read_text().splitlines()[1:]
    assert all(not row.split(",")[1].endswith(".0") for row in rows)  # doublings as ints


def test_ctrl_c_stops_cleanly_and_keeps_finished_runs(tmp_path):
    """SIGINT once the run has used 2 s of CPU time past the command's own line saying that
    it starts (not timed from its launch: on a loaded machine the interpreter may still be
    importing)."""
    import signal

    from nqm_mc import NQM, SGD, simulate
    from tests.test_signals import wait_until_busy
    simulate(NQM.paper(10), SGD(0.1), 32, 5, 16, progress=False)  # this kernel in the cache
    # 40000 runs x 200 steps at d = 1000: waves of 256 runs, 8e9 dimension-steps in all
    p = subprocess.Popen([sys.executable, "-m", "nqm_mc", "simulate", "--dim", "1000",
                          "--steps", "200", "--runs", "40000", "--method", "step", "--json",
                          "--out", str(tmp_path)], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        lines = [p.stderr.readline()]  # a compile notice may come first (cold cache)
        while lines[-1] and not lines[-1].startswith("simulating 40000 runs"):
            lines.append(p.stderr.readline())
        assert lines[-1], lines
        wait_until_busy(p, 2.0)  # the kernel loaded from the cache and a few waves done
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=300)
    finally:  # never leave a long run (or its pipes) behind the test
        if p.poll() is None:
            p.kill()
            p.communicate()
    assert p.returncode == 130, err
    s = json.loads(out)
    assert s["interrupted"] and "Traceback" not in err
    side = json.loads((tmp_path / "simulation.json").read_text())  # the readable copy
    done = side["meta"]["runs_completed"]
    assert 0 < done < 40000
    from nqm_mc.results import load_result
    res = load_result(str(tmp_path / "simulation.npz"))
    assert res.n_finite[-1] == done


def _readme_python_example():
    import pathlib
    import re
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.search(r"## In Python\s+```python\n(.*?)```", readme, re.S).group(1)


def test_readme_python_example_runs_on_a_smaller_model(tmp_path, monkeypatch, capsys):
    """The README's Python example in this process with ``NQM.paper()`` at d = 1000 instead of
    10^4 (a tenth of the work): its imports, calls, printed lines and saved file. The example
    verbatim in a new interpreter is the CI tier's test below."""
    from nqm_mc import NQM
    from nqm_mc.results import load_result
    paper = NQM.paper.__func__
    dims = []

    def smaller(cls, dim=10_000):
        dims.append(dim)
        return paper(cls, dim // 10)
    monkeypatch.setattr(NQM, "paper", classmethod(smaller))
    monkeypatch.chdir(tmp_path)
    exec(compile(_readme_python_example(), "README.md", "exec"), {"__name__": "__main__"})
    assert dims == [10_000]  # the example's model is the paper's default
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 3, out
    mean, std, floor = (float(x) for x in out[0].split())
    assert 0 < floor < mean and std > 0
    steps, status = out[1].split()
    assert int(steps) > 0 and status == "reached"
    res = load_result(str(tmp_path / "results" / "hb.npz"))
    assert res.spec["n_runs"] == 100 and res.steps[-1] == 1000 and res.spec["seed"] == 1


@pytest.mark.ci
def test_readme_python_example_runs_verbatim(tmp_path):
    r = subprocess.run([sys.executable, "-c", _readme_python_example()], capture_output=True,
                       text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "results" / "hb.npz").exists()
