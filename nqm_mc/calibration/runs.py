"""Measured training curves: :class:`Run`, and reading and writing them (CSV or TOML).

CSV is long format, one row per measured point, with the columns ``run, step, loss,
optimizer, learning_rate, momentum, batch_size`` (``momentum`` may be empty for SGD) and,
optionally, ``preconditioning`` and ``ema``. Rows of one run share its settings. TOML holds
``[[runs]]`` tables with ``label``, ``optimizer``, ``learning_rate`` (a number or a schedule
table such as ``{kind = "step_decay", ...}``), ``momentum``, ``batch_size``, ``steps`` and
``loss`` (lists), and optionally ``preconditioning`` and ``ema``.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from nqm_mc.spec._checks import ParameterError, check_batch_size
from nqm_mc.spec.optimizers import SGD, HeavyBall, Nesterov, Optimizer
from nqm_mc.spec.schedules import as_schedule

__all__ = ["Run", "read_runs", "write_runs", "COLUMNS"]

#: the CSV columns, in order (the last two optional on input)
COLUMNS = ("run", "step", "loss", "optimizer", "learning_rate", "momentum", "batch_size",
           "preconditioning", "ema")
_REQUIRED = COLUMNS[:7]
_OPTIMIZERS = {"sgd": SGD, "heavy_ball": HeavyBall, "nesterov": Nesterov}


@dataclass(frozen=True, eq=False)
class Run:
    """One measured loss curve and the settings that produced it.

    Parameters
    ----------
    steps : array_like of int, shape (n,)
        Steps of the measurements, strictly increasing, >= 0.
    loss : array_like, shape (n,)
        Measured losses (finite, > 0), for example a mean over a few seeds.
    optimizer : SGD, HeavyBall or Nesterov
        The optimizer of the run (its learning rate may be a schedule); linear, no clipping.
    batch_size : int
        The batch size, >= 1.
    label : str, optional
        A name for tables and figures.

    Raises
    ------
    ParameterError
        If an argument is invalid; the message names it and its value.
    """

    steps: np.ndarray
    loss: np.ndarray
    optimizer: Optimizer
    batch_size: int
    label: str = ""

    def __post_init__(self) -> None:
        owner = "Run"
        try:
            s = np.asarray(self.steps)
        except (TypeError, ValueError):
            s = np.asarray([], dtype=object)
        if s.ndim != 1 or s.size == 0 or s.dtype.kind not in "iuf" or \
                not np.all(np.isfinite(s.astype(float))) or np.any(s != np.round(s)):
            raise ParameterError(f"The 'steps' parameter of {owner} must be a non-empty 1-d "
                                 f"array of integer steps. Got {_short(self.steps)} instead.")
        s = s.astype(np.int64)
        if np.any(s < 0) or np.any(np.diff(s) <= 0):
            raise ParameterError(f"The 'steps' parameter of {owner} must be >= 0 and strictly "
                                 f"increasing. Got {_short(s.tolist())} instead.")
        try:
            v = np.asarray(self.loss, dtype=float)
        except (TypeError, ValueError):
            raise ParameterError(f"The 'loss' parameter of {owner} must be an array of finite "
                                 f"losses > 0. Got {_short(self.loss)} instead.") from None
        if v.shape != s.shape:
            raise ParameterError(f"The 'loss' parameter of {owner} must have the length of "
                                 f"'steps' ({s.size}). Got shape {v.shape} instead.")
        bad = ~(np.isfinite(v) & (v > 0))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ParameterError(f"The 'loss' parameter of {owner} must hold finite losses > 0. "
                                 f"Got {v[i]!r} at step {s[i]} instead.")
        if not isinstance(self.optimizer, Optimizer) or not self.optimizer.is_linear:
            raise ParameterError(f"The 'optimizer' parameter of {owner} must be SGD, HeavyBall "
                                 f"or Nesterov without clipping (the exact engine's). Got "
                                 f"{self.optimizer!r} instead.")
        b = check_batch_size("batch_size", self.batch_size, owner)
        s.setflags(write=False)
        v.setflags(write=False)
        object.__setattr__(self, "steps", s)
        object.__setattr__(self, "loss", v)
        object.__setattr__(self, "batch_size", b)
        object.__setattr__(self, "label", str(self.label))

    @property
    def name(self) -> str:
        """The label, or a description of the settings when there is none."""
        return self.label or describe(self.optimizer, self.batch_size)


def describe(optimizer: Optimizer, batch_size: int) -> str:
    """Return a short description such as ``sgd lr=0.1 B=32``."""
    lr = optimizer.learning_rate
    lr_s = f"{optimizer.base_learning_rate:.4g}" if lr.is_constant else lr.kind
    out = f"{optimizer.name} lr={lr_s}"
    if optimizer.has_momentum:
        out += f" beta={getattr(optimizer, 'momentum', 0.0):.4g}"
    if optimizer.preconditioning:
        out += f" p={optimizer.preconditioning:.3g}"
    if optimizer.ema is not None:
        out += f" ema={optimizer.ema:.4g}"
    return f"{out} B={batch_size}"


def _short(value: Any, n: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + "..."


def make_optimizer(name: str, learning_rate: Any, momentum: Any = None,
                   preconditioning: Any = None, ema: Any = None,
                   where: str = "") -> Optimizer:
    """Build an optimizer from the fields of a runs file (``where`` prefixes messages)."""
    key = str(name).strip().lower().replace("-", "_")
    if key not in _OPTIMIZERS:
        raise ParameterError(f"{where}optimizer must be one of sgd, heavy_ball, nesterov; got "
                             f"{name!r}.")
    kw: dict[str, Any] = {"learning_rate": as_schedule(learning_rate, "learning_rate",
                                                       "read_runs")}
    if preconditioning is not None:
        kw["preconditioning"] = preconditioning
    if ema is not None:
        kw["ema"] = ema
    if key != "sgd":
        if momentum is None:
            raise ParameterError(f"{where}optimizer {key} needs a momentum; got none.")
        kw["momentum"] = momentum
    return _OPTIMIZERS[key](**kw)


def _number(text: str, what: str, where: str, allow_empty: bool = False) -> float | None:
    t = text.strip()
    if not t:
        if allow_empty:
            return None
        raise ParameterError(f"{where}{what} is empty.")
    try:
        v = float(t)
    except ValueError:
        raise ParameterError(f"{where}{what} must be a number; got {t!r}.") from None
    if not math.isfinite(v):
        raise ParameterError(f"{where}{what} must be finite; got {t!r}.")
    return v


def _read_csv(path: str) -> list[Run]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise ParameterError(f"{path}: the file is empty (need a header row with "
                                 f"{', '.join(_REQUIRED)}).") from None
        missing = [c for c in _REQUIRED if c not in header]
        if missing:
            raise ParameterError(f"{path} line 1: missing column(s) {', '.join(missing)} (need "
                                 f"{', '.join(_REQUIRED)}).")
        col = {c: header.index(c) for c in COLUMNS if c in header}
        order: list[str] = []
        points: dict[str, list[tuple[int, float, int]]] = {}
        settings: dict[str, tuple[Any, ...]] = {}
        first_line: dict[str, int] = {}
        for row in reader:
            line = reader.line_num
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{path} line {line}: "
            if len(row) != len(header):
                raise ParameterError(f"{where}{len(row)} fields; the header has "
                                     f"{len(header)}.")

            def get(c: str, row: list[str] = row) -> str:
                return row[col[c]].strip() if c in col else ""

            run = get("run")
            if not run:
                raise ParameterError(f"{where}run is empty.")
            step = _number(get("step"), "step", where)
            assert step is not None
            if step < 0 or step != round(step):
                raise ParameterError(f"{where}step must be an integer >= 0; got "
                                     f"{get('step')!r}.")
            loss = _number(get("loss"), "loss", where)
            assert loss is not None
            if loss <= 0:
                raise ParameterError(f"{where}loss must be > 0; got {get('loss')!r}.")
            lr = _number(get("learning_rate"), "learning_rate", where)
            mom = _number(get("momentum"), "momentum", where, allow_empty=True)
            b = _number(get("batch_size"), "batch_size", where)
            assert b is not None
            if b < 1 or b != round(b):
                raise ParameterError(f"{where}batch_size must be an integer >= 1; got "
                                     f"{get('batch_size')!r}.")
            pre = _number(get("preconditioning"), "preconditioning", where, allow_empty=True)
            ema = _number(get("ema"), "ema", where, allow_empty=True)
            key = (get("optimizer").lower(), lr, mom, int(b), pre, ema)
            if run not in settings:
                settings[run] = key
                order.append(run)
                points[run] = []
                first_line[run] = line
            elif settings[run] != key:
                raise ParameterError(f"{where}run {run!r} changes its settings (optimizer, "
                                     f"learning_rate, momentum, batch_size, preconditioning, "
                                     f"ema) from line {first_line[run]}.")
            points[run].append((int(step), loss, line))
    if not order:
        raise ParameterError(f"{path}: no data rows.")
    runs = []
    for run in order:
        pts = sorted(points[run])
        for (s0, _, l0), (s1, _, l1) in zip(pts, pts[1:], strict=False):
            if s0 == s1:
                raise ParameterError(f"{path} line {max(l0, l1)}: run {run!r} has step {s1} "
                                     f"twice (also line {min(l0, l1)}).")
        name, lr, mom, b, pre, ema = settings[run]
        where = f"{path} line {first_line[run]}: "
        try:
            opt = make_optimizer(name, lr, mom, pre, ema, where)
        except ParameterError as err:
            msg = str(err)
            raise ParameterError(msg if msg.startswith(path) else where + msg) from None
        runs.append(Run(np.array([p[0] for p in pts]), np.array([p[1] for p in pts]), opt, b,
                        label=run))
    return runs


def _read_toml(path: str) -> list[Run]:
    import tomllib
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ParameterError(f"{path}: not valid TOML ({err}).") from None
    tables = data.get("runs")
    if not isinstance(tables, list) or not tables:
        raise ParameterError(f"{path}: need a non-empty array of [[runs]] tables.")
    runs = []
    for k, t in enumerate(tables):
        where = f"{path} [[runs]] #{k + 1}: "
        if not isinstance(t, dict):
            raise ParameterError(f"{where}not a table.")
        missing = [c for c in ("optimizer", "learning_rate", "batch_size", "steps", "loss")
                   if c not in t]
        if missing:
            raise ParameterError(f"{where}missing key(s) {', '.join(missing)}.")
        try:
            opt = make_optimizer(t["optimizer"], t["learning_rate"], t.get("momentum"),
                                 t.get("preconditioning"), t.get("ema"), where)
            runs.append(Run(t["steps"], t["loss"], opt, t["batch_size"],
                            label=str(t.get("label", f"run{k + 1}"))))
        except ParameterError as err:
            msg = str(err)
            raise ParameterError(msg if msg.startswith(path) else where + msg) from None
    return runs


def read_runs(path: str | os.PathLike[str]) -> list[Run]:
    """Read measured runs from a CSV (long format) or TOML file.

    Parameters
    ----------
    path : str or path-like
        A ``.csv`` file (one row per point; columns ``run, step, loss, optimizer,
        learning_rate, momentum, batch_size`` and optionally ``preconditioning, ema``) or a
        ``.toml`` file of ``[[runs]]`` tables (see the module docstring).

    Returns
    -------
    list of Run
        In order of first appearance.

    Raises
    ------
    ParameterError
        If the file cannot be read or a row is malformed: one line naming the file, the line
        number and the field.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ParameterError(f"The runs file {p} does not exist or is not a file.")
    try:
        if p.lower().endswith(".toml"):
            return _read_toml(p)
        return _read_csv(p)
    except UnicodeDecodeError:
        raise ParameterError(f"{p}: not a UTF-8 text file.") from None
    except csv.Error as err:
        raise ParameterError(f"{p}: malformed CSV ({err}).") from None


