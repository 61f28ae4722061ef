"""Chunks of independent work spread over threads from Python.

The exact engine's curve, the steps-to-target search over configurations and skip-ahead's
transitions each split their work into chunks that write disjoint parts of their outputs. A
compiled chunk function releases the GIL (``nogil=True``) and :func:`run_chunks` calls it once
per chunk on a pool of threads. A numba ``prange`` over the same chunks would give the same
results, but it compiles the whole chunk function a second time inside its parallel wrapper:
tens of seconds more on a cold cache, for the same machine code.

The results never depend on the thread count: chunk ``c`` always covers the same part of the
work, and callers combine chunks in chunk order.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["run_chunks", "run_ranges"]


def _threads(threads: int | None) -> int:
    if threads is not None:
        return threads
    import numba

    return int(numba.get_num_threads())


def run_chunks(work: Callable[[int], object], n_chunks: int, threads: int | None = None) -> None:
    """Call ``work(c)`` for c = 0 .. n_chunks - 1 on up to ``threads`` threads.

    Parameters
    ----------
    work : callable
        Does chunk ``c``; it should spend its time in a compiled function that releases the
        GIL, and write only its own chunk's outputs.
    n_chunks : int
    threads : int, optional
        Default: numba's thread count (``numba.get_num_threads()``: ``NUMBA_NUM_THREADS``,
        or what ``numba.set_num_threads`` chose in this thread).

    Raises
    ------
    Exception
        The first exception of a chunk, once every chunk that had started has finished; the
        chunks not yet started are cancelled, as they are on KeyboardInterrupt.
    """
    n = max(1, min(n_chunks, _threads(threads)))
    if n == 1:
        for c in range(n_chunks):
            work(c)
        return
    pool = ThreadPoolExecutor(max_workers=n, thread_name_prefix="nqm_mc-chunk")
    try:
        futures = [pool.submit(work, c) for c in range(n_chunks)]
        for f in futures:
            f.result()
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def run_ranges(work: Callable[[int, int], object], n: int, *, size: int | None = None,
               min_size: int = 1, per_thread: int = 4, threads: int | None = None) -> None:
    """Call ``work(lo, hi)`` over consecutive ranges that cover 0 .. n - 1, on threads
    (:func:`run_chunks`).

    Parameters
    ----------
    work : callable
        Does items lo .. hi - 1 (a compiled function that releases the GIL).
    n : int
        Number of items.
    size : int, optional
        Items per range. Default: about ``per_thread`` ranges per thread, at least
        ``min_size`` items each (the ranges then depend on the thread count: use it only where
        each item's results are its own).
    min_size, per_thread : int
        See ``size``.
    threads : int, optional
        As in :func:`run_chunks`.
    """
    t = _threads(threads)
    if size is None:
        size = max(min_size, -(-n // (per_thread * t)))
    run_chunks(lambda c: work(c * size, min(n, (c + 1) * size)), -(-n // size), t)
