"""Batch-size scaling studies.

Tuned steps to target per batch size, optimal hyperparameters, the lower bound and critical
batch sizes (the steps to target are the exact first crossings of ``docs/theory.md``,
section 4).

Every number comes from the exact engine (true first crossings), vectorised over a whole
hyperparameter grid per call. ``search="grid"`` uses the reference notebook's grids;
``search="refine"`` then zooms into the best cell with finer log-spaced grids (never worse
than the grid: the grid's optimum stays a candidate).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize

from nqm_mc.exact._args import _check_model
from nqm_mc.exact.targets import steps_to_target_batch
from nqm_mc.spec._checks import MAX_BATCH, ParameterError, check_choice, check_int, check_real
from nqm_mc.spec.model import NQM
from nqm_mc.spec.optimizers import SGD, HeavyBall

FAMILIES = ("sgd", "heavy_ball", "ema")
# tune seeds a batch size's search with the previous size's optimum when the two are within
# this factor (the usual sweeps step by 2 or 4; 4 then 2^18 is 17x slower seeded than not)
HINT_RATIO = 16.0

Family = Literal["sgd", "heavy_ball", "ema"]
Method = Literal["exact", "reference"]


def reference_grid(family: Family,
                   size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Return the reference notebook's hyperparameter grid of a family.

    Parameters
    ----------
    family : {"sgd", "heavy_ball", "ema"}
        The optimizer family.
    size : (int, int), optional
        (n_alpha, n_second) for a coarser grid (default (100, 20)).

    Returns
    -------
    alphas : ndarray
        SGD: ``logspace(-5, 0.5, 100)``; momentum and EMA: ``logspace(-8, 1, 100)``.
    seconds : ndarray or None
        Momenta or EMA decays ``1 - logspace(-5, 0, 20)``; None for SGD.
    """
    na, nb = size or (100, 20)
    if family == "sgd":
        return np.logspace(-5, 0.5, na), None
    return np.logspace(-8, 1, na), 1.0 - np.logspace(-5, 0, nb)


def _optimizer(family: str, p: float) -> Any:
    if family == "heavy_ball":
        return HeavyBall(0.1, 0.5, preconditioning=p)
    if family == "ema":
        return SGD(0.1, preconditioning=p, ema=0.5)
    return SGD(0.1, preconditioning=p)


def _evaluate(model: NQM, family: str, p: float, target: float, batch: float,
              alphas: np.ndarray, seconds: Any, method: str,
              caps: np.ndarray | None = None) -> np.ndarray:
    """Return steps over the grid alphas x seconds (momenta or EMA decays) at one batch size.

    Failures (unreachable, divergent, not within the cap) become +inf.
    """
    opt = _optimizer(family, p)
    kw: dict[str, Any] = {}
    if family == "heavy_ball":
        kw["momenta"] = seconds[None, :]
    elif family == "ema":
        kw["ema_decays"] = seconds[None, :]
    a = alphas[:, None] if seconds is not None else alphas
    s = steps_to_target_batch(model, opt, target, batch, a, method=method, caps=caps, **kw)
    s = s.astype(float)
    s[s < 0] = np.inf
    return s


