"""SHA-256 digests of a fixed set of results: a record that a change of code kept every bit.

    python benchmarks/digests.py            # compare with tests/data/digests.json (exit 1)
    python benchmarks/digests.py --write    # record the current bits
    python benchmarks/digests.py --list     # the case names
    python benchmarks/digests.py sgd_f64 exact_hb   # only some cases (names or prefixes)

Every case computes one result of the public API (Monte Carlo, dense Monte Carlo, exact curves,
steps to target, steady states, a small tuning study) and digests each of its array fields:
SHA-256 of the dtype, the shape and ``np.ascontiguousarray(a).tobytes()``. Timing and
provenance fields are not digested. The results are meant to be identical for any thread
count (``NUMBA_NUM_THREADS=1`` or more) and any block size.

Digests are kept per numeric class of the machine (:func:`numeric_class`: the architecture and
the widest SIMD level NumPy dispatches to). NumPy's vectorised transcendental functions (``**``,
``exp``, ``log``, ``cos`` on arrays: the preconditioner ``h^-p``, decaying schedules, band edges)
can differ in the last bit between, say, AVX2 and AVX-512 builds of the same loop, so a result is
only comparable with digests recorded on the same class. ``--write`` records the current class
and leaves the others; ``--write CASE ...`` records those cases for the current class and drops
them from the other classes (their bits changed on purpose and cannot be recomputed here), so a
class never holds a stale digest. Comparing on a class with no record says so and compares
nothing.

The module is importable: ``CASES`` maps each name to a function returning ``{field: array}``,
``compute(names)`` returns the digests and ``compare(stored, computed)`` the differences
(``tests/test_digests.py`` runs a fast subset).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if ROOT not in sys.path:  # run as a script from anywhere: the package of this checkout
    sys.path.insert(0, ROOT)

import nqm_mc  # noqa: E402  (first: it chooses numba's vector width before numba loads)
from nqm_mc import NQM, SGD, HeavyBall, Nesterov  # noqa: E402
from nqm_mc.exact.engine import (  # noqa: E402
    expected_loss,
    loss_at,
    stability,
    steady_state,
    steps_to_target,
    steps_to_target_batch,
)
from nqm_mc.montecarlo.driver import simulate  # noqa: E402
from nqm_mc.spec import schedules as S  # noqa: E402
from nqm_mc.spec.noise import FiniteData, StudentT  # noqa: E402
from nqm_mc.spec.optimizers import Adagrad, Adam, RMSProp, SignSGD  # noqa: E402
from nqm_mc.spec.rotated import RotatedNQM, expected_loss_dense, simulate_dense  # noqa: E402
from nqm_mc.studies.scaling import tune  # noqa: E402

DIGESTS = os.path.join(ROOT, "tests", "data", "digests.json")
FORMAT = 2

# every array field of a SimulationResult (timing, provenance and spec are not digested)
RESULT_FIELDS = ("steps", "mean", "sem", "variance", "quantile_levels", "quantiles",
                 "mean_theta", "n_finite", "n_diverged", "band_mean_square", "band_edges",
                 "hitting_times", "paths")
CURVE_FIELDS = ("steps", "mean", "variance", "mean_theta", "group_mean",
                "group_second_moment", "std")


# ---------------------------------------------------------------------------- digests
def digest_array(a):
    """SHA-256 (hex) of an array's dtype, shape and C-ordered bytes; None stays None."""
    if a is None:
        return None
    a = np.asarray(a)
    hsh = hashlib.sha256()
    hsh.update(f"{a.dtype.str}|{a.shape}|".encode())
    hsh.update(np.ascontiguousarray(a).tobytes())
    return hsh.hexdigest()


def digest_fields(fields):
    """``{name: hex digest}`` of ``{name: array or None}`` (sorted by name)."""
    return {k: digest_array(fields[k]) for k in sorted(fields)}


# ---------------------------------------------------------------------------- models
def _models():
    paper = NQM.paper(dim=1100)  # spans two float64 loss chunks of 512 and a partial one
    small = NQM(np.array([1.0, 0.3, 0.05, 0.01]), np.array([0.8, 0.3, 0.1, 0.01]),
                multiplicities=[1, 3, 2, 4], initial_mean=[0.5, 0.0, -1.0, 2.0],
                initial_variance=[1.0, 0.5, 0.0, 2.0])
    binned = NQM.binned(dim=10_000, n_bins=100)
    return paper, small, binned


