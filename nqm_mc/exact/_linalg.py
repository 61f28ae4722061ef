"""Small linear algebra of the exact engine (numba kernels: arrays in, arrays out, no checks).

Per group of directions the optimizer is linear, x(t+1) = A_t x(t) + b_t xi(t), with a state
x = (theta[, m][, ema]) of size k <= 3 held in 3 x 3 / 3 scratch arrays: the (A, b) of each
optimizer (:func:`fill_linear_form`), products and sandwiches M X M^T on k x k blocks (with
scalar k = 2 versions doing the same operations in the same order), a Gauss-Jordan inverse,
and closed-form eigen/inverse for the modal bounds.
"""

import numpy as np
from numba import njit

from nqm_mc.spec.codes import KIND_HEAVY_BALL, KIND_NESTEROV, KIND_SGD  # noqa: F401

_OPTS = dict(cache=True, error_model="numpy")


@njit(**_OPTS)
def fill_linear_form(kind, has_ema, h, hp, lr, beta, gamma, A, b):
    """Write the (A, b) of one group into 3x3 / 3 scratch arrays; return the state size k.

    hp = h^-p (the preconditioner); the preconditioned gradient is hp * (h theta + xi).

    Parameters: kind (int, KIND_*), has_ema (bool), h, hp, lr, beta, gamma (floats: the
    group's curvature and h^-p, the learning rate, momentum and EMA decay); A (3, 3) and
    b (3,) are overwritten (entries beyond k are zero).
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
    """out = X Y on the leading k x k blocks (k int <= 3; X, Y, out (3, 3), out must not
    alias X or Y)."""
    for i in range(k):
        for j in range(k):
            s = 0.0
            for m in range(k):
                s += X[i, m] * Y[m, j]
            out[i, j] = s


@njit(**_OPTS)
def _sandwich(k, M, X, tmp, out):
    """out = M X M^T on the leading k x k blocks.

    k int <= 3; M, X, tmp, out (3, 3): tmp is scratch, out must not alias M or X.
    """
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
def _sandwich2_inplace(M, X):
    """X <- M X M^T for k = 2 (the bits of _sandwich); M, X (>= 2, >= 2)."""
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
def _sandwich_t(k, M, X, tmp, out):
    """out = M^T X M on the leading k x k blocks (k int <= 3; M, X, tmp, out (3, 3), tmp
    scratch)."""
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
    """Largest |X[i, j]| over the leading k x k block of X (3, 3); NaN when any is NaN."""
    s = 0.0
    for i in range(k):
        for j in range(k):
            a = abs(X[i, j])
            if a > s or a != a:
                s = a
    return s


@njit(**_OPTS)
def _inv_sym(k, P, out):
    """Inverse of a small symmetric positive definite matrix (Gauss-Jordan).

    k int <= 3; P (3, 3) read on its k x k block; out (3, 3) receives the inverse there.
    """
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
def _eig2(k, A):
    """Eigenvalues and unit eigenvectors of a real 1x1 or 2x2 matrix in closed form (what
    LAPACK's geev would give up to scaling, without its call overhead).

    k int in {1, 2}; A (>= k, >= k) real. Returns lam (k,) and V (k, k) complex128, the
    eigenvectors in the columns.
    """
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
    """Inverse of a complex k x k matrix (k <= 3) by the adjugate; False when singular.

    V (k, k) complex128; out (k, k) complex128 receives the inverse.
    """
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
