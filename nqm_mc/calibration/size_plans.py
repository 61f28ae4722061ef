"""Plans from a fitted table: compute-optimal (N, B, K) and critical batch sizes per size.

:func:`plan` finds the (N, B, K) of lowest predicted loss under a compute budget;
:func:`critical_batch_sizes` fits, for each model size, B* of the steps to a target
S(B) = S_min (1 + B* / B). Both read a :class:`~nqm_mc.calibration.size_model.TableFit`
(see :mod:`nqm_mc.calibration.sizes`), with bands over the fold fits.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import optimize

from nqm_mc.calibration.size_model import TableFit
from nqm_mc.spec._checks import ParameterError, check_real

__all__ = ["plan", "critical_batch_sizes"]


def _compute_unit(fit: TableFit) -> float:
    t = fit.table
    if np.all(np.isfinite(t.C)) and t.has_sizes:
        return float(np.median(t.C / (t.N * t.B * t.K)))
    return 1.0


def plan(fit: TableFit, compute: float, *, max_steps: float | None = None,
         max_batch: float | None = None, sizes: Any = None,
         batch_sizes: Any = None) -> dict[str, Any]:
    """Return the compute-optimal (N, B, K) under a compute budget, with bands.

    Compute is in the unit of the table's ``C`` column (fitted as a constant times N B K) or,
    without one, in N B K. Every (N, B) of the grids with K = compute / (unit N B) >= 1 (and
    at most ``max_steps``, B at most ``max_batch``) is evaluated; the best is returned with its
    loss band, the same optimum for every fold fit of the cross-validation (its spread is the
    band of the optimum), and flags when the optimum sits at an edge of a grid or outside the
    fitted data.

    Parameters
    ----------
    fit : TableFit
        The fit.
    compute : float
        The budget (> 0).
    max_steps, max_batch : float, optional
        A step budget and a cap on the batch size.
    sizes : array_like, optional
        Model sizes to consider (default: 49 log-spaced from the smallest fitted N / 4 to the
        largest x 64).
    batch_sizes : array_like, optional
        Batch sizes (default: powers of 2 from 1 to 2^20, capped by ``max_batch``).

    Returns
    -------
    dict
        ``N, B, K, loss`` (the best), ``loss_band`` (lo, hi), ``N_band``, ``B_band``,
        ``K_band`` (over the fold fits), ``flags`` (list of str), ``unit``.
    """
    owner = "plan"
    if not isinstance(fit, TableFit):
        raise ParameterError(f"The 'fit' parameter of {owner} must be a TableFit. Got "
                             f"{type(fit).__name__} instead.")
    compute = check_real("compute", compute, owner, low=0.0)
    if max_steps is not None:
        max_steps = check_real("max_steps", max_steps, owner, low=1.0, closed=(True, True))
    if max_batch is not None:
        max_batch = check_real("max_batch", max_batch, owner, low=1.0, closed=(True, True))
    r = fit.ranges()
    if sizes is None:
        sizes = np.geomspace(r["N"][0] / 4, r["N"][1] * 64, 49) if fit.table.has_sizes \
            else np.array([fit.n_ref])
    sizes = np.asarray(sizes, float).ravel()
    if sizes.size == 0 or np.any(~np.isfinite(sizes) | (sizes <= 0)):
        raise ParameterError(f"The 'sizes' parameter of {owner} must hold model sizes > 0. "
                             f"Got {sizes!r} instead.")
    if batch_sizes is None:
        batch_sizes = 2.0 ** np.arange(0, 21)
    bs = np.asarray(batch_sizes, float).ravel()
    if bs.size == 0 or np.any(~np.isfinite(bs) | (bs < 1)):
        raise ParameterError(f"The 'batch_sizes' parameter of {owner} must hold batch sizes "
                             f">= 1. Got {batch_sizes!r} instead.")
    if max_batch is not None:
        bs = bs[bs <= max_batch]
        if bs.size == 0:
            raise ParameterError(f"The 'max_batch' parameter of {owner} leaves no batch size. "
                                 f"Got {max_batch!r}.")
    unit = _compute_unit(fit)
    Ng, Bg = np.meshgrid(sizes, bs, indexing="ij")
    Kg = np.floor(compute / (unit * Ng * Bg))
    ok = Kg >= 1
    if max_steps is not None:
        ok &= Kg <= max_steps
        Kg = np.minimum(Kg, max_steps)
    if not ok.any():
        raise ParameterError(f"The 'compute' parameter of {owner} affords no run of the grids "
                             f"(K >= 1{' and K <= max_steps' if max_steps else ''}). Got "
                             f"{compute!r}.")
    best: list[tuple[float, float, float, float]] = []
    for coords in fit.members():
        L = np.full(Ng.shape, np.inf)
        L[ok] = fit._eval(coords, Ng[ok], Bg[ok], Kg[ok])
        L[~np.isfinite(L)] = np.inf
        i, j = np.unravel_index(int(np.argmin(L)), L.shape)
        best.append((float(Ng[i, j]), float(Bg[i, j]), float(Kg[i, j]), float(L[i, j])))
    n0, b0, k0, l0 = best[0]
    flags = []
    if fit.table.has_sizes and (n0 == sizes.min() or n0 == sizes.max()):
        flags.append(f"the optimal N = {n0:.3g} is at the edge of the sizes considered "
                     f"[{sizes.min():.3g}, {sizes.max():.3g}]: widen them")
    if b0 == bs.min() or (b0 == bs.max() and (max_batch is None or b0 < max_batch)):
        flags.append(f"the optimal B = {b0:.3g} is at the edge of the batch sizes considered "
                     f"[{bs.min():.3g}, {bs.max():.3g}]")
    if max_batch is not None and b0 == bs.max():
        flags.append(f"the cap on B binds (B = {b0:.3g})")
    if max_steps is not None and k0 >= max_steps:
        flags.append(f"the step budget binds (K = {k0:.3g})")
    flags += [f"optimum outside the fitted data: {f}" for f in fit.flags(
        np.array([n0]), np.array([b0]), np.array([k0]))[0]]
    arr = np.array(best)
    w = fit.width
    return {"compute": compute, "unit": unit, "N": n0, "B": b0, "K": k0, "loss": l0,
            "loss_band": (l0 * math.exp(-w), l0 * math.exp(w)),
            "N_band": (float(arr[:, 0].min()), float(arr[:, 0].max())),
            "B_band": (float(arr[:, 1].min()), float(arr[:, 1].max())),
            "K_band": (float(arr[:, 2].min()), float(arr[:, 2].max())),
            "members": len(best), "flags": flags}


def _steps_to(fit: TableFit, coords: np.ndarray, N: float, bs: np.ndarray,
              target: float, k_max: float = 1e15) -> np.ndarray:
    """Smallest K (real, by bisection in log K) with loss <= target at each batch size."""
    lo = np.zeros(bs.size)
    hi = np.full(bs.size, math.log(k_max))
    Nv = np.full(bs.size, N)
    reach = fit._eval(coords, Nv, bs, np.exp(hi)) <= target
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = fit._eval(coords, Nv, bs, np.exp(mid)) <= target
        hi = np.where(below, mid, hi)
        lo = np.where(below, lo, mid)
    return np.where(reach, np.exp(hi), np.inf)


def _fit_critical(bs: np.ndarray, steps: np.ndarray) -> tuple[float, float]:
    ok = np.isfinite(steps)
    if ok.sum() < 3:
        return math.nan, math.nan
    b, s = bs[ok], steps[ok]

    def resid(z: np.ndarray) -> np.ndarray:
        return np.log(s) - z[0] - np.log1p(np.exp(z[1]) / b)

    f = optimize.least_squares(resid, [math.log(s.min()), math.log(math.sqrt(b[0] * b[-1]))],
                               bounds=([-np.inf, math.log(b[0]) - 20], [np.inf,
                                                                       math.log(b[-1]) + 20]))
    return float(math.exp(f.x[1])), float(math.exp(f.x[0]))


def critical_batch_sizes(fit: TableFit, sizes: Any = None, *, target: Any = None,
                         excess: float = 0.1, batch_sizes: Any = None) -> list[dict[str, Any]]:
    """Return the critical batch size per model size, with bands over the fold fits.

    For each size N, the steps S(B) to reach the target are found at each batch size (closed
    form, bisection in K) and B* of S(B) = S_min (1 + B* / B) is fitted. The default target of
    a size is its asymptote (floor plus approximation error) times (1 + ``excess``); batch
    sizes whose noise floor lies above the target do not reach it and are left out of the
    fit. A B* outside the batch sizes tuned is not resolved by them: it is reported as nan
    with the reason; one outside the batch sizes of the data is flagged.

    Parameters
    ----------
    fit : TableFit
        The fit.
    sizes : array_like, optional
        Model sizes (default: the fitted ones).
    target : float or array_like, optional
        Target loss per size (default: asymptote x (1 + ``excess``)).
    excess : float, default 0.1
        Relative excess over the asymptote of the default target.
    batch_sizes : array_like, optional
        Batch sizes (default: powers of 2 from 1 to 2^24).

    Returns
    -------
    list of dict
        Per size: ``N``, ``target``, ``B_crit`` (nan if not resolved), ``band`` (lo, hi over
        the best fit and the fold fits), ``S_min``, ``reason`` ('' or why B_crit is nan), ``flags``.
    """
    owner = "critical_batch_sizes"
    excess = check_real("excess", excess, owner, low=0.0)
    if sizes is None:
        sizes = np.unique(fit.table.N) if fit.table.has_sizes else np.array([fit.n_ref])
    sizes = np.atleast_1d(np.asarray(sizes, float))
    if np.any(~np.isfinite(sizes) | (sizes <= 0)):
        raise ParameterError(f"The 'sizes' parameter of {owner} must hold sizes > 0. Got "
                             f"{sizes!r} instead.")
    bs = (2.0 ** np.arange(0, 25)) if batch_sizes is None else \
        np.asarray(batch_sizes, float).ravel()
    if bs.size < 3 or np.any(~np.isfinite(bs) | (bs < 1)):
        raise ParameterError(f"The 'batch_sizes' parameter of {owner} must hold at least 3 "
                             f"batch sizes >= 1. Got {batch_sizes!r} instead.")
    bs = np.sort(bs)
    if target is None:
        targets = fit.asymptote(sizes) * (1.0 + excess)
    else:
        targets = np.broadcast_to(np.asarray(target, float), sizes.shape).astype(float)
        if np.any(~np.isfinite(targets) | (targets <= 0)):
            raise ParameterError(f"The 'target' parameter of {owner} must be > 0. Got "
                                 f"{target!r} instead.")
    out = []
    for n, tgt in zip(sizes, targets, strict=True):
        vals = []
        s_min = math.nan
        reason = ""
        for k, coords in enumerate(fit.members()):
            steps = _steps_to(fit, coords, float(n), bs, float(tgt))
            bc, sm = _fit_critical(bs, steps)
            if k == 0:
                s_min = sm
                if not np.isfinite(bc):
                    reason = (f"target {tgt:.4g} is not reached at 3 or more batch sizes "
                              f"(asymptote {float(fit.asymptote(n)[0]):.4g})")
                elif bc < bs[0] or bc > bs[-1]:
                    reason = (f"fitted B* = {bc:.3g} lies outside the batch sizes "
                              f"[{bs[0]:.3g}, {bs[-1]:.3g}]: not resolved")
                    bc = math.nan
            elif np.isfinite(bc) and not (bs[0] <= bc <= bs[-1]):
                bc = math.nan
            vals.append(bc)
        v = np.array(vals)
        fin = v[np.isfinite(v)]  # the best fit and the fold fits
        band = (float(fin.min()), float(fin.max())) if fin.size else (math.nan, math.nan)
        flags = []
        b_lo, b_hi = fit.ranges()["B"]
        if np.isfinite(v[0]) and not b_lo <= v[0] <= b_hi:
            flags.append(f"B* = {v[0]:.3g} lies outside the batch sizes of the data "
                         f"[{b_lo:.3g}, {b_hi:.3g}]: an extrapolation of the fit")
        flags += [f for f in fit.flags(np.array([n]), np.array([b_lo]), np.array([
            fit.ranges()["K"][0]]))[0] if f.startswith("N ")]
        out.append({"N": float(n), "target": float(tgt), "B_crit": float(v[0]), "band": band,
                    "S_min": s_min, "reason": reason, "flags": flags})
    return out
