"""Final-loss tables: one row per training run, read and checked like the curve files.

A table is a CSV file with a header row. Columns (names case-insensitive):

``B`` (or ``batch_size``)
    Batch size, an integer >= 1. Required.
``K`` (or ``steps``)
    Optimizer steps of the run, an integer >= 1. Required.
``loss``
    The final loss, finite and > 0. Required.
``N`` (or ``params``)
    Model size (parameters), > 0. Optional: without it every row is one model size.
``learning_rate`` (or ``lr``)
    Constant learning rate of the run, > 0. Optional: without it every run is taken to share
    one unknown learning rate, which the fit absorbs into the curvature scale.
``schedule``
    ``constant`` (or empty). Other schedules have no closed-form final loss here and are
    refused with the line that names them.
``optimizer``
    ``sgd`` (or empty), for the same reason.
``C`` (or ``compute``)
    Compute of the run in any unit proportional to N B K (optional; it defines the budgets of
    leave-one-budget-out and the unit of planning).
``filtered``
    ``True``/``False`` (optional): rows marked ``True`` are dropped by default
    (``drop_filtered``).

Any other column is kept as text in :attr:`LossTable.extra`.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nqm_mc.spec._checks import ParameterError

__all__ = ["LossTable", "read_table", "is_table", "make_table"]

_ALIASES = {"b": "B", "batch_size": "B", "k": "K", "steps": "K", "loss": "loss",
            "n": "N", "params": "N", "learning_rate": "learning_rate", "lr": "learning_rate",
            "schedule": "schedule", "optimizer": "optimizer", "c": "C", "compute": "C",
            "filtered": "filtered"}
_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


@dataclass(frozen=True, eq=False)
class LossTable:
    """Final losses of training runs (one entry per run).

    Attributes
    ----------
    N, B, K, loss : ndarray
        Model size (nan when the table has no ``N``), batch size, steps and final loss.
    learning_rate : ndarray
        Learning rate per run (nan when not given: one shared unknown rate).
    C : ndarray
        Compute per run as given (nan when not given).
    lines : ndarray of int
        The source line of each row (for messages).
    extra : dict
        Other columns, as arrays of text.
    path : str
        The source file ('' when built in Python).
    """

    N: np.ndarray
    B: np.ndarray
    K: np.ndarray
    loss: np.ndarray
    learning_rate: np.ndarray
    C: np.ndarray
    lines: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    path: str = ""

    def __len__(self) -> int:
        return int(self.loss.size)

    @property
    def has_sizes(self) -> bool:
        """Whether the table gives a model size for every run."""
        return bool(np.all(np.isfinite(self.N)))

    @property
    def has_learning_rates(self) -> bool:
        """Whether the table gives a learning rate for every run."""
        return bool(np.all(np.isfinite(self.learning_rate)))

    @property
    def tokens(self) -> np.ndarray:
        """B K: examples (sequences) seen by each run."""
        return self.B * self.K

    @property
    def budgets(self) -> np.ndarray:
        """The budget of each run: ``C`` when given, else N B K (or B K without sizes)."""
        if np.all(np.isfinite(self.C)):
            return self.C.copy()
        n = self.N if self.has_sizes else np.ones_like(self.B)
        return n * self.B * self.K

    def subset(self, mask: Any) -> LossTable:
        """Return the rows selected by a boolean mask or an index array."""
        m = np.asarray(mask)
        return LossTable(self.N[m], self.B[m], self.K[m], self.loss[m], self.learning_rate[m],
                         self.C[m], self.lines[m], {k: v[m] for k, v in self.extra.items()},
                         self.path)

    def to_rows(self) -> list[dict[str, Any]]:
        """One dict per run (N, B, K, loss, learning_rate, C)."""
        return [{"N": float(n), "B": int(b), "K": int(k), "loss": float(v),
                 "learning_rate": float(a), "C": float(c)}
                for n, b, k, v, a, c in zip(self.N, self.B, self.K, self.loss,
                                            self.learning_rate, self.C, strict=True)]


def make_table(B: Any, K: Any, loss: Any, N: Any = None, learning_rate: Any = None,
               C: Any = None) -> LossTable:
    """Build a checked :class:`LossTable` from arrays.

    Parameters
    ----------
    B, K, loss : array_like
        Batch sizes (integers >= 1), steps (integers >= 1) and final losses (> 0).
    N, learning_rate, C : array_like, optional
        Model sizes, learning rates, compute (each > 0).

    Returns
    -------
    LossTable

    Raises
    ------
    ParameterError
        If an entry is invalid; the message names the parameter, the row and the value.
    """
    owner = "make_table"
    arrays: dict[str, np.ndarray | None] = {}
    n = None
    for name, value, integer, optional in (("B", B, True, False), ("K", K, True, False),
                                           ("loss", loss, False, False), ("N", N, False, True),
                                           ("learning_rate", learning_rate, False, True),
                                           ("C", C, False, True)):
        if value is None and optional:
            arrays[name] = None
            continue
        try:
            a = np.atleast_1d(np.asarray(value, dtype=float))
        except (TypeError, ValueError):
            raise ParameterError(f"The {name!r} parameter of {owner} must be an array of "
                                 f"numbers. Got {value!r} instead.") from None
        if a.ndim != 1:
            raise ParameterError(f"The {name!r} parameter of {owner} must be 1-d. Got shape "
                                 f"{a.shape} instead.")
        if n is None:
            n = a.size
        if a.size != n:
            raise ParameterError(f"The {name!r} parameter of {owner} must have {n} entries "
                                 f"(like B). Got {a.size} instead.")
        low = 1.0 if integer else 0.0
        bad = ~np.isfinite(a) | (a < low) | ((a <= 0) if not integer else False)
        if integer:
            bad |= a != np.round(a)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            what = "an integer >= 1" if integer else "finite and > 0"
            raise ParameterError(f"The {name!r} parameter of {owner} must be {what} in every "
                                 f"row. Got {a[i]!r} in row {i} instead.")
        arrays[name] = a
    assert n is not None
    if n == 0:
        raise ParameterError(f"The 'loss' parameter of {owner} must not be empty.")
    nan = np.full(n, np.nan)

    def get(k: str) -> np.ndarray:
        v = arrays[k]
        return nan.copy() if v is None else np.asarray(v)

    return LossTable(get("N"), get("B"), get("K"), get("loss"), get("learning_rate"),
                     get("C"), np.arange(n) + 1)


def is_table(path: str | os.PathLike[str]) -> bool:
    """Whether a CSV file's header is that of a final-loss table (B, K and loss, no 'step')."""
    p = os.fspath(path)
    if not p.lower().endswith(".csv") or not os.path.isfile(p):
        return False
    try:
        with open(p, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), [])
    except (UnicodeDecodeError, csv.Error, OSError):
        return False
    names = {_ALIASES.get(h.strip().lower(), h.strip().lower()) for h in header}
    return {"B", "K", "loss"} <= names and "step" not in names


