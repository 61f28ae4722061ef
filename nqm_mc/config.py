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
    record = "log"               # "log", "all" or every k steps
    threads = 2
    scheduler = "tcp://host:8786"   # optional: run on a Dask cluster

    [output]
    dir = "results/hb"

An unknown section or key, a missing required key or a bad value raises ParameterError naming
the key, the value and what is allowed; the command line turns it into one line and exit 2.
"""

import inspect
from dataclasses import dataclass, field

from nqm_mc.spec._checks import ParameterError
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import OPTIMIZERS
from nqm_mc.spec.schedules import (
    _LR_KINDS,
    ConstantBatch,
    PiecewiseConstantBatch,
    schedule_from_dict,
)

_MODEL_KINDS = {"paper": NQM.paper, "binned": NQM.binned, "power_law": NQM.power_law,
                "arrays": NQM}
RUN_KEYS = {"steps": int, "runs": int, "seed": int, "target": float, "dtype": str,
            "keep_paths": int, "record": (str, int), "n_records": int, "threads": int,
            "block_size": int, "scheduler": str, "method": str}
OUTPUT_KEYS = {"dir": str, "json": bool}
SECTIONS = ("model", "optimizer", "batch", "run", "output")


@dataclass
class Experiment:
    """A parsed config: objects for the specs, plain values for the run and output."""

    model: NQM | None = None
    optimizer: object = None
    batch_size: object = None
    run: dict = field(default_factory=dict)
    output: dict = field(default_factory=dict)
    source: str = ""


def _err(src, key, value, allowed):
    return ParameterError(f"{src}: bad value for {key!r}: got {value!r}; allowed: {allowed}")


def _params(fn):
    return [n for n, p in inspect.signature(fn).parameters.items()
            if n not in ("self", "cls") and p.kind is not p.VAR_KEYWORD]


def _check_keys(src, section, table, allowed):
    if not isinstance(table, dict):
        raise _err(src, section, table, "a table")
    for k in table:
        if k not in allowed:
            raise ParameterError(f"{src}: unknown key {section + '.' + k!r}; allowed keys in "
                                 f"[{section}]: {', '.join(sorted(allowed))}")


def _schedule(src, key, value):
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


def parse(data, src="config"):
    """Build an Experiment from a dict (the parsed TOML)."""
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


def _build(exp, section, table, src):
    data = {section: table}
    if "model" in data:
        _check_keys(src, "model", data["model"], set(data["model"]) if isinstance(
            data["model"], dict) else set())
        m = dict(data["model"])
        kind = m.pop("kind", "paper")
        if kind not in _MODEL_KINDS:
            raise _err(src, "model.kind", kind, ", ".join(_MODEL_KINDS))
        _check_keys(src, "model", m, set(_params(_MODEL_KINDS[kind])))
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


def _run_output(exp, data, src):
    for name, keys, dest in (("run", RUN_KEYS, exp.run), ("output", OUTPUT_KEYS, exp.output)):
        if name in data:
            t = data[name]
            _check_keys(src, name, t, set(keys))
            for k, v in t.items():
                types = keys[k] if isinstance(keys[k], tuple) else (keys[k],)
                ok = any(isinstance(v, ty) and not (ty in (int, float) and isinstance(v, bool))
                         for ty in types) or (float in types and isinstance(v, int)
                                              and not isinstance(v, bool))
                if not ok:
                    raise _err(src, f"{name}.{k}", v, " or ".join(ty.__name__ for ty in types))
                dest[k] = v


def load(path):
    """Parse a TOML experiment file."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ParameterError(f"config file {path!r} not found") from None
    except tomllib.TOMLDecodeError as err:
        raise ParameterError(f"{path}: invalid TOML: {err}") from None
    try:
        return parse(data, src=str(path))
    except ParameterError:
        raise
    except (TypeError, ValueError) as err:
        raise ParameterError(f"{path}: {err}") from None
