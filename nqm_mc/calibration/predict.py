"""Predictions of a calibration, each with a band over the parameter samples.

Every prediction is computed on the best fit (the band's ``value``) and on each sample
(bootstrap replicate), and the band is the ``level`` quantile range over the samples. Targets
are on the measured scale: each member (best fit or sample) must bring its NQM below
``target - floor``, and a target at or below a member's floor is unreachable there (``inf``).
Steps to target and tuning split off the groups a learning rate leaves frozen (alpha h^(1-p)
below :data:`FROZEN_X`, where the exact engine would report divergence) and add their constant
loss to the floor; see :func:`split_frozen`.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from nqm_mc.calibration.evaluate import Band, Fitted, model_loss, one_thread
from nqm_mc.exact.engine import steps_to_target as _steps_one
from nqm_mc.exact.engine import steps_to_target_batch
from nqm_mc.spec._checks import ParameterError, check_choice, check_int, check_real
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import SGD, HeavyBall, Optimizer
from nqm_mc.studies.scaling import ScalingResult, reference_grid

__all__ = ["predict_loss", "steps_to_target", "tuned", "critical_batch_size"]

#: coarse tuning grid (learning rates, momenta or EMA decays): one tuning per sample
DEFAULT_GRID = (56, 12)
#: default batch sizes of the critical batch size: powers of 2 from 1 to 2^20
DEFAULT_BATCHES = tuple(2 ** k for k in range(0, 21, 2))


def _check_optimizer(opt: Any, owner: str) -> Optimizer:
    if not isinstance(opt, Optimizer) or not opt.is_linear:
        raise ParameterError(f"The 'optimizer' parameter of {owner} must be SGD, HeavyBall or "
                             f"Nesterov without clipping. Got {opt!r} instead.")
    return opt


def _check_batches(batch_sizes: Any, owner: str) -> np.ndarray:
    try:
        b = np.atleast_1d(np.asarray(batch_sizes))
        ok = b.ndim == 1 and b.size > 0 and b.dtype.kind in "iuf" and bool(
            np.all(np.isfinite(b.astype(float)))) and bool(np.all(b == np.round(b))) and bool(
            np.all((b >= 1) & (b <= 2 ** 53)))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"The 'batch_sizes' parameter of {owner} must be a non-empty list "
                             f"of integer batch sizes in [1, 2^53]. Got {batch_sizes!r} "
                             "instead.")
    return b.astype(np.int64)


# ------------------------------------------------------------------ frozen directions
#: A group is frozen at learning rate alpha when x = alpha h^(1-p) < FROZEN_X. Far in a fitted
#: tail (dim = 1e8, a = 3.3: h ~ 1e-26 h1) 1 - x rounds to 1 and the exact engine counts the
#: group as marginal ("diverges"), although over any horizon with x t << 1 its loss stays at
#: L0 = 0.5 n h (mu0^2 + v0). The engine fails below x ~ 1e-16 (1 - x, or 1 + beta - x, no
#: longer differs from 1, or its 2^62-th power from 1 by 1e-200); 1e-14 freezes those with a
#: factor ~100 of margin, and the decay changes a frozen loss by at most 2 k x t < 2e-14 k t
#: relative to L0 (k = (1 + beta) / (1 - beta) bounds the momentum amplification). With the
#: noise accumulation 0.5 n h^(1-2p) (k alpha)^2 c t / B this bounds the change of the frozen
#: loss by ``drift * t``: a crossing later than FROZEN_TOL * goal / drift is not resolved and
#: is reported as inf (for the fit above at alpha = 0.5, B = 8 that is after ~2e9 steps).
FROZEN_X = 1e-14
#: the largest change of the frozen loss accepted at a reported crossing, relative to the goal
FROZEN_TOL = 1e-6


class Frozen(NamedTuple):
    """A model with its frozen groups split off (see :data:`FROZEN_X`)."""

    model: NQM | None  # the other groups; None when every group is frozen
    loss: float  # the frozen groups' constant loss, sum 0.5 n h (mu0^2 + v0)
    decay: float  # sum 2 h^(1-p) L0: the loss's decrease per step, per unit k alpha
    noise: float  # sum 0.5 n h^(1-2p) c: the noise's growth per step, per unit (k alpha)^2 / B


def split_frozen(model: NQM, frozen: np.ndarray, p: float) -> Frozen:
    """Split the groups ``frozen`` (a boolean mask) off ``model``, with their loss and drift."""
    h, c, n = model.curvatures, model.noise_variances, model.multiplicities
    mu, v = model.initial_mean, model.initial_variance
    hf, nf = h[frozen], n[frozen].astype(float)
    loss0 = 0.5 * nf * hf * (mu[frozen] ** 2 + v[frozen])
    with np.errstate(over="ignore"):
        noise = float(np.sum(0.5 * nf * hf ** (1.0 - 2.0 * p) * c[frozen]))
    keep = ~frozen
    rest = (NQM(h[keep], c[keep], n[keep], mu[keep], v[keep], name=model.name)
            if keep.any() else None)
    return Frozen(rest, float(loss0.sum()), float(np.sum(2.0 * hf ** (1.0 - p) * loss0)), noise)


def _grid_steps(model: NQM, goal: float, optimizer: Optimizer, batch: Any, lrs: np.ndarray,
                second: np.ndarray | None = None, key: str = "momenta") -> np.ndarray:
    """Return the steps to ``goal`` (inf: not reached) over lrs x second x batch.

    ``second`` (momenta or EMA decays, by ``key``) may be None. Each learning rate is run on
    ``model`` without its groups frozen at that rate (their constant loss moved to the goal);
    without frozen groups this is :func:`steps_to_target_batch` on ``model``.
    """
    p = optimizer.preconditioning
    masks = lrs[:, None] * model.curvatures ** (1.0 - p) < FROZEN_X
    kw: dict[str, Any] = {} if second is None else {key: second[None, :]}
    if not masks.any():
        s = steps_to_target_batch(model, optimizer, goal, batch, lrs[:, None], **kw)
        return np.where(s >= 0, s, np.inf)
    mom = second[None, :] if second is not None and key == "momenta" else 0.0
    shape = np.broadcast_shapes((lrs.size, 1), np.shape(kw.get(key, 0.0)), np.shape(batch))
    out = np.full(shape, np.inf)
    _, first, which = np.unique(masks, axis=0, return_index=True, return_inverse=True)
    for j, i in enumerate(first):
        rows = np.flatnonzero(which.ravel() == j)
        fz = split_frozen(model, masks[i], p)
        rest = goal - fz.loss
        if fz.model is None or rest <= 0:
            out[rows] = 0.0 if rest > 0 else np.inf
            continue
        s = steps_to_target_batch(fz.model, optimizer, rest, batch, lrs[rows, None], **kw)
        ka = (1.0 + mom) / (1.0 - mom) * lrs[rows, None]
        with np.errstate(over="ignore", divide="ignore"):
            horizon = FROZEN_TOL * goal / (ka * fz.decay + ka ** 2 * fz.noise / batch)
        out[rows] = np.where((s >= 0) & (s <= horizon), s, np.inf)
    return out


def _members(cal: Fitted, max_samples: int | None = None) -> list[tuple[NQM, float]]:
    return [(cal.model, cal.floor)] + cal._members(max_samples)


def predict_loss(cal: Fitted, optimizer: Optimizer, batch_size: int, steps: Any) -> Band:
    """Measured-scale loss E[L(t)] + floor of a configuration at ``steps``, with its band.

    Parameters
    ----------
    cal : Calibration
        The fit.
    optimizer : SGD, HeavyBall or Nesterov
        Constant learning rate or schedule.
    batch_size : int
        Batch size.
    steps : array_like of int
        Steps (>= 0).

    Returns
    -------
    Band
        Arrays of the length of ``steps``.
    """
    owner = "Calibration.predict_loss"
    _check_optimizer(optimizer, owner)
    b = int(_check_batches([batch_size], owner)[0])
    try:
        t = np.atleast_1d(np.asarray(steps))
        ok = t.ndim == 1 and t.size > 0 and t.dtype.kind in "iu" and bool(np.all(t >= 0))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ParameterError(f"The 'steps' parameter of {owner} must be a non-empty 1-d array "
                             f"of integer steps >= 0. Got {steps!r} instead.")
    out = []
    with one_thread(), np.errstate(all="ignore"):
        for model, floor in _members(cal):
            v = model_loss(model, optimizer, b, t.astype(np.int64)) + floor
            out.append(np.where(np.isfinite(v), v, np.inf))
    return cal._band(out[0], out[1:])


def _steps_member(model: NQM, floor: float, target: float, optimizer: Optimizer,
                  batches: np.ndarray) -> np.ndarray:
    goal = target - floor
    if goal <= 0:
        return np.full(batches.size, np.inf)
    if optimizer.is_constant:
        beta = np.array([float(getattr(optimizer, "momentum", 0.0))])
        return _grid_steps(model, goal, optimizer, batches[None, :],
                           np.array([optimizer.base_learning_rate]),
                           beta if optimizer.has_momentum else None)[0]
    out = np.empty(batches.size)
    for k, b in enumerate(batches):
        r = _steps_one(model, optimizer, int(b), goal)
        out[k] = float(r.steps) if r.steps is not None else np.inf
    return out


def steps_to_target(cal: Fitted, target: float, optimizer: Optimizer,
                    batch_sizes: Any) -> Band:
    """Return the steps to bring the measured-scale loss below ``target``, per batch size.

    Parameters
    ----------
    cal : Calibration
        The fit.
    target : float
        Target on the measured scale (> 0). At or below the floor it is unreachable: ``inf``.
    optimizer : SGD, HeavyBall or Nesterov
        Its learning rate (constant or a schedule) and momentum are used as given.
    batch_sizes : array_like of int
        Batch sizes.

    Returns
    -------
    Band
        Arrays over the batch sizes; ``inf`` where unreachable or divergent (or, with frozen
        groups, later than the frozen loss is known to hold: :data:`FROZEN_TOL`).
    """
    owner = "Calibration.steps_to_target"
    target = check_real("target", target, owner, low=0.0)
    _check_optimizer(optimizer, owner)
    bs = _check_batches(batch_sizes, owner)
    with one_thread():
        out = [_steps_member(m, f, target, optimizer, bs) for m, f in _members(cal)]
    return cal._band(out[0], out[1:])


#: decades of learning rate below the stability limit searched by the tuning (SGD, and heavy
#: ball or a tuned EMA decay), as in the reference grids
GRID_DECADES = {"sgd": 5.5, "heavy_ball": 9.0, "ema": 9.0}
#: times the tuning grid is extended downwards when the tuned rate sits at its lowest point
MAX_EXTENSIONS = 4


def stability_grid(model: NQM, family: str, grid: tuple[int, int], p: float,
                   ema: float | bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the tuning grid whose largest learning rate is the model's stability limit.

    The limit is 2 / h_max^(1-p) for SGD (with or without EMA) and 4 / h_max^(1-p) for heavy
    ball (the limit 2 (1 + beta) / h of momentum beta -> 1); the grid spans
    :data:`GRID_DECADES` below it, log-spaced with ``grid[0]`` points. Momenta or EMA decays
    are those of the reference grid.
    """
    grid_family: Any = "ema" if ema is True else family
    _, seconds = reference_grid(grid_family, grid)
    h = float(np.max(model.curvatures)) if model is not None else 1.0
    limit = 4.0 if family == "heavy_ball" else 2.0
    with np.errstate(over="ignore", divide="ignore"):
        top = limit / h ** (1.0 - p) * (1.0 - 1e-6)
    if not np.isfinite(top) or top <= 0:
        top = limit
    alphas = top * np.logspace(-GRID_DECADES[grid_family], 0.0, grid[0])
    return alphas, seconds


