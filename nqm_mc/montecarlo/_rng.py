"""Counter-based random numbers inside numba kernels: Philox4x32-10 and Box-Muller normals.

Streams are keyed by (seed, trajectory), never by thread: key = (seed mod 2^32, trajectory id),
counter = (index within the step, step, purpose, seed div 2^32). Any trajectory can therefore
be replayed alone, results do not depend on the thread count, block size or executor, and two
configurations run with the same seed see the same noise (common random numbers).

Normals (Box-Muller):
- float64: each uniform takes 53 bits (two 32-bit words), u in (0, 1) never 0, so |z| reaches
  sqrt(-2 ln 2^-54) ~ 8.65 sigma (a 32-bit uniform would cut the tails at ~6.7 sigma);
  one Philox call gives two normals.
- float32: each uniform takes 24 bits; |z| <= sqrt(-2 ln 2^-25) ~ 5.9 sigma; one call gives four.

The generator is checked bit for bit against the Random123 known-answer vectors and against
an independent implementation (randomgen's Philox4x32) in the tests.
"""

import math

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

PHILOX_M0 = np.uint64(0xD2511F53)
PHILOX_M1 = np.uint64(0xCD9E8D57)
PHILOX_W0 = np.uint32(0x9E3779B9)
PHILOX_W1 = np.uint32(0xBB67AE85)
MASK32 = np.uint64(0xFFFFFFFF)

PURPOSE_GRADIENT = 0
PURPOSE_INITIAL = 1
PURPOSE_FINITE_DATA = 2
PURPOSE_STUDENT = 3  # | (round << 8): Bailey's polar method, two attempts per Philox call
PURPOSE_SKIP = 4  # the skip-ahead sampler: counter step = index of the recorded interval

_OPTS = dict(cache=True, error_model="numpy", inline="always")


