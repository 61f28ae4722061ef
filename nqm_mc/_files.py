"""Every file the package writes goes through this module.

Writes are atomic: the data go to a temporary file in the destination's directory, which is
flushed and fsync'ed and then moved into place with ``os.replace`` (or, when overwriting is
not allowed, hard-linked with ``os.link``, which fails if the destination exists). A process
killed at any moment therefore leaves either the old file or the new one, never a truncated
file; a killed process may leave a hidden ``.NAME.*.tmp`` file behind, nothing else.

Conventions:

- JSON is strict (``allow_nan=False``): NaN and +-inf are written as ``null``; NumPy scalars
  and arrays become numbers and lists.
- CSV: a column whose values are all integers, or integral floats in a column named like a
  count (``step``, ``steps``, ``batch_size``, ...), is written as integers (``287138``, not
  ``287138.0``); non-finite numbers are written ``inf``, ``-inf`` and ``nan``, None as empty.
- Figures are saved with an explicit format taken from the file's suffix.

:func:`prepare_output` is the command line's output-directory convention (see its docstring).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import numbers
import os
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

import numpy as np

from nqm_mc.spec._checks import ParameterError

#: the formats of figure files (:func:`nqm_mc.style.save` writes them)
FORMATS = ("png", "pdf", "svg")

__all__ = ["OutputExistsError", "atomic_file", "write_bytes", "write_text", "write_json",
           "json_dumps", "to_jsonable", "write_csv", "save_figure", "write_npz",
           "prepare_output", "Output"]

#: integral floats in these columns are written as integers
INTEGER_COLUMNS = frozenset({"step", "steps", "batch_size", "piece", "runs", "n_runs",
                             "schedule_steps", "constant_lr_steps", "seed", "n_steps"})


class OutputExistsError(FileExistsError):
    """A file would be overwritten and overwriting was not allowed."""

    def __init__(self, path: str | os.PathLike[str],
                 hint: str = "pass overwrite=True to replace it") -> None:
        self.path = os.fspath(path)
        super().__init__(f"{self.path} already exists; {hint}.")

    def __str__(self) -> str:
        return self.args[0]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


WRITTEN: list[str] = []  # every file atomic_file completed in this process, in order


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], mode: str = "wb", *, overwrite: bool = True,
                **open_kw: Any) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on a clean exit it becomes ``path`` atomically.

    With ``overwrite=False`` an existing ``path`` is left untouched and
    :class:`OutputExistsError` is raised (also when another process creates it meanwhile).
    On an exception inside the block the temporary file is removed and ``path`` is unchanged.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not overwrite and os.path.lexists(path):
        raise OutputExistsError(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix="." + os.path.basename(path) + ".",
                               suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, mode, **open_kw) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)  # fails, atomically, if path exists
            except FileExistsError:
                raise OutputExistsError(path) from None
            except OSError:  # no hard links on this file system: check, then rename
                if os.path.lexists(path):
                    raise OutputExistsError(path) from None
                os.replace(tmp, path)
            else:
                os.unlink(tmp)
        _fsync_dir(directory)
        WRITTEN.append(path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes, *, overwrite: bool = True) -> str:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_file(path, "wb", overwrite=overwrite) as f:
        f.write(data)
    return os.fspath(path)


def write_text(path: str | os.PathLike[str], text: str, *, overwrite: bool = True) -> str:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically and return the path."""
    with atomic_file(path, "w", overwrite=overwrite, encoding="utf-8", newline="") as f:
        f.write(text)
    return os.fspath(path)