def _tune_grid(model: NQM, family: str, bs: np.ndarray, goal: float, p: float,
               ema: float | bool | None, grid: tuple[int, int],
               alphas: np.ndarray | None = None) -> ScalingResult:
    """Tune configuration by configuration over ``alphas`` (default: :func:`stability_grid`).

    Groups frozen at a learning rate are split off (see :func:`_grid_steps`).
    """
    fixed = None if ema is None or isinstance(ema, bool) else float(ema)
    a_default, seconds = stability_grid(model, family, grid, p, ema)
    alphas = a_default if alphas is None else alphas
    if family == "heavy_ball":
        opt: Optimizer = HeavyBall(0.1, 0.5, preconditioning=p, ema=fixed)
    else:
        opt = SGD(0.1, preconditioning=p, ema=0.5 if ema is True else fixed)
        seconds = seconds if ema is True else None
    steps, lrs, secs = (np.full(bs.size, np.inf), np.full(bs.size, np.nan),
                        np.full(bs.size, np.nan))
    for k, b in enumerate(bs):
        s = _grid_steps(model, goal, opt, int(b), alphas, seconds,
                        "ema_decays" if ema is True else "momenta")
        j = np.unravel_index(int(np.argmin(s)), s.shape)
        steps[k] = s[j]
        lrs[k] = alphas[j[0]]
        if seconds is not None:
            secs[k] = seconds[j[1]]
    lower = np.array([model.lower_bound_steps(goal, float(b)) for b in bs])
    return ScalingResult("ema" if ema is True else family, p, goal, "grid", bs, steps, lrs,
                         secs, lower, meta={"ema": ema})


