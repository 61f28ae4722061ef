"""Dask executor: bitwise identity with a local run, sweeps as one graph, worker loss."""

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from nqm_mc import NQM, SGD, HeavyBall, Nesterov, simulate
from nqm_mc.montecarlo.driver import simulate_many

distributed = pytest.importorskip("dask.distributed")

MODEL = NQM.power_law(300, 1.0, 1.0)
KW = dict(seed=17, record=9, target=0.3, keep_paths=5, progress=False)


@pytest.fixture(scope="module")
def cluster():
    """A local Dask cluster of two single-threaded worker processes, shared by this file's
    tests and closed after them: an idle cluster costs its scheduler, nannies and workers a
    few per cent of a core (about 4 s of CPU a minute), which the rest of the run would pay."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0") as c:
        yield c


def test_identical_to_local_run_with_hitting_times(cluster):
    from nqm_mc.montecarlo.distributed import DaskExecutor
    opt = HeavyBall(0.2, 0.8, ema=0.9)
    local = simulate(MODEL, opt, 8, 60, 1000, **KW)
    for g in (1, 7, 64):
        with DaskExecutor(cluster, groups_per_task=g) as ex:
            res = simulate(MODEL, opt, 8, 60, 1000, executor=ex, **KW)
        assert res.equals(local), g
        np.testing.assert_array_equal(res.hitting_times, local.hitting_times)
        assert "DaskExecutor" in res.meta["executor"]


def test_skip_ahead_is_identical_on_dask(cluster):
    """The skip-ahead sampler's transitions travel with the plan; same bits as locally."""
    from nqm_mc.montecarlo.distributed import DaskExecutor
    opt = HeavyBall(0.2, 0.8, ema=0.9)
    kw = dict(seed=5, record="log", n_records=30, keep_paths=8, method="skip", progress=False)
    local = simulate(MODEL, opt, 8, 5000, 200, **kw)
    assert local.meta["method"] == "skip"
    with DaskExecutor(cluster, groups_per_task=3) as ex:
        res = simulate(MODEL, opt, 8, 5000, 200, executor=ex, **kw)
    assert res.equals(local) and res.meta["method"] == "skip"


def test_adaptive_rules_and_noise_laws_are_identical_on_dask(cluster):
    """The general kernel (Adam with clipping; Student-t and finite-data noise) through the
    executor: the dataset and every parameter travel with the plan; same bits."""
    from nqm_mc.montecarlo.distributed import DaskExecutor
    from nqm_mc.spec.noise import FiniteData, StudentT
    from nqm_mc.spec.optimizers import Adam
    cases = [(Adam(0.02, clip_norm=2.0), None), (SGD(0.5), StudentT(4.0)),
             (HeavyBall(0.1, 0.9), FiniteData(64, seed=3))]
    with DaskExecutor(cluster, groups_per_task=3) as ex:
        for opt, noise in cases:
            local = simulate(MODEL, opt, 8, 40, 200, noise=noise, **KW)
            res = simulate(MODEL, opt, 8, 40, 200, noise=noise, executor=ex, **KW)
            assert res.equals(local), (opt, noise)


def test_user_rule_and_noise_are_identical_on_dask(cluster):
    """A rule and a noise written by the user run on the workers with the local bits."""
    from nqm_mc.montecarlo.distributed import DaskExecutor
    from nqm_mc.spec.optimizers import Adam
    from nqm_mc.spec.rule_library import adam_rule
    from nqm_mc.spec.user import LeastSquaresNoise
    rule = adam_rule(0.02)
    local = simulate(MODEL, rule, 8, 60, 300, **KW)
    builtin = simulate(MODEL, Adam(0.02), 8, 60, 300, **KW)
    local_noisy = simulate(MODEL, SGD(0.2), 4, 30, 64, noise=LeastSquaresNoise(0.5), **KW)
    # the local runs first: their kernels are in the disk cache, which the workers load
    with DaskExecutor(cluster, groups_per_task=3) as ex:
        res = simulate(MODEL, rule, 8, 60, 300, executor=ex, **KW)
        noisy = simulate(MODEL, SGD(0.2), 4, 30, 64, executor=ex,
                         noise=LeastSquaresNoise(0.5), **KW)
    assert res.equals(local)
    assert np.array_equal(res.mean, builtin.mean)
    assert noisy.equals(local_noisy)


def test_sweep_is_one_graph_and_matches_local(cluster, tmp_path):
    from nqm_mc.montecarlo.distributed import DaskExecutor
    jobs = [dict(model=MODEL, optimizer=o, batch_size=b, n_steps=40, n_runs=300, seed=s,
                 record=10) for o in (SGD(0.5), Nesterov(0.1, 0.9)) for b in (4, 64)
            for s in (0, 1)]
    with DaskExecutor(cluster, groups_per_task=4) as ex:
        remote = simulate_many(jobs, executor=ex)
    local = simulate_many(jobs)
    assert len(remote) == len(jobs)
    assert all(r.equals(loc) for r, loc in zip(remote, local, strict=True))
    from nqm_mc.results import load_study, save_study
    path = save_study(remote, str(tmp_path / "study"))
    back = load_study(str(tmp_path / "study"))
    assert path.endswith("study.json") and len(back) == len(jobs)
    assert all(b.equals(r) for b, r in zip(back.values(), remote, strict=True))


