"""Numba kernels of the skip-ahead sampler (private: arrays in, arrays out, no checks).

For the linear optimizers with Gaussian noise each direction's state x = (theta[, m][, e])
(size s = 1, 2 or 3) evolves as x(t + 1) = A_t x(t) + b_t z_t with z_t ~ N(0, 1). Between two
recorded steps t_k < t_{k+1} it moves as one Gaussian step

    x(t_{k+1}) = Phi_k x(t_k) + F_k w,   w ~ N(0, I_s),   F_k F_k^T = Sigma_k,

where Phi_k = A_{t_{k+1}-1} ... A_{t_k} and Sigma_k = sum_j (A ... A_{j+1}) b_j b_j^T (...)^T.
Phi_k and Sigma_k depend on the direction's group and the interval only: they are built once,
in float64, by doubling over every run of constant hyperparameters (O(log length)), composed
in time order. Sigma_k is positive semi-definite but often singular (rank one after one step)
or nearly so (the EMA coordinate follows theta closely): it is factored by a Cholesky
decomposition with diagonal pivoting whose pivots are clipped at zero, so F_k F_k^T equals
Sigma_k to rounding whatever its rank.

The one-step maps (per direction, a = h^(1-p), b = h^-p sqrt(c), lr_t, 1/sqrt(B_t) = q_t):

    SGD        theta' = (1 - lr a) theta - lr b q z
    heavy ball m' = beta m + a theta + b q z,          theta' = theta - lr m'
    Nesterov   m' = beta m + a theta + b q z,          theta' = theta - lr (g + beta m')
    EMA        e' = gamma e + (1 - gamma) theta'

which are the step kernels' update rules (``_kernels._update``) written as matrices.
"""

import numpy as np
from numba import njit
from numba.extending import overload

from nqm_mc._chunks import run_ranges
from nqm_mc.montecarlo._interrupt import stop_requested
from nqm_mc.montecarlo._kernels import Work, _start, fill_normals
from nqm_mc.montecarlo._rng import CHUNK, PURPOSE_SKIP
from nqm_mc.montecarlo._statistics import (
    _band_sums,
    begin_trajectory,
    end_trajectory,
    half_quadratic,
    loss_chunk,
)
from nqm_mc.spec.codes import (
    DIVERGED,
    KIND_HEAVY_BALL,
    KIND_SGD,
)


@njit(cache=True, error_model="numpy")
def _one_step(kind, has_ema, a, b, lr, q, beta, gamma, A, bv):
    """A (s x s) and bv (s) of one step for a direction with coefficients (a, b)."""
    s = A.shape[0]
    for i in range(s):
        bv[i] = 0.0
        for j in range(s):
            A[i, j] = 0.0
    if kind == KIND_SGD:
        tt, tm, tb = 1.0 - lr * a, 0.0, -lr * b * q
    elif kind == KIND_HEAVY_BALL:
        tt, tm, tb = 1.0 - lr * a, -lr * beta, -lr * b * q
    else:  # Nesterov
        tt, tm, tb = 1.0 - lr * (1.0 + beta) * a, -lr * beta * beta, -lr * (1.0 + beta) * b * q
    A[0, 0] = tt
    bv[0] = tb
    if kind != KIND_SGD:
        A[0, 1] = tm
        A[1, 0] = a
        A[1, 1] = beta
        bv[1] = b * q
    if has_ema:
        e = s - 1
        for j in range(s):
            A[e, j] = (1.0 - gamma) * A[0, j]
        A[e, e] = gamma
        bv[e] = (1.0 - gamma) * tb


@njit(cache=True, error_model="numpy")
def _compose(P2, S2, P, S, T1, T2):
    """(P, S) <- (P2, S2) after (P, S): P = P2 P, S = P2 S P2^T + S2 (T1, T2 scratch)."""
    s = P.shape[0]
    for i in range(s):
        for j in range(s):
            acc = 0.0
            for k in range(s):
                acc += P2[i, k] * P[k, j]
            T1[i, j] = acc
            acc = 0.0
            for k in range(s):
                acc += P2[i, k] * S[k, j]
            T2[i, j] = acc
    for i in range(s):
        for j in range(s):
            P[i, j] = T1[i, j]
    for i in range(s):
        for j in range(s):
            acc = 0.0
            for k in range(s):
                acc += T2[i, k] * P2[j, k]
            T1[i, j] = acc + S2[i, j]
    for i in range(s):
        for j in range(s):
            S[i, j] = 0.5 * (T1[i, j] + T1[j, i])  # exactly symmetric