def write_runs(path: str | os.PathLike[str], runs: list[Run], *,
               overwrite: bool = True) -> str:
    """Write runs in the CSV format of :func:`read_runs` (atomically).

    Learning-rate schedules have no CSV form; write those runs as TOML by hand.

    Parameters
    ----------
    path : str or path-like
        Destination ``.csv``.
    runs : list of Run
        The runs; labels name them (``run1``, ``run2``, ... when empty; they must be distinct).
    overwrite : bool, default True
        Replace an existing file.

    Returns
    -------
    str
        The path written.

    Raises
    ------
    ParameterError
        If a run is not a Run, has a schedule, or two runs share a label.
    """
    from nqm_mc._files import write_csv
    rows = []
    seen: set[str] = set()
    for k, r in enumerate(runs):
        if not isinstance(r, Run):
            raise ParameterError(f"The 'runs' parameter of write_runs must hold Run objects. "
                                 f"Got {type(r).__name__} at index {k} instead.")
        if not r.optimizer.learning_rate.is_constant:
            raise ParameterError(f"write_runs: run {k} has a learning-rate schedule, which the "
                                 "CSV format cannot hold.")
        label = r.label or f"run{k + 1}"
        if label in seen:
            raise ParameterError(f"write_runs: two runs are labelled {label!r}.")
        seen.add(label)
        o = r.optimizer
        for s, v in zip(r.steps.tolist(), r.loss.tolist(), strict=True):
            rows.append([label, s, repr(float(v)), o.name, repr(o.base_learning_rate),
                         getattr(o, "momentum", None), r.batch_size,
                         o.preconditioning, o.ema])
    return write_csv(path, COLUMNS, rows, overwrite=overwrite)


def check_runs(runs: Any, owner: str) -> list[Run]:
    """Return ``runs`` as a non-empty list of Run (ParameterError otherwise)."""
    if isinstance(runs, Run):
        runs = [runs]
    try:
        out = list(runs)
    except TypeError:
        out = []
    if not out or not all(isinstance(r, Run) for r in out):
        raise ParameterError(f"The 'runs' parameter of {owner} must be a non-empty list of Run. "
                             f"Got {_short(runs)} instead.")
    return out

