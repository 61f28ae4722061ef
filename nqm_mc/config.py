"""Experiments described in TOML files, every key checked.

    [model]                      # kind = paper | binned | power_law | arrays
    kind = "paper"
    dim = 10000

    [optimizer]                  # kind = sgd | heavy_ball | nesterov
    kind = "heavy_ball"
    learning_rate = 0.05         # or a schedule table, e.g. {kind = "cosine_decay", ...}
    momentum = 0.9
    preconditioning = 0.25
    ema = 0.99                   # optional

    [batch]
    size = 64                    # or boundaries = [...] and sizes = [...]

    [run]
    steps = 1000
    runs = 1000
    seed = 0
    target = 0.5
    dtype = "float64"
    keep_paths = 10
    record = "log"               # "log", "all", every k steps or a list of steps
    n_records = 100              # points of record = "log" (simulate 100, exact 60)
    block_size = 16              # simulate: trajectories per kernel call (results unchanged)
    method = "auto"              # simulate: "auto", "step" or "skip" (the sampler);
                                 # exact: steps to target by "exact", "bisect" or "reference"
    threads = 2
    scheduler = "tcp://host:8786"   # optional: run on a Dask cluster

    [output]
    dir = "results/hb"

Every key has an effect: ``steps``, ``target``, ``record``, ``n_records`` and ``method`` are
used by both commands (``method`` names the sampler of ``nqm-mc simulate`` and the
steps-to-target algorithm of ``nqm-mc exact``; each command refuses the other's values), the
other run keys by ``nqm-mc simulate``.
An unknown section or key, a missing required key or a bad value raises ParameterError naming
the key, the value and what is allowed; the command line turns it into one line and exit 2.
"""

from __future__ import annotations

import inspect
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from nqm_mc.spec._checks import ParameterError
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import OPTIMIZERS, Optimizer
from nqm_mc.spec.schedules import (
    _LR_KINDS,
    BatchSchedule,
    ConstantBatch,
    PiecewiseConstantBatch,
    Schedule,
    schedule_from_dict,
)

_MODEL_KINDS: dict[str, Callable[..., NQM]] = {
    "paper": NQM.paper, "binned": NQM.binned, "power_law": NQM.power_law, "arrays": NQM}
RUN_KEYS: dict[str, type | tuple[type, ...]] = {
    "steps": int, "runs": int, "seed": int, "target": float, "dtype": str,
    "keep_paths": int, "record": (str, int, list), "n_records": int, "threads": int,
    "block_size": int, "scheduler": str, "method": str}
MAX_STEPS = 2 ** 62        # the exact engine's horizon (constant hyperparameters)
MAX_DIM = 10 ** 8          # directions of a model built from a flag or a file
MAX_RECORDS = 10 ** 6      # recorded steps of one curve
# inclusive bounds of the integer run keys (a command may narrow them)
RUN_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "steps": (0, MAX_STEPS), "runs": (1, 2 ** 32 - 1), "seed": (0, 2 ** 64 - 1),
    "keep_paths": (0, 2 ** 32 - 1), "n_records": (2, MAX_RECORDS),
    "threads": (1, 4096), "block_size": (1, 2 ** 20)}
RUN_CHOICES: dict[str, tuple[str, ...]] = {
    "dtype": ("float64", "float32"),
    "method": ("auto", "step", "skip", "exact", "bisect", "reference")}
OUTPUT_KEYS: dict[str, type | tuple[type, ...]] = {"dir": str, "json": bool}
SECTIONS = ("model", "optimizer", "batch", "run", "output")


@dataclass
class Experiment:
    """A parsed config: objects for the specs, plain values for the run and output.

    Attributes
    ----------
    model : NQM or None
        The [model] section's model, if given.
    optimizer : Optimizer or None
        The [optimizer] section's optimizer, if given.
    batch_size : int, BatchSchedule or None
        The [batch] section's batch size or schedule, if given.
    run, output : dict
        The [run] and [output] keys, checked.
    source : str
        Where the config came from (a path, or "config"), named in error messages.
    """

    model: NQM | None = None
    optimizer: Optimizer | None = None
    batch_size: int | BatchSchedule | None = None
    run: dict[str, Any] = field(default_factory=dict)
    output: dict[str, Any] = field(default_factory=dict)
    source: str = ""


