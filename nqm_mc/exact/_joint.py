"""Two-time moments of the exact engine (numba kernel): the covariance of the loss between
two steps.

Per group the state x = (theta[, m][, e]) moves as x(t+1) = A_t x(t) + b_t xi(t). The kernel
carries the mean mu and the *centred* covariance P of the state,

    mu' = A mu,   P' = A P A^T + (c / B) b b^T,

and, for every source step s, the vector u_s(t) = Cov(x(t), x_r(s)) = Phi(t, s) P(s) e_r
(e_r the readout's unit vector), which moves with the mean's map: u' = A u. Its readout
entry is the cross-covariance c(s, t) = Cov(x_r(s), x_r(t)). The readout pair is jointly
Gaussian, so Isserlis' theorem gives, per direction,

    Cov(x_r(s)^2, x_r(t)^2) = 2 c^2 + 4 m_s m_t c,

and Cov(L_s, L_t) = sum_g n_g (h_g / 2)^2 (2 c_g^2 + 4 m_s m_t c_g), directions being
independent.

Two kernels: ``loss_covariance_kernel`` follows the runs of any schedule, stepping short gaps
and jumping long ones inside runs;
``loss_covariance_const_kernel`` jumps by repeated squaring when the learning rate and batch
size are constant (A^(2^j) and N_j = sum_{i < 2^j} A^i Q A^iT; any step up to 2^62).
"""

import numpy as np
from numba import njit

from nqm_mc._chunks import run_chunks, run_ranges
from nqm_mc.exact._linalg import _matmul, _sandwich, fill_linear_form
from nqm_mc.exact._moments import JUMP_MIN
from nqm_mc.exact._moments import _jump as _jump_run
from nqm_mc.exact._powers import MAX_LOG2


