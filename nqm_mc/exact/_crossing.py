"""Steps to target (numba kernels): monotone envelopes, modal bounds, the exact first crossing,
the reference bisection and the batch scan over configurations.
"""

import numpy as np
from numba import njit, prange

from nqm_mc.exact._linalg import (
    KIND_SGD,
    _eig2,
    _inv_small,
    _inv_sym,
    _matmul,
    _sandwich,
    _sandwich2_inplace,
    fill_linear_form,
)
from nqm_mc.exact._moments import is_stable
from nqm_mc.exact._powers import MAX_LOG2, doubling_sum, power_table

_OPTS = dict(cache=True, error_model="numpy")
MODAL_MAX_COND = 1e6


@njit(**_OPTS)
def modal_coefficients(k, r, h, A, D, out_abs, out_mu, out_gap):
    """Modal form of one group's transient, T(t) = sum_ab C_ab (lam_a lam_b)^t.

    With A = V diag(lam) V^-1, alpha_a = V[r, a] and u_a the rows of V^-1,
    C_ab = h/2 alpha_a alpha_b u_a^T D u_b. Writes |C_ab| (inflated by a rounding allowance),
    |mu_ab| and |1 - mu_ab| (mu_ab = lam_a lam_b) and returns the number of modes, or 0 when V
    is too ill-conditioned (near critical damping) for the coefficients to be trusted.

    k int <= 3; r int the readout index; h float; A (3, 3) the map (read on its k x k block);
    D (3, 3) the transient; out_abs, out_mu, out_gap (>= k^2,) float64 outputs.
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
    |T(s+1) - T(s)|, for every s >= t. Infinite when the modes are not available.

    m int (modes written by modal_coefficients, 0 = none); c_abs, mu_abs, gap (>= m,) float;
    t float >= 0; slope bool.
    """
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
    modal bound).

    G int; kk (G,) int64 state sizes; table (G, MAX_LOG2 + 1, 3, 3); p int; M, P (G, 3, 3);
    n, cc (G,); n_modes (G,) int64; mc_abs, mc_mu, mc_gap (G, 9); t float (= 2^p); Lstar
    float; tmp, T (3, 3) scratch.
    """
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
def _bisect(kk, ro, G, table, D, n, h, Lstar, target, bisect_hi, stats, tmp, T):
    """The reference notebook's bisection on [0, bisect_hi) (see first_crossing_one), with the
    state kept at lo. Every step from lo to mid is floor(w / 2) for the current width w, and
    after k halvings w is floor(W / 2^k) or ceil(W / 2^k) (W = bisect_hi): two step sizes per
    depth, f_k = floor(W / 2^(k+1)) and c_k = floor(ceil(W / 2^k) / 2), both equal to
    2 f_(k+1) + r with r in {0, 1, 2}. Their powers of A therefore come from the next depth's
    with one squaring and at most two products, and each bisection step costs one sandwich
    per group instead of a power from scratch.

    kk, ro (G,) int64 state sizes and readouts; G int; table (G, MAX_LOG2 + 1, 3, 3); D
    (G, 3, 3) the transients S0 - S*; n, h (G,); Lstar, target floats; bisect_hi int; stats (4,)
    (stats[2] counts the evaluations); tmp, T (3, 3) scratch. Returns lo.
    """
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
    groups laid out as arrays (structure of arrays), so that every step is one SIMD loop.

    G int; table (G, MAX_LOG2 + 1, 3, 3); D (G, 3, 3); n, h (G,); Lstar, target floats;
    bisect_hi int; stats (4,). Returns lo.
    """
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
    """X[g] <- A^steps X[g] A^steps^T (and the same for Y) from the binary digits of steps.

    k (G,) int64 state sizes; G int; table (G, MAX_LOG2 + 1, 3, 3) powers per group; steps
    int >= 0; X, Y (G, 3, 3); tmp, T (3, 3) scratch.
    """
    _apply_power_one(k, G, table, steps, X, tmp, T)
    _apply_power_one(k, G, table, steps, Y, tmp, T)


@njit(**_OPTS)
def _apply_power_one(k, G, table, steps, X, tmp, T):
    """X[g] <- A^steps X[g] A^steps^T from the binary digits of steps.

    k (G,) int64; G int; table (G, MAX_LOG2 + 1, 3, 3); steps int >= 0; X (G, 3, 3);
    tmp, T (3, 3) scratch.
    """
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