def to_jsonable(obj: Any) -> Any:
    """``obj`` with NumPy types as Python ones and NaN/+-inf as None (JSON null)."""
    if isinstance(obj, dict):
        return {str(k) if not isinstance(k, str) else k: to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        x = float(obj)
        return x if math.isfinite(x) else None
    if obj is None or isinstance(obj, str):
        return obj
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write a {type(obj).__name__} as JSON")


def json_dumps(obj: Any, indent: int | None = 2) -> str:
    """Strict JSON text of ``obj`` (see :func:`to_jsonable`); never NaN or Infinity."""
    return json.dumps(to_jsonable(obj), indent=indent, allow_nan=False)


def write_json(path: str | os.PathLike[str], obj: Any, *, indent: int | None = 2,
               overwrite: bool = True) -> str:
    """Write ``obj`` as strict JSON (see :func:`json_dumps`) atomically; return the path."""
    # encode completely before touching the disk: a failure leaves no file behind
    return write_text(path, json_dumps(obj, indent) + "\n", overwrite=overwrite)


def _integral(v: Any) -> bool:
    if isinstance(v, (bool, np.bool_)):
        return False
    if isinstance(v, numbers.Integral):
        return True
    return isinstance(v, numbers.Real) and (not math.isfinite(v) or float(v).is_integer())


def _cell(v: Any, as_int: bool) -> str:
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return str(bool(v))
    if isinstance(v, numbers.Integral):
        return str(int(v))
    if isinstance(v, numbers.Real):
        x = float(v)
        if math.isnan(x):
            return "nan"
        if math.isinf(x):
            return "inf" if x > 0 else "-inf"
        return str(int(x)) if as_int else repr(x)
    return str(v)


def write_csv(path: str | os.PathLike[str], header: Iterable[str],
              rows: Iterable[Sequence[Any] | Mapping[str, Any]], *,
              overwrite: bool = True) -> str:
    """A CSV table; ``rows`` are sequences in ``header`` order or dicts keyed by it."""
    header = list(header)
    table = [[r.get(h) for h in header] if isinstance(r, dict) else list(r) for r in rows]
    as_int = []
    for j, name in enumerate(header):
        col = [r[j] for r in table if r[j] is not None]
        nums = [v for v in col if isinstance(v, numbers.Real)]
        has_int = any(isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))
                      for v in nums)
        as_int.append(bool(nums) and len(nums) == len(col) and all(_integral(v) for v in nums)
                      and (has_int or str(name) in INTEGER_COLUMNS))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in table:
        w.writerow([_cell(v, as_int[j]) for j, v in enumerate(r)])
    return write_text(path, buf.getvalue(), overwrite=overwrite)


def save_figure(fig: Any, path: str | os.PathLike[str], *, overwrite: bool = True,
                close: bool = True, **savefig_kw: Any) -> str:
    """``fig.savefig`` into a temporary file, format from the suffix, then into place."""
    fmt = os.path.splitext(os.fspath(path))[1].lstrip(".").lower() or "png"
    try:
        with atomic_file(path, "wb", overwrite=overwrite) as f:
            fig.savefig(f, format=fmt, **savefig_kw)
    finally:
        if close:
            import matplotlib.pyplot as plt
            plt.close(fig)
    return os.fspath(path)


def write_npz(path: str | os.PathLike[str], arrays: Mapping[str, Any], *,
              overwrite: bool = True, compress: bool = True) -> str:
    """A NumPy .npz archive of ``arrays`` (a dict), written atomically."""
    with atomic_file(path, "wb", overwrite=overwrite) as f:
        (np.savez_compressed if compress else np.savez)(f, **arrays)
    return os.fspath(path)


# ------------------------------------------------------------------ output directories
DEFAULT_ROOT = "results"
OUT_HELP = "output directory (default: {default}); existing files are replaced only with --force"
FORCE_HELP = "replace files that already exist in the output directory (off)"
_FRESH_DIRS: list[str] = []  # run directories made by prepare_output in this process


def add_output_args(parser: Any, default: str | None = None,
                    command: str | None = None) -> None:
    """Declare --out and --force on an argparse (sub)parser, with the same help everywhere.
    ``default`` describes where output goes without --out (default: a fresh run directory)."""
    if default is None:
        command = command or parser.prog.split()[-1]
        default = (f"a new {DEFAULT_ROOT}/{command}-YYYYmmdd-HHMMSS, linked from "
                   f"{DEFAULT_ROOT}/{command}-latest")
    parser.add_argument("--out", default=None, metavar="DIR",
                        help=OUT_HELP.format(default=default).replace("%", "%%"))
    parser.add_argument("--force", action="store_true", help=FORCE_HELP)
    parser.add_argument("--format", default="png", type=_figure_formats, metavar="FMT[,FMT]",
                        help="figure formats among png, pdf, svg, comma-separated (default: "
                             "png)")


def _figure_formats(text: str) -> tuple[str, ...]:
    """argparse type of --format: a tuple of figure formats (one-line error otherwise)."""
    import argparse

    try:
        return parse_formats(text)
    except ParameterError:
        raise argparse.ArgumentTypeError(
            f"expected formats among png, pdf, svg separated by commas, got {text!r}") from None