PAPER, SMALL, BINNED = _models()
ROTATED = RotatedNQM.from_nqm(
    NQM(np.array([1.0, 0.4, 0.1, 0.03]), np.array([0.6, 0.5, 0.2, 0.05]),
        multiplicities=[1, 2, 3, 4], initial_mean=[0.5, 0.0, -1.0, 0.3],
        initial_variance=[1.0, 0.5, 0.2, 2.0]), "both", seed=5)

LINEAR = {
    "sgd": SGD(0.5),
    "sgd_ema": SGD(0.5, ema=0.9),
    "sgd_p": SGD(0.3, preconditioning=0.5),
    "hb": HeavyBall(0.1, 0.9),
    "hb_ema": HeavyBall(0.1, 0.9, ema=0.95),
    "hb_p": HeavyBall(0.05, 0.8, preconditioning=0.25),
    "nesterov": Nesterov(0.1, 0.8),
    "nesterov_ema": Nesterov(0.1, 0.8, ema=0.95),
    "nesterov_p": Nesterov(0.05, 0.7, preconditioning=0.75, ema=0.9),
}
ADAPTIVE = {
    "adam": Adam(0.01),
    "rmsprop": RMSProp(0.005, decay=0.95),
    "adagrad": Adagrad(0.1),
    "signsgd": SignSGD(0.002),
}


# ---------------------------------------------------------------------------- case builders
def _sim(model, opt, batch=8, n_steps=120, n_runs=40, **kw):
    kw.setdefault("seed", 7)
    kw.setdefault("n_records", 30)
    kw.setdefault("progress", False)
    kw.setdefault("method", "step")  # the step kernel's bits (skip-ahead has its own tests)
    res = simulate(model, opt, batch, n_steps, n_runs, **kw)
    return {k: getattr(res, k) for k in RESULT_FIELDS}


def _dense(opt, batch=4, n_steps=60, n_runs=48, **kw):
    kw.setdefault("seed", 3)
    kw.setdefault("n_records", 20)
    res = simulate_dense(ROTATED, opt, batch, n_steps, n_runs, **kw)
    return {k: getattr(res, k) for k in RESULT_FIELDS}


def _curve(model, opt, batch, n_steps=None, **kw):
    c = expected_loss(model, opt, batch, n_steps, **kw)
    out = {k: getattr(c, k) for k in CURVE_FIELDS}
    out["diverged"] = np.array(c.diverged)
    return out


def _stt(model, opt, batch, target, method="exact"):
    r = steps_to_target(model, opt, batch, target, method=method)
    return {"steps": np.array(-1 if r.steps is None else r.steps, np.int64),
            "status": np.array(r.status), "steady_state_loss": np.array(r.steady_state_loss)}


def _steady(model, opt, batch):
    s = steady_state(model, opt, batch)
    return {"loss": np.array(s.loss), "group_second_moment": s.group_second_moment,
            "stable": np.array(s.stable)}


def _dense_curve(opt, batch, n_steps=None, **kw):
    steps, mean, var = expected_loss_dense(ROTATED, opt, batch, n_steps, **kw)
    return {"steps": steps, "mean": mean, "variance": var}


def _tune(family, batch_sizes, **kw):
    r = tune(BINNED, family, batch_sizes, 0.05, **kw)
    return {k: getattr(r, k) for k in ("batch_sizes", "steps", "learning_rate", "second",
                                       "lower_bound")}


