"""Numba kernels of the Monte Carlo engine (private: arrays in, arrays out, no checks).

Each kernel applies the optimizer's update rule as written (docs/theory.md, section 2) to
every direction of one trajectory at a time, drawing its gradient noise from the
counter-based generator keyed by (seed, trajectory). Trajectories are grouped in blocks; a
block writes its own statistics (count, mean, M2 of the loss per recorded step, per-band sums
of the readout's square, a loss histogram, divergences), which the caller merges in block
order. Nothing here depends on which thread runs a block.
"""

import math
from typing import NamedTuple

import numpy as np
from numba import njit

from nqm_mc.montecarlo._interrupt import stop_requested
from nqm_mc.montecarlo._rng import (
    CHUNK,
    PURPOSE_GRADIENT,
    PURPOSE_INITIAL,
    fill_normals_f32,
    fill_normals_f64,
    fill_student_t_ws,
    normals_chunk_f32,
    normals_chunk_f64,
    sample_without_replacement,
)
from nqm_mc.spec.codes import (
    DIVERGED,
    HIT_DIVERGED,
    HIT_INTERRUPTED,
    HIT_NEVER,
    KIND_ADAGRAD,
    KIND_ADAM,
    KIND_HEAVY_BALL,
    KIND_NESTEROV,
    KIND_RMSPROP,
    KIND_SGD,
    NOISE_GAUSSIAN,
    NOISE_STUDENT_T,
)


class Work(NamedTuple):
    """One trajectory's state and scratch (allocated once per block, reused by its
    trajectories). d is the number of directions, R of records."""

    theta: np.ndarray  #: (d,) parameters
    m: np.ndarray  #: (d,) momentum, or Adam's first moment
    ema: np.ndarray  #: (d,) iterate average (the readout with EMA)
    v: np.ndarray  #: (d,) second moment of the adaptive rules (size 0 on the fast path)
    g: np.ndarray  #: (d,) the stochastic gradient (general path; size 0 otherwise)
    perm: np.ndarray  #: (n,) permutation of the finite-data examples (size 0 otherwise)
    z: np.ndarray  #: noise buffer, at least max(d, 4 CHUNK) + 4
    q: np.ndarray  #: float64 scratch of one loss chunk
    lw: np.ndarray  #: (WINDOW, 32) per-step partial loss sums of a window (theta, readout)
    ws: np.ndarray  #: (4, CHUNK) uint32 generator words
    rec_loss: np.ndarray  #: (R,) readout loss at the recorded steps
    rec_theta: np.ndarray  #: (R,) loss at theta at the recorded steps
    rec_band: np.ndarray  #: (R, n_bands) per-band sums of the readout's square


@njit(cache=True, error_model="numpy")
def half_quadratic(h, x, q):
    """0.5 sum_i h_i x_i^2 in float64, summed as the steps' losses are (see _add_hsq16): a fixed
    order, the same bits on every machine. q is float64 scratch whose size is the chunk length
    (the kernels pass one loss chunk)."""
    d = h.shape[0]
    per = q.shape[0]
    acc = np.zeros(16)
    for lo in range(0, d, per):
        _add_hsq16(h, x, lo, min(per, d - lo), acc, q)
    return _total16(acc)


@njit(cache=True, error_model="numpy")
def _update(kind, has_ema, a, b, lr, isb, beta, gamma, theta, m, ema, z, lo, n):
    """Update directions lo .. lo + n - 1 with the noise z[0:n] (one SIMD loop per rule). The
    stochastic gradient is h^-p (h theta + sqrt(c / B) z) = a theta + b z / sqrt(B) with
    a = h^(1-p), b = h^-p sqrt(c). Plain arrays and scalars (the hot loop: the caller unpacks
    its named structures once per window)."""
    th = theta[lo:]
    mm = m[lo:]
    aa = a[lo:]
    bb = b[lo:]
    if kind == KIND_SGD:
        for i in range(n):
            g = aa[i] * th[i] + bb[i] * isb * z[i]
            th[i] = th[i] - lr * g
    elif kind == KIND_HEAVY_BALL:
        for i in range(n):
            g = aa[i] * th[i] + bb[i] * isb * z[i]
            mi = beta * mm[i] + g
            mm[i] = mi
            th[i] = th[i] - lr * mi
    else:
        for i in range(n):
            g = aa[i] * th[i] + bb[i] * isb * z[i]
            mi = beta * mm[i] + g
            mm[i] = mi
            th[i] = th[i] - lr * (g + beta * mi)
    if has_ema:
        em = ema[lo:]
        for i in range(n):
            em[i] = gamma * em[i] + (1.0 - gamma) * th[i]