def _tune_member(model: NQM, floor: float, target: float, family: str, bs: np.ndarray, p: float,
                 ema: float | bool | None, grid: tuple[int, int]) -> ScalingResult:
    goal = target - floor
    if goal <= 0:
        nan = np.full(bs.size, np.nan)
        return ScalingResult(family, p, goal, "grid", bs, np.full(bs.size, np.inf), nan,
                             nan.copy(), nan.copy(), meta={"unreachable": True})
    if ema is True and family != "sgd":
        raise ParameterError("ema=True (a tuned EMA decay) is available with family='sgd'; "
                             "give a fixed decay for heavy_ball.")
    alphas, _ = stability_grid(model, family, grid, p, ema)
    res = _tune_grid(model, family, bs, goal, p, ema, grid, alphas)
    grid_family = "ema" if ema is True else family
    step = np.logspace(-GRID_DECADES[grid_family], 0.0, grid[0])[:-1]
    for _ in range(MAX_EXTENSIONS):
        # extend where the optimum is the lowest rate, or no rate reaches the target (a lower
        # rate has a lower noise floor)
        low = (np.isfinite(res.steps) & (res.learning_rate <= alphas[0])) | ~np.isfinite(
            res.steps)
        if not low.any():
            break
        alphas = np.concatenate([alphas[0] * step, alphas])
        res = _tune_grid(model, family, bs, goal, p, ema, grid, alphas)
    notes = []
    fin = np.isfinite(res.steps)
    low = fin & (res.learning_rate <= alphas[0])
    if low.any():
        notes.append(f"the tuned learning rate is the smallest tried ({alphas[0]:.3g}, after "
                     f"{MAX_EXTENSIONS} extensions of the grid) at B = "
                     f"{', '.join(str(int(b)) for b in bs[low])}: the optimum may lie lower")
    if not fin.all():
        notes.append(f"the target is not reached at any learning rate tried (down to "
                     f"{alphas[0]:.3g}) at B = "
                     f"{', '.join(str(int(b)) for b in bs[~fin])}")
    high = fin & (res.learning_rate >= alphas[-1])
    if high.any():
        notes.append(f"the tuned learning rate sits at the fitted stability limit "
                     f"({alphas[-1]:.4g}) at B = {', '.join(str(int(b)) for b in bs[high])}: "
                     "faster would diverge on the fitted model")
    res.meta["notes"] = notes
    res.meta["alpha_range"] = [float(alphas[0]), float(alphas[-1])]
    return res


