"""Where the test run spends its numba compilation (an opt-in pytest plugin).

Run ``python -m pytest -n 0 -p tests.compile_profile`` (in one process: under pytest-xdist the
compilations happen in the workers, which this plugin does not see; from a cold cache to see
every compilation:
``NUMBA_CACHE_DIR`` and ``NQM_MC_KERNEL_DIR`` pointing at empty directories). It listens to
numba's ``numba:compile`` events, which fire for a real compilation only (a specialisation
loaded from the on-disk cache fires none), and prints at the end of the run: the number of
specialisations compiled, the time spent in outermost compilations, the functions compiled in
most signatures, the tests that compiled most and the tests that used most CPU time
(their subprocesses included). ``NQM_MC_COMPILE_PROFILE=FILE`` also writes
every event (test, function, signature, seconds) to FILE as JSON. Compilations inside
subprocesses are not seen.
"""

from __future__ import annotations

import json
import os
import resource
import time
from collections import Counter, defaultdict
from typing import Any

import pytest
from numba.core import event

_events: list[dict[str, Any]] = []
_current = {"test": "<collection>"}
_cpu: dict[str, float] = {}


def _cpu_now() -> float:
    """CPU seconds (user + system) of this process and its finished children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class _Listener(event.Listener):
    def __init__(self) -> None:
        self.depth = 0
        self.starts: list[float] = []

    def on_start(self, ev: event.Event) -> None:
        self.depth += 1
        self.starts.append(time.perf_counter())

    def on_end(self, ev: event.Event) -> None:
        seconds = time.perf_counter() - self.starts.pop()
        self.depth -= 1
        disp = ev.data["dispatcher"]
        name = getattr(disp, "py_func", None)
        qual = (f"{name.__module__}.{name.__qualname__}" if name is not None
                else repr(disp))
        _events.append({"test": _current["test"], "function": qual,
                        "args": str(ev.data["args"]), "seconds": seconds,
                        "outermost": self.depth == 0})


_listener = _Listener()


def pytest_configure(config: pytest.Config) -> None:
    event.register("numba:compile", _listener)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    _current["test"] = item.nodeid
    start = _cpu_now()
    try:
        return (yield)
    finally:
        _cpu[item.nodeid] = _cpu_now() - start
        _current["test"] = "<between tests>"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    tr = terminalreporter
    outer = [e for e in _events if e["outermost"]]
    distinct = {(e["function"], e["args"]) for e in _events}
    tr.section("numba compilations")
    tr.write_line(f"{len(_events)} specialisations compiled ({len(distinct)} distinct), "
                  f"{len(outer)} outermost, {sum(e['seconds'] for e in outer):.1f} s "
                  f"in outermost compilations")
    per_fn = Counter(e["function"] for e in _events)
    tr.write_line("functions compiled in most signatures:")
    for fn, n in per_fn.most_common(25):
        tr.write_line(f"  {n:4d}  {fn}")
    per_test: dict[str, float] = defaultdict(float)
    count_test: Counter[str] = Counter()
    for e in outer:
        per_test[e["test"]] += e["seconds"]
    for e in _events:
        count_test[e["test"]] += 1
    tr.write_line("tests that compiled most (seconds, specialisations):")
    for test, s in sorted(per_test.items(), key=lambda kv: -kv[1])[:30]:
        tr.write_line(f"  {s:6.1f} s {count_test[test]:4d}  {test}")
    tr.write_line(f"CPU seconds in tests (children included): {sum(_cpu.values()):.1f}; "
                  "the tests that used most:")
    for test, s in sorted(_cpu.items(), key=lambda kv: -kv[1])[:40]:
        tr.write_line(f"  {s:6.1f} s  {test}")
    path = os.environ.get("NQM_MC_COMPILE_PROFILE")
    if path:
        with open(path, "w") as f:
            json.dump({"compilations": _events, "cpu": _cpu}, f, indent=0)
