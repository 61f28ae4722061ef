"""The blocks of a simulation: run them, merge their statistics, build the result.

A simulation's trajectories are cut into statistic groups of :data:`STAT_GROUP` ids.
:func:`run_range` simulates a range of groups (on threads, each group writing only its own
rows) and returns their statistics as a part; :class:`_Accumulator` merges parts in group
order (Chan et al.'s pairwise update of count, mean and M2, integer histograms summed), so the
sums do not depend on scheduling or on the executor; :func:`_finish` turns the merged
statistics into a :class:`~nqm_mc.results.SimulationResult`. :class:`Plan` is what a worker
needs (picklable), :class:`Job` a checked simulation (built by
:mod:`~nqm_mc.montecarlo.driver`).
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numba
import numpy as np

from nqm_mc.montecarlo import _interrupt
from nqm_mc.montecarlo import _kernels as K
from nqm_mc.montecarlo import _skip_kernels as SK
from nqm_mc.montecarlo._statistics import band_runs, merge_groups
from nqm_mc.montecarlo.lowering import (
    HIST_BINS_PER_DECADE,
    KernelInput,
    n_hist_bins,
    new_statistics,
)
from nqm_mc.montecarlo.skip import SkipInput
from nqm_mc.results import SimulationResult, provenance

if TYPE_CHECKING:
    from nqm_mc.montecarlo._executor import Executor
    from nqm_mc.montecarlo.user_kernels import UserPlan

__all__ = ["Job", "Plan", "run_range", "QUANTILE_LEVELS", "STAT_GROUP"]

QUANTILE_LEVELS = np.array([0.05, 0.25, 0.5, 0.75, 0.95])
STAT_GROUP = 16  # statistics are accumulated over fixed groups of 16 trajectory ids


def _finish(job: Job, acc: _Accumulator, interrupt: BaseException | None, start: float,
            executor: Executor | None = None,
            n_threads: int | None = None) -> SimulationResult:
    """Build the SimulationResult of a job from its merged statistics.

    ``interrupt`` is the KeyboardInterrupt that stopped it, or None.
    """
    steps, band, n_bands, hist_lo = job.steps, job.band, job.n_bands, job.hist_lo
    n_runs, target, keep_paths = job.n_runs, job.target, job.keep_paths
    done_blocks = acc.done_blocks
    tot_c, tot_mean, tot_m2, tot_th = acc.count, acc.mean, acc.m2, acc.theta
    tot_band, tot_hist, tot_div, hits, paths = acc.band, acc.hist, acc.div, acc.hits, acc.paths
    covered = min(done_blocks * STAT_GROUP, n_runs)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        var = np.where(tot_c > 1, tot_m2 / (tot_c - 1), np.nan)
        sem = np.sqrt(var / tot_c)
        counts_per_band = np.bincount(band, minlength=n_bands).astype(float)
        band_ms = tot_band / (np.maximum(tot_c, 1)[:, None] * np.maximum(counts_per_band, 1))
    quant = _hist_quantiles(tot_hist, hist_lo, QUANTILE_LEVELS)
    mean = np.where(tot_c > 0, tot_mean, np.nan)
    nan_runs = np.flatnonzero(acc.nan_at >= 0)
    if nan_runs.size:  # NaN is reported as NaN: the mean from the first NaN step on
        from nqm_mc.montecarlo.user_driver import report_nan
        mean, var, sem = report_nan(job, acc.nan_at, nan_runs, mean, var, sem)
    meta = {"provenance": provenance(), "seconds": time.perf_counter() - start,
            "threads": n_threads if executor is None else None, "block_size": job.block_size,
            "runs_completed": acc.finished, "runs_started": acc.started,
            "runs_covered": covered, "method": job.plan.method,
            "hitting_resolution": "every step" if job.plan.skip is None else "recorded steps",
            "interrupted": interrupt is not None,
            "signal": None if interrupt is None else _interrupt.signal_name(interrupt),
            "executor": "threads" if executor is None else repr(executor)}
    if nan_runs.size:
        meta["nan_runs"] = int(nan_runs.size)
        meta["first_nan"] = {"run": int(nan_runs[0]), "step": int(acc.nan_at[nan_runs[0]])}
    return SimulationResult(
        steps=steps, mean=mean, sem=sem, variance=var,
        quantile_levels=QUANTILE_LEVELS.copy(), quantiles=quant, mean_theta=tot_th,
        n_finite=tot_c.astype(np.int64), n_diverged=tot_div, band_mean_square=band_ms,
        band_edges=job.edges, hitting_times=hits[:covered] if target is not None else None,
        paths=paths if keep_paths else None, spec=job.spec, meta=meta)


@dataclass(frozen=True)
class Job:
    """A checked simulation: its plan and what its result needs."""

    plan: Plan
    spec: dict[str, Any]
    steps: np.ndarray
    band: np.ndarray
    n_bands: int
    hist_lo: float
    edges: np.ndarray
    target: float | None
    keep_paths: int
    n_runs: int
    n_blocks: int
    block_size: int
    threads: int | None


@dataclass(frozen=True)
class Plan:
    """Everything a worker needs to simulate any range of statistic groups (picklable)."""

    inputs: KernelInput  # the specifications, lowered (see nqm_mc.montecarlo.lowering)
    n_runs: int
    keep_paths: int
    skip: SkipInput | None = None  # the transitions, when the skip-ahead sampler runs
    user: UserPlan | None = None  # a user rule or noise (nqm_mc.montecarlo.user_kernels)

    @property
    def method(self) -> str:
        """The sampler the plan runs: "step" or "skip"."""
        return "step" if self.skip is None else "skip"

    @property
    def n_records(self) -> int:
        """Number of recorded steps."""
        return self.inputs.recording.steps.size

    @property
    def n_bands(self) -> int:
        """Number of curvature bands."""
        return self.inputs.recording.n_bands


def run_range(plan: Plan, first: int, nb: int, stop: np.ndarray | None = None,
              threads: int | None = None) -> dict[str, Any]:
    """Simulate statistic groups ``first .. first + nb - 1`` and return their statistics.

    Group g holds trajectories ``16 g .. 16 g + 15``. The statistics can be merged: per group
    count/mean/M2/theta/band sums (floats, merged by the caller in group order), histogram
    and divergence counts (integers, summed), hitting times, the number of records each
    trajectory reached (R when finished) and the kept paths of the range's trajectories.

    Parameters
    ----------
    plan : Plan
        The lowered simulation.
    first, nb : int
        First group and number of groups.
    stop : ndarray, optional
        A stop flag (see :mod:`nqm_mc.montecarlo._interrupt`) that ends the kernel early.
    threads : int, optional
        Threads the groups run on (default: numba's thread count).

    Returns
    -------
    dict
        The part, as :class:`_Accumulator` merges it.
    """
    lo = first * STAT_GROUP
    hi = min((first + nb) * STAT_GROUP, plan.n_runs)
    out = new_statistics(nb, plan.n_records, plan.n_bands, hi - lo, plan.keep_paths)
    inp = plan.inputs
    stop = _interrupt.new_flag() if stop is None else stop
    run_start, run_band = band_runs(inp.directions.band)

    sk = plan.skip
    us = plan.user
    nan_at = np.full(hi - lo, -1, np.int64)  # NaN stops of user rules, by trajectory

    def share(start: int, step: int) -> None:
        """Blocks start, start + step, ... of the range (one kernel call for the built-ins)."""
        if us is not None:
            for bb in range(start, nb, step):
                us.run_block(inp, first + bb, bb, STAT_GROUP, plan.n_runs, plan.keep_paths,
                             run_start, run_band, out, stop, nan_at)
        elif sk is None:
            K.run_blocks(inp.rule, inp.directions, inp.schedule, inp.noise, inp.recording,
                         inp.stream, first, start, nb, step, STAT_GROUP, plan.n_runs,
                         plan.keep_paths, run_start, run_band, out, stop)
        else:
            SK.run_blocks_skip(inp.rule, inp.directions, inp.recording, inp.stream, sk.group,
                               sk.grid, sk.phi, sk.fac, sk.state, first, start, nb, step,
                               STAT_GROUP, plan.n_runs, plan.keep_paths, run_start, run_band,
                               out, stop)

    n = min(threads or numba.get_num_threads(), nb)
    if n <= 1:
        share(0, 1)
    else:  # the kernels release the GIL; each block writes only its own rows
        with ThreadPoolExecutor(n, thread_name_prefix="nqm_mc-block") as pool:
            for f in [pool.submit(share, i, n) for i in range(n)]:
                f.result()
    paths, orec = out.paths, out.records
    kp = paths[lo:min(hi, plan.keep_paths)]
    for i in range(kp.shape[0]):  # records a stopped trajectory never reached
        kp[i, max(orec[i], 0):] = np.nan
    return {"first": first, "nb": nb, "count": out.count, "mean": out.mean, "m2": out.m2,
            "theta": out.theta_mean, "band": out.band, "hist": out.hist.sum(0),
            "div": out.diverged.sum(0), "hits": out.hits, "records": orec, "paths": kp,
            "nan": nan_at}


class _Accumulator:
    """Merges run_range parts; parts must arrive in group order (so sums are deterministic)."""

    def __init__(self, plan: Plan) -> None:
        R = plan.n_records
        self.count, self.mean, self.m2, self.theta = (np.zeros(R) for _ in range(4))
        self.band = np.zeros((R, plan.n_bands))
        self.hist = np.zeros((R, n_hist_bins()), np.int64)
        self.div = np.zeros(R, np.int64)
        self.hits = np.full(plan.n_runs, -1, np.int64)
        self.paths = np.full((plan.keep_paths, R), np.nan)
        self.done_blocks = 0
        self.nan_at = np.full(plan.n_runs, -1, np.int64)  # step a user rule gave NaN, by run
        self.R = R
        self.finished = 0  # trajectories that reached the last recorded step
        self.started = 0  # trajectories that ran at least their initial state (finished too)

    def add(self, part: dict[str, Any]) -> None:
        if part["first"] != self.done_blocks:
            raise RuntimeError(f"statistics merged out of order: got group {part['first']}, "
                               f"expected {self.done_blocks}")
        nb = part["nb"]
        # one compiled loop over the groups (a part from another process may be read-only:
        # a writeable copy keeps numba at one specialisation)
        g = [np.require(part[k][:nb], np.float64, ["C", "W"])
             for k in ("count", "mean", "m2", "theta", "band")]
        merge_groups(self.count, self.mean, self.m2, self.theta, self.band, *g)
        self.hist += part["hist"]
        self.div += part["div"]
        lo = part["first"] * STAT_GROUP
        self.hits[lo:lo + part["hits"].size] = part["hits"]
        kp = part["paths"]
        self.paths[lo:lo + kp.shape[0]] = kp
        self.done_blocks += part["nb"]
        rec = part.get("records")
        if rec is None:  # a part from a worker without the counts: every trajectory finished
            rec = np.full(part["hits"].size, self.R)
        nan = part.get("nan")
        if nan is not None and (nan >= 0).any():
            self.nan_at[lo:lo + nan.size] = nan
        self.finished += int(np.count_nonzero(rec == self.R))
        self.started += int(np.count_nonzero(rec >= 0))  # -1: never began


def _hist_quantiles(hist: np.ndarray, lo: float, levels: np.ndarray) -> np.ndarray:
    R, nh = hist.shape
    out = np.full((levels.size, R), np.nan)
    cum = np.cumsum(hist, axis=1)
    n = cum[:, -1]
    for r in range(R):
        if n[r] == 0:
            continue
        for qi, q in enumerate(levels):
            target = q * n[r]
            k = int(np.searchsorted(cum[r], target, side="left"))
            below = cum[r, k - 1] if k > 0 else 0
            frac = (target - below) / max(hist[r, k], 1)
            out[qi, r] = 10.0 ** (lo + (k + frac) / HIST_BINS_PER_DECADE)
    return out
