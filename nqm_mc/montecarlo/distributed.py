"""Run Monte Carlo studies on a Dask cluster with results identical to a local run.

    from dask.distributed import LocalCluster
    from nqm_mc import simulate
    from nqm_mc.montecarlo.distributed import DaskExecutor

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True) as cluster:
        res = simulate(model, opt, 64, 1000, 100_000, seed=1,
                       executor=DaskExecutor(cluster, threads_per_task=1))

A task simulates a contiguous range of 16-trajectory statistic groups with the same kernels as a
local run and returns their per-group statistics; the client merges them in group order, so the
result is bitwise identical to ``simulate`` without an executor (same seed), whatever the
number of workers, the task size or which worker ran what. Tasks are pure functions of their
inputs: when a worker dies, Dask recomputes its tasks elsewhere and the result is unchanged.

Each task holds a per-process lock while it runs and sets numba's thread count to
``threads_per_task`` (default: the worker's thread count), so a worker never runs more numba
threads than it was given. Workers on one machine share the on-disk numba cache of the
installed package (compiled once, then loaded).

Dask is imported only when an executor is created: ``import nqm_mc`` never imports it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from nqm_mc.spec._checks import ParameterError, check_int, check_real

if TYPE_CHECKING:
    from nqm_mc.montecarlo.blocks import Plan

_LOCK = threading.Lock()


def _run_task(plan: Plan, first: int, nb: int, threads: int | None) -> dict[str, Any]:
    """Worker side: one range of statistic groups, numba threads set explicitly."""
    import numba

    from nqm_mc.montecarlo.blocks import run_range

    with _LOCK:
        n = threads or numba.config.NUMBA_NUM_THREADS
        old = numba.get_num_threads()
        numba.set_num_threads(min(n, numba.config.NUMBA_NUM_THREADS))
        try:
            return run_range(plan, first, nb)
        finally:
            numba.set_num_threads(old)


def _connect(Client, target, timeout):
    """Connect a Client to a scheduler address or cluster.

    Unreachable or malformed addresses raise ParameterError with one line. Dask's own log
    lines about the retries are silenced.
    """
    import logging
    address = getattr(target, "scheduler_address", target)
    if timeout is not None:
        timeout = check_real("connect_timeout", timeout, "DaskExecutor", low=0.0)
    kw = {} if timeout is None else {"timeout": timeout}
    loggers = [logging.getLogger(n) for n in ("distributed", "distributed.client",
                                              "distributed.comm", "distributed.core")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.CRITICAL)
    try:
        return Client(target, **kw)
    except (ValueError, TypeError) as err:
        raise ParameterError(f"bad Dask scheduler address {address!r}: "
                             f"{' '.join(str(err).split())}") from None
    except (OSError, TimeoutError) as err:
        waited = f" within {timeout:g} s" if timeout is not None else ""
        raise ParameterError(f"cannot reach the Dask scheduler at {address!r}{waited}: "
                             f"{' '.join(str(err).split())[:200]}") from None
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


class DaskExecutor:
    """Hand simulation work to a Dask cluster.

    Parameters
    ----------
    cluster_or_address : Client, cluster object or scheduler address ("tcp://host:8786")
        Where to run; a Client is used as is, anything else gets a Client of its own (closed
        by :meth:`close`).
    groups_per_task : int
        16-trajectory groups per task (default 16: 256 trajectories). Results do not depend
        on it; larger tasks mean less overhead, smaller ones better balance and cheaper loss
        of a worker.
    threads_per_task : int, optional
        numba threads inside each task (default: the worker process's numba default).
    connect_timeout : float, optional
        Seconds to wait for the scheduler when given an address or a cluster (default: Dask's
        ``distributed.comm.timeouts.connect``). An address that cannot be reached in time, or
        that is malformed, raises ParameterError (one line, naming the address).

    Raises
    ------
    ImportError
        If dask.distributed is not installed.
    ParameterError
        If an argument is invalid.

    Examples
    --------
    >>> from dask.distributed import LocalCluster  # doctest: +SKIP
    >>> with LocalCluster(n_workers=2) as cluster, DaskExecutor(cluster) as ex:  # doctest: +SKIP
    ...     res = simulate(NQM.paper(100), SGD(0.1), 16, 1000, 10_000, executor=ex)
    """

    def __init__(self, cluster_or_address: Any, groups_per_task: int = 16,
                 threads_per_task: int | None = None,
                 connect_timeout: float | None = None) -> None:
        try:
            from dask.distributed import Client
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ImportError("DaskExecutor needs dask.distributed: pip install "
                              "'nqm-mc[dask]'") from err
        self.groups_per_task = check_int("groups_per_task", groups_per_task, "DaskExecutor",
                                         low=1)
        if threads_per_task is not None:
            threads_per_task = check_int("threads_per_task", threads_per_task, "DaskExecutor",
                                         low=1)
        self.threads_per_task = threads_per_task
        if isinstance(cluster_or_address, Client):
            self.client, self._own = cluster_or_address, False
        elif isinstance(cluster_or_address, str) or hasattr(cluster_or_address,
                                                            "scheduler_address"):
            self.client, self._own = _connect(Client, cluster_or_address, connect_timeout), True
        else:
            raise ParameterError("The 'cluster_or_address' parameter of DaskExecutor must be a "
                                 "dask Client, a cluster or a scheduler address. Got "
                                 f"{cluster_or_address!r} instead.")

    def __repr__(self) -> str:
        return (f"DaskExecutor(scheduler={getattr(self.client.scheduler, 'address', None)!r}, "
                f"groups_per_task={self.groups_per_task})")

    def submit_ranges(self, plan: Plan, n_blocks: int) -> list[Any]:
        """Submit every range of a plan.

        Parameters
        ----------
        plan : Plan
            The lowered simulation (scattered to the workers once).
        n_blocks : int
            Number of 16-trajectory groups.

        Returns
        -------
        list of Future
            One per task, in group order.
        """
        [plan_f] = self.client.scatter([plan], broadcast=True, hash=True)
        g = self.groups_per_task
        return [self.client.submit(_run_task, plan_f, first, min(g, n_blocks - first),
                                   self.threads_per_task, pure=True)
                for first in range(0, n_blocks, g)]

    def gather_in_order(self, futures: Sequence[Any]) -> Iterator[dict[str, Any]]:
        """Yield the parts in group order, each as soon as it and its predecessors are done.

        If the caller stops early (Ctrl-C, SIGTERM, an error), the tasks still pending are
        cancelled.

        Parameters
        ----------
        futures : sequence of Future
            As returned by :meth:`submit_ranges`.

        Yields
        ------
        dict
            The statistics of one task's range of groups.
        """
        done = 0
        try:
            for f in futures:
                yield f.result()
                f.release()
                done += 1
        finally:
            for f in futures[done:]:
                f.cancel()

    def map_ranges(self, plan: Plan, n_blocks: int) -> Iterator[dict[str, Any]]:
        """Submit a simulation and yield its parts in group order.

        Parameters
        ----------
        plan : Plan
            The lowered simulation.
        n_blocks : int
            Number of 16-trajectory groups.

        Yields
        ------
        dict
            The statistics of one task's range of groups.
        """
        return self.gather_in_order(self.submit_ranges(plan, n_blocks))

    def close(self) -> None:
        """Close the client if this executor created it."""
        if self._own:
            self.client.close()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