def parse_formats(formats: str | Iterable[str] | None, default: str = "png") -> tuple[str, ...]:
    """Return a tuple of figure formats from ``"png,pdf"``, a sequence or None.

    Raises
    ------
    ParameterError
        If a format is not one of ``FORMATS``.
    """
    if formats is None:
        return (default,)
    items = formats.split(",") if isinstance(formats, str) else list(formats)
    out: list[str] = []
    for f in items:
        f = str(f).strip().lower().lstrip(".")
        if not f:
            continue
        if f not in FORMATS:
            raise ParameterError(f"The 'formats' parameter must list formats among "
                                 f"{', '.join(FORMATS)}. Got {formats!r} instead.")
        if f not in out:
            out.append(f)
    if not out:
        raise ParameterError(f"The 'formats' parameter must list formats among "
                             f"{', '.join(FORMATS)}. Got {formats!r} instead.")
    return tuple(out)



def discard_empty_run_dirs() -> None:
    """Remove the run directories this process made that are still empty (a failed run)."""
    while _FRESH_DIRS:
        with contextlib.suppress(OSError):
            os.rmdir(_FRESH_DIRS.pop())


class Output:
    """Where a command writes: ``dir``, ``path(name)``, ``overwrite`` and ``finish()``."""

    def __init__(self, directory: str, overwrite: bool, command: str | None = None,
                 root: str | None = None, fresh: bool = False) -> None:
        self.dir = directory
        self.overwrite = overwrite
        self.command, self.root, self.fresh = command, root, fresh

    def path(self, name: str) -> str:
        """Return the path of ``name`` inside the output directory."""
        return os.path.join(self.dir, name)

    def finish(self) -> None:
        """Point ``ROOT/COMMAND-latest`` at a fresh run directory (atomically; skipped where
        symbolic links are not supported)."""
        if not self.fresh:
            return
        assert self.root is not None  # a fresh directory always has its root
        link = os.path.join(self.root, f"{self.command}-latest")
        tmp = os.path.join(self.root, f".{self.command}-latest.{os.getpid()}.tmp")
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            os.symlink(os.path.basename(self.dir), tmp)
            os.replace(tmp, link)
            LATEST_LINKS.append(link)
        except (OSError, NotImplementedError):
            with contextlib.suppress(OSError):
                os.unlink(tmp)


#: the ``COMMAND-latest`` links pointed at a fresh run directory in this process, in order
LATEST_LINKS: list[str] = []


def _check_writable(directory: str, option: str) -> None:
    try:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".nqm-mc-write-test.", suffix=".tmp")
    except OSError as err:
        raise ParameterError(f"The {option!r} directory {directory} is not writable "
                             f"({err.strerror or err}).") from None
    os.close(fd)
    os.unlink(tmp)


def _make_dir(directory: str, option: str) -> None:
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise ParameterError(f"The {option!r} option must name a directory; {directory} is an "
                             "existing file.")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as err:
        raise ParameterError(f"The {option!r} directory {directory} cannot be created "
                             f"({err.strerror or err}).") from None


def prepare_output(out: str | os.PathLike[str] | None, names: Iterable[str], command: str,
                   force: bool = False, root: str = DEFAULT_ROOT,
                   option: str = "--out") -> Output:
    """Check and create a command's output directory before any computation.

    - ``out`` None: a fresh directory ``root/COMMAND-YYYYmmdd-HHMMSS`` (``-2``, ``-3``, ...
      when taken; made with ``os.mkdir`` so concurrent runs never share one); call
      ``finish()`` on the returned :class:`Output` after writing to point
      ``root/COMMAND-latest`` at it.
    - ``out`` given: it must be (or be creatable as) a writable directory, and none of
      ``names`` (file names relative to it) may exist unless ``force``.

    Every failure is a :class:`ParameterError` of one sentence.
    """
    if out is None:
        _make_dir(root, "results")
        _check_writable(root, "results")
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = os.path.join(root, f"{command}-{stamp}")
        for k in range(1, 10_000):
            directory = base if k == 1 else f"{base}-{k}"
            try:
                os.mkdir(directory)
            except FileExistsError:
                continue
            except OSError as err:
                raise ParameterError(f"The output directory {directory} cannot be created "
                                     f"({err.strerror or err}).") from None
            _FRESH_DIRS.append(directory)
            return Output(directory, overwrite=False, command=command, root=root, fresh=True)
        raise ParameterError(f"Too many output directories named {base}-N.")
    out = os.fspath(out)
    _make_dir(out, option)
    _check_writable(out, option)
    if not force:
        for name in names:
            p = os.path.join(out, name)
            if os.path.lexists(p):
                raise ParameterError(f"{p} already exists; pass --force to replace it or "
                                     f"choose another {option}.")
    for name in names:  # subdirectories such as plots/
        sub = os.path.dirname(name)
        if sub:
            _make_dir(os.path.join(out, sub), option)
    return Output(out, overwrite=force, command=command)
