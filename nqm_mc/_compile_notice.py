"""The command line's notice before numba compiles kernels that are not in the disk cache.

The first run of each kernel compiles it (tens of seconds), later runs load it from the cache
next to the sources. :func:`watch` listens to numba's ``numba:compile`` event, which numba
fires only when a function is really compiled (a cache miss), never when it is loaded from
the cache: so the notice appears exactly when the cache is cold, and is printed once per
process, before the first compilation starts::

    compiling kernels (first run only, ~20 s)

The estimate adds, over the kernels the command will call and the one being compiled, the
compile times measured with a cold cache (:data:`COMPILE_SECONDS`), for the kernels whose
cache index holds no entry for the current sources.
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

__all__ = ["watch", "estimate", "COMPILE_SECONDS", "COMMAND_KERNELS"]

#: CPU seconds to compile each kernel called from Python, cold cache, measured with numba
#: 0.68.1 on a 2-core x86-64 machine, idle (``python -m pytest -n 0 -p tests.compile_profile``;
#: a busy machine takes longer in wall-clock time); a kernel that another one already compiled
#: (shared inner functions) compiles faster
COMPILE_SECONDS = {
    "nqm_mc.exact._moments.curve_chunk": 8.0,
    "nqm_mc.exact._moments.loss_at_range": 7.0,
    "nqm_mc.exact._moments.steady_state_range": 4.0,
    "nqm_mc.exact._crossing.first_crossing_one": 19.0,
    "nqm_mc.exact._crossing.first_crossing_range": 27.0,
    "nqm_mc.montecarlo._statistics.band_runs": 0.2,
    "nqm_mc.montecarlo._kernels.run_blocks": 22.0,
    "nqm_mc.montecarlo._skip_kernels._general_chunk": 6.0,
    "nqm_mc.montecarlo._skip_kernels.run_blocks_skip": 9.0,
}
_EXACT = ["nqm_mc.exact._moments.curve_chunk", "nqm_mc.exact._moments.loss_at_range",
          "nqm_mc.exact._moments.steady_state_range",
          "nqm_mc.exact._crossing.first_crossing_one"]
_STEP = ["nqm_mc.montecarlo._statistics.band_runs", "nqm_mc.montecarlo._kernels.run_blocks"]
_SKIP = ["nqm_mc.montecarlo._skip_kernels._general_chunk",
         "nqm_mc.montecarlo._skip_kernels.run_blocks_skip"]
_BATCH = ["nqm_mc.exact._crossing.first_crossing_range"]
#: the kernels each command may compile besides the sampler that ``simulate`` picks (step or
#: skip-ahead: the group of the kernel being compiled is added when the notice is printed)
COMMAND_KERNELS = {
    "exact": _EXACT,
    "simulate": ["nqm_mc.exact._moments.curve_chunk", "nqm_mc.exact._moments.loss_at_range"],
    "scaling": _BATCH,
    "reproduce": _EXACT + _BATCH + _SKIP,
    "validate": _EXACT + _STEP + _SKIP,
    "adam-proxy": _BATCH + _STEP,
    "noise-study": ["nqm_mc.exact._moments.curve_chunk"] + _STEP,
}
_GROUPS = (_STEP, _SKIP)

_lock = threading.Lock()
_state: dict[str, Any] = {"listener": None, "shown": False}


def _dispatcher(name: str) -> Any:
    module, _, attr = name.rpartition(".")
    return getattr(importlib.import_module(module), attr)


def _cached(name: str) -> bool:
    """Whether the disk cache holds an entry of kernel ``name`` for the current sources
    (numba's index is empty when missing, from another numba version or for older sources)."""
    try:
        cache_file = _dispatcher(name)._cache._cache_file
        return bool(cache_file._load_index())
    except Exception:  # numba internals changed: count the kernel as cold
        return False


def estimate(kernels: Iterable[str], compiling: str | None = None) -> int:
    """Seconds to compile the kernels among ``kernels`` (and ``compiling``, with its sampler's
    group) that are not cached, rounded up to a multiple of 5 (at least 5)."""
    names = list(dict.fromkeys(kernels))
    if compiling is not None:
        for group in _GROUPS:
            if compiling in group:
                names += [k for k in group if k not in names]
    total = sum(COMPILE_SECONDS.get(k, 0.0) for k in names
                if k != compiling and not _cached(k))
    total += COMPILE_SECONDS.get(compiling or "", 5.0 if compiling else 0.0)
    return max(5, 5 * math.ceil(total / 5))


def watch(command: str, write: Callable[[str], Any] | None = None) -> None:
    """Print the notice (to stderr by default) before the first compilation in this process.

    Parameters
    ----------
    command : str
        The subcommand (a key of :data:`COMMAND_KERNELS`), whose kernels the estimate counts.
    write : callable, optional
        Receives the line (with its newline); default ``sys.stderr.write`` then a flush.
    """
    from numba.core import event

    kernels = COMMAND_KERNELS.get(command, [])

    def emit(text: str) -> None:
        if write is not None:
            write(text)
        else:
            sys.stderr.write(text)
            sys.stderr.flush()

    class _Notice(event.Listener):
        def on_start(self, ev: Any) -> None:
            with _lock:
                if _state["shown"]:
                    return
                _state["shown"] = True
            try:
                func = ev.data["dispatcher"].py_func
                name = f"{func.__module__}.{func.__name__}"
            except Exception:
                name = None
            emit(f"compiling kernels (first run only, ~{estimate(kernels, name)} s)\n")

        def on_end(self, ev: Any) -> None:
            pass

    with _lock:
        if _state["listener"] is not None:
            event.unregister("numba:compile", _state["listener"])
        _state["listener"] = _Notice()
        _state["shown"] = False
    event.register("numba:compile", _state["listener"])


def unwatch() -> None:
    """Remove the listener of :func:`watch` (if any)."""
    from numba.core import event
    with _lock:
        if _state["listener"] is not None:
            event.unregister("numba:compile", _state["listener"])
            _state["listener"] = None