def grid_minimum(model: NQM, family: Family, p: float, target: float, batch: float,
                 alphas: np.ndarray, seconds: np.ndarray | None, method: Method = "exact",
                 hint: int | None = None) -> tuple[np.ndarray, int, int]:
    """Find the grid's minimum number of steps and its first index in grid (C) order.

    The same as evaluating every configuration and taking argmin, at a fraction of the cost.

    A few seed configurations (around ``hint``, the optimum at a neighbouring batch size, or a
    coarse subgrid) are evaluated in full; every other configuration is then searched only up
    to the best count so far (``caps``): one that cannot reach the target sooner stops there,
    and one that does is found exactly.

    Parameters
    ----------
    model : NQM
        The model.
    family : {"sgd", "heavy_ball", "ema"}
        The optimizer family.
    p : float
        Preconditioning power.
    target : float
        Loss target.
    batch : float
        Batch size.
    alphas : ndarray
        Learning rates of the grid.
    seconds : ndarray or None
        Momenta or EMA decays of the grid (None for SGD).
    method : {"exact", "reference"}
        First crossing, or the notebook's bisection (then the whole grid is evaluated).
    hint : int, optional
        Flat index of the optimum at a neighbouring batch size.

    Returns
    -------
    steps : ndarray
        Steps over the grid, +inf where a configuration failed or was cut off.
    index : int
        Flat index of the minimum.
    n_full : int
        Number of configurations evaluated in full.
    """
    shape = (alphas.size,) if seconds is None else (alphas.size, seconds.size)
    if method != "exact":
        s = _evaluate(model, family, p, target, batch, alphas, seconds, method)
        return s, int(np.argmin(s)), s.size
    seed = np.zeros(shape, bool)
    if hint is not None:
        idx = np.unravel_index(hint, shape)
        half = (3, 2)[:len(idx)]  # half-widths in alpha, then beta
        sl = tuple(slice(max(i - w, 0), i + w + 1) for i, w in zip(idx, half, strict=True))
        seed[sl] = True
    else:
        seed[(slice(None, None, 5),) + ((slice(None, None, 4),) if seconds is not None else ())] \
            = True
    steps = np.full(shape, np.inf)
    # seeds, in full (a ragged subset: evaluate its bounding rows x columns)
    rows = np.flatnonzero(seed.any(axis=1) if seed.ndim == 2 else seed)
    cols = np.flatnonzero(seed.any(axis=0)) if seed.ndim == 2 else None
    sub = _evaluate(model, family, p, target, batch, alphas[rows],
                    None if cols is None else seconds[cols], method)  # type: ignore[index]
    if cols is None:
        steps[rows] = sub
    else:
        steps[np.ix_(rows, cols)] = sub
        seed[np.ix_(rows, cols)] = True
    best = steps.min()
    cap = 0 if not np.isfinite(best) else int(best) + 1
    # everything else, cut off at the best count so far (ties are found: cap = best + 1)
    caps = np.where(seed, -1, cap).astype(np.int64)
    rest = _evaluate(model, family, p, target, batch, alphas, seconds, method, caps=caps)
    steps = np.where(seed, steps, rest)
    return steps, int(np.argmin(steps)), int(seed.sum())