@njit(**_OPTS)
def philox4x32(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds on uint32 words; returns four uint32 words."""
    c0 = np.uint32(c0)
    c1 = np.uint32(c1)
    c2 = np.uint32(c2)
    c3 = np.uint32(c3)
    k0 = np.uint32(k0)
    k1 = np.uint32(k1)
    for _ in range(10):
        p0 = PHILOX_M0 * np.uint64(c0)
        p1 = PHILOX_M1 * np.uint64(c2)
        hi0 = np.uint32(p0 >> np.uint64(32))
        lo0 = np.uint32(p0 & MASK32)
        hi1 = np.uint32(p1 >> np.uint64(32))
        lo1 = np.uint32(p1 & MASK32)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = np.uint32(k0 + PHILOX_W0)
        k1 = np.uint32(k1 + PHILOX_W1)
    return c0, c1, c2, c3


CHUNK = 128  # Philox calls per generation chunk (the workspace is (4, CHUNK) uint32)

# Constants of the vectorisable log and sincos below. They use only +, -, *, /, sqrt and
# comparisons, without contraction into FMAs, so every operation is correctly rounded IEEE
# arithmetic: the normals are the same bits on every x86-64 or ARM machine, whatever its libm.
_LN2_HI = 6.93147180369123816490e-01  # ln 2 split so that e * _LN2_HI is exact for |e| < 2^11
_LN2_LO = 1.90821492927058770002e-10
_SQRT_HALF = 0.70710678118654752440
_HALF_PI = 1.57079632679489661923
_TWO53 = 9007199254740992.0
_F32 = np.float32
_LN2_HI32 = _F32(0.693145751953125)  # 12 significant bits: e * _LN2_HI32 exact
_LN2_LO32 = _F32(1.4286068203094172e-06)
_SQRT_HALF32 = _F32(0.70710678118654752440)
_HALF_PI32 = _F32(_HALF_PI)


_MANTISSA = np.int64(0x000FFFFFFFFFFFFF)
_EXP_HALF = np.int64(1022 << 52)  # the exponent field of [0.5, 1)


@intrinsic
def _bits_of_f64(typingctx, x):
    """The IEEE-754 bits of the float64 x as an int64 (an LLVM bitcast: no instruction; a loop
    using it still vectorises, unlike a view of an array)."""
    if x != types.float64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.IntType(64))

    return types.int64(types.float64), codegen


@intrinsic
def _f64_of_bits(typingctx, b):
    """The float64 whose IEEE-754 bits are the int64 b (inverse of _bits_of_f64)."""
    if b != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.DoubleType())

    return types.float64(types.int64), codegen


@njit(**_OPTS)
def _neg2log_reduced(u, e):
    """-2 ln(u 2^e) for float64 u in [0.5, 1) and an integer-valued float64 e."""
    small = u < _SQRT_HALF  # u in [sqrt(1/2), sqrt(2))
    u = u + u if small else u
    e = e - 1.0 if small else e
    # ln u = 2 atanh(s), s = (u - 1) / (u + 1), |s| <= 0.1716: the series to s^21 is exact
    # to 2e-17 relative
    s = (u - 1.0) / (u + 1.0)
    s2 = s * s
    p = 1.0 / 21.0
    p = p * s2 + 1.0 / 19.0
    p = p * s2 + 1.0 / 17.0
    p = p * s2 + 1.0 / 15.0
    p = p * s2 + 1.0 / 13.0
    p = p * s2 + 1.0 / 11.0
    p = p * s2 + 1.0 / 9.0
    p = p * s2 + 1.0 / 7.0
    p = p * s2 + 1.0 / 5.0
    p = p * s2 + 1.0 / 3.0
    lnu = 2.0 * s + 2.0 * s * s2 * p
    return -2.0 * ((e * _LN2_LO + lnu) + e * _LN2_HI)


@njit(**_OPTS)
def neg2log(u):
    """-2 ln(u) for float64 u in [2^-60, 1), within 2 ulp, vectorisable (no libm call)."""
    e = 0.0
    for k in (32, 16, 8, 4, 2, 1):  # u * 2^-e in [0.5, 1) by a branchless binary search
        small = u < 2.0 ** -k
        u = u * 2.0 ** k if small else u
        e = e - k if small else e
    return _neg2log_reduced(u, e)


@njit(**_OPTS)
def _neg2log_reduced_estrin(u, e):
    """_neg2log_reduced with the atanh series summed by Estrin's scheme (pairs of terms, then
    pairs of pairs, with s^2, s^4 and s^8) instead of Horner's: the same series and accuracy,
    other rounding, and about half the chain of dependent operations, so that a SIMD loop
    overlaps more elements."""
    small = u < _SQRT_HALF
    u = u + u if small else u
    e = e - 1.0 if small else e
    s = (u - 1.0) / (u + 1.0)
    s2 = s * s
    s4 = s2 * s2
    s8 = s4 * s4
    a0 = 1.0 / 3.0 + s2 * (1.0 / 5.0)
    a1 = 1.0 / 7.0 + s2 * (1.0 / 9.0)
    a2 = 1.0 / 11.0 + s2 * (1.0 / 13.0)
    a3 = 1.0 / 15.0 + s2 * (1.0 / 17.0)
    a4 = 1.0 / 19.0 + s2 * (1.0 / 21.0)
    p = (a0 + s4 * a1) + s8 * ((a2 + s4 * a3) + s8 * a4)
    lnu = 2.0 * s + 2.0 * s * s2 * p
    return -2.0 * ((e * _LN2_LO + lnu) + e * _LN2_HI)


@njit(**_OPTS)
def neg2log_bits(u):
    """-2 ln(u) for any positive normal float64 u < 1, within 2 ulp, vectorisable: the
    exponent and the mantissa are read from u's bits (no binary search as in neg2log) and the
    series is summed by Estrin's scheme (_neg2log_reduced_estrin). The Student-t sampler's
    log; the Gaussian sampler keeps neg2log's bits."""
    bits = _bits_of_f64(u)
    e = np.float64(np.int32(bits >> 52) - np.int32(1022))
    return _neg2log_reduced_estrin(_f64_of_bits((bits & _MANTISSA) | _EXP_HALF), e)


