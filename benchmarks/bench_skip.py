"""Skip-ahead sampling in the paper's small-batch regime, against the exact engine and the step
kernel (never a test; ratios are measured in one process).

    python benchmarks/bench_skip.py            # both configurations, N = 1000
    python benchmarks/bench_skip.py --quick    # N = 200
    python benchmarks/bench_skip.py --cosine   # the cosine example, from a fresh process

``--cosine`` times ``simulate(NQM.paper(10_000), SGD(CosineDecay(0.5, T, 0.005)), 16, T, 1000,
method="skip")`` at T = 2e6 (``--steps``), with the default record grid (``record="log"``,
``n_records=100``: 94 distinct steps from 0 to T, log-spaced): a fresh process with empty numba
and kernel caches (NUMBA_CACHE_DIR, NQM_MC_KERNEL_DIR), with its import, its compilations
(numba's compile events, per kernel, wall time) and its CPU time; a second fresh process on
the caches the first one filled; and, in this process once compiled, the transitions and the
sampling apart.

For each configuration (the paper's model, d = 10^4, 100 log-spaced records):
- the wall time of a fresh process running it from a cold numba cache (compilation
  included), and of the run itself in this process with the kernels compiled;
- the largest |z| of the Monte Carlo mean against the exact mean (loss_at) over the records,
  z = (mean - E[L]) / sqrt(Var[L] / N);
- the step kernel on the same configuration timed on a short horizon and scaled by T (its cost
  is linear in T): the speed-up of skipping;
- the sampler's throughput in recorded dimension-steps per second and as a fraction of the
  generator's rate (s normals per direction and record, s the state size).
"""

import argparse  # noqa: I001 (nqm_mc before numba: it sets the vector width)
import os
import subprocess
import sys
import tempfile
import time

from nqm_mc import NQM, SGD, HeavyBall, loss_at, simulate

import numba  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit, prange  # noqa: E402

from nqm_mc.montecarlo import _rng  # noqa: E402
from nqm_mc.montecarlo.skip import state_size, transitions  # noqa: E402

CONFIGS = {  # name -> (optimizer as source, batch size, steps)
    "SGD, B = 4, lr = 0.0147, T = 2e6": ("SGD(0.0147)", 4, 2_000_000),
    "heavy ball p = 0.5, B = 16, T = 5e5": ("HeavyBall(0.05, 0.9, preconditioning=0.5)", 16,
                                            500_000),
}

COLD = """
import sys, time
t0 = time.perf_counter()
from nqm_mc import NQM, SGD, HeavyBall, simulate
opt = {opt}
r = simulate(NQM.paper(), opt, {batch}, {steps}, {runs}, seed=1, method="skip",
             n_records=100, progress=False)
print(time.perf_counter() - t0)
"""


@njit(parallel=True, cache=True)
def generator_only(n, n_runs, n_records):
    """Draw the normals the sampler draws (n per record per trajectory), nothing else."""
    acc = np.zeros(n_runs)
    for j in prange(n_runs):
        ws = np.empty((4, _rng.CHUNK), np.uint32)
        z = np.empty(n + 4)
        for k in range(n_records):
            _rng.fill_normals_f64(z, n, np.uint32(k), np.uint32(4), np.uint32(0),
                                  np.uint32(0), np.uint32(j), ws)
            acc[j] += z[0]
    return acc


COSINE = """
import sys, time
t0 = time.perf_counter()
from numba.core import event
compiles, stack = {{}}, []
class Listen(event.Listener):
    def on_start(self, ev):
        stack.append(time.perf_counter())
    def on_end(self, ev):
        dt = time.perf_counter() - stack.pop()
        if not stack:  # the kernels called from Python (their callees included)
            f = ev.data["dispatcher"].py_func
            name = f.__module__.rsplit(".", 1)[-1] + "." + f.__name__
            compiles[name] = compiles.get(name, 0.0) + dt
event.register("numba:compile", Listen())
from nqm_mc import NQM, SGD, simulate
from nqm_mc.spec.schedules import CosineDecay
t1 = time.perf_counter()
T = {steps}
r = simulate(NQM.paper(10_000), SGD(CosineDecay(0.5, T, 0.005)), 16, T, {runs}, method="skip",
             progress=False)
t2 = time.perf_counter()
print(repr(dict(imp=t1 - t0, sim=t2 - t1, total=t2 - t0, compiles=compiles,
                cpu=time.process_time(),
                records=int(r.steps.size), last=float(r.mean[-1]))))
"""