@njit(cache=True, error_model="numpy")
def _add_hsq16(h, x, lo, n, acc, q):
    """acc += the products h_i x_i^2 (float64) of directions lo .. lo + n - 1, in a fixed order
    that does not depend on the vector width: the products go through q (scratch, >= n) in one
    SIMD loop, j paired with j + n/2 when n is a multiple of 32; then q[j] goes into acc[j mod
    16] (j below the last multiple of 16; the rest into acc[0]), sixteen independent chains.
    Every kernel sums a loss chunk by chunk of the same length (loss chunk: UPDATE_CALLS
    generator calls), so the fast and general kernels give the same bits."""
    hh = h[lo:]
    xs = x[lo:]
    if n % 32 == 0:  # pair j with j + n/2 in the SIMD loop: half the scalar additions
        n //= 2
        x2 = xs[n:]
        h2 = hh[n:]
        for j in range(n):
            xv = float(xs[j])
            xw = float(x2[j])
            q[j] = hh[j] * xv * xv + h2[j] * xw * xw
    else:
        for j in range(n):
            xv = float(xs[j])
            q[j] = hh[j] * xv * xv
    n16 = n - n % 16
    a0 = acc[0]
    a1 = acc[1]
    a2 = acc[2]
    a3 = acc[3]
    a4 = acc[4]
    a5 = acc[5]
    a6 = acc[6]
    a7 = acc[7]
    a8 = acc[8]
    a9 = acc[9]
    a10 = acc[10]
    a11 = acc[11]
    a12 = acc[12]
    a13 = acc[13]
    a14 = acc[14]
    a15 = acc[15]
    for i in range(0, n16, 16):
        a0 += q[i]
        a1 += q[i + 1]
        a2 += q[i + 2]
        a3 += q[i + 3]
        a4 += q[i + 4]
        a5 += q[i + 5]
        a6 += q[i + 6]
        a7 += q[i + 7]
        a8 += q[i + 8]
        a9 += q[i + 9]
        a10 += q[i + 10]
        a11 += q[i + 11]
        a12 += q[i + 12]
        a13 += q[i + 13]
        a14 += q[i + 14]
        a15 += q[i + 15]
    for i in range(n16, n):
        a0 += q[i]
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3
    acc[4] = a4
    acc[5] = a5
    acc[6] = a6
    acc[7] = a7
    acc[8] = a8
    acc[9] = a9
    acc[10] = a10
    acc[11] = a11
    acc[12] = a12
    acc[13] = a13
    acc[14] = a14
    acc[15] = a15


@njit(cache=True, error_model="numpy")
def _total16(acc):
    """0.5 x the sum of the 16 partial sums, by a fixed pairwise tree."""
    p0 = (acc[0] + acc[1]) + (acc[2] + acc[3])
    p1 = (acc[4] + acc[5]) + (acc[6] + acc[7])
    p2 = (acc[8] + acc[9]) + (acc[10] + acc[11])
    p3 = (acc[12] + acc[13]) + (acc[14] + acc[15])
    return 0.5 * ((p0 + p1) + (p2 + p3))


