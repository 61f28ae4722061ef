"""Moment recurrences of the exact engine (numba kernels): per-step curves, O(log t) evaluation,
steady state and stability.

Kernels carry the mean mu and the uncentred second moment S (k x k) of each group's state:
mu' = A mu,  S' = A S A^T + (c/B) b b^T.
"""

import numpy as np
from numba import njit

from nqm_mc._chunks import run_ranges
from nqm_mc.exact._linalg import (
    KIND_HEAVY_BALL,
    KIND_SGD,
    _matmul,
    _max_abs,
    _sandwich,
    fill_linear_form,
)
from nqm_mc.exact._powers import MAX_LOG2, doubling_sum, power_table

_OPTS = dict(cache=True, error_model="numpy")


@njit(**_OPTS)
def is_stable(k, table):
    """Spectral radius < 1, read off the powers: A^(2^j) -> 0 iff rho(A) < 1.

    k int <= 3; table (n, 3, 3) the powers A^(2^j) from power_table.
    """
    n = table.shape[0]
    for p in range(n):
        if k == 2:
            m = 0.0
            for v in (abs(table[p, 0, 0]), abs(table[p, 0, 1]), abs(table[p, 1, 0]),
                      abs(table[p, 1, 1])):
                if v > m or v != v:
                    m = v
        else:
            m = _max_abs(k, table[p])
        if m != m or m > 1e150:
            return False
        if m < 1e-200:
            return True
    return False  # rho = 1 to machine precision: marginal, the noise accumulates without bound


# --------------------------------------------------------------------------- per-step curves
JUMP_MIN = 64  # gaps this long or longer between records (in one run) are jumped, not stepped


@njit(**_OPTS)
def _jump(k, A, b, q, gap, built, table, N, mu, S, nm, tmp, T):
    """(mu, S) <- their values ``gap`` steps of the constant map (A, q b b^T) later, by the
    binary digits of gap: with P_j = A^(2^j) and N_j = sum_{i < 2^j} A^i (q b b^T) A^iT,
    mu <- P_j mu and S <- P_j S P_j^T + N_j for every set bit j (all powers of A commute).
    table[j] = P_j and N[j] = N_j for j < built on entry (built = 0: none yet); the levels
    the gap needs are added. Returns the number of levels built."""
    need = 1
    while (1 << need) <= gap:
        need += 1
    if built == 0:
        for i in range(3):
            for j in range(3):
                table[0, i, j] = A[i, j]
                N[0, i, j] = q * b[i] * b[j]
        built = 1
    while built < need:
        p = built
        _matmul(k, table[p - 1], table[p - 1], table[p])
        _sandwich(k, table[p - 1], N[p - 1], tmp, T)
        for i in range(k):
            for j in range(k):
                N[p, i, j] = N[p - 1, i, j] + T[i, j]
        built += 1
    p = 0
    while gap > 0:
        if gap & 1:
            _sandwich(k, table[p], S, tmp, T)
            for i in range(k):
                acc = 0.0
                for j in range(k):
                    acc += table[p, i, j] * mu[j]
                nm[i] = acc
            for i in range(k):
                mu[i] = nm[i]
                for j in range(k):
                    S[i, j] = T[i, j] + N[p, i, j]
        gap >>= 1
        p += 1
    return built


SUB = 160  # groups advanced together, one loop over them per step (a chunk of 10^4 groups)


@njit(**_OPTS)
def _fill_block(kind, has_ema, heff, hp, lr, beta, gamma, A, b, g0, ns):
    """fill_linear_form for groups g0 .. g0 + ns - 1 at once, the same operations in the same
    order (so the same bits), one loop over the groups per entry.

    heff, hp (G,) float64: h h^-p and h^-p of every group; A (3, 3, SUB) and b (3, SUB)
    receive A[i, j, gi] and b[i, gi] of group g0 + gi. Entries a kind never sets are left
    alone: they must be zero on entry (zero them once; the kind does not change). Returns k.
    """
    if kind == KIND_SGD:
        for gi in range(ns):
            x = lr * heff[g0 + gi]
            A[0, 0, gi] = 1.0 - x
            b[0, gi] = -lr * hp[g0 + gi]
        k = 1
    elif kind == KIND_HEAVY_BALL:
        for gi in range(ns):
            x = lr * heff[g0 + gi]
            A[0, 0, gi] = 1.0 - x
            A[0, 1, gi] = -lr * beta
            A[1, 0, gi] = heff[g0 + gi]
            A[1, 1, gi] = beta
            b[0, gi] = -lr * hp[g0 + gi]
            b[1, gi] = hp[g0 + gi]
        k = 2
    else:
        for gi in range(ns):
            x = lr * heff[g0 + gi]
            A[0, 0, gi] = 1.0 - (1.0 + beta) * x
            A[0, 1, gi] = -lr * beta * beta
            A[1, 0, gi] = heff[g0 + gi]
            A[1, 1, gi] = beta
            b[0, gi] = -lr * (1.0 + beta) * hp[g0 + gi]
            b[1, gi] = hp[g0 + gi]
        k = 2
    if has_ema:
        for j in range(k):
            for gi in range(ns):
                A[k, j, gi] = (1.0 - gamma) * A[0, j, gi]
        for gi in range(ns):
            A[k, k, gi] = gamma
            b[k, gi] = (1.0 - gamma) * b[0, gi]
        k += 1
    return k


