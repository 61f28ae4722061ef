"""Property tests of the command line's input paths: whatever the options or the config file,
``nqm-mc exact`` and ``nqm-mc simulate`` end with exit status 0, or 2 and exactly one stderr
line ``nqm-mc: error: ...`` -- never an exception, another status or a hang. Runs in-process
(``main(argv)``), tiny sizes, figures skipped; a power check shows the harness catches a
broken input path."""

import contextlib
import io
import math
import os
import signal
import warnings

import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from nqm_mc import cli, config  # noqa: E402
from tests.tiers import example_counts  # noqa: E402

SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))
HANG_SECONDS = 20


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang("no answer within the time limit")


def run_checked(argv, out_dir):
    """Run one command line; raise AssertionError unless it honours the promise."""
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(HANG_SECONDS)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings():
            warnings.simplefilter("error")  # a warning would be a stray stderr line
            rc = cli.main([*argv, "--out", str(out_dir)])
    except BaseException as exc:  # noqa: BLE001 - any escape breaks the promise
        raise AssertionError(f"{argv}: {type(exc).__name__}: {exc}") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    lines = err.getvalue().strip().splitlines()
    if rc == 0:
        return rc, lines
    assert rc == 2, (argv, rc, lines)
    assert len(lines) == 1 and lines[0].startswith("nqm-mc: error: "), (argv, lines)
    return rc, lines


@pytest.fixture(scope="module", autouse=True)
def compiled(tmp_path_factory):
    """The kernels the commands reach most, compiled (or loaded from the disk cache) before the
    fuzzing: its time limit is for hangs, and a cold cache's compilation takes longer."""
    from nqm_mc import plotting
    d = tmp_path_factory.mktemp("warm")
    with pytest.MonkeyPatch.context() as m:
        for name in ("plot_exact", "plot_mean"):  # as in the tests (fixture fast)
            m.setattr(plotting, name, lambda res, path, *a, **k: path)
        _run_quietly(d)


def _run_quietly(d):
    for argv in (["exact", "--dim", "10", "--steps", "20"],
                 ["simulate", "--dim", "10", "--steps", "20", "--runs", "16", "--quiet"],
                 ["simulate", "--dim", "10", "--steps", "20", "--runs", "16", "--quiet",
                  "--dtype", "float32"],
                 ["simulate", "--dim", "10", "--steps", "20", "--runs", "16", "--quiet",
                  "--method", "skip"]):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            rc = cli.main([*argv, "--out", str(d / str(len(os.listdir(d))))])
        assert rc == 0, (argv, err.getvalue())


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    from nqm_mc import plotting
    for name in ("plot_exact", "plot_mean"):
        monkeypatch.setattr(plotting, name, lambda res, path, *a, **k: path)
    monkeypatch.setattr(cli, "SCHEDULER_TIMEOUT", 0.2)


# ---------------------------------------------------------------- option values
BAD_INTS = st.sampled_from(["-1", "0", "-9223372036854775809", str(2 ** 64), str(10 ** 30),
                            "1.5", "1e3", "nan", "", "abc", "0x10", " 7", "--dim"])
FLOATS = st.one_of(
    st.sampled_from(["nan", "inf", "-inf", "-0.0", "0", "1e308", "1e-320", "abc", "", "1,5",
                     "--lr"]),
    st.floats(allow_nan=True, allow_infinity=True, width=64).map(repr))
RARE = st.integers(0, 9).map(lambda i: i == 7)  # true about one time in ten
GARBAGE = st.sampled_from(["", "x", "ßpäm", "--", "-1", "1e999", "\x00"])


def small(lo, hi):
    return st.integers(lo, hi).map(str)


INT_OPTIONS = {  # option -> valid values that keep a run tiny
    "--dim": small(1, 20), "--bins": small(2, 30), "--batch-size": small(1, 10 ** 18),
    "--seed": small(0, 2 ** 64 - 1), "--keep-paths": small(0, 40), "--threads": small(1, 4),
}
EXACT_ONLY = {"--steps": st.one_of(small(0, 50), st.sampled_from([str(10 ** 12),
                                                                  str(2 ** 62)]))}
SIM_ONLY = {"--steps": small(0, 50), "--runs": small(1, 32),
            "--dataset-size": small(2, 64), "--nu": FLOATS,
            "--noise": st.sampled_from(["gaussian", "student_t", "finite_data", "cauchy"]),
            "--dtype": st.sampled_from(["float64", "float32", "float16"]),
            "--scheduler": st.sampled_from(["tcp://127.0.0.1:1", "nope", "tcp://", "::::"])}
FLOAT_OPTIONS = ["--lr", "--momentum", "--preconditioning", "--ema", "--clip-norm", "--target",
                 "--curvature-exponent", "--noise-exponent"]