@njit(cache=True, error_model="numpy", nogil=True)
def loss_covariance_range(form, steps, src, src_last, pair_src, pair_t, n_chunks, out_cov,
                          out_mean, out_var, lo, hi):
    """Recurrences for t = 0..steps[-1]; two-time covariances of the loss at pairs, for the
    chunks of groups lo .. hi - 1 (loss_covariance_kernel runs every chunk on threads).

    The schedules come as runs of constant hyperparameters (``form.starts``). Where the next
    named step lies JUMP_MIN steps or more ahead inside a run, the moments jump there by
    repeated squaring (the curve kernel's jump, with the run's power table built once per
    group and run), and the open sources' vectors u move by the same powers of A; shorter
    gaps are stepped. Cost O(G (U + K) log t) for U named steps and K runs on
    piecewise-constant hyperparameters, times the open sources.

    form : LinearForm (:mod:`nqm_mc.exact.lowering`) covering at least steps[-1] steps
        (G groups).
    steps : (U,) int64, increasing: every step named by a pair.
    src : (J,) int64, increasing indices into ``steps``: the earlier steps s of the pairs.
    src_last : (J,) int64, for each source the largest index into ``steps`` it is paired with.
    pair_src, pair_t : (P,) int64; pair p is (steps[src[pair_src[p]]], steps[pair_t[p]]).
    n_chunks : int, the groups are split into this many contiguous chunks (one per task).
    out_cov : (n_chunks, P) float64, zero on entry; per-chunk partial sums of Cov(L_s, L_t).
    out_mean, out_var : (n_chunks, U) float64, zero on entry; per-chunk partial sums of E[L]
        and Var[L] at ``steps`` (the marginals, from the same centred recurrence).
    """
    kind, has_ema, beta, gamma = form.kind, form.has_ema, form.beta, form.gamma
    h, hp, c, n, mu0, v0 = form.h, form.hp, form.c, form.n, form.mu0, form.v0
    starts, lr_run, batch_run = form.starts, form.lr, form.batch
    K = starts.shape[0]
    G = h.shape[0]
    U = steps.shape[0]
    T_end = steps[U - 1]
    J = src.shape[0]
    n_pairs = pair_src.shape[0]
    for ch in range(lo, hi):
        A = np.zeros((3, 3))
        b = np.zeros(3)
        P = np.zeros((3, 3))
        AP = np.zeros((3, 3))
        mu = np.zeros(3)
        nm = np.zeros(3)
        u = np.zeros((J, 3))
        nu = np.zeros(3)
        cross = np.zeros((J, U))  # c(s_j, steps[i]) of the group
        mean_r = np.zeros(U)  # the readout's mean at steps[i]
        table = np.zeros((MAX_LOG2 + 1, 3, 3))
        N = np.zeros((MAX_LOG2 + 1, 3, 3))
        tmp = np.zeros((3, 3))
        Tj = np.zeros((3, 3))
        for g in range(ch * G // n_chunks, (ch + 1) * G // n_chunks):
            k = fill_linear_form(kind, has_ema, h[g], hp[g], lr_run[0], beta, gamma, A, b)
            ro = k - 1 if has_ema else 0
            q = c[g] / batch_run[0]
            for i in range(3):
                mu[i] = 0.0
                for j in range(3):
                    P[i, j] = 0.0
            for j in range(J):
                for i in range(3):
                    u[j, i] = 0.0
                for i in range(U):
                    cross[j, i] = 0.0
            mu[0] = mu0[g]
            P[0, 0] = v0[g]
            if has_ema:
                mu[ro] = mu0[g]
                P[0, ro] = v0[g]
                P[ro, 0] = v0[g]
                P[ro, ro] = v0[g]
            built = np.int64(0)  # levels of the power table of run built_run
            built_run = -1
            run = 0  # the run of step t
            r = 0  # next index into steps
            js = 0  # next source to open
            t = 0
            while r < U:
                if t == steps[r]:
                    m1 = mu[ro]
                    var = P[ro, ro]
                    mean_r[r] = m1
                    out_mean[ch, r] += 0.5 * n[g] * h[g] * (var + m1 * m1)
                    out_var[ch, r] += n[g] * h[g] * h[g] * (0.5 * var * var + m1 * m1 * var)
                    while js < J and src[js] == r:  # open the sources at this step
                        for i in range(k):
                            u[js, i] = P[i, ro]
                        js += 1
                    for j in range(js):
                        if src_last[j] >= r:
                            cross[j, r] = u[j, ro]
                    r += 1
                    if r == U:
                        break
                if run + 1 < K and starts[run + 1] <= t:  # a new run starts at t
                    run += 1
                    if lr_run[run] != lr_run[run - 1]:  # A and b depend on the step only here
                        k = fill_linear_form(kind, has_ema, h[g], hp[g], lr_run[run], beta,
                                             gamma, A, b)
                    q = c[g] / batch_run[run]
                run_end = starts[run + 1] if run + 1 < K else T_end
                gap = min(steps[r], run_end) - t
                if gap >= JUMP_MIN:
                    if built_run != run:
                        built = np.int64(0)
                        built_run = run
                    built = _jump_run(k, A, b, q, gap, built, table, N, mu, P, nm, tmp, Tj)
                    # the open sources move with the mean's map: u <- A^gap u
                    for j in range(js):
                        if src_last[j] < r:
                            continue
                        d = gap
                        p = 0
                        while d > 0:
                            if d & 1:
                                for i in range(k):
                                    acc = 0.0
                                    for a in range(k):
                                        acc += table[p, i, a] * u[j, a]
                                    nu[i] = acc
                                for i in range(k):
                                    u[j, i] = nu[i]
                            d >>= 1
                            p += 1
                    t += gap
                    continue
                # mean and centred covariance: mu <- A mu, P <- A P A^T + q b b^T
                for i in range(k):
                    s = 0.0
                    for a in range(k):
                        s += A[i, a] * mu[a]
                    nm[i] = s
                    for j in range(k):
                        s = 0.0
                        for a in range(k):
                            s += A[i, a] * P[a, j]
                        AP[i, j] = s
                for i in range(k):
                    mu[i] = nm[i]
                    for j in range(i, k):
                        s = 0.0
                        for a in range(k):
                            s += AP[i, a] * A[j, a]
                        s += q * b[i] * b[j]
                        P[i, j] = s
                        P[j, i] = s
                # the open sources' cross-covariances move with the mean's map
                for j in range(js):
                    if src_last[j] < r:
                        continue
                    for i in range(k):
                        s = 0.0
                        for a in range(k):
                            s += A[i, a] * u[j, a]
                        nu[i] = s
                    for i in range(k):
                        u[j, i] = nu[i]
                t += 1
            w = 0.25 * n[g] * h[g] * h[g]
            for p in range(n_pairs):
                j = pair_src[p]
                cst = cross[j, pair_t[p]]
                out_cov[ch, p] += w * (2.0 * cst * cst
                                       + 4.0 * mean_r[src[j]] * mean_r[pair_t[p]] * cst)



def loss_covariance_kernel(form, steps, src, src_last, pair_src, pair_t, n_chunks, out_cov,
                           out_mean, out_var):
    """loss_covariance_range for every chunk of groups, one chunk (ch = lo) per call, on
    threads (:func:`nqm_mc._chunks.run_chunks`); each chunk writes its own row of the
    outputs, summed by the caller in chunk order."""
    run_chunks(lambda c: loss_covariance_range(form, steps, src, src_last, pair_src, pair_t,
                                               n_chunks, out_cov, out_mean, out_var, c,
                                               c + 1), n_chunks)

@njit(cache=True, error_model="numpy")
def _jump(k, t, table, N, mu, P, tmp, T, nm, with_cov):
    """(mu, P) <- t steps of the constant map: mu <- A^t mu, P <- A^t P A^tT + N(t).

    The binary digits of t are applied lowest first; powers of one map commute, so any order
    gives the same moments. P is left alone when ``with_cov`` is False.
    """
    p = 0
    while t > 0:
        if t & 1:
            for i in range(k):
                s = 0.0
                for j in range(k):
                    s += table[p, i, j] * mu[j]
                nm[i] = s
            for i in range(k):
                mu[i] = nm[i]
            if with_cov:
                _sandwich(k, table[p], P, tmp, T)
                for i in range(k):
                    for j in range(k):
                        P[i, j] = T[i, j] + N[p, i, j]
        t >>= 1
        p += 1


@njit(cache=True, error_model="numpy", nogil=True)
def loss_covariance_const_range(form, s_arr, t_arr, out_cov, out_mean, out_var, lo, hi):
    """Cov(L_s, L_t) at pairs for constant hyperparameters, in O(k^3 log t) per group and pair,
    for groups lo .. hi - 1 (loss_covariance_const_kernel runs every group).

    form : LinearForm (G groups); the learning rate and batch size are those of step 0.
    s_arr, t_arr : (P,) int64 with s_arr <= t_arr (up to 2^62).
    out_cov : (G, P) float64, receives each group's share of Cov(L_s, L_t) (summed by the
        caller in group order).
    out_mean, out_var : (G, P, 2) float64, each group's share of E[L] and Var[L] at s and t.
    """
    kind, has_ema, beta, gamma = form.kind, form.has_ema, form.beta, form.gamma
    h, hp, c, n, mu0, v0 = form.h, form.hp, form.c, form.n, form.mu0, form.v0
    n_pairs = s_arr.shape[0]
    for g in range(lo, hi):
        A = np.zeros((3, 3))
        b = np.zeros(3)
        table = np.zeros((MAX_LOG2 + 1, 3, 3))
        N = np.zeros((MAX_LOG2 + 1, 3, 3))
        tmp = np.zeros((3, 3))
        T = np.zeros((3, 3))
        P = np.zeros((3, 3))
        U = np.zeros((3, 3))  # column ro: Cov(x(t), x_r(s)); other columns unused
        mu = np.zeros(3)
        nm = np.zeros(3)
        k = fill_linear_form(kind, has_ema, h[g], hp[g], form.lr[0], beta, gamma, A, b)
        ro = k - 1 if has_ema else 0
        q = c[g] / form.batch[0]
        for i in range(3):
            for j in range(3):
                table[0, i, j] = A[i, j]
                N[0, i, j] = q * b[i] * b[j]
        for p in range(1, MAX_LOG2 + 1):
            _matmul(k, table[p - 1], table[p - 1], table[p])
            _sandwich(k, table[p - 1], N[p - 1], tmp, T)
            for i in range(k):
                for j in range(k):
                    N[p, i, j] = N[p - 1, i, j] + T[i, j]
        w = 0.25 * n[g] * h[g] * h[g]
        for it in range(n_pairs):
            for i in range(3):
                mu[i] = 0.0
                for j in range(3):
                    P[i, j] = 0.0
            mu[0] = mu0[g]
            P[0, 0] = v0[g]
            if has_ema:
                mu[ro] = mu0[g]
                P[0, ro] = v0[g]
                P[ro, 0] = v0[g]
                P[ro, ro] = v0[g]
            _jump(k, s_arr[it], table, N, mu, P, tmp, T, nm, True)
            ms = mu[ro]
            vs = P[ro, ro]
            # u = P(s) e_r moves with the mean's map: u(t) = A^(t - s) u(s)
            for i in range(3):
                for j in range(3):
                    U[i, j] = 0.0
            for i in range(k):
                U[i, 0] = P[i, ro]
            d = t_arr[it] - s_arr[it]
            p = 0
            while d > 0:
                if d & 1:
                    for i in range(k):
                        acc = 0.0
                        for j in range(k):
                            acc += table[p, i, j] * U[j, 0]
                        nm[i] = acc
                    for i in range(k):
                        U[i, 0] = nm[i]
                d >>= 1
                p += 1
            _jump(k, t_arr[it] - s_arr[it], table, N, mu, P, tmp, T, nm, True)
            mt = mu[ro]
            vt = P[ro, ro]
            cst = U[ro, 0]
            out_cov[g, it] = w * (2.0 * cst * cst + 4.0 * ms * mt * cst)
            out_mean[g, it, 0] = 0.5 * n[g] * h[g] * (vs + ms * ms)
            out_mean[g, it, 1] = 0.5 * n[g] * h[g] * (vt + mt * mt)
            out_var[g, it, 0] = n[g] * h[g] * h[g] * (0.5 * vs * vs + ms * ms * vs)
            out_var[g, it, 1] = n[g] * h[g] * h[g] * (0.5 * vt * vt + mt * mt * vt)

def loss_covariance_const_kernel(form, s_arr, t_arr, out_cov, out_mean, out_var):
    """loss_covariance_const_range for every group (lo, hi: a chunk of groups), the chunks on
    threads (:func:`nqm_mc._chunks.run_ranges`); each group writes only its own outputs."""
    run_ranges(lambda lo, hi: loss_covariance_const_range(form, s_arr, t_arr, out_cov, out_mean,
                                                          out_var, lo, hi),
               form.h.shape[0], min_size=64)