@njit(cache=True, error_model="numpy")
def _sumsq16(x, lo, hi):
    """sum_{lo <= i < hi} x_i^2 in float64: sixteen partial sums by (i - lo) mod 16, the rest
    into the first, added by the fixed tree of _total16 (SIMD, a fixed order)."""
    n = hi - lo
    n16 = n - n % 16
    xs = x[lo:]
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    a4 = 0.0
    a5 = 0.0
    a6 = 0.0
    a7 = 0.0
    a8 = 0.0
    a9 = 0.0
    a10 = 0.0
    a11 = 0.0
    a12 = 0.0
    a13 = 0.0
    a14 = 0.0
    a15 = 0.0
    for i in range(0, n16, 16):
        v0 = float(xs[i + 0])
        a0 += v0 * v0
        v1 = float(xs[i + 1])
        a1 += v1 * v1
        v2 = float(xs[i + 2])
        a2 += v2 * v2
        v3 = float(xs[i + 3])
        a3 += v3 * v3
        v4 = float(xs[i + 4])
        a4 += v4 * v4
        v5 = float(xs[i + 5])
        a5 += v5 * v5
        v6 = float(xs[i + 6])
        a6 += v6 * v6
        v7 = float(xs[i + 7])
        a7 += v7 * v7
        v8 = float(xs[i + 8])
        a8 += v8 * v8
        v9 = float(xs[i + 9])
        a9 += v9 * v9
        v10 = float(xs[i + 10])
        a10 += v10 * v10
        v11 = float(xs[i + 11])
        a11 += v11 * v11
        v12 = float(xs[i + 12])
        a12 += v12 * v12
        v13 = float(xs[i + 13])
        a13 += v13 * v13
        v14 = float(xs[i + 14])
        a14 += v14 * v14
        v15 = float(xs[i + 15])
        a15 += v15 * v15
    for i in range(n16, n):
        v = float(xs[i])
        a0 += v * v
    return (((a0 + a1) + (a2 + a3)) + ((a4 + a5) + (a6 + a7))) + (
        ((a8 + a9) + (a10 + a11)) + ((a12 + a13) + (a14 + a15)))


@njit(cache=True, error_model="numpy")
def _band_sums(x, lo, hi, run_start, run_band, out):
    """out[band] += sum of x_i^2 over lo <= i < hi, run by run (a run is a maximal range of
    consecutive directions in one curvature band; run_start has a final entry d)."""
    k = np.searchsorted(run_start, lo, side="right") - 1
    while k < run_band.shape[0] and run_start[k] < hi:
        a = max(lo, run_start[k])
        b = min(hi, run_start[k + 1])
        out[run_band[k]] += _sumsq16(x, a, b)
        k += 1


@njit(cache=True)
def band_runs(band):
    """(run_start, run_band) of the per-direction band labels (see _band_sums)."""
    d = band.shape[0]
    n = 1
    for i in range(1, d):
        if band[i] != band[i - 1]:
            n += 1
    run_start = np.empty(n + 1, np.int64)
    run_band = np.empty(n, np.int64)
    run_start[0] = 0
    run_band[0] = band[0]
    k = 1
    for i in range(1, d):
        if band[i] != band[i - 1]:
            run_start[k] = i
            run_band[k] = band[i]
            k += 1
    run_start[n] = d
    return run_start, run_band


UPDATE_CALLS = 2  # generator chunks per update call (fewer calls; the state stays in L1)


@njit(cache=True)
def loss_chunk(use_f32):
    """Directions per update call and per loss / band-sum chunk, in every kernel (so that the
    fast and general kernels sum in the same order)."""
    return UPDATE_CALLS * (4 * CHUNK if use_f32 else 2 * CHUNK)

WINDOW = 64  # steps advanced per pass over a chunk of directions (see _window)


