r"""Non-aligned noisy quadratic models: a Hessian and a noise covariance that are not diagonal
in the same basis (moderate dimension: every step costs O(d^2) in Monte Carlo, O(d^3) exactly).

In parameter coordinates :math:`\theta \in R^d`

.. math:: L(\theta) = \tfrac12 \theta^T H \theta,\quad H = U_H\,\mathrm{diag}(h)\,U_H^T,\qquad
          g = H\theta + \xi,\quad E[\xi\xi^T] = C / B,\quad C = U_C\,\mathrm{diag}(c)\,U_C^T,

with :math:`\theta(0) \sim N(\mu_0, \mathrm{diag}(v_0))`. ``RotatedNQM.from_nqm`` rotates the
noise, the Hessian or both of an axis-aligned NQM by seeded random rotations.

Exact expected loss
-------------------
*A preconditioner that commutes with H* (P = H^p, including none): in H's eigenbasis
:math:`y = U_H^T\theta` every direction evolves on its own,
:math:`y_i \leftarrow y_i - \alpha h_i^{-p}(h_i y_i + \eta_i)` with
:math:`\eta = U_H^T\xi`. The loss :math:`\tfrac12\sum_i h_i y_i^2` needs only each
:math:`E[y_i^2]`, whose recurrence involves only :math:`E[\eta_i^2] = (U_H^T C U_H)_{ii} / B`:
the off-diagonal noise correlations move no expected loss. So the model is exactly the
aligned NQM with curvatures h, noise variances :math:`\mathrm{diag}(U_H^T C U_H)` and initial
moments :math:`(U_H^T\mu_0)_i` and :math:`(U_H^T \mathrm{diag}(v_0) U_H)_{ii}`
(``RotatedNQM.equivalent_nqm``), and the fast exact engine applies.

*A preconditioner that does not commute with H* (e.g. a fixed coordinate-wise diagonal P with
a rotated H): directions couple, and ``expected_loss_dense`` propagates the full covariance of
the state (theta, momentum, EMA: up to 3d x 3d) step by step,
:math:`S \leftarrow A S A^T + B_n (C / B_t) B_n^T`.
"""

from __future__ import annotations

import math
import time

import numba
import numpy as np
from numba import njit, prange

from nqm_mc.montecarlo import _interrupt
from nqm_mc.montecarlo._interrupt import stop_requested
from nqm_mc.montecarlo._kernels import apply_rule, clip_to_norm
from nqm_mc.montecarlo._rng import PURPOSE_GRADIENT, PURPOSE_INITIAL, fill_normals_f64, split_seed
from nqm_mc.results import SimulationResult, provenance
from nqm_mc.spec._checks import (
    MAX_STEP,
    ParameterError,
    check_array,
    check_choice,
    check_int,
    check_memory,
    check_real,
    check_steps,
)
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import KIND_HEAVY_BALL, KIND_SGD, Optimizer
from nqm_mc.spec.schedules import as_batch_schedule, checked_values

__all__ = ["RotatedNQM", "random_rotation", "expected_loss_dense", "simulate_dense"]

DIVERGED = 1e300
MAX_DIM = 4096  # dense d x d algebra


def random_rotation(d, seed):
    """A Haar-random orthogonal d x d matrix from numpy's Philox generator keyed by ``seed``
    (QR of a Gaussian matrix with the signs of R's diagonal folded in)."""
    d = check_int("d", d, "random_rotation", low=1, high=MAX_DIM)
    seed = check_int("seed", seed, "random_rotation", low=0)
    rng = np.random.Generator(np.random.Philox(seed))
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))[None, :]


