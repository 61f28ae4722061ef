"""The exact engine on schedules: sparse records on piecewise-constant hyperparameters, and
schedules that change every step (never a test; each figure is the wall time of one call).

    python benchmarks/bench_exact_schedules.py                 # every case, warm cache
    python benchmarks/bench_exact_schedules.py --cases cosine --cold
    python benchmarks/bench_exact_schedules.py --cases sparse --steps 10000 2000000 1000000000

Cases (the paper's model, d = 10^4, batch size 16, 100 log-spaced records up to T):

- ``sgd``: SGD(0.5), constant;
- ``hb``: HeavyBall(StepDecay(0.1, 0.5, T // 10), 0.9, ema=0.99): ten runs of constant rates;
- ``cosine``: SGD(CosineDecay(0.5, T, 0.005)): a learning rate that changes every step.

``--bits OTHER_CHECKOUT`` compares instead the bits of sparse-record curves (every family,
piecewise-constant and per-step schedules, a batch schedule: the jumps and the blocked steps)
between this checkout and another one, e.g. the commit before a change of the kernels.

``--polynomial`` measures the alternative to one composition per step for SGD on a schedule
that changes every step: the second moment after a stretch of L steps as a polynomial in the
curvature (coefficients once for all directions, Horner per direction, scalar and vectorised
over the directions), against plain vectorised steps: time per direction and step, and the
largest relative error over the paper's 10^4 curvatures (T = 8192, cosine from 0.5 and 1.9).

Each case runs in a fresh process. ``--cold`` points numba at an empty cache directory, so the
time includes compiling the kernels; otherwise the kernels are loaded from the cache (run once
before to fill it). A fresh process prints the first call's time (cache load or compilation
included), then the best of ``--repeat`` further calls (kernels in memory), each as wall time
and as the process's CPU time (all threads; steadier than wall time on a shared machine), the
peak resident memory, and the mean loss at the last record (so that versions can be compared).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

CASES = {
    "sgd": "SGD(0.5)",
    "hb": "HeavyBall(StepDecay(0.1, 0.5, max({T} // 10, 1)), 0.9, ema=0.99)",
    "cosine": "SGD(CosineDecay(0.5, {T}, 0.005))",
}
GROUPS = {"sparse": ["sgd", "hb"], "cosine": ["cosine"]}

ONE = """
import json, resource, sys, time
import numpy as np
t0 = time.perf_counter()
import nqm_mc
assert nqm_mc.__file__.startswith({root!r}), nqm_mc.__file__
from nqm_mc import NQM, SGD, HeavyBall, expected_loss
from nqm_mc.spec.schedules import CosineDecay, StepDecay
model = NQM.paper({dim})
T = {T}
opt = {opt}
record = np.unique(np.geomspace(1, T, 100).astype(np.int64))
t_import = time.perf_counter() - t0
t0, c0 = time.perf_counter(), time.process_time()
try:
    c = expected_loss(model, opt, 16, record=record)
    first, first_cpu = time.perf_counter() - t0, time.process_time() - c0
    best = best_cpu = float("nan")
    for _ in range({repeat}):
        t0, c0 = time.perf_counter(), time.process_time()
        c = expected_loss(model, opt, 16, record=record)
        best = min(best, time.perf_counter() - t0) if best == best else time.perf_counter() - t0
        cpu = time.process_time() - c0
        best_cpu = min(best_cpu, cpu) if best_cpu == best_cpu else cpu
    out = dict(first=first, first_cpu=first_cpu, best=best, best_cpu=best_cpu,
               last_mean=float(c.mean[-1]))
except Exception as e:  # a refusal (memory) is a result too
    out = dict(error=f"{{type(e).__name__}}: {{str(e)[:160]}}")
out["import"] = t_import
out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


