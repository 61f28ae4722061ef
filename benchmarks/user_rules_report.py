"""What user rules and user noise must show, in one run (a report, never a test).

    python benchmarks/user_rules_report.py            # about 3-5 minutes on 2 cores
    python benchmarks/user_rules_report.py --quick    # smaller runs

1. Bits: SGD, heavy ball and Adam written as user rules against the built-in kernels, with
   1 and 2 numba threads (fresh processes) and on a Dask cluster (2 worker processes).
2. Throughput: user rule over built-in time, round-robin in one process
   (``bench_user_rules.measure``).
3. The exact expected risk of SGD on least-squares regression with Gaussian features (the
   recurrence below) against Monte Carlo with real minibatches of synthetic data, at every
   record, judged by :func:`nqm_mc.check` (family-wise threshold), and the same for the O(d)
   Gaussian law of the same covariance.
4. Power: relative errors planted in the prediction, for several numbers of runs: caught
   or not.
5. Critical batch size of SGD and heavy ball under multiplicative (least-squares) noise beside
   the additive NQM with the same spectrum: steps to a target against the batch size, the
   learning rate (and momentum's) tuned per batch size.

The recurrence (per direction i, s_i = E[theta_i^2], theta measured from the optimum):
s_i' = (1 - a h_i)^2 s_i + (a^2 / B) (h_i^2 s_i + h_i sum_j h_j s_j + sigma^2 h_i),
E[L_t] = 1/2 sum_i h_i s_i. Heavy ball's second moments (theta, m) follow the same way with
the same noise variance q_i = (h_i^2 s_i + h_i sum_j h_j s_j + sigma^2 h_i) / B.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import textwrap
import time

import numpy as np

from nqm_mc import NQM, SGD, HeavyBall, check, simulate
from nqm_mc.spec.user import LeastSquaresNoise, MinibatchLeastSquares

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_user_rules import measure  # noqa: E402

BITS = textwrap.dedent("""
    import hashlib, json
    import numpy as np
    from nqm_mc import NQM, SGD, HeavyBall, simulate
    from nqm_mc.spec.optimizers import Adam
    from nqm_mc.spec.rule_library import adam_rule, heavy_ball_rule, sgd_rule
    m = NQM.power_law(500, 1.0, 1.0)
    kw = dict(seed=11, record=20, target=0.5, keep_paths=8, progress=False, method="step")
    out = {}
    for b, u in [(SGD(0.3), sgd_rule(0.3)), (HeavyBall(0.1, 0.8), heavy_ball_rule(0.1, 0.8)),
                 (Adam(0.02), adam_rule(0.02))]:
        for tag, o in (("builtin", b), ("user", u)):
            r = simulate(m, o, 8, 200, 160, **kw)
            h = hashlib.sha256()
            for a in (r.mean, r.variance, r.paths, r.hitting_times, r.band_mean_square):
                h.update(np.ascontiguousarray(a).tobytes())
            out[b.name + "/" + tag] = h.hexdigest()[:16]
    print(json.dumps(out))
""")


def digests_dask() -> dict[str, str]:
    """The bits script's digests with every simulation on a 2-process Dask cluster."""
    from dask.distributed import LocalCluster

    from nqm_mc.montecarlo.distributed import DaskExecutor
    from nqm_mc.spec.optimizers import Adam
    from nqm_mc.spec.rule_library import adam_rule, heavy_ball_rule, sgd_rule
    m = NQM.power_law(500, 1.0, 1.0)
    kw = dict(seed=11, record=20, target=0.5, keep_paths=8, progress=False, method="step")
    out = {}
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=":0") as cluster, \
            DaskExecutor(cluster, groups_per_task=2) as ex:
        for b, u in [(SGD(0.3), sgd_rule(0.3)), (HeavyBall(0.1, 0.8), heavy_ball_rule(0.1, 0.8)),
                     (Adam(0.02), adam_rule(0.02))]:
            for tag, o in (("builtin", b), ("user", u)):
                r = simulate(m, o, 8, 200, 160, executor=ex, **kw)
                h = hashlib.sha256()
                for a in (r.mean, r.variance, r.paths, r.hitting_times, r.band_mean_square):
                    h.update(np.ascontiguousarray(a).tobytes())
                out[b.name + "/" + tag] = h.hexdigest()[:16]
    return out