def _grid(grid_size: Any, owner: str) -> tuple[int, int]:
    try:
        g = tuple(grid_size)
    except TypeError:
        g = ()
    if len(g) != 2:
        raise ParameterError(f"The 'grid_size' parameter of {owner} must be a pair (n_alpha, "
                             f"n_second). Got {grid_size!r} instead.")
    return (check_int("grid_size[0]", g[0], owner, low=2, high=10_000),
            check_int("grid_size[1]", g[1], owner, low=1, high=10_000))


def _check_family(cal: Fitted, target: Any, family: Any, p: Any, ema: Any,
                  owner: str) -> tuple[float, str, float, float | bool | None]:
    target = check_real("target", target, owner, low=0.0)
    family = check_choice("family", family, owner, ("sgd", "heavy_ball"))
    p = check_real("p", p, owner, low=0.0, high=1.0, closed=(True, True))
    if ema is not None and not isinstance(ema, bool):
        ema = check_real("ema", ema, owner, low=0.0, high=1.0, closed=(True, False))
    return target, family, p, ema


def _tuned_results(cal: Fitted, target: float, bs: np.ndarray, family: str, p: float,
                   ema: float | bool | None, max_samples: int,
                   grid: tuple[int, int]) -> list[ScalingResult]:
    with one_thread():
        return [_tune_member(m, f, target, family, bs, p, ema, grid)
                for m, f in _members(cal, max_samples)]


