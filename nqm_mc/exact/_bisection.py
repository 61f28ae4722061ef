"""The reference notebook's bisection for steps to target (numba kernels), with the state
kept at the lower end and the powers of the map reused across depths.
"""

import numpy as np
from numba import njit

from nqm_mc.exact._linalg import (
    _matmul,
    _sandwich,
)

_OPTS = dict(cache=True, error_model="numpy")


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