@njit(**_OPTS)
def cos_sin_turn(v):
    """(cos a, sin a) of the angle a = q pi/2 + (4 v - q - 1/2) pi/2, q = floor(4 v), for v in
    [0, 1): a runs uniformly over [-pi/4, 7pi/4) as v runs over [0, 1). Within 1 ulp."""
    x = 4.0 * v
    q = np.int32(x)
    r = (x - q - 0.5) * _HALF_PI  # |r| <= pi/4: Taylor series to r^15 / r^16, error < 5e-17
    r2 = r * r
    ps = -1.0 / 1307674368000.0
    ps = ps * r2 + 1.0 / 6227020800.0
    ps = ps * r2 - 1.0 / 39916800.0
    ps = ps * r2 + 1.0 / 362880.0
    ps = ps * r2 - 1.0 / 5040.0
    ps = ps * r2 + 1.0 / 120.0
    ps = ps * r2 - 1.0 / 6.0
    sn = r + r * r2 * ps
    pc = 1.0 / 20922789888000.0
    pc = pc * r2 - 1.0 / 87178291200.0
    pc = pc * r2 + 1.0 / 479001600.0
    pc = pc * r2 - 1.0 / 3628800.0
    pc = pc * r2 + 1.0 / 40320.0
    pc = pc * r2 - 1.0 / 720.0
    pc = pc * r2 + 1.0 / 24.0
    cs = 1.0 - 0.5 * r2 + r2 * r2 * pc
    odd = (q & 1) == 1  # rotate by q quarter turns
    c = -sn if odd else cs
    s = cs if odd else sn
    neg = (q & 2) == 2
    return (-c if neg else c), (-s if neg else s)


@njit(**_OPTS)
def neg2log_f32(u):
    """-2 ln(u) in float32 for u in [2^-31, 1), within a few ulp."""
    e = _F32(0.0)
    for k in (16, 8, 4, 2, 1):
        small = u < _F32(2.0 ** -k)
        u = u * _F32(2.0 ** k) if small else u
        e = e - _F32(k) if small else e
    small = u < _SQRT_HALF32
    u = u + u if small else u
    e = e - _F32(1.0) if small else e
    s = (u - _F32(1.0)) / (u + _F32(1.0))
    s2 = s * s
    p = _F32(1.0 / 11.0)
    p = p * s2 + _F32(1.0 / 9.0)
    p = p * s2 + _F32(1.0 / 7.0)
    p = p * s2 + _F32(1.0 / 5.0)
    p = p * s2 + _F32(1.0 / 3.0)
    lnu = _F32(2.0) * s + _F32(2.0) * s * s2 * p
    return _F32(-2.0) * ((e * _LN2_LO32 + lnu) + e * _LN2_HI32)


@njit(**_OPTS)
def cos_sin_turn_f32(v):
    """float32 version of cos_sin_turn (series to r^9 / r^10)."""
    x = _F32(4.0) * v
    q = np.int32(x)
    r = (x - _F32(q) - _F32(0.5)) * _HALF_PI32
    r2 = r * r
    ps = _F32(1.0 / 362880.0)
    ps = ps * r2 - _F32(1.0 / 5040.0)
    ps = ps * r2 + _F32(1.0 / 120.0)
    ps = ps * r2 - _F32(1.0 / 6.0)
    sn = r + r * r2 * ps
    pc = _F32(-1.0 / 3628800.0)
    pc = pc * r2 + _F32(1.0 / 40320.0)
    pc = pc * r2 - _F32(1.0 / 720.0)
    pc = pc * r2 + _F32(1.0 / 24.0)
    cs = _F32(1.0) - _F32(0.5) * r2 + r2 * r2 * pc
    odd = (q & 1) == 1
    c = -sn if odd else cs
    s = cs if odd else sn
    neg = (q & 2) == 2
    return (-c if neg else c), (-s if neg else s)


@njit(**_OPTS)
def _philox_chunk(base, c1, c2, c3, k0, k1, m, ws):
    """ws[:, i] <- Philox(counter (base + i, c1, c2, c3), key (k0, k1)), i < m (SIMD loop)."""
    for i in range(m):
        r0, r1, r2, r3 = philox4x32(np.uint32(base + i), c1, c2, c3, k0, k1)
        ws[0, i] = r0
        ws[1, i] = r1
        ws[2, i] = r2
        ws[3, i] = r3