def _num(text: str, name: str, where: str, *, integer: bool = False,
         optional: bool = False) -> float:
    t = text.strip()
    if not t:
        if optional:
            return math.nan
        raise ParameterError(f"{where}{name} is empty.")
    try:
        v = float(t)
    except ValueError:
        raise ParameterError(f"{where}{name} must be a number; got {t!r}.") from None
    if not math.isfinite(v):
        raise ParameterError(f"{where}{name} must be finite; got {t!r}.")
    if integer and (v < 1 or v != round(v)):
        raise ParameterError(f"{where}{name} must be an integer >= 1; got {t!r}.")
    if v <= 0:
        raise ParameterError(f"{where}{name} must be > 0; got {t!r}.")
    return v


def read_table(path: str | os.PathLike[str], *, drop_filtered: bool = True) -> LossTable:
    """Read a final-loss table (CSV, one row per run; see the module docstring).

    Parameters
    ----------
    path : str or path-like
        The CSV file.
    drop_filtered : bool, default True
        Drop the rows whose ``filtered`` column is true.

    Returns
    -------
    LossTable

    Raises
    ------
    ParameterError
        If the file cannot be read or a row is malformed: one line naming the file, the line
        number, the column and the value.
    """
    p = os.fspath(path)
    if not os.path.isfile(p):
        raise ParameterError(f"The table file {p} does not exist or is not a file.")
    try:
        with open(p, newline="", encoding="utf-8") as f:
            rows = list(enumerate(csv.reader(f), start=1))
    except UnicodeDecodeError:
        raise ParameterError(f"{p}: not a UTF-8 text file.") from None
    except csv.Error as err:
        raise ParameterError(f"{p}: malformed CSV ({err}).") from None
    if not rows:
        raise ParameterError(f"{p}: the file is empty (need a header row with B, K, loss).")
    header = [h.strip() for h in rows[0][1]]
    names = [_ALIASES.get(h.lower(), h) for h in header]
    for nm in set(names):
        if names.count(nm) > 1 and nm in _ALIASES.values():
            raise ParameterError(f"{p} line 1: column {nm!r} appears twice (or under two "
                                 f"names).")
    missing = [c for c in ("B", "K", "loss") if c not in names]
    if missing:
        raise ParameterError(f"{p} line 1: missing column(s) {', '.join(missing)} (a final-loss "
                             f"table needs B, K, loss; optional N, learning_rate, schedule, "
                             f"optimizer, C, filtered). Got {', '.join(header)}.")
    col = {nm: i for i, nm in enumerate(names)}
    extra_cols = [nm for nm in names if nm not in _ALIASES.values()]
    data: dict[str, list[float]] = {k: [] for k in ("N", "B", "K", "loss", "learning_rate",
                                                    "C")}
    extra: dict[str, list[str]] = {k: [] for k in extra_cols}
    lines: list[int] = []
    for line, row in rows[1:]:
        if not row or all(not c.strip() for c in row):
            continue
        where = f"{p} line {line}: "
        if len(row) != len(header):
            raise ParameterError(f"{where}{len(row)} fields; the header has {len(header)}.")

        def get(c: str, row: list[str] = row) -> str:
            return row[col[c]].strip() if c in col else ""

        if "filtered" in col:
            flag = get("filtered").lower()
            if flag not in _TRUE | _FALSE:
                raise ParameterError(f"{where}filtered must be True or False; got "
                                     f"{get('filtered')!r}.")
            if drop_filtered and flag in _TRUE:
                continue
        sched = get("schedule").lower()
        if sched not in ("", "constant"):
            raise ParameterError(f"{where}schedule {get('schedule')!r} is not supported by the "
                                 f"final-loss model (constant learning rates only; fit curves "
                                 f"with read_runs for schedules).")
        opt = get("optimizer").lower()
        if opt not in ("", "sgd"):
            raise ParameterError(f"{where}optimizer {get('optimizer')!r} is not supported by "
                                 f"the final-loss model (sgd only; fit curves with read_runs "
                                 f"for momentum).")
        data["B"].append(_num(get("B"), "B", where, integer=True))
        data["K"].append(_num(get("K"), "K", where, integer=True))
        data["loss"].append(_num(get("loss"), "loss", where))
        data["N"].append(_num(get("N"), "N", where, optional=True) if "N" in col else math.nan)
        data["learning_rate"].append(_num(get("learning_rate"), "learning_rate", where,
                                          optional=True) if "learning_rate" in col
                                     else math.nan)
        data["C"].append(_num(get("C"), "C", where, optional=True) if "C" in col
                         else math.nan)
        for c in extra_cols:
            extra[c].append(get(c))
        lines.append(line)
    if not lines:
        raise ParameterError(f"{p}: no data rows" + (" (every row is filtered)."
                                                     if len(rows) > 1 else "."))
    arr = {k: np.array(v, dtype=float) for k, v in data.items()}
    for k in ("N", "learning_rate", "C"):
        given = np.isfinite(arr[k])
        if given.any() and not given.all():
            i = int(np.flatnonzero(~given)[0])
            raise ParameterError(f"{p} line {lines[i]}: {k} is empty while other rows give "
                                 f"it (give it in every row or in none).")
    return LossTable(arr["N"], arr["B"], arr["K"], arr["loss"], arr["learning_rate"], arr["C"],
                     np.array(lines), {k: np.array(v) for k, v in extra.items()}, p)