@njit(**_OPTS)
def _step_block(k, A, b, q, S, mu, tmp, T, nm, ns):
    """One step of groups 0 .. ns - 1 of a block: mu <- A mu, S <- A S A^T + q b b^T.

    The operations and their order are those of the one-group step (``_sandwich`` and its
    k = 2 scalar form), so the bits are the same; each is one loop over the groups.
    A, S, tmp, T (3, 3, SUB); b, mu, nm (3, SUB); q (SUB,).
    """
    if k == 2:
        for gi in range(ns):
            m00, m01, m10, m11 = A[0, 0, gi], A[0, 1, gi], A[1, 0, gi], A[1, 1, gi]
            x00, x01, x10, x11 = S[0, 0, gi], S[0, 1, gi], S[1, 0, gi], S[1, 1, gi]
            t00 = m00 * x00 + m01 * x10
            t01 = m00 * x01 + m01 * x11
            t10 = m10 * x00 + m11 * x10
            t11 = m10 * x01 + m11 * x11
            qq, b0, b1 = q[gi], b[0, gi], b[1, gi]
            S[0, 0, gi] = (t00 * m00 + t01 * m01) + qq * b0 * b0
            S[0, 1, gi] = (t00 * m10 + t01 * m11) + qq * b0 * b1
            S[1, 0, gi] = (t10 * m00 + t11 * m01) + qq * b1 * b0
            S[1, 1, gi] = (t10 * m10 + t11 * m11) + qq * b1 * b1
            u0, u1 = mu[0, gi], mu[1, gi]
            mu[0, gi] = m00 * u0 + m01 * u1
            mu[1, gi] = m10 * u0 + m11 * u1
        return
    for i in range(k):
        for j in range(k):
            for gi in range(ns):
                tmp[i, j, gi] = 0.0
            for m in range(k):
                for gi in range(ns):
                    tmp[i, j, gi] += A[i, m, gi] * S[m, j, gi]
    for i in range(k):
        for j in range(k):
            for gi in range(ns):
                T[i, j, gi] = 0.0
            for m in range(k):
                for gi in range(ns):
                    T[i, j, gi] += tmp[i, m, gi] * A[j, m, gi]
        for gi in range(ns):
            nm[i, gi] = 0.0
        for j in range(k):
            for gi in range(ns):
                nm[i, gi] += A[i, j, gi] * mu[j, gi]
    for i in range(k):
        for gi in range(ns):
            mu[i, gi] = nm[i, gi]
        for j in range(k):
            for gi in range(ns):
                S[i, j, gi] = T[i, j, gi] + q[gi] * b[i, gi] * b[j, gi]


@njit(**_OPTS)
def _steps_sgd(heff, hp, c, lr_run, batch_run, starts, T_end, g0, ns, q, S0, mu0, t, stop, j):
    """Step plain SGD (k = 1) for groups g0 .. g0 + ns - 1 from step t (in run j) up to
    ``stop``, through every run met on the way unless a long one begins (JUMP_MIN steps or
    more before ``stop`` or its end: the caller jumps it). (A, b) are built in the step's
    loop: the operations of fill_linear_form and _sandwich, fused (the same bits).

    q (SUB,) the groups' c / B of run j (updated here); S0, mu0 (SUB,) the second moment and
    mean. Returns the step and the run reached.
    """
    K = starts.shape[0]
    while t < stop:
        if j + 1 < K and starts[j + 1] <= t:
            nxt_end = starts[j + 2] if j + 2 < K else T_end
            if min(stop, nxt_end) - t >= JUMP_MIN:
                break
            j += 1
            if batch_run[j] != batch_run[j - 1]:
                for gi in range(ns):
                    q[gi] = c[g0 + gi] / batch_run[j]
        lr = lr_run[j]
        for gi in range(ns):
            a = 1.0 - lr * heff[g0 + gi]
            bb = -lr * hp[g0 + gi]
            S0[gi] = (0.0 + (0.0 + a * S0[gi]) * a) + q[gi] * bb * bb
            mu0[gi] = 0.0 + a * mu0[gi]
        t += 1
    return t, j


