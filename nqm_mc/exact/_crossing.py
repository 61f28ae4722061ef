"""Steps to target (numba kernels): the exact first crossing and the batch scan over
configurations, over the bounds of :mod:`~nqm_mc.exact._bounds` (modal bounds, monotone
envelopes) and the reference bisection of :mod:`~nqm_mc.exact._bisection`.
"""

import numpy as np
from numba import njit

from nqm_mc.exact._bisection import _bisect, _bisect2
from nqm_mc.exact._bounds import (  # noqa: F401 (exact._kernels re-exports them)
    MODAL_MAX_COND,
    _dominating,
    _envelope,
    _envelopes,
    _slope_constants,
    modal_bound,
    modal_coefficients,
)
from nqm_mc.exact._linalg import (
    _sandwich,
    _sandwich2_inplace,
    fill_linear_form,
)
from nqm_mc.exact._moments import is_stable
from nqm_mc.exact._powers import MAX_LOG2, doubling_sum, power_table

_OPTS = dict(cache=True, error_model="numpy")


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
            doubling_sum(k, table[g], Q, Sst[g], np.bool_(False))
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
                                                   mc_gap[g], tp, np.bool_(False)))
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
                                                       mc_gap[g], float(a), np.bool_(True)))
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


@njit(cache=True, error_model="numpy", nogil=True)
def first_crossing_range(form, lrs, batches, betas, gammas, search, out, out_stats, caps, lo,
                         hi):
    """first_crossing_one for configurations lo .. hi - 1 (one chunk of a batch; threads run
    the chunks: :func:`nqm_mc._chunks.run_chunks`).

    form : LinearForm (G groups); search : CrossingSearch.
    lrs, batches, betas, gammas : (N,) float64, one configuration each.
    out : (N,) int64, receives the steps or status codes; out_stats : (N, 4) float64.
    caps : (N,) int64 (0 = none). lo, hi : int, 0 <= lo <= hi <= N.
    """
    for i in range(lo, hi):
        out[i] = first_crossing_one(form, lrs[i], batches[i], betas[i], gammas[i], search,
                                    out_stats[i], caps[i])