@njit(cache=True, error_model="numpy")
def _run_power(A, bv, n, P, S, Pw, Sw, C1, C2, T1, T2):
    """(P, S) <- the transition of n steps of the constant map (A, bv), by doubling: O(log n)
    compositions. Every power of one map commutes with the others, so the order in which
    the binary digits are applied does not matter."""
    s = A.shape[0]
    for i in range(s):
        for j in range(s):
            P[i, j] = 1.0 if i == j else 0.0
            S[i, j] = 0.0
            Pw[i, j] = A[i, j]
            Sw[i, j] = bv[i] * bv[j]
    while n > 0:
        if n & 1:
            _compose(Pw, Sw, P, S, T1, T2)
        n >>= 1
        if n > 0:  # (Pw, Sw) <- (Pw, Sw) twice
            for i in range(s):
                for j in range(s):
                    C1[i, j] = Pw[i, j]
                    C2[i, j] = Sw[i, j]
            _compose(C1, C2, Pw, Sw, T1, T2)


@njit(cache=True, error_model="numpy")
def factor_psd(S, F, W, done):
    """F (s x s) with F F^T = S for a symmetric positive semi-definite S: Cholesky with
    diagonal pivoting (largest remaining diagonal first), pivots clipped at zero; columns past
    the numerical rank are zero. W (s x s) and done (s, bool) are scratch. A covariance that
    overflowed (not finite) gives F = inf, so that the sampled state, hence the loss, diverges
    as the step kernel's does, and the return value -1. Returns the rank
    used."""
    s = S.shape[0]
    for i in range(s):
        done[i] = False
        for j in range(s):
            W[i, j] = S[i, j]
            F[i, j] = 0.0
    scale = 0.0
    for i in range(s):
        scale = max(scale, abs(S[i, i]))
    if not np.isfinite(scale):  # the covariance overflowed: the configuration diverges
        for i in range(s):
            for j in range(s):
                F[i, j] = np.inf
        return -1
    tol = scale * 1e-15
    rank = 0
    for c in range(s):
        p = -1
        best = tol
        for i in range(s):
            if not done[i] and W[i, i] > best:
                best = W[i, i]
                p = i
        if p < 0:
            break
        done[p] = True
        piv = np.sqrt(W[p, p])
        for i in range(s):
            F[i, c] = 0.0 if (done[i] and i != p) else W[i, p] / piv
        F[p, c] = piv
        for i in range(s):
            if done[i]:
                continue
            for j in range(s):
                if done[j]:
                    continue
                W[i, j] -= F[i, c] * F[j, c]
        rank += 1
    return rank


GROUP_CHUNK = 256  # groups built together: their (s, s) matrices as vectors over the chunk