@njit(**_OPTS)
def _jump_block(k, A, b, q, gap, built, table, N, mu, S, tmp, T, nm, ns):
    """_jump for groups 0 .. ns - 1 of a block at once: the same operations in the same
    order for each group (so the same bits), each one loop over the groups.

    A, S, tmp, T (3, 3, SUB); b, mu, nm (3, SUB); q (SUB,); table, N (MAX_LOG2 + 1, 3, 3,
    SUB): the blocks' P_j and N_j for j < built (built = 0: none yet). Returns the number of
    levels built.
    """
    need = 1
    while (1 << need) <= gap:
        need += 1
    if built == 0:
        for i in range(3):
            for j in range(3):
                for gi in range(ns):
                    table[0, i, j, gi] = A[i, j, gi]
                    N[0, i, j, gi] = q[gi] * b[i, gi] * b[j, gi]
        built = 1
    while built < need:
        p = built
        for i in range(k):  # _matmul
            for j in range(k):
                for gi in range(ns):
                    tmp[i, j, gi] = 0.0
                for m in range(k):
                    for gi in range(ns):
                        tmp[i, j, gi] += table[p - 1, i, m, gi] * table[p - 1, m, j, gi]
        _sandwich_block(k, table[p - 1], N[p - 1], T, nm, ns)
        for i in range(k):
            for j in range(k):
                for gi in range(ns):
                    table[p, i, j, gi] = tmp[i, j, gi]
                    N[p, i, j, gi] = N[p - 1, i, j, gi] + T[i, j, gi]
        built += 1
    p = 0
    while gap > 0:
        if gap & 1:
            _sandwich_block(k, table[p], S, T, nm, ns)
            for i in range(k):
                for gi in range(ns):
                    nm[i, gi] = 0.0
                for j in range(k):
                    for gi in range(ns):
                        nm[i, gi] += table[p, i, j, gi] * mu[j, gi]
            for i in range(k):
                for gi in range(ns):
                    mu[i, gi] = nm[i, gi]
                for j in range(k):
                    for gi in range(ns):
                        S[i, j, gi] = T[i, j, gi] + N[p, i, j, gi]
        gap >>= 1
        p += 1
    return built


@njit(**_OPTS)
def _sandwich_block(k, M, X, out, scratch, ns):
    """out = M X M^T for groups 0 .. ns - 1 (the operations of ``_sandwich``, so its bits).

    M, X, out (3, 3, SUB), out not aliasing M or X; scratch (3, SUB) or larger, overwritten.
    """
    if k == 2:
        for gi in range(ns):
            m00, m01, m10, m11 = M[0, 0, gi], M[0, 1, gi], M[1, 0, gi], M[1, 1, gi]
            x00, x01, x10, x11 = X[0, 0, gi], X[0, 1, gi], X[1, 0, gi], X[1, 1, gi]
            t00 = m00 * x00 + m01 * x10
            t01 = m00 * x01 + m01 * x11
            t10 = m10 * x00 + m11 * x10
            t11 = m10 * x01 + m11 * x11
            out[0, 0, gi] = t00 * m00 + t01 * m01
            out[0, 1, gi] = t00 * m10 + t01 * m11
            out[1, 0, gi] = t10 * m00 + t11 * m01
            out[1, 1, gi] = t10 * m10 + t11 * m11
        return
    for i in range(k):
        # row i of M X into scratch, then row i of (M X) M^T into out
        for j in range(k):
            for gi in range(ns):
                scratch[j, gi] = 0.0
            for m in range(k):
                for gi in range(ns):
                    scratch[j, gi] += M[i, m, gi] * X[m, j, gi]
        for j in range(k):
            for gi in range(ns):
                out[i, j, gi] = 0.0
            for m in range(k):
                for gi in range(ns):
                    out[i, j, gi] += scratch[m, gi] * M[j, m, gi]


