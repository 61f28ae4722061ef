"""The non-Gaussian noise samplers on the windowed step kernel: the same bits as the full pass.

Student-t and finite-data noise with a linear rule run on the windowed kernel, which draws the
noise chunk of directions by chunk; rules that need the whole gradient (clipping, adaptive
rules) run the full pass. Both must give the same bits, whatever the thread count and block
size. The samplers' laws are tested in ``test_adaptive.py``.
"""

import math

import numpy as np
import pytest
from numba import njit

from nqm_mc import NQM, SGD, HeavyBall, simulate
from nqm_mc.montecarlo import _rng
from nqm_mc.montecarlo._kernels import _finite_chunk
from nqm_mc.spec import schedules as S
from nqm_mc.spec.noise import FiniteData, StudentT

FIELDS = ("mean", "paths", "band_mean_square", "hitting_times", "mean_theta")
KEY = (np.uint32(7), np.uint32(3), np.uint32(1), np.uint32(2))  # step, seed_hi, k0, k1


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("law", ["student_t", "finite_data"])
def test_windowed_noise_is_the_full_pass_bit_for_bit(law, dtype):
    """d = 2100 (several loss chunks and a ragged one), a batch schedule (finite data draws
    batches of several sizes within a window), EMA and a target: the linear rule on the
    windowed kernel gives the bits of the same rule on the full pass (a clipping norm that
    never binds sends it there)."""
    model = NQM.paper(2100)
    noise = StudentT(4.0) if law == "student_t" else FiniteData(300, seed=2)
    batch = S.PiecewiseConstantBatch([7, 40], [4, 16, 9])
    opt = HeavyBall(0.3, 0.8, ema=0.9)
    kw = dict(seed=4, record="all", keep_paths=3, target=1.0, dtype=dtype, progress=False,
              noise=noise, method="step")
    fast = simulate(model, opt, batch, 70, 5, **kw)
    full = simulate(model, opt.with_(clip_norm=1e12), batch, 70, 5, **kw)
    for f in FIELDS:
        assert np.array_equal(getattr(fast, f), getattr(full, f)), f
    other = simulate(model, opt, batch, 70, 5, **{**kw, "seed": 5})
    assert not np.array_equal(fast.paths, other.paths)  # the comparison can fail


@pytest.mark.parametrize("noise", [StudentT(5.0), FiniteData(200, seed=1)],
                         ids=["student_t", "finite_data"])
def test_noise_bits_do_not_depend_on_threads_or_block_size(noise):
    model = NQM.paper(700)
    kw = dict(seed=11, record="log", n_records=12, keep_paths=9, progress=False, noise=noise,
              method="step")
    one = simulate(model, SGD(0.4), 16, 60, 9, threads=1, block_size=1, **kw)
    two = simulate(model, SGD(0.4), 16, 60, 9, threads=2, block_size=4, **kw)
    for f in FIELDS:
        assert np.array_equal(getattr(one, f), getattr(two, f)), f


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_student_t_range_in_pieces_is_one_fill(dtype):
    """Elements first .. first + n - 1 drawn by student_t_range, in pieces of any size and
    with any chunk width (a narrow one: many chunks and many elements in later rounds), are
    the bits of one fill_student_t; the element offset matters (a shifted piece differs)."""
    n, nu = 3000, 4.0
    whole = np.empty(n, dtype)
    _rng.fill_student_t(whole, n, *KEY, nu)
    for width, piece in ((_rng.STUDENT_WIDTH, 700), (8, 1), (8, 37), (128, 512)):
        ws = np.empty((4, width), np.uint32)
        sc = np.empty((4, width))
        idx = np.empty(piece, np.int64)
        got = np.full(n, np.nan, dtype)
        for lo in range(0, n, piece):
            m = min(piece, n - lo)
            _rng.student_t_range(got[lo:], lo, m, *KEY, nu, ws, sc, idx)
        assert np.array_equal(got, whole), (width, piece)
    shifted = np.empty(100, dtype)
    _rng.student_t_range(shifted, 1, 100, *KEY, nu, ws, sc, np.empty(100, np.int64))
    assert not np.array_equal(shifted, whole[:100])