@njit(cache=True, error_model="numpy")
def _window(rule, dirs, sched, rec, work, run_start, run_band, key, t0, w, r0):
    """Advance one trajectory by steps t0 .. t0 + w - 1, one chunk of directions at a time.

    The directions of the NQM evolve independently, so each chunk (its state, coefficients
    and noise: a few kB, L1-resident) goes through all w steps before the next chunk is
    touched; the state crosses the memory hierarchy once per window, not once per step.
    work.lw[s, 0:16] (lw[s, 16:32] for the readout) receive the partial sums of h theta^2
    after step t0 + s, chunk after chunk (_add_hsq16): the same operations in the same order
    as half_quadratic over all directions. Recorded steps in the window (rec.steps[r0:]) get
    their per-band sums of the readout's square, again in index order. ``key`` is the
    trajectory's generator key (seed_hi, seed_lo, trajectory id) as uint32."""
    shi, k0, k1 = key
    use_f32 = dirs.single
    kind, has_ema, beta, gamma = rule.kind, rule.has_ema, rule.beta, rule.gamma
    a, b, h = dirs.coef_a, dirs.coef_b, dirs.h
    lr_t, isb_t = sched.learning_rate, sched.inv_sqrt_batch
    theta, m, ema, q = work.theta, work.m, work.ema, work.q
    readout = ema if has_ema else theta
    lw = work.lw
    z = work.z
    ws = work.ws
    record = rec.steps
    d = theta.shape[0]
    gen = 4 * CHUNK if use_f32 else 2 * CHUNK  # normals per generator call
    per = loss_chunk(use_f32)
    R = record.shape[0]
    for s in range(w):
        for k in range(32):
            lw[s, k] = 0.0
    for lo in range(0, d, per):
        n = min(per, d - lo)
        r = r0
        for s in range(w):
            t = t0 + s
            for sub in range(0, n, gen):
                nn = min(gen, n - sub)
                if use_f32:
                    normals_chunk_f32((lo + sub) // 4, (nn + 3) // 4, np.uint32(t),
                                      np.uint32(PURPOSE_GRADIENT), shi, k0, k1, ws, z[sub:])
                else:
                    normals_chunk_f64((lo + sub) // 2, (nn + 1) // 2, np.uint32(t),
                                      np.uint32(PURPOSE_GRADIENT), shi, k0, k1, ws, z[sub:])
            _update(kind, has_ema, a, b, lr_t[t], isb_t[t], beta, gamma, theta, m, ema, z, lo,
                    n)
            _add_hsq16(h, theta, lo, n, lw[s, 0:16], q)
            if has_ema:
                _add_hsq16(h, ema, lo, n, lw[s, 16:32], q)
            if r < R and record[r] == t + 1:
                _band_sums(readout, lo, lo + n, run_start, run_band, work.rec_band[r])
                r += 1


@njit(cache=True, error_model="numpy")
def _start(dirs, rec, work, run_start, run_band, key):
    """A trajectory's initial state theta(0) = mu0 + sd0 z (its own PURPOSE_INITIAL normals),
    m = 0, ema = theta, and step 0's loss, hit and record. Returns (loss, hit, next record)."""
    shi, k0, k1 = key
    h = dirs.h
    theta = work.theta
    d = h.shape[0]
    if dirs.single:
        fill_normals_f32(work.z, d, np.uint32(0), np.uint32(PURPOSE_INITIAL), shi, k0, k1,
                         work.ws)
    else:
        fill_normals_f64(work.z, d, np.uint32(0), np.uint32(PURPOSE_INITIAL), shi, k0, k1,
                         work.ws)
    for i in range(d):
        theta[i] = dirs.mu0[i] + dirs.sd0[i] * work.z[i]
        work.m[i] = 0.0
        work.ema[i] = theta[i]
    loss = half_quadratic(h, theta, work.q)
    hit = 0 if loss < rec.target else HIT_NEVER
    r = 0
    if rec.steps[0] == 0:
        work.rec_loss[0] = loss
        work.rec_theta[0] = loss
        per = loss_chunk(dirs.single)
        for lo in range(0, d, per):
            _band_sums(theta, lo, min(d, lo + per), run_start, run_band, work.rec_band[0])
        r = 1
    return loss, hit, r


@njit(cache=True, error_model="numpy")
def _fill_diverged(work, r):
    """Mark records r .. R - 1 of a diverged trajectory (inf); returns R."""
    R = work.rec_loss.shape[0]
    while r < R:
        work.rec_loss[r] = np.inf
        work.rec_theta[r] = np.inf
        r += 1
    return r


@njit(cache=True, error_model="numpy")
def _trajectory(rule, dirs, sched, rec, work, run_start, run_band, key, stop):
    """Run one trajectory (linear rules, Gaussian noise) window by window; write its readout
    loss, theta loss and per-band sums of the readout's square at the recorded steps into
    ``work``. Returns (hitting time or -1, step of divergence or -1, number of records written:
    R unless ``stop`` was raised, checked once per window). A window in which the loss
    overflows is cut at its first diverged step."""
    record = rec.steps
    R = record.shape[0]
    T = record[R - 1]
    lw = work.lw
    loss, hit, r = _start(dirs, rec, work, run_start, run_band, key)
    div = -1
    t0 = 0
    while t0 < T:
        if stop_requested(stop) != 0:
            break
        w = min(WINDOW, T - t0)
        _window(rule, dirs, sched, rec, work, run_start, run_band, key, t0, w, r)
        for s in range(w):
            t = t0 + s + 1
            loss_th = _total16(lw[s, 0:16])
            loss = _total16(lw[s, 16:32]) if rule.has_ema else loss_th
            if not (loss < DIVERGED and loss_th < DIVERGED):
                div = t
                break
            if hit < 0 and loss < rec.target:
                hit = t
            if r < R and record[r] == t:
                work.rec_loss[r] = loss
                work.rec_theta[r] = loss_th
                r += 1
        if div >= 0:
            r = _fill_diverged(work, r)
            break
        t0 += w
    return hit, div, r