class RotatedNQM:
    """A noisy quadratic model with H = U_H diag(h) U_H^T and C = U_C diag(c) U_C^T."""

    def __init__(self, curvatures, noise_variances, hessian_basis=None, noise_basis=None,
                 initial_mean=0.0, initial_variance=1.0, name="rotated"):
        owner = "RotatedNQM"
        h = check_array("curvatures", curvatures, owner, low=0.0)
        d = h.size
        if d > MAX_DIM:
            raise ParameterError(f"RotatedNQM is for moderate dimensions (d <= {MAX_DIM}: "
                                 f"dense d x d algebra). Got d = {d}.")
        c = check_array("noise_variances", noise_variances, owner, low=0.0, closed=(True, False))
        if c.size != d:
            raise ParameterError(f"The 'noise_variances' parameter of {owner} must have "
                                 f"{d} entries like 'curvatures'. Got {c.size} instead.")
        self.curvatures, self.noise_variances = h, c
        self.hessian_basis = self._basis("hessian_basis", hessian_basis, d)
        self.noise_basis = self._basis("noise_basis", noise_basis, d)
        self.initial_mean = check_array("initial_mean", initial_mean, owner, size=d).copy()
        self.initial_variance = check_array("initial_variance", initial_variance, owner,
                                            low=0.0, closed=(True, False), size=d).copy()
        self.name = name
        self.recipe = None

    @staticmethod
    def _basis(name, u, d):
        if u is None:
            return np.eye(d)
        try:
            u = np.asarray(u, float)
        except (TypeError, ValueError, OverflowError):
            u = np.full((0,), np.nan)
        if u.shape != (d, d) or not np.all(np.isfinite(u)):
            raise ParameterError(f"The {name!r} parameter of RotatedNQM must be a finite "
                                 f"{d} x {d} matrix. Got shape {u.shape} instead.")
        if not np.allclose(u.T @ u, np.eye(d), atol=1e-10):
            raise ParameterError(f"The {name!r} parameter of RotatedNQM must be orthogonal "
                                 "(U^T U = I).")
        return u

    @classmethod
    def from_nqm(cls, base, rotate="noise", seed=0):
        """Rotate an aligned NQM: ``rotate`` is "noise" (C), "hessian" (H) or "both"
        (independent rotations), each a Haar-random rotation keyed by ``seed``."""
        if not isinstance(base, NQM):
            raise ParameterError(f"The 'base' parameter of RotatedNQM.from_nqm must be an NQM. "
                                 f"Got {type(base).__name__} instead.")
        rotate = check_choice("rotate", rotate, "RotatedNQM.from_nqm", ("noise", "hessian",
                                                                        "both"))
        seed = check_int("seed", seed, "RotatedNQM.from_nqm", low=0, high=2 ** 63 - 1)
        h, c, mu0, v0 = base.expand()
        d = h.size
        if d > 4096:
            raise ParameterError(f"RotatedNQM is for moderate dimensions (d <= 4096: dense "
                                 f"d x d algebra). Got d = {d}.")
        uh = random_rotation(d, 2 * seed) if rotate in ("hessian", "both") else None
        uc = random_rotation(d, 2 * seed + 1) if rotate in ("noise", "both") else None
        m = cls(h, c, uh, uc, mu0, v0, name=f"{base.name}, rotated {rotate} (seed {seed})")
        m.recipe = {"base": base.to_dict(), "rotate": rotate, "seed": seed}
        return m

    @property
    def dim(self):
        return self.curvatures.size

    def hessian(self):
        u = self.hessian_basis
        return (u * self.curvatures[None, :]) @ u.T

    def noise_covariance(self):
        u = self.noise_basis
        return (u * self.noise_variances[None, :]) @ u.T

    def noise_factor(self):
        """L with L L^T = C: the noise is L z for z standard normal (per unit batch)."""
        return self.noise_basis * np.sqrt(self.noise_variances)[None, :]

    def initial_loss(self):
        hm = self.hessian()
        return float(0.5 * (self.initial_mean @ hm @ self.initial_mean
                            + np.sum(np.diag(hm) * self.initial_variance)))

    def equivalent_nqm(self):
        """The aligned NQM with the same expected loss under any preconditioner that commutes
        with H (module docstring): curvatures h, noise variances diag(U_H^T C U_H), initial
        moments in H's eigenbasis."""
        u = self.hessian_basis
        c_eff = np.einsum("ij,jk,ki->i", u.T, self.noise_covariance(), u)
        mu = u.T @ self.initial_mean
        v = np.einsum("ji,j,ji->i", u, self.initial_variance, u)
        return NQM(self.curvatures, np.maximum(c_eff, 0.0), initial_mean=mu,
                   initial_variance=np.maximum(v, 0.0), name=f"{self.name} (aligned)")

    def to_dict(self):
        if self.recipe is not None:
            return {"constructor": "rotated", **self.recipe}
        return {"constructor": "rotated_arrays", "curvatures": self.curvatures.tolist(),
                "noise_variances": self.noise_variances.tolist(),
                "hessian_basis": self.hessian_basis.tolist(),
                "noise_basis": self.noise_basis.tolist(),
                "initial_mean": self.initial_mean.tolist(),
                "initial_variance": self.initial_variance.tolist()}

    def __repr__(self):
        return f"RotatedNQM(d={self.dim}, {self.name!r})"