def section_bits() -> None:
    print("\n== 1. Bits: built-in optimizers written as user rules (d = 500, 160 runs x 200 "
          "steps, hitting times, 8 kept paths) ==")
    cols = {}
    for n in (1, 2):
        env = {**os.environ, "NUMBA_NUM_THREADS": str(n)}
        p = subprocess.run([sys.executable, "-c", BITS], env=env, capture_output=True,
                           text=True, check=True)
        cols[f"{n} thread{'s' if n > 1 else ''}"] = json.loads(p.stdout.strip().splitlines()[-1])
    cols["Dask (2 procs)"] = digests_dask()
    ref = cols["1 thread"]
    print(f"{'rule':<12}" + "".join(f"{c:>22}" for c in cols) + "   digest (user)")
    for name in ("sgd", "heavy_ball", "adam"):
        cells = []
        for c in cols.values():
            same = c[f"{name}/user"] == c[f"{name}/builtin"] == ref[f"{name}/builtin"]
            cells.append("identical bits" if same else "DIFFERENT")
        print(f"{name:<12}" + "".join(f"{x:>22}" for x in cells) + f"   {ref[name + '/user']}")


def section_speed(quick: bool) -> None:
    print("\n== 2. Throughput: user rule over built-in (best of rounds, round-robin) ==")
    dim, steps, rounds = (2000, 200, 2) if quick else (4000, 500, 3)
    rows = measure(dim=dim, runs=64, steps=steps, rounds=rounds)
    print(f"d = {dim}, 64 runs x {steps} steps; python benchmarks/bench_user_rules.py")
    print(f"{'rule':<12}{'built-in dim-steps/s':>22}{'user dim-steps/s':>18}{'ratio':>8}")
    for r in rows:
        print(f"{r['rule']:<12}{r['builtin_rate']:>22.3g}{r['user_rate']:>18.3g}"
              f"{r['ratio']:>8.2f}")


ALPHA = 1e-5  # family-wise false-rejection probability of every check below
MODEL = NQM.power_law(50, 1.0, 1.0)
LR, BATCH, S2, T = 0.5, 4, 0.5, 300


def sgd_risk(model: NQM, steps: np.ndarray, lr: float, batch: int, s2: float,
             factor_h: bool = True) -> np.ndarray:
    """E[L_t] of SGD under least-squares noise (the recurrence in the docstring); factor_h
    False drops the factor h_i of h_i^2 s_i (a deliberately wrong theory)."""
    h, _, mu0, v0 = model.expand()
    s = mu0 ** 2 + v0
    want = {int(t): k for k, t in enumerate(steps)}
    out = np.empty(len(steps))
    for t in range(int(np.max(steps)) + 1):
        if t in want:
            out[want[t]] = 0.5 * h @ s
        mult = (h * h if factor_h else h) * s
        s = (1 - lr * h) ** 2 * s + lr ** 2 / batch * (mult + h * (h @ s) + s2 * h)
    return out


def section_recurrence(quick: bool) -> None:
    print(f"\n== 3. SGD on least squares (d = 50, h_i = 1/i, B = {BATCH}, lr = {LR}, "
          f"sigma^2 = {S2}): exact recurrence against Monte Carlo ==")
    runs = 2000 if quick else 8000
    for noise in (MinibatchLeastSquares(S2), LeastSquaresNoise(S2)):
        t0 = time.perf_counter()
        res = simulate(MODEL, SGD(LR), BATCH, T, runs, seed=1, record="log", n_records=25,
                       noise=noise, progress=False)
        secs = time.perf_counter() - t0
        exact = sgd_risk(MODEL, res.steps, LR, BATCH, S2)
        wrong = sgd_risk(MODEL, res.steps, LR, BATCH, S2, factor_h=False)
        v = check(res, mean=exact, alternative=wrong, family_alpha=ALPHA)
        print(f"-- noise {noise.name} ({runs} runs, {secs:.1f} s)")
        if noise.name.startswith("minibatch"):
            z = (res.mean - exact) / res.sem
            print(f"{'step':>6}{'exact E[L]':>12}{'MC mean':>12}{'se':>10}{'z':>8}")
            for k in range(res.steps.size):
                zk = f"{z[k]:8.2f}" if np.isfinite(z[k]) else "   (init)"
                print(f"{res.steps[k]:>6}{exact[k]:>12.5f}{res.mean[k]:>12.5f}"
                      f"{res.sem[k]:>10.5f}{zk}")
        print(f"   check: passed={v.passed}  max|z| = {v.max_abs_z:.2f} < threshold "
              f"{v.threshold:.2f} (family-wise alpha {v.family_alpha:g}, {v.n_tests} tests); "
              f"sensitivity {100 * v.sensitivity:.2f} %, power check caught: {v.power_caught}")
        print(f"   wrong theory (factor h_i missing in h_i^2 s_i): rejected = "
              f"{v.alternative_rejected}, max|z| = "
              f"{np.nanmax(np.abs(v.alternative_z)):.1f}")


