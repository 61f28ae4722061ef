"""Numba kernels of the exact engine (private: arrays in, arrays out, no argument checks).

Per group of directions the optimizer is linear, x(t+1) = A_t x(t) + b_t xi(t) with
xi ~ N(0, c / B_t), state x = (theta[, m][, ema]) of size k <= 3. Kernels carry the mean mu and
the uncentred second moment S (k x k):  mu' = A mu,  S' = A S A^T + (c/B) b b^T.

Powers are taken by repeated squaring; infinite sums (steady state S*, the Lyapunov matrix P)
by doubling, sum_{j < 2T} = sum_{j < T} + A^T (sum_{j < T}) A^T', which adds positive
semidefinite terms only: no eigendecomposition (it fails at critical damping) and no
ill-conditioned linear solve.
"""

import numpy as np
from numba import njit, prange

KIND_SGD, KIND_HEAVY_BALL, KIND_NESTEROV = 0, 1, 2
MAX_LOG2 = 62  # horizons up to 2^62 steps

_OPTS = dict(cache=True, error_model="numpy")


@njit(**_OPTS)
def fill_linear_form(kind, has_ema, h, hp, lr, beta, gamma, A, b):
    """Write the (A, b) of one group into 3x3 / 3 scratch arrays; return the state size k.

    hp = h^-p (the preconditioner); the preconditioned gradient is hp * (h theta + xi).
    """
    for i in range(3):
        b[i] = 0.0
        for j in range(3):
            A[i, j] = 0.0
    heff = h * hp
    x = lr * heff
    if kind == KIND_SGD:
        A[0, 0] = 1.0 - x
        b[0] = -lr * hp
        k = 1
    elif kind == KIND_HEAVY_BALL:
        # m' = beta m + g ; theta' = theta - lr m'
        A[0, 0] = 1.0 - x
        A[0, 1] = -lr * beta
        A[1, 0] = heff
        A[1, 1] = beta
        b[0] = -lr * hp
        b[1] = hp
        k = 2
    else:
        # m' = beta m + g ; theta' = theta - lr (g + beta m') = theta - lr(1+beta) g - lr beta^2 m
        A[0, 0] = 1.0 - (1.0 + beta) * x
        A[0, 1] = -lr * beta * beta
        A[1, 0] = heff
        A[1, 1] = beta
        b[0] = -lr * (1.0 + beta) * hp
        b[1] = hp
        k = 2
    if has_ema:
        # ema' = gamma ema + (1 - gamma) theta'
        for j in range(k):
            A[k, j] = (1.0 - gamma) * A[0, j]
        A[k, k] = gamma
        b[k] = (1.0 - gamma) * b[0]
        k += 1
    return k


@njit(**_OPTS)
def _matmul(k, X, Y, out):
    """out = X Y (k x k blocks of 3 x 3 arrays; out must not alias X or Y)."""
    for i in range(k):
        for j in range(k):
            s = 0.0
            for m in range(k):
                s += X[i, m] * Y[m, j]
            out[i, j] = s


@njit(**_OPTS)
def _sandwich(k, M, X, tmp, out):
    """out = M X M^T."""
    if k == 2:  # in scalars: the same operations in the same order, without loop overhead
        for i in range(2):
            for j in range(2):
                out[i, j] = X[i, j]
        _sandwich2_inplace(M, out)
        return
    for i in range(k):
        for j in range(k):
            s = 0.0
            for m in range(k):
                s += M[i, m] * X[m, j]
            tmp[i, j] = s
    for i in range(k):
        for j in range(k):
            s = 0.0
            for m in range(k):
                s += tmp[i, m] * M[j, m]
            out[i, j] = s


@njit(**_OPTS)
def _sandwich_t(k, M, X, tmp, out):
    """out = M^T X M."""
    for i in range(k):
        for j in range(k):
            s = 0.0
            for m in range(k):
                s += M[m, i] * X[m, j]
            tmp[i, j] = s
    for i in range(k):
        for j in range(k):
            s = 0.0
            for m in range(k):
                s += tmp[i, m] * M[m, j]
            out[i, j] = s


@njit(**_OPTS)
def _max_abs(k, X):
    s = 0.0
    for i in range(k):
        for j in range(k):
            a = abs(X[i, j])
            if a > s or a != a:
                s = a
    return s


@njit(**_OPTS)
def _inv_sym(k, P, out):
    """Inverse of a small symmetric positive definite matrix (Gauss-Jordan)."""
    W = np.zeros((3, 6))
    for i in range(k):
        for j in range(k):
            W[i, j] = P[i, j]
            W[i, k + j] = 1.0 if i == j else 0.0
    for col in range(k):
        piv = col
        for r in range(col + 1, k):
            if abs(W[r, col]) > abs(W[piv, col]):
                piv = r
        if piv != col:
            for j in range(2 * k):
                W[col, j], W[piv, j] = W[piv, j], W[col, j]
        d = W[col, col]
        for j in range(2 * k):
            W[col, j] /= d
        for r in range(k):
            if r != col:
                f = W[r, col]
                for j in range(2 * k):
                    W[r, j] -= f * W[col, j]
    for i in range(k):
        for j in range(k):
            out[i, j] = W[i, k + j]