def tuned(cal: Fitted, target: float, batch_sizes: Any, family: str = "sgd",
          p: float = 0.0, ema: float | bool | None = None, *, max_samples: int = 24,
          grid_size: tuple[int, int] = DEFAULT_GRID) -> dict[str, Any]:
    """Tuned steps to ``target`` and tuned learning rate per batch size, with bands.

    Each member (best fit and up to ``max_samples`` samples) is tuned with
    the grid of :func:`stability_grid` (``grid_size`` points, its top at the member's stability
    limit, extended downwards while the optimum sits at its lowest rate) for the
    target ``target - floor`` of that member.

    Parameters
    ----------
    cal : Calibration
        The fit.
    target : float
        Target on the measured scale.
    batch_sizes : array_like of int
        Batch sizes.
    family : {"sgd", "heavy_ball"}
        The optimizer family (heavy ball tunes the momentum too).
    p : float, default 0
        Preconditioning power.
    ema : None, True or float
        None: no EMA; True: SGD with a tuned EMA decay; a float: that fixed EMA decay.
    max_samples : int, default 24
        Samples used for the bands (tuning is the costly prediction).
    grid_size : (int, int)
        Learning rates and momenta (or EMA decays) of the grid.

    Returns
    -------
    dict
        ``batch_sizes``; Bands ``steps``, ``learning_rate``, ``second`` (momentum or EMA decay,
        nan for SGD) and ``effective_learning_rate``; ``critical_batch_size`` (a Band, the
        "fit" definition of :func:`critical_batch_size` over these batch sizes);
        ``reachable`` (bool) and ``reason``.
    """
    owner = "Calibration.tuned"
    target, family, p, ema = _check_family(cal, target, family, p, ema, owner)
    bs = _check_batches(batch_sizes, owner)
    max_samples = check_int("max_samples", max_samples, owner, low=0, high=100_000)
    res = _tuned_results(cal, target, bs, family, p, ema, max_samples, _grid(grid_size, owner))
    out: dict[str, Any] = {"batch_sizes": bs, "family": family, "p": p, "ema": ema,
                           "target": target}
    for key in ("steps", "learning_rate", "second", "effective_learning_rate"):
        vals = [np.asarray(getattr(r, key), dtype=float) for r in res]
        if key != "steps":
            vals = [np.where(np.isfinite(v), v, np.nan) for v in vals]
            band_vals = [v for v in vals[1:] if np.all(np.isfinite(v))]
            out[key] = cal._band(vals[0], band_vals) if key != "second" or family != "sgd" \
                or ema is True else cal._band(vals[0], [])
        else:
            out[key] = cal._band(vals[0], vals[1:])
    bs_f = bs.astype(float)
    crit = [_critical(r, "fit", bs_f) for r in res]
    notes = list(res[0].meta.get("notes", []))
    out["critical_batch_size"] = _critical_band(cal, crit, bs_f)
    if out["critical_batch_size"].note:
        notes.append(out["critical_batch_size"].note)
    out["notes"] = notes
    ok, why = cal.reachable(target)
    out["reachable"], out["reason"] = ok, why
    return out


