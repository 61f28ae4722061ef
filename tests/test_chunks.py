"""nqm_mc._chunks: every item once, whatever the thread count; errors reach the caller."""

import threading
import time

import numpy as np
import pytest

from nqm_mc._chunks import run_chunks, run_ranges


@pytest.mark.parametrize("threads", [1, 2, 5])
@pytest.mark.parametrize("n,kw", [(0, {}), (1, {}), (1000, {}), (1000, {"min_size": 64}),
                                  (1001, {"size": 160}), (7, {"per_thread": 8})])
def test_ranges_cover_every_item_once(threads, n, kw):
    seen = np.zeros(n, np.int64)
    lock = threading.Lock()

    def work(lo, hi):
        assert 0 <= lo < hi <= n
        with lock:
            seen[lo:hi] += 1

    run_ranges(work, n, threads=threads, **kw)
    assert (seen == 1).all()


def test_fixed_size_ranges_do_not_depend_on_the_thread_count():
    got = []
    for threads in (1, 3):
        ranges: list[tuple[int, int]] = []
        run_ranges(lambda lo, hi, out=ranges: out.append((lo, hi)), 1001, size=160,
                   threads=threads)
        got.append(sorted(ranges))
    assert got[0] == got[1] == [(lo, min(1001, lo + 160)) for lo in range(0, 1001, 160)]


@pytest.mark.parametrize("threads", [1, 3])
def test_a_failing_chunk_raises_in_the_caller_and_cancels_the_rest(threads):
    started = []

    def work(c):
        started.append(c)
        if c == 2:
            raise ValueError("chunk 2 failed")
        time.sleep(0.01)  # 200 chunks would take 0.7 s on 3 threads: the cancel comes first

    with pytest.raises(ValueError, match="chunk 2 failed"):
        run_chunks(work, 200, threads=threads)
    assert len(started) < 50  # the chunks not yet started were cancelled
