r"""Statistics of the joint law of recorded losses, from kept paths (pure NumPy).

A Monte Carlo run with ``keep_paths`` holds the loss of each kept run at every recorded step:
an array ``paths`` of shape (n_runs, n_records). The marginal statistics (mean, variance,
quantiles at each step) do not see how records of one run relate; the sample covariance and
correlation of the loss between two records do. This module estimates them with standard
errors that are honest for a product statistic and turns a prediction (for instance
:func:`nqm_mc.exact.joint.loss_covariance`) into z-scores.

Standard errors come from the influence function of the estimator, evaluated on the runs
themselves (the delta method): with :math:`\tilde x_i = x_i - \bar x` and
:math:`\tilde y_i = y_i - \bar y` the centred losses of run :math:`i` at the two records,

- sample covariance :math:`\hat c = \sum_i \tilde x_i \tilde y_i / (n - 1)`, influence
  :math:`\tilde x_i \tilde y_i - \hat c`, so
  :math:`\mathrm{se}(\hat c) = \mathrm{sd}(\tilde x \tilde y) / \sqrt n`;
- sample correlation :math:`\hat\rho`, with :math:`a_i = \tilde x_i / s_x`,
  :math:`b_i = \tilde y_i / s_y`: influence
  :math:`a_i b_i - \tfrac{\hat\rho}{2}(a_i^2 + b_i^2)`, and
  :math:`\mathrm{se}(\hat\rho) = \mathrm{sd}(\text{influence}) / \sqrt n`.

Both are consistent whatever the law of the loss (it only needs finite fourth moments), and
the z-score :math:`(\hat c - c) / \mathrm{se}` is asymptotically standard normal
(``docs/theory.md``, section 6.4). Runs whose loss is not finite at either record of a pair
(diverged, or not recorded) are left out of that pair.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.spec._checks import ParameterError, _short

__all__ = ["LagStatistic", "lag_covariance", "lag_correlation", "lag_covariance_difference",
           "pair_columns"]

MIN_RUNS = 3  # fewer finite runs than this leave a pair's estimate and s.e. undefined


class LagStatistic(NamedTuple):
    """Estimates of a two-record statistic, one per pair of records.

    Attributes
    ----------
    estimate : ndarray, shape (P,)
        The sample statistic (for a two-sample comparison: sample a's minus sample b's).
    standard_error : ndarray, shape (P,)
        Its standard error (influence function, from the runs).
    z : ndarray, shape (P,)
        ``(estimate - predicted) / standard_error``; nan without a prediction, and where the
        standard error is zero or undefined (a constant record, too few finite runs).
    predicted : ndarray, shape (P,), or None
        The prediction tested (0 for a two-sample comparison).
    n_runs : ndarray of int, shape (P,)
        Runs used for each pair (finite at both records; the smaller sample's count in a
        two-sample comparison).
    """

    estimate: np.ndarray
    standard_error: np.ndarray
    z: np.ndarray
    predicted: np.ndarray | None
    n_runs: np.ndarray


def _check_paths(paths: ArrayLike, owner: str, name: str = "paths") -> np.ndarray:
    try:
        arr = np.asarray(paths)
        ok = arr.ndim == 2 and arr.dtype.kind in "iuf"
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"The {name!r} parameter of {owner} must be a 2-d array of losses "
                             f"(n_runs, n_records). Got {_short(paths)} instead.")
    return arr.astype(np.float64, copy=False)


def _check_column_pairs(pairs: ArrayLike, n_records: int, owner: str) -> np.ndarray:
    msg = (f"The 'pairs' parameter of {owner} must be pairs of record indices (columns of "
           f"paths, in [0, {n_records - 1}]), shape (P, 2) or (2,). Got {_short(pairs)} "
           "instead.")
    try:
        arr = np.asarray(pairs)
    except (TypeError, ValueError):
        raise ParameterError(msg) from None
    if arr.ndim == 1 and arr.shape[0] == 2:
        arr = arr.reshape(1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0 or arr.dtype.kind not in "iu" \
            or arr.min() < 0 or arr.max() >= n_records:
        raise ParameterError(msg)
    return arr.astype(np.int64)


def _check_predicted(predicted: ArrayLike | None, n_pairs: int,
                     owner: str) -> np.ndarray | None:
    if predicted is None:
        return None
    try:
        arr = np.asarray(predicted, dtype=np.float64)
        ok = arr.shape in ((), (n_pairs,)) and not bool(np.any(np.isinf(arr)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"The 'predicted' parameter of {owner} must be {n_pairs} finite "
                             f"numbers or nan (one per pair). Got {_short(predicted)} "
                             "instead.")
    return np.broadcast_to(arr, (n_pairs,)).copy()


def _pair_values(paths: np.ndarray, i: int, j: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = paths[:, i], paths[:, j]
    keep = np.isfinite(x) & np.isfinite(y)
    return x[keep], y[keep]


def _cov_one(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    n = x.size
    if n < MIN_RUNS:
        return float("nan"), float("nan")
    prod = (x - x.mean()) * (y - y.mean())
    est = float(prod.sum() / (n - 1))
    return est, float(prod.std(ddof=1) / np.sqrt(n))


def _corr_one(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    n = x.size
    if n < MIN_RUNS:
        return float("nan"), float("nan")
    xc, yc = x - x.mean(), y - y.mean()
    sx, sy = np.sqrt(np.mean(xc ** 2)), np.sqrt(np.mean(yc ** 2))
    if not (sx > 0 and sy > 0):
        return float("nan"), float("nan")
    a, b = xc / sx, yc / sy
    rho = float(np.mean(a * b))
    infl = a * b - 0.5 * rho * (a * a + b * b)
    return rho, float(infl.std(ddof=1) / np.sqrt(n))


def _lag(paths: ArrayLike, pairs: ArrayLike, predicted: ArrayLike | None, owner: str,
         one) -> LagStatistic:
    arr = _check_paths(paths, owner)
    cols = _check_column_pairs(pairs, arr.shape[1], owner)
    pred = _check_predicted(predicted, cols.shape[0], owner)
    est = np.empty(cols.shape[0])
    se = np.empty(cols.shape[0])
    n = np.empty(cols.shape[0], np.int64)
    for p, (i, j) in enumerate(cols):
        x, y = _pair_values(arr, int(i), int(j))
        est[p], se[p] = one(x, y)
        n[p] = x.size
    z = np.full(est.shape, np.nan)
    if pred is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            z = (est - pred) / se
    return LagStatistic(est, se, z, pred, n)


def lag_covariance(paths: ArrayLike, pairs: ArrayLike,
                   predicted: ArrayLike | None = None) -> LagStatistic:
    r"""Estimate Cov(L_i, L_j) between records of kept paths, with standard errors and z.

    Parameters
    ----------
    paths : array_like, shape (n_runs, n_records)
        The loss of each run at each record (``SimulationResult.paths``).
    pairs : array_like of int, shape (P, 2) or (2,)
        Pairs of record indices (columns of ``paths``; :func:`pair_columns` maps steps to
        columns).
    predicted : array_like, shape (P,) or scalar, optional
        Predicted covariances (e.g. ``loss_covariance(...).covariance``); nan marks a pair
        without a prediction (its z is nan).

    Returns
    -------
    LagStatistic
        The unbiased sample covariances, their standard errors and, with a prediction,
        z-scores.

    Raises
    ------
    ParameterError
        If ``paths`` is not a 2-d numeric array, a pair is not two valid column indices, or
        ``predicted`` does not hold one finite number per pair.

    Notes
    -----
    The standard error is :math:`\mathrm{sd}_i(\tilde x_i \tilde y_i) / \sqrt n` with
    :math:`\tilde x, \tilde y` the centred losses: the influence function of the sample
    covariance, evaluated on the runs. A pair with fewer than 3 finite runs gets nan.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((4000, 1))
    >>> paths = np.hstack([x, x + rng.standard_normal((4000, 1))])
    >>> st = lag_covariance(paths, [(0, 1)], predicted=[1.0])
    >>> bool(abs(st.z[0]) < 5)
    True
    """
    return _lag(paths, pairs, predicted, "lag_covariance", _cov_one)


def lag_correlation(paths: ArrayLike, pairs: ArrayLike,
                    predicted: ArrayLike | None = None) -> LagStatistic:
    r"""Estimate Corr(L_i, L_j) between records of kept paths, with standard errors and z.

    Parameters
    ----------
    paths : array_like, shape (n_runs, n_records)
        The loss of each run at each record (``SimulationResult.paths``).
    pairs : array_like of int, shape (P, 2) or (2,)
        Pairs of record indices (columns of ``paths``).
    predicted : array_like, shape (P,) or scalar, optional
        Predicted correlations (e.g. ``loss_covariance(...).correlation``, which is nan
        where a variance is zero); nan marks a pair without a prediction (its z is nan).

    Returns
    -------
    LagStatistic
        The sample (Pearson) correlations, their standard errors and, with a prediction,
        z-scores.

    Raises
    ------
    ParameterError
        As :func:`lag_covariance`.

    Notes
    -----
    With :math:`a, b` the losses standardised by their sample means and standard deviations
    and :math:`\hat\rho = \overline{ab}`, the standard error is
    :math:`\mathrm{sd}_i(a_i b_i - \hat\rho (a_i^2 + b_i^2) / 2) / \sqrt n`. A pair with a
    constant record or fewer than 3 finite runs gets nan.
    """
    return _lag(paths, pairs, predicted, "lag_correlation", _corr_one)


def lag_covariance_difference(paths_a: ArrayLike, paths_b: ArrayLike,
                              pairs: ArrayLike) -> LagStatistic:
    r"""Compare the lag covariances of two independent samples of paths (two-sample z).

    Parameters
    ----------
    paths_a, paths_b : array_like, shape (n_a, n_records) and (n_b, n_records)
        Kept paths of two independent runs at the same records (e.g. the skip-ahead sampler
        and the step kernel).
    pairs : array_like of int, shape (P, 2) or (2,)
        Pairs of record indices (columns).

    Returns
    -------
    LagStatistic
        ``estimate`` = sample a's covariance minus sample b's, ``standard_error``
        = :math:`\sqrt{se_a^2 + se_b^2}`, ``z`` their ratio (``predicted`` is 0).

    Raises
    ------
    ParameterError
        As :func:`lag_covariance`, or if the two samples have different numbers of records.
    """
    owner = "lag_covariance_difference"
    a = _check_paths(paths_a, owner, "paths_a")
    b = _check_paths(paths_b, owner, "paths_b")
    if a.shape[1] != b.shape[1]:
        raise ParameterError(f"The 'paths_b' parameter of {owner} must have as many records "
                             f"as paths_a ({a.shape[1]}). Got {b.shape[1]} instead.")
    sa = _lag(a, pairs, None, owner, _cov_one)
    sb = _lag(b, pairs, None, owner, _cov_one)
    est = sa.estimate - sb.estimate
    se = np.sqrt(sa.standard_error ** 2 + sb.standard_error ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = est / se
    return LagStatistic(est, se, z, np.zeros_like(est), np.minimum(sa.n_runs, sb.n_runs))


def pair_columns(steps: ArrayLike, pairs: ArrayLike) -> np.ndarray:
    """Return the columns of ``paths`` that hold the recorded steps of each pair.

    Parameters
    ----------
    steps : array_like of int, shape (n_records,)
        The recorded steps (``SimulationResult.steps``).
    pairs : array_like of int, shape (P, 2) or (2,)
        Pairs of steps (s, t), each a recorded step.

    Returns
    -------
    ndarray of int64, shape (P, 2)
        Column indices.

    Raises
    ------
    ParameterError
        If a step of a pair was not recorded.
    """
    st = np.asarray(steps, dtype=np.int64)
    pr = np.asarray(pairs)
    if pr.ndim == 1 and pr.shape[0] == 2:
        pr = pr.reshape(1, 2)
    if pr.ndim != 2 or pr.shape[1] != 2 or pr.dtype.kind not in "iu":
        raise ParameterError("The 'pairs' parameter of pair_columns must be pairs of int "
                             f"steps, shape (P, 2). Got {_short(pairs)} instead.")
    order = np.argsort(st, kind="stable")
    pos = np.searchsorted(st[order], pr)
    found = (pos < st.size) & (st[order][np.minimum(pos, st.size - 1)] == pr)
    if not found.all():
        bad = pr[~found][0]
        raise ParameterError(f"The 'pairs' parameter of pair_columns names step {int(bad)}, "
                             "which is not among the recorded steps.")
    return order[pos].astype(np.int64)