def cosine(steps, n_runs):
    """The cosine example from a fresh process (cold, then warm cache) and in this one."""
    import ast

    from nqm_mc.montecarlo.lowering import record_steps
    from nqm_mc.spec.schedules import CosineDecay
    env = dict(os.environ, NUMBA_CACHE_DIR=tempfile.mkdtemp(prefix="nqm-bench-cache-"),
               NQM_MC_KERNEL_DIR=tempfile.mkdtemp(prefix="nqm-bench-kernels-"))
    code = COSINE.format(steps=steps, runs=n_runs)
    print(f"cosine example: paper's model d = 10^4, SGD(CosineDecay(0.5, T, 0.005)), B = 16, "
          f"T = {steps:.3g}, N = {n_runs}, method='skip', record='log' (n_records=100), "
          f"{numba.get_num_threads()} threads; load average before: {os.getloadavg()[0]:.1f}")
    for label in ("fresh process, cold cache", "fresh process, warm cache"):
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        wall = time.perf_counter() - t0
        got = ast.literal_eval(out.stdout.strip().splitlines()[-1])
        comp = sum(got["compiles"].values())
        print(f"  {label}: {wall:5.1f} s wall (import {got['imp']:.1f} s, simulate "
              f"{got['sim']:.1f} s), {got['cpu']:.1f} s CPU; compiling {comp:.1f} s wall "
              f"(the sampler's compilation overlaps the transitions); {got['records']} records")
        for name, dt in sorted(got["compiles"].items(), key=lambda kv: -kv[1]):
            print(f"      compiled {name}: {dt:.1f} s")
    model = NQM.paper(10_000)
    opt = SGD(CosineDecay(0.5, steps, 0.005))
    simulate(model, opt, 16, 1_000, 16, method="skip", progress=False)  # compile here
    grid = record_steps(steps, "log", 100)
    t0, c0 = time.perf_counter(), time.process_time()
    transitions(model, opt, 16, grid)
    t_trans, c_trans = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    simulate(model, opt, 16, steps, n_runs, method="skip", progress=False)
    t_all, c_all = time.perf_counter() - t0, time.process_time() - c0
    print(f"  this process, compiled: simulate {t_all:.1f} s wall, {c_all:.1f} s CPU = "
          f"transitions {t_trans:.1f} s wall, {c_trans:.1f} s CPU "
          f"({steps * model.n_groups / c_trans / 1e9:.2f} G group-steps per CPU second) + "
          f"sampling and statistics {t_all - t_trans:.1f} s wall, {c_all - c_trans:.1f} s CPU")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--runs", type=int, default=None)
    ap.add_argument("--cosine", action="store_true", help="only the cosine example")
    ap.add_argument("--steps", type=int, default=2_000_000, help="T of the cosine example")
    a = ap.parse_args()
    if a.cosine:
        cosine(a.steps, a.runs or 1000)
        return
    n_runs = a.runs or (200 if a.quick else 1000)
    model = NQM.paper()
    d = model.dim
    nt = numba.get_num_threads()
    print(f"paper's model, d = {d}, N = {n_runs}, 100 log-spaced records, {nt} threads")
    for name, (source, batch, T) in CONFIGS.items():
        opt = eval(source, {"SGD": SGD, "HeavyBall": HeavyBall})
        env = dict(os.environ, NUMBA_CACHE_DIR=tempfile.mkdtemp(prefix="nqm-bench-cache-"))
        code = COLD.format(opt=source, batch=batch, steps=T, runs=n_runs)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                             text=True, check=True)
        cold_wall = time.perf_counter() - t0
        cold_inner = float(out.stdout.split()[-1])
        simulate(model, opt, batch, 2_000, 16, method="skip", progress=False)  # compile here
        simulate(model, opt, batch, 64, 16, method="step", record="log", progress=False)
        t0 = time.perf_counter()
        res = simulate(model, opt, batch, T, n_runs, seed=1, method="skip", n_records=100,
                       progress=False)
        t_skip = time.perf_counter() - t0
        t0 = time.perf_counter()
        transitions(model, opt, batch, res.steps)
        t_trans = time.perf_counter() - t0
        mean, var, _ = loss_at(model, opt, batch, res.steps)
        z = (res.mean - mean) / np.sqrt(var / res.n_finite)
        T_short, n_short = 2_000, 32
        t0 = time.perf_counter()
        simulate(model, opt, batch, T_short, n_short, seed=1, method="step", n_records=100,
                 progress=False)
        t_step = (time.perf_counter() - t0) * (T / T_short) * (n_runs / n_short)
        s = state_size(opt)
        R = res.steps.size - 1
        t_sample = max(t_skip - t_trans, 1e-9)
        t0 = time.perf_counter()
        generator_only(s * d, n_runs, R)
        t_gen = time.perf_counter() - t0
        print(f"\n{name}")
        print(f"  fresh process, cold cache:      {cold_wall:6.1f} s wall "
              f"({cold_inner:.1f} s from import to result)")
        print(f"  compiled, this process:         {t_skip:6.1f} s "
              f"(transitions {t_trans:.1f} s, sampling {t_sample:.1f} s)")
        print(f"  max |z| over {R + 1} records:      {np.abs(z[1:]).max():6.2f} "
              f"(final mean {res.mean[-1]:.5g} against exact {mean[-1]:.5g})")
        print(f"  step kernel, scaled to T and N: {t_step:8.0f} s -> skip is "
              f"{t_step / t_skip:,.0f}x faster")
        rate = n_runs * d * R / t_sample
        print(f"  throughput: {rate / 1e9:.3f} G recorded dimension-steps/s; "
              f"{s} normals each: {100 * (t_gen / t_sample):.0f} % of the generator's rate")


if __name__ == "__main__":
    main()