@njit(cache=True, error_model="numpy", nogil=True)
def curve_chunk(form, record, n_chunks, ch, heff, out_mean, out_var, out_theta_mean,
                out_group_m1, out_group_m2):
    """Per-step recurrences for t = 0..record[-1] over chunk ``ch`` of the groups; statistics
    at the steps listed in ``record``. The engine runs the chunks on threads
    (:func:`nqm_mc._chunks.run_chunks`): the function releases the GIL.

    The schedules come as runs of constant hyperparameters (``form.starts``). Where the next
    record lies JUMP_MIN steps or more ahead inside a run, the moments jump there in
    O(log gap) (_jump: the doubling of loss_at_kernel, with the run's power table built once
    and extended as needed), so sparse records on piecewise-constant hyperparameters cost
    O((records + runs) log t) per group instead of O(t); shorter gaps are stepped as
    written. Schedules that change every step are stepped group-block by group-block: each
    step is one loop over up to SUB groups (vectorised), with the operations of the one-group
    step.

    Whether a stretch is jumped or stepped depends on the steps only, never on the group, so
    every group of a block takes the same path and the bits are those of the one-group
    recurrence.

    form : LinearForm (:mod:`nqm_mc.exact.lowering`) covering at least record[-1] steps
        (G groups; K runs).
    record : (R,) int64, increasing steps.
    n_chunks : int, the groups are split into this many contiguous chunks; ch : int, the
        chunk this call computes (0 <= ch < n_chunks). heff : (G,) h * hp.
    out_mean, out_var, out_theta_mean : (n_chunks, R) float64, zero on entry; row ch receives
        this chunk's partial sums of E[L], Var[L] and E[L_theta], each summed in group order
        (summed by the caller in chunk order, so totals do not depend on the thread count).
    out_group_m1, out_group_m2 : (R, G) or (0, 0) float64; receive the readout's per-group mean
        and uncentred second moment (skipped when empty).
    """
    kind, has_ema, beta, gamma = form.kind, form.has_ema, form.beta, form.gamma
    h, hp, c, n, mu0, v0 = form.h, form.hp, form.c, form.n, form.mu0, form.v0
    starts, lr_run, batch_run = form.starts, form.lr, form.batch
    K = starts.shape[0]
    T_end = record[-1]
    G = h.shape[0]
    R = record.shape[0]
    keep_groups = out_group_m1.shape[0] > 0
    plain_sgd = kind == KIND_SGD and not has_ema
    A = np.zeros((3, 3, SUB))
    b = np.zeros((3, SUB))
    S = np.zeros((3, 3, SUB))
    mu = np.zeros((3, SUB))
    tmp = np.zeros((3, 3, SUB))
    Tb = np.zeros((3, 3, SUB))
    nm = np.zeros((3, SUB))
    q = np.zeros(SUB)
    # each group's power table of the current run
    table = np.empty((MAX_LOG2 + 1, 3, 3, SUB))
    N = np.empty((MAX_LOG2 + 1, 3, 3, SUB))
    S0 = S[0, 0]  # plain SGD's second moment and mean (views)
    mu00 = mu[0]
    c0 = ch * G // n_chunks
    c1 = (ch + 1) * G // n_chunks
    for g0 in range(c0, c1, SUB):
        ns = min(SUB, c1 - g0)
        for i in range(3):
            for gi in range(ns):
                mu[i, gi] = 0.0
                for j in range(3):
                    S[i, j, gi] = 0.0
        k = _fill_block(kind, has_ema, heff, hp, lr_run[0], beta, gamma, A, b, g0, ns)
        ro = k - 1 if has_ema else 0
        for gi in range(ns):
            g = g0 + gi
            q[gi] = c[g] / batch_run[0]
            mu[0, gi] = mu0[g]
            S[0, 0, gi] = mu0[g] * mu0[g] + v0[g]
            if has_ema:
                mu[ro, gi] = mu0[g]
                S[0, ro, gi] = S[0, 0, gi]
                S[ro, 0, gi] = S[0, 0, gi]
                S[ro, ro, gi] = S[0, 0, gi]
        # np.int64: a literal 0 passed to a callee would compile it once more for that value
        built = np.int64(0)  # levels of the power tables of run built_run
        built_run = -1
        j = np.int64(0)  # the run of step t
        r = 0
        t = np.int64(0)
        while r < R:
            if t == record[r]:
                for gi in range(ns):
                    g = g0 + gi
                    m1 = mu[ro, gi]
                    m2 = S[ro, ro, gi]
                    var = m2 - m1 * m1
                    if var < 0.0:
                        var = 0.0
                    out_mean[ch, r] += 0.5 * n[g] * h[g] * m2
                    out_var[ch, r] += n[g] * h[g] * h[g] * (0.5 * var * var + m1 * m1 * var)
                    out_theta_mean[ch, r] += 0.5 * n[g] * h[g] * S[0, 0, gi]
                    if keep_groups:
                        out_group_m1[r, g] = m1
                        out_group_m2[r, g] = m2
                r += 1
                if r == R:
                    break
            if j + 1 < K and starts[j + 1] <= t:  # a new run starts at t
                j += 1
                if lr_run[j] != lr_run[j - 1]:  # A and b depend on the step only here
                    k = _fill_block(kind, has_ema, heff, hp, lr_run[j], beta, gamma, A, b,
                                    g0, ns)
                if batch_run[j] != batch_run[j - 1]:
                    for gi in range(ns):
                        q[gi] = c[g0 + gi] / batch_run[j]
            run_end = starts[j + 1] if j + 1 < K else T_end
            gap = min(record[r], run_end) - t
            if gap >= JUMP_MIN:
                if built_run != j:
                    built = np.int64(0)
                    built_run = j
                built = _jump_block(k, A, b, q, gap, built, table, N, mu, S, tmp, Tb, nm,
                                    ns)
                t += gap
                continue
            # step up to the next record; a run that begins on the way is stepped too
            # unless it is long (then back to the top, to jump it)
            stop = record[r]
            if plain_sgd:
                t, j = _steps_sgd(heff, hp, c, lr_run, batch_run, starts, T_end, g0, ns, q,
                                  S0, mu00, t, stop, j)
                # A, b of the run reached, for the jumps
                k = _fill_block(kind, has_ema, heff, hp, lr_run[j], beta, gamma, A, b,
                                g0, ns)
                continue
            while t < stop:
                if j + 1 < K and starts[j + 1] <= t:
                    nxt_end = starts[j + 2] if j + 2 < K else T_end
                    if min(stop, nxt_end) - t >= JUMP_MIN:
                        break
                    j += 1
                    if lr_run[j] != lr_run[j - 1]:
                        k = _fill_block(kind, has_ema, heff, hp, lr_run[j], beta, gamma,
                                        A, b, g0, ns)
                    if batch_run[j] != batch_run[j - 1]:
                        for gi in range(ns):
                            q[gi] = c[g0 + gi] / batch_run[j]
                _step_block(k, A, b, q, S, mu, tmp, Tb, nm, ns)
                t += 1