def _check(model, optimizer, preconditioner, owner, linear=True):
    if not isinstance(model, RotatedNQM):
        raise ParameterError(f"The 'model' parameter of {owner} must be a RotatedNQM. Got "
                             f"{type(model).__name__} instead.")
    if not isinstance(optimizer, Optimizer) or (linear and not optimizer.is_linear):
        raise ParameterError(f"The 'optimizer' parameter of {owner} must be SGD, HeavyBall or "
                             f"Nesterov without clipping. Got {optimizer!r} instead.")
    d = model.dim
    if preconditioner is None:
        # P = H^p: P^-1 = U diag(h^-p) U^T
        u = model.hessian_basis
        return (u * (model.curvatures ** -optimizer.preconditioning)[None, :]) @ u.T
    if optimizer.preconditioning != 0:
        raise ParameterError(f"{owner}: give either the optimizer's preconditioning power or "
                             "a 'preconditioner', not both.")
    p = check_array("preconditioner", preconditioner, owner, low=0.0)
    if p.size != d:
        raise ParameterError(f"The 'preconditioner' parameter of {owner} must hold the {d} "
                             f"diagonal entries of P. Got {p.size} instead.")
    return np.diag(1.0 / p)


def _linear_map(kind, has_ema, minv_h, minv, lr, beta, gamma):
    """(A, B_n) of the state (theta, m, e) update: state' = A state + B_n xi."""
    d = minv.shape[0]
    eye = np.eye(d)
    blocks = 1 + (kind != KIND_SGD) + has_ema
    A = np.zeros((blocks * d, blocks * d))
    Bn = np.zeros((blocks * d, d))
    th, mm = slice(0, d), slice(d, 2 * d)
    if kind == KIND_SGD:
        A[th, th] = eye - lr * minv_h
        Bn[th] = -lr * minv
    else:
        A[mm, th] = minv_h
        A[mm, mm] = beta * eye
        Bn[mm] = minv
        if kind == KIND_HEAVY_BALL:
            A[th, th] = eye - lr * minv_h
            A[th, mm] = -lr * beta * eye
            Bn[th] = -lr * minv
        else:
            A[th, th] = eye - lr * (1 + beta) * minv_h
            A[th, mm] = -lr * beta * beta * eye
            Bn[th] = -lr * (1 + beta) * minv
    if has_ema:
        e = slice((blocks - 1) * d, blocks * d)
        A[e] = (1 - gamma) * A[th]
        A[e, e] += gamma * eye
        Bn[e] = (1 - gamma) * Bn[th]
    return A, Bn