def _build_cases():
    cases = {}
    # Monte Carlo, linear families (fast kernel), both dtypes
    for name, opt in LINEAR.items():
        for dt in ("float64", "float32"):
            cases[f"mc_{name}_{dt[-2:]}"] = (lambda o=opt, d=dt: _sim(PAPER, o, dtype=d))
    # adaptive families (general kernel), both dtypes
    for name, opt in ADAPTIVE.items():
        for dt in ("float64", "float32"):
            cases[f"mc_{name}_{dt[-2:]}"] = (lambda o=opt, d=dt: _sim(PAPER, o, dtype=d))
    cases["mc_adam_ema_64"] = lambda: _sim(PAPER, Adam(0.01, ema=0.9))
    # clipping (general kernel for a linear rule too)
    cases["mc_sgd_clip_64"] = lambda: _sim(PAPER, SGD(0.5, clip_norm=2.0))
    cases["mc_hb_clip_32"] = lambda: _sim(PAPER, HeavyBall(0.1, 0.9, clip_norm=1.0),
                                          dtype="float32")
    cases["mc_adam_clip_64"] = lambda: _sim(PAPER, Adam(0.01, clip_norm=1.0))
    # schedules
    cosine = SGD(S.Warmup(S.CosineDecay(0.5, 100), 10))
    cases["mc_sgd_lr_schedule_64"] = lambda: _sim(PAPER, cosine)
    cases["mc_sgd_lr_schedule_32"] = lambda: _sim(PAPER, cosine, dtype="float32")
    cases["mc_hb_step_decay_64"] = lambda: _sim(PAPER, HeavyBall(S.StepDecay(0.2, 0.5, 40), 0.7,
                                                                 ema=0.9))
    bsched = S.PiecewiseConstantBatch([30, 80], [4, 16, 64])
    cases["mc_sgd_batch_schedule_64"] = lambda: _sim(PAPER, SGD(0.5), batch=bsched)
    cases["mc_nesterov_batch_schedule_32"] = lambda: _sim(PAPER, Nesterov(0.1, 0.8),
                                                          batch=bsched, dtype="float32")
    cases["mc_adam_batch_schedule_64"] = lambda: _sim(PAPER, Adam(0.01), batch=bsched)
    # hitting times and kept paths, every step recorded
    cases["mc_sgd_target_paths_64"] = lambda: _sim(PAPER, SGD(0.5), target=1.2, keep_paths=5,
                                                   record="all")
    cases["mc_hb_target_paths_32"] = lambda: _sim(PAPER, HeavyBall(0.1, 0.9), target=1.0,
                                                  keep_paths=3, record=10, dtype="float32")
    cases["mc_rmsprop_target_paths_64"] = lambda: _sim(PAPER, RMSProp(0.005), target=2.0,
                                                       keep_paths=4, record="all")
    # multiplicities, a non-zero initial mean and a deterministic direction; 37 runs
    cases["mc_small_sgd_p_ema_64"] = lambda: _sim(SMALL, SGD(0.3, preconditioning=0.5, ema=0.9),
                                                  batch=4, n_runs=37, record="all", keep_paths=2)
    cases["mc_small_hb_32"] = lambda: _sim(SMALL, HeavyBall(0.1, 0.9), batch=4, n_runs=37,
                                           record="all", dtype="float32")
    # a diverging configuration (alpha h_max > 2): some runs hit the target first
    cases["mc_sgd_diverge_64"] = lambda: _sim(PAPER, SGD(2.5), target=3.2, keep_paths=4,
                                              n_steps=1000, record="log")
    cases["mc_hb_diverge_32"] = lambda: _sim(PAPER, HeavyBall(3.9, 0.9), dtype="float32",
                                             target=3.0, n_steps=400)
    cases["mc_nesterov_diverge_64"] = lambda: _sim(PAPER, Nesterov(1.5, 0.9), target=3.0,
                                                   n_steps=1400, record=25, keep_paths=2)
    # non-Gaussian noise laws
    cases["mc_sgd_student_t_64"] = lambda: _sim(PAPER, SGD(0.5), noise=StudentT(4.0))
    cases["mc_hb_student_t_32"] = lambda: _sim(PAPER, HeavyBall(0.1, 0.9), noise=StudentT(3.0),
                                               dtype="float32")
    cases["mc_sgd_finite_data_64"] = lambda: _sim(PAPER, SGD(0.5), noise=FiniteData(64, seed=3))
    cases["mc_adam_finite_data_32"] = lambda: _sim(PAPER, Adam(0.01), noise=FiniteData(32, 1),
                                                   dtype="float32")
    # another seed (above 2^32: the seed's high word is in the counter)
    cases["mc_sgd_big_seed_64"] = lambda: _sim(PAPER, SGD(0.5), seed=2 ** 40 + 123)
    # the dense engine
    cases["dense_sgd_p"] = lambda: _dense(SGD(0.5, preconditioning=0.5), target=0.5,
                                          keep_paths=3)
    cases["dense_hb_ema"] = lambda: _dense(HeavyBall(0.1, 0.9, ema=0.9), record="all")
    cases["dense_nesterov_diag"] = lambda: _dense(Nesterov(0.1, 0.8),
                                                  preconditioner=[2.0, 1.0, 0.5, 1.5, 1.0, 0.8,
                                                                  1.2, 1.0, 0.6, 0.9])
    cases["dense_adam_clip"] = lambda: _dense(Adam(0.02, clip_norm=1.0), target=0.5)
    cases["dense_sgd_schedule"] = lambda: _dense(SGD(S.StepDecay(0.8, 0.5, 20), ema=0.95),
                                                 batch=S.PiecewiseConstantBatch([25], [2, 8]))
    # exact curves
    for name, opt in LINEAR.items():
        cases[f"exact_{name}"] = (lambda o=opt: _curve(PAPER, o, 8, 300, record_every=3))
    cases["exact_small_moments"] = lambda: _curve(SMALL, HeavyBall(0.1, 0.9, ema=0.9), 4, 200,
                                                  group_moments=True)
    cases["exact_log_record"] = lambda: _curve(BINNED, SGD(0.9, preconditioning=0.25), 16,
                                               record=np.unique(np.geomspace(1, 1e5, 40)
                                                                .astype(np.int64)))
    cases["exact_lr_schedule"] = lambda: _curve(PAPER, HeavyBall(
        S.Warmup(S.CosineDecay(0.2, 400), 20), 0.9), 8, 500)
    cases["exact_batch_schedule"] = lambda: _curve(SMALL, SGD(S.ExponentialDecay(0.5, 0.9, 10)),
                                                   S.PiecewiseConstantBatch([50], [2, 32]), 200,
                                                   group_moments=True)
    cases["exact_diverge"] = lambda: _curve(PAPER, SGD(2.05), 8, 2000, record_every=10)
    cases["exact_loss_at"] = lambda: dict(zip(("mean", "variance", "mean_theta"), loss_at(
        BINNED, Nesterov(0.3, 0.9, ema=0.99), 32, np.array([0, 1, 7, 1000, 10 ** 6, 2 ** 40])),
        strict=True))
    cases["exact_stability"] = lambda: {
        f"{n}": np.array(stability(PAPER, o).spectral_radius) for n, o in LINEAR.items()}
    # steps to target
    cases["stt_exact"] = lambda: {
        f"{n}": _stt(BINNED, o, 64, 0.05)["steps"] for n, o in LINEAR.items()}
    cases["stt_sgd_methods"] = lambda: {
        m: _stt(BINNED, SGD(0.5), 64, 0.05, method=m)["steps"]
        for m in ("exact", "bisect", "reference")}
    cases["stt_hb_oscillating"] = lambda: {
        m: _stt(SMALL, HeavyBall(0.9, 0.95), 64, 0.2, method=m)["steps"]
        for m in ("exact", "bisect", "reference")}
    cases["stt_unreachable"] = lambda: _stt(BINNED, SGD(0.5), 1, 1e-4)
    cases["stt_diverges"] = lambda: _stt(BINNED, SGD(2.5), 16, 0.05)
    cases["stt_batch_grid"] = lambda: {"steps": steps_to_target_batch(
        BINNED, HeavyBall(0.1, 0.5), 0.05, np.array([4.0, 64.0, 1024.0])[:, None, None],
        np.logspace(-3, 0.5, 12)[None, :, None], momenta=np.array([0.0, 0.5, 0.9, 0.99]))}
    cases["stt_batch_ema_caps"] = lambda: {"steps": steps_to_target_batch(
        BINNED, SGD(0.1, ema=0.5), 0.05, 64.0, np.logspace(-1, 0.3, 10)[:, None],
        ema_decays=np.array([0.0, 0.9, 0.99]), caps=np.array([0, 15000, 20000]))}
    # steady states
    for name, opt in LINEAR.items():
        cases[f"steady_{name}"] = (lambda o=opt: _steady(BINNED, o, 16))
    cases["steady_unstable"] = lambda: _steady(BINNED, HeavyBall(4.0, 0.9), 16)
    # the dense exact recurrence
    cases["dense_exact_sgd_p"] = lambda: _dense_curve(SGD(0.5, preconditioning=0.5), 4, 80)
    cases["dense_exact_hb_ema"] = lambda: _dense_curve(HeavyBall(0.1, 0.9, ema=0.9), 4, 80)
    cases["dense_exact_diag"] = lambda: _dense_curve(
        Nesterov(0.1, 0.8), S.PiecewiseConstantBatch([20], [2, 8]), record=[0, 1, 5, 20, 60],
        preconditioner=[2.0, 1.0, 0.5, 1.5, 1.0, 0.8, 1.2, 1.0, 0.6, 0.9])
    # a small tuning study
    cases["tune_sgd_refine"] = lambda: _tune("sgd", [4, 64, 4096], grid_size=(30, 1),
                                             search="refine", refine_rounds=2)
    cases["tune_hb_grid"] = lambda: _tune("heavy_ball", [4, 256], grid_size=(24, 8))
    cases["tune_ema_grid"] = lambda: _tune("ema", [16, 1024], grid_size=(24, 8))
    # the same bits as mc_sgd_64 / mc_adam_32: one thread, another block size
    cases["mc_sgd_64_threads1_block48"] = lambda: _sim(PAPER, LINEAR["sgd"], threads=1,
                                                       block_size=48)
    cases["mc_adam_32_threads1_block32"] = lambda: _sim(PAPER, ADAPTIVE["adam"], threads=1,
                                                        block_size=32, dtype="float32")
    return cases