def section_power(quick: bool) -> None:
    print("\n== 4. Power: relative error planted in the exact prediction (minibatch MC) ==")
    errors = (0.005, 0.01, 0.02, 0.05)
    runs_list = (500, 2000) if quick else (500, 2000, 8000)
    print(f"{'runs':>6}{'sensitivity':>13}" + "".join(f"{f'+{100 * e:g} %':>10}"
                                                      for e in errors))
    for runs in runs_list:
        res = simulate(MODEL, SGD(LR), BATCH, T, runs, seed=3, record="log", n_records=25,
                       noise=MinibatchLeastSquares(S2), progress=False)
        exact = sgd_risk(MODEL, res.steps, LR, BATCH, S2)
        base = check(res, mean=exact, family_alpha=ALPHA)
        cells = []
        for e in errors:
            v = check(res, mean=exact * (1 + e), family_alpha=ALPHA)
            cells.append("caught" if not v.passed else "missed")
        print(f"{runs:>6}{100 * base.sensitivity:>12.2f}%" + "".join(f"{c:>10}" for c in cells)
              + f"   (exact passes: {base.passed})")


def steps_to_target(h: np.ndarray, s0: np.ndarray, lr: np.ndarray, beta: float, batch: int,
                    s2: float, multiplicative: bool, n_max: int, target: float) -> int:
    """Fewest steps to E[L_t] < target over the learning rates (heavy ball; beta = 0 is
    SGD), -1 if none within n_max steps. Additive NQM: q_i = s2 h_i / B; least squares:
    q_i = (h_i^2 A_i + h_i sum_j h_j A_j + s2 h_i) / B."""
    a = lr[:, None]
    A = np.tile(s0, (lr.size, 1))
    C = np.zeros_like(A)
    M = np.zeros_like(A)
    for t in range(1, n_max + 1):
        q = s2 * h / batch
        if multiplicative:
            q = q + (h * h * A + h * (A @ h)[:, None]) / batch
        e = 1 - a * h
        A, M, C = (e * e * A + a * a * beta * beta * M - 2 * e * a * beta * C + a * a * q,
                   h * h * A + beta * beta * M + 2 * h * beta * C + q,
                   e * h * A + e * beta * C - a * beta * h * C - a * beta * beta * M - a * q)
        bad = ~(A < 1e100).all(axis=1)  # diverged learning rates: frozen out
        A[bad], C[bad], M[bad] = 1e100, 0.0, 0.0
        if (0.5 * (A @ h) < target).any():
            return t  # the first learning rate to reach the target gives the fewest steps
    return -1