def expected_loss_dense(model, optimizer, batch_size, n_steps=None, *, record=None,
                        preconditioner=None):
    """Exact E[L(t)] of a RotatedNQM by the full covariance recurrence (any preconditioner).

    ``preconditioner``: the diagonal of a fixed P in parameter coordinates (the optimizer's
    preconditioning power must then be 0); default P = H^p. Returns (steps, mean, variance):
    the variance of one run's loss is exact too, the state being Gaussian (Gaussian noise and
    start): Var(1/2 x^T H x) = 1/2 tr((H S)^2) + m^T H S H m with S the covariance, m the mean.
    """
    owner = "expected_loss_dense"
    minv = _check(model, optimizer, preconditioner, owner)
    if record is None:
        if n_steps is None:
            raise ParameterError(f"{owner} needs 'n_steps' or 'record'.")
        n_steps = check_int("n_steps", n_steps, owner, low=0, high=MAX_STEP)
        check_memory(8.0 * 3 * (n_steps + 1), owner, f"{n_steps + 1} recorded steps",
                     "Record a sparse set of steps (record=).")
        record = np.arange(n_steps + 1)
    record = check_steps("record", record, owner)
    T = int(record[-1])
    check_memory(8.0 * 4 * (T + 1) + 8.0 * 3 * record.size, owner,
                 f"{T} steps of schedules", "Ask for fewer steps.")
    hm = model.hessian()
    cm = model.noise_covariance()
    minv_h = minv @ hm
    lr_t = checked_values(optimizer.learning_rate, max(T, 1), "learning_rate", owner)
    b_t = checked_values(as_batch_schedule(batch_size, "batch_size", owner), max(T, 1),
                         "batch_size", owner)
    beta = getattr(optimizer, "momentum", 0.0)
    gamma = optimizer.ema
    has_ema = gamma is not None
    d = model.dim
    blocks = 1 + (optimizer.kind_code != KIND_SGD) + has_ema
    ro = slice((blocks - 1) * d, blocks * d) if has_ema else slice(0, d)
    mean = np.zeros(blocks * d)
    S = np.zeros((blocks * d, blocks * d))  # covariance of the state
    v0 = np.diag(model.initial_variance)
    mean[:d] = model.initial_mean
    S[:d, :d] = v0
    if has_ema:
        e = slice((blocks - 1) * d, blocks * d)
        mean[e] = model.initial_mean
        S[e, e] = v0
        S[:d, e] = v0
        S[e, :d] = v0
    out_m = np.empty(record.size)
    out_v = np.empty(record.size)
    A = Bn = None
    last = (None, None)
    with np.errstate(over="ignore", invalid="ignore"):
        r = 0
        for t in range(T + 1):
            if t == record[r]:
                Sr, mr = S[ro, ro], mean[ro]
                hs = hm @ Sr
                out_m[r] = 0.5 * (mr @ hm @ mr + np.trace(hs))
                out_v[r] = 0.5 * np.sum(hs * hs.T) + mr @ hm @ Sr @ hm @ mr
                r += 1
                if r == record.size:
                    break
            if (lr_t[t], b_t[t]) != last:
                A, Bn = _linear_map(optimizer.kind_code, has_ema, minv_h, minv, lr_t[t], beta,
                                    gamma)
                Q = Bn @ (cm / b_t[t]) @ Bn.T
                last = (lr_t[t], b_t[t])
            mean = A @ mean
            S = A @ S @ A.T + Q
            if not np.all(np.isfinite(S)) or np.abs(S).max() > 1e250:
                out_m[r:] = np.inf
                out_v[r:] = np.inf
                break
    return record, out_m, out_v


@njit(cache=True, error_model="numpy")
def _matvec(M, x, out):
    d = M.shape[0]
    for i in range(d):
        s = 0.0
        for j in range(M.shape[1]):
            s += M[i, j] * x[j]
        out[i] = s