@njit(cache=True, error_model="numpy")
def _step_chunk(kind, has_ema, a, b, lr, q, beta, gamma, P, S, A, bv, T1, T2, n):
    """(P, S) <- one step of every group g < n of a chunk after (P, S), with its (a[g], b[g]):
    P = A P, S = A S A^T + bv bv^T, symmetrised. Arrays (s, s, chunk) and (s, chunk), the
    group last so that every loop runs over contiguous groups (SIMD). The arithmetic is
    _one_step's, then _run_power's of one step (A, bv bv^T), then _compose's, operation for
    operation in the same order, so the result has the same bits as that per-group path."""
    s = P.shape[0]
    for g in range(n):  # _one_step
        ag = a[g]
        bg = b[g]
        if kind == KIND_SGD:
            tt, tm, tb = 1.0 - lr * ag, 0.0, -lr * bg * q
        elif kind == KIND_HEAVY_BALL:
            tt, tm, tb = 1.0 - lr * ag, -lr * beta, -lr * bg * q
        else:
            tt, tm, tb = (1.0 - lr * (1.0 + beta) * ag, -lr * beta * beta,
                          -lr * (1.0 + beta) * bg * q)
        A[0, 0, g] = tt
        bv[0, g] = tb
        if kind != KIND_SGD:
            A[0, 1, g] = tm
            A[1, 0, g] = ag
            A[1, 1, g] = beta
            bv[1, g] = bg * q
        if has_ema:
            e = s - 1
            for j in range(s):
                A[e, j, g] = (1.0 - gamma) * A[0, j, g]
            A[e, e, g] = gamma
            bv[e, g] = (1.0 - gamma) * tb
    for i in range(s):  # T1 = A P, T2 = A S (sums from 0.0 in k order, as _compose)
        for j in range(s):
            t1 = T1[i, j]
            t2 = T2[i, j]
            for g in range(n):
                t1[g] = 0.0
                t2[g] = 0.0
            for k in range(s):
                aik = A[i, k]
                pkj = P[k, j]
                skj = S[k, j]
                for g in range(n):
                    t1[g] += aik[g] * pkj[g]
                    t2[g] += aik[g] * skj[g]
    for i in range(s):
        for j in range(s):
            pij = P[i, j]
            t1 = T1[i, j]
            for g in range(n):
                pij[g] = t1[g]
    for i in range(s):  # T1 = T2 A^T + bv bv^T (the one-step S of _run_power: symmetrised
        for j in range(s):  # bv_i bv_j, which is exact)
            t1 = T1[i, j]
            for g in range(n):
                t1[g] = 0.0
            for k in range(s):
                t2 = T2[i, k]
                ajk = A[j, k]
                for g in range(n):
                    t1[g] += t2[g] * ajk[g]
            bi = bv[i]
            bj = bv[j]
            for g in range(n):
                x = bi[g] * bj[g]
                t1[g] = t1[g] + 0.5 * (x + x)
    for i in range(s):
        for j in range(s):
            sij = S[i, j]
            t1 = T1[i, j]
            t1t = T1[j, i]
            for g in range(n):
                sij[g] = 0.5 * (t1[g] + t1t[g])


# a covariance entry at or above 2^1023 overflows when the general composition symmetrises it
# (0.5 (x + x)): the SGD kernel below makes it inf at the same point, so that both agree
_HALF_OVERFLOW = 2.0 ** 1023


@njit(cache=True, error_model="numpy")
def _compose1(p2, s2, p, s):
    """_compose for s = 1, operation for operation: (p2, s2) after (p, s)."""
    t2 = 0.0 + p2 * s
    t1 = (0.0 + t2 * p2) + s2
    return 0.0 + p2 * p, 0.5 * (t1 + t1)


@njit(cache=True, error_model="numpy")
def _power1(tt, tb, n):
    """_run_power for s = 1: (Phi, Sigma) of n steps of theta' = tt theta + tb z, by doubling."""
    p = 1.0
    s = 0.0
    pw = tt
    sw = tb * tb
    while n > 0:
        if n & 1:
            p, s = _compose1(pw, sw, p, s)
        n >>= 1
        if n > 0:
            pw, sw = _compose1(pw, sw, pw, sw)
    return p, s


@njit(cache=True, error_model="numpy")
def _factor1(s):
    """factor_psd for s = 1: sqrt(s) above its tolerance, 0 below, inf when not finite."""
    scale = abs(s)
    if not np.isfinite(scale):
        return np.inf
    return np.sqrt(s) if s > scale * 1e-15 else 0.0