@njit(cache=True, error_model="numpy")
def _noise(law, batch, work, d, step, key, single):
    """work.z[0:d] <- the step's unit-variance gradient noise (of z / sqrt(B) per direction).
    Gaussian: the fast path's normals, bit for bit. Student-t: see _rng.fill_student_t_ws.
    Finite data: a batch of B of the n standardised per-example rows, drawn without
    replacement; z = sqrt(B) f mean_batch(row), f = sqrt((n - 1) / (n - B)) the inverse finite
    population correction, so that z has unit variance like the Gaussian case."""
    shi, k0, k1 = key
    z = work.z
    if law.code == NOISE_GAUSSIAN:
        if single:
            fill_normals_f32(z, d, step, np.uint32(PURPOSE_GRADIENT), shi, k0, k1, work.ws)
        else:
            fill_normals_f64(z, d, step, np.uint32(PURPOSE_GRADIENT), shi, k0, k1, work.ws)
    elif law.code == NOISE_STUDENT_T:
        fill_student_t_ws(z, d, step, shi, k0, k1, law.nu, work.ws)
    else:
        perm = work.perm
        n = perm.shape[0]
        sample_without_replacement(perm, batch, step, shi, k0, k1)
        for i in range(d):
            z[i] = 0.0
        for j in range(batch):
            row = law.data[perm[j]]
            for i in range(d):
                z[i] += row[i]
        f = math.sqrt((n - 1.0) / (n - batch)) / math.sqrt(float(batch))
        for i in range(d):
            z[i] = z[i] * f


@njit(cache=True, error_model="numpy")
def clip_to_norm(g, clip):
    """g <- g min(1, clip / |g|) (the norm in float64, 16 fixed partial sums); clip <= 0: off."""
    if clip > 0.0:
        d = g.shape[0]
        nrm = math.sqrt(_sumsq16(g, 0, d))
        if nrm > clip:
            s = clip / nrm
            for i in range(d):
                g[i] = g[i] * s


@njit(cache=True, error_model="numpy")
def apply_rule(kind, lr, beta, beta2, eps, t, theta, m, v, g):
    """theta (and the buffers m, v) <- one step of the rule ``kind`` on the gradient g at step
    t (t = 0 first; Adam's bias corrections use t + 1). Shared by every full-pass kernel."""
    d = theta.shape[0]
    if kind == KIND_SGD:
        for i in range(d):
            theta[i] = theta[i] - lr * g[i]
    elif kind == KIND_HEAVY_BALL:
        for i in range(d):
            m[i] = beta * m[i] + g[i]
            theta[i] = theta[i] - lr * m[i]
    elif kind == KIND_NESTEROV:
        for i in range(d):
            m[i] = beta * m[i] + g[i]
            theta[i] = theta[i] - lr * (g[i] + beta * m[i])
    elif kind == KIND_ADAM:
        c1 = 1.0 - beta ** (t + 1)
        c2 = 1.0 - beta2 ** (t + 1)
        for i in range(d):
            m[i] = beta * m[i] + (1.0 - beta) * g[i]
            v[i] = beta2 * v[i] + (1.0 - beta2) * g[i] * g[i]
            theta[i] = theta[i] - lr * (m[i] / c1) / (math.sqrt(v[i] / c2) + eps)
    elif kind == KIND_RMSPROP:
        for i in range(d):
            v[i] = beta * v[i] + (1.0 - beta) * g[i] * g[i]
            theta[i] = theta[i] - lr * g[i] / (math.sqrt(v[i]) + eps)
    elif kind == KIND_ADAGRAD:
        for i in range(d):
            v[i] = v[i] + g[i] * g[i]
            theta[i] = theta[i] - lr * g[i] / (math.sqrt(v[i]) + eps)
    else:
        for i in range(d):
            gi = g[i]
            sg = 1.0 if gi > 0 else (-1.0 if gi < 0 else 0.0)
            theta[i] = theta[i] - lr * sg