@njit(cache=True, error_model="numpy", parallel=True, nogil=True)
def _dense_runs(kind, has_ema, H, Lc, Minv, mu0, sd0, lr_t, isb_t, beta, gamma, extra,
                seed_lo, seed_hi, n_runs, record, target, keep, out_loss, out_hit, out_records,
                stop):
    """One trajectory per run id: noise xi = Lc z / sqrt(B) with z the generator's normals
    (keyed (seed, run), the aligned engine's streams), g~ = Minv (H theta + xi), the rule as
    written. Writes the readout loss at the recorded steps (inf after a divergence) and the
    hitting time of ``target`` (-1 never, -2 diverged first). Adaptive rules and clipping
    as in the aligned engine (extra = beta2, eps, clip norm). ``stop`` (polled every step)
    ends the call early: out_records[j] is the number of records run j wrote (R when it
    finished) and its hitting time is -3 if it stopped before hitting."""
    d = H.shape[0]
    beta2 = extra[0]
    eps = extra[1]
    clip = extra[2]
    R = record.shape[0]
    T = record[R - 1]
    for j in prange(n_runs):
        if stop_requested(stop) != 0:
            out_hit[j] = -3
            out_records[j] = 0
            continue
        th = np.empty(d)
        m = np.zeros(d)
        v = np.zeros(d)
        e = np.empty(d)
        z = np.empty(d + 4)
        xi = np.empty(d)
        g = np.empty(d)
        gt = np.empty(d)
        hx = np.empty(d)
        ws = np.empty((4, 128), np.uint32)
        k0 = np.uint32(seed_lo)
        k1 = np.uint32(j)
        shi = np.uint32(seed_hi)
        fill_normals_f64(z, d, np.uint32(0), np.uint32(PURPOSE_INITIAL), shi, k0, k1, ws)
        for i in range(d):
            th[i] = mu0[i] + sd0[i] * z[i]
            e[i] = th[i]
        _matvec(H, th, hx)
        loss = 0.0
        for i in range(d):
            loss += th[i] * hx[i]
        loss *= 0.5
        hit = 0 if loss < target else -1
        r = 0
        if record[0] == 0:
            out_loss[j, 0] = loss
            r = 1
        for t in range(T):
            if stop_requested(stop) != 0:
                break
            fill_normals_f64(z, d, np.uint32(t), np.uint32(PURPOSE_GRADIENT), shi, k0, k1, ws)
            _matvec(Lc, z, xi)
            for i in range(d):
                g[i] = hx[i] + isb_t[t] * xi[i]
            _matvec(Minv, g, gt)
            clip_to_norm(gt, clip)
            apply_rule(kind, lr_t[t], beta, beta2, eps, t, th, m, v, gt)
            _matvec(H, th, hx)
            loss = 0.0
            if has_ema:
                for i in range(d):
                    e[i] = gamma * e[i] + (1.0 - gamma) * th[i]
                _matvec(H, e, g)
                for i in range(d):
                    loss += e[i] * g[i]
            else:
                for i in range(d):
                    loss += th[i] * hx[i]
            loss *= 0.5
            if not (loss < DIVERGED):
                if hit < 0:
                    hit = -2
                while r < R:
                    out_loss[j, r] = np.inf
                    r += 1
                break
            if hit < 0 and loss < target:
                hit = t + 1
            if r < R and record[r] == t + 1:
                out_loss[j, r] = loss
                r += 1
        if r < R and hit == -1:
            hit = -3
        out_hit[j] = hit
        out_records[j] = r


