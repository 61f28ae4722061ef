"""Compiled helpers of the kernels generated for user rules and noises (private).

The generated kernels (:mod:`nqm_mc.montecarlo.user_kernels`) hold only what depends on the
rule: the calls to its functions. Everything else is here, in
:mod:`nqm_mc.montecarlo._kernels` (the initial state) or in
:mod:`nqm_mc.montecarlo._statistics` (loss sums, band sums and statistics), which they call,
so that a rule written as the built-in optimizers are gives their bits.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload

from nqm_mc.montecarlo._kernels import chunk_normals, fill_normals
from nqm_mc.montecarlo._rng import PURPOSE_GRADIENT
from nqm_mc.montecarlo._statistics import _band_sums, _total16
from nqm_mc.spec.codes import DIVERGED


@njit(cache=True, error_model="numpy")
def fill_noise(z, n, t, key, ws):
    """z[0:n] <- the first n normals of step t's gradient purpose (those of the built-in
    Gaussian noise first: common random numbers), in z's dtype (the state's)."""
    shi, k0, k1 = key
    fill_normals(z, n, np.uint32(t), np.uint32(PURPOSE_GRADIENT), shi, k0, k1, ws)


@njit(cache=True, error_model="numpy")
def chunk_noise(lo, n, t, key, ws, z):
    """z[0:n] <- the normals of directions lo .. lo + n - 1 at step t, as the built-in windowed
    kernel draws them (generator call by generator call), in z's dtype (the state's)."""
    shi, k0, k1 = key
    chunk_normals(z, lo, n, np.uint32(t), np.uint32(PURPOSE_GRADIENT), shi, k0, k1, ws)


@njit(cache=True, error_model="numpy")
def gaussian_gradient(g, theta, a, b, isb, z):
    """g <- a theta + b isb z (the built-in Gaussian noise's stochastic gradient)."""
    for i in range(theta.shape[0]):
        g[i] = a[i] * theta[i] + b[i] * isb * z[i]


@njit(cache=True, error_model="numpy")
def fill_stopped(work, r, loss, loss_th):
    """Mark records r .. R - 1 of a trajectory that left the finite range: NaN when its loss
    is NaN (a rule or noise produced NaN), inf when it overflowed. Returns R."""
    R = work.rec_loss.shape[0]
    bad = np.nan if (loss != loss or loss_th != loss_th) else np.inf
    while r < R:
        work.rec_loss[r] = bad
        work.rec_theta[r] = bad
        r += 1
    return r


@njit(cache=True, error_model="numpy")
def after_step(work, rec, t, loss, loss_th, hit, r, readout, run_start, run_band, per):
    """After step t (1 first): divergence, hitting time and the record of step t, with the
    readout's band sums. Returns (hit, step of divergence or -1, next record)."""
    R = rec.steps.shape[0]
    if not (loss < DIVERGED and loss_th < DIVERGED):
        return hit, t, fill_stopped(work, r, loss, loss_th)
    if hit < 0 and loss < rec.target:
        hit = t
    if r < R and rec.steps[r] == t:
        work.rec_loss[r] = loss
        work.rec_theta[r] = loss_th
        d = readout.shape[0]
        for lo in range(0, d, per):
            _band_sums(readout, lo, min(d, lo + per), run_start, run_band, work.rec_band[r])
        r += 1
    return hit, -1, r


@njit(cache=True, error_model="numpy")
def after_window(work, rec, t0, w, hit, r, readout_on):
    """The losses of a window's steps t0 + 1 .. t0 + w (summed by the window into work.lw):
    divergence, hitting time and records. Returns (hit, step of divergence or -1, next
    record); band sums were written by the window."""
    R = rec.steps.shape[0]
    lw = work.lw
    for s in range(w):
        t = t0 + s + 1
        loss_th = _total16(lw[s, 0:16])
        loss = _total16(lw[s, 16:32]) if readout_on else loss_th
        if not (loss < DIVERGED and loss_th < DIVERGED):
            return hit, t, fill_stopped(work, r, loss, loss_th)
        if hit < 0 and loss < rec.target:
            hit = t
        if r < R and rec.steps[r] == t:
            work.rec_loss[r] = loss
            work.rec_theta[r] = loss_th
            r += 1
    return hit, -1, r


@njit(cache=True, error_model="numpy")
def is_nan_stop(work, div):
    """Whether a trajectory that stopped at step div did so on NaN (not on overflow)."""
    R = work.rec_loss.shape[0]
    return div >= 0 and work.rec_loss[R - 1] != work.rec_loss[R - 1]


def first(x):  # pragma: no cover - replaced by the overload in compiled code
    """The new parameter out of an update's return value: x itself, or x[0] of a tuple."""
    return x[0] if isinstance(x, tuple) else x


@overload(first)
def _first(x):
    if isinstance(x, types.BaseTuple):
        return lambda x: x[0]
    return lambda x: x