def section_critical(quick: bool) -> None:
    d = 100
    model = NQM.power_law(d, 1.0, 1.0)
    h, _, mu0, v0 = model.expand()
    s0 = mu0 ** 2 + v0
    s2 = 0.05
    target = 0.1 * model.initial_loss()
    batches = 2 ** np.arange(0, 11 if not quick else 9)
    lrs = np.geomspace(1e-3, 4.0, 40 if not quick else 24)
    n_max = 20000
    print(f"\n== 5. Critical batch size: steps to E[L] < {target:.3f} (10 % of the initial "
          f"risk), d = {d}, h_i = 1/i, sigma^2 = {s2}; learning rate tuned per B "
          f"({lrs.size} values in [1e-3, 4]); heavy ball beta = 0.9 ==")
    s_init = 2 * model.initial_loss() + s2
    print(f"add-0: c_i = sigma^2 h_i (the noise of least squares at the optimum); add-init: "
          f"c_i = (2 L_0 + sigma^2) h_i = {s_init:.2f} h_i (its noise at the start, frozen); "
          "mult: least-squares minibatch noise, whose covariance falls with the risk")
    table = {}
    with np.errstate(all="ignore"):
        for label, mult, c in (("add-0", False, s2), ("add-init", False, s_init),
                               ("mult", True, s2)):
            for opt, beta in (("sgd", 0.0), ("hb", 0.9)):
                table[(label, opt)] = np.array([steps_to_target(h, s0, lrs, beta, int(B), c,
                                                                mult, n_max, target)
                                                for B in batches])
    print(f"{'B':>6}" + "".join(f"{f'{lab}/{o}':>14}" for lab, o in table))
    for k, B in enumerate(batches):
        print(f"{B:>6}" + "".join(f"{table[key][k]:>14}" for key in table))
    print("critical batch size (steps within 2x of perfect scaling from B = 1, i.e. steps(B) "
          "<= 2 steps(1) / B; largest such B):")
    for key, s in table.items():
        ok = [int(B) for B, n in zip(batches, s, strict=True) if 0 < n <= 2 * s[0] / B]
        print(f"   {key[0]:<10}{key[1]:<5} B_crit ~ {max(ok) if ok else 1:>5}   "
              f"steps at B = 1: {s[0]}, at the largest B: {s[-1]}")
    print("heavy ball over SGD (steps to the target, tuned), at B = 1 and at the largest B:")
    for lab in ("add-0", "add-init", "mult"):
        sg, hb = table[(lab, "sgd")], table[(lab, "hb")]
        print(f"   {lab:<10}{hb[0] / sg[0]:6.2f} {hb[-1] / sg[-1]:6.2f}")
    print("Under least-squares noise the covariance is proportional to the current risk "
          "(2L + sigma^2): far from the optimum it is the frozen start's noise, near the "
          "target it is much smaller. The steps needed at small B, and the critical batch "
          "size, fall between the two additive NQMs: they are set by the noise at the risks "
          "the run passes through, not by a fixed covariance.")
    # confirmation by Monte Carlo at one point of each multiplicative curve
    print("Monte Carlo confirmation of the multiplicative recurrences at B = 16 (the "
          "recurrence's E[L] at the last record vs the minibatch MC, z-test):")
    for opt, beta in (("sgd", 0.0), ("heavy_ball", 0.9)):
        lr = 0.3 if beta == 0 else 0.03
        res = simulate(model, SGD(lr) if beta == 0 else HeavyBall(lr, beta), 16, 400, 2000,
                       seed=9, record="log", n_records=10, noise=MinibatchLeastSquares(s2),
                       progress=False)
        pred = np.array([_hb_mean(h, s0, lr, beta, 16, s2, int(t)) for t in res.steps])
        v = check(res, mean=pred, family_alpha=ALPHA)
        print(f"   {opt:<11} lr = {lr}: passed={v.passed}, max|z| = {v.max_abs_z:.2f} "
              f"(threshold {v.threshold:.2f}), sensitivity {100 * v.sensitivity:.1f} %")


def _hb_mean(h, s0, lr, beta, batch, s2, t):
    """E[L_t] of heavy ball (beta = 0: SGD) under least-squares noise."""
    A, C, M = s0.copy(), np.zeros_like(s0), np.zeros_like(s0)
    for _ in range(t):
        q = (s2 * h + h * h * A + h * (A @ h)) / batch
        e = 1 - lr * h
        A, M, C = (e * e * A + lr * lr * beta * beta * M - 2 * e * lr * beta * C + lr * lr * q,
                   h * h * A + beta * beta * M + 2 * h * beta * C + q,
                   e * h * A + e * beta * C - lr * beta * h * C - lr * beta * beta * M - lr * q)
    return 0.5 * h @ A


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller runs")
    ap.add_argument("--sections", default="12345", help="which sections to run")
    a = ap.parse_args()
    t0 = time.perf_counter()
    for k, fn in (("1", section_bits), ("2", section_speed), ("3", section_recurrence),
                  ("4", section_power), ("5", section_critical)):
        if k in a.sections:
            fn() if k == "1" else fn(a.quick)  # type: ignore[call-arg]
    print(f"\n(report in {time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