# --------------------------------------------------------------------------- O(log t) evaluation
@njit(cache=True, error_model="numpy", nogil=True)
def loss_at_range(form, ts, out_mean, out_var, out_theta_mean, lo, hi):
    """E[L(t)], Var[L(t)] and E[L_theta(t)] at arbitrary t for constant hyperparameters, for
    groups lo .. hi - 1 (loss_at_kernel runs every group).

    S(t) is assembled from the binary digits of t: with P_j = A^(2^j) and
    N_j = sum_{i < 2^j} A^i Q A^iT, S <- P_j S P_j^T + N_j for every set bit j. Cost O(k^3 log t)
    per group; valid for unstable configurations too (the moments then grow).

    form : LinearForm (G groups); the learning rate and batch size are those of step 0.
    ts : (nT,) int64 steps >= 0 (up to 2^62).
    out_mean, out_var, out_theta_mean : (G, nT) float64, per group (summed by the caller).
    """
    kind, has_ema, beta, gamma = form.kind, form.has_ema, form.beta, form.gamma
    h, hp, c, n, mu0, v0 = form.h, form.hp, form.c, form.n, form.mu0, form.v0
    lr = form.lr[0]
    batch = form.batch[0]
    nT = ts.shape[0]
    for g in range(lo, hi):
        A = np.zeros((3, 3))
        b = np.zeros(3)
        table = np.zeros((MAX_LOG2 + 1, 3, 3))
        N = np.zeros((MAX_LOG2 + 1, 3, 3))
        tmp = np.zeros((3, 3))
        T = np.zeros((3, 3))
        S = np.zeros((3, 3))
        mu = np.zeros(3)
        nm = np.zeros(3)
        k = fill_linear_form(kind, has_ema, h[g], hp[g], lr, beta, gamma, A, b)
        ro = k - 1 if has_ema else 0
        q = c[g] / batch
        # powers (no early stop here: unstable powers must be kept as they are)
        for i in range(3):
            for j in range(3):
                table[0, i, j] = A[i, j]
                N[0, i, j] = q * b[i] * b[j]
        for p in range(1, MAX_LOG2 + 1):
            _matmul(k, table[p - 1], table[p - 1], table[p])
            _sandwich(k, table[p - 1], N[p - 1], tmp, T)
            for i in range(k):
                for j in range(k):
                    N[p, i, j] = N[p - 1, i, j] + T[i, j]
        for it in range(nT):
            t = ts[it]
            for i in range(3):
                mu[i] = 0.0
                for j in range(3):
                    S[i, j] = 0.0
            mu[0] = mu0[g]
            S[0, 0] = mu0[g] * mu0[g] + v0[g]
            if has_ema:
                mu[ro] = mu0[g]
                S[0, ro] = S[0, 0]
                S[ro, 0] = S[0, 0]
                S[ro, ro] = S[0, 0]
            p = 0
            while t > 0:
                if t & 1:
                    _sandwich(k, table[p], S, tmp, T)
                    for i in range(k):
                        s = 0.0
                        for j in range(k):
                            s += table[p, i, j] * mu[j]
                        nm[i] = s
                    for i in range(k):
                        mu[i] = nm[i]
                        for j in range(k):
                            S[i, j] = T[i, j] + N[p, i, j]
                t >>= 1
                p += 1
            m1 = mu[ro]
            m2 = S[ro, ro]
            var = m2 - m1 * m1
            if var < 0.0:
                var = 0.0
            out_mean[g, it] = 0.5 * n[g] * h[g] * m2
            out_var[g, it] = n[g] * h[g] * h[g] * (0.5 * var * var + m1 * m1 * var)
            out_theta_mean[g, it] = 0.5 * n[g] * h[g] * S[0, 0]