CASES = _build_cases()

# a fast subset for the test suite: one of each engine and kernel path
FAST = ("mc_sgd_64", "mc_nesterov_ema_32", "mc_adam_64", "mc_sgd_target_paths_64",
        "mc_sgd_student_t_64", "mc_small_sgd_p_ema_64", "dense_hb_ema", "exact_hb_ema",
        "exact_batch_schedule", "stt_exact", "steady_nesterov_p", "dense_exact_diag")

# cases whose bits must equal another case's (thread count and block size do not matter)
SAME_AS = {"mc_sgd_64_threads1_block48": "mc_sgd_64", "mc_adam_32_threads1_block32": "mc_adam_32"}


# ---------------------------------------------------------------------------- driver
def select(patterns):
    """Case names matching any of ``patterns`` (exact names or prefixes), in CASES order."""
    if not patterns:
        return list(CASES)
    out = [n for n in CASES if any(n == p or n.startswith(p) for p in patterns)]
    if not out:
        raise SystemExit(f"no case matches {patterns}")
    return out


def compute(names=None, verbose=False):
    """``{case: {field: hex digest}}`` for the given case names (default: all)."""
    out = {}
    for name in names or list(CASES):
        t0 = time.perf_counter()
        with np.errstate(all="ignore"):
            fields = CASES[name]()
        out[name] = digest_fields(fields)
        if verbose:
            print(f"  {name:<34s} {time.perf_counter() - t0:7.2f} s", flush=True)
    return out