@njit(**_OPTS)
def _power_table2(table):
    """power_table for k = 2 in scalars (same operations, same order, same bits)."""
    n = table.shape[0]
    a00, a01, a10, a11 = table[0, 0, 0], table[0, 0, 1], table[0, 1, 0], table[0, 1, 1]
    for p in range(1, n):
        b00 = a00 * a00 + a01 * a10
        b01 = a00 * a01 + a01 * a11
        b10 = a10 * a00 + a11 * a10
        b11 = a10 * a01 + a11 * a11
        a00, a01, a10, a11 = b00, b01, b10, b11
        table[p, 0, 0], table[p, 0, 1], table[p, 1, 0], table[p, 1, 1] = a00, a01, a10, a11
        m = 0.0
        for v in (abs(a00), abs(a01), abs(a10), abs(a11)):
            if v > m or v != v:
                m = v
        if m == 0.0:
            for q in range(p + 1, n):
                for i in range(3):
                    for j in range(3):
                        table[q, i, j] = 0.0
            return p + 1
    return n


@njit(**_OPTS)
def power_table(k, A, table):
    """table[j] = A^(2^j) for j < table.shape[0]; returns how many are finite and nonzero.

    Stops early once the power underflows to exactly zero (then all later ones are zero too).
    """
    n = table.shape[0]
    for i in range(3):
        for j in range(3):
            table[0, i, j] = A[i, j]
    if k == 2:
        return _power_table2(table)
    last = n
    for p in range(1, n):
        _matmul(k, table[p - 1], table[p - 1], table[p])
        if _max_abs(k, table[p]) == 0.0:
            for q in range(p + 1, n):
                for i in range(3):
                    for j in range(3):
                        table[q, i, j] = 0.0
            last = p + 1
            break
    return last


@njit(**_OPTS)
def is_stable(k, table):
    """Spectral radius < 1, read off the powers: A^(2^j) -> 0 iff rho(A) < 1."""
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


@njit(**_OPTS)
def _doubling_sum2(table, Q, out, transpose):
    """doubling_sum for k = 2 in scalars (the same operations in the same order as the
    general loops, so the same bits, without their bookkeeping)."""
    x00, x01, x10, x11 = Q[0, 0], Q[0, 1], Q[1, 0], Q[1, 1]
    for p in range(table.shape[0]):
        m00, m01, m10, m11 = table[p, 0, 0], table[p, 0, 1], table[p, 1, 0], table[p, 1, 1]
        if transpose:  # M^T X M is the sandwich with M^T
            m01, m10 = m10, m01
        t00 = m00 * x00 + m01 * x10
        t01 = m00 * x01 + m01 * x11
        t10 = m10 * x00 + m11 * x10
        t11 = m10 * x01 + m11 * x11
        a00 = t00 * m00 + t01 * m01
        a01 = t00 * m10 + t01 * m11
        a10 = t10 * m00 + t11 * m01
        a11 = t10 * m10 + t11 * m11
        y00, y01, y10, y11 = x00 + a00, x01 + a01, x10 + a10, x11 + a11
        changed = y00 != x00 or y01 != x01 or y10 != x10 or y11 != x11
        x00, x01, x10, x11 = y00, y01, y10, y11
        if not changed:
            break
    for i in range(3):
        for j in range(3):
            out[i, j] = Q[i, j]
    out[0, 0], out[0, 1], out[1, 0], out[1, 1] = x00, x01, x10, x11


@njit(**_OPTS)
def doubling_sum(k, table, Q, out, transpose):
    """out = sum_{j>=0} A^j Q A^jT (or A^jT Q A^j when transpose), by doubling until it stops
    changing. Assumes a stable A."""
    if k == 2:
        _doubling_sum2(table, Q, out, transpose)
        return
    tmp = np.zeros((3, 3))
    add = np.zeros((3, 3))
    for i in range(3):
        for j in range(3):
            out[i, j] = Q[i, j]
    for p in range(table.shape[0]):
        if transpose:
            _sandwich_t(k, table[p], out, tmp, add)
        else:
            _sandwich(k, table[p], out, tmp, add)
        changed = False
        for i in range(k):
            for j in range(k):
                v = out[i, j] + add[i, j]
                if v != out[i, j]:
                    changed = True
                out[i, j] = v
        if not changed:
            break