def _short(value: object, n: int = 80) -> str:
    r = repr(value)
    return r if len(r) <= n else r[:n - 4] + " ..."


def _err(src: str, key: str, value: object, allowed: str) -> ParameterError:
    return ParameterError(f"{src}: bad value for {key!r}: got {_short(value)}; allowed: "
                          f"{allowed}")


def _params(fn: Callable[..., Any]) -> list[str]:
    return [n for n, p in inspect.signature(fn).parameters.items()
            if n not in ("self", "cls") and p.kind is not p.VAR_KEYWORD]


def _check_keys(src: str, section: str, table: object, allowed: set[str]) -> None:
    if not isinstance(table, dict):
        raise _err(src, section, table, "a table")
    for k in table:
        if k not in allowed:
            raise ParameterError(f"{src}: unknown key {section + '.' + k!r}; allowed keys in "
                                 f"[{section}]: {', '.join(sorted(allowed))}")


def _schedule(src: str, key: str, value: object) -> float | Schedule:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, dict):
        kind = value.get("kind")
        if kind not in _LR_KINDS:
            raise _err(src, key + ".kind", kind, ", ".join(sorted(_LR_KINDS)))
        cls = _LR_KINDS[kind]
        allowed = set(_params(cls)) | {"kind"}
        _check_keys(src, key, value, allowed)
        if "schedule" in value:
            value = {**value, "schedule": _schedule(src, key + ".schedule", value["schedule"])}
            if isinstance(value["schedule"], float):
                raise _err(src, key + ".schedule", value["schedule"], "a schedule table")
            value["schedule"] = value["schedule"].to_dict()
        return schedule_from_dict(value)
    raise _err(src, key, value, "a number or a schedule table")


def parse(data: dict[str, Any], src: str = "config") -> Experiment:
    """Build an Experiment from a dict (the parsed TOML).

    Parameters
    ----------
    data : dict
        The config's sections, as ``tomllib`` parses them.
    src : str, default "config"
        Where the config came from, named in error messages.

    Returns
    -------
    Experiment

    Raises
    ------
    ParameterError
        If a section or key is unknown, a required key is missing or a value is bad.
    """
    if not isinstance(data, dict):
        raise ParameterError(f"{src}: the config must be a table of sections")
    for s in data:
        if s not in SECTIONS:
            raise ParameterError(f"{src}: unknown section [{s}]; allowed: "
                                 f"{', '.join(SECTIONS)}")
    exp = Experiment(source=src)
    for section in ("model", "optimizer", "batch"):
        if section in data:
            try:
                _build(exp, section, data[section], src)
            except ParameterError as err:
                msg = str(err)
                raise ParameterError(msg if msg.startswith(src) else f"{src}: [{section}] {msg}") \
                    from None
            except TypeError as err:
                raise ParameterError(f"{src}: [{section}] {err}") from None
    _run_output(exp, data, src)
    return exp


def _build(exp: Experiment, section: str, table: Any, src: str) -> None:
    data = {section: table}
    if "model" in data:
        _check_keys(src, "model", data["model"], set(data["model"]) if isinstance(
            data["model"], dict) else set())
        m = dict(data["model"])
        kind = m.pop("kind", "paper")
        if kind not in _MODEL_KINDS:
            raise _err(src, "model.kind", kind, ", ".join(_MODEL_KINDS))
        _check_keys(src, "model", m, set(_params(_MODEL_KINDS[kind])))
        dim = m.get("dim")
        if isinstance(dim, (int, float)) and not isinstance(dim, bool) and dim > MAX_DIM:
            raise _err(src, "model.dim", dim, f"an int in [1, {MAX_DIM}]")
        exp.model = _MODEL_KINDS[kind](**m)
    if "optimizer" in data:
        o = data["optimizer"]
        _check_keys(src, "optimizer", o, set(o) if isinstance(o, dict) else set())
        o = dict(o)
        kind = o.pop("kind", "sgd")
        if kind not in OPTIMIZERS:
            raise _err(src, "optimizer.kind", kind, ", ".join(OPTIMIZERS))
        _check_keys(src, "optimizer", o, set(_params(OPTIMIZERS[kind])))
        if "learning_rate" not in o:
            raise ParameterError(f"{src}: missing key 'optimizer.learning_rate'")
        o["learning_rate"] = _schedule(src, "optimizer.learning_rate", o["learning_rate"])
        exp.optimizer = OPTIMIZERS[kind](**o)
    if "batch" in data:
        b = data["batch"]
        _check_keys(src, "batch", b, {"size", "boundaries", "sizes"})
        if "size" in b and len(b) == 1:
            exp.batch_size = ConstantBatch(b["size"]).value
        elif set(b) == {"boundaries", "sizes"}:
            exp.batch_size = PiecewiseConstantBatch(b["boundaries"], b["sizes"])
        else:
            raise _err(src, "batch", b, "either size = N or boundaries = [...] and sizes = [...]")