def compare(stored, computed):
    """``{case: [changed fields]}`` for every computed case that differs from ``stored``
    (a case missing from ``stored`` is listed with ["<missing>"])."""
    diff = {}
    for name, fields in computed.items():
        ref = stored.get(name)
        if ref is None:
            diff[name] = ["<missing>"]
            continue
        bad = sorted(k for k in set(ref) | set(fields) if ref.get(k, "?") != fields.get(k, "?"))
        if bad:
            diff[name] = bad
    return diff


def load(path=DIGESTS):
    """The stored digests of the current numeric class: ``{"environment": ..., "cases": ...}``
    (empty cases when this class has no record)."""
    return load_all(path)["classes"].get(numeric_class(), {"environment": {}, "cases": {}})


def load_all(path=DIGESTS):
    """The whole digest file: ``{"format": 2, "classes": {class: {"environment", "cases"}}}``."""
    with open(path) as f:
        data = json.load(f)
    if data.get("format") == 1:  # one set, recorded on an AVX-512 x86-64 machine
        data = {"format": FORMAT, "classes": {"x86_64/X86_V4": {
            "environment": data["environment"], "cases": data["cases"]}}}
    return data


def numeric_class():
    """``machine/SIMD``: the architecture and the widest SIMD level NumPy dispatches to
    (x86-64: X86_V4 with AVX-512, X86_V3 with AVX2 and FMA, else X86_V2)."""
    machine = platform.machine()
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as feats
    except ImportError:  # NumPy < 2
        from numpy.core._multiarray_umath import __cpu_features__ as feats
    if machine in ("x86_64", "AMD64"):
        level = ("X86_V4" if feats.get("AVX512_SKX") else
                 "X86_V3" if feats.get("AVX2") and feats.get("FMA3") else "X86_V2")
    else:
        level = "+".join(sorted(k for k, v in feats.items() if v and k.startswith(
            ("ASIMD", "SVE", "NEON", "VSX", "VX")))) or "baseline"
    return f"{machine}/{level}"


