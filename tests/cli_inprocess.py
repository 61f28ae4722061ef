"""The command line run in the test's own process.

``run(*args)`` calls ``nqm_mc.cli.main(args)`` with stdout and stderr captured and returns what
``subprocess.run([sys.executable, "-m", "nqm_mc", *args], capture_output=True, text=True)``
would: an object with ``returncode``, ``stdout`` and ``stderr``. ``python -m nqm_mc`` is nothing
but ``sys.exit(main())``, so this runs the same code without paying a new interpreter, the
package's import and the loading of every cached kernel for each call. Tests that check what
only a real process shows (the entry point, signals, a crash, a second process loading the disk
cache) keep their subprocess.
"""

from __future__ import annotations

import contextlib
import io
import os
import warnings
from dataclasses import dataclass


@contextlib.contextmanager
def _chdir(path: str | os.PathLike[str]):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _env(name: str, value: str):
    os.environ[name] = value
    try:
        yield
    finally:
        del os.environ[name]


@dataclass
class Completed:
    """What a finished command left: exit status and its two streams."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str


def run(*args: object, cwd: str | os.PathLike[str] | None = None) -> Completed:
    """Run ``nqm-mc ARGS`` in-process (in directory ``cwd`` if given)."""
    from nqm_mc import cli

    argv = [str(a) for a in args]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.ExitStack() as stack:
        if cwd is not None:
            stack.enter_context(_chdir(cwd))
        stack.enter_context(contextlib.redirect_stdout(out))
        stack.enter_context(contextlib.redirect_stderr(err))
        # a real process prints warnings and goes on (the test session turns them into errors)
        stack.enter_context(warnings.catch_warnings())
        warnings.simplefilter("default")
        if "COLUMNS" not in os.environ:  # help text wrapped as for a pipe (80 columns)
            stack.enter_context(_env("COLUMNS", "80"))
        try:
            code = cli.main(argv)
        except SystemExit as stop:  # as the interpreter would turn it into a status
            code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
            if stop.code is not None and not isinstance(stop.code, int):
                print(stop.code, file=err)
    return Completed(argv, 0 if code is None else int(code), out.getvalue(), err.getvalue())