def test_each_worker_alone_gives_the_local_bits(cluster):
    """What recomputing a lost worker's tasks elsewhere relies on: a task's answer does not
    depend on the worker that computes it. Every task on one worker, then every task on the
    other: the local run's bits both times. (Killing a worker mid-run is the CI tier's test
    below: a replacement worker process costs several seconds of CPU.)"""
    from nqm_mc.montecarlo.distributed import DaskExecutor
    opt = SGD(0.5)
    with DaskExecutor(cluster, groups_per_task=2) as ex:
        submit = ex.client.submit
        workers = sorted(ex.client.scheduler_info()["workers"])
        assert len(workers) == 2
        # a seed per pass: the tasks are pure, and a second pass with the same plan could be
        # answered from the first pass's results if the scheduler still held them
        for w, seed in zip(workers, (17, 18), strict=True):
            kw = {**KW, "seed": seed}
            local = simulate(MODEL, opt, 16, 60, 160, **kw)
            ex.client.submit = lambda *a, w=w, **k: submit(*a, workers=[w],
                                                           allow_other_workers=False, **k)
            with distributed.get_task_stream(client=ex.client) as ts:
                res = simulate(MODEL, opt, 16, 60, 160, executor=ex, **kw)
            ran = {t["worker"] for t in ts.data if t["key"].startswith("_run_task")}
            assert ran == {w}, (w, ran)
            assert res.equals(local)


@pytest.mark.ci
def test_killed_worker_is_recomputed_and_result_identical(cluster):
    from nqm_mc.montecarlo.distributed import DaskExecutor
    model = NQM.paper(5000)
    opt = SGD(0.5)
    local = simulate(model, opt, 16, 200, 640, **KW)
    with DaskExecutor(cluster, groups_per_task=1) as ex:
        pids = list(ex.client.run(os.getpid).values())
        killer = threading.Timer(1.5, os.kill, (pids[0], signal.SIGKILL))
        killer.start()
        t0 = time.perf_counter()
        res = simulate(model, opt, 16, 200, 640, executor=ex, **KW)
        killer.join()
        assert time.perf_counter() - t0 > 1.5  # the worker died mid-run
        ex.client.wait_for_workers(2, timeout=60)
    assert res.equals(local)


def test_no_dask_import_without_an_executor():
    code = ("import sys; from nqm_mc import NQM, SGD, simulate; "
            "simulate(NQM.paper(50), SGD(0.1), 4, 5, 20, progress=False); "
            "print(any(m == 'dask' or m.startswith(('dask.', 'distributed')) "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_bad_executor_arguments():
    from nqm_mc import ParameterError
    from nqm_mc.montecarlo.distributed import DaskExecutor
    with pytest.raises(ParameterError, match="cluster_or_address"):
        DaskExecutor(42)
    with pytest.raises(ParameterError, match="groups_per_task"):
        DaskExecutor("tcp://127.0.0.1:1", groups_per_task=0)
    with pytest.raises(ParameterError, match="jobs"):
        simulate_many("not a list")


def test_cli_scheduler_option(cluster, tmp_path):
    import json

    from tests.cli_inprocess import run
    r = run("simulate", "--dim", "100", "--steps", "30", "--runs", "64", "--quiet", "--json",
            "--out", str(tmp_path), "--scheduler", cluster.scheduler_address)
    assert r.returncode == 0, r.stderr
    remote = json.loads(r.stdout)
    r = run("simulate", "--dim", "100", "--steps", "30", "--runs", "64", "--quiet", "--json",
            "--out", str(tmp_path / "local"))
    assert json.loads(r.stdout)["final_mean"] == remote["final_mean"]


def _readme_dask_example():
    import pathlib
    import re
    readme = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()
    return re.search(r"## From a laptop to a cluster.*?```python\n(.*?)```", readme,
                     re.S).group(1)


def test_readme_dask_example_runs_on_this_files_cluster(cluster, monkeypatch, capsys):
    """The README's cluster example, its text run in this process as a script would run it,
    with the LocalCluster it asks for replaced by this file's (the same shape: two
    single-threaded worker processes) and its model, NQM.paper(1000), by NQM.paper(100) (a
    tenth of the work): its imports, calls and printed line. The example verbatim, as a script
    that starts its own worker processes, is the CI tier's test below."""
    import contextlib

    calls = []

    @contextlib.contextmanager
    def local_cluster(**kwargs):
        calls.append(kwargs)
        yield cluster  # this file's cluster stays up for the other tests

    paper = NQM.paper.__func__
    dims = []

    def smaller(cls, dim=10_000):
        dims.append(dim)
        return paper(cls, dim // 10)

    monkeypatch.setattr(distributed, "LocalCluster", local_cluster)
    monkeypatch.setattr(NQM, "paper", classmethod(smaller))
    exec(compile(_readme_dask_example(), "README.md", "exec"), {"__name__": "__main__"})
    assert calls == [dict(n_workers=2, threads_per_worker=1, dashboard_address=":0")]
    assert dims == [1000]
    out = capsys.readouterr().out
    assert "±" in out and out.count("\n") == 1


@pytest.mark.ci
def test_readme_dask_example_runs_verbatim(tmp_path):
    """The README's cluster example, as a script (it starts worker processes), on a laptop."""
    script = tmp_path / "example.py"
    script.write_text(_readme_dask_example())
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "±" in r.stdout
