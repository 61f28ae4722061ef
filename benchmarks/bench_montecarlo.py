"""Monte Carlo throughput as ratios to baselines run in the same process (never a test).

    python benchmarks/bench_montecarlo.py                      # d = 10^4, N = 200, T = 300
    python benchmarks/bench_montecarlo.py --runs 1000 --steps 1000   # the full paper-sized run

Reports dimension-steps per second (d x N x T / s) for
- the baseline: naive NumPy SGD, all runs at once, normals from numpy.random.Generator;
- the kernel in float64 and float32 on all threads, with its ratio to the baseline;
- the kernel on 1 thread (the 1 -> all-threads speed-up);
- the generator alone (the same normals drawn on all threads, no optimizer), the kernel's
  speed limit: the kernel's rate as a fraction of it.
"""

import argparse  # noqa: I001 (nqm_mc before numba: it sets the vector width)
import time

from nqm_mc import NQM, SGD, simulate  # first: it chooses numba's vector width

from nqm_mc.montecarlo import _rng

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402


def baseline(model, lr, batch, n_steps, n_runs, seed):
    """Naive NumPy SGD: all runs at once, normals from numpy's Generator each step."""
    h, c, mu0, v0 = model.expand()
    rng = np.random.default_rng(seed)
    theta = mu0 + np.sqrt(v0) * rng.standard_normal((n_runs, h.size))
    sd = np.sqrt(c / batch)
    losses = np.empty((n_steps + 1, n_runs))
    losses[0] = 0.5 * (theta ** 2) @ h
    for t in range(n_steps):
        g = h * theta + sd * rng.standard_normal((n_runs, h.size))
        theta -= lr * g
        losses[t + 1] = 0.5 * (theta ** 2) @ h
    return losses.mean(1)


@njit(parallel=True, cache=True)
def generator_only(d, n_runs, n_steps, use_f32):
    """Draw exactly the normals a run draws (d per step per trajectory), nothing else."""
    acc = np.zeros(n_runs)
    for j in prange(n_runs):
        ws = np.empty((4, _rng.CHUNK), np.uint32)
        z64 = np.empty(d + 4)
        z32 = np.empty(d + 4, np.float32)
        for t in range(n_steps):
            if use_f32:
                _rng.fill_normals_f32(z32, d, np.uint32(t), np.uint32(0), np.uint32(0),
                                      np.uint32(0), np.uint32(j), ws)
                acc[j] += z32[0]
            else:
                _rng.fill_normals_f64(z64, d, np.uint32(t), np.uint32(0), np.uint32(0),
                                      np.uint32(0), np.uint32(j), ws)
                acc[j] += z64[0]
    return acc


def timed(f, *args, **kw):
    t0 = time.perf_counter()
    f(*args, **kw)
    return time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args()
    model = NQM.paper(a.dim)
    work = a.dim * a.runs * a.steps
    nt = numba.get_num_threads()
    for dt in ("float64", "float32"):  # compile (or load the cache) outside the timings
        simulate(model, SGD(0.1), 32, 2, 2, record="all", dtype=dt, progress=False)
        generator_only(8, 2, 2, dt == "float32")

    def run(dt, threads):
        return work / timed(simulate, model, SGD(0.1), 32, a.steps, a.runs, record="log",
                            dtype=dt, threads=threads, progress=False, method="step")

    base = work / timed(baseline, model, 0.1, 32, a.steps, a.runs, 0)
    print(f"d = {a.dim}, N = {a.runs}, T = {a.steps}, {nt} threads; rates in G dim-steps/s")
    print(f"baseline (naive NumPy)       {base / 1e9:7.3f}")
    for dt in ("float64", "float32"):
        r_all = run(dt, nt)
        r_one = run(dt, 1)
        gen = work / timed(generator_only, a.dim, a.runs, a.steps, dt == "float32")
        print(f"kernel {dt}, {nt} threads    {r_all / 1e9:7.3f}   x{r_all / base:5.1f} baseline")
        print(f"kernel {dt}, 1 thread      {r_one / 1e9:7.3f}   {nt} threads / 1 = "
              f"{r_all / r_one:4.2f}")
        print(f"generator alone {dt}      {gen / 1e9:7.3f}   kernel = {100 * r_all / gen:3.0f} %"
              f" of it")


if __name__ == "__main__":
    main()
