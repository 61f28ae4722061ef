"""Bounds on the transient of the expected loss (numba kernels): modal bounds from the
eigen-decomposition of each group's map, and the monotone upper envelope that brackets the
first crossing.
"""

import numpy as np
from numba import njit

from nqm_mc.exact._linalg import (
    KIND_SGD,
    _eig2,
    _inv_small,
    _inv_sym,
    _sandwich,
)
from nqm_mc.exact._powers import doubling_sum

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
                                               np.bool_(False)))
    return U


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
        doubling_sum(k, table[g], Id, P[g], np.bool_(True))
        nm = modal_coefficients(k, r, h[g], table[g, 0], D[g], mc_abs[g], mc_mu[g],
                                mc_gap[g])
        n_modes[g] = nm
        _inv_sym(k, P[g], Pinv)
        _dominating(k, D[g], Sst[g], M[g])
        cc[g], cp[g] = _slope_constants(k, r, h[g], table[g, 0], Pinv)
