"""Plain-text tables for the terminal summaries of every command.

One formatter, so that every command prints the same way: a header row (names with their
units), a rule, then right-aligned numbers and left-aligned text. A missing value (None or
NaN) is shown as ``-``; a column with no value at all is left out; infinities are ``inf``.

>>> print(table(["batch size", "steps", "momentum"], [[4, 1508044, None], [16, 379888.0, None]]))
batch size    steps
----------  -------
         4  1508044
        16   379888
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Sequence
from typing import Any

__all__ = ["cell", "table"]

MISSING = "-"


def cell(value: Any, spec: str | Callable[[Any], str] | None = None) -> str:
    """One value as text: ``-`` for None and NaN, ``inf``, integers without a decimal point,
    other floats with ``spec`` (a format spec such as ``".4g"``, or a function)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        x = float(value)
        if math.isnan(x):
            return MISSING
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
    if callable(spec):
        return spec(value)
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        x = float(value)
        if spec is None:
            return str(int(x)) if x.is_integer() and abs(x) < 1e15 else f"{x:.4g}"
        return format(x, spec)
    return str(value)


def table(header: Sequence[str], rows: Iterable[Sequence[Any]],
          formats: Sequence[str | Callable[[Any], str] | None] | None = None, *,
          keep_empty: bool = False, indent: str = "") -> str:
    """Return ``rows`` under ``header`` as aligned text (no trailing newline).

    Parameters
    ----------
    header : sequence of str
        Column names, with units where they have one ("seconds", "E[L]").
    rows : iterable of sequences
        One sequence of values per row, in ``header`` order.
    formats : sequence, optional
        Per column: a format spec for floats (default ``.4g``; integral floats are printed as
        integers), a function of the value, or None.
    keep_empty : bool, default False
        Keep columns in which every value is missing (by default they are left out).
    indent : str, default ""
        Prefix of every line.
    """
    header = [str(h) for h in header]
    formats = list(formats) if formats is not None else [None] * len(header)
    raw = [list(r) for r in rows]
    text = [[cell(v, formats[j]) for j, v in enumerate(r)] for r in raw]
    keep = [keep_empty or not text or any(r[j] != MISSING for r in text)
            for j in range(len(header))]
    numeric = [all(v is None or (isinstance(v, numbers.Real) and not isinstance(v, bool))
                   or (isinstance(v, str) and _looks_numeric(v))
                   for v in (r[j] for r in raw)) for j in range(len(header))]
    cols = [j for j in range(len(header)) if keep[j]]
    width = {j: max([len(header[j])] + [len(r[j]) for r in text]) for j in cols}

    def line(cells: Sequence[str], rule: bool = False) -> str:
        parts = []
        for j in cols:
            s = cells[j]
            parts.append(s.rjust(width[j]) if numeric[j] and not rule else s.ljust(width[j]))
        return (indent + "  ".join(parts)).rstrip()

    rule = ["-" * width[j] if j in width and header[j] else " " * width.get(j, 0)
            for j in range(len(header))]
    out = [line(header), line(rule, True)]
    out += [line(r) for r in text]
    return "\n".join(out)


def _looks_numeric(s: str) -> bool:
    """Text that stands for a number ("> 16384", "~860", "-"), aligned like numbers."""
    s = s.strip().lstrip("<>~≈ ")
    if s in (MISSING, "inf", "-inf"):
        return True
    try:
        float(s.split()[0].replace(",", ""))
    except (ValueError, IndexError):
        return False
    return True
