"""Settings shared by the whole test run: the compile lock of parallel workers, SIGINT, and
the number of workers."""

import os
import signal

import pytest

if os.environ.get("PYTEST_XDIST_WORKER"):  # a worker of a parallel run (pytest-xdist)
    from tests import compile_lock

    compile_lock.install()

# A test run started in the background by a shell without job control inherits SIGINT ignored,
# and so would every command the tests start: the Ctrl-C tests would wait for a signal that
# never arrives. A handler (unlike "ignore") is reset to the default when a child starts.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_xdist_auto_num_workers(config):
    """``-n auto``: one worker more than the cores this process may use, at most 8. A worker
    spends part of a cold run waiting (for another worker's compilation of a kernel it needs,
    for a child process to start or stop), and the extra one keeps the cores busy meanwhile;
    each worker holds about 1 GB once the kernels are loaded."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return min(cores + 1, 8)


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected: the blocks xdist sends
def pytest_collection_modifyitems(config, items):
    """Tests marked ``early`` go into the workers' first blocks, one after the other in turn,
    a third of the way into each. Under pytest-xdist a test of several seconds taken last
    leaves the other workers idle until it ends; taken early, the short tests fill in around
    it. Work stealing first hands each worker a contiguous block of the collection and takes
    from a queue's end, so a block's first part is what its worker runs first; not its very
    front, where on a cold cache a worker waits for the kernels another one compiles. (Every
    worker computes the same order, as xdist requires.)"""
    early = [item for item in items if item.get_closest_marker("early")]
    rest = [item for item in items if not item.get_closest_marker("early")]
    workers = getattr(config, "workerinput", {}).get("workercount", 1)
    block = -(-len(items) // workers)  # the first blocks' size
    order = []
    for w in range(workers):
        mine = early[w::workers]
        take = block - len(mine)
        head, rest = rest[:take], rest[take:]
        order += head[:len(head) // 3] + mine + head[len(head) // 3:]
    items[:] = order + rest