def environment():
    import numba
    import scipy
    return {"machine": platform.machine(), "class": numeric_class(),
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "scipy": scipy.__version__, "nqm_mc": nqm_mc.__version__}


def write(digests, path=DIGESTS, only=None):
    """Record ``digests`` for the current class; with ``only`` (case names) update just those and
    drop them from every other class. Returns the names dropped elsewhere, per class."""
    try:
        data = load_all(path)
    except FileNotFoundError:
        data = {"format": FORMAT, "classes": {}}
    cls = numeric_class()
    mine = data["classes"].get(cls, {"environment": {}, "cases": {}})
    dropped = {}
    if only is None:
        mine = {"environment": environment(), "cases": digests}
    else:
        mine["cases"].update({k: digests[k] for k in only})
        mine["environment"] = environment()
        for other, rec in data["classes"].items():
            if other != cls:
                gone = [k for k in only if rec["cases"].pop(k, None) is not None]
                if gone:
                    dropped[other] = gone
    mine["cases"] = {k: mine["cases"][k] for k in CASES if k in mine["cases"]}
    data["classes"][cls] = mine
    data["format"] = FORMAT
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)
    return dropped


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("cases", nargs="*", help="case names or prefixes (default: all)")
    ap.add_argument("--write", action="store_true", help=f"write the digests to {DIGESTS}")
    ap.add_argument("--file", default=DIGESTS, help="digest file to write or compare with")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("--verbose", "-v", action="store_true", help="time each case")
    args = ap.parse_args(argv)
    if args.list:
        print("\n".join(CASES))
        return 0
    import numba
    names = select(args.cases)
    t0 = time.perf_counter()
    digests = compute(names, verbose=args.verbose)
    seconds = time.perf_counter() - t0
    same = [(a, b) for a, b in SAME_AS.items()
            if a in digests and b in digests and digests[a] != digests[b]]
    for a, b in same:
        print(f"INCONSISTENT {a}: differs from {b} (thread count or block size changed bits)")
    if args.write:
        if same:
            return 1
        dropped = write(digests, args.file, only=names if args.cases else None)
        print(f"wrote {len(names)} cases for {numeric_class()} to {args.file} ({seconds:.1f} s, "
              f"{numba.get_num_threads()} threads)")
        for other, gone in dropped.items():
            print(f"dropped from {other} (bits changed on purpose, not recomputable here): "
                  f"{', '.join(gone)}")
        return 0
    stored = load_all(args.file)["classes"].get(numeric_class())
    if stored is None:
        print(f"no digests recorded for {numeric_class()} (recorded: "
              f"{', '.join(load_all(args.file)['classes'])}); nothing compared. "
              "Record them with --write.")
        return 0
    missing = [n for n in names if n not in stored["cases"]]
    diff = {k: v for k, v in compare(stored["cases"], digests).items() if k not in missing}
    for name in names:
        if name in missing:
            print(f"NEW     {name} (not recorded for {numeric_class()})")
        elif name in diff:
            print(f"CHANGED {name}: {', '.join(diff[name])}")
        else:
            print(f"OK      {name}")
    env = environment()
    if stored.get("environment", {}) != env:
        print(f"note: recorded in {stored.get('environment')}, now {env}")
    print(f"{len(names) - len(diff) - len(missing)}/{len(names)} cases unchanged "
          f"({seconds:.1f} s, {numba.get_num_threads()} threads)")
    return 1 if diff or same else 0


if __name__ == "__main__":
    sys.exit(main())
