"""Predictions of a calibration, each with a band over the parameter samples.

Every prediction is computed on the best fit (the band's ``value``) and on each sample
(bootstrap replicate), and the band is the ``level`` quantile range over the samples. Targets
are on the measured scale: each member (best fit or sample) must bring its NQM below
``target - floor``, and a target at or below a member's floor is unreachable there (``inf``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from nqm_mc.exact.engine import steps_to_target as _steps_one
from nqm_mc.exact.engine import steps_to_target_batch
from nqm_mc.spec._checks import ParameterError, check_choice, check_int, check_real
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import SGD, HeavyBall, Optimizer
from nqm_mc.studies.scaling import ScalingResult, reference_grid, tune

if TYPE_CHECKING:
    from nqm_mc.calibration.fit import Band, Calibration

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


def _members(cal: Calibration, max_samples: int | None = None) -> list[tuple[NQM, float]]:
    return [(cal.model, cal.floor)] + cal._members(max_samples)


def predict_loss(cal: Calibration, optimizer: Optimizer, batch_size: int, steps: Any) -> Band:
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
    from nqm_mc.calibration.fit import _one_thread, model_loss
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
    with _one_thread(), np.errstate(all="ignore"):
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
        kw: dict[str, Any] = {}
        if optimizer.has_momentum:
            kw["momenta"] = float(getattr(optimizer, "momentum", 0.0))
        s = steps_to_target_batch(model, optimizer, goal, batches,
                                  optimizer.base_learning_rate, **kw).astype(float)
        s[s < 0] = np.inf
        return s
    out = np.empty(batches.size)
    for k, b in enumerate(batches):
        r = _steps_one(model, optimizer, int(b), goal)
        out[k] = float(r.steps) if r.steps is not None else np.inf
    return out


def steps_to_target(cal: Calibration, target: float, optimizer: Optimizer,
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
        Arrays over the batch sizes; ``inf`` where unreachable or divergent.
    """
    from nqm_mc.calibration.fit import _one_thread
    owner = "Calibration.steps_to_target"
    target = check_real("target", target, owner, low=0.0)
    _check_optimizer(optimizer, owner)
    bs = _check_batches(batch_sizes, owner)
    with _one_thread():
        out = [_steps_member(m, f, target, optimizer, bs) for m, f in _members(cal)]
    return cal._band(out[0], out[1:])


def _tune_fixed_ema(model: NQM, family: str, bs: np.ndarray, goal: float, p: float,
                    ema: float, grid: tuple[int, int]) -> ScalingResult:
    """Tune the learning rate (and momentum) at a fixed EMA decay, on the reference grid."""
    alphas, seconds = reference_grid("heavy_ball" if family == "heavy_ball" else "sgd", grid)
    steps, lrs, secs = (np.full(bs.size, np.inf), np.full(bs.size, np.nan),
                        np.full(bs.size, np.nan))
    for k, b in enumerate(bs):
        if family == "heavy_ball":
            opt: Optimizer = HeavyBall(0.1, 0.5, preconditioning=p, ema=ema)
            assert seconds is not None
            s = steps_to_target_batch(model, opt, goal, int(b), alphas[:, None],
                                      seconds[None, :]).astype(float)
        else:
            opt = SGD(0.1, preconditioning=p, ema=ema)
            s = steps_to_target_batch(model, opt, goal, int(b), alphas).astype(float)
        s[s < 0] = np.inf
        j = np.unravel_index(int(np.argmin(s)), s.shape)
        steps[k] = s[j]
        lrs[k] = alphas[j[0]]
        if family == "heavy_ball":
            assert seconds is not None
            secs[k] = seconds[j[1]]
    lower = np.array([model.lower_bound_steps(goal, float(b)) for b in bs])
    return ScalingResult(family, p, goal, "grid", bs, steps, lrs, secs, lower,
                         meta={"ema": ema})


def _tune_member(model: NQM, floor: float, target: float, family: str, bs: np.ndarray, p: float,
                 ema: float | bool | None, grid: tuple[int, int]) -> ScalingResult:
    goal = target - floor
    if goal <= 0:
        nan = np.full(bs.size, np.nan)
        return ScalingResult(family, p, goal, "grid", bs, np.full(bs.size, np.inf), nan,
                             nan.copy(), nan.copy(), meta={"unreachable": True})
    if ema is None or ema is False:
        return tune(model, family, bs, goal, preconditioning=p, grid_size=grid)  # type: ignore
    if ema is True:
        if family != "sgd":
            raise ParameterError("ema=True (a tuned EMA decay) is available with family='sgd'; "
                                 "give a fixed decay for heavy_ball.")
        return tune(model, "ema", bs, goal, preconditioning=p, grid_size=grid)
    return _tune_fixed_ema(model, family, bs, goal, p, float(ema), grid)


def _check_family(cal: Calibration, target: Any, family: Any, p: Any, ema: Any,
                  owner: str) -> tuple[float, str, float, float | bool | None]:
    target = check_real("target", target, owner, low=0.0)
    family = check_choice("family", family, owner, ("sgd", "heavy_ball"))
    p = check_real("p", p, owner, low=0.0, high=1.0, closed=(True, True))
    if ema is not None and not isinstance(ema, bool):
        ema = check_real("ema", ema, owner, low=0.0, high=1.0, closed=(True, False))
    return target, family, p, ema


def _tuned_results(cal: Calibration, target: float, bs: np.ndarray, family: str, p: float,
                   ema: float | bool | None, max_samples: int,
                   grid: tuple[int, int]) -> list[ScalingResult]:
    from nqm_mc.calibration.fit import _one_thread
    with _one_thread():
        return [_tune_member(m, f, target, family, bs, p, ema, grid)
                for m, f in _members(cal, max_samples)]


def tuned(cal: Calibration, target: float, batch_sizes: Any, family: str = "sgd",
          p: float = 0.0, ema: float | bool | None = None, *, max_samples: int = 24,
          grid_size: tuple[int, int] = DEFAULT_GRID) -> dict[str, Any]:
    """Tuned steps to ``target`` and tuned learning rate per batch size, with bands.

    Each member (best fit and up to ``max_samples`` samples) is tuned with
    :func:`nqm_mc.studies.scaling.tune` on the reference grid (``grid_size`` points) for the
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
    res = _tuned_results(cal, target, bs, family, p, ema, max_samples, tuple(grid_size))
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
    crit = [_critical(r, "fit") for r in res]
    out["critical_batch_size"] = cal._band(crit[0], crit[1:])
    ok, why = cal.reachable(target)
    out["reachable"], out["reason"] = ok, why
    return out


def _critical(r: ScalingResult, definition: str) -> float:
    c = r.critical_batch_size()[definition] if np.all(np.isfinite(r.steps)) else None
    return np.inf if c is None else float(c)


def critical_batch_size(cal: Calibration, target: float, family: str = "sgd", p: float = 0.0,
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
        Floats; ``inf`` when the target is unreachable or no batch size qualifies.
    """
    owner = "Calibration.critical_batch_size"
    target, family, p, ema = _check_family(cal, target, family, p, ema, owner)
    definition = check_choice("definition", definition, owner, ("fit", "doubling"))
    bs = _check_batches(batch_sizes, owner)
    max_samples = check_int("max_samples", max_samples, owner, low=0, high=100_000)
    res = _tuned_results(cal, target, bs, family, p, ema, max_samples, tuple(grid_size))
    vals = [_critical(r, definition) for r in res]
    return cal._band(vals[0], vals[1:])
