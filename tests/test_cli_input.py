"""Input paths of the command line: every config key has an effect, bad files and values are
one line on stderr with exit status 2, integer options are bounded before any work, an
unreachable Dask scheduler fails fast. Commands run in-process (``main(argv)``)."""

import contextlib
import io
import json
import os

import numpy as np
import pytest

from nqm_mc import cli, config, exact, montecarlo
from nqm_mc.spec.optimizers import OPTIMIZERS


@pytest.fixture(autouse=True)
def no_figures(monkeypatch):
    """Figures are not what these tests check; skipping them keeps each command ~0.1 s."""
    from nqm_mc import plotting
    for name in ("plot_exact", "plot_mean"):
        monkeypatch.setattr(plotting, name, lambda res, path, *a, **k: path)


def call(argv):
    """Run ``main(argv)`` in-process: (exit status, stdout, stderr lines)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main([str(a) for a in argv])
    return rc, out.getvalue(), err.getvalue().strip().splitlines()


def assert_one_line_error(argv, *needles):
    rc, _, err = call(argv)
    assert rc == 2 and len(err) == 1, (argv, rc, err)
    assert err[0].startswith("nqm-mc: error: "), err
    for n in needles:
        assert n in err[0], (n, err[0])
    return err[0]


def write(tmp_path, text, name="c.toml"):
    p = tmp_path / name
    p.write_text(text) if isinstance(text, str) else p.write_bytes(text)
    return p


# ------------------------------------------------------------------ every config key is used
TINY = {"exact": ["--dim", "20", "--steps", "30", "--json"],
        "simulate": ["--dim", "20", "--steps", "30", "--runs", "16", "--json", "--quiet"]}


@pytest.fixture
def spy(monkeypatch):
    """Record the keyword arguments of the engine calls the commands make."""
    calls = {}

    def wrap(mod, name):
        real = getattr(mod, name)

        def f(*a, **kw):
            calls[name] = kw
            return real(*a, **kw)
        monkeypatch.setattr(mod, name, f)
    wrap(montecarlo, "simulate")
    wrap(exact, "steps_to_target")
    wrap(exact, "expected_loss")
    return calls


def observe(tmp_path, spy, command, run_table):
    """Run ``command`` with a config holding [run] ``run_table``; what the run produced."""
    out = tmp_path / f"o{len(list(tmp_path.iterdir()))}"
    body = "".join(f"{k} = {json.dumps(v)}\n" for k, v in run_table.items())
    cfg = write(tmp_path, "[run]\n" + body, f"c{len(list(tmp_path.iterdir()))}.toml")
    spy.clear()
    flags, given = [], ["--" + k.replace("_", "-") for k in run_table]
    for i, f in enumerate(TINY[command]):  # flags override the file: drop those it sets
        if f not in given and not (i and TINY[command][i - 1] in given):
            flags.append(f)
    rc, stdout, err = call([command, "-c", cfg, "--out", out, *flags])
    assert rc == 0, err
    files = {}
    for name in ("exact_curve.csv", "exact_summary.json", "simulation.json"):
        if (out / name).exists():
            files[name] = (out / name).read_text()
    if (out / "simulation.npz").exists():
        from nqm_mc.results import load_result
        res = load_result(str(out / "simulation.npz"))
        files["npz"] = (res.steps.tolist(), res.mean.tolist(), res.n_runs,
                        None if res.paths is None else res.paths.shape)
    summary = json.loads(stdout)
    summary.pop("seconds", None)
    summary.pop("result", None)
    for k in ("exact_summary.json", "simulation.json"):
        if k in files:  # drop timings and paths, keep the spec and the numbers
            d = json.loads(files[k])
            d.pop("seconds", None)
            d.get("meta", {}).pop("seconds", None)
            d.get("meta", {}).pop("created", None)
            files[k] = json.dumps(d, sort_keys=True, default=str)
    return {"summary": summary, "files": files, "calls": {k: {n: repr(v) for n, v in kw.items()
                                                              if n != "progress"}
                                                          for k, kw in spy.items()}}


# key -> (command, value different from the default); the effect must show in the output, the
# files or the arguments handed to the engines
RUN_EFFECTS = {
    "steps": ("exact", 40), "runs": ("simulate", 32), "seed": ("simulate", 5),
    "target": ("exact", 0.5), "dtype": ("simulate", "float32"), "keep_paths": ("simulate", 3),
    "record": ("exact", 5), "n_records": ("exact", 7), "threads": ("simulate", 1),
    "block_size": ("simulate", 64), "method": ("exact", "reference"),
}


def test_every_run_key_is_tested_for_an_effect():
    """Adding a run key to the config without wiring it (and a row here) fails."""
    assert set(RUN_EFFECTS) | {"scheduler"} == set(config.RUN_KEYS)
    assert set(config.OUTPUT_KEYS) == {"dir", "json"}


@pytest.mark.parametrize("key", sorted(RUN_EFFECTS))
def test_every_run_key_changes_the_run(key, tmp_path, spy):
    command, value = RUN_EFFECTS[key]
    base = observe(tmp_path, spy, command, {})
    changed = observe(tmp_path, spy, command, {key: value})
    assert changed != base, key
    if key in ("threads", "block_size", "method"):  # results do not depend on these: wired
        engine = "steps_to_target" if key == "method" else "simulate"
        assert changed["calls"][engine][key] == repr(value)


def test_scheduler_key_is_used_and_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(cli, "SCHEDULER_TIMEOUT", 0.5)
    cfg = write(tmp_path, '[run]\nscheduler = "tcp://127.0.0.1:1"\n')
    assert_one_line_error(["simulate", "-c", cfg, *TINY["simulate"], "--out", tmp_path],
                          "cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'")


def test_output_keys_are_used(tmp_path):
    cfg = write(tmp_path, f'[output]\ndir = "{tmp_path / "d"}"\njson = true\n')
    rc, out, err = call(["exact", "-c", cfg, "--dim", "20", "--steps", "30"])
    assert rc == 0, err
    assert json.loads(out)["final_step"] == 30 and (tmp_path / "d" / "exact_curve.csv").exists()


# model and optimizer keys are the constructors' parameters: each changes the object built
MODEL_VALUES = {"dim": 30, "n_bins": 7, "curvature_exponent": 0.5, "noise_exponent": 2.0,
                "noise_scale": 3.0, "initial_variance": 2.0, "initial_mean": 0.5,
                "multiplicities": [2, 3], "name": "mine", "curvatures": [1.0, 0.25],
                "noise_variances": [1.0, 0.5]}
OPT_VALUES = {"learning_rate": 0.02, "momentum": 0.5, "preconditioning": 0.5, "ema": 0.9,
              "clip_norm": 2.0, "beta1": 0.5, "beta2": 0.9, "eps": 1e-3, "decay": 0.5}


def test_every_model_and_optimizer_key_changes_the_object():
    base_model = {"paper": {}, "binned": {}, "power_law": {"dim": 20},
                  "arrays": {"curvatures": [1.0, 0.5], "noise_variances": [1.0, 1.0]}}
    for kind, fn in config._MODEL_KINDS.items():
        for key in config._params(fn):
            assert key in MODEL_VALUES, (kind, key)
            a = config.parse({"model": {"kind": kind, **base_model[kind]}}).model
            b = config.parse({"model": {"kind": kind, **base_model[kind],
                                        key: MODEL_VALUES[key]}}).model
            assert a.to_dict() != b.to_dict(), (kind, key)
    for kind, cls in OPTIMIZERS.items():
        for key in config._params(cls):
            assert key in OPT_VALUES, (kind, key)
            a = config.parse({"optimizer": {"kind": kind, "learning_rate": 0.1}}).optimizer
            b = config.parse({"optimizer": {"kind": kind, "learning_rate": 0.1,
                                            key: OPT_VALUES[key]}}).optimizer
            assert a.to_dict() != b.to_dict(), (kind, key)
    a = config.parse({"batch": {"size": 4}}).batch_size
    b = config.parse({"batch": {"boundaries": [5], "sizes": [4, 8]}}).batch_size
    assert a == 4 and b != a


def test_record_list_and_log_from_a_file(tmp_path):
    cfg = write(tmp_path, "[run]\nrecord = [0, 3, 10, 30]\n")
    rc, _, err = call(["exact", "-c", cfg, "--dim", "20", "--steps", "30", "--out", tmp_path])
    assert rc == 0, err
    steps = np.loadtxt(tmp_path / "exact_curve.csv", delimiter=",", skiprows=1)[:, 0]
    assert steps.tolist() == [0, 3, 10, 30]
    rc, _, err = call(["simulate", "-c", cfg, "--dim", "20", "--steps", "30", "--runs", "16",
                       "--quiet", "--out", tmp_path])
    assert rc == 0, err
    steps = np.loadtxt(tmp_path / "simulation.csv", delimiter=",", skiprows=1)[:, 0]
    assert steps.tolist() == [0, 3, 10, 30]
    assert_one_line_error(["simulate", "-c", cfg, "--dim", "20", "--steps", "20", "--runs",
                           "16", "--out", tmp_path], "run.record", "[0, 20]")


# ------------------------------------------------------------------ bad files and values
@pytest.mark.parametrize("content,needles", [
    (b"\x00\x01\xff\xfe\x80", ("not UTF-8",)),
    (b'[run]\nsteps = "\xff"\n', ("not UTF-8",)),
    ("[run\n", ("invalid TOML",)),
    ('[run]\nsteps = "abc"\n', ("'run.steps'", "'abc'")),
    ("[run]\nsteps = 1.5\n", ("'run.steps'", "1.5")),
    ("[run]\nruns = -1\n", ("'run.runs'", "-1")),
    ("[run]\nseed = 1180591620717411303424\n", ("'run.seed'", "1180591620717411303424")),
    ("[run]\nsteps = 4611686018427387905\n", ("'run.steps'",)),
    ("[model]\ndim = true\n", ("dim", "True")),
    ("[model]\ndim = 1e30\n", ("'model.dim'",)),
    ("[run]\ntarget = nan\n", ("'run.target'", "nan")),
    ('[run]\nrecord = "some"\n', ("'run.record'", "'some'")),
    ("[run]\nrecord = [1, -2]\n", ("'run.record'",)),
    ("[run]\nrecord = 0\n", ("'run.record'",)),
    ('[run]\nmethod = "newton"\n', ("'run.method'", "'newton'")),
    ('[run]\ndtype = "float16"\n', ("'run.dtype'", "'float16'")),
    ("[run]\nn_records = 1\n", ("'run.n_records'",)),
    ("[run]\nblock_size = 0\n", ("'run.block_size'",)),
    ("[run]\nkeep_paths = 1000\n", ("run.keep_paths", "1000")),
    ('[run]\nrecord = "all"\nsteps = 100000000\n', ("run.record", "'all'")),
    ('[run]\nscheduler = "  "\n', ("'run.scheduler'",)),
    ("run = 3\n", ("'run'",)),
])
def test_bad_config_is_one_line_exit_2(tmp_path, content, needles):
    cfg = write(tmp_path, content)
    command = "simulate" if "keep_paths" in str(content) else "exact"
    flags = ["--runs", "16", "--quiet"] if command == "simulate" else []
    assert_one_line_error([command, "-c", cfg, "--out", tmp_path, *flags], str(cfg), *needles) \
        if "run.keep_paths" not in needles and "run.record" not in needles else \
        assert_one_line_error([command, "-c", cfg, "--out", tmp_path, *flags], *needles)


def test_missing_directory_and_unreadable_config(tmp_path):
    assert_one_line_error(["exact", "-c", tmp_path / "nope.toml"], "nope.toml", "not found")
    assert_one_line_error(["exact", "-c", tmp_path], str(tmp_path), "is a directory")
    cfg = write(tmp_path, "[run]\nsteps = 3\n")
    os.chmod(cfg, 0)
    try:
        if os.access(cfg, os.R_OK):  # root reads anything
            pytest.skip("running as root")
        assert_one_line_error(["exact", "-c", cfg], "cannot read config file")
    finally:
        os.chmod(cfg, 0o644)


@pytest.mark.parametrize("argv,needles", [
    (["exact", "--steps", "abc"], ("--steps", "'abc'")),
    (["exact", "--steps", "-1"], ("--steps", "-1")),
    (["exact", "--steps", str(2 ** 62 + 1)], ("--steps", str(2 ** 62 + 1))),
    (["simulate", "--steps", str(2 ** 32)], ("--steps",)),
    (["simulate", "--runs", "0"], ("--runs", "0")),
    (["simulate", "--seed", str(2 ** 64)], ("--seed",)),
    (["simulate", "--seed", "-1"], ("--seed",)),
    (["simulate", "--threads", "0"], ("--threads",)),
    (["simulate", "--keep-paths", "-3"], ("--keep-paths",)),
    (["simulate", "--runs", "16", "--keep-paths", "17"], ("--keep-paths", "17")),
    (["exact", "--dim", "0"], ("--dim",)),
    (["exact", "--dim", str(10 ** 11)], ("--dim",)),
    (["exact", "--model", "binned", "--bins", "1"], ("--bins",)),
    (["exact", "--model", "binned", "--dim", "1000000", "--bins", "10000"], ("--bins",)),
    (["exact", "--batch-size", "0"], ("--batch-size",)),
    (["simulate", "--dataset-size", "1"], ("--dataset-size",)),
    (["simulate", "--dataset-size", str(10 ** 11)], ("--dataset-size",)),
    (["exact", "--steps"], ("--steps", "expected one argument")),
    (["exact", "--no-such-flag"], ("--no-such-flag",)),
    (["exact", "--model", "spiral"], ("--model", "spiral")),
    (["simulate", "--scheduler", "not-an-address", "--runs", "16"], ("not-an-address",)),
])
def test_bad_options_are_one_line_before_any_work(argv, needles, tmp_path, monkeypatch):
    monkeypatch.setattr(montecarlo, "simulate", None)  # any work would fail loudly
    monkeypatch.setattr(exact, "expected_loss", None)
    assert_one_line_error([*argv, "--out", tmp_path] if argv[-1] != "--steps" else argv,
                          *needles)


def test_unreachable_scheduler_fails_fast(tmp_path, monkeypatch):
    import time
    monkeypatch.setattr(cli, "SCHEDULER_TIMEOUT", 1.0)
    t0 = time.perf_counter()
    assert_one_line_error(["simulate", "--scheduler", "tcp://127.0.0.1:1", "--runs", "16",
                           "--out", tmp_path], "cannot reach the Dask scheduler at "
                                               "'tcp://127.0.0.1:1'")
    assert time.perf_counter() - t0 < 5


def test_exact_steps_zero_and_huge(tmp_path):
    rc, out, err = call(["exact", "--dim", "20", "--steps", "0", "--json", "--out",
                         tmp_path / "zero"])
    assert rc == 0, err
    s = json.loads(out)
    assert s["final_step"] == 0 and s["final_loss"] == s["initial_loss"]
    rc, out, err = call(["exact", "--dim", "20", "--steps", str(10 ** 12), "--json", "--out",
                         tmp_path / "huge"])
    assert rc == 0, err
    s = json.loads(out)
    assert s["final_step"] == 10 ** 12
    assert s["final_loss"] == pytest.approx(s["steady_state_loss"], rel=1e-9)
    # the jump path agrees with the recurrences where both run
    from nqm_mc import NQM, HeavyBall
    model, opt = NQM.paper(50), HeavyBall(0.1, 0.9, ema=0.9)
    rec = np.array([0, 1, 7, 100, 3000])
    a = cli._curve_by_jumps(model, opt, 8, rec)
    b = exact.expected_loss(model, opt, 8, record=rec)
    np.testing.assert_allclose(a.mean, b.mean, rtol=1e-10)
    np.testing.assert_allclose(a.variance, b.variance, rtol=1e-8)


def test_exact_with_a_schedule_refuses_a_huge_horizon(tmp_path):
    cfg = write(tmp_path, '[optimizer]\nkind = "sgd"\nlearning_rate = {kind = "cosine_decay", '
                          'initial = 0.1, decay_steps = 100}\n')
    assert_one_line_error(["exact", "-c", cfg, "--dim", "20", "--steps", str(10 ** 12),
                           "--out", tmp_path], "--steps", str(10 ** 12),
                          str(cli.MAX_SCHEDULE_STEPS))