@njit(cache=True, error_model="numpy", nogil=True)
def _sgd_chunk(a, b, lr_r, isb_r, seg_start, grid, phi_out, fac_out, g0, n):
    """build_transitions_sgd for groups g0 .. g0 + n - 1 (one chunk).

    A run of two updates or more inside an interval: O(log length) compositions per group
    (_power1, _compose1: _run_power's and _compose's arithmetic). A run of one update (a
    schedule that changes every update) is one fused SIMD loop over the chunk's groups:
    theta' = tt theta + tb z gives P <- tt P and S <- (tt S) tt + tb^2, the values the
    composition gives (its additions of 0.0 and its symmetrising 0.5 (x + x) change no
    finite value below 2^1023; at or above it S becomes inf, as there; a Phi of exactly 0 may
    differ in the sign of its zero, which no sampled loss sees).
    """
    p = np.empty(n)
    sv = np.empty(n)
    ac = a[g0:g0 + n]
    bc = b[g0:g0 + n]
    seg = 0
    for k in range(grid.shape[0] - 1):
        t = grid[k]
        t1 = grid[k + 1]
        for g in range(n):
            p[g] = 1.0
            sv[g] = 0.0
        while t < t1:
            while seg_start[seg + 1] <= t:
                seg += 1
            end = min(t1, seg_start[seg + 1])
            lr = lr_r[seg]
            q = isb_r[seg]
            nl = -lr
            if end - t == 1:
                for g in range(n):
                    tt = 1.0 - lr * ac[g]
                    tb = nl * bc[g] * q
                    p[g] = tt * p[g]
                    x = tb * tb
                    x = np.inf if x >= _HALF_OVERFLOW else x
                    s1 = (tt * sv[g]) * tt + x
                    sv[g] = np.inf if s1 >= _HALF_OVERFLOW else s1
            else:
                for g in range(n):
                    pn, sn = _power1(1.0 - lr * ac[g], nl * bc[g] * q, end - t)
                    p[g], sv[g] = _compose1(pn, sn, p[g], sv[g])
            t = end
        for g in range(n):
            phi_out[k, 0, 0, g0 + g] = p[g]
            fac_out[k, 0, 0, g0 + g] = _factor1(sv[g])


@njit(cache=True, error_model="numpy", nogil=True)
def _general_chunk(kind, has_ema, a_g, b_g, beta, gamma, lr_r, isb_r, seg_start, grid,
                   phi_out, fac_out, g0, n):
    """build_transitions for groups g0 .. g0 + n - 1 (one chunk)."""
    s = phi_out.shape[1]
    n_int = grid.shape[0] - 1
    CH = GROUP_CHUNK
    ac = a_g[g0:g0 + n]
    bc = b_g[g0:g0 + n]
    Pc = np.empty((s, s, CH))
    Sc = np.empty((s, s, CH))
    Ac = np.zeros((s, s, CH))
    bvc = np.zeros((s, CH))
    T1c = np.empty((s, s, CH))
    T2c = np.empty((s, s, CH))
    A = np.empty((s, s))
    bv = np.empty(s)
    P = np.empty((s, s))
    S = np.empty((s, s))
    Pn = np.empty((s, s))
    Sn = np.empty((s, s))
    Pw = np.empty((s, s))
    Sw = np.empty((s, s))
    C1 = np.empty((s, s))
    C2 = np.empty((s, s))
    T1 = np.empty((s, s))
    T2 = np.empty((s, s))
    F = np.empty((s, s))
    W = np.empty((s, s))
    done = np.empty(s, np.bool_)
    seg = 0
    for k in range(n_int):
        t = grid[k]
        t1 = grid[k + 1]
        for i in range(s):
            for j in range(s):
                for g in range(n):
                    Pc[i, j, g] = 1.0 if i == j else 0.0
                    Sc[i, j, g] = 0.0
        while t < t1:
            while seg_start[seg + 1] <= t:
                seg += 1
            end = min(t1, seg_start[seg + 1])
            if end - t == 1:
                _step_chunk(kind, has_ema, ac, bc, lr_r[seg], isb_r[seg], beta, gamma, Pc, Sc,
                            Ac, bvc, T1c, T2c, n)
            else:
                for g in range(n):
                    _one_step(kind, has_ema, ac[g], bc[g], lr_r[seg], isb_r[seg], beta, gamma,
                              A, bv)
                    _run_power(A, bv, end - t, Pn, Sn, Pw, Sw, C1, C2, T1, T2)
                    for i in range(s):
                        for j in range(s):
                            P[i, j] = Pc[i, j, g]
                            S[i, j] = Sc[i, j, g]
                    _compose(Pn, Sn, P, S, T1, T2)
                    for i in range(s):
                        for j in range(s):
                            Pc[i, j, g] = P[i, j]
                            Sc[i, j, g] = S[i, j]
            t = end
        for g in range(n):
            for i in range(s):
                for j in range(s):
                    S[i, j] = Sc[i, j, g]
            factor_psd(S, F, W, done)
            for i in range(s):
                for j in range(s):
                    phi_out[k, i, j, g0 + g] = Pc[i, j, g]
                    fac_out[k, i, j, g0 + g] = F[i, j]


