"""The statistics of the Monte Carlo kernels (private: arrays in, arrays out, no checks).

Losses are sums of h_i x_i^2 over every direction, taken in one fixed order whatever the
vector width (sixteen partial sums, a fixed tree: :func:`_add_hsq16`, :func:`_total16`,
:func:`_sumsq16`), chunk by chunk of one length in every kernel (:func:`loss_chunk`), so the
fast, general, skip-ahead and generated kernels give the same bits. Per-band sums go run by run
of consecutive directions (:func:`band_runs`, :func:`_band_sums`). A finished trajectory's
records enter its block's row of statistics (:func:`end_trajectory`, :func:`_accumulate`):
Welford count, mean and M2, the mean theta loss, band sums, a histogram of log10(loss) and
divergences, which the driver merges in block order.
"""

import math

import numpy as np
from numba import njit

from nqm_mc.montecarlo._interrupt import stop_requested
from nqm_mc.montecarlo._rng import CHUNK
from nqm_mc.spec.codes import DIVERGED, HIT_DIVERGED, HIT_INTERRUPTED


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


@njit(cache=True, error_model="numpy")
def merge_groups(count, mean, m2, theta, band, g_count, g_mean, g_m2, g_theta, g_band):
    """Merge the statistics of groups 0 .. nb - 1 (rows of the g_ arrays), in that order, into
    the running (count, mean, m2, theta, band) per record, in place.

    Chan et al.'s pairwise update, with the operations in the order of the NumPy expressions
    it replaces (so the same bits): for a group of c > 0 finite losses,
    mean += delta c / n and m2 = (m2 + s) + delta^2 n0 c / n, n = n0 + c; the mean theta loss
    becomes (theta n0 + theta_g c) / n whenever n > 0; band sums add.
    """
    nb, R = g_count.shape
    n_bands = band.shape[1]
    for b in range(nb):
        for r in range(R):
            n0 = count[r]
            c = g_count[b, r]
            tot = n0 + c
            if c > 0:
                delta = g_mean[b, r] - mean[r]
                frac = c / tot if tot > 0 else 0.0
                mean[r] = mean[r] + delta * frac
                m2[r] = m2[r] + g_m2[b, r] + delta * delta * n0 * frac
            count[r] = tot
            if tot > 0:
                theta[r] = (theta[r] * n0 + g_theta[b, r] * c) / tot
            for q in range(n_bands):
                band[r, q] += g_band[b, r, q]