@njit(**_OPTS)
def _u53(a, b):
    # 53 random bits -> (0, 1): ((a >> 5) 2^26 + (b >> 6) + 1/2) 2^-53; the int32 conversions
    # keep the loop vectorisable (AVX2 has no uint64 -> float64 conversion)
    return (np.float64(np.int32(a >> np.uint32(5))) * 67108864.0
            + np.float64(np.int32(b >> np.uint32(6))) + 0.5) * (1.0 / _TWO53)


@njit(**_OPTS)
def _v53(a, b):
    # 53 random bits -> [0, 1), exactly k 2^-53
    return (np.float64(np.int32(a >> np.uint32(5))) * 67108864.0
            + np.float64(np.int32(b >> np.uint32(6)))) * (1.0 / _TWO53)


@njit(**_OPTS)
def _v24(a):
    # 24 random bits -> [0, 1), exactly k 2^-24
    return _F32(np.int32(a >> np.uint32(8))) * _F32(5.9604645e-08)


@njit(**_OPTS)
def _u24(a):
    # 24 random bits -> (0, 1]: ((a >> 8) + 1/2) 2^-24, rounded to float32 (the top value
    # rounds to 1, which gives z = 0; the smallest is 2^-25, so |z| <= 5.9)
    return (_F32(np.int32(a >> np.uint32(8))) + _F32(0.5)) * _F32(5.9604645e-08)


# The chunk functions are compiled functions, not inlined at Numba's IR level: IR inlining into
# a caller's loop stops LLVM from vectorising them (3x slower).
@njit(cache=True, error_model="numpy")
def normals_chunk_f64(start, m, step, purpose, seed_hi, k0, k1, ws, dst):
    """dst[0:2m] <- normals 2 start .. 2 (start + m) - 1 of (step, purpose) for key (k0, k1).
    Pair i comes from counter (i, step, purpose, seed_hi): u (53 bits) from words 0-1, v (53
    bits) from words 2-3, (z_2i, z_2i+1) = sqrt(-2 ln u) (cos, sin)(angle of v)."""
    _philox_chunk(start, step, purpose, seed_hi, k0, k1, m, ws)
    w0, w1, w2, w3 = ws[0], ws[1], ws[2], ws[3]
    for i in range(m):
        rad = math.sqrt(neg2log(_u53(w0[i], w1[i])))
        c, s = cos_sin_turn(_v53(w2[i], w3[i]))
        dst[2 * i] = rad * c
        dst[2 * i + 1] = rad * s


@njit(cache=True, error_model="numpy")
def normals_chunk_f32(start, m, step, purpose, seed_hi, k0, k1, ws, dst):
    """dst[0:4m] <- float32 normals 4 start .. 4 (start + m) - 1: four per Philox call, from
    24-bit uniforms (u from words 0 and 2, v from words 1 and 3)."""
    _philox_chunk(start, step, purpose, seed_hi, k0, k1, m, ws)
    w0, w1, w2, w3 = ws[0], ws[1], ws[2], ws[3]
    for i in range(m):
        rad0 = math.sqrt(neg2log_f32(_u24(w0[i])))
        c0, s0 = cos_sin_turn_f32(_v24(w1[i]))
        rad1 = math.sqrt(neg2log_f32(_u24(w2[i])))
        c1, s1 = cos_sin_turn_f32(_v24(w3[i]))
        dst[4 * i] = rad0 * c0
        dst[4 * i + 1] = rad0 * s0
        dst[4 * i + 2] = rad1 * c1
        dst[4 * i + 3] = rad1 * s1


@njit(cache=True, error_model="numpy")
def fill_normals_f64(out, n, step, purpose, seed_hi, k0, k1, ws):
    """out[0:n] <- the first n normals of (step, purpose) for key (k0, k1); out must have room
    for n rounded up to even."""
    npairs = (n + 1) // 2
    for start in range(0, npairs, CHUNK):
        # out[2 start:] is a fresh view, so the chunk's loop indices are provably >= 0 (SIMD)
        normals_chunk_f64(start, min(CHUNK, npairs - start), step, purpose, seed_hi, k0, k1,
                          ws, out[2 * start:])