@njit(cache=True, error_model="numpy")
def _trajectory_general(rule, dirs, sched, law, rec, work, run_start, run_band, key, stop):
    """_trajectory for every rule (adaptive ones, clipping) and every noise law, one full pass
    over the directions per step (clipping needs the whole gradient's norm first). The same
    initial state and, for Gaussian noise, the same normals as the fast path. ``stop`` is
    checked before every step."""
    h = dirs.h
    a = dirs.coef_a
    b = dirs.coef_b
    theta = work.theta
    ema = work.ema
    g = work.g
    z = work.z
    q = work.q
    record = rec.steps
    d = h.shape[0]
    R = record.shape[0]
    T = record[R - 1]
    has_ema = rule.has_ema
    gamma = rule.gamma
    loss, hit, r = _start(dirs, rec, work, run_start, run_band, key)
    div = -1
    for i in range(d):
        work.v[i] = 0.0
    for j in range(work.perm.shape[0]):
        work.perm[j] = j
    per = loss_chunk(dirs.single)
    for t in range(T):
        if stop_requested(stop) != 0:
            break
        _noise(law, sched.batch[t], work, d, np.uint32(t), key, dirs.single)
        isb = sched.inv_sqrt_batch[t]
        for i in range(d):  # the (fixed-preconditioned) stochastic gradient a theta + b z / sqrt(B)
            g[i] = a[i] * theta[i] + b[i] * isb * z[i]
        clip_to_norm(g, rule.clip)
        apply_rule(rule.kind, sched.learning_rate[t], rule.beta, rule.beta2, rule.eps, t, theta,
                   work.m, work.v, g)
        if has_ema:
            for i in range(d):
                ema[i] = gamma * ema[i] + (1.0 - gamma) * theta[i]
        loss_th = half_quadratic(h, theta, q)
        loss = half_quadratic(h, ema, q) if has_ema else loss_th
        if not (loss < DIVERGED and loss_th < DIVERGED):
            div = t + 1
            r = _fill_diverged(work, r)
            break
        if hit < 0 and loss < rec.target:
            hit = t + 1
        if r < R and record[r] == t + 1:
            work.rec_loss[r] = loss
            work.rec_theta[r] = loss_th
            for lo in range(0, d, per):
                _band_sums(ema if has_ema else theta, lo, min(d, lo + per), run_start,
                           run_band, work.rec_band[r])
            r += 1
    return hit, div, r


@njit(cache=True, error_model="numpy")
def _new_work(rule, dirs, law, n_records, n_bands):
    """A block's Work buffers for the state's dtype and the kernel's path."""
    d = dirs.h.shape[0]
    general = rule.general
    ft = dirs.coef_a.dtype
    # positional, in the order of Work's fields
    return Work(np.empty(d, ft), np.empty(d, ft), np.empty(d, ft),
                np.empty(d if general else 0, ft), np.empty(d if general else 0, ft),
                np.empty(law.data.shape[0], np.int64),
                np.empty(max(d, 4 * CHUNK) + 4, ft), np.empty(loss_chunk(dirs.single)),
                np.empty((WINDOW, 32)), np.empty((4, CHUNK), np.uint32),
                np.empty(n_records), np.empty(n_records),
                np.zeros((n_records, n_bands)))


