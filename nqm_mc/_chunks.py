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

__all__ = ["run_chunks"]


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
    if threads is None:
        import numba

        threads = numba.get_num_threads()
    n = max(1, min(n_chunks, threads))
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