CHOICES = {"--model": ["paper", "binned", "power_law", "spiral"],
           "--optimizer": ["sgd", "heavy_ball", "nesterov", "adam", "rmsprop", "adagrad",
                           "sign_sgd", "lbfgs"]}


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(["exact", "simulate"]))
    ints = {**INT_OPTIONS, **(EXACT_ONLY if command == "exact" else SIM_ONLY)}
    if command == "exact":
        ints = {k: v for k, v in ints.items() if k not in ("--seed", "--keep-paths",
                                                            "--threads")}
    argv = [command, "--dim", "12", "--steps", "20"] + (
        ["--runs", "16", "--quiet"] if command == "simulate" else [])
    for opt in draw(st.lists(st.sampled_from(sorted(ints) + FLOAT_OPTIONS + sorted(CHOICES)),
                             max_size=4, unique=True)):
        if opt in CHOICES:
            argv += [opt, draw(st.sampled_from(CHOICES[opt]))]
        elif opt in FLOAT_OPTIONS:
            argv += [opt, draw(st.one_of(FLOATS, st.floats(0.001, 0.99).map(repr)))]
        elif draw(st.booleans()):
            argv += [opt, draw(ints[opt])]
        else:
            argv += [opt, draw(BAD_INTS if opt not in FLOAT_OPTIONS else FLOATS)]
    if draw(RARE):  # a flag without its value, or garbage
        argv += draw(st.sampled_from([["--steps"], ["--lr"], ["--bogus"], [draw(GARBAGE)]]))
    if draw(st.booleans()):
        argv.append("--json")
    return argv


@pytest.mark.parametrize("n", example_counts(60, 250))
def test_any_command_line_is_ok_or_one_line_error(n, tmp_path_factory):
    @settings(max_examples=n, **SETTINGS)
    @given(argv=command_lines())
    def prop(argv):
        run_checked(argv, tmp_path_factory.mktemp("o", numbered=True))
    prop()


# ---------------------------------------------------------------- config files
SCALARS = st.one_of(
    st.integers(-2 ** 70, 2 ** 70), st.integers(-3, 40),
    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
    st.text(max_size=8), st.sampled_from(["log", "all", "exact", "bisect", "reference",
                                          "float32", "float64", "paper", "binned",
                                          "power_law", "arrays", "sgd", "heavy_ball", "adam",
                                          "cosine_decay", "tcp://127.0.0.1:1"]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4),
    st.dictionaries(st.sampled_from(["kind", "initial", "decay_steps", "value", "schedule",
                                     "warmup_steps", "x"]), inner, max_size=3)), max_leaves=6)
KEYS = {"model": ["kind", "dim", "n_bins", "curvature_exponent", "noise_exponent",
                  "noise_scale", "initial_variance", "curvatures", "noise_variances",
                  "multiplicities", "initial_mean", "name"],
        "optimizer": ["kind", "learning_rate", "momentum", "preconditioning", "ema",
                      "clip_norm", "beta1", "beta2", "eps", "decay"],
        "batch": ["size", "boundaries", "sizes"],
        "run": sorted(config.RUN_KEYS), "output": ["json", "dir"]}
UNKNOWN = {"model": "dimm", "optimizer": "lr", "batch": "step", "run": "setps",
           "output": "format"}
UNIT = st.floats(0.01, 0.95)
SMALL = {  # plausible values, so that many files are valid and the runs happen
    ("model", "kind"): st.sampled_from(["paper", "binned", "power_law"]),
    ("model", "dim"): st.integers(1, 20), ("model", "n_bins"): st.integers(2, 30),
    ("model", "curvature_exponent"): UNIT, ("model", "noise_exponent"): UNIT,
    ("model", "noise_scale"): UNIT, ("model", "initial_variance"): UNIT,
    ("optimizer", "kind"): st.sampled_from(["sgd", "heavy_ball", "nesterov", "adam"]),
    ("optimizer", "learning_rate"): st.one_of(UNIT, st.fixed_dictionaries(
        {"kind": st.just("cosine_decay"), "initial": UNIT, "decay_steps": st.integers(1, 50)})),
    ("optimizer", "momentum"): UNIT, ("optimizer", "preconditioning"): UNIT,
    ("optimizer", "ema"): UNIT, ("optimizer", "clip_norm"): UNIT,
    ("batch", "size"): st.integers(1, 64), ("batch", "boundaries"): st.just([5]),
    ("batch", "sizes"): st.just([4, 8]),
    ("run", "steps"): st.integers(0, 50), ("run", "runs"): st.integers(1, 32),
    ("run", "seed"): st.integers(0, 2 ** 63 - 1), ("run", "target"): UNIT,
    ("run", "dtype"): st.sampled_from(["float64", "float32"]),
    ("run", "keep_paths"): st.integers(0, 16), ("run", "n_records"): st.integers(2, 100),
    ("run", "record"): st.one_of(st.sampled_from(["log", "all"]), st.integers(1, 30),
                                 st.lists(st.integers(0, 20), min_size=1, max_size=4)),
    ("run", "threads"): st.integers(1, 2), ("run", "block_size"): st.integers(1, 64),
    ("run", "method"): st.sampled_from(["exact", "bisect", "reference"]),
    ("output", "json"): st.booleans(),
}


