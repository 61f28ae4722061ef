"""Throughput of optimizers written as user rules, as ratios to the built-in kernels.

    python benchmarks/bench_user_rules.py                  # d = 4000, N = 64, T = 500
    python benchmarks/bench_user_rules.py --dim 10000 --rounds 5

SGD, heavy ball and Adam run as built-ins and as user rules
(:mod:`nqm_mc.spec.rule_library`, through :class:`nqm_mc.UpdateRule`), round-robin in one
process (each pair back to back, ``--rounds`` times; compile and warm-up first, not timed).
A ratio is the best time of the user rule over the best time of the built-in: 1.0 is the
same speed, the target is within 1.3. The two give the same bits (checked here too).
"""

import argparse
import time

from nqm_mc import NQM, SGD, HeavyBall, simulate
from nqm_mc.spec.optimizers import Adam
from nqm_mc.spec.rule_library import adam_rule, heavy_ball_rule, sgd_rule

PAIRS = [("sgd", SGD(0.3), sgd_rule(0.3)),
         ("heavy_ball", HeavyBall(0.1, 0.8), heavy_ball_rule(0.1, 0.8)),
         ("adam", Adam(0.01), adam_rule(0.01))]


def measure(dim: int = 4000, runs: int = 64, steps: int = 500, rounds: int = 3,
            batch: int = 8) -> list[dict]:
    """Best wall-clock time of each built-in and user rule, round-robin; their ratio."""
    model = NQM.power_law(dim, 1.0, 1.0)
    kw = dict(seed=3, record="log", progress=False, method="step")
    for _, b, u in PAIRS:  # compile (or load) and warm up
        simulate(model, b, batch, 10, 16, **kw)
        simulate(model, u, batch, 10, 16, **kw)
    best = {name: [float("inf"), float("inf")] for name, _, _ in PAIRS}
    same = {}
    for _ in range(rounds):
        for name, b, u in PAIRS:
            for k, opt in enumerate((b, u)):
                t = time.perf_counter()
                res = simulate(model, opt, batch, steps, runs, **kw)
                best[name][k] = min(best[name][k], time.perf_counter() - t)
                if k == 0:
                    ref = res.mean
                else:
                    same[name] = bool((ref == res.mean).all())
    rate = dim * runs * steps
    return [{"rule": name, "builtin_s": tb, "user_s": tu, "ratio": tu / tb,
             "builtin_rate": rate / tb, "user_rate": rate / tu, "same_bits": same[name]}
            for name, (tb, tu) in best.items()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dim", type=int, default=4000)
    ap.add_argument("--runs", type=int, default=64)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    rows = measure(a.dim, a.runs, a.steps, a.rounds)
    print(f"d = {a.dim}, N = {a.runs}, T = {a.steps}, best of {a.rounds} rounds (round-robin)")
    print(f"{'rule':<12}{'built-in d*N*T/s':>18}{'user d*N*T/s':>16}{'user/built-in time':>20}"
          f"{'same bits':>11}")
    for r in rows:
        print(f"{r['rule']:<12}{r['builtin_rate']:>18.3g}{r['user_rate']:>16.3g}"
              f"{r['ratio']:>20.2f}{str(r['same_bits']):>11}")


if __name__ == "__main__":
    main()