@njit(**_OPTS)
def _initial_moments(kind, has_ema, h, hp, c, n, mu0, v0, lr, batch, beta, gamma, ref_bias, kk,
                     ro, table, Sst, D):
    """Per group: the state size, the readout, the powers of A, the steady state S* and the
    initial transient D = S0 - S*.

    kind, has_ema, lr, batch, beta, gamma, ref_bias as in first_crossing_one; h, hp, c, n,
    mu0, v0 (G,) the groups; outputs kk, ro (G,) int64 (state size, readout index), table
    (G, MAX_LOG2 + 1, 3, 3) powers A^(2^j), Sst and D (G, 3, 3). Returns (stable, L*, E[L(0)]);
    stops at the first unstable group (stable False, the sums then partial).
    """
    G = h.shape[0]
    A = np.zeros((3, 3))
    b = np.zeros(3)
    Q = np.zeros((3, 3))
    Lstar = 0.0
    L0 = 0.0
    for g in range(G):
        k = fill_linear_form(kind, has_ema, h[g], hp[g], lr, beta, gamma, A, b)
        kk[g] = k
        r = k - 1 if has_ema else 0
        ro[g] = r
        power_table(k, A, table[g])
        if not is_stable(k, table[g]):
            return False, Lstar, L0
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
    return True, Lstar, L0


@njit(**_OPTS)
def _dominating(k, D, Sst, M):
    """M >= +-D positive semidefinite: |D| in closed form for k <= 2, S0 + S* = 2 S* + D
    otherwise.

    k int <= 3; D, Sst (3, 3) one group's transient and steady state; M (3, 3) written on its
    k x k block (left as it is, zero, when |D| = 0 for k = 2).
    """
    if k == 1:
        M[0, 0] = abs(D[0, 0])
    elif k == 2:
        a11 = D[0, 0]
        a12 = D[0, 1]
        a22 = D[1, 1]
        det = abs(a11 * a22 - a12 * a12)
        s11 = a11 * a11 + a12 * a12
        s12 = a11 * a12 + a12 * a22
        s22 = a12 * a12 + a22 * a22
        den = np.sqrt(s11 + s22 + 2.0 * det)
        if den > 0.0:
            M[0, 0] = (s11 + det) / den
            M[0, 1] = s12 / den
            M[1, 0] = s12 / den
            M[1, 1] = (s22 + det) / den
    else:
        for i in range(k):
            for j in range(k):
                M[i, j] = 2.0 * Sst[i, j] + D[i, j]


@njit(**_OPTS)
def _slope_constants(k, r, h, A, Pinv):
    """The envelope's constants of one group: c = w^T P^-1 w with w = sqrt(h/2) e_r, and c',
    the largest |eigenvalue| of the 2 x 2 form in (w, u = A^T w) that bounds one step's change.

    k int <= 3; r int the readout index; h float the curvature; A (3, 3) the group's map;
    Pinv (3, 3) P^-1 on its k x k block. Returns (c, c').
    """
    w2 = 0.5 * h
    ww = w2 * Pinv[r, r]
    uu = 0.0
    uw = 0.0
    for i in range(k):
        for j in range(k):
            uu += w2 * A[r, i] * Pinv[i, j] * A[r, j]
        uw += w2 * A[r, i] * Pinv[i, r]
    half = 0.5 * (uu - ww)
    rad = np.sqrt(max(0.25 * (uu + ww) * (uu + ww) - uw * uw, 0.0))
    return ww, max(abs(half + rad), abs(half - rad))


@njit(**_OPTS)
def _envelopes(kind, lr, h, kk, ro, table, Sst, D, M, P, cc, cp, n_modes, mc_abs, mc_mu,
               mc_gap):
    """The envelope of every group: P = sum_j A^jT W A^j (W = I, the momentum buffer weighed
    by lr^2), the modal coefficients, M >= +-D and the constants c, c'.

    kind int; lr float; h (G,); kk, ro (G,) int64; table (G, MAX_LOG2 + 1, 3, 3); Sst, D
    (G, 3, 3) from _initial_moments. Outputs: M, P (G, 3, 3); cc, cp (G,); n_modes (G,)
    int64; mc_abs, mc_mu, mc_gap (G, 9).
    """
    G = h.shape[0]
    Pinv = np.zeros((3, 3))
    Id = np.zeros((3, 3))
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
        _dominating(k, D[g], Sst[g], M[g])
        cc[g], cp[g] = _slope_constants(k, r, h[g], table[g, 0], Pinv)


@njit(**_OPTS)
def _first_power(G, kk, table, M, P, n, cc, n_modes, mc_abs, mc_mu, mc_gap, Lstar, target,
                 cap, tmp, T):
    """The smallest p with U(2^p) < target, or -1 when there is none up to 2^62 (or, with
    cap > 0, up to the first power of two >= cap).

    Arrays as in _envelope (G groups); Lstar, target floats; cap int; tmp, T (3, 3) scratch.
    """
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
    return jmax


@njit(**_OPTS)
def _lift(G, kk, table, M, P, n, cc, n_modes, mc_abs, mc_mu, mc_gap, Lstar, target, p_top,
          stats, tmp, T):
    """Binary lifting on the monotone envelope: the largest t < 2^(p_top + 1) with
    U(t) >= target, from the bits p_top, ..., 0 (none when p_top < 0: returns 0).

    Arrays as in _envelope (G groups); Lstar, target floats; p_top int; stats (4,) (stats[3]
    counts the lifting steps); tmp, T (3, 3) scratch.
    """
    Y = np.zeros((G, 3, 3))
    Yc = np.zeros((G, 3, 3))
    t = 0
    for g in range(G):
        for i in range(3):
            for j in range(3):
                Y[g, i, j] = M[g, i, j]
    for p in range(p_top, -1, -1):
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
    return t