@dataclass
class ScalingResult:
    """Tuned steps to target against batch size for one optimizer family.

    Attributes
    ----------
    family : str
        "sgd", "heavy_ball" or "ema".
    preconditioning : float
        Power p of P = H^p.
    target : float
        Loss target.
    search : str
        "grid" or "refine".
    batch_sizes : ndarray of int64
        The batch sizes.
    steps : ndarray
        Tuned steps to target per batch size (inf where no configuration reaches it).
    learning_rate, second : ndarray
        The optimal learning rate and momentum or EMA decay (nan for SGD).
    lower_bound : ndarray
        :meth:`NQM.lower_bound_steps` per batch size.
    meta : dict
        Evaluations, method and grid size.
    """

    family: str
    preconditioning: float
    target: float
    search: str
    batch_sizes: np.ndarray
    steps: np.ndarray  # inf where no configuration reaches the target
    learning_rate: np.ndarray
    second: np.ndarray  # momentum (heavy_ball) or EMA decay (ema); nan for SGD
    lower_bound: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def effective_learning_rate(self) -> np.ndarray:
        """Return alpha / (1 - beta) for momentum and alpha otherwise."""
        if self.family == "heavy_ball":
            return self.learning_rate / (1.0 - self.second)
        return self.learning_rate.copy()

    def critical_batch_size(self) -> dict[str, Any]:
        """Return the critical batch size by two definitions.

        Returns
        -------
        dict
            ``"doubling"``: the smallest B whose steps exceed twice the perfect-scaling
            extrapolation S(B0) B0 / B from the smallest batch size B0 (None if never);
            ``"fit"`` and ``"fit_S_min"``: B_crit and S_min of
            S(B) = S_min (1 + B_crit / B) fitted by least squares on log S (None with fewer
            than two finite points); ``"fit_extrapolated"``: whether that B_crit lies outside
            the batch sizes tried (an extrapolation of the fit, not a measurement).
            :meth:`critical_batch_size_text` says the same in words.

        References
        ----------
        .. [1] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes?
           Insights From a Noisy Quadratic Model", NeurIPS 2019, arXiv:1907.04164.
        """
        B, S = self.batch_sizes.astype(float), self.steps
        ok = np.isfinite(S)
        out: dict[str, Any] = {"doubling": None, "fit": None, "fit_S_min": None,
                               "fit_extrapolated": None}
        if ok.sum() < 2:
            return out
        B, S = B[ok], S[ok]
        ideal = S[0] * B[0] / B
        over = np.flatnonzero(S > 2 * ideal)
        out["doubling"] = int(B[over[0]]) if over.size else None
        x0 = np.array([np.log(S.min()), np.log(np.sqrt(B[0] * B[-1]))])

        def resid(x):
            return np.log(S) - x[0] - np.log1p(np.exp(x[1]) / B)

        fit = optimize.least_squares(resid, x0)
        out["fit"] = float(np.exp(fit.x[1]))
        out["fit_S_min"] = float(np.exp(fit.x[0]))
        out["fit_extrapolated"] = bool(not B.min() <= out["fit"] <= B.max())
        return out

    def critical_batch_size_text(self) -> dict[str, str]:
        """Return the critical batch sizes of :meth:`critical_batch_size` as short texts.

        Only a batch size inside the range tried is given as a plain number: a doubling that
        never happens reads "> B_max (beyond the largest batch size tried)", a fitted B_crit
        outside the range is marked as an extrapolation.

        Returns
        -------
        dict
            ``"doubling"`` and ``"fit"`` (``"-"`` with fewer than two finite points).
        """
        c = self.critical_batch_size()
        finite = self.batch_sizes[np.isfinite(self.steps)]
        if c["fit"] is None:
            return {"doubling": "-", "fit": "-"}
        lo, hi = int(finite.min()), int(finite.max())
        doubling = (str(c["doubling"]) if c["doubling"] is not None else
                    f"> {hi} (beyond the largest batch size tried)")
        fit = _round3(c["fit"])
        if c["fit"] > hi:
            fit += f" (extrapolated beyond the largest batch size tried, {hi})"
        elif c["fit"] < lo:
            fit += f" (extrapolated below the smallest batch size tried, {lo})"
        return {"doubling": doubling, "fit": fit}

    def __repr__(self) -> str:
        steps = ", ".join(str(_count(s)) for s in self.steps)
        return (f"ScalingResult(family={self.family!r}, preconditioning={self.preconditioning!r},"
                f" target={self.target!r}, search={self.search!r}, batch_sizes="
                f"{[int(b) for b in self.batch_sizes]}, steps=[{steps}], ...)")

    def to_rows(self) -> list[dict[str, Any]]:
        """Return one CSV row (a dict) per batch size."""
        rows = []
        eff = self.effective_learning_rate
        for i, b in enumerate(self.batch_sizes):
            rows.append({"family": self.family, "p": self.preconditioning, "target": self.target,
                         "batch_size": int(b), "steps": _count(self.steps[i]),
                         "learning_rate": self.learning_rate[i], "second": self.second[i],
                         "effective_learning_rate": eff[i], "lower_bound": self.lower_bound[i]})
        return rows

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (non-finite numbers as None) with the critical batch sizes."""
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, np.ndarray):
                d[k] = [None if not np.isfinite(x) else _count(x) if k in ("steps", "batch_sizes")
                        else float(x) for x in v]
        d["critical_batch_size"] = self.critical_batch_size()
        return d


def _count(x: float) -> int | float:
    """Return a number of steps as an int (inf, not reached, stays a float)."""
    return int(x) if np.isfinite(x) else float(x)


def _round3(x: float) -> str:
    """Three significant digits, as an integer where it is one: 859.9 -> "860"."""
    r = float(f"{x:.3g}")
    return str(int(r)) if r >= 100 else f"{r:g}"


def tune(model: NQM, family: Family, batch_sizes: ArrayLike, target: float, *,
         preconditioning: float = 0.0, search: Literal["grid", "refine"] = "grid",
         grid_size: tuple[int, int] | None = None, refine_rounds: int = 3,
         method: Method = "exact") -> ScalingResult:
    """Minimise steps to ``target`` over the family's hyperparameters at each batch size.

    Parameters
    ----------
    model : NQM
        The model.
    family : {"sgd", "heavy_ball", "ema"}
        "sgd" (alpha), "heavy_ball" (alpha, beta) or "ema" (SGD with EMA: alpha, gamma).
    batch_sizes : array_like of int
        Batch sizes in [1, 2^53].
    target : float
        Loss target, > 0.
    preconditioning : float, default 0.0
        Power p in [0, 1] of P = H^p.
    search : {"grid", "refine"}
        "grid": the reference notebook's grids (or ``grid_size`` coarser versions);
        "refine": then ``refine_rounds`` zooms around the best cell (never worse than the
        grid).
    grid_size : (int, int), optional
        (n_alpha, n_second).
    refine_rounds : int, default 3
        Zoom rounds of ``search="refine"``.
    method : {"exact", "reference"}
        "exact" (true first crossing) or "reference" (the notebook's bisection convention,
        ``docs/theory.md`` section 4.5).

    Returns
    -------
    ScalingResult

    Raises
    ------
    ParameterError
        If an argument is invalid.

    References
    ----------
    .. [1] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes? Insights
       From a Noisy Quadratic Model", NeurIPS 2019, arXiv:1907.04164.
    """
    owner = "tune"
    _check_model(model, owner)
    family = check_choice("family", family, owner, FAMILIES)
    search = check_choice("search", search, owner, ("grid", "refine"))
    target = check_real("target", target, owner, low=0.0)
    p = check_real("preconditioning", preconditioning, owner, low=0.0, high=1.0,
                   closed=(True, True))
    refine_rounds = check_int("refine_rounds", refine_rounds, owner, low=0, high=64)
    method = check_choice("method", method, owner, ("exact", "reference"))
    if grid_size is not None:
        try:
            gs = tuple(grid_size)
        except TypeError:
            gs = ()
        if len(gs) != 2:
            raise ParameterError(f"The 'grid_size' parameter of {owner} must be a pair "
                                 f"(n_alpha, n_second). Got {grid_size!r} instead.")
        grid_size = (check_int("grid_size[0]", gs[0], owner, low=2, high=10_000),
                     check_int("grid_size[1]", gs[1], owner, low=1, high=10_000))
    try:
        bs = np.atleast_1d(np.asarray(batch_sizes))
        ok = bs.ndim == 1 and bs.size > 0 and bs.dtype.kind in "iuf" and not any(
            isinstance(x, (bool, np.bool_)) for x in np.atleast_1d(
                np.asarray(batch_sizes, dtype=object)).ravel().tolist())
        bsf: Any = bs.astype(float) if ok else None
    except (TypeError, ValueError, OverflowError):
        ok = False
    if not ok or not (np.all(np.isfinite(bsf)) and np.all(bsf >= 1) and np.all(bsf <= MAX_BATCH)
                      and np.all(bsf == np.round(bsf))):
        raise ParameterError(f"The 'batch_sizes' parameter of {owner} must be a non-empty list "
                             f"of integer batch sizes in [1, 2^53]. Got {batch_sizes!r} "
                             "instead.")
    alphas, seconds = reference_grid(family, grid_size)
    nB = bs.size
    steps = np.full(nB, np.inf)
    lr = np.full(nB, np.nan)
    sec = np.full(nB, np.nan)
    evals = 0
    hint = None
    for i, b in enumerate(bs):
        # the optimum at the previous batch size seeds the search only when that size is near:
        # from far away (4 then 2^18) its neighbourhood reaches the target slowly, and every
        # other configuration would then be searched up to that slow count
        near = hint is not None and HINT_RATIO ** -1 <= b / bs[i - 1] <= HINT_RATIO
        s, flat, _ = grid_minimum(model, family, p, target, float(b), alphas, seconds, method,
                                  hint if near else None)
        evals += s.size
        k = np.unravel_index(flat, s.shape)
        hint = flat if np.isfinite(s[k]) else None
        best = s[k]
        a_best = alphas[k[0]]
        b_best = seconds[k[1]] if seconds is not None else np.nan
        if search == "refine" and np.isfinite(best):
            la = np.log(alphas)
            da = la[1] - la[0]
            lq: Any = np.log(1 - seconds) if seconds is not None else None
            dq: Any = (lq[1] - lq[0]) if seconds is not None else None
            cq: Any
            ca, cq = np.log(a_best), (np.log(1 - b_best) if seconds is not None else None)
            for _ in range(refine_rounds):
                ga = np.exp(np.linspace(ca - da, ca + da, 21))
                gq = (1 - np.exp(np.linspace(cq - dq, min(cq + dq, 0.0), 11))
                      if seconds is not None else None)
                if gq is not None:
                    gq = gq[(gq >= 0) & (gq < 1)]
                s2 = _evaluate(model, family, p, target, float(b), ga, gq, method)
                evals += s2.size
                k2 = np.unravel_index(np.argmin(s2), s2.shape)
                if s2[k2] < best:
                    best = s2[k2]
                    a_best = ga[k2[0]]
                    b_best = gq[k2[1]] if gq is not None else np.nan
                ca = np.log(a_best)
                cq = np.log(1 - b_best) if seconds is not None else None
                da /= 5
                dq = dq / 5 if seconds is not None else None
        steps[i], lr[i], sec[i] = best, a_best, b_best
    lower = np.array([model.lower_bound_steps(target, float(b)) for b in bs])
    return ScalingResult(family, p, target, search, bs.astype(np.int64), steps, lr, sec, lower,
                         meta={"evaluations": evals, "method": method,
                               "grid_size": list(grid_size or (100, 20))})


def optimizer_for(result: ScalingResult, i: int) -> SGD | HeavyBall:
    """Return the tuned optimizer of batch size number ``i`` of a ScalingResult.

    Parameters
    ----------
    result : ScalingResult
        From :func:`tune`.
    i : int
        Index into ``result.batch_sizes``.

    Returns
    -------
    SGD or HeavyBall
        With the tuned learning rate (and momentum or EMA decay).
    """
    p, lr, sec = result.preconditioning, float(result.learning_rate[i]), result.second[i]
    if result.family == "heavy_ball":
        return HeavyBall(lr, float(sec), preconditioning=p)
    if result.family == "ema":
        return SGD(lr, preconditioning=p, ema=float(sec))
    return SGD(lr, preconditioning=p)


def monte_carlo_confirmation(model: NQM, result: ScalingResult,
                             indices: Iterable[int] | None = None, n_runs: int = 200,
                             seed: int = 0, horizon: float = 1.5, threads: int | None = None,
                             n_dense: int = 60,
                             method: Literal["auto", "step", "skip"] = "auto"
                             ) -> list[dict[str, Any]]:
    """Check tuned configurations by simulation.

    For each chosen batch size (default: all) the tuned optimizer runs ``n_runs`` trajectories
    up to ``horizon`` times the exact steps, recorded on a log grid plus ``n_dense`` steps
    within 25 % of the exact crossing (every step when that is at most ``n_dense`` steps). The
    linear families run the skip-ahead sampler (exact in law at the recorded steps, so the
    paper's small-batch regime of 10^5-10^6 steps costs seconds). Returns rows with the exact
    steps, the first recorded step where the Monte Carlo mean is below the target, and an
    interval from the standard errors: [first t with mean - 1.96 s.e. < target, first t with
    mean + 1.96 s.e. < target]; ``exact_in_interval`` says whether the exact crossing lies in
    it (to the grid's resolution, ``resolution``).

    Parameters
    ----------
    model : NQM
        The model ``result`` was tuned on.
    result : ScalingResult
        From :func:`tune`.
    indices : iterable of int, optional
        Indices into ``result.batch_sizes`` (default: all); batch sizes that never reach the
        target are skipped.
    n_runs : int, default 200
        Trajectories per configuration.
    seed : int, default 0
        Seed of the simulations.
    horizon : float, default 1.5
        Steps simulated, as a multiple of the exact steps.
    threads : int, optional
        Threads.
    n_dense : int, default 60
        Recorded steps around the exact crossing.
    method : {"auto", "step", "skip"}
        The sampler (see :func:`nqm_mc.simulate`).

    Returns
    -------
    list of dict
        One row per simulated batch size: exact_steps, mc_steps, mc_low, mc_high, ...
    """
    from nqm_mc.montecarlo.driver import record_steps, simulate
    rows = []
    for i in range(len(result.batch_sizes)) if indices is None else indices:
        exact = result.steps[i]
        if not np.isfinite(exact):
            continue
        exact = int(exact)
        T = int(np.ceil(horizon * exact)) + 1
        lo, hi = max(1, int(0.75 * exact)), min(T, int(np.ceil(1.25 * exact)) + 1)
        stride = max(1, (hi - lo) // n_dense)
        grid = np.unique(np.concatenate([record_steps(T, "log", 40),
                                         np.arange(lo, hi + 1, stride)]))
        opt = optimizer_for(result, i)
        res = simulate(model, opt, int(result.batch_sizes[i]), T, n_runs, seed=seed,
                       record=grid, threads=threads, progress=False, method=method)

        def first(x: np.ndarray, steps: np.ndarray = res.steps) -> int | None:
            k = np.flatnonzero(x < result.target)
            return int(steps[k[0]]) if k.size else None

        low, high = first(res.mean - 1.96 * res.sem), first(res.mean + 1.96 * res.sem)
        rows.append({"family": result.family, "p": result.preconditioning,
                     "batch_size": int(result.batch_sizes[i]), "exact_steps": exact,
                     "mc_steps": first(res.mean), "mc_low": low, "mc_high": high,
                     "resolution": int(stride),
                     "exact_in_interval": None if low is None or high is None else
                     bool(low - stride <= exact <= high + stride),
                     "n_runs": n_runs, "seed": seed, "method": res.meta["method"],
                     "seconds": round(res.meta["seconds"], 2)})
    return rows
