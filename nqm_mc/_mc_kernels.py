"""Numba kernels of the Monte Carlo engine (private: arrays in, arrays out, no checks).

Each kernel applies the optimizer's update rule as written (NQM.md sec. 2) to every direction
of one trajectory at a time, drawing its gradient noise from the counter-based generator
keyed by (seed, trajectory). Trajectories are grouped in blocks; a block writes its own
statistics (count, mean, M2 of the loss per recorded step, per-band sums of the readout's
square, a loss histogram, divergences), which the caller merges in block order. Nothing here
depends on which thread runs a block.
"""

import math

import numpy as np
from numba import njit, prange

from nqm_mc._rng import (
    CHUNK,
    PURPOSE_GRADIENT,
    PURPOSE_INITIAL,
    fill_normals_f32,
    fill_normals_f64,
    normals_chunk_f32,
    normals_chunk_f64,
)

KIND_SGD, KIND_HEAVY_BALL, KIND_NESTEROV = 0, 1, 2
DIVERGED = 1e300


@njit(cache=True, error_model="numpy")
def half_quadratic(h, x):
    """0.5 sum_i h_i x_i^2 in float64 with four interleaved partial sums: a fixed order (the
    same bits on every machine) that the compiler can still keep in SIMD registers."""
    d = h.shape[0]
    d4 = d - d % 4
    a0 = 0.0
    a1 = 0.0
    a2 = 0.0
    a3 = 0.0
    for i in range(0, d4, 4):
        x0 = float(x[i])
        x1 = float(x[i + 1])
        x2 = float(x[i + 2])
        x3 = float(x[i + 3])
        a0 += h[i] * x0 * x0
        a1 += h[i + 1] * x1 * x1
        a2 += h[i + 2] * x2 * x2
        a3 += h[i + 3] * x3 * x3
    for i in range(d4, d):
        xi = float(x[i])
        a0 += h[i] * xi * xi
    return 0.5 * ((a0 + a1) + (a2 + a3))


@njit(cache=True, error_model="numpy", inline="always")
def _update(kind, has_ema, a, b, h, lr, isb, beta, gamma, theta, m, ema, z, q, qe, lo, n):
    """Update directions lo .. lo + n - 1 with the noise z[0:n] (one SIMD loop per rule). The
    stochastic gradient is h^-p (h theta + sqrt(c / B) z) = a theta + b z / sqrt(B) with
    a = h^(1-p), b = h^-p sqrt(c). q, qe <- h theta^2 and h ema^2 in float64."""
    th = theta[lo:]
    mm = m[lo:]
    em = ema[lo:]
    aa = a[lo:]
    bb = b[lo:]
    hh = h[lo:]
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
    for i in range(n):
        x = float(th[i])
        q[i] = hh[i] * x * x
    if has_ema:
        for i in range(n):
            e = gamma * em[i] + (1.0 - gamma) * th[i]
            em[i] = e
            x = float(e)
            qe[i] = hh[i] * x * x


@njit(cache=True, error_model="numpy", inline="always")
def _add4(q, n, acc):
    """acc[k] += q[i] for i = k mod 4 (i < n - n mod 4), the rest into acc[0]."""
    n4 = n - n % 4
    a0 = acc[0]
    a1 = acc[1]
    a2 = acc[2]
    a3 = acc[3]
    for i in range(0, n4, 4):
        a0 += q[i]
        a1 += q[i + 1]
        a2 += q[i + 2]
        a3 += q[i + 3]
    for i in range(n4, n):
        a0 += q[i]
    acc[0] = a0
    acc[1] = a1
    acc[2] = a2
    acc[3] = a3


@njit(cache=True, error_model="numpy")
def _step(kind, has_ema, a, b, h, lr, isb, beta, gamma, theta, m, ema, z, q, qe, acc, ws,
          step, shi, k0, k1, use_f32):
    """One step of one trajectory, chunk by chunk: draw a chunk of normals (L1-resident),
    update that chunk's directions, accumulate the losses. Returns (theta loss, readout loss);
    the summation order is half_quadratic's (partial sums by index mod 4)."""
    d = theta.shape[0]
    per = 4 * CHUNK if use_f32 else 2 * CHUNK
    for k in range(8):
        acc[k] = 0.0
    for lo in range(0, d, per):
        n = min(per, d - lo)
        if use_f32:
            normals_chunk_f32(lo // 4, (n + 3) // 4, np.uint32(step),
                              np.uint32(PURPOSE_GRADIENT), shi, k0, k1, ws, z)
        else:
            normals_chunk_f64(lo // 2, (n + 1) // 2, np.uint32(step),
                              np.uint32(PURPOSE_GRADIENT), shi, k0, k1, ws, z)
        _update(kind, has_ema, a, b, h, lr, isb, beta, gamma, theta, m, ema, z, q, qe, lo, n)
        _add4(q, n, acc[0:4])
        if has_ema:
            _add4(qe, n, acc[4:8])
    loss_th = 0.5 * ((acc[0] + acc[1]) + (acc[2] + acc[3]))
    if has_ema:
        return loss_th, 0.5 * ((acc[4] + acc[5]) + (acc[6] + acc[7]))
    return loss_th, loss_th