@njit(cache=True, error_model="numpy")
def _accumulate(out, bb, work, done, hist_lo, hist_inv_width):
    """Add one trajectory's records 0 .. done - 1 to block bb's statistics: Welford count,
    mean and M2 of the finite readout losses, mean theta loss, band sums, the histogram of
    log10(loss); a diverged record counts in ``diverged`` instead."""
    nh = out.hist.shape[2]
    n_bands = work.rec_band.shape[1]
    for r in range(done):
        x = work.rec_loss[r]
        if not (x < DIVERGED):
            out.diverged[bb, r] += 1
            continue
        c = out.count[bb, r] + 1.0
        delta = x - out.mean[bb, r]
        out.mean[bb, r] += delta / c
        out.m2[bb, r] += delta * (x - out.mean[bb, r])
        out.count[bb, r] = c
        out.theta_mean[bb, r] += (work.rec_theta[r] - out.theta_mean[bb, r]) / c
        for q in range(n_bands):
            out.band[bb, r, q] += work.rec_band[r, q]
        if x > 0.0:
            k = int(math.floor((math.log10(x) - hist_lo) * hist_inv_width))
        else:
            k = 0
        if k < 0:
            k = 0
        elif k >= nh:
            k = nh - 1
        out.hist[bb, r, k] += 1


@njit(cache=True, error_model="numpy")
def begin_trajectory(out, slot, work, stop):
    """Start trajectory ``slot`` of a block: False (and the trajectory marked as not run: hit
    -3, records -1) when the stop flag is up, else True with its band sums cleared."""
    if stop_requested(stop) != 0:
        out.hits[slot] = HIT_INTERRUPTED
        out.records[slot] = -1
        return False
    for r in range(work.rec_band.shape[0]):
        for q in range(work.rec_band.shape[1]):
            work.rec_band[r, q] = 0.0
    return True


@njit(cache=True, error_model="numpy")
def end_trajectory(out, bb, slot, traj, hit, div, done, keep_paths, work, rec):
    """Record a finished (or stopped) trajectory in block row bb of ``out``: its hitting time
    (-2 when it diverged first, -3 when it stopped before it hit), the number of records it
    reached, its kept path and its contribution to the statistics."""
    R = rec.steps.shape[0]
    if div >= 0 and (hit < 0 or hit > div):
        hit = HIT_DIVERGED
    elif done < R and hit < 0:
        hit = HIT_INTERRUPTED
    out.hits[slot] = hit
    out.records[slot] = done
    if traj < keep_paths:
        for r in range(R):
            out.paths[traj, r] = work.rec_loss[r] if r < done else np.nan
    _accumulate(out, bb, work, done, rec.hist_lo, rec.hist_inv_width)


@njit(cache=True, error_model="numpy", nogil=True)
def run_block(rule, dirs, sched, law, rec, stream, b, bb, block_size, n_runs, keep_paths,
              run_start, run_band, out, stop):
    """Simulate block b: trajectory ids b * block_size + j, j < block_size, below n_runs.

    The first six arguments are the fields of a lowering.KernelInput (rule, directions,
    schedule, noise law, recording, stream); (run_start, run_band) = band_runs(dirs.band).
    The kernel releases the GIL: the driver runs blocks on a pool of threads, each block
    writing only its own row bb of ``out`` (a lowering.Statistics) and its own trajectories'
    entries, so the results do not depend on the scheduling.

    Row bb receives: Welford count/mean/M2 of the finite readout losses per recorded step,
    the mean theta loss, per-band sums of the readout's square, a histogram of log10(loss)
    and the number of diverged trajectories. out.hits[traj - first] receives each
    trajectory's hitting time (-1 never, -2 diverged first), where first = (b - bb)
    block_size; out.paths the recorded losses of the first ``keep_paths`` trajectories
    overall.

    ``stop`` (one int64, polled once per window of steps) ends the call early: a trajectory
    then contributes its records before the stop, one not yet started contributes nothing.
    out.records receives each trajectory's number of records written (R when it finished);
    its hitting time is -3 when it stopped early without having hit.
    """
    R = rec.steps.shape[0]
    first = b - bb
    work = _new_work(rule, dirs, law, R, rec.n_bands)
    for j in range(block_size):
        traj = b * block_size + j
        if traj >= n_runs:
            break
        slot = traj - first * block_size
        if not begin_trajectory(out, slot, work, stop):
            continue
        key = (np.uint32(stream.seed_hi), np.uint32(stream.seed_lo), np.uint32(traj))
        if rule.general:
            hit, div, done = _trajectory_general(rule, dirs, sched, law, rec, work, run_start,
                                                 run_band, key, stop)
        else:
            hit, div, done = _trajectory(rule, dirs, sched, rec, work, run_start, run_band, key,
                                         stop)
        end_trajectory(out, bb, slot, traj, hit, div, done, keep_paths, work, rec)
