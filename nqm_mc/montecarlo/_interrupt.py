"""Stopping long kernel calls promptly on SIGINT (Ctrl-C) and SIGTERM.

A numba kernel holds the calling thread until it returns, and Python runs signal handlers
only between bytecodes of the main thread. So a kernel that simulates for minutes would
delay Ctrl-C by minutes. Here the kernel runs in a worker thread (the kernels are compiled
with ``nogil=True``) while the main thread waits in short, interruptible waits. When a
``KeyboardInterrupt`` arrives, the main thread raises a one-word flag that the kernels poll
between windows of steps (:func:`stop_requested`, an atomic load that the compiler cannot
hoist out of the loop), waits the few milliseconds the kernel needs to notice, and re-raises.
The kernel returns with every finished trajectory and every recorded step written, so the
caller can keep what was done.

SIGTERM (sent by ``timeout``, batch schedulers and ``kill``) terminates a Python process
without cleanup by default; inside :func:`sigterm_interrupts` it raises :class:`Terminated`,
a ``KeyboardInterrupt``, and is handled the same way.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import numba
from numba import types
from numba.extending import intrinsic

if TYPE_CHECKING:
    import numpy as np

    from nqm_mc.results import SimulationResult

_R = TypeVar("_R")

__all__ = ["Interrupted", "Terminated", "sigterm_interrupts", "run_stoppable", "new_flag",
           "stop_requested", "signal_name"]


class Terminated(KeyboardInterrupt):
    """Raised in the main thread by SIGTERM inside :func:`sigterm_interrupts`."""


class Interrupted(KeyboardInterrupt):
    """A simulation stopped by SIGINT or SIGTERM.

    ``result`` is the partial :class:`~nqm_mc.results.SimulationResult` (finished and partly
    finished trajectories, marked ``meta["interrupted"]``); ``signal`` is "SIGINT" or
    "SIGTERM".
    """

    def __init__(self, result: SimulationResult,
                 signal: Literal["SIGINT", "SIGTERM"] = "SIGINT") -> None:
        super().__init__(f"simulation interrupted by {signal}")
        self.result = result
        self.signal = signal


def signal_name(exc: BaseException) -> Literal["SIGINT", "SIGTERM"]:
    """"SIGTERM" for :class:`Terminated` (or an Interrupted caused by it), else "SIGINT"."""
    if isinstance(exc, Interrupted):
        return exc.signal
    return "SIGTERM" if isinstance(exc, Terminated) else "SIGINT"


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread (elsewhere, and
    outside the block, the handler in place is left alone)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def new_flag() -> np.ndarray:
    """A fresh stop flag for the kernels (0: run, 1: stop)."""
    import numpy as np
    return np.zeros(1, np.int64)


@intrinsic
def stop_requested(typingctx, flag):
    """flag[0] read with an atomic (monotonic) load: a plain load of an array the kernel never
    writes may legally be hoisted out of the loop, and the flag would never be seen."""
    sig = types.int64(flag)

    def codegen(context, builder, signature, args):
        ary = context.make_array(signature.args[0])(context, builder, args[0])
        return builder.load_atomic(ary.data, "monotonic", 8)

    return sig, codegen


def run_stoppable(fn: Callable[[], _R], flag: np.ndarray, threads: int | None = None) -> _R:
    """Return ``fn()``, a kernel call that polls ``flag``, run so that signals stay responsive.

    In the main thread ``fn`` runs in a worker thread with ``threads`` numba threads (numba's
    thread count is per calling thread). A ``KeyboardInterrupt`` (or :class:`Terminated`)
    raised while waiting sets ``flag[0] = 1``; once ``fn`` has returned (the kernels check the
    flag at least once per window of steps) the interrupt is re-raised, with ``fn``'s value
    (the partial work) attached as ``value``.
    """
    if threading.current_thread() is not threading.main_thread():
        with _numba_threads(threads):
            return fn()
    box: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            with _numba_threads(threads):
                box["value"] = fn()
        except BaseException as err:  # handed to the main thread
            box["error"] = err
        finally:
            done.set()

    worker = threading.Thread(target=work, name="nqm_mc-kernel", daemon=True)
    worker.start()
    interrupt: KeyboardInterrupt | None = None
    while True:
        try:
            while not done.wait(0.25):
                pass
            break
        except KeyboardInterrupt as err:  # Ctrl-C or SIGTERM: ask the kernel to stop
            flag[0] = 1
            if interrupt is None or isinstance(err, Terminated):
                interrupt = err
    worker.join()
    if "error" in box:
        raise box["error"]
    if interrupt is not None:
        interrupt.value = box.get("value")  # type: ignore[attr-defined]
        raise interrupt
    return box["value"]


@contextlib.contextmanager
def _numba_threads(n: int | None) -> Iterator[None]:
    if n is None:
        yield
        return
    old = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(old)
