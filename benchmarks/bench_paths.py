"""Every Monte Carlo path's throughput against Gaussian SGD and the generator, in one run
(never a test; ratios are measured in one process, round-robin).

    python benchmarks/bench_paths.py                 # d = 10^4, N = 200, T = 200, 3 rounds
    python benchmarks/bench_paths.py --rounds 5 --steps 400

Each round runs every path once (``method="step"``, float64, all threads), then the generator
alone (the normals Gaussian SGD draws, nothing else); a path's rate is its best round in
dimension-steps per second (d x N x T / s). Round-robin timing spreads the machine's load over
all paths alike, so the ratios are meaningful on a shared machine even when the rates drift.
The table gives each path's rate, how much slower than Gaussian SGD it runs (its time over
SGD's) and its rate as a fraction of the generator alone, each from wall time and from the
process's CPU time (all threads; less sensitive to other processes on a loaded machine).
The finite-data path reads B rows of float64 data per step; its line below the table gives the
bytes read per dimension-step and the bandwidth that rate implies (``--batch`` changes B).
"""

import argparse  # noqa: I001 (nqm_mc before numba: it sets the vector width)
import time

from nqm_mc import NQM, SGD, HeavyBall, Nesterov, simulate  # first: numba's vector width

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from nqm_mc.montecarlo import _rng  # noqa: E402
from nqm_mc.spec.noise import FiniteData, StudentT  # noqa: E402
from nqm_mc.spec.optimizers import Adagrad, Adam, RMSProp, SignSGD  # noqa: E402

PATHS = {  # name -> (optimizer, noise)
    "SGD, Gaussian": (SGD(0.1), None),
    "heavy ball": (HeavyBall(0.05, 0.9), None),
    "Nesterov": (Nesterov(0.05, 0.9), None),
    "SGD with EMA": (SGD(0.1, ema=0.99), None),
    "SGD with clip_norm": (SGD(0.1, clip_norm=1.0), None),
    "Adam": (Adam(0.001), None),
    "RMSProp": (RMSProp(0.001), None),
    "Adagrad": (Adagrad(0.01), None),
    "SignSGD": (SignSGD(0.0001), None),
    "Adam with clip_norm": (Adam(0.001, clip_norm=1.0), None),
    "SGD, StudentT(5) noise": (SGD(0.1), StudentT(5.0)),
    "SGD, FiniteData(1000) noise": (SGD(0.1), FiniteData(1000)),
}


@njit(parallel=True, cache=True)
def generator_only(d, n_runs, n_steps):
    """Draw exactly the normals Gaussian SGD draws (d per step per trajectory), nothing else."""
    acc = np.zeros(n_runs)
    for j in prange(n_runs):
        ws = np.empty((4, _rng.CHUNK), np.uint32)
        z = np.empty(d + 4)
        for t in range(n_steps):
            _rng.fill_normals_f64(z, d, np.uint32(t), np.uint32(0), np.uint32(0),
                                  np.uint32(0), np.uint32(j), ws)
            acc[j] += z[0]
    return acc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dim", type=int, default=10_000)
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="path names to run (substrings)")
    a = ap.parse_args()
    model = NQM.paper(a.dim)
    work = a.dim * a.runs * a.steps
    paths = {k: v for k, v in PATHS.items()
             if a.only is None or k == "SGD, Gaussian" or any(s in k for s in a.only)}

    def run(opt, noise):
        t0, c0 = time.perf_counter(), time.process_time()
        simulate(model, opt, a.batch, a.steps, a.runs, record="log", noise=noise,
                 progress=False, method="step")
        return np.array([time.perf_counter() - t0, time.process_time() - c0])

    t0 = time.perf_counter()
    for opt, noise in paths.values():  # compile (or load the cache) outside the timings
        simulate(model, opt, a.batch, 3, 2, record="all", noise=noise, progress=False,
                 method="step")
    generator_only(8, 2, 2)
    warm = time.perf_counter() - t0
    best = {k: np.full(2, np.inf) for k in paths}
    gen = np.full(2, np.inf)
    for _ in range(a.rounds):
        for k, (opt, noise) in paths.items():
            best[k] = np.minimum(best[k], run(opt, noise))
        t0, c0 = time.perf_counter(), time.process_time()
        generator_only(a.dim, a.runs, a.steps)
        gen = np.minimum(gen, [time.perf_counter() - t0, time.process_time() - c0])
    print(f"d = {a.dim}, N = {a.runs}, T = {a.steps}, B = {a.batch}, method='step', float64, "
          f"{numba.get_num_threads()} threads, best of {a.rounds} round-robin rounds "
          f"(compile / cache load {warm:.1f} s)")
    print(f"{'':30s} {'--------------- wall time ---------------':>44s} "
          f"{'-------- CPU time --------':>28s}")
    print(f"{'path':30s} {'G dim-steps/s':>13s} {'slower than SGD':>16s} "
          f"{'of generator':>13s} {'slower than SGD':>16s} {'of generator':>13s}")
    sgd = best["SGD, Gaussian"]
    for k, t in best.items():
        print(f"{k:30s} {work / t[0] / 1e9:13.3f} {t[0] / sgd[0]:15.2f}x "
              f"{100 * gen[0] / t[0]:12.0f} % {t[1] / sgd[1]:15.2f}x {100 * gen[1] / t[1]:12.0f} %")
    print(f"{'generator alone':30s} {work / gen[0] / 1e9:13.3f}")
    for k, (_, noise) in paths.items():  # finite data is bound by reading the data's rows
        if isinstance(noise, FiniteData):
            per = 8 * a.batch  # float64 bytes of data read per dimension-step
            print(f"{k}: reads B x 8 = {per} bytes of data per dimension-step, "
                  f"{work * per / best[k][0] / 1e9:.1f} GB/s at its wall-time rate "
                  f"({work * per / best[k][1] / 1e9:.1f} GB/s per CPU-second)")


if __name__ == "__main__":
    main()
