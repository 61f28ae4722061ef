"""SIGINT and SIGTERM stop a run within a second or two, whatever its length, and keep its work.

Each test drives a real process: the kernels run in a worker thread and poll a stop flag once
per window of steps, so a block of 16 trajectories of 2 x 10^6 steps at d = 1000 (minutes of
work in one kernel call) must stop promptly. The latency bound below (10 s) is a functional
promise with a wide margin for a loaded machine, not a speed measurement; the figures
measured are in the test's output.
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from nqm_mc import NQM, SGD, HeavyBall, simulate
from nqm_mc.montecarlo._interrupt import new_flag
from nqm_mc.montecarlo.driver import _job, run_range
from tests.cli_inprocess import run as run_inprocess

LATENCY_BOUND = 10.0  # seconds from the signal to the process's exit

API_SCRIPT = textwrap.dedent("""
    import json, sys
    from nqm_mc import NQM, SGD, simulate, Interrupted, sigterm_interrupts
    simulate(NQM.paper(1000), SGD(0.1), 32, 10, 16, progress=False)  # compile (cached)
    mode = sys.argv[1]
    print("started", flush=True)
    try:
        with sigterm_interrupts():
            r = simulate(NQM.paper(1000), SGD(0.1), 32, 2_000_000, 16, target=0.5,
                         method="step",
                         keep_paths=2, progress=False,
                         on_interrupt="return" if mode == "return" else "raise")
        print(json.dumps({"returned": True, **{k: r.meta[k] for k in
              ("interrupted", "signal", "runs_completed", "runs_started")},
              "n_finite": r.n_finite.tolist(), "hits": r.hitting_times.tolist()}))
    except Interrupted as err:
        print(json.dumps({"raised": type(err).__name__, "signal": err.signal,
                          "interrupted": err.result.meta["interrupted"]}))
        sys.exit(130)
""")


def _cpu_seconds(pid):
    """CPU time (user + system) a live process has used so far, from /proc; None elsewhere."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wait_until_busy(p, cpu_seconds, timeout=60.0):
    """Return once process p has used ``cpu_seconds`` more CPU time than when called: past its
    set-up and inside its run, however loaded the machine, without waiting a fixed time in
    which an idle machine would burn several seconds of both cores. Without /proc: sleep
    3 s."""
    first = _cpu_seconds(p.pid)
    if first is None:
        time.sleep(3.0)
        return
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        now = _cpu_seconds(p.pid)
        if now is None or now - first >= cpu_seconds:
            return
        time.sleep(0.05)


def _start(cmd, marker, stream="stdout"):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pipe = p.stdout if stream == "stdout" else p.stderr
    deadline = time.time() + 600
    while time.time() < deadline:
        line = pipe.readline()
        if marker in line or not line:
            break
    wait_until_busy(p, 1.0)  # past the set-up, well inside the run (16 x 2e9 dimension-steps)
    return p


def _stop(p, sig):
    t0 = time.perf_counter()
    p.send_signal(sig)
    try:
        out, err = p.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # never leave a run of minutes behind the test
        p.kill()
        p.communicate()
        raise
    return time.perf_counter() - t0, out, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_api_stops_a_long_trajectory_within_seconds(sig):
    p = _start([sys.executable, "-c", API_SCRIPT, "return"], "started")
    latency, out, err = _stop(p, sig)
    assert p.returncode == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    print(f"{sig.name}: stopped {latency:.2f} s after the signal")
    assert latency < LATENCY_BOUND
    assert r["interrupted"] and r["signal"] == sig.name
    assert r["runs_completed"] == 0 and r["runs_started"] >= 1
    # record 0 holds every started run; the last record none (no run finished)
    assert r["n_finite"][0] == r["runs_started"] and r["n_finite"][-1] == 0
    assert all(h == -3 or h >= 0 for h in r["hits"][:r["runs_started"]])


def test_api_raises_interrupted_by_default():
    p = _start([sys.executable, "-c", API_SCRIPT, "raise"], "started")
    latency, out, err = _stop(p, signal.SIGINT)
    assert p.returncode == 130, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r == {"raised": "Interrupted", "signal": "SIGINT", "interrupted": True}
    assert latency < LATENCY_BOUND


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_stops_saves_and_reports_true_counts(tmp_path, sig, code):
    # the kernels in the disk cache (in this process: the child loads what it writes)
    warm = run_inprocess("simulate", "--dim", "1000", "--runs", "16", "--steps", "10", "--quiet",
                         "--out", str(tmp_path / "warm"))
    assert warm.returncode == 0, warm.stderr
    out_dir = tmp_path / "run"
    p = _start([sys.executable, "-m", "nqm_mc", "simulate", "--dim", "1000", "--runs", "16",
                "--steps", "2000000", "--method", "step", "--json", "--out", str(out_dir)],
               "simulating",
               stream="stderr")
    latency, out, err = _stop(p, sig)
    print(f"{sig.name}: exit {p.returncode} {latency:.2f} s after the signal")
    assert p.returncode == code, err
    assert latency < LATENCY_BOUND
    assert "Traceback" not in err
    s = json.loads(out)
    assert s["interrupted"] and s["signal"] == sig.name
    assert s["runs_completed"] == 0 and s["runs_started"] >= 1
    from nqm_mc.results import load_result
    res = load_result(str(out_dir / "simulation.npz"))
    assert res.meta["interrupted"] and res.meta["runs_completed"] == 0
    assert res.n_finite[0] == s["runs_started"] and res.n_finite[-1] == 0