@njit(cache=True, error_model="numpy")
def _trajectory(kind, has_ema, h, a, b, mu0, sd0, lr_t, isb_t, beta, gamma, seed_lo,
                seed_hi, traj, record, target, band, theta, m, ema, z, q, qe, acc, ws, rec_loss,
                rec_theta, rec_band, use_f32):
    """Run one trajectory; write its readout loss, theta loss and per-band sums of the readout's
    square at the recorded steps. Returns (hitting time or -1, step of divergence or -1)."""
    d = h.shape[0]
    R = record.shape[0]
    T = record[R - 1]
    k0 = np.uint32(seed_lo)
    k1 = np.uint32(traj)
    shi = np.uint32(seed_hi)
    if use_f32:
        fill_normals_f32(z, d, np.uint32(0), np.uint32(PURPOSE_INITIAL), shi, k0, k1, ws)
    else:
        fill_normals_f64(z, d, np.uint32(0), np.uint32(PURPOSE_INITIAL), shi, k0, k1, ws)
    for i in range(d):
        theta[i] = mu0[i] + sd0[i] * z[i]
        m[i] = 0.0
        ema[i] = theta[i]
    loss = half_quadratic(h, theta)
    loss_th = loss
    hit = -1
    div = -1
    r = 0
    t = 0
    while True:
        if hit < 0 and loss < target:
            hit = t
        if t == record[r]:
            rec_loss[r] = loss
            rec_theta[r] = loss_th
            for i in range(d):
                v = float(ema[i]) if has_ema else float(theta[i])
                rec_band[r, band[i]] += v * v
            r += 1
            if r == R:
                break
        loss_th, loss = _step(kind, has_ema, a, b, h, lr_t[t], isb_t[t], beta, gamma, theta, m,
                              ema, z, q, qe, acc, ws, t, shi, k0, k1, use_f32)
        t += 1
        if not (loss < DIVERGED and loss_th < DIVERGED):
            div = t
            while r < R:
                rec_loss[r] = np.inf
                rec_theta[r] = np.inf
                r += 1
            break
        if t > T:
            break
    return hit, div


@njit(cache=True, error_model="numpy", parallel=True)
def run_blocks(kind, has_ema, h, coef_a, coef_b, mu0, sd0, lr_t, isb_t, beta, gamma, seed_lo,
               seed_hi, first_block, n_blocks, block_size, n_runs, record, target, band, n_bands,
               hist_lo, hist_inv_width, use_f32, dtype_probe, keep_paths,
               out_count, out_mean, out_m2, out_theta_mean, out_band, out_hist, out_div,
               out_hit, out_paths):
    """Simulate blocks first_block .. first_block + n_blocks - 1 (trajectory ids
    block * block_size + j, j < block_size, below n_runs).

    Per block b (row b - first_block of each output): Welford count/mean/M2 of the finite
    readout losses per recorded step, the mean theta loss, per-band sums of the readout's
    square, a histogram of log10(loss) and the number of diverged trajectories. out_hit
    receives each trajectory's hitting time (-1 never, -2 diverged first); out_paths the
    recorded losses of the first ``keep_paths`` trajectories overall.
    """
    d = h.shape[0]
    R = record.shape[0]
    nh = out_hist.shape[2]
    for bb in prange(n_blocks):
        b = first_block + bb
        theta = np.empty(d, dtype_probe.dtype)
        m = np.empty(d, dtype_probe.dtype)
        ema = np.empty(d, dtype_probe.dtype)
        z = np.empty(max(d, 4 * CHUNK) + 4, dtype_probe.dtype)
        qbuf = np.empty(4 * CHUNK)
        qebuf = np.empty(4 * CHUNK)
        acc = np.empty(8)
        ws = np.empty((4, CHUNK), np.uint32)
        rec_loss = np.empty(R)
        rec_theta = np.empty(R)
        rec_band = np.zeros((R, n_bands))
        for j in range(block_size):
            traj = b * block_size + j
            if traj >= n_runs:
                break
            for r in range(R):
                for q in range(n_bands):
                    rec_band[r, q] = 0.0
            hit, div = _trajectory(kind, has_ema, h, coef_a, coef_b, mu0, sd0, lr_t, isb_t, beta,
                                   gamma, seed_lo, seed_hi, traj, record, target, band, theta,
                                   m, ema, z, qbuf, qebuf, acc, ws, rec_loss, rec_theta, rec_band,
                                   use_f32)
            if div >= 0 and (hit < 0 or hit > div):
                hit = -2
            out_hit[traj - first_block * block_size] = hit
            if traj < keep_paths:
                for r in range(R):
                    out_paths[traj, r] = rec_loss[r]
            for r in range(R):
                x = rec_loss[r]
                if not (x < DIVERGED):
                    out_div[bb, r] += 1
                    continue
                c = out_count[bb, r] + 1.0
                delta = x - out_mean[bb, r]
                out_mean[bb, r] += delta / c
                out_m2[bb, r] += delta * (x - out_mean[bb, r])
                out_count[bb, r] = c
                out_theta_mean[bb, r] += (rec_theta[r] - out_theta_mean[bb, r]) / c
                for q in range(n_bands):
                    out_band[bb, r, q] += rec_band[r, q]
                if x > 0.0:
                    k = int(math.floor((math.log10(x) - hist_lo) * hist_inv_width))
                else:
                    k = 0
                if k < 0:
                    k = 0
                elif k >= nh:
                    k = nh - 1
                out_hist[bb, r, k] += 1