def build_transitions(kind, has_ema, a_g, b_g, beta, gamma, lr_r, isb_r, seg_start, grid,
                      phi_out, fac_out):
    """Per group g and interval k (grid[k] .. grid[k + 1]): phi_out[k, :, :, g] = Phi_k and
    fac_out[k, :, :, g] = F_k with F_k F_k^T = Sigma_k, all in float64 (groups last, so that
    the sampler reads each matrix entry as a contiguous vector over directions).

    a_g, b_g: (G,) gradient coefficients h^(1-p) and h^-p sqrt(c) of each group. The
    hyperparameters come as runs of constant values: run r covers updates seg_start[r] ..
    seg_start[r + 1] - 1 with learning rate lr_r[r] and 1/sqrt(B) isb_r[r] (seg_start starts
    with 0 and ends with T; neighbouring runs differ). grid: increasing steps starting at 0.
    Each run of two steps or more inside an interval costs O(log length) compositions per
    group; a run of one step (a schedule that changes every step, such as a cosine decay or a
    warmup) is applied to a chunk of GROUP_CHUNK groups at once, as vectors over the groups
    (_step_chunk: the same operations, so the same bits as one composition per group and
    step, several times faster). Chunks of GROUP_CHUNK groups run on threads
    (_general_chunk, which releases the GIL; :func:`nqm_mc._chunks.run_chunks`). Plain SGD has
    its own scalar chunk, build_transitions_sgd (the same bits, a fraction of the compile
    time).
    """
    by_chunks(_general_chunk, (kind, has_ema, a_g, b_g, beta, gamma, lr_r, isb_r, seg_start,
                               grid, phi_out, fac_out), a_g.shape[0])


def build_transitions_sgd(a_g, b_g, lr_r, isb_r, seg_start, grid, phi_out, fac_out):
    """build_transitions for plain SGD (state size 1, no EMA): scalar arithmetic, the same
    bits as the general chunk. Chunks of GROUP_CHUNK groups run on threads (_sgd_chunk)."""
    by_chunks(_sgd_chunk, (a_g, b_g, lr_r, isb_r, seg_start, grid, phi_out, fac_out),
              a_g.shape[0])


def by_chunks(chunk, args, G):
    """chunk(*args, g0, n) for the chunks g0 = 0, GROUP_CHUNK, ... of G groups, on threads."""
    run_ranges(lambda lo, hi: chunk(*args, lo, hi - lo), G, size=GROUP_CHUNK)


def move_state(tag, P, L, group, identity, has_m, theta, m, ema, z, d):  # pragma: no cover
    """One recorded interval for every direction: x <- P x + L w, w = the normals z[j d + i]
    (component j of direction i). P, L: (s, s, G); the state is (theta), (theta, m),
    (theta, e) or (theta, m, e). ``tag`` is a tuple of s zeros: its type carries the state
    size, so that a kernel compiles the move of its own state size only (_move_1, _2, _3)."""
    s = len(tag)
    if s == 1:
        _move_1(P, L, group, identity, theta, z, d)
    elif s == 2:
        _move_2(P, L, group, identity, m if has_m else ema, theta, z, d)
    else:
        _move_3(P, L, group, identity, theta, m, ema, z, d)


@overload(move_state)
def _move_state(tag, P, L, group, identity, has_m, theta, m, ema, z, d):
    s = tag.count
    if s == 1:
        def move1(tag, P, L, group, identity, has_m, theta, m, ema, z, d):
            _move_1(P, L, group, identity, theta, z, d)
        return move1
    if s == 2:
        def move2(tag, P, L, group, identity, has_m, theta, m, ema, z, d):
            _move_2(P, L, group, identity, m if has_m else ema, theta, z, d)
        return move2

    def move3(tag, P, L, group, identity, has_m, theta, m, ema, z, d):
        _move_3(P, L, group, identity, theta, m, ema, z, d)
    return move3