@njit(cache=True, error_model="numpy")
def fill_normals_f32(out, n, step, purpose, seed_hi, k0, k1, ws):
    """float32 version; out must have room for n rounded up to a multiple of 4."""
    nq = (n + 3) // 4
    for start in range(0, nq, CHUNK):
        normals_chunk_f32(start, min(CHUNK, nq - start), step, purpose, seed_hi, k0, k1, ws,
                          out[4 * start:])


_INV_LN2 = 1.44269504088896340736


@njit(**_OPTS)
def expm1_pos(y):
    """exp(y) - 1 for float64 y in [0, 44], within a few ulp, vectorisable (no libm call):
    y = k ln 2 + r with |r| <= ln(2) / 2, expm1(r) by its Taylor series to r^15 (error below
    1e-19 relative), then 2^k expm1(r) + (2^k - 1), 2^k written as its IEEE bits. The series
    is summed by Estrin's scheme (pairs of terms, combined with r^2, r^4 and r^8): half the
    chain of dependent operations of Horner's, so that a SIMD loop overlaps more elements."""
    k = np.int32(y * _INV_LN2 + 0.5)
    kf = np.float64(k)
    r = (y - kf * _LN2_HI) - kf * _LN2_LO
    r2 = r * r
    r4 = r2 * r2
    r8 = r4 * r4
    a0 = 0.5 + r * (1.0 / 6.0)  # p(r) = sum_j r^j / (j + 2)!, j = 0 .. 13
    a1 = 1.0 / 24.0 + r * (1.0 / 120.0)
    a2 = 1.0 / 720.0 + r * (1.0 / 5040.0)
    a3 = 1.0 / 40320.0 + r * (1.0 / 362880.0)
    a4 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0)
    a5 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0)
    a6 = 1.0 / 87178291200.0 + r * (1.0 / 1307674368000.0)
    p = ((a0 + r2 * a1) + r4 * (a2 + r2 * a3)) + r8 * ((a4 + r2 * a5) + r4 * a6)
    em = r + r2 * p
    two_k = _f64_of_bits(np.int64(k + np.int32(1023)) << 52)  # 2^k, exactly
    return two_k * em + (two_k - 1.0)


@njit(**_OPTS)
def _unit_of_u32(a):
    # the uint32 a -> (a + 1/2) 2^-31 - 1 in (-1, 1), exactly: a ^ 2^31 read as an int32 is
    # a - 2^31 (a signed conversion: AVX2 has no unsigned one)
    return (np.float64(np.int32(a ^ np.uint32(0x80000000))) + 0.5) * (1.0 / 2147483648.0)


@njit(**_OPTS)
def _polar_attempts(a0, b0, a1, b1):
    """The first of two attempts (u, v) from 32-bit words (u from a, v from b, both by
    _unit_of_u32) with w = u^2 + v^2 < 1, as (u, w); (NaN, 0.5) when both fail."""
    u0 = _unit_of_u32(a0)
    v0 = _unit_of_u32(b0)
    u1 = _unit_of_u32(a1)
    v1 = _unit_of_u32(b1)
    w0 = u0 * u0 + v0 * v0
    w1 = u1 * u1 + v1 * v1
    first = w0 < 1.0
    u = u0 if first else u1
    w = w0 if first else w1
    ok = first | (w1 < 1.0)
    return (u if ok else np.nan), (w if ok else 0.5)  # 0.5: a harmless argument for the logs


@njit(**_OPTS)
def _student_pair(a0, b0, a1, b1, nu):
    """Bailey's polar method on two attempts (see _polar_attempts): the first attempt with
    w = u^2 + v^2 < 1 gives t = u sqrt(nu (w^(-2/nu) - 1) / w), w^(-2/nu) - 1 =
    expm1(-2 ln(w) (1 / nu)); NaN when both attempts fail. The one-element form of
    _student_stages (the same operations: the same bits)."""
    u, w = _polar_attempts(a0, b0, a1, b1)
    return u * math.sqrt(nu * expm1_pos(neg2log_bits(w) * (1.0 / nu)) / w)


