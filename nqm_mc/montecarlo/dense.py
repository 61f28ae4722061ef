"""The Monte Carlo engine for rotated models (:class:`~nqm_mc.spec.rotated.RotatedNQM`).

Dense d x d steps, every optimizer of the aligned engine, the same counter-based noise streams.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np
from numba import njit, prange

from nqm_mc.montecarlo import _interrupt
from nqm_mc.montecarlo._interrupt import stop_requested
from nqm_mc.montecarlo._kernels import apply_rule, clip_to_norm, piece_at
from nqm_mc.montecarlo._rng import PURPOSE_GRADIENT, PURPOSE_INITIAL, fill_normals_f64, split_seed
from nqm_mc.results import SimulationResult, provenance
from nqm_mc.spec._checks import (
    check_choice,
    check_int,
    check_memory,
    check_real,
)
from nqm_mc.spec.codes import DIVERGED
from nqm_mc.spec.rotated import _check
from nqm_mc.spec.schedules import as_batch_schedule

__all__ = ["simulate_dense"]



@njit(cache=True, error_model="numpy")
def _matvec(M, x, out):
    """Out = M x for M (d, e), x (e,), out (d,) (out must not alias x)."""
    d = M.shape[0]
    for i in range(d):
        s = 0.0
        for j in range(M.shape[1]):
            s += M[i, j] * x[j]
        out[i] = s


@njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def _dense_runs(kind, has_ema, H, Lc, Minv, mu0, sd0, first, lr_r, isb_r, beta, gamma, extra,
                seed_lo, seed_hi, n_runs, record, target, keep, out_loss, out_hit, out_records,
                stop):
    """Run one trajectory per run id, each step dense.

    Noise xi = Lc z / sqrt(B) with z the generator's normals
    (keyed (seed, run), the aligned engine's streams), g~ = Minv (H theta + xi), the rule as
    written. Writes the readout loss at the recorded steps (inf after a divergence) and the
    hitting time of ``target`` (-1 never, -2 diverged first). Adaptive rules and clipping
    as in the aligned engine (extra = beta2, eps, clip norm). ``stop`` (polled every step)
    ends the call early: out_records[j] is the number of records run j wrote (R when it
    finished) and its hitting time is -3 if it stopped before hitting.

    kind int (KIND_*), has_ema bool; H, Lc, Minv (d, d) float64: the Hessian, the noise factor
    (Lc Lc^T = C) and P^-1; mu0, sd0 (d,) the initial mean and standard deviation; first,
    lr_r, isb_r (K,) the hyperparameters as runs of constant values (run k: updates first[k]
    .. first[k + 1] - 1, learning rate lr_r[k], 1/sqrt(B) isb_r[k]); beta, gamma floats;
    extra (3,); seed_lo, seed_hi uint32 halves of the seed; n_runs int; record (R,) int64
    increasing steps; target float; keep int (unused here: every run's records are written);
    out_loss (n_runs, R) float64; out_hit, out_records (n_runs,) int64; stop the interrupt
    flag.
    """
    d = H.shape[0]
    beta2 = extra[0]
    eps = extra[1]
    clip = extra[2]
    R = record.shape[0]
    T = record[R - 1]
    for j in prange(n_runs):
        if stop_requested(stop) != 0:
            out_hit[j] = -3
            out_records[j] = 0
            continue
        th = np.empty(d)
        m = np.zeros(d)
        v = np.zeros(d)
        e = np.empty(d)
        z = np.empty(d + 4)
        xi = np.empty(d)
        g = np.empty(d)
        gt = np.empty(d)
        hx = np.empty(d)
        ws = np.empty((4, 128), np.uint32)
        k0 = np.uint32(seed_lo)
        k1 = np.uint32(j)
        shi = np.uint32(seed_hi)
        fill_normals_f64(z, d, np.uint32(0), np.uint32(PURPOSE_INITIAL), shi, k0, k1, ws)
        for i in range(d):
            th[i] = mu0[i] + sd0[i] * z[i]
            e[i] = th[i]
        _matvec(H, th, hx)
        loss = 0.0
        for i in range(d):
            loss += th[i] * hx[i]
        loss *= 0.5
        hit = 0 if loss < target else -1
        r = 0
        if record[0] == 0:
            out_loss[j, 0] = loss
            r = 1
        piece = 0
        for t in range(T):
            if stop_requested(stop) != 0:
                break
            piece = piece_at(first, t, piece)
            fill_normals_f64(z, d, np.uint32(t), np.uint32(PURPOSE_GRADIENT), shi, k0, k1, ws)
            _matvec(Lc, z, xi)
            for i in range(d):
                g[i] = hx[i] + isb_r[piece] * xi[i]
            _matvec(Minv, g, gt)
            clip_to_norm(gt, clip)
            apply_rule(kind, lr_r[piece], beta, beta2, eps, t, th, m, v, gt)
            _matvec(H, th, hx)
            loss = 0.0
            if has_ema:
                for i in range(d):
                    e[i] = gamma * e[i] + (1.0 - gamma) * th[i]
                _matvec(H, e, g)
                for i in range(d):
                    loss += e[i] * g[i]
            else:
                for i in range(d):
                    loss += th[i] * hx[i]
            loss *= 0.5
            if not (loss < DIVERGED):
                if hit < 0:
                    hit = -2
                while r < R:
                    out_loss[j, r] = np.inf
                    r += 1
                break
            if hit < 0 and loss < target:
                hit = t + 1
            if r < R and record[r] == t + 1:
                out_loss[j, r] = loss
                r += 1
        if r < R and hit == -1:
            hit = -3
        out_hit[j] = hit
        out_records[j] = r


def simulate_dense(model, optimizer, batch_size, n_steps, n_runs, *, seed=0, record="log",
                   n_records=60, target=None, keep_paths=0, preconditioner=None, threads=None,
                   on_interrupt="raise"):
    """Simulate noisy trajectories on a RotatedNQM (dense d x d steps).

    SGD, heavy-ball, Nesterov (P = H^p or a fixed diagonal
    ``preconditioner``), Adam, RMSProp, Adagrad, sign-SGD, clipping, EMA and schedules.
    Gaussian noise from the same counter-based streams as :func:`nqm_mc.simulate`, so results
    are bitwise reproducible for any thread count.

    Every run's recorded losses are kept (n_runs x records floats), so the statistics are
    exact sample statistics: mean, standard error, variance, quantiles (np.quantile), hitting
    times. O(d^2) per step: meant for moderate d. Ctrl-C and ``on_interrupt`` work as in
    :func:`nqm_mc.simulate` (each record's statistics then cover the runs that reached it).
    """
    from nqm_mc.montecarlo.blocks import QUANTILE_LEVELS
    from nqm_mc.montecarlo.driver import record_steps
    from nqm_mc.montecarlo.lowering import hyper_runs
    owner = "simulate_dense"
    on_interrupt = check_choice("on_interrupt", on_interrupt, owner, ("raise", "return"))
    minv = _check(model, optimizer, preconditioner, owner, linear=False)
    n_steps = check_int("n_steps", n_steps, owner, low=1, high=2 ** 32 - 2)
    n_runs = check_int("n_runs", n_runs, owner, low=2, high=2 ** 31 - 1)
    seed = check_int("seed", seed, owner, low=0, high=2 ** 64 - 1)
    keep_paths = check_int("keep_paths", keep_paths, owner, low=0, high=n_runs)
    if target is not None:
        target = check_real("target", target, owner, low=0.0)
    n_records = check_int("n_records", n_records, owner, low=2, high=2 ** 20)
    steps = record_steps(n_steps, record, n_records)
    check_memory(8.0 * (3 * n_runs * steps.size + 2 * n_runs), owner,
                 f"{n_runs} runs x {steps.size} recorded steps",
                 "Record fewer steps (record='log' or an array of steps) or use fewer runs.")
    first, (lr_r, isb_r) = hyper_runs(optimizer, batch_size, n_steps, owner)
    lo, hi = split_seed(seed)
    out = np.zeros((n_runs, steps.size))
    hit = np.full(n_runs, -1, np.int64)
    reached = np.zeros(n_runs, np.int64)
    t0 = time.perf_counter()
    if threads is not None:
        threads = check_int("threads", threads, owner, low=1,
                            high=numba.config.NUMBA_NUM_THREADS)
    stop = _interrupt.new_flag()
    interrupt = None
    try:
        _interrupt.run_stoppable(lambda: _dense_runs(optimizer.kind_code, optimizer.ema is not None,
                    np.ascontiguousarray(model.hessian()),
                    np.ascontiguousarray(model.noise_factor()), np.ascontiguousarray(minv),
                    model.initial_mean, np.sqrt(model.initial_variance), first, lr_r, isb_r,
                    float(optimizer.kernel_params[0]),
                    float(optimizer.ema if optimizer.ema is not None else 0.0),
                    np.array([optimizer.kernel_params[1], optimizer.kernel_params[2],
                              optimizer.clip_norm or 0.0]), lo, hi, n_runs,
                    steps, -np.inf if target is None else target, keep_paths, out, hit, reached,
                    stop), stop, threads or numba.get_num_threads())
    except KeyboardInterrupt as err:
        interrupt = err
    ran = np.arange(steps.size)[None, :] < reached[:, None]  # records each run reached
    out[~ran] = np.nan
    finite = np.isfinite(out)
    n = finite.sum(0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        x = np.where(finite, out, 0.0)
        mean = x.sum(0) / n
        var = (np.where(finite, out - mean, 0.0) ** 2).sum(0) / (n - 1)
        sem = np.sqrt(var / n)
        quant = np.array([[np.quantile(out[finite[:, r], r], q) if n[r] else np.nan
                           for r in range(steps.size)] for q in QUANTILE_LEVELS])
    spec = {"model": model.to_dict(), "optimizer": optimizer.to_dict(),
            "batch_size": batch_size if isinstance(batch_size, int) else
            as_batch_schedule(batch_size).to_dict(), "n_steps": n_steps, "n_runs": n_runs,
            "seed": seed, "record": steps.tolist(), "target": target, "dtype": "float64",
            "keep_paths": keep_paths, "n_bands": 0,
            "preconditioner": None if preconditioner is None else
            np.asarray(preconditioner, float).tolist()}
    meta = {"provenance": provenance(), "seconds": time.perf_counter() - t0,
            "threads": threads or numba.get_num_threads(), "block_size": 1,
            "runs_completed": int(np.count_nonzero(reached == steps.size)),
            "runs_started": int(np.count_nonzero(reached > 0)),
            "interrupted": interrupt is not None,
            "signal": None if interrupt is None else _interrupt.signal_name(interrupt),
            "executor": "threads", "engine": "dense"}
    result = SimulationResult(
        steps=steps, mean=mean, sem=sem, variance=var, quantile_levels=QUANTILE_LEVELS.copy(),
        quantiles=quant, mean_theta=mean if optimizer.ema is None else np.full(steps.size,
                                                                                 math.nan),
        n_finite=n.astype(np.int64), n_diverged=(ran.sum(0) - n).astype(np.int64),
        band_mean_square=np.zeros((steps.size, 0)), band_edges=np.zeros(0),
        hitting_times=hit if target is not None else None,
        paths=out[:keep_paths].copy() if keep_paths else None, spec=spec, meta=meta)
    if interrupt is not None and on_interrupt == "raise":
        raise _interrupt.Interrupted(result, meta["signal"]) from interrupt
    return result
