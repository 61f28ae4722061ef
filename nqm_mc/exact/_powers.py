"""Powers by repeated squaring and infinite sums by doubling (numba kernels).

Powers A^(2^j) are taken by repeated squaring; infinite sums (steady state S*, the Lyapunov
matrix P) by doubling, sum_{j < 2T} = sum_{j < T} + A^T (sum_{j < T}) A^T', which adds
positive semidefinite terms only: no eigendecomposition (it fails at critical damping) and no
ill-conditioned linear solve.
"""

import numpy as np
from numba import njit

from nqm_mc.exact._linalg import _matmul, _max_abs, _sandwich, _sandwich_t

MAX_LOG2 = 62  # horizons up to 2^62 steps

_OPTS = dict(cache=True, error_model="numpy")


@njit(**_OPTS)
def _power_table2(table):
    """power_table for k = 2 in scalars (same operations, same order, same bits).

    table (n, 3, 3) with table[0] = A on entry; returns the count like power_table.
    """
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
    k int <= 3; A (3, 3); table (n, 3, 3), overwritten (n = MAX_LOG2 + 1 in the engine).
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
def _doubling_sum2(table, Q, out, transpose):
    """doubling_sum for k = 2 in scalars (the same operations in the same order as the
    general loops, so the same bits, without their bookkeeping).

    table (n, 3, 3) the powers A^(2^j); Q, out (3, 3); transpose bool.
    """
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
    changing. Assumes a stable A.

    k int <= 3; table (n, 3, 3) the powers A^(2^j) (power_table); Q (3, 3); out (3, 3)
    overwritten (entries beyond k copied from Q); transpose bool.
    """
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
