"""Storage: atomic writes, one result format, validated loading, the CLI's output convention."""

import json
import os
import pathlib
import random
import signal
import time

import numpy as np
import pytest

from nqm_mc import _files
from nqm_mc.results import ResultFileError, SimulationResult, load_result, load_study, save_study
from nqm_mc.spec._checks import ParameterError
from tests.cli_inprocess import run as run_inprocess


def make_result(seed, R=40, n_runs=64, keep_paths=4, n_bands=3, finished=True):
    """A synthetic result with consistent shapes (no simulation needed)."""
    rng = np.random.default_rng(seed)
    levels = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
    steps = np.round(np.linspace(0, 10 * R, R)).astype(np.int64)
    mean = np.exp(-np.arange(R) / R) + rng.random(R) * 1e-3
    if not finished:
        nan = np.full(R, np.nan)
        return SimulationResult(
            steps=steps, mean=nan, sem=nan, variance=nan, quantile_levels=levels,
            quantiles=np.full((5, R), np.nan), mean_theta=nan, n_finite=np.zeros(R, np.int64),
            n_diverged=np.zeros(R, np.int64), band_mean_square=np.full((R, n_bands), np.nan),
            band_edges=np.linspace(0, 1, n_bands + 1), hitting_times=np.zeros(0, np.int64),
            paths=None,
            spec={"n_runs": n_runs, "record": steps.tolist(), "keep_paths": 0,
                  "n_bands": n_bands, "target": 0.5, "seed": seed},
            meta={"runs_completed": 0, "interrupted": True, "seconds": float("nan")})
    return SimulationResult(
        steps=steps, mean=mean, sem=mean * 0.01, variance=mean ** 2,
        quantile_levels=levels, quantiles=mean[None, :] * (0.5 + levels[:, None]),
        mean_theta=mean * 0.9, n_finite=np.full(R, n_runs), n_diverged=np.zeros(R, np.int64),
        band_mean_square=rng.random((R, n_bands)), band_edges=np.linspace(0, 1, n_bands + 1),
        hitting_times=rng.integers(-2, 10 * R, n_runs),
        paths=rng.random((keep_paths, R)) + 0.1 if keep_paths else None,
        spec={"n_runs": n_runs, "record": steps.tolist(), "keep_paths": keep_paths,
              "n_bands": n_bands, "target": 0.5, "seed": seed},
        meta={"runs_completed": n_runs, "interrupted": False, "seconds": 1.5})


def run_cli(*args, cwd=None, timeout=600):
    """``nqm-mc ARGS`` (in this process: the command line's code without a new interpreter)."""
    return run_inprocess(*args, cwd=cwd)


def one_line_error(r):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nqm-mc: error: "), r.stderr
    return lines[0]


def strict_loads(text):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")
    return json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------ format and suffixes
def test_suffixes_name_one_result(tmp_path):
    res = make_result(1)
    path = res.save(str(tmp_path / "x.json"))
    assert path == str(tmp_path / "x.npz") and not (tmp_path / "x.json.npz").exists()
    for name in ("x", "x.npz", "x.json"):
        assert load_result(tmp_path / name).equals(res)
    with np.load(path) as z:  # the metadata travel inside the archive
        doc = json.loads(str(z["__meta__"][()]))
    assert doc["format_version"] == 2 and doc["spec"]["seed"] == 1


def test_json_is_strict_and_non_finite_values_are_null(tmp_path):
    res = make_result(2)
    res.meta.update(nan=float("nan"), inf=np.inf, arr=np.array([1.0, -np.inf]),
                    i=np.int64(3))
    res.save(tmp_path / "r")
    side = strict_loads((tmp_path / "r.json").read_text())
    assert side["meta"]["nan"] is None and side["meta"]["arr"] == [1.0, None]
    assert side["meta"]["i"] == 3
    with np.load(tmp_path / "r.npz") as z:
        strict_loads(str(z["__meta__"][()]))
    assert load_result(tmp_path / "r").meta["inf"] is None
    p = _files.write_json(tmp_path / "a.json", {"x": [np.nan, 1, np.float32(2.5)]})
    assert strict_loads(pathlib.Path(p).read_text()) == {"x": [None, 1, 2.5]}


