"""The counter-based generator: bit for bit, and the normals' moments and tails."""

import math

import numpy as np
import pytest
from numba import njit
from scipy import stats

from nqm_mc.montecarlo import _rng

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


@njit
def _elementwise64(u):
    a, c, s = np.empty_like(u), np.empty_like(u), np.empty_like(u)
    for i in range(u.size):
        a[i] = _rng.neg2log(u[i])
        c[i], s[i] = _rng.cos_sin_turn(u[i])
    return a, c, s


@njit
def _elementwise32(u):
    a, c, s = np.empty_like(u), np.empty_like(u), np.empty_like(u)
    for i in range(u.size):
        a[i] = _rng.neg2log_f32(u[i])
        c[i], s[i] = _rng.cos_sin_turn_f32(u[i])
    return a, c, s


def test_polynomial_log_and_sincos_match_libm_float64():
    rs = np.random.default_rng(0)
    # uniforms over the whole range the generator produces, including the extremes
    u = np.concatenate([rs.random(200_000), 2.0 ** -rs.uniform(0, 54, 50_000),
                        [0.5 / 2 ** 53, 2.0 ** -54, 0.5, math.sqrt(0.5), 1 - 2.0 ** -53]])
    a, c, s = _elementwise64(u)
    ref = -2 * np.log(u)
    live = ref > 0
    assert np.max(np.abs(a[live] / ref[live] - 1)) < 4e-16
    assert np.max(np.abs(a[~live]), initial=0.0) < 1e-15
    v = np.minimum(u, 1 - 2.0 ** -53)
    ang = (4 * v - 0.5) * (np.pi / 2)  # the documented angle map
    assert np.max(np.abs(c - np.cos(ang))) < 1e-15
    assert np.max(np.abs(s - np.sin(ang))) < 1e-15


def test_polynomial_log_and_sincos_float32():
    u = np.random.default_rng(1).random(200_000).astype(np.float32)
    u = np.concatenate([u, np.float32([2.0 ** -25, 0.5, 0.70710677, 1 - 2.0 ** -24])])
    a, c, s = _elementwise32(u)
    assert a.dtype == np.float32 and c.dtype == np.float32
    u64 = u.astype(np.float64)
    ref = -2 * np.log(u64)
    assert np.max(np.abs(a - ref) / np.maximum(ref, 1e-6)) < 3e-6
    ang = (4 * u64 - 0.5) * (np.pi / 2)
    assert np.max(np.abs(c - np.cos(ang))) < 1e-6
    assert np.max(np.abs(s - np.sin(ang))) < 1e-6


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_normals_are_the_documented_transform_of_philox_words(dtype):
    """Pair/quad i of (seed, trajectory, step) from Philox counter (i, step, purpose, seed_hi)."""
    seed, traj, step, n = 3 + (5 << 32), 7, 11, 1000
    z = _rng.normals(seed, traj, step, n, dtype=dtype).astype(np.float64)
    words = np.zeros((n, 4), np.uint32)
    _rng.philox_block(np.uint32(0), np.uint32(step), np.uint32(0), np.uint32(5), np.uint32(3),
                      np.uint32(traj), n, words)
    w = words.astype(np.float64)
    if dtype == np.float64:
        u = (np.floor(w[:, 0] / 32) * 2 ** 26 + np.floor(w[:, 1] / 64) + 0.5) / 2 ** 53
        v = (np.floor(w[:, 2] / 32) * 2 ** 26 + np.floor(w[:, 3] / 64)) / 2 ** 53
        rad, ang = np.sqrt(-2 * np.log(u)), (4 * v - 0.5) * np.pi / 2
        ref = np.stack([rad * np.cos(ang), rad * np.sin(ang)], 1).ravel()[:n]
        np.testing.assert_allclose(z, ref, rtol=1e-13, atol=1e-14)
    else:
        u = (np.floor(w[:, [0, 2]] / 256) + 0.5) / 2 ** 24
        v = np.floor(w[:, [1, 3]] / 256) / 2 ** 24
        rad, ang = np.sqrt(-2 * np.log(u)), (4 * v - 0.5) * np.pi / 2
        ref = np.stack([rad[:, 0] * np.cos(ang[:, 0]), rad[:, 0] * np.sin(ang[:, 0]),
                        rad[:, 1] * np.cos(ang[:, 1]), rad[:, 1] * np.sin(ang[:, 1])],
                       1).ravel()[:n]
        np.testing.assert_allclose(z, ref, rtol=2e-6, atol=2e-6)
