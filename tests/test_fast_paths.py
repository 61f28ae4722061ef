"""The exact engine's scalar 2 x 2 fast paths give the bits of the general loops.

The general loops run on the leading k x k block of 3 x 3 arrays; the same 2 x 2 problem
embedded with a zero third row and column runs through them with k = 3, where every extra
term adds an exact zero (finite, nonzero inputs), so the general loops' bits for the 2 x 2
problem are those of k = 3 on the embedding. The fast paths (k = 2) must give exactly those.
"""

import numpy as np
import pytest

from nqm_mc.exact._linalg import _sandwich, _sandwich2_inplace
from nqm_mc.exact._powers import doubling_sum, power_table


def _embed(m):
    out = np.zeros((3, 3))
    out[:2, :2] = m
    return out


def _same_bits(a, b):
    """Bit-for-bit equal, except that a zero may differ in sign: a power that underflows to
    zero keeps the sign of its last product in the fast path, while the general loop's
    accumulator (started at +0.0) turns -0.0 into +0.0. Equal as numbers either way."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    nz = (a != 0) | (b != 0)
    return np.array_equal(a == 0, b == 0) and np.array_equal(a[nz].view(np.int64),
                                                                b[nz].view(np.int64))


@pytest.mark.parametrize("seed", range(20))
def test_sandwich_and_powers_and_doubling_sums(seed):
    rs = np.random.default_rng(seed)
    # a stable 2 x 2 map (spectral radius < 1) like a momentum method's, and a PSD Q
    A = rs.uniform(-0.6, 0.6, (2, 2)) + np.diag(rs.uniform(0.1, 0.3, 2))
    A *= 0.9 / max(np.abs(np.linalg.eigvals(A)).max(), 0.9)
    U = rs.standard_normal((2, 2))
    Q = U @ U.T
    M3, Q3 = _embed(A), _embed(Q)
    tmp, fast, slow = np.zeros((3, 3)), np.zeros((3, 3)), np.zeros((3, 3))
    _sandwich(2, M3, Q3, tmp, fast)
    _sandwich(3, M3, Q3, tmp, slow)
    assert _same_bits(fast[:2, :2], slow[:2, :2])
    X = Q3.copy()
    _sandwich2_inplace(M3, X)
    assert _same_bits(X[:2, :2], slow[:2, :2])
    t2, t3 = np.zeros((40, 3, 3)), np.zeros((40, 3, 3))
    n2, n3 = power_table(2, M3, t2), power_table(3, M3, t3)
    assert n2 == n3 and _same_bits(t2[:n2, :2, :2], t3[:n3, :2, :2])
    for transpose in (False, True):
        o2, o3 = np.zeros((3, 3)), np.zeros((3, 3))
        doubling_sum(2, t2[:n2], Q3, o2, transpose)
        doubling_sum(3, t3[:n3], Q3, o3, transpose)
        assert _same_bits(o2[:2, :2], o3[:2, :2]), transpose


def test_the_comparison_can_fail():
    """Power: a one-ulp change of one entry is seen."""
    a = np.array([[0.5, 0.25], [0.125, 0.75]])
    b = a.copy()
    b[1, 0] = np.nextafter(b[1, 0], 1.0)
    assert not _same_bits(a, b)