def test_result_with_no_finished_runs_round_trips_without_warnings(tmp_path):
    res = make_result(3, finished=False)
    res.save(tmp_path / "empty")  # warnings are errors in this suite
    back = load_result(tmp_path / "empty")
    assert back.equals(res) and np.isnan(back.mean).all() and back.hitting_times.size == 0


def test_csv_integer_columns_are_integers(tmp_path):
    p = _files.write_csv(tmp_path / "t.csv", ["batch_size", "steps", "p", "lr", "name"],
                         [{"batch_size": 4, "steps": 287138.0, "p": 0.0, "lr": 0.5,
                           "name": "a"},
                          {"batch_size": np.int64(8), "steps": np.inf, "p": 1.0, "lr": np.nan,
                           "name": None}])
    assert pathlib.Path(p).read_text().splitlines() == [
        "batch_size,steps,p,lr,name", "4,287138,0.0,0.5,a", "8,inf,1.0,nan,"]


def test_old_format_results_still_load(tmp_path):
    res = make_result(4)
    np.savez_compressed(tmp_path / "old.npz", **{k: getattr(res, k) for k in res._ARRAYS})
    (tmp_path / "old.json").write_text(json.dumps({"kind": "simulation", "spec": res.spec,
                                                   "meta": res.meta}))
    assert load_result(tmp_path / "old.npz").equals(res)


# ------------------------------------------------------------------ refusing to overwrite
def test_save_refuses_to_overwrite(tmp_path):
    a, b = make_result(5), make_result(6)
    a.save(tmp_path / "r")
    with pytest.raises(FileExistsError, match=r"r\.npz already exists.*overwrite=True"):
        b.save(tmp_path / "r.json")
    assert load_result(tmp_path / "r").equals(a)
    b.save(tmp_path / "r", overwrite=True)
    assert load_result(tmp_path / "r").equals(b)


def test_study_round_trip_refusal_and_errors(tmp_path):
    rs = [make_result(7), make_result(8)]
    index = save_study(rs, tmp_path / "s", labels=["a", "b"])
    strict_loads(pathlib.Path(index).read_text())
    back = load_study(tmp_path / "s")
    assert list(back) == ["a", "b"] and back["b"].equals(rs[1])
    with pytest.raises(FileExistsError, match="overwrite=True"):
        save_study(rs, tmp_path / "s", labels=["a", "b"])
    save_study(rs[::-1], tmp_path / "s", labels=["a", "b"], overwrite=True)
    assert load_study(tmp_path / "s")["a"].equals(rs[1])
    with pytest.raises(ResultFileError, match="does not exist"):
        load_study(tmp_path / "nothing")
    (tmp_path / "s" / "study.json").write_text("[1, 2]")
    with pytest.raises(ResultFileError, match="not a study index"):
        load_study(tmp_path / "s")


# ------------------------------------------------------------------ validation on load
def _assert_one_sentence(err, path):
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg and msg.endswith(".")
    assert isinstance(err.value, ParameterError)