def loss_at_kernel(form, ts, out_mean, out_var, out_theta_mean):
    """loss_at_range for every group (lo, hi: a chunk of groups), the chunks on threads
    (:func:`nqm_mc._chunks.run_ranges`); each group writes only its own outputs, so neither the
    chunks nor the thread count change them."""
    run_ranges(lambda lo, hi: loss_at_range(form, ts, out_mean, out_var, out_theta_mean, lo,
                                            hi), form.h.shape[0], min_size=64)


# --------------------------------------------------------------------------- steady state
@njit(cache=True, error_model="numpy", nogil=True)
def steady_state_range(form, out_m2, out_stable, lo, hi):
    """Per group (groups lo .. hi - 1; steady_state_kernel runs every group): the readout's
    steady-state second moment (mean is 0) and stability.

    form : LinearForm (G groups); the learning rate and batch size are those of step 0.
    out_m2 : (G,) float64, receives S*_rr (inf when unstable).
    out_stable : (G,) bool, receives whether the group's map contracts.
    """
    kind, has_ema, beta, gamma = form.kind, form.has_ema, form.beta, form.gamma
    h, hp, c = form.h, form.hp, form.c
    lr = form.lr[0]
    batch = form.batch[0]
    for g in range(lo, hi):
        A = np.zeros((3, 3))
        b = np.zeros(3)
        Q = np.zeros((3, 3))
        Ss = np.zeros((3, 3))
        table = np.zeros((MAX_LOG2 + 1, 3, 3))
        k = fill_linear_form(kind, has_ema, h[g], hp[g], lr, beta, gamma, A, b)
        ro = k - 1 if has_ema else 0
        power_table(k, A, table)
        if not is_stable(k, table):
            out_stable[g] = False
            out_m2[g] = np.inf
            continue
        out_stable[g] = True
        q = c[g] / batch
        for i in range(k):
            for j in range(k):
                Q[i, j] = q * b[i] * b[j]
        doubling_sum(k, table, Q, Ss, np.bool_(False))
        out_m2[g] = Ss[ro, ro]


def steady_state_kernel(form, out_m2, out_stable):
    """steady_state_range for every group (lo, hi: a chunk of groups), the chunks on threads
    (:func:`nqm_mc._chunks.run_ranges`); each group writes only its own outputs, so neither the
    chunks nor the thread count change them."""
    run_ranges(lambda lo, hi: steady_state_range(form, out_m2, out_stable, lo, hi),
               form.h.shape[0], min_size=64)