def _critical(r: ScalingResult, definition: str, bs: np.ndarray) -> float:
    """B_crit of one member; nan when it lies outside the batch sizes tuned."""
    c = r.critical_batch_size()[definition] if np.all(np.isfinite(r.steps)) else None
    if c is None:
        return np.inf
    if not bs.min() <= c <= bs.max():
        return np.nan
    return float(c)


def _critical_band(cal: Fitted, crit: list[float], bs: np.ndarray) -> Band:
    """Return the band of B_crit; a best fit outside the batch sizes tuned gives nan and a note."""
    v = crit[0]
    rest = [c for c in crit[1:] if not np.isnan(c)]
    band = cal._band(v, rest)
    if np.isnan(v):
        return Band(np.nan, np.nan, np.nan, band.level,
                    f"the fitted critical batch size lies outside the batch sizes tuned "
                    f"[{bs.min():.4g}, {bs.max():.4g}]: not resolved (tune over a wider "
                    "range, or the fit does not constrain it)")
    if np.isinf(v):
        return Band(np.inf, band.lo, band.hi, band.level,
                    "the target is not reached at every batch size tuned: no critical batch "
                    "size")
    return band


def critical_batch_size(cal: Fitted, target: float, family: str = "sgd", p: float = 0.0,
                        ema: float | bool | None = None, *, batch_sizes: Any = DEFAULT_BATCHES,
                        definition: str = "fit", max_samples: int = 24,
                        grid_size: tuple[int, int] = DEFAULT_GRID) -> Band:
    """Return the critical batch size of the tuned family, with its band.

    Parameters
    ----------
    cal : Calibration
        The fit.
    target : float
        Target on the measured scale.
    family, p, ema
        As in :func:`tuned`.
    batch_sizes : array_like of int
        Batch sizes tuned (default powers of 4 from 1 to 2^20).
    definition : {"fit", "doubling"}
        "fit": B* of S(B) = S_min (1 + B* / B) fitted to the tuned steps; "doubling": the
        smallest batch size whose steps exceed twice perfect scaling from the smallest one
        (:meth:`ScalingResult.critical_batch_size`).
    max_samples : int, default 24
        Samples used for the band.
    grid_size : (int, int)
        The tuning grid.

    Returns
    -------
    Band
        Floats; ``inf`` when the target is unreachable or no batch size qualifies; ``nan``
        with a ``note`` when the fitted value lies outside ``batch_sizes`` (not resolved by
        them).
    """
    owner = "Calibration.critical_batch_size"
    target, family, p, ema = _check_family(cal, target, family, p, ema, owner)
    definition = check_choice("definition", definition, owner, ("fit", "doubling"))
    bs = _check_batches(batch_sizes, owner)
    max_samples = check_int("max_samples", max_samples, owner, low=0, high=100_000)
    res = _tuned_results(cal, target, bs, family, p, ema, max_samples, _grid(grid_size, owner))
    vals = [_critical(r, definition, bs.astype(float)) for r in res]
    return _critical_band(cal, vals, bs.astype(float))
