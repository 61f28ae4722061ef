"""Dask overhead: LocalCluster(2 processes) against the local threaded run, same process.

    python benchmarks/bench_dask.py [--dim 10000] [--runs 2000] [--steps 500]

Prints both times, their ratio and whether the statistics are bitwise identical.
"""

import argparse
import time

from nqm_mc import NQM, HeavyBall, simulate
from nqm_mc.montecarlo.distributed import DaskExecutor


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    from dask.distributed import LocalCluster
    model, opt = NQM.paper(a.dim), HeavyBall(0.1, 0.9)
    kw = dict(seed=3, record="log", target=5.0, progress=False)
    simulate(model, opt, 64, 5, 32, **kw)  # compile or load the cache
    t0 = time.perf_counter()
    local = simulate(model, opt, 64, a.steps, a.runs, **kw)
    t_local = time.perf_counter() - t0
    with LocalCluster(n_workers=a.workers, threads_per_worker=1, processes=True,
                      host="127.0.0.1", dashboard_address=":0") as cluster, \
            DaskExecutor(cluster, threads_per_task=1) as ex:
        simulate(model, opt, 64, 5, 32, executor=ex, **kw)  # warm the workers
        t0 = time.perf_counter()
        remote = simulate(model, opt, 64, a.steps, a.runs, executor=ex, **kw)
        t_dask = time.perf_counter() - t0
    print(f"d = {a.dim}, N = {a.runs}, T = {a.steps}")
    print(f"local threads      {t_local:7.2f} s")
    print(f"LocalCluster({a.workers})    {t_dask:7.2f} s   ratio {t_dask / t_local:5.2f}")
    print(f"bitwise identical: {remote.equals(local)}")


if __name__ == "__main__":
    main()
