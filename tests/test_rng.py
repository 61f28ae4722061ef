"""The counter-based generator: bit for bit, and the normals' moments and tails."""

import math

import numpy as np
import pytest
from scipy import stats

from nqm_mc import _rng

KAT = [  # Random123 known-answer vectors: counter, key -> output
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("ctr,key,expected", KAT)
def test_philox_known_answers(ctr, key, expected):
    out = np.zeros((1, 4), np.uint32)
    _rng.philox_block(*(np.uint32(c) for c in ctr), *(np.uint32(k) for k in key), 1, out)
    assert tuple(int(x) for x in out[0]) == expected


def test_philox_matches_randomgen_bit_for_bit():
    randomgen = pytest.importorskip("randomgen")
    rs = np.random.default_rng(7)
    for _ in range(5):
        ctr = rs.integers(0, 2 ** 32 - 2000, size=4, dtype=np.uint64)
        key = rs.integers(0, 2 ** 32, size=2, dtype=np.uint64)
        bg = randomgen.Philox(number=4, width=32, key=np.array([key[0] | (key[1] << 32)]),
                              counter=np.array([ctr[0] | (ctr[1] << 32),
                                                ctr[2] | (ctr[3] << 32)]))
        ref = bg.random_raw(4 * 1000).astype(np.uint32).reshape(1000, 4)
        out = np.zeros((1000, 4), np.uint32)
        # randomgen increments the counter before each block: its block i is ours at c0 + i + 1
        _rng.philox_block(np.uint32(ctr[0] + 1), np.uint32(ctr[1]), np.uint32(ctr[2]),
                          np.uint32(ctr[3]), np.uint32(key[0]), np.uint32(key[1]), 1000, out)
        np.testing.assert_array_equal(out, ref)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normal_moments(dtype):
    n = 2_000_000
    z = _rng.normals(seed=123, trajectory=5, step=9, n=n, dtype=dtype).astype(np.float64)
    # exact standard errors of the sample moments of N(0, 1); 6 sigma for 4 comparisons
    assert abs(z.mean()) < 6 / math.sqrt(n)
    assert abs(z.var() - 1) < 6 * math.sqrt(2 / n)
    assert abs(stats.skew(z)) < 6 * math.sqrt(6 / n)
    assert abs(stats.kurtosis(z)) < 6 * math.sqrt(24 / n)
    # distribution: Kolmogorov-Smirnov at a 1e-5 level
    assert stats.kstest(z[:200_000], "norm").pvalue > 1e-5


def test_tails_float64_not_cut_at_32_bit_limit():
    # 53-bit uniforms: the smallest u is 2^-54, so |z| reaches 8.65 sigma; with a 32-bit uniform
    # the largest |z| would be sqrt(-2 ln 2^-33) = 6.76. Check the map at the extremes and the
    # tail frequency beyond 4 sigma.
    u_min = 0.5 / 2 ** 53
    assert math.sqrt(-2 * math.log(u_min)) > 8.6
    n = 4_000_000
    z = _rng.normals(seed=1, trajectory=0, step=0, n=n)
    p4 = 2 * stats.norm.sf(4)
    k = np.sum(np.abs(z) > 4)
    assert abs(k - n * p4) < 6 * math.sqrt(n * p4)


def test_streams_differ_by_trajectory_step_and_purpose():
    a = _rng.normals(1, 0, 0, 64)
    assert not np.array_equal(a, _rng.normals(1, 1, 0, 64))
    assert not np.array_equal(a, _rng.normals(1, 0, 1, 64))
    assert not np.array_equal(a, _rng.normals(1, 0, 0, 64, purpose=_rng.PURPOSE_INITIAL))
    assert not np.array_equal(a, _rng.normals(1 + 2 ** 32, 0, 0, 64))
    np.testing.assert_array_equal(a, _rng.normals(1, 0, 0, 64))