BITS = """
import hashlib, json
import numpy as np
from nqm_mc import NQM, SGD, HeavyBall, Nesterov, expected_loss
from nqm_mc.spec import schedules as S
m = NQM.paper(500)
rec = np.unique(np.r_[0, 3, 64, 65, 200, 999, 1000, 1001,
                      np.geomspace(1, 30000, 40).astype(np.int64)])
out = {}
for name, opt in [
        ("sgd", SGD(S.StepDecay(0.5, 0.5, 1000))),
        ("sgd_ema_p", SGD(S.StepDecay(0.5, 0.5, 1000), ema=0.9, preconditioning=0.3)),
        ("hb", HeavyBall(S.PiecewiseConstant([1000, 5000], [0.2, 0.1, 0.05]), 0.9)),
        ("hb_ema", HeavyBall(S.StepDecay(0.2, 0.5, 3000), 0.9, ema=0.99)),
        ("nag_ema_p", Nesterov(S.Warmup(S.StepDecay(0.2, 0.5, 3000), 50), 0.8, ema=0.95,
                               preconditioning=0.5)),
        ("hb_cos", HeavyBall(S.CosineDecay(0.2, 2000), 0.9, ema=0.9)),
        ("sgd_cos", SGD(S.CosineDecay(0.5, 20000, 0.005)))]:
    c = expected_loss(m, opt, S.PiecewiseConstantBatch([2000], [8, 64]), record=rec,
                      group_moments=True)
    h = hashlib.sha256()
    for a in (c.mean, c.variance, c.mean_theta, c.group_mean, c.group_second_moment):
        h.update(np.ascontiguousarray(a).tobytes())
    out[name] = h.hexdigest()[:16]
print(json.dumps(out))
"""


def compare_bits(other: str) -> int:
    """Print the digests of the BITS curves in this checkout and ``other``; 0 when equal."""
    got = []
    for root in (ROOT, other):
        with tempfile.TemporaryDirectory() as empty:  # not the working directory on sys.path
            proc = subprocess.run([sys.executable, "-c", BITS], capture_output=True, text=True,
                                  env=dict(os.environ, PYTHONPATH=root), cwd=empty)
        if proc.returncode != 0:
            print(proc.stderr[-2000:])
            return 2
        got.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    for name in got[0]:
        same = "same" if got[0][name] == got[1][name] else "DIFFERENT"
        print(f"{name:10s} {got[0][name]} {got[1][name]} {same}")
    return 0 if got[0] == got[1] else 1


def polynomial_experiment() -> None:
    """Print the time per direction-step and the error of the polynomial evaluation."""
    import time

    import numpy as np
    from numba import njit

    from nqm_mc import NQM
    from nqm_mc.spec.schedules import CosineDecay

    @njit(error_model="numpy")
    def stepped(h, lr, q):  # the engine's operations for plain SGD, p = 0
        S = np.ones(h.size)
        for t in range(lr.size):
            lt = lr[t]
            for g in range(h.size):
                a = 1.0 - lt * h[g]
                bb = -lt
                S[g] = (0.0 + (0.0 + a * S[g]) * a) + q * bb * bb
        return S

    @njit(error_model="numpy")
    def coefficients(lr, q, L):  # per stretch of L steps: S' = alpha(x) S + beta(x)
        nb = lr.size // L
        al = np.zeros((nb, 2 * L + 1))
        be = np.zeros((nb, 2 * L + 1))
        for k in range(nb):
            al[k, 0] = 1.0
            for t in range(k * L, (k + 1) * L):
                lt = lr[t]
                for arr in (al, be):  # times (1 - l x)^2, lowest power first
                    for d in range(2 * L, 1, -1):
                        arr[k, d] = arr[k, d] - 2 * lt * arr[k, d - 1] + lt * lt * arr[k, d - 2]
                    arr[k, 1] = arr[k, 1] - 2 * lt * arr[k, 0]
                be[k, 0] += q * lt * lt
        return al, be

    @njit(error_model="numpy")
    def horner_scalar(h, al, be):
        S = np.ones(h.size)
        nb, n2 = al.shape
        for k in range(nb):
            for g in range(h.size):
                x = h[g]
                a = al[k, n2 - 1]
                b = be[k, n2 - 1]
                for d in range(n2 - 2, -1, -1):
                    a = a * x + al[k, d]
                    b = b * x + be[k, d]
                S[g] = a * S[g] + b
        return S

    @njit(error_model="numpy")
    def horner_vector(h, al, be):
        G = h.size
        S = np.ones(G)
        a = np.empty(G)
        b = np.empty(G)
        nb, n2 = al.shape
        for k in range(nb):
            for g in range(G):
                a[g] = al[k, n2 - 1]
                b[g] = be[k, n2 - 1]
            for d in range(n2 - 2, -1, -1):
                ca = al[k, d]
                cb = be[k, d]
                for g in range(G):
                    a[g] = a[g] * h[g] + ca
                    b[g] = b[g] * h[g] + cb
            for g in range(G):
                S[g] = a[g] * S[g] + b[g]
        return S

    h = NQM.paper(10_000).curvatures
    G, T, q = h.size, 8192, 0.5 / 16
    print(f"{'lr(0)':>6s} {'L':>4s} {'steps ns':>9s} {'Horner ns':>10s} {'vector ns':>10s} "
          "max rel. error")
    for top in (0.5, 1.9):
        lr = np.asarray(CosineDecay(top, T, 0.005).values(T))
        stepped(h, lr[:4], q)
        c0 = time.process_time()
        ref = stepped(h, lr, q)
        ts = time.process_time() - c0
        for L in (8, 16, 32, 64):
            al, be = coefficients(lr, q, L)
            horner_scalar(h, al[:1], be[:1])
            horner_vector(h, al[:1], be[:1])
            c0 = time.process_time()
            al, be = coefficients(lr, q, L)
            S = horner_scalar(h, al, be)
            tp = time.process_time() - c0
            c0 = time.process_time()
            al, be = coefficients(lr, q, L)
            horner_vector(h, al, be)
            tv = time.process_time() - c0
            with np.errstate(all="ignore"):
                err = np.max(np.abs(S / ref - 1))
            print(f"{top:6.1f} {L:4d} {ts / (T * G) * 1e9:9.2f} {tp / (T * G) * 1e9:10.2f} "
                  f"{tv / (T * G) * 1e9:10.2f} {err:.1e}", flush=True)