@njit(cache=True, error_model="numpy")
def _student_stages(m, nu, scale, w0, w1, w2, w3, sc, dst):
    """dst[i] <- _student_pair(w0[i], w1[i], w2[i], w3[i], nu) * scale, i < m (m <= CHUNK),
    in four SIMD loops through the float64 scratch sc (3, >= m): attempts, log, expm1, the
    variate. The same operations as one loop over _student_pair, but each loop is short
    enough for the processor to overlap many elements' long chains of dependent operations
    (the polynomials), which one long loop body does not allow: 1.7x faster."""
    su, sw, sy = sc[0], sc[1], sc[2]
    inv_nu = 1.0 / nu
    for i in range(m):
        u, w = _polar_attempts(w0[i], w1[i], w2[i], w3[i])
        su[i] = u
        sw[i] = w
    for i in range(m):
        sy[i] = neg2log_bits(sw[i]) * inv_nu
    for i in range(m):
        sy[i] = expm1_pos(sy[i])
    for i in range(m):
        dst[i] = su[i] * math.sqrt(nu * sy[i] / sw[i]) * scale


@njit(cache=True, error_model="numpy")
def _philox_gather(idx, m, c1, c2, c3, k0, k1, ws):
    """ws[:, j] <- Philox(counter (idx[j], c1, c2, c3), key (k0, k1)), j < m (SIMD loop)."""
    for j in range(m):
        r0, r1, r2, r3 = philox4x32(np.uint32(idx[j]), c1, c2, c3, k0, k1)
        ws[0, j] = r0
        ws[1, j] = r1
        ws[2, j] = r2
        ws[3, j] = r3


@njit(cache=True, error_model="numpy")
def student_t_range(dst, first, n, step, seed_hi, k0, k1, nu, ws, sc, idx):
    """dst[0:n] <- Student-t variates first .. first + n - 1 of ``step`` (see
    fill_student_t_ws), with the uint32 workspace ws (4, W), float64 scratch sc (4, W) and
    int64 scratch idx (>= n): W elements at a time."""
    scale = math.sqrt((nu - 2.0) / nu)
    purpose = np.uint32(PURPOSE_STUDENT)
    width = ws.shape[1]
    nfail = 0
    for lo in range(0, n, width):  # every element's first Philox call, chunk by chunk
        m = min(width, n - lo)
        _philox_chunk(first + lo, step, purpose, seed_hi, k0, k1, m, ws)
        out = dst[lo:]
        _student_stages(m, nu, scale, ws[0], ws[1], ws[2], ws[3], sc, out)
        su = sc[0]
        for i in range(m):  # the elements whose two attempts failed, (1 - pi/4)^2 = 4.6 %
            if su[i] != su[i]:
                idx[nfail] = first + lo + i
                nfail += 1
    rnd = 1
    while nfail > 0:  # their next rounds, again a chunk of them at a time
        purpose = np.uint32(PURPOSE_STUDENT | (rnd << 8))
        left = 0
        for lo in range(0, nfail, width):
            m = min(width, nfail - lo)
            at = idx[lo:]
            _philox_gather(at, m, step, purpose, seed_hi, k0, k1, ws)
            x = sc[3]
            _student_stages(m, nu, 1.0, ws[0], ws[1], ws[2], ws[3], sc, x)
            for j in range(m):
                if x[j] == x[j]:
                    dst[at[j] - first] = x[j] * scale
                else:
                    idx[left] = at[j]
                    left += 1
        nfail = left
        rnd += 1


STUDENT_WIDTH = 4 * CHUNK  # elements per chunk of the Student-t sampler's SIMD loops


def student_scratch(n):
    """The scratch arrays (ws, sc, idx) of student_t_range for up to n elements."""
    return (np.empty((4, STUDENT_WIDTH), np.uint32), np.empty((4, STUDENT_WIDTH)),
            np.empty(max(n, 1), np.int64))


