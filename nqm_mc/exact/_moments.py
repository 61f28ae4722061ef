"""Moment recurrences of the exact engine (numba kernels): per-step curves, O(log t) evaluation,
steady state and stability.

Kernels carry the mean mu and the uncentred second moment S (k x k) of each group's state:
mu' = A mu,  S' = A S A^T + (c/B) b b^T.
"""

import numpy as np
from numba import njit, prange

from nqm_mc.exact._linalg import _matmul, _max_abs, _sandwich, _sandwich2_inplace, fill_linear_form
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


@njit(cache=True, error_model="numpy", parallel=True)
def curve_kernel(form, record, n_chunks, out_mean, out_var, out_theta_mean, out_group_m1,
                 out_group_m2, run_end):
    """Per-step recurrences for t = 0..record[-1]; statistics at the steps listed in ``record``.

    Where the next record lies JUMP_MIN steps or more ahead inside a run of constant
    hyperparameters, the moments jump there in O(log gap) (_jump: the doubling of
    loss_at_kernel, with the run's power table built once and extended as needed), so sparse
    records on piecewise-constant hyperparameters cost O(records log t) per group instead of
    O(t); shorter gaps are stepped as written.

    form : LinearForm (:mod:`nqm_mc.exact.lowering`) with lr, batch of length >= record[-1]
        (G groups).
    record : (R,) int64, increasing steps.
    n_chunks : int, the groups are split into this many contiguous chunks (one per task).
    out_mean, out_var, out_theta_mean : (n_chunks, R) float64, zero on entry; receive
        per-chunk partial sums of E[L], Var[L] and E[L_theta] (summed by the caller in chunk
        order, so totals do not depend on the thread count).
    out_group_m1, out_group_m2 : (R, G) or (0, 0) float64; receive the readout's per-group mean
        and uncentred second moment (skipped when empty).
    run_end : (T,) int64; run_end[t] is the first step after t whose learning rate or batch
        size differs from step t's (record[-1] when none does).
    """
    kind, has_ema, beta, gamma = form.kind, form.has_ema, form.beta, form.gamma
    h, hp, c, n, mu0, v0 = form.h, form.hp, form.c, form.n, form.mu0, form.v0
    lr_t, batch_t = form.lr, form.batch
    G = h.shape[0]
    R = record.shape[0]
    keep_groups = out_group_m1.shape[0] > 0
    for ch in prange(n_chunks):
        A = np.zeros((3, 3))
        b = np.zeros(3)
        S = np.zeros((3, 3))
        T = np.zeros((3, 3))
        tmp = np.zeros((3, 3))
        mu = np.zeros(3)
        nm = np.zeros(3)
        table = np.zeros((MAX_LOG2 + 1, 3, 3))
        N = np.zeros((MAX_LOG2 + 1, 3, 3))
        for g in range(ch * G // n_chunks, (ch + 1) * G // n_chunks):
            built = 0  # levels of the power table of the current run
            built_at = -1  # the step whose run the table belongs to
            k = fill_linear_form(kind, has_ema, h[g], hp[g], lr_t[0], beta, gamma, A, b)
            ro = k - 1 if has_ema else 0
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
            r = 0
            t = 0
            while r < R:
                if t == record[r]:
                    m1 = mu[ro]
                    m2 = S[ro, ro]
                    var = m2 - m1 * m1
                    if var < 0.0:
                        var = 0.0
                    out_mean[ch, r] += 0.5 * n[g] * h[g] * m2
                    out_var[ch, r] += n[g] * h[g] * h[g] * (0.5 * var * var + m1 * m1 * var)
                    out_theta_mean[ch, r] += 0.5 * n[g] * h[g] * S[0, 0]
                    if keep_groups:
                        out_group_m1[r, g] = m1
                        out_group_m2[r, g] = m2
                    r += 1
                    if r == R:
                        break
                if t > 0 and lr_t[t] != lr_t[t - 1]:  # A and b depend on the step only here
                    k = fill_linear_form(kind, has_ema, h[g], hp[g], lr_t[t], beta, gamma, A, b)
                q = c[g] / batch_t[t]
                gap = min(record[r], run_end[t]) - t
                if gap >= JUMP_MIN:
                    if built_at < 0 or run_end[built_at] != run_end[t]:  # a new run
                        built = 0
                        built_at = t
                    built = _jump(k, A, b, q, gap, built, table, N, mu, S, nm, tmp, T)
                    t += gap
                    continue
                if k == 2:  # the same operations as below, in scalars
                    _sandwich2_inplace(A, S)
                    m0 = A[0, 0] * mu[0] + A[0, 1] * mu[1]
                    m1_ = A[1, 0] * mu[0] + A[1, 1] * mu[1]
                    mu[0] = m0
                    mu[1] = m1_
                    S[0, 0] = S[0, 0] + q * b[0] * b[0]
                    S[0, 1] = S[0, 1] + q * b[0] * b[1]
                    S[1, 0] = S[1, 0] + q * b[1] * b[0]
                    S[1, 1] = S[1, 1] + q * b[1] * b[1]
                    t += 1
                    continue
                _sandwich(k, A, S, tmp, T)
                for i in range(k):
                    s = 0.0
                    for j in range(k):
                        s += A[i, j] * mu[j]
                    nm[i] = s
                for i in range(k):
                    mu[i] = nm[i]
                    for j in range(k):
                        S[i, j] = T[i, j] + q * b[i] * b[j]
                t += 1


# --------------------------------------------------------------------------- O(log t) evaluation
@njit(cache=True, error_model="numpy", parallel=True)
def loss_at_kernel(form, ts, out_mean, out_var, out_theta_mean):
    """E[L(t)], Var[L(t)] and E[L_theta(t)] at arbitrary t for constant hyperparameters.

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
    G = h.shape[0]
    nT = ts.shape[0]
    for g in prange(G):
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


# --------------------------------------------------------------------------- steady state
@njit(cache=True, error_model="numpy", parallel=True)
def steady_state_kernel(form, out_m2, out_stable):
    """Per group: the readout's steady-state second moment (mean is 0) and stability.

    form : LinearForm (G groups); the learning rate and batch size are those of step 0.
    out_m2 : (G,) float64, receives S*_rr (inf when unstable).
    out_stable : (G,) bool, receives whether the group's map contracts.
    """
    kind, has_ema, beta, gamma = form.kind, form.has_ema, form.beta, form.gamma
    h, hp, c = form.h, form.hp, form.c
    lr = form.lr[0]
    batch = form.batch[0]
    G = h.shape[0]
    for g in prange(G):
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
        doubling_sum(k, table, Q, Ss, False)
        out_m2[g] = Ss[ro, ro]