def _run_output(exp: Experiment, data: dict[str, Any], src: str) -> None:
    for name, keys, dest in (("run", RUN_KEYS, exp.run), ("output", OUTPUT_KEYS, exp.output)):
        if name in data:
            t = data[name]
            _check_keys(src, name, t, set(keys))
            for k, v in t.items():
                types = cast("tuple[type, ...]",
                             keys[k] if isinstance(keys[k], tuple) else (keys[k],))
                ok = any(isinstance(v, ty) and not (ty in (int, float) and isinstance(v, bool))
                         for ty in types) or (float in types and isinstance(v, int)
                                              and not isinstance(v, bool))
                if not ok:
                    raise _err(src, f"{name}.{k}", v, " or ".join(ty.__name__ for ty in types))
                if name == "run":
                    _check_run_value(src, k, v)
                dest[k] = v


def _check_run_value(src: str, k: str, v: Any) -> None:
    """Ranges and choices of the run keys (types are checked already)."""
    key = f"run.{k}"
    if k in RUN_INT_BOUNDS:
        lo, hi = RUN_INT_BOUNDS[k]
        if not lo <= v <= hi:
            raise _err(src, key, v, f"an int in [{lo}, {hi}]")
    elif k in RUN_CHOICES and v not in RUN_CHOICES[k]:
        raise _err(src, key, v, ", ".join(map(repr, RUN_CHOICES[k])))
    elif k == "target" and not (math.isfinite(v) and v > 0):
        raise _err(src, key, v, "a finite float > 0")
    elif k == "record":
        if isinstance(v, str) and v not in ("log", "all"):
            raise _err(src, key, v, "'log', 'all', an int >= 1 or a list of steps")
        if isinstance(v, int) and not 1 <= v <= MAX_STEPS:
            raise _err(src, key, v, f"an int in [1, {MAX_STEPS}]")
        if isinstance(v, list) and not (
                0 < len(v) <= MAX_RECORDS and all(isinstance(x, int) and not isinstance(x, bool)
                                                  and 0 <= x <= MAX_STEPS for x in v)):
            raise _err(src, key, v, f"a non-empty list of at most {MAX_RECORDS} ints in "
                       f"[0, {MAX_STEPS}]")
    elif k == "scheduler" and not v.strip():
        raise _err(src, key, v, "a scheduler address such as 'tcp://host:8786'")


def load(path: str | os.PathLike[str]) -> Experiment:
    """Parse a TOML experiment file.

    Parameters
    ----------
    path : str or path-like
        The TOML file.

    Returns
    -------
    Experiment

    Raises
    ------
    ParameterError
        If the file cannot be read, is not UTF-8 TOML, or its config is invalid (see
        :func:`parse`).
    """
    try:
        import tomllib  # type: ignore[import-not-found, unused-ignore]
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[import-not-found, no-redef, unused-ignore]
    try:
        with open(path, "rb") as f:
            text = f.read()
    except FileNotFoundError:
        raise ParameterError(f"config file {str(path)!r} not found") from None
    except IsADirectoryError:
        raise ParameterError(f"config file {str(path)!r} is a directory") from None
    except OSError as err:
        raise ParameterError(f"cannot read config file {str(path)!r}: "
                             f"{err.strerror or err}") from None
    try:
        data = tomllib.loads(text.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise ParameterError(f"config file {str(path)!r} is not UTF-8 text (byte {err.start}: "
                             f"{text[err.start:err.start + 1]!r})") from None
    except tomllib.TOMLDecodeError as err:
        raise ParameterError(f"{path}: invalid TOML: {err}") from None
    try:
        return parse(data, src=str(path))
    except ParameterError:
        raise
    except (TypeError, ValueError, OverflowError, MemoryError) as err:
        raise ParameterError(f"{path}: {type(err).__name__}: {err}") from None
