"""Numba kernels of the Monte Carlo engine (private: arrays in, arrays out, no checks).

Each kernel applies the optimizer's update rule as written (docs/theory.md, section 2) to
every direction of one trajectory at a time, drawing its gradient noise from the
counter-based generator keyed by (seed, trajectory). Trajectories are grouped in blocks; a
block writes its own statistics (count, mean, M2 of the loss per recorded step, per-band sums
of the readout's square, a loss histogram, divergences; summed and accumulated by
:mod:`nqm_mc.montecarlo._statistics`), which the caller merges in block order. Nothing here
depends on which thread runs a block.

``run_block``, ``_trajectory``, ``_trajectory_general`` and ``_window`` are inlined by numba
(``inline="always"``) into ``run_blocks``, their one caller: numba optimises and emits a
callee's code again inside every caller, so each level of that chain cost its whole body once
more. Inlined, the step kernel compiled in about 21 s instead of 28 s (float64, cold cache),
with the same bits and speed (about 19.5 s since each kernel compiles only the generator of
its own dtype). Inlining the small helpers below them gains nothing more.
"""

import math
from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

from nqm_mc.montecarlo._interrupt import stop_requested
from nqm_mc.montecarlo._rng import (
    CHUNK,
    PURPOSE_GRADIENT,
    PURPOSE_INITIAL,
    STUDENT_WIDTH,
    fill_normals_f32,
    fill_normals_f64,
    fill_student_t_ws,
    normals_chunk_f32,
    normals_chunk_f64,
    sample_without_replacement,
    student_t_range,
)
from nqm_mc.montecarlo._statistics import (
    _add_hsq16,
    _band_sums,
    _sumsq16,
    _total16,
    begin_trajectory,
    end_trajectory,
    half_quadratic,
    loss_chunk,
)
from nqm_mc.spec.codes import (
    DIVERGED,
    HIT_NEVER,
    KIND_ADAGRAD,
    KIND_ADAM,
    KIND_HEAVY_BALL,
    KIND_NESTEROV,
    KIND_RMSPROP,
    KIND_SGD,
    NOISE_FINITE,
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


WINDOW = 64  # steps advanced per pass over a chunk of directions (see _window)


class NoiseScratch(NamedTuple):
    """A trajectory's scratch for non-Gaussian noise on the windowed path (arrays of size 0
    for the laws that do not use them)."""

    ws: np.ndarray  #: (4, STUDENT_WIDTH) uint32, the Student-t sampler's generator words
    sc: np.ndarray  #: (4, STUDENT_WIDTH) float64, the Student-t sampler's stages
    idx: np.ndarray  #: (loss chunk,) int64, the Student-t elements that need later rounds
    batches: np.ndarray  #: (WINDOW, max B) int64, the finite-data batches of a window


@njit(cache=True, error_model="numpy")
def piece_at(start, t, k):
    """The run of constant hyperparameters of update t (lowering.StepSchedule: run k covers
    start[k] <= t < start[k + 1]), searched forward from run k (<= the answer): the kernels
    step through time, so the walk over all runs costs O(1) per update."""
    K = start.shape[0]
    while k + 1 < K and start[k + 1] <= t:
        k += 1
    return k


@njit(cache=True, error_model="numpy")
def _new_noise_scratch(law, batch, single):
    """The NoiseScratch for ``law`` and the batch sizes ``batch`` (B_t)."""
    student = law.code == NOISE_STUDENT_T
    finite = law.code == NOISE_FINITE
    return NoiseScratch(np.empty((4, STUDENT_WIDTH if student else 0), np.uint32),
                        np.empty((4, STUDENT_WIDTH if student else 0)),
                        np.empty(loss_chunk(single) if student else 0, np.int64),
                        np.empty((WINDOW if finite else 0, batch.max() if finite else 0),
                                 np.int64))


@njit(cache=True, error_model="numpy")
def _draw_batches(law, sched, work, ns, key, t0, w, piece0):
    """Finite data: the batches of steps t0 .. t0 + w - 1 (the running partial Fisher-Yates
    shuffle of work.perm, step by step) into ns.batches[s, 0:B_t]; ``piece0`` is the run of
    step t0 (see piece_at)."""
    shi, k0, k1 = key
    perm = work.perm
    piece = piece0
    for s in range(w):
        t = t0 + s
        piece = piece_at(sched.start, t, piece)
        batch = sched.batch[piece]
        sample_without_replacement(perm, batch, np.uint32(t), shi, k0, k1)
        row = ns.batches[s]
        for j in range(batch):
            row[j] = perm[j]


@njit(cache=True, error_model="numpy")
def _finite_chunk(data, rows, batch, lo, n, z):
    """z[0:n] <- sqrt(B) f mean of the rows ``rows[0:B]`` of data, directions lo .. lo + n - 1
    (see _noise): z = 0, then the rows added one after the other, then times f: the same
    operations in the same order, but eight (then four, then one) rows per pass over z, so
    that eight streams of data are read at once (the sum is bound by memory: 1.5x faster)."""
    nex = data.shape[0]
    for i in range(n):
        z[i] = 0.0
    j = 0
    while j + 8 <= batch:
        r0 = data[rows[j], lo:]
        r1 = data[rows[j + 1], lo:]
        r2 = data[rows[j + 2], lo:]
        r3 = data[rows[j + 3], lo:]
        r4 = data[rows[j + 4], lo:]
        r5 = data[rows[j + 5], lo:]
        r6 = data[rows[j + 6], lo:]
        r7 = data[rows[j + 7], lo:]
        for i in range(n):
            z[i] = (((((((z[i] + r0[i]) + r1[i]) + r2[i]) + r3[i]) + r4[i]) + r5[i]) + r6[i]
                    + r7[i])
        j += 8
    if j + 4 <= batch:
        r0 = data[rows[j], lo:]
        r1 = data[rows[j + 1], lo:]
        r2 = data[rows[j + 2], lo:]
        r3 = data[rows[j + 3], lo:]
        for i in range(n):
            z[i] = (((z[i] + r0[i]) + r1[i]) + r2[i]) + r3[i]
        j += 4
    while j < batch:
        r0 = data[rows[j], lo:]
        for i in range(n):
            z[i] += r0[i]
        j += 1
    f = math.sqrt((nex - 1.0) / (nex - batch)) / math.sqrt(float(batch))
    for i in range(n):
        z[i] = z[i] * f


@njit(cache=True, error_model="numpy")
def _chunk_noise(law, batch, work, ns, key, lo, n, t, s, z):
    """z[0:n] <- the noise of directions lo .. lo + n - 1 at step t (step s of the window, of
    batch size ``batch``): the same values as the full-pass _noise gives them."""
    shi, k0, k1 = key
    if law.code == NOISE_GAUSSIAN:
        chunk_normals(z, lo, n, np.uint32(t), np.uint32(PURPOSE_GRADIENT), shi, k0, k1, work.ws)
    elif law.code == NOISE_STUDENT_T:
        student_t_range(z, lo, n, np.uint32(t), shi, k0, k1, law.nu, ns.ws, ns.sc, ns.idx)
    else:
        _finite_chunk(law.data, ns.batches[s], batch, lo, n, z)


@njit(cache=True, error_model="numpy", inline="always")
def _window(rule, dirs, sched, law, rec, work, ns, run_start, run_band, key, t0, w, r0, piece0):
    """Advance one trajectory by steps t0 .. t0 + w - 1, one chunk of directions at a time.

    The directions of the NQM evolve independently, so each chunk (its state, coefficients
    and noise: a few kB, L1-resident) goes through all w steps before the next chunk is
    touched; the state crosses the memory hierarchy once per window, not once per step.
    work.lw[s, 0:16] (lw[s, 16:32] for the readout) receive the partial sums of h theta^2
    after step t0 + s, chunk after chunk (_add_hsq16): the same operations in the same order
    as half_quadratic over all directions. Recorded steps in the window (rec.steps[r0:]) get
    their per-band sums of the readout's square, again in index order. ``key`` is the
    trajectory's generator key (seed_hi, seed_lo, trajectory id) as uint32. ``piece0`` is the
    run of constant hyperparameters of step t0 (sched: lowering.StepSchedule), walked forward
    with the steps. The noise comes from ``law`` (ns: its scratch); finite data draws the
    window's batches first, step by step, then sums each chunk's part of them (the chunk's
    rows stay in cache for the window)."""
    kind, has_ema, beta, gamma = rule.kind, rule.has_ema, rule.beta, rule.gamma
    a, b, h = dirs.coef_a, dirs.coef_b, dirs.h
    lr_r, isb_r, first = sched.learning_rate, sched.inv_sqrt_batch, sched.start
    theta, m, ema, q = work.theta, work.m, work.ema, work.q
    readout = ema if has_ema else theta
    lw = work.lw
    z = work.z
    record = rec.steps
    d = theta.shape[0]
    per = loss_chunk(dirs.single)
    R = record.shape[0]
    for s in range(w):
        for k in range(32):
            lw[s, k] = 0.0
    if law.code == NOISE_FINITE:
        _draw_batches(law, sched, work, ns, key, t0, w, piece0)
    for lo in range(0, d, per):
        n = min(per, d - lo)
        r = r0
        piece = piece0
        for s in range(w):
            t = t0 + s
            piece = piece_at(first, t, piece)
            _chunk_noise(law, sched.batch[piece], work, ns, key, lo, n, t, s, z)
            _update(kind, has_ema, a, b, lr_r[piece], isb_r[piece], beta, gamma, theta, m, ema,
                    z, lo, n)
            _add_hsq16(h, theta, lo, n, lw[s, 0:16], q)
            if has_ema:
                _add_hsq16(h, ema, lo, n, lw[s, 16:32], q)
            if r < R and record[r] == t + 1:
                _band_sums(readout, lo, lo + n, run_start, run_band, work.rec_band[r])
                r += 1


def fill_normals(z, n, step, purpose, shi, k0, k1, ws):  # pragma: no cover - compiled only
    """z[0:n] <- the normals of (step, purpose) in z's dtype: fill_normals_f32 for float32,
    fill_normals_f64 for float64. The choice is made when the caller is compiled (from the
    type of z), so a kernel compiles only the generator of its own dtype."""
    if z.dtype == np.float32:
        fill_normals_f32(z, n, step, purpose, shi, k0, k1, ws)
    else:
        fill_normals_f64(z, n, step, purpose, shi, k0, k1, ws)


@overload(fill_normals)
def _fill_normals(z, n, step, purpose, shi, k0, k1, ws):
    if isinstance(z, types.Array) and z.dtype == types.float32:
        def impl32(z, n, step, purpose, shi, k0, k1, ws):
            fill_normals_f32(z, n, step, purpose, shi, k0, k1, ws)
        return impl32

    def impl64(z, n, step, purpose, shi, k0, k1, ws):
        fill_normals_f64(z, n, step, purpose, shi, k0, k1, ws)
    return impl64


def chunk_normals(z, lo, n, step, purpose, shi, k0, k1, ws):  # pragma: no cover - compiled only
    """z[0:n] <- the normals of directions lo .. lo + n - 1 of (step, purpose), as the windowed
    kernels draw them, generator call by generator call: 4 CHUNK normals a call into float32
    z (normals_chunk_f32), 2 CHUNK into float64 z (normals_chunk_f64). As for fill_normals,
    the generator is chosen when the caller is compiled, from the type of z, so a kernel
    compiles only the one of its own dtype."""
    raise NotImplementedError("chunk_normals runs inside compiled kernels only")


@overload(chunk_normals)
def _chunk_normals(z, lo, n, step, purpose, shi, k0, k1, ws):
    f32 = isinstance(z, types.Array) and z.dtype == types.float32
    gen = normals_chunk_f32 if f32 else normals_chunk_f64
    k = 4 if f32 else 2  # normals per Philox call

    def impl(z, lo, n, step, purpose, shi, k0, k1, ws):
        for sub in range(0, n, k * CHUNK):
            nn = min(k * CHUNK, n - sub)
            gen((lo + sub) // k, (nn + k - 1) // k, step, purpose, shi, k0, k1, ws, z[sub:])
    return impl


@njit(cache=True, error_model="numpy")
def _start(dirs, rec, work, run_start, run_band, key):
    """A trajectory's initial state theta(0) = mu0 + sd0 z (its own PURPOSE_INITIAL normals),
    m = 0, ema = theta, and step 0's loss, hit and record. Returns (loss, hit, next record)."""
    shi, k0, k1 = key
    h = dirs.h
    theta = work.theta
    d = h.shape[0]
    fill_normals(work.z, d, np.uint32(0), np.uint32(PURPOSE_INITIAL), shi, k0, k1, work.ws)
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


@njit(cache=True, error_model="numpy", inline="always")
def _trajectory(rule, dirs, sched, law, rec, work, ns, run_start, run_band, key, stop):
    """Run one trajectory (linear rules, any noise law) window by window; write its readout
    loss, theta loss and per-band sums of the readout's square at the recorded steps into
    ``work``. Returns (hitting time or -1, step of divergence or -1, number of records written:
    R unless ``stop`` was raised, checked once per window). A window in which the loss
    overflows is cut at its first diverged step."""
    record = rec.steps
    R = record.shape[0]
    T = record[R - 1]
    lw = work.lw
    loss, hit, r = _start(dirs, rec, work, run_start, run_band, key)
    for j in range(work.perm.shape[0]):
        work.perm[j] = j
    div = -1
    t0 = np.int64(0)  # np.int64: a literal 0 would compile the callees once more for it
    piece = np.int64(0)  # the run of constant hyperparameters of step t0
    while t0 < T:
        if stop_requested(stop) != 0:
            break
        w = min(WINDOW, T - t0)
        piece = piece_at(sched.start, t0, piece)
        _window(rule, dirs, sched, law, rec, work, ns, run_start, run_band, key, t0, w, r,
                piece)
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
def _noise(law, batch, work, d, step, key):
    """work.z[0:d] <- the step's unit-variance gradient noise (of z / sqrt(B) per direction).
    Gaussian: the fast path's normals, bit for bit. Student-t: see _rng.fill_student_t_ws.
    Finite data: a batch of B of the n standardised per-example rows, drawn without
    replacement; z = sqrt(B) f mean_batch(row), f = sqrt((n - 1) / (n - B)) the inverse finite
    population correction, so that z has unit variance like the Gaussian case."""
    shi, k0, k1 = key
    z = work.z
    if law.code == NOISE_GAUSSIAN:
        fill_normals(z, d, step, np.uint32(PURPOSE_GRADIENT), shi, k0, k1, work.ws)
    elif law.code == NOISE_STUDENT_T:
        fill_student_t_ws(z, d, step, shi, k0, k1, law.nu, work.ws)
    else:
        sample_without_replacement(work.perm, batch, step, shi, k0, k1)
        _finite_chunk(law.data, work.perm, batch, np.int64(0), d, z)


@njit(cache=True, error_model="numpy")
def clip_to_norm(g, clip):
    """g <- g min(1, clip / |g|) (the norm in float64, 16 fixed partial sums); clip <= 0: off."""
    if clip > 0.0:
        d = g.shape[0]
        nrm = math.sqrt(_sumsq16(g, np.int64(0), d))
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


@njit(cache=True, error_model="numpy", inline="always")
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
    piece = np.int64(0)  # the run of constant hyperparameters of step t
    for t in range(T):
        if stop_requested(stop) != 0:
            break
        piece = piece_at(sched.start, t, piece)
        _noise(law, sched.batch[piece], work, d, np.uint32(t), key)
        isb = sched.inv_sqrt_batch[piece]
        for i in range(d):  # the (fixed-preconditioned) stochastic gradient a theta + b z / sqrt(B)
            g[i] = a[i] * theta[i] + b[i] * isb * z[i]
        clip_to_norm(g, rule.clip)
        apply_rule(rule.kind, sched.learning_rate[piece], rule.beta, rule.beta2, rule.eps, t,
                   theta, work.m, work.v, g)
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


@njit(cache=True, error_model="numpy", nogil=True, inline="always")
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
    ns = _new_noise_scratch(law, sched.batch, dirs.single)
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
            hit, div, done = _trajectory(rule, dirs, sched, law, rec, work, ns, run_start,
                                         run_band, key, stop)
        end_trajectory(out, bb, slot, traj, hit, div, done, keep_paths, work, rec)


@njit(cache=True, error_model="numpy", nogil=True)
def run_blocks(rule, dirs, sched, law, rec, stream, first, start, nb, step, block_size, n_runs,
               keep_paths, run_start, run_band, out, stop):
    """run_block for blocks first + bb, bb = start, start + step, ... < nb (row bb of ``out``
    each): one call from Python for a thread's share of a range. Calling a kernel costs tens
    of microseconds of argument unboxing, about as much as a block of small trajectories."""
    for bb in range(start, nb, step):
        run_block(rule, dirs, sched, law, rec, stream, first + bb, bb, block_size, n_runs,
                  keep_paths, run_start, run_band, out, stop)