def test_student_t_later_rounds_are_drawn():
    """With a chunk of 8, some elements need a third round or later; they are finite and
    equal to the one-element replay (counter round r for element i)."""
    n, nu = 20_000, 6.0
    z = np.empty(n)
    _rng.fill_student_t(z, n, *KEY, nu)
    words = np.empty((n, 4), np.uint32)
    step, seed_hi, k0, k1 = KEY
    rounds = np.zeros(n, np.int64)
    x = np.full(n, np.nan)
    todo = np.arange(n)
    r = 0
    while todo.size:
        out = np.empty((n, 4), np.uint32)
        _rng.philox_block(0, step, np.uint32(_rng.PURPOSE_STUDENT | (r << 8)), seed_hi, k0, k1,
                          n, out)
        words[todo] = out[todo]
        uv = (words[todo].astype(np.float64) + 0.5) / 2 ** 31 - 1.0
        w0 = uv[:, 0] ** 2 + uv[:, 1] ** 2
        w1 = uv[:, 2] ** 2 + uv[:, 3] ** 2
        u = np.where(w0 < 1, uv[:, 0], uv[:, 2])
        w = np.where(w0 < 1, w0, w1)
        ok = (w0 < 1) | (w1 < 1)
        x[todo[ok]] = u[ok] * np.sqrt(nu * np.expm1(-np.log(w[ok]) * 2 / nu) / w[ok])
        rounds[todo] = r
        todo = todo[~ok]
        r += 1
    assert rounds.max() >= 2  # the test reaches third rounds
    scale = math.sqrt((nu - 2) / nu)
    np.testing.assert_allclose(z, x * scale, rtol=1e-13, atol=1e-300)


def test_neg2log_bits_agrees_with_neg2log_and_libm():
    """The Student-t sampler's log (the exponent read from the float's bits, the series summed
    by Estrin's scheme) against the Gaussian sampler's (binary search, Horner) and numpy's,
    over the whole range the samplers use and every power of two in it (and its neighbours):
    within 2 ulp of each, and a planted error of 3 ulp is caught."""

    @njit
    def both(w, a, b):
        for i in range(w.shape[0]):
            a[i] = _rng.neg2log(w[i])
            b[i] = _rng.neg2log_bits(w[i])

    rng = np.random.default_rng(3)
    w = np.r_[2.0 ** -np.arange(1, 61), np.nextafter(2.0 ** -np.arange(1, 61), 1.0),
              np.nextafter(2.0 ** -np.arange(1, 61), 0.0)[1:], 1 - 2.0 ** -53,
              2.0 ** -rng.uniform(0, 60, 100_000), rng.random(100_000)]
    w = w[(w >= 2.0 ** -60) & (w < 1)]
    a, b = np.empty_like(w), np.empty_like(w)
    both(w, a, b)
    ulp = np.spacing(np.abs(a))

    def within(x, ref, k):
        return np.all(np.abs(x - ref) <= k * np.spacing(np.abs(ref)))
    assert within(b, a, 2) and within(b, -2 * np.log(w), 2)
    assert not within(b + 3 * ulp, a, 2)  # the bound is tight: an answer 3 ulp off fails it
    assert np.mean(a == b) > 0.5  # mostly the same bits: only the rounding order differs


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_finite_chunk_is_the_row_by_row_sum(dtype):
    """Eight, four, then one rows per pass: the bits of adding the batch's rows one after the
    other in the data's dtype, then multiplying by f, for every remainder of B mod 8."""
    rng = np.random.default_rng(0)
    data = rng.standard_normal((60, 900)).astype(dtype)
    z = np.empty(900, dtype)
    for batch in range(1, 22):
        rows = rng.permutation(60)[:batch].astype(np.int64)
        lo, n = 130, 700
        _finite_chunk(data, rows, batch, lo, n, z)
        ref = np.zeros(n, dtype)
        for j in rows:
            ref = ref + data[j, lo:lo + n]
        f = math.sqrt((60 - 1.0) / (60 - batch)) / math.sqrt(float(batch))
        ref = (ref.astype(np.float64) * f).astype(dtype)
        assert np.array_equal(z[:n], ref), batch
        if batch > 1:  # power: another order of the rows changes some bits
            alt = np.zeros(n, dtype)
            for j in rows[::-1]:
                alt = alt + data[j, lo:lo + n]
            alt = (alt.astype(np.float64) * f).astype(dtype)
            if batch >= 3:
                assert not np.array_equal(alt, ref)
