"""One compilation per kernel across the processes of a parallel test run.

Under pytest-xdist each worker process compiles what its tests call. From a cold cache two
workers often reach the same large kernel at about the same time, and both would compile it:
the same tens of seconds of CPU spent twice. ``install()`` wraps numba's
``Dispatcher.compile`` so that an outermost compilation of a cached function takes a file lock
named after the function and its signature. The second worker waits for the first, then finds
the specialisation in numba's disk cache and loads it; the lock changes which process
compiles, never what is compiled. While it waits its core is free for the other worker.

Only outermost compilations lock, and only when this thread does not already hold numba's
compiler lock (a ``cfunc`` or ``vectorize`` compiles its callees under it): a file lock is
always taken before numba's lock, never after, so no thread holds one while waiting for the
other. Functions without a disk cache (a test's own ``njit``) are left alone. The lock files
(empty, one per kernel and signature) live in one directory per user under the temporary
directory.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import threading
from typing import Any

from numba.core import dispatcher, sigutils
from numba.core.caching import NullCache
from numba.core.compiler_lock import global_compiler_lock

_depth = threading.local()


def _key(disp: Any, sig: Any) -> str:
    args, _ = sigutils.normalize_signature(sig)
    fn = disp.py_func
    text = f"{fn.__module__}.{fn.__qualname__}{tuple(args)!r}"
    return hashlib.sha1(text.encode()).hexdigest()


def install() -> None:
    """Wrap ``Dispatcher.compile`` in this process (once)."""
    lock_dir = os.path.join(tempfile.gettempdir(), f"nqm-mc-compile-locks-{os.getuid()}")
    os.makedirs(lock_dir, exist_ok=True)
    original = dispatcher.Dispatcher.compile
    if getattr(original, "_nqm_mc_locked", False):
        return

    def compile(self: Any, sig: Any) -> Any:
        # a callee, inside an outermost compilation; or numba's lock already held here
        if getattr(_depth, "n", 0) or global_compiler_lock.is_locked():
            return original(self, sig)
        _depth.n = 1
        try:
            args, _ = sigutils.normalize_signature(sig)
            if isinstance(self._cache, NullCache) or tuple(args) in self.overloads:
                return original(self, sig)
            with open(os.path.join(lock_dir, _key(self, sig)), "a") as f:
                fcntl.flock(f, fcntl.LOCK_EX)
                try:
                    return original(self, sig)
                finally:
                    fcntl.flock(f, fcntl.LOCK_UN)
        finally:
            _depth.n = 0

    compile._nqm_mc_locked = True  # type: ignore[attr-defined]
    dispatcher.Dispatcher.compile = compile  # type: ignore[method-assign]