def _toml_value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else ("inf" if v > 0 else "-inf") if math.isinf(v) \
            else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):  # a TOML basic string
        return '"' + "".join(f"\\u{ord(ch):04x}" if ord(ch) < 32 or ch in '"\\\x7f'
                             else ch for ch in v) + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"


@st.composite
def config_files(draw):
    lines = ["[extra]"] if draw(RARE) else []
    for section in draw(st.lists(st.sampled_from(sorted(KEYS)), max_size=4, unique=True)):
        lines.append(f"[{section}]")
        keys = draw(st.lists(st.sampled_from(KEYS[section]), max_size=4, unique=True))
        if section == "optimizer" and "learning_rate" not in keys and not draw(RARE):
            keys.append("learning_rate")
        if section == "batch" and not draw(RARE):
            keys = draw(st.sampled_from([["size"], ["boundaries", "sizes"]]))
        for key in keys + ([UNKNOWN[section]] if draw(RARE) else []):
            if key == "dir":
                continue  # --out is given; the output directory is not fuzzed
            plausible = SMALL.get((section, key))
            value = draw(plausible) if plausible is not None and not draw(
                st.sampled_from([False, False, True])) else draw(VALUES)
            if section == "run" and key in ("steps", "runs") and isinstance(value, int) \
                    and value > 50:
                value = 50  # long runs are legitimate, not input errors
            if section == "model" and key in ("dim", "n_bins") and isinstance(value, int) \
                    and value > 10 ** 4:
                value = -value  # so is a big model
            lines.append(f"{key} = {_toml_value(value)}")
    text = "\n".join(lines) + "\n"
    if draw(RARE):  # damage the file
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.sampled_from(["[", "\x00", "=", "\"", "\n[run]\n"])) \
            + text[cut:]
    return b"\xff\xfe" + text.encode() if draw(RARE) else text.encode("utf-8")


@pytest.mark.parametrize("n", example_counts(40, 150))
def test_any_config_file_is_ok_or_one_line_error(n, tmp_path_factory):
    @settings(max_examples=n, **SETTINGS)
    @given(content=config_files(), command=st.sampled_from(["exact", "simulate"]),
           flags=st.booleans())
    def prop(content, command, flags):
        d = tmp_path_factory.mktemp("c", numbered=True)
        (d / "c.toml").write_bytes(content)
        # flags override the file: the defaults (10000 steps, 100 runs) would be slow, not
        # wrong
        argv = [command, "-c", str(d / "c.toml"), "--steps", "20"] + (
            ["--runs", "16", "--quiet"] if command == "simulate" else [])
        if flags:  # and the file's model (its keys are still checked)
            argv += ["--dim", "10"]
        run_checked(argv, d)
    prop()


# ---------------------------------------------------------------- power check
def test_harness_catches_a_broken_input_path(tmp_path, monkeypatch):
    """The harness fails on a traceback, a multi-line usage message and a wrong status."""
    import argparse

    with monkeypatch.context() as m:  # argparse's own multi-line usage error
        m.setattr(cli._Parser, "error", argparse.ArgumentParser.error)
        with pytest.raises(AssertionError):
            run_checked(["exact", "--steps", "abc"], tmp_path)

        @settings(max_examples=30, phases=[Phase.generate], **SETTINGS)
        @given(argv=command_lines())
        def prop(argv):
            run_checked(argv, tmp_path)
        with pytest.raises(AssertionError):
            prop()
    with monkeypatch.context() as m:  # a binary config file escaping as UnicodeDecodeError
        def raw_load(path):
            with open(path, encoding="utf-8") as f:
                return config.parse({"text": f.read()}, str(path))
        m.setattr(config, "load", raw_load)
        (tmp_path / "b.toml").write_bytes(b"\xff\xfe[run]\n")
        with pytest.raises(AssertionError, match="UnicodeDecodeError"):
            run_checked(["exact", "-c", str(tmp_path / "b.toml")], tmp_path)
    with monkeypatch.context() as m:  # an error reported with the wrong exit status
        m.setattr(cli, "EXIT_BAD_INPUT", 1)
        with pytest.raises(AssertionError):
            run_checked(["exact", "--dim", "0"], tmp_path)
    with monkeypatch.context() as m:  # a hang
        m.setattr("tests.test_cli_fuzz.HANG_SECONDS", 1)
        m.setattr(cli, "cmd_exact", lambda args: __import__("time").sleep(5))
        with pytest.raises(AssertionError, match="Hang"):
            run_checked(["exact"], tmp_path)