def _corrupt(tmp_path, how):
    make_result(9, R=200, keep_paths=60).save(tmp_path / "r")
    p = tmp_path / "r.npz"
    data = bytearray(p.read_bytes())
    if how == "truncated":
        data = data[: len(data) // 2]
    elif how == "empty":
        data = bytearray()
    elif how == "bit-flipped":
        data[len(data) // 2] ^= 0x10
    p.write_bytes(bytes(data))
    return p


@pytest.mark.parametrize("how", ["truncated", "empty", "bit-flipped"])
def test_damaged_archives_give_one_sentence(tmp_path, how):
    p = _corrupt(tmp_path, how)
    with pytest.raises(ResultFileError) as err:
        load_result(p)
    _assert_one_sentence(err, p)
    msg = one_line_error(run_cli("plot", str(p)))
    assert str(p) in msg


def test_random_bit_flips_load_or_raise_result_file_error(tmp_path):
    res = make_result(10, R=60, keep_paths=8)
    res.save(tmp_path / "r")
    good = (tmp_path / "r.npz").read_bytes()
    rng = random.Random(0)
    for _ in range(60):
        data = bytearray(good)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        (tmp_path / "r.npz").write_bytes(bytes(data))
        try:
            back = load_result(tmp_path / "r")
        except ResultFileError:
            continue
        assert back.equals(res)  # the flip hit a field nothing reads (e.g. a timestamp)


def test_inconsistent_or_foreign_files_are_rejected(tmp_path):
    res = make_result(11)
    arrays = {k: getattr(res, k) for k in res._ARRAYS}
    doc = {"kind": "simulation", "format_version": 2, "spec": res.spec, "meta": res.meta}

    def write(name, arrs, meta=doc, sidecar=None):
        arrs = dict(arrs)
        if meta is not None:
            arrs["__meta__"] = np.array(json.dumps(meta))
        np.savez(tmp_path / f"{name}.npz", **arrs)
        if sidecar is not None:
            (tmp_path / f"{name}.json").write_text(json.dumps(sidecar))
        return tmp_path / f"{name}.npz"

    cases = {
        "mean": write("nomean", {k: v for k, v in arrays.items() if k != "mean"}),
        "JSON list": write("list", arrays, meta=None, sidecar=[1, 2, 3]),
        "JSON list ": write("list2", arrays, meta=[doc]),
        "spec": write("nospec", arrays, meta={"format_version": 2, "meta": {}}),
        "format version 99": write("future", arrays, meta=dict(doc, format_version=99)),
        "no metadata": write("nometa", arrays, meta=None),
        "'quantiles' has shape": write("q", dict(arrays, quantiles=arrays["quantiles"][:3])),
        "'sem' has shape": write("sem", dict(arrays, sem=arrays["sem"][:-1])),
        "'band_mean_square'": write("b", dict(arrays,
                                              band_mean_square=arrays["band_mean_square"].T)),
        "'hitting_times'": write("h", dict(arrays, hitting_times=np.zeros(5))),
        "'paths' has shape": write("p", dict(arrays, paths=arrays["paths"][:, :-1])),
        "steps but its spec": write("rec", {**arrays, **{k: arrays[k][:-1] for k in (
            "steps", "mean", "sem", "variance", "mean_theta", "n_finite", "n_diverged")},
            "quantiles": arrays["quantiles"][:, :-1], "paths": arrays["paths"][:, :-1],
            "band_mean_square": arrays["band_mean_square"][:-1]}),
        "does not exist": tmp_path / "missing.npz",
        "single array": tmp_path / "arr.npz",
    }
    np.save(tmp_path / "arr.npy", np.zeros(3))
    os.rename(tmp_path / "arr.npy", tmp_path / "arr.npz")
    obj = np.empty(1, object)
    obj[0] = {"a": 1}
    np.savez(tmp_path / "pickled.npz", mean=obj)
    cases["damaged"] = tmp_path / "pickled.npz"
    for needle, path in cases.items():
        with pytest.raises(ResultFileError) as err:
            load_result(path)
        _assert_one_sentence(err, path)
        if needle.strip() != "JSON list":
            assert needle.strip() in str(err.value), (needle, str(err.value))


# ------------------------------------------------------------------ crash safety
def _save_in_turn(path, seeds, n, ready):
    """Save the results of ``seeds`` to ``path`` in turn, ``n`` times (a child process's work);
    ``ready`` is set once a save has finished."""
    results = [make_result(s, R=300, keep_paths=1500) for s in seeds]
    for i in range(n):
        results[i % len(results)].save(path, overwrite=True)
        if i == 0:
            ready.set()  # saving works; kill me at any moment from now on


def _savers():
    """A multiprocessing context whose children start as forks of one server that has
    imported this module: a child is ready in milliseconds, not an interpreter's start-up."""
    import multiprocessing
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([__name__])
    return ctx


@pytest.mark.early
def test_sigkill_while_saving_leaves_the_old_or_the_new_result(tmp_path):
    old = make_result(21, R=300, keep_paths=1500)
    new = make_result(22, R=300, keep_paths=1500)
    path = tmp_path / "big"
    old.save(path)
    rng = random.Random(1)
    ctx = _savers()
    for _ in range(8):
        ready = ctx.Event()
        p = ctx.Process(target=_save_in_turn, args=(str(path), (22, 21), 10 ** 9, ready))
        p.start()
        assert ready.wait(120)
        time.sleep(rng.uniform(0.05, 0.6))
        os.kill(p.pid, signal.SIGKILL)
        p.join()
        assert p.exitcode == -signal.SIGKILL  # killed mid-work, not finished
        back = load_result(path)  # never an error
        assert back.equals(old) or back.equals(new)
    assert {f for f in os.listdir(tmp_path) if not f.startswith(".")} == {"big.npz",
                                                                          "big.json"}


def test_concurrent_saves_leave_one_of_the_results(tmp_path):
    path = tmp_path / "shared"
    ctx = _savers()
    events = [ctx.Event() for _ in range(2)]  # kept alive while the children unpickle them
    procs = [ctx.Process(target=_save_in_turn, args=(str(path), (seed,), 4, ev))
             for seed, ev in zip((31, 32), events, strict=True)]
    for p in procs:
        p.start()
    try:
        for p in procs:
            p.join(120)
            assert p.exitcode == 0
    finally:  # never leave a saver behind the test
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join()
    back = load_result(path)
    assert any(back.equals(make_result(s, R=300, keep_paths=1500)) for s in (31, 32))
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_failed_encoding_leaves_the_old_result(tmp_path):
    good = make_result(41)
    good.save(tmp_path / "r")
    bad = make_result(42)
    bad.meta["oops"] = object()
    with pytest.raises(TypeError, match="object"):
        bad.save(tmp_path / "r", overwrite=True)
    assert load_result(tmp_path / "r").equals(good)
    assert json.loads((tmp_path / "r.json").read_text())["spec"]["seed"] == 41
    assert sorted(os.listdir(tmp_path)) == ["r.json", "r.npz"]


def test_atomic_file_keeps_the_old_file_on_error(tmp_path):
    p = tmp_path / "f.txt"
    _files.write_text(p, "old")
    with pytest.raises(RuntimeError), _files.atomic_file(p, "w") as f:
        f.write("partial")
        raise RuntimeError("boom")
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
    with pytest.raises(FileExistsError):
        _files.write_text(p, "new", overwrite=False)
    assert p.read_text() == "old"


# ------------------------------------------------------------------ output directories
def test_fresh_run_directories_never_collide(tmp_path):
    root = str(tmp_path / "results")
    outs = [_files.prepare_output(None, ["a.csv"], "cmd", root=root) for _ in range(3)]
    dirs = [o.dir for o in outs]
    assert len(set(dirs)) == 3 and all(os.path.isdir(d) for d in dirs)
    assert dirs[1] == dirs[0] + "-2" or dirs[1] != dirs[0]
    for o in outs:
        o.finish()
    assert os.readlink(os.path.join(root, "cmd-latest")) == os.path.basename(dirs[-1])


@pytest.mark.parametrize("out", ["file", "file/sub", "/proc/nqm-mc-out", "/proc"])
def test_bad_out_fails_before_any_work(tmp_path, out, monkeypatch):
    """An unusable --out is refused before any engine runs: the engines the two commands call
    are replaced by ones that record the call (the command runs in this process)."""
    import nqm_mc.exact
    import nqm_mc.montecarlo
    ran = []

    def engine(name):
        def run(*args, **kwargs):
            ran.append(name)
            raise RuntimeError(f"{name} ran before --out was checked")
        return run

    for module, names in ((nqm_mc.exact, ("expected_loss", "steps_to_target", "steady_state",
                                          "stability")),
                          (nqm_mc.montecarlo, ("simulate",))):
        for name in names:
            monkeypatch.setattr(module, name, engine(name))
    (tmp_path / "file").write_text("x")
    out = str(tmp_path / out) if not out.startswith("/") else out
    for cmd in (["simulate", "--dim", "10000", "--runs", "100000", "--steps", "100000"],
                ["exact", "--dim", "10000", "--steps", "10000000"]):
        r = run_cli(*cmd, "--out", out, cwd=tmp_path, timeout=60)
        assert ran == [], ran
        msg = one_line_error(r)
        assert out in msg
    # the replacement is seen: with a usable --out the command reaches an engine
    with pytest.raises(RuntimeError, match="ran before --out was checked"):
        run_cli("exact", "--dim", "10", "--steps", "10", "--out", str(tmp_path / "ok"),
                cwd=tmp_path)
    assert ran


def test_cli_refuses_to_overwrite_and_force_replaces(tmp_path):
    args = ["exact", "--dim", "50", "--steps", "20", "--json"]
    r = run_cli(*args, "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    strict_loads((tmp_path / "o" / "exact_summary.json").read_text())
    before = (tmp_path / "o" / "exact_curve.csv").stat().st_mtime_ns
    msg = one_line_error(run_cli(*args, "--out", str(tmp_path / "o")))
    assert "exact_curve.csv already exists" in msg and "--force" in msg
    assert (tmp_path / "o" / "exact_curve.csv").stat().st_mtime_ns == before
    r = run_cli(*args, "--out", str(tmp_path / "o"), "--force")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "o" / "exact_curve.csv").stat().st_mtime_ns != before


def test_a_file_written_meanwhile_is_refused_in_the_flags_words(tmp_path, monkeypatch):
    """Two runs with one --out: the second to save finds the first's file, which appeared after
    its own check of --out. Its refusal names --force, not the library's overwrite=True (the
    race is made certain here: the file is written just before the save)."""
    from nqm_mc import results
    save = results.SimulationResult.save

    def first_the_other_run(self, path, *args, **kwargs):
        save(self, path, *args, **kwargs)  # the other run's file
        return save(self, path, *args, **kwargs)

    monkeypatch.setattr(results.SimulationResult, "save", first_the_other_run)
    msg = one_line_error(run_cli("simulate", "--dim", "20", "--runs", "8", "--steps", "5",
                                 "--quiet", "--out", str(tmp_path / "o")))
    assert "simulation.npz already exists" in msg
    assert "pass --force to replace it or choose another --out" in msg
    assert "overwrite=True" not in msg


def test_cli_default_output_is_a_fresh_run_directory(tmp_path):
    for _ in range(2):
        r = run_cli("exact", "--dim", "50", "--steps", "20", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
    runs = sorted(d for d in os.listdir(tmp_path / "results") if d != "exact-latest")
    assert len(runs) == 2 and all(d.startswith("exact-") for d in runs)
    latest = tmp_path / "results" / "exact-latest"
    assert os.readlink(latest) == max(runs, key=lambda d: (len(d), d))
    assert (latest / "exact_curve.csv").exists()
    assert os.path.join("results", os.readlink(latest)) in r.stdout  # the paths written


def test_plot_writes_next_to_the_result_and_refuses_to_overwrite(tmp_path):
    make_result(51).save(tmp_path / "res")
    r = run_cli("plot", str(tmp_path / "res.npz"), "--kind", "mean")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "res_mean.png").stat().st_size > 1000
    msg = one_line_error(run_cli("plot", str(tmp_path / "res.npz"), "--kind", "mean"))
    assert "res_mean.png already exists" in msg
    r = run_cli("plot", str(tmp_path / "res.json"), "--kind", "mean", "--force")
    assert r.returncode == 0, r.stderr


def test_plot_bad_inputs_are_one_line(tmp_path):
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    (tmp_path / "u.csv").write_text("batch_size,steps\nfour,5\n")
    for target in ("missing.npz", "missing.csv", "t.csv", "u.csv"):
        msg = one_line_error(run_cli("plot", str(tmp_path / target)))
        assert target in msg
    assert not list(tmp_path.glob("*.png"))
