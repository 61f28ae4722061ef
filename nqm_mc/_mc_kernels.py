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

from nqm_mc._rng import PURPOSE_GRADIENT, PURPOSE_INITIAL, fill_normals_f32, fill_normals_f64

KIND_SGD, KIND_HEAVY_BALL, KIND_NESTEROV = 0, 1, 2
DIVERGED = 1e300


@njit(cache=True, error_model="numpy")
def _trajectory(kind, has_ema, h, hp, sqc, mu0, sd0, lr_t, isb_t, beta, gamma, seed_lo,
                seed_hi, traj, record, target, band, theta, m, ema, z, rec_loss, rec_theta,
                rec_band, use_f32):
    """Run one trajectory; write its readout loss, theta loss and per-band sums of the readout's
    square at the recorded steps. Returns (hitting time or -1, step of divergence or -1)."""
    d = h.shape[0]
    R = record.shape[0]
    T = record[R - 1]
    k0 = np.uint32(seed_lo)
    k1 = np.uint32(traj)
    shi = np.uint32(seed_hi)
    if use_f32:
        fill_normals_f32(z, d, np.uint32(0), np.uint32(PURPOSE_INITIAL), shi, k0, k1)
    else:
        fill_normals_f64(z, d, np.uint32(0), np.uint32(PURPOSE_INITIAL), shi, k0, k1)
    loss = 0.0
    for i in range(d):
        theta[i] = mu0[i] + sd0[i] * z[i]
        m[i] = 0.0
        ema[i] = theta[i]
        loss += 0.5 * h[i] * float(theta[i]) * float(theta[i])
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
        if use_f32:
            fill_normals_f32(z, d, np.uint32(t), np.uint32(PURPOSE_GRADIENT), shi, k0, k1)
        else:
            fill_normals_f64(z, d, np.uint32(t), np.uint32(PURPOSE_GRADIENT), shi, k0, k1)
        lr = lr_t[t]
        isb = isb_t[t]
        loss = 0.0
        loss_th = 0.0
        for i in range(d):
            # preconditioned stochastic gradient: h^-p (h theta + sqrt(c / B) z)
            g = hp[i] * (h[i] * theta[i] + sqc[i] * isb * z[i])
            if kind == KIND_SGD:
                theta[i] = theta[i] - lr * g
            elif kind == KIND_HEAVY_BALL:
                m[i] = beta * m[i] + g
                theta[i] = theta[i] - lr * m[i]
            else:
                m[i] = beta * m[i] + g
                theta[i] = theta[i] - lr * (g + beta * m[i])
            th = float(theta[i])
            loss_th += 0.5 * h[i] * th * th
            if has_ema:
                ema[i] = gamma * ema[i] + (1.0 - gamma) * theta[i]
                e = float(ema[i])
                loss += 0.5 * h[i] * e * e
        if not has_ema:
            loss = loss_th
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
def run_blocks(kind, has_ema, h, hp, sqc, mu0, sd0, lr_t, isb_t, beta, gamma, seed_lo, seed_hi,
               first_block, n_blocks, block_size, n_runs, record, target, band, n_bands,
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
        z = np.empty(d + 4, dtype_probe.dtype)
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
            hit, div = _trajectory(kind, has_ema, h, hp, sqc, mu0, sd0, lr_t, isb_t, beta,
                                   gamma, seed_lo, seed_hi, traj, record, target, band, theta,
                                   m, ema, z, rec_loss, rec_theta, rec_band, use_f32)
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