def run_one(case: str, T: int, dim: int, repeat: int, cold: bool, root: str) -> dict:
    """Run one case in a fresh process; return its JSON line as a dict."""
    src = ONE.format(dim=dim, T=T, opt=CASES[case].format(T=T), repeat=repeat, root=root)
    env = dict(os.environ, PYTHONPATH=root)
    with tempfile.TemporaryDirectory() as cache:
        if cold:
            env["NUMBA_CACHE_DIR"] = cache
        # run from an empty directory: with ``-c`` the working directory comes first on
        # sys.path and would shadow ``root``
        proc = subprocess.run([sys.executable, "-c", src], env=env, capture_output=True,
                              text=True, cwd=cache)
    if proc.returncode != 0:
        return dict(error=proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    """Parse the options, run the cases, print one line per case and horizon."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", nargs="+", default=["sparse", "cosine"],
                    help="groups (sparse, cosine) or case names (sgd, hb, cosine)")
    ap.add_argument("--steps", nargs="+", type=int, default=None,
                    help="horizons T (default 10^4, 2*10^6, 10^9 for sparse; 10^4, 2*10^6 "
                         "for cosine)")
    ap.add_argument("--dim", type=int, default=10_000)
    ap.add_argument("--repeat", type=int, default=2, help="further calls in the process")
    ap.add_argument("--cold", action="store_true", help="an empty numba cache (compilation)")
    ap.add_argument("--root", default=ROOT, help="the checkout to measure (PYTHONPATH)")
    ap.add_argument("--bits", metavar="OTHER_CHECKOUT",
                    help="compare the bits of sparse-record curves with another checkout")
    ap.add_argument("--polynomial", action="store_true",
                    help="measure the polynomial-in-the-curvature alternative to stepping")
    args = ap.parse_args()
    if args.polynomial:
        sys.path.insert(0, args.root)
        polynomial_experiment()
        return
    if args.bits:
        sys.exit(compare_bits(args.bits))
    names: list[str] = []
    for c in args.cases:
        names += GROUPS.get(c, [c])
    print(f"{'case':8s} {'T':>12s} {'first call':>11s} {'(CPU)':>9s} {'best':>9s} "
          f"{'(CPU)':>9s} {'peak MB':>8s}  mean at T")
    for name in names:
        steps = args.steps or ([10_000, 2_000_000] if name == "cosine"
                               else [10_000, 2_000_000, 1_000_000_000])
        for T in steps:
            r = run_one(name, T, args.dim, args.repeat, args.cold, args.root)
            if "error" in r:
                print(f"{name:8s} {T:12d} {r['error']}")
                continue
            print(f"{name:8s} {T:12d} {r['first']:10.3f}s {r['first_cpu']:8.3f}s "
                  f"{r['best']:8.3f}s {r['best_cpu']:8.3f}s {r['peak_rss_mb']:8.0f}  "
                  f"{r['last_mean']:.17g}", flush=True)


if __name__ == "__main__":
    main()
