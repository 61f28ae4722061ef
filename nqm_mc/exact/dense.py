r"""The exact dense engine for rotated models: the full covariance recurrence.

For a :class:`~nqm_mc.spec.rotated.RotatedNQM` whose preconditioner does not commute with H
(e.g. a fixed coordinate-wise diagonal P with a rotated H), directions couple, and
:func:`expected_loss_dense` propagates the mean and the full covariance of the state (theta,
momentum, EMA: up to 3d x 3d) step by step,

.. math:: S \leftarrow A S A^T + B_n (C / B_t) B_n^T.

When P commutes with H the aligned engine applies instead to
:meth:`~nqm_mc.spec.rotated.RotatedNQM.equivalent_nqm` (see :mod:`nqm_mc.spec.rotated`).
"""

from __future__ import annotations

import numpy as np

from nqm_mc.exact.lowering import joint_runs
from nqm_mc.spec._checks import MAX_STEP, ParameterError, check_int, check_memory, check_steps
from nqm_mc.spec.codes import KIND_HEAVY_BALL, KIND_SGD
from nqm_mc.spec.rotated import _check
from nqm_mc.spec.schedules import as_batch_schedule, checked_pieces

__all__ = ["expected_loss_dense"]


def _linear_map(kind, has_ema, minv_h, minv, lr, beta, gamma):
    """Return (A, B_n) of the state (theta, m, e) update: state' = A state + B_n xi."""
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
    check_memory(8.0 * 3 * record.size, owner, f"{record.size} recorded steps",
                 "Record fewer steps.")
    hm = model.hessian()
    cm = model.noise_covariance()
    minv_h = minv @ hm
    # the schedules as runs of constant (learning rate, batch size): memory per run
    starts, lr_run, b_run = joint_runs(
        checked_pieces(optimizer.learning_rate, max(T, 1), "learning_rate", owner),
        checked_pieces(as_batch_schedule(batch_size, "batch_size", owner), max(T, 1),
                       "batch_size", owner))
    run = -1
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
    A = Bn = np.zeros((0, 0))  # replaced at the first step, whose (lr, B) differs from last
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
            if run + 1 < starts.size and starts[run + 1] == t:  # a new run
                run += 1
                if (lr_run[run], b_run[run]) != last:
                    A, Bn = _linear_map(optimizer.kind_code, has_ema, minv_h, minv,
                                        lr_run[run], beta, gamma)
                    Q = Bn @ (cm / b_run[run]) @ Bn.T
                    last = (lr_run[run], b_run[run])
            mean = A @ mean
            S = A @ S @ A.T + Q
            if not np.all(np.isfinite(S)) or np.abs(S).max() > 1e250:
                out_m[r:] = np.inf
                out_v[r:] = np.inf
                break
    return record, out_m, out_v