@njit(**_OPTS)
def _certified_scan(G, kk, ro, table, D, M, P, n, h, cp, n_modes, mc_abs, mc_mu, mc_gap, Lstar,
                    target, cap, t_hi, stats, tmp, T):
    """The scan from a = 0: E[L(a)] exactly, then a jump over which the loss provably stays
    >= target (margin / slope), clipped at t_hi; returns the first a with E[L(a)] < target
    (or -4 at the cap).

    Arrays as in _envelope and _initial_moments (G groups); h, cp (G,); Lstar, target floats;
    cap, t_hi int; stats (4,) (stats[2] counts the exact evaluations); tmp, T (3, 3) scratch.
    """
    X = np.zeros((G, 3, 3))
    Y = np.zeros((G, 3, 3))
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


@njit(**_OPTS)
def first_crossing_one(form, lr, batch, beta, gamma, search, stats, cap=0):
    """Steps to target for one configuration.

    Returns t >= 0, or -1 (steady state >= target: unreachable), -2 (unstable), -3 (the target
    lies beyond 2^62 steps), -4 (method 0 with cap > 0: no crossing before ``cap``; the scan
    stops there, which is what a search for the best of many configurations needs; a negative
    cap skips the configuration). ``stats`` (size 4) receives L*, t_hi, the number of exact
    evaluations and the number of lifting steps.

    Parameters: form, a LinearForm (:mod:`nqm_mc.exact.lowering`; G groups; its own lr,
    batch, beta and gamma are not read); lr, batch, beta, gamma floats, this configuration's;
    search, a CrossingSearch (target, method 0 exact / 1 bisection, bisect_hi, ref_bias);
    stats (4,) float64 output; cap int.

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
    kind, has_ema = form.kind, form.has_ema
    h, hp, c, n, mu0, v0 = form.h, form.hp, form.c, form.n, form.mu0, form.v0
    target, method, bisect_hi, ref_bias = (search.target, search.method, search.bisect_hi,
                                           search.ref_bias)
    G = h.shape[0]
    tmp = np.zeros((3, 3))
    T = np.zeros((3, 3))
    kk = np.zeros(G, np.int64)
    ro = np.zeros(G, np.int64)
    table = np.zeros((G, MAX_LOG2 + 1, 3, 3))
    Sst = np.zeros((G, 3, 3))
    D = np.zeros((G, 3, 3))
    stable, Lstar, L0 = _initial_moments(kind, has_ema, h, hp, c, n, mu0, v0, lr, batch, beta,
                                         gamma, ref_bias, kk, ro, table, Sst, D)
    if not stable:
        return -2
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

    M = np.zeros((G, 3, 3))
    P = np.zeros((G, 3, 3))
    cc = np.zeros(G)
    cp = np.zeros(G)
    mc_abs = np.zeros((G, 9))
    mc_mu = np.zeros((G, 9))
    mc_gap = np.zeros((G, 9))
    n_modes = np.zeros(G, np.int64)
    _envelopes(kind, lr, h, kk, ro, table, Sst, D, M, P, cc, cp, n_modes, mc_abs, mc_mu, mc_gap)

    # t_hi: first t with U(t) < target. Find the first power of two first.
    jmax = _first_power(G, kk, table, M, P, n, cc, n_modes, mc_abs, mc_mu, mc_gap, Lstar,
                        target, cap, tmp, T)
    capped = False
    if jmax < 0:
        if cap <= 0:
            return -3
        capped = True  # U stays above the target to beyond cap: scan [0, cap) only
    t = _lift(G, kk, table, M, P, n, cc, n_modes, mc_abs, mc_mu, mc_gap, Lstar, target,
              jmax - 1 if not capped else -1, stats, tmp, T)
    t_hi = t + 1  # U(t) >= target here (U(0) >= L(0) >= target), U(t + 1) < target
    if capped:
        t_hi = cap
    stats[1] = t_hi
    return _certified_scan(G, kk, ro, table, D, M, P, n, h, cp, n_modes, mc_abs, mc_mu, mc_gap,
                           Lstar, target, cap, t_hi, stats, tmp, T)


@njit(cache=True, error_model="numpy", parallel=True)
def first_crossing_batch(form, lrs, batches, betas, gammas, search, out, out_stats, caps):
    """first_crossing_one over configurations, in parallel.

    form : LinearForm (G groups); search : CrossingSearch.
    lrs, batches, betas, gammas : (N,) float64, one configuration each.
    out : (N,) int64, receives the steps or status codes; out_stats : (N, 4) float64.
    caps : (N,) int64 (0 = none).
    """
    for i in prange(lrs.shape[0]):
        out[i] = first_crossing_one(form, lrs[i], batches[i], betas[i], gammas[i], search,
                                    out_stats[i], caps[i])