def simulate_dense(model, optimizer, batch_size, n_steps, n_runs, *, seed=0, record="log",
                   n_records=60, target=None, keep_paths=0, preconditioner=None, threads=None,
                   on_interrupt="raise"):
    """Monte Carlo for a RotatedNQM: SGD, heavy-ball, Nesterov (P = H^p or a fixed diagonal
    ``preconditioner``), Adam, RMSProp, Adagrad, sign-SGD, clipping, EMA and schedules.
    Gaussian noise from the same counter-based streams as :func:`nqm_mc.simulate`, so results
    are bitwise reproducible for any thread count.

    Every run's recorded losses are kept (n_runs x records floats), so the statistics are
    exact sample statistics: mean, standard error, variance, quantiles (np.quantile), hitting
    times. O(d^2) per step: meant for moderate d. Ctrl-C and ``on_interrupt`` work as in
    :func:`nqm_mc.simulate` (each record's statistics then cover the runs that reached it).
    """
    from nqm_mc.montecarlo.driver import QUANTILE_LEVELS, record_steps
    owner = "simulate_dense"
    on_interrupt = check_choice("on_interrupt", on_interrupt, owner, ("raise", "return"))
    minv = _check(model, optimizer, preconditioner, owner, linear=False)
    n_steps = check_int("n_steps", n_steps, owner, low=1, high=2 ** 32 - 2)
    n_runs = check_int("n_runs", n_runs, owner, low=2, high=2 ** 31 - 1)
    seed = check_int("seed", seed, owner, low=0, high=2 ** 64 - 1)
    keep_paths = check_int("keep_paths", keep_paths, owner, low=0, high=n_runs)
    if target is not None:
        target = check_real("target", target, owner, low=0.0)
    n_records = check_int("n_records", n_records, owner, low=2, high=2 ** 20)
    steps = record_steps(n_steps, record, n_records)
    check_memory(8.0 * (3 * n_runs * steps.size + 6 * n_steps + 2 * n_runs), owner,
                 f"{n_runs} runs x {steps.size} recorded steps",
                 "Record fewer steps (record='log' or an array of steps) or use fewer runs.")
    lr_t = checked_values(optimizer.learning_rate, n_steps, "learning_rate", owner)
    isb_t = 1.0 / np.sqrt(checked_values(as_batch_schedule(batch_size, "batch_size", owner),
                                         n_steps, "batch_size", owner))
    lo, hi = split_seed(seed)
    out = np.zeros((n_runs, steps.size))
    hit = np.full(n_runs, -1, np.int64)
    reached = np.zeros(n_runs, np.int64)
    t0 = time.perf_counter()
    if threads is not None:
        threads = check_int("threads", threads, owner, low=1,
                            high=numba.config.NUMBA_NUM_THREADS)
    stop = _interrupt.new_flag()
    interrupt = None
    try:
        _interrupt.run_stoppable(lambda: _dense_runs(optimizer.kind_code, optimizer.ema is not None,
                    np.ascontiguousarray(model.hessian()),
                    np.ascontiguousarray(model.noise_factor()), np.ascontiguousarray(minv),
                    model.initial_mean, np.sqrt(model.initial_variance), lr_t, isb_t,
                    float(optimizer.kernel_params[0]),
                    float(optimizer.ema if optimizer.ema is not None else 0.0),
                    np.array([optimizer.kernel_params[1], optimizer.kernel_params[2],
                              optimizer.clip_norm or 0.0]), lo, hi, n_runs,
                    steps, -np.inf if target is None else target, keep_paths, out, hit, reached,
                    stop), stop, threads or numba.get_num_threads())
    except KeyboardInterrupt as err:
        interrupt = err
    ran = np.arange(steps.size)[None, :] < reached[:, None]  # records each run reached
    out[~ran] = np.nan
    finite = np.isfinite(out)
    n = finite.sum(0)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        x = np.where(finite, out, 0.0)
        mean = x.sum(0) / n
        var = (np.where(finite, out - mean, 0.0) ** 2).sum(0) / (n - 1)
        sem = np.sqrt(var / n)
        quant = np.array([[np.quantile(out[finite[:, r], r], q) if n[r] else np.nan
                           for r in range(steps.size)] for q in QUANTILE_LEVELS])
    spec = {"model": model.to_dict(), "optimizer": optimizer.to_dict(),
            "batch_size": batch_size if isinstance(batch_size, int) else
            as_batch_schedule(batch_size).to_dict(), "n_steps": n_steps, "n_runs": n_runs,
            "seed": seed, "record": steps.tolist(), "target": target, "dtype": "float64",
            "keep_paths": keep_paths, "n_bands": 0,
            "preconditioner": None if preconditioner is None else
            np.asarray(preconditioner, float).tolist()}
    meta = {"provenance": provenance(), "seconds": time.perf_counter() - t0,
            "threads": threads or numba.get_num_threads(), "block_size": 1,
            "runs_completed": int(np.count_nonzero(reached == steps.size)),
            "runs_started": int(np.count_nonzero(reached > 0)),
            "interrupted": interrupt is not None,
            "signal": None if interrupt is None else _interrupt.signal_name(interrupt),
            "executor": "threads", "engine": "dense"}
    result = SimulationResult(
        steps=steps, mean=mean, sem=sem, variance=var, quantile_levels=QUANTILE_LEVELS.copy(),
        quantiles=quant, mean_theta=mean if optimizer.ema is None else np.full(steps.size,
                                                                                 math.nan),
        n_finite=n.astype(np.int64), n_diverged=(ran.sum(0) - n).astype(np.int64),
        band_mean_square=np.zeros((steps.size, 0)), band_edges=np.zeros(0),
        hitting_times=hit if target is not None else None,
        paths=out[:keep_paths].copy() if keep_paths else None, spec=spec, meta=meta)
    if interrupt is not None and on_interrupt == "raise":
        raise _interrupt.Interrupted(result, meta["signal"]) from interrupt
    return result