@njit(cache=True, error_model="numpy")
def fill_student_t_ws(out, n, step, seed_hi, k0, k1, nu, ws):
    """out[0:n] <- Student-t variates with nu > 2 degrees of freedom, scaled to unit variance,
    by Bailey's polar method: (u, v) uniform on (-1, 1)^2 until w = u^2 + v^2 < 1, then
    t = u sqrt(nu (w^(-2/nu) - 1) / w). Element i draws from counters (i, step,
    PURPOSE_STUDENT | round << 8, seed_hi), two attempts per call (32-bit uniforms), so any
    element is replayable alone. Every element's first call is made for a chunk of elements at
    once and the variates computed in short branch-free SIMD loops (ln and expm1 by the
    vectorisable, libm-free functions of this module: the same bits on every machine); the
    elements whose two first attempts failed (4.6 %) are listed and draw their next rounds
    together, in the same SIMD loops. ws, the (4, CHUNK) uint32 workspace, is not used (the
    sampler allocates its own, wider)."""
    w = min(STUDENT_WIDTH, max(n, 1))
    student_t_range(out, np.int64(0), n, step, seed_hi, k0, k1, nu, np.empty((4, w), np.uint32),
                    np.empty((4, w)), np.empty(max(n, 1), np.int64))


@njit(cache=True, error_model="numpy")
def fill_student_t(out, n, step, seed_hi, k0, k1, nu):
    """fill_student_t_ws with its own workspace."""
    fill_student_t_ws(out, n, step, seed_hi, k0, k1, nu, np.empty((4, CHUNK), np.uint32))


@njit(cache=True, error_model="numpy")
def sample_without_replacement(perm, batch, step, seed_hi, k0, k1):
    """Move a uniform random batch of ``batch`` distinct entries of perm to perm[0:batch] by a
    partial Fisher-Yates shuffle (perm stays a permutation). Position j swaps with
    j + floor(w (n - j) / 2^32), w the j-th 32-bit word of counters (j // 4, step,
    PURPOSE_FINITE_DATA, seed_hi); the bias of this multiply-shift is below n / 2^32."""
    n = perm.shape[0]
    r0 = r1 = r2 = r3 = np.uint32(0)
    for j in range(batch):
        if j % 4 == 0:
            r0, r1, r2, r3 = philox4x32(np.uint32(j // 4), step,
                                        np.uint32(PURPOSE_FINITE_DATA), seed_hi, k0, k1)
        w = r0 if j % 4 == 0 else (r1 if j % 4 == 1 else (r2 if j % 4 == 2 else r3))
        k = j + np.int64((np.uint64(w) * np.uint64(n - j)) >> np.uint64(32))
        tmp = perm[j]
        perm[j] = perm[k]
        perm[k] = tmp


def workspace():
    """The scratch array the fill functions need (one per thread)."""
    return np.empty((4, CHUNK), np.uint32)


@njit(cache=True)
def philox_block(c0, c1, c2, c3, k0, k1, n, out):
    """Raw output for counters (c0 + i, c1, c2, c3), i < n, into out (n, 4) uint32 (tests)."""
    for i in range(n):
        r0, r1, r2, r3 = philox4x32(np.uint32(c0 + i), c1, c2, c3, k0, k1)
        out[i, 0] = r0
        out[i, 1] = r1
        out[i, 2] = r2
        out[i, 3] = r3


def split_seed(seed):
    """seed (0 <= seed < 2^64) -> (low 32 bits, high 32 bits)."""
    seed = int(seed)
    return seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF


def normals(seed, trajectory, step, n, purpose=PURPOSE_GRADIENT, dtype=np.float64):
    """The n normals that trajectory ``trajectory`` draws at ``step`` (for tests and replay)."""
    lo, hi = split_seed(seed)
    out = np.empty(n + 4, dtype=dtype)
    f = fill_normals_f64 if dtype == np.float64 else fill_normals_f32
    f(out, n, np.uint32(step), np.uint32(purpose), np.uint32(hi), np.uint32(lo),
      np.uint32(trajectory), workspace())
    return out[:n]