@njit(cache=True, error_model="numpy")
def _move_1(P, L, group, identity, theta, z, d):
    """move_state for the state (theta)."""
    if identity:
        _move1(P[0, 0], L[0, 0], theta, z[:d])
        return
    for i in range(d):  # groups with multiplicities: gather each direction's group
        g = group[i]
        theta[i] = P[0, 0, g] * theta[i] + L[0, 0, g] * z[i]


@njit(cache=True, error_model="numpy")
def _move_2(P, L, group, identity, second, theta, z, d):
    """move_state for the states (theta, m) and (theta, e): ``second`` is m or e."""
    if identity:
        _move2(P[0, 0], P[0, 1], P[1, 0], P[1, 1], L[0, 0], L[0, 1], L[1, 0], L[1, 1],
               theta, second, z[:d], z[d:2 * d])
        return
    for i in range(d):
        g = group[i]
        x0 = theta[i]
        x1 = second[i]
        n0 = z[i]
        n1 = z[d + i]
        theta[i] = P[0, 0, g] * x0 + P[0, 1, g] * x1 + L[0, 0, g] * n0 + L[0, 1, g] * n1
        second[i] = P[1, 0, g] * x0 + P[1, 1, g] * x1 + L[1, 0, g] * n0 + L[1, 1, g] * n1


@njit(cache=True, error_model="numpy")
def _move_3(P, L, group, identity, theta, m, ema, z, d):
    """move_state for the state (theta, m, e)."""
    if identity:
        _move3(P, L, theta, m, ema, z[:d], z[d:2 * d], z[2 * d:3 * d])
        return
    for i in range(d):
        g = group[i]
        x0 = theta[i]
        x1 = m[i]
        x2 = ema[i]
        n0 = z[i]
        n1 = z[d + i]
        n2 = z[2 * d + i]
        theta[i] = (P[0, 0, g] * x0 + P[0, 1, g] * x1 + P[0, 2, g] * x2
                    + L[0, 0, g] * n0 + L[0, 1, g] * n1 + L[0, 2, g] * n2)
        m[i] = (P[1, 0, g] * x0 + P[1, 1, g] * x1 + P[1, 2, g] * x2
                + L[1, 0, g] * n0 + L[1, 1, g] * n1 + L[1, 2, g] * n2)
        ema[i] = (P[2, 0, g] * x0 + P[2, 1, g] * x1 + P[2, 2, g] * x2
                  + L[2, 0, g] * n0 + L[2, 1, g] * n1 + L[2, 2, g] * n2)


@njit(cache=True, error_model="numpy")
def _move1(p, l, x, n):
    for i in range(x.shape[0]):
        x[i] = p[i] * x[i] + l[i] * n[i]


@njit(cache=True, error_model="numpy")
def _move2(p00, p01, p10, p11, l00, l01, l10, l11, x, y, n0, n1):
    for i in range(x.shape[0]):
        a = x[i]
        b = y[i]
        x[i] = p00[i] * a + p01[i] * b + l00[i] * n0[i] + l01[i] * n1[i]
        y[i] = p10[i] * a + p11[i] * b + l10[i] * n0[i] + l11[i] * n1[i]


@njit(cache=True, error_model="numpy")
def _move3(P, L, x, y, w, n0, n1, n2):
    for i in range(x.shape[0]):
        a = x[i]
        b = y[i]
        c = w[i]
        x[i] = (P[0, 0, i] * a + P[0, 1, i] * b + P[0, 2, i] * c
                + L[0, 0, i] * n0[i] + L[0, 1, i] * n1[i] + L[0, 2, i] * n2[i])
        y[i] = (P[1, 0, i] * a + P[1, 1, i] * b + P[1, 2, i] * c
                + L[1, 0, i] * n0[i] + L[1, 1, i] * n1[i] + L[1, 2, i] * n2[i])
        w[i] = (P[2, 0, i] * a + P[2, 1, i] * b + P[2, 2, i] * c
                + L[2, 0, i] * n0[i] + L[2, 1, i] * n1[i] + L[2, 2, i] * n2[i])