def test_stop_flag_keeps_every_record_reached():
    """A kernel stopped mid-run returns, per trajectory, the records it reached; statistics of
    those records equal the uninterrupted run's where every trajectory reached them."""
    model, opt = NQM.paper(50), HeavyBall(0.1, 0.9)
    job = _job(model, opt, 8, 500, 32, 1, "all", 100, 0.5, 4, "float64", None, 16, 8)
    full = run_range(job.plan, 0, 2)
    stop = new_flag()
    stop[0] = 1
    none = run_range(job.plan, 0, 2, stop)
    assert (none["records"] == -1).all() and (none["hits"] == -3).all()
    assert (none["count"] == 0).all() and np.isnan(none["paths"]).all()
    assert (full["records"] == 501).all()


def test_interrupted_statistics_cover_the_runs_that_reached_each_step():
    res = simulate(NQM.paper(20), SGD(0.1), 8, 200, 48, seed=2, record="all",
                   progress=False)
    assert res.meta["runs_completed"] == 48 == res.meta["runs_started"]
    assert not res.meta["interrupted"] and res.meta["signal"] is None
    assert (res.n_finite == 48).all()


def test_on_interrupt_is_checked():
    from nqm_mc import ParameterError
    with pytest.raises(ParameterError, match="on_interrupt"):
        simulate(NQM.paper(5), SGD(0.1), 8, 10, 16, on_interrupt="ignore")


DENSE_SCRIPT = textwrap.dedent("""
    import json
    from nqm_mc import NQM, SGD
    from nqm_mc.spec.rotated import RotatedNQM, simulate_dense
    model = RotatedNQM.from_nqm(NQM.paper(200), "hessian", seed=0)
    simulate_dense(model, SGD(0.1), 8, 5, 4)  # compile (cached)
    print("started", flush=True)
    r = simulate_dense(model, SGD(0.1), 8, 10_000_000, 8, target=0.5, on_interrupt="return")
    print(json.dumps({k: r.meta[k] for k in ("interrupted", "signal", "runs_completed",
                                              "runs_started")}
                     | {"n_finite": r.n_finite.tolist(), "n_diverged": r.n_diverged.tolist(),
                        "hits": r.hitting_times.tolist()}))
""")


def test_dense_engine_stops_within_seconds():
    p = _start([sys.executable, "-c", DENSE_SCRIPT], "started")
    latency, out, err = _stop(p, signal.SIGINT)
    assert p.returncode == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    print(f"dense: stopped {latency:.2f} s after the signal")
    assert latency < LATENCY_BOUND
    assert r["interrupted"] and r["runs_completed"] == 0 and r["runs_started"] >= 1
    assert r["n_finite"][0] == r["runs_started"] and r["n_finite"][-1] == 0
    assert sum(r["n_diverged"]) == 0  # records not reached are not divergences
    assert set(r["hits"]) <= {-3} | {h for h in r["hits"] if h >= 0}


def test_cli_interrupted_summary_says_why_the_exact_curve_is_missing(tmp_path):
    """An interrupted linear run has no exact column because it stopped, not because of SGD."""
    out_dir = tmp_path / "run"
    p = _start([sys.executable, "-m", "nqm_mc", "simulate", "--dim", "1000", "--runs", "16",
                "--steps", "2000000", "--method", "step", "--out", str(out_dir)],
               "simulating", stream="stderr")
    _, out, err = _stop(p, signal.SIGINT)
    assert p.returncode == 130, err
    assert "no exact curve: the run was interrupted" in out
    assert "not linear in the gradient" not in out


def test_an_interrupt_after_the_run_names_the_files_it_kept(tmp_path, monkeypatch):
    """Ctrl-C while the figure is drawn (the simulation already saved): exit 130 and one line
    naming the complete files kept, which load; before any file, it says none was written."""
    import nqm_mc.montecarlo
    from nqm_mc import plotting
    from nqm_mc.results import load_result

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(plotting, "plot_mean", interrupted)
    out = tmp_path / "o"
    r = run_inprocess("simulate", "--dim", "20", "--steps", "30", "--runs", "16", "--out",
                      str(out))
    assert r.returncode == 130, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("nqm-mc: interrupted by SIGINT; kept what it had written: "), last
    assert str(out / "simulation.npz") in last and str(out / "simulation.csv") in last
    assert load_result(out / "simulation").n_runs == 16
    monkeypatch.setattr(nqm_mc.montecarlo, "simulate", interrupted)
    r = run_inprocess("simulate", "--dim", "20", "--steps", "30", "--runs", "16", "--out",
                      str(tmp_path / "p"))
    assert r.returncode == 130
    assert r.stderr.strip().splitlines()[-1] == ("nqm-mc: interrupted by SIGINT; no file was "
                                                 "written")