# --------------------------------------------------------------------------- per-step curves
@njit(cache=True, error_model="numpy", parallel=True)
def curve_kernel(kind, has_ema, h, hp, c, n, mu0, v0, lr_t, batch_t, beta, gamma, record,
                 n_chunks, out_mean, out_var, out_theta_mean, out_group_m1, out_group_m2):
    """Per-step recurrences for t = 0..record[-1]; statistics at the steps listed in ``record``.

    out_* have shape (n_chunks, R) and hold per-chunk partial sums (summed by the caller in
    chunk order, so totals do not depend on the thread count). out_group_m1/m2 (R, G) or (0, 0)
    receive the readout's per-group mean and uncentred second moment.
    """
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
        for g in range(ch * G // n_chunks, (ch + 1) * G // n_chunks):
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
def loss_at_kernel(kind, has_ema, h, hp, c, n, mu0, v0, lr, batch, beta, gamma, ts,
                   out_mean, out_var, out_theta_mean):
    """E[L(t)], Var[L(t)] and E[L_theta(t)] at arbitrary t for constant hyperparameters.

    S(t) is assembled from the binary digits of t: with P_j = A^(2^j) and
    N_j = sum_{i < 2^j} A^i Q A^iT, S <- P_j S P_j^T + N_j for every set bit j. Cost O(k^3 log t)
    per group; valid for unstable configurations too (the moments then grow).
    Outputs have shape (G, len(ts)) (per group, summed by the caller).
    """
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
def steady_state_kernel(kind, has_ema, h, hp, c, lr, batch, beta, gamma, out_m2, out_stable):
    """Per group: the readout's steady-state second moment (mean is 0) and stability."""
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


# --------------------------------------------------------------------------- steps to target
@njit(**_OPTS)
def _sandwich2_inplace(M, X):
    """X <- M X M^T for k = 2 (the bits of _sandwich)."""
    m00, m01, m10, m11 = M[0, 0], M[0, 1], M[1, 0], M[1, 1]
    x00, x01, x10, x11 = X[0, 0], X[0, 1], X[1, 0], X[1, 1]
    t00 = m00 * x00 + m01 * x10
    t01 = m00 * x01 + m01 * x11
    t10 = m10 * x00 + m11 * x10
    t11 = m10 * x01 + m11 * x11
    X[0, 0] = t00 * m00 + t01 * m01
    X[0, 1] = t00 * m10 + t01 * m11
    X[1, 0] = t10 * m00 + t11 * m01
    X[1, 1] = t10 * m10 + t11 * m11


@njit(**_OPTS)
def _bisect(kk, ro, G, table, D, n, h, Lstar, target, bisect_hi, stats, tmp, T):
    """The reference notebook's bisection on [0, bisect_hi) (see first_crossing_one), with the
    state kept at lo. Every step from lo to mid is floor(w / 2) for the current width w, and
    after k halvings w is floor(W / 2^k) or ceil(W / 2^k) (W = bisect_hi): two step sizes per
    depth, f_k = floor(W / 2^(k+1)) and c_k = floor(ceil(W / 2^k) / 2), both equal to
    2 f_(k+1) + r with r in {0, 1, 2}. Their powers of A therefore come from the next depth's
    with one squaring and at most two products, and each bisection step costs one sandwich
    per group instead of a power from scratch."""
    depth = 0
    while (bisect_hi >> depth) > 1:
        depth += 1
    depth += 1
    pf = np.zeros((depth + 1, G, 3, 3))  # A^(f_k) per group
    pc = np.zeros((depth + 1, G, 3, 3))  # A^(c_k)
    sq = np.zeros((3, 3))
    for k in range(depth, -1, -1):
        fk = bisect_hi >> (k + 1)
        ck = ((bisect_hi + (np.int64(1) << k) - 1) >> k) // 2
        for g in range(G):
            K = kk[g]
            for which in range(2):
                v = fk if which == 0 else ck
                dst = pf[k, g] if which == 0 else pc[k, g]
                if k == depth:  # v is 0 or 1 here
                    for i in range(3):
                        for j in range(3):
                            dst[i, j] = table[g, 0, i, j] if v == 1 else (1.0 if i == j else 0.0)
                    continue
                f1 = bisect_hi >> (k + 2)
                _matmul(K, pf[k + 1, g], pf[k + 1, g], sq)
                r = v - 2 * f1
                if r == 0:
                    for i in range(K):
                        for j in range(K):
                            dst[i, j] = sq[i, j]
                elif r == 1:
                    _matmul(K, table[g, 0], sq, dst)
                else:
                    _matmul(K, table[g, 0], sq, tmp)
                    _matmul(K, table[g, 0], tmp, dst)
    lo = np.int64(0)
    hi = np.int64(bisect_hi)
    X = D.copy()
    Xm = np.zeros((G, 3, 3))
    k = 0
    while lo < hi - 1:
        mid = (lo + hi) // 2
        step = mid - lo
        fk = bisect_hi >> (k + 1)
        L = Lstar
        for g in range(G):
            _sandwich(kk[g], pf[k, g] if step == fk else pc[k, g], X[g], tmp, T)
            for i in range(3):
                for j in range(3):
                    Xm[g, i, j] = T[i, j]
            L += 0.5 * n[g] * h[g] * T[ro[g], ro[g]]
        stats[2] += 1
        if L < target:
            hi = mid
        else:
            lo = mid
            for g in range(G):
                for i in range(3):
                    for j in range(3):
                        X[g, i, j] = Xm[g, i, j]
        k += 1
    return lo


@njit(**_OPTS)
def _bisect2(G, table, D, n, h, Lstar, target, bisect_hi, stats):
    """_bisect for 2 x 2 recurrences read out at entry (0, 0) (heavy-ball, Nesterov), with the
    groups laid out as arrays (structure of arrays), so that every step is one SIMD loop."""
    depth = 0
    while (bisect_hi >> depth) > 1:
        depth += 1
    depth += 1
    pw = np.zeros((depth + 1, 2, 4, G))  # [k, f or c, entry 00 01 10 11, group]
    a = np.empty(G)
    b = np.empty(G)
    c = np.empty(G)
    d = np.empty(G)
    for g in range(G):
        a[g] = table[g, 0, 0, 0]
        b[g] = table[g, 0, 0, 1]
        c[g] = table[g, 0, 1, 0]
        d[g] = table[g, 0, 1, 1]
        pw[depth, 0, 0, g] = 1.0
        pw[depth, 0, 3, g] = 1.0
        pw[depth, 1, 0, g] = 1.0
        pw[depth, 1, 3, g] = 1.0
    for k in range(depth - 1, -1, -1):
        fk = bisect_hi >> (k + 1)
        ck = ((bisect_hi + (np.int64(1) << k) - 1) >> k) // 2
        f1 = bisect_hi >> (k + 2)
        q = pw[k + 1, 0]
        for which in range(2):
            r = (fk if which == 0 else ck) - 2 * f1
            o = pw[k, which]
            for g in range(G):
                # (A^f1)^2 A^r, r in {0, 1, 2}
                s00 = q[0, g] * q[0, g] + q[1, g] * q[2, g]
                s01 = q[0, g] * q[1, g] + q[1, g] * q[3, g]
                s10 = q[2, g] * q[0, g] + q[3, g] * q[2, g]
                s11 = q[2, g] * q[1, g] + q[3, g] * q[3, g]
                for _ in range(r):
                    t00 = a[g] * s00 + b[g] * s10
                    t01 = a[g] * s01 + b[g] * s11
                    t10 = c[g] * s00 + d[g] * s10
                    t11 = c[g] * s01 + d[g] * s11
                    s00 = t00
                    s01 = t01
                    s10 = t10
                    s11 = t11
                o[0, g] = s00
                o[1, g] = s01
                o[2, g] = s10
                o[3, g] = s11
    x00 = np.empty(G)
    x01 = np.empty(G)
    x11 = np.empty(G)
    y00 = np.empty(G)
    y01 = np.empty(G)
    y11 = np.empty(G)
    w = np.empty(G)
    for g in range(G):
        x00[g] = D[g, 0, 0]
        x01[g] = D[g, 0, 1]
        x11[g] = D[g, 1, 1]
        w[g] = 0.5 * n[g] * h[g]
    lo = np.int64(0)
    hi = np.int64(bisect_hi)
    k = 0
    while lo < hi - 1:
        mid = (lo + hi) // 2
        m = pw[k, 0 if mid - lo == bisect_hi >> (k + 1) else 1]
        L = Lstar
        for g in range(G):  # Y = M X M^T for the symmetric X
            t00 = m[0, g] * x00[g] + m[1, g] * x01[g]
            t01 = m[0, g] * x01[g] + m[1, g] * x11[g]
            t10 = m[2, g] * x00[g] + m[3, g] * x01[g]
            t11 = m[2, g] * x01[g] + m[3, g] * x11[g]
            y00[g] = t00 * m[0, g] + t01 * m[1, g]
            y01[g] = t00 * m[2, g] + t01 * m[3, g]
            y11[g] = t10 * m[2, g] + t11 * m[3, g]
            L += w[g] * y00[g]
        stats[2] += 1
        if L < target:
            hi = mid
        else:
            lo = mid
            x00, y00 = y00, x00
            x01, y01 = y01, x01
            x11, y11 = y11, x11
        k += 1
    return lo


@njit(**_OPTS)
def _apply_power(k, G, table, steps, X, Y, tmp, T):
    """X[g] <- A^steps X[g] A^steps^T (and the same for Y) from the binary digits of steps."""
    _apply_power_one(k, G, table, steps, X, tmp, T)
    _apply_power_one(k, G, table, steps, Y, tmp, T)


@njit(**_OPTS)
def _apply_power_one(k, G, table, steps, X, tmp, T):
    """X[g] <- A^steps X[g] A^steps^T from the binary digits of steps."""
    p = 0
    while steps > 0:
        if steps & 1:
            for g in range(G):
                if k[g] == 2:
                    _sandwich2_inplace(table[g, p], X[g])
                    continue
                _sandwich(k[g], table[g, p], X[g], tmp, T)
                for i in range(3):
                    for j in range(3):
                        X[g, i, j] = T[i, j]
        steps >>= 1
        p += 1


MODAL_MAX_COND = 1e6


@njit(**_OPTS)
def _eig2(k, A):
    """Eigenvalues and unit eigenvectors of a real 1x1 or 2x2 matrix in closed form (what
    LAPACK's geev would give up to scaling, without its call overhead)."""
    lam = np.zeros(k, np.complex128)
    V = np.zeros((k, k), np.complex128)
    if k == 1:
        lam[0] = A[0, 0]
        V[0, 0] = 1.0
        return lam, V
    a, b, c, d = A[0, 0], A[0, 1], A[1, 0], A[1, 1]
    half = 0.5 * (a - d)
    disc = half * half + b * c  # eigenvalues: (a + d) / 2 +- sqrt(disc)
    mid = 0.5 * (a + d)
    if disc >= 0.0:
        r = np.sqrt(disc)
        # the larger-magnitude root first, the other from it without cancellation
        s = r if half >= 0.0 else -r
        l1 = mid + s
        l2 = (a * d - b * c) / l1 if l1 != 0.0 else mid - s
        lam[0] = l1
        lam[1] = l2
    else:
        r = np.sqrt(-disc)
        lam[0] = complex(mid, r)
        lam[1] = complex(mid, -r)
    for j in range(2):
        # (A - lam I) v = 0: v = (b, lam - a) or (lam - d, c), the better-scaled one
        x1, y1 = complex(b, 0.0), lam[j] - a
        x2, y2 = lam[j] - d, complex(c, 0.0)
        n1 = abs(x1) + abs(y1)
        n2 = abs(x2) + abs(y2)
        if n1 >= n2 and n1 > 0.0:
            x, y = x1, y1
        elif n2 > 0.0:
            x, y = x2, y2
        else:  # A = lam I: any basis
            x = complex(1.0 if j == 0 else 0.0, 0.0)
            y = complex(0.0 if j == 0 else 1.0, 0.0)
        nn = np.sqrt(abs(x) ** 2 + abs(y) ** 2)
        V[0, j] = x / nn
        V[1, j] = y / nn
    return lam, V


@njit(**_OPTS)
def _inv_small(k, V, out):
    """Inverse of a complex k x k matrix (k <= 3) by the adjugate; False when singular."""
    if k == 1:
        if V[0, 0] == 0:
            return False
        out[0, 0] = 1.0 / V[0, 0]
        return True
    if k == 2:
        det = V[0, 0] * V[1, 1] - V[0, 1] * V[1, 0]
        if det == 0:
            return False
        out[0, 0] = V[1, 1] / det
        out[0, 1] = -V[0, 1] / det
        out[1, 0] = -V[1, 0] / det
        out[1, 1] = V[0, 0] / det
        return True
    for i in range(3):
        for j in range(3):
            # cofactor C_ji goes to out[i, j]
            r0, r1 = (j + 1) % 3, (j + 2) % 3
            c0, c1 = (i + 1) % 3, (i + 2) % 3
            out[i, j] = V[r0, c0] * V[r1, c1] - V[r0, c1] * V[r1, c0]
    det = V[0, 0] * out[0, 0] + V[0, 1] * out[1, 0] + V[0, 2] * out[2, 0]
    if det == 0:
        return False
    for i in range(3):
        for j in range(3):
            out[i, j] /= det
    return True


@njit(**_OPTS)
def modal_coefficients(k, r, h, A, D, out_abs, out_mu, out_gap):
    """Modal form of one group's transient, T(t) = sum_ab C_ab (lam_a lam_b)^t.

    With A = V diag(lam) V^-1, alpha_a = V[r, a] and u_a the rows of V^-1,
    C_ab = h/2 alpha_a alpha_b u_a^T D u_b. Writes |C_ab| (inflated by a rounding allowance),
    |mu_ab| and |1 - mu_ab| (mu_ab = lam_a lam_b) and returns the number of modes, or 0 when V
    is too ill-conditioned (near critical damping) for the coefficients to be trusted.
    """
    if k <= 2:
        lam, V = _eig2(k, A)
    else:
        Ac = np.zeros((k, k), np.complex128)
        for i in range(k):
            for j in range(k):
                Ac[i, j] = A[i, j]
        lam, V = np.linalg.eig(Ac)
    nv = 0.0
    for i in range(k):
        for j in range(k):
            nv = max(nv, abs(V[i, j]))
    if nv == 0.0:
        return 0
    Vi = np.zeros((k, k), np.complex128)
    if not _inv_small(k, V, Vi):
        return 0  # defective (a repeated eigenvalue with one eigenvector)
    ni = 0.0
    for i in range(k):
        for j in range(k):
            v = abs(Vi[i, j])
            if v != v:
                return 0
            ni = max(ni, v)
    cond = nv * ni * k
    if not (cond < MODAL_MAX_COND):
        return 0
    safety = 1.0 + 1e-9 * cond * cond
    m = 0
    for a in range(k):
        for bb in range(k):
            q = 0.0j
            for i in range(k):
                for j in range(k):
                    q += Vi[a, i] * D[i, j] * Vi[bb, j]
            C = 0.5 * h * V[r, a] * V[r, bb] * q
            mu = lam[a] * lam[bb]
            out_abs[m] = abs(C) * safety
            out_mu[m] = abs(mu)
            out_gap[m] = abs(1.0 - mu) * (1.0 + 1e-9 * cond) + 1e-15
            m += 1
    return m


@njit(**_OPTS)
def modal_bound(m, c_abs, mu_abs, gap, t, slope):
    """sum_ab |C_ab| |mu_ab|^t (times |1 - mu_ab| when ``slope``): a bound on |T(s)|, or on
    |T(s+1) - T(s)|, for every s >= t. Infinite when the modes are not available."""
    if m == 0:
        return np.inf
    s = 0.0
    for i in range(m):
        mu = mu_abs[i]
        if mu == 0.0:
            p = 1.0 if t == 0.0 else 0.0
        else:
            p = np.exp(t * np.log(mu))
        s += c_abs[i] * p * (gap[i] if slope else 1.0)
    return s


@njit(**_OPTS)
def _envelope(G, kk, table, p, M, P, n, cc, n_modes, mc_abs, mc_mu, mc_gap, t, Lstar, tmp, T):
    """The monotone upper envelope U(t) at t = 2^p: L* + sum_g n min(c_g tr(P A^t M A^tT),
    modal bound)."""
    U = Lstar
    for g in range(G):
        _sandwich(kk[g], table[g, p], M[g], tmp, T)
        e = 0.0
        for i in range(kk[g]):
            for j in range(kk[g]):
                e += P[g, i, j] * T[i, j]
        U += n[g] * min(cc[g] * e, modal_bound(n_modes[g], mc_abs[g], mc_mu[g], mc_gap[g], t,
                                               False))
    return U


@njit(**_OPTS)
def first_crossing_one(kind, has_ema, h, hp, c, n, mu0, v0, lr, batch, beta, gamma, target,
                       method, bisect_hi, ref_bias, stats, cap=0):
    """Steps to target for one configuration.

    Returns t >= 0, or -1 (steady state >= target: unreachable), -2 (unstable), -3 (the target
    lies beyond 2^62 steps), -4 (method 0 with cap > 0: no crossing before ``cap``; the scan
    stops there, which is what a search for the best of many configurations needs; a negative
    cap skips the configuration). ``stats`` (size 4) receives L*, t_hi, the number of exact
    evaluations and the number of lifting steps.

    method 0 (exact first crossing). With D = S0 - S*, the transient is X(t) = A^t D A^tT and
    E[L(t)] = L* + sum_g n h/2 X_rr(t). P = sum_j A^jT A^j satisfies A^T P A <= P, so
    E_g(t) = tr(P A^t M A^tT), with M >= +-D positive semidefinite, never increases. Hence
      U(t) = L* + sum_g n c_g E_g(t) >= E[L(t)]   (c_g = h/2 r^T P^-1 r)
    is a monotone upper envelope, and |E[L(t+1)] - E[L(t)]| <= sum_g n c'_g E_g(a) for t >= a
    (c'_g the largest |eigenvalue| of P^-1/2 (A^T R A - R) P^-1/2). The first t with U(t) < target,
    t_hi, bounds the crossing from above (binary lifting is exact on a monotone function). From
    a = 0 the scan evaluates E[L(a)] exactly and jumps by floor(margin / slope) + 1, a jump over
    which the loss provably stays >= target; it stops at the first a with E[L(a)] < target.
    In one dimension the bounds are exact and the scan converges like Newton's method.

    method 1 (the reference notebook's bisection): lo = 0, hi = bisect_hi; while lo < hi - 1:
    mid = (lo + hi) // 2, lo or hi <- mid by E[L(mid)] >= target. Returns lo (its convention:
    one less than a crossing). ref_bias adds the notebook's 1e-8 to (1 - rho) in SGD's S*.
    """
    if cap < 0:
        return -4  # skipped
    G = h.shape[0]
    A = np.zeros((3, 3))
    b = np.zeros(3)
    Q = np.zeros((3, 3))
    tmp = np.zeros((3, 3))
    T = np.zeros((3, 3))
    Pinv = np.zeros((3, 3))
    Id = np.zeros((3, 3))
    kk = np.zeros(G, np.int64)
    ro = np.zeros(G, np.int64)
    table = np.zeros((G, MAX_LOG2 + 1, 3, 3))
    Sst = np.zeros((G, 3, 3))
    D = np.zeros((G, 3, 3))
    M = np.zeros((G, 3, 3))
    P = np.zeros((G, 3, 3))
    cc = np.zeros(G)
    cp = np.zeros(G)
    mc_abs = np.zeros((G, 9))
    mc_mu = np.zeros((G, 9))
    mc_gap = np.zeros((G, 9))
    n_modes = np.zeros(G, np.int64)
    Lstar = 0.0
    L0 = 0.0
    for g in range(G):
        k = fill_linear_form(kind, has_ema, h[g], hp[g], lr, beta, gamma, A, b)
        kk[g] = k
        r = k - 1 if has_ema else 0
        ro[g] = r
        power_table(k, A, table[g])
        if not is_stable(k, table[g]):
            return -2
        q = c[g] / batch
        for i in range(k):
            for j in range(k):
                Q[i, j] = q * b[i] * b[j]
        if ref_bias and k == 1:
            Sst[g, 0, 0] = Q[0, 0] / (1.0 - A[0, 0] * A[0, 0] + 1e-8)
        else:
            doubling_sum(k, table[g], Q, Sst[g], False)
        # initial second moment
        s0 = mu0[g] * mu0[g] + v0[g]
        for i in range(3):
            for j in range(3):
                D[g, i, j] = -Sst[g, i, j]
        D[g, 0, 0] += s0
        if has_ema:
            D[g, 0, r] += s0
            D[g, r, 0] += s0
            D[g, r, r] += s0
        Lstar += 0.5 * n[g] * h[g] * Sst[g, r, r]
        L0 += 0.5 * n[g] * h[g] * (Sst[g, r, r] + D[g, r, r])
    stats[0] = Lstar
    if not (Lstar < target):
        return -1
    if L0 < target:
        return 0

    if method == 1:
        stats[1] = 1.0  # bisection ran (the answer is lo, one before a crossing)
        two = True
        for g in range(G):
            two = two and kk[g] == 2 and ro[g] == 0
        if two:
            return _bisect2(G, table, D, n, h, Lstar, target, bisect_hi, stats)
        return _bisect(kk, ro, G, table, D, n, h, Lstar, target, bisect_hi, stats, tmp, T)

    # ---- envelopes
    for g in range(G):
        k = kk[g]
        r = ro[g]
        for i in range(3):
            for j in range(3):
                Id[i, j] = 1.0 if (i == j and i < k) else 0.0
        if kind != KIND_SGD:
            Id[1, 1] = lr * lr  # weigh the momentum buffer in theta units (lr m)
        doubling_sum(k, table[g], Id, P[g], True)
        nm = modal_coefficients(k, r, h[g], table[g, 0], D[g], mc_abs[g], mc_mu[g],
                                mc_gap[g])
        n_modes[g] = nm
        _inv_sym(k, P[g], Pinv)
        # M dominates +-D: |D| in closed form for k <= 2, S0 + S* otherwise
        if k == 1:
            M[g, 0, 0] = abs(D[g, 0, 0])
        elif k == 2:
            a11 = D[g, 0, 0]
            a12 = D[g, 0, 1]
            a22 = D[g, 1, 1]
            det = abs(a11 * a22 - a12 * a12)
            s11 = a11 * a11 + a12 * a12
            s12 = a11 * a12 + a12 * a22
            s22 = a12 * a12 + a22 * a22
            den = np.sqrt(s11 + s22 + 2.0 * det)
            if den > 0.0:
                M[g, 0, 0] = (s11 + det) / den
                M[g, 0, 1] = s12 / den
                M[g, 1, 0] = s12 / den
                M[g, 1, 1] = (s22 + det) / den
        else:
            for i in range(k):
                for j in range(k):
                    M[g, i, j] = 2.0 * Sst[g, i, j] + D[g, i, j]
        # c = w^T P^-1 w with w = sqrt(h/2) e_r ; u = A^T w
        w2 = 0.5 * h[g]
        ww = w2 * Pinv[r, r]
        uu = 0.0
        uw = 0.0
        for i in range(k):
            for j in range(k):
                uu += w2 * table[g, 0, r, i] * Pinv[i, j] * table[g, 0, r, j]
            uw += w2 * table[g, 0, r, i] * Pinv[i, r]
        cc[g] = ww
        half = 0.5 * (uu - ww)
        rad = np.sqrt(max(0.25 * (uu + ww) * (uu + ww) - uw * uw, 0.0))
        cp[g] = max(abs(half + rad), abs(half - rad))

    X = np.zeros((G, 3, 3))
    Y = np.zeros((G, 3, 3))
    Yc = np.zeros((G, 3, 3))

    # ---- t_hi: first t with U(t) < target. Find the first power of two first.
    jmax = -1
    pmax = MAX_LOG2
    if cap > 0:
        pmax = 0
        while pmax < MAX_LOG2 and (np.int64(1) << pmax) < cap:
            pmax += 1
    p_first = 0
    if cap > 0:
        # U is monotone: if it is still above the target at 2^pmax (>= cap), the crossing, if
        # any, lies beyond the cap's reach of the lifting; one check spares the others
        U = _envelope(G, kk, table, pmax, M, P, n, cc, n_modes, mc_abs, mc_mu, mc_gap,
                      float(1 << pmax), Lstar, tmp, T)
        if not (U < target):
            p_first = pmax + 1
    for p in range(p_first, pmax + 1):
        U = _envelope(G, kk, table, p, M, P, n, cc, n_modes, mc_abs, mc_mu, mc_gap,
                      float(1 << p), Lstar, tmp, T)
        if U < target:
            jmax = p
            break
    capped = False
    if jmax < 0:
        if cap <= 0:
            return -3
        capped = True  # U stays above the target to beyond cap: scan [0, cap) only
    t = 0
    for g in range(G):
        for i in range(3):
            for j in range(3):
                Y[g, i, j] = M[g, i, j]
    for p in range(jmax - 1 if not capped else -1, -1, -1):
        U = Lstar
        tp = float(t + (1 << p))
        for g in range(G):
            _sandwich(kk[g], table[g, p], Y[g], tmp, T)
            e = 0.0
            for i in range(kk[g]):
                for j in range(kk[g]):
                    e += P[g, i, j] * T[i, j]
                    Yc[g, i, j] = T[i, j]
            U += n[g] * min(cc[g] * e, modal_bound(n_modes[g], mc_abs[g], mc_mu[g],
                                                   mc_gap[g], tp, False))
        stats[3] += 1
        if not (U < target):
            t += 1 << p
            for g in range(G):
                for i in range(3):
                    for j in range(3):
                        Y[g, i, j] = Yc[g, i, j]
    t_hi = t + 1  # U(t) >= target here (U(0) >= L(0) >= target), U(t + 1) < target
    if capped:
        t_hi = cap
    stats[1] = t_hi

    # ---- certified scan from 0
    for g in range(G):
        for i in range(3):
            for j in range(3):
                X[g, i, j] = D[g, i, j]
                Y[g, i, j] = M[g, i, j]
    a = 0
    while True:
        L = Lstar
        slope = 0.0
        for g in range(G):
            L += 0.5 * n[g] * h[g] * X[g, ro[g], ro[g]]
            e = 0.0
            for i in range(kk[g]):
                for j in range(kk[g]):
                    e += P[g, i, j] * Y[g, i, j]
            slope += n[g] * min(cp[g] * e, modal_bound(n_modes[g], mc_abs[g], mc_mu[g],
                                                       mc_gap[g], float(a), True))
        stats[2] += 1
        if L < target:
            return a if (cap <= 0 or a < cap) else -4
        if cap > 0 and a >= cap:
            return -4
        if a >= t_hi + 64:  # rounding guard; should not happen
            return a
        margin = L - target
        if slope > 0.0:
            jump_f = margin / slope
            jump = np.int64(jump_f) + 1 if jump_f < 4.0e18 else np.int64(1) << 61
        else:
            jump = np.int64(1) << 61
        nxt = a + jump
        if nxt > t_hi and a < t_hi:
            nxt = t_hi
        elif a >= t_hi:
            nxt = a + 1
        _apply_power(kk, G, table, nxt - a, X, Y, tmp, T)
        a = nxt


@njit(cache=True, error_model="numpy", parallel=True)
def first_crossing_batch(kind, has_ema, h, hp, c, n, mu0, v0, lrs, batches, betas, gammas,
                         target, method, bisect_hi, ref_bias, out, out_stats, caps):
    """first_crossing_one over configurations (lrs, batches, betas, gammas, caps have one
    length; a cap of 0 means none)."""
    for i in prange(lrs.shape[0]):
        out[i] = first_crossing_one(kind, has_ema, h, hp, c, n, mu0, v0, lrs[i], batches[i],
                                    betas[i], gammas[i], target, method, bisect_hi, ref_bias,
                                    out_stats[i], caps[i])