@njit(cache=True, error_model="numpy", nogil=True)
def run_block_skip(rule, dirs, rec, stream, group, grid, phi, fac, state, b, bb, block_size,
                   n_runs, keep_paths, run_start, run_band, out, stop):
    """Simulate block b of trajectories at the grid's steps only (see the module docstring).

    rule, dirs, rec, stream: fields of a lowering.KernelInput; group: (d,) group of each
    direction; grid: steps 0 = grid[0] < ... (the recorded steps, with 0 prepended when it
    is not recorded); phi, fac: (len(grid) - 1, s, s, G) transitions in the state's dtype;
    state: a tuple of s zeros (the state size as a type: see move_state).
    Outputs as in _kernels.run_block; hitting times are the first recorded step below the
    target. The initial state is the step kernel's (same normals); the moves between records
    use their own normals (purpose PURPOSE_SKIP, counter step = interval index).
    """
    d = dirs.h.shape[0]
    s = phi.shape[1]
    identity = phi.shape[3] == d  # one direction per group: no gather
    R = rec.steps.shape[0]
    offset = grid.shape[0] - R  # 1 when step 0 is not recorded
    ft = dirs.coef_a.dtype
    has_m = rule.kind != KIND_SGD
    per = loss_chunk(dirs.single)
    nz = s * d + 8
    work = Work(np.empty(d, ft), np.empty(d, ft), np.empty(d, ft), np.empty(0, ft),
                np.empty(0, ft), np.empty(0, np.int64), np.empty(max(nz, 4 * CHUNK + 8), ft),
                np.empty(per), np.empty((1, 32)), np.empty((4, CHUNK), np.uint32), np.empty(R),
                np.empty(R), np.zeros((R, rec.n_bands)))
    theta, m, ema, z = work.theta, work.m, work.ema, work.z
    first = b - bb
    for j in range(block_size):
        traj = b * block_size + j
        if traj >= n_runs:
            break
        slot = traj - first * block_size
        if not begin_trajectory(out, slot, work, stop):
            continue
        key = (np.uint32(stream.seed_hi), np.uint32(stream.seed_lo), np.uint32(traj))
        loss, hit, r = _start(dirs, rec, work, run_start, run_band, key)
        div = -1
        for k in range(1, grid.shape[0]):
            if stop_requested(stop) != 0:
                break
            fill_normals(z, s * d, np.uint32(k - 1), np.uint32(PURPOSE_SKIP), key[0], key[1],
                         key[2], work.ws)
            move_state(state, phi[k - 1], fac[k - 1], group, identity, has_m, theta, m, ema,
                       z, d)
            loss_th = half_quadratic(dirs.h, theta, work.q)
            loss = half_quadratic(dirs.h, ema, work.q) if rule.has_ema else loss_th
            ri = k - offset
            if not (loss < DIVERGED and loss_th < DIVERGED):
                div = grid[k]
                while r < R:
                    work.rec_loss[r] = np.inf
                    work.rec_theta[r] = np.inf
                    r += 1
                break
            if ri >= 0:
                if hit < 0 and loss < rec.target:
                    hit = grid[k]
                work.rec_loss[ri] = loss
                work.rec_theta[ri] = loss_th
                readout = ema if rule.has_ema else theta
                for lo in range(0, d, per):
                    _band_sums(readout, lo, min(d, lo + per), run_start, run_band,
                               work.rec_band[ri])
                r = ri + 1
        end_trajectory(out, bb, slot, traj, hit, div, r, keep_paths, work, rec)


@njit(cache=True, error_model="numpy", nogil=True)
def run_blocks_skip(rule, dirs, rec, stream, group, grid, phi, fac, state, first, start, nb,
                    step, block_size, n_runs, keep_paths, run_start, run_band, out, stop):
    """run_block_skip for blocks first + bb, bb = start, start + step, ... < nb: one call from
    Python for a thread's share of a range (see _kernels.run_blocks)."""
    for bb in range(start, nb, step):
        run_block_skip(rule, dirs, rec, stream, group, grid, phi, fac, state, first + bb, bb,
                       block_size, n_runs, keep_paths, run_start, run_band, out, stop)
