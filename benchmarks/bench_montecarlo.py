"""Monte Carlo throughput as a ratio to a naive NumPy run of the same simulation, same process.

    python benchmarks/bench_montecarlo.py [--dim 10000] [--runs 64] [--steps 300]

Reports dimension-steps per second (dim x runs x steps / s) for the kernel in float64 and
float32 and for the baseline (numpy.random.Generator normals, one trajectory batch at a time,
vectorised over runs and directions), and the ratios kernel / baseline. Never a test.
"""

import argparse
import time

import numpy as np

from nqm_mc import NQM, SGD, _rng, simulate


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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dim", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=64)
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args()
    model = NQM.paper(a.dim)
    work = a.dim * a.runs * a.steps
    simulate(model, SGD(0.1), 32, 2, 2, record="all")  # compile
    simulate(model, SGD(0.1), 32, 2, 2, record="all", dtype="float32")
    t0 = time.perf_counter()
    baseline(model, 0.1, 32, a.steps, a.runs, 0)
    base = work / (time.perf_counter() - t0)
    rates = {}
    for dt in ("float64", "float32"):
        t0 = time.perf_counter()
        simulate(model, SGD(0.1), 32, a.steps, a.runs, record="log", dtype=dt, progress=False)
        rates[dt] = work / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    n = 2_000_000
    _rng.normals(0, 0, 0, n)
    raw = n / (time.perf_counter() - t0)
    print(f"baseline (NumPy)  {base / 1e9:8.4f} G dim-steps/s")
    for dt, r in rates.items():
        print(f"kernel {dt}   {r / 1e9:8.4f} G dim-steps/s   ratio to baseline {r / base:6.2f}")
    print(f"generator alone (1 thread, float64) {raw / 1e6:8.1f} M normals/s")


if __name__ == "__main__":
    main()
