r"""The Monte Carlo engine: many noisy trajectories in parallel, reproducibly.

:func:`simulate` runs ``n_runs`` independent trajectories of an optimizer on an NQM. Every
direction of every copy is simulated; the gradient noise of trajectory k at step t comes from
Philox4x32-10 keyed by (seed, k) (see :mod:`nqm_mc.montecarlo._rng` and ``docs/theory.md``,
section 5.1), so results are bitwise identical for any thread count or block size, any
trajectory can be replayed alone, and two configurations run with one seed share their noise
(common random numbers).

Memory never grows with n_runs x dim x n_steps: state is per trajectory, statistics per block
and recorded step. Blocks run in parallel and are merged in block order (Chan et al.'s pairwise
update of count, mean and M2), so sums do not depend on scheduling.

Quantiles come from a histogram of log10(loss) with 0.01-decade bins spanning 10 decades below
and 4 above the initial expected loss: a quantile is exact to about 2.3 % (relative).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numba
import numpy as np
from numpy.typing import ArrayLike

from nqm_mc.exact._args import _check_model
from nqm_mc.montecarlo import _interrupt
from nqm_mc.montecarlo.blocks import (
    QUANTILE_LEVELS as QUANTILE_LEVELS,  # re-exported: importable from here as before
)
from nqm_mc.montecarlo.blocks import (
    STAT_GROUP,
    Job,
    Plan,
    _Accumulator,
    _finish,
    run_range,
)
from nqm_mc.montecarlo.lowering import (
    _RECORD_HINT,
    lower,
    n_hist_bins,
    record_steps,
)
from nqm_mc.montecarlo.skip import lower_skip, skip_reason, state_size, transition_bytes
from nqm_mc.results import SimulationResult
from nqm_mc.spec._checks import (
    ParameterError,
    check_choice,
    check_int,
    check_memory,
    check_real,
)
from nqm_mc.spec.codes import NOISE_FINITE
from nqm_mc.spec.noise import as_noise
from nqm_mc.spec.optimizers import OPTIMIZERS, Optimizer
from nqm_mc.spec.schedules import BatchSchedule, as_batch_schedule
from nqm_mc.spec.user import GradientNoise, UpdateRule

if TYPE_CHECKING:
    from nqm_mc._typing import Dtype, NoiseSpec
    from nqm_mc.montecarlo._executor import Executor
    from nqm_mc.spec.model import NQM

__all__ = ["simulate", "simulate_many", "record_steps"]



def _job_bytes(model: NQM, n_steps: int, n_runs: int, R: int, keep_paths: int,
               block_size: int, n_bands: int, threads: int | None, noise: Any) -> float:
    """Estimate, from above, what a simulation allocates.

    Per-record statistics (the accumulator and the parts of one wave of blocks, histograms
    included), kept paths, hitting times, per-direction arrays and a FiniteData training set.
    The schedules are lowered as runs of constant values, whose memory each schedule's
    ``pieces()`` checks (per run, or per update of a decay), not per step here.
    """
    nh = n_hist_bins()
    nt = threads or numba.get_num_threads()
    n_blocks = -(-n_runs // STAT_GROUP)
    nb = min(n_blocks, max(-(-block_size // STAT_GROUP), 8 * nt))
    per_record = 8.0 * (6 + n_bands + nh)
    total = R * per_record * (nb + 1) + 8.0 * R * n_bands * nt
    total += 8.0 * 3 * keep_paths * R + 8.0 * 2 * n_runs
    total += 8.0 * 10 * model.dim
    if noise.code == NOISE_FINITE:
        total += 8.0 * 2 * noise.n * model.dim
    return total


def simulate(model: NQM, optimizer: Optimizer, batch_size: int | BatchSchedule,
             n_steps: int, n_runs: int, *, seed: int = 0,
             record: Literal["all", "log"] | int | ArrayLike = "log", n_records: int = 100,
             target: float | None = None, keep_paths: int = 0, dtype: Dtype = "float64",
             threads: int | None = None, block_size: int = 16, n_bands: int = 8,
             noise: NoiseSpec | Literal["gaussian"] | None = None,
             progress: bool | None = None, executor: Executor | None = None,
             on_interrupt: Literal["raise", "return"] = "raise",
             method: Literal["auto", "step", "skip"] = "auto") -> SimulationResult:
    r"""Simulate ``n_runs`` noisy trajectories and return their statistics.

    Parameters
    ----------
    model : NQM
        The model; every direction of every group is simulated.
    optimizer : SGD, HeavyBall, Nesterov, Adam, RMSProp, Adagrad or SignSGD
        Linear optimizers with any schedule, preconditioning and EMA; any optimizer with
        ``clip_norm``.
    batch_size : int or BatchSchedule
        Batch size B, or a schedule of batch sizes.
    n_steps : int
        Number of updates.
    n_runs : int
        Number of independent trajectories (ids 0 .. n_runs - 1).
    seed : int in [0, 2^64)
        Key of the random streams; the same seed gives the same noise to every configuration.
    record : "log", "all", int or array of steps
        Where to record statistics ("log": about ``n_records`` log-spaced steps; see
        :func:`record_steps`).
    n_records : int
        Number of log-spaced records for ``record="log"``.
    target : float, optional
        Loss target: every run's first step with loss < target is returned.
    keep_paths : int
        Keep the recorded loss path of the first ``keep_paths`` runs.
    dtype : "float64" or "float32"
        Precision of the state; losses are accumulated in float64 either way.
    threads : int, optional
        Numba threads (default: all). Results do not depend on it.
    block_size : int
        Trajectories per kernel call (the unit of work handed out; rounded up to a multiple of
        16). Statistics are always accumulated over fixed groups of 16 trajectory ids and merged
        in id order, so results do not depend on it, nor on the thread count.
    n_bands : int
        Number of log-spaced curvature bands for ``band_mean_square``.
    noise : Gaussian (default), StudentT(nu) or FiniteData(n, seed)
        Law of the gradient noise, always with the model's covariance (:mod:`nqm_mc.spec.noise`).
    progress : bool, optional
        Progress line on stderr (default: on for runs longer than ~2 s when stderr is a tty).
    executor : DaskExecutor, optional
        Run the groups of trajectories on a Dask cluster (:mod:`nqm_mc.montecarlo.distributed`);
        the result is bitwise identical to a local run.
    method : "auto", "step" or "skip"
        The sampler. "step" runs every update as written (every optimizer and noise law;
        hitting times at every step). "skip" draws the state at the recorded steps only, from
        its exact Gaussian transition (:mod:`nqm_mc.montecarlo.skip`): linear optimizers
        (SGD, heavy ball, Nesterov, any preconditioning, EMA and schedules) with Gaussian
        noise, O(d) per trajectory and record instead of per step, the same law at the
        recorded steps; hitting times are then the first recorded step below the target.
        "auto" (default) runs "skip" where it is exact and faster (no ``target``, recorded
        steps sparser than about 4 s steps apart, s the state size) and "step" otherwise.
        ``meta["method"]`` says which ran.
    on_interrupt : "raise" or "return"
        What Ctrl-C (``KeyboardInterrupt``, or :class:`~nqm_mc.Terminated` under
        :func:`~nqm_mc.sigterm_interrupts`) does. The kernels stop within milliseconds either
        way and the work done is merged. "raise" (default) then raises
        :class:`~nqm_mc.Interrupted`, a ``KeyboardInterrupt`` whose ``result`` is the partial
        result, so a script stops as Ctrl-C promises; "return" returns the partial result.

    Returns
    -------
    SimulationResult
        After an interruption ``meta["interrupted"]`` is true and ``meta["runs_completed"]``,
        ``meta["runs_started"]`` count the trajectories that reached the last recorded step
        and those that began; each record's statistics cover the ``n_finite`` trajectories
        that reached it, and a hitting time of -3 marks a trajectory stopped before it hit.

    Notes
    -----
    Update rules (``docs/theory.md``, section 2), with
    :math:`\tilde g = h^{-p}(h\theta + \sqrt{c/B_t}\,z)`:
    SGD :math:`\theta \leftarrow \theta - \alpha_t \tilde g`; heavy ball
    :math:`m \leftarrow \beta m + \tilde g,\ \theta \leftarrow \theta - \alpha_t m`; Nesterov
    :math:`m \leftarrow \beta m + \tilde g,\
    \theta \leftarrow \theta - \alpha_t(\tilde g + \beta m)`;
    EMA :math:`e \leftarrow \gamma e + (1-\gamma)\theta`. The adaptive rules are in
    :mod:`nqm_mc.spec.optimizers`; clipping rescales the whole gradient to norm ``clip_norm``.
    Linear optimizers with Gaussian noise run the fast kernel (chunks of directions advanced
    many steps at a time); everything else runs one pass over all directions per step.

    A trajectory whose loss overflows (exceeds 1e300 or becomes non-finite) is counted in
    ``n_diverged`` from that step on and excluded from the statistics; its hitting time is -2
    unless it hit the target before diverging (``docs/theory.md``, section 2.6).

    Statistics are merged over fixed groups of 16 trajectories in group order by Chan et
    al.'s pairwise update (``docs/theory.md``, section 5.5):

    .. math::

        n = n_A + n_B,\quad \delta = \bar x_B - \bar x_A,\quad
        \bar x = \bar x_A + \delta\,n_B/n,\quad
        M_2 = M_{2,A} + M_{2,B} + \delta^2 n_A n_B / n .

    References
    ----------
    .. [1] G. Zhang et al., "Which Algorithmic Choices Matter at Which Batch Sizes? Insights
       From a Noisy Quadratic Model", NeurIPS 2019, arXiv:1907.04164.

    Examples
    --------
    >>> from nqm_mc import NQM, HeavyBall, simulate
    >>> res = simulate(NQM.paper(100), HeavyBall(0.05, 0.9), 16, n_steps=200, n_runs=32,
    ...                seed=1, target=0.5)  # doctest: +SKIP
    >>> res.mean[-1], res.hitting_summary()["mean"]  # doctest: +SKIP
    """
    on_interrupt = check_choice("on_interrupt", on_interrupt, "simulate", ("raise", "return"))
    job = _job(model, optimizer, batch_size, n_steps, n_runs, seed, record, n_records, target,
               keep_paths, dtype, threads, block_size, n_bands, noise, method)
    plan, n_blocks = job.plan, job.n_blocks
    acc = _Accumulator(plan)
    n_threads = job.threads or numba.get_num_threads()
    wave = max(-(-job.block_size // STAT_GROUP), 1)
    if job.block_size == 16:
        # default: keep every thread busy, but return to Python about once a second (progress,
        # Ctrl-C) -- about 2e8 dimension-steps per call
        # the work of one group of 16: d x T steps, or d x s normals per record when skipping
        work = (int(job.steps[-1]) if plan.skip is None else
                4 * plan.skip.phi.shape[1] * max(plan.skip.grid.size - 1, 1))
        per_group = STAT_GROUP * max(plan.inputs.directions.h.size, 1) * max(work, 1)
        # at most the groups whose statistics (a histogram per record) fit in STATS_BYTES, and
        # at least one per thread: small models get long ranges, since starting one costs
        # about a millisecond (threads, buffers), and many records short ones
        group_bytes = 8 * job.steps.size * (6 + job.n_bands + n_hist_bins())
        cap = max(n_threads, STATS_BYTES // group_bytes)
        wave = int(min(cap, max(1, 2e8 // per_group * n_threads)))
        wave = max(n_threads, wave - wave % n_threads)
    start = time.perf_counter()
    show = progress if progress is not None else sys.stderr.isatty()
    if show:
        sys.stderr.write(f"simulating {n_runs} runs x {job.steps[-1]} steps of "
                         f"{optimizer.name}; Ctrl-C stops and keeps what is done\n")
        sys.stderr.flush()
    interrupt = None
    ranges = [(b, min(wave, n_blocks - b)) for b in range(0, n_blocks, wave)]
    try:
        if executor is None:
            stop = _interrupt.new_flag()
            for first, nb in ranges:
                try:
                    part = _interrupt.run_stoppable(
                        functools.partial(run_range, plan, first, nb, stop, n_threads),
                        stop,
                        n_threads)
                except KeyboardInterrupt as err:
                    if getattr(err, "value", None) is not None:
                        acc.add(err.value)  # type: ignore[attr-defined]  # what it finished
                    raise
                acc.add(part)
                if show:
                    _progress(acc.done_blocks, n_blocks, start)
        else:
            for part in executor.map_ranges(plan, n_blocks):
                acc.add(part)
                if show:
                    _progress(acc.done_blocks, n_blocks, start)
    except KeyboardInterrupt as err:
        interrupt = err
    finally:
        if show:
            _progress_end()
    result = _finish(job, acc, interrupt, start, executor, n_threads)
    if interrupt is not None and on_interrupt == "raise":
        raise _interrupt.Interrupted(result, _interrupt.signal_name(interrupt)) from interrupt
    return result


def simulate_many(jobs: Sequence[dict[str, Any]], *, executor: Executor | None = None,
                  progress: bool | None = None) -> list[SimulationResult]:
    """Run several simulations (a sweep) and return their results in order.

    ``jobs`` is a list of dicts of :func:`simulate` arguments (model, optimizer, batch_size,
    n_steps, n_runs and any keyword). Locally they run one after the other on all threads;
    with a :class:`~nqm_mc.montecarlo.distributed.DaskExecutor` every task of every job is
    submitted as one graph first, then gathered and merged per job in group order, so each result is
    bitwise identical to its own ``simulate`` call.

    Parameters
    ----------
    jobs : list of dict
        :func:`simulate` arguments per job.
    executor : DaskExecutor, optional
        Where the tasks run (default: this process, all threads).
    progress : bool, optional
        Progress line per local job.

    Returns
    -------
    list of SimulationResult
        In the order of ``jobs``.

    Raises
    ------
    ParameterError
        If ``jobs`` is not a list of dicts, or a job has unknown or missing keys or invalid
        arguments.
    """
    if not isinstance(jobs, (list, tuple)) or not all(isinstance(j, dict) for j in jobs):
        raise ParameterError("The 'jobs' parameter of simulate_many must be a list of dicts of "
                             f"simulate arguments. Got {type(jobs).__name__} instead.")
    if executor is None:
        return [simulate(**{"progress": progress, **j}) for j in jobs]
    names = ("model", "optimizer", "batch_size", "n_steps", "n_runs")
    defaults = {"seed": 0, "record": "log", "n_records": 100, "target": None, "keep_paths": 0,
                "dtype": "float64", "threads": None, "block_size": 16, "n_bands": 8,
                "noise": None, "method": "auto"}
    built = []
    for i, j in enumerate(jobs):
        unknown = set(j) - set(names) - set(defaults)
        if unknown or any(n not in j for n in names):
            raise ParameterError(f"Job {i} of simulate_many has unknown keys {sorted(unknown)} "
                                 f"or lacks one of {list(names)}. Got {sorted(j)} instead.")
        kw = {**defaults, **j}
        built.append(_job(*(kw[n] for n in names), *(kw[k] for k in defaults)))
    start = time.perf_counter()
    pending = [executor.submit_ranges(job.plan, job.n_blocks) for job in built]
    out = []
    for job, futures in zip(built, pending, strict=True):
        acc = _Accumulator(job.plan)
        for part in executor.gather_in_order(futures):
            acc.add(part)
        out.append(_finish(job, acc, None, start, executor))
    return out


def _job(model: Any, optimizer: Any, batch_size: Any, n_steps: Any, n_runs: Any, seed: Any,
         record: Any, n_records: Any, target: Any, keep_paths: Any, dtype: Any, threads: Any,
         block_size: Any, n_bands: Any, noise: Any = None, method: str = "step") -> Job:
    """Check the arguments and build the job (kernel plan plus what the result needs)."""
    owner = "simulate"
    if isinstance(optimizer, UpdateRule) or isinstance(noise, GradientNoise):
        from nqm_mc.montecarlo.user_driver import user_job
        return user_job(_job, model, optimizer, batch_size, n_steps, n_runs, seed, record,
                        n_records, target, keep_paths, dtype, threads, block_size, n_bands,
                        noise, method)
    _check_model(model, owner)
    if isinstance(optimizer, Optimizer) and type(optimizer) not in OPTIMIZERS.values():
        raise ParameterError(f"The 'optimizer' parameter of {owner} is "
                             f"{type(optimizer).__name__}, a subclass of Optimizer: the kernels "
                             "run only the built-in optimizers' update rules. Write your own "
                             "rule as nqm_mc.UpdateRule(update, learning_rate, state=..., "
                             "hyper=...) (guide: 'Your own optimizer, noise and theory').")
    if not isinstance(optimizer, Optimizer):
        raise ParameterError(f"The 'optimizer' parameter of {owner} must be an optimizer spec "
                             f"(SGD, HeavyBall, Nesterov, Adam, RMSProp, Adagrad, SignSGD) "
                             f"or an UpdateRule. "
                             f"Got {type(optimizer).__name__} instead.")
    noise = as_noise(noise, owner)
    n_steps = check_int("n_steps", n_steps, owner, low=0, high=2 ** 32 - 2)
    n_runs = check_int("n_runs", n_runs, owner, low=1, high=2 ** 32 - 1)
    seed = check_int("seed", seed, owner, low=0, high=2 ** 64 - 1)
    dtype = check_choice("dtype", dtype, owner, ("float64", "float32"))
    block_size = check_int("block_size", block_size, owner, low=1, high=2 ** 32)
    n_bands = check_int("n_bands", n_bands, owner, low=1, high=4096)
    keep_paths = check_int("keep_paths", keep_paths, owner, low=0, high=n_runs)
    n_records = check_int("n_records", n_records, owner, low=2, high=2 ** 32)
    if threads is not None:
        threads = check_int("threads", threads, owner, low=1,
                            high=numba.config.NUMBA_NUM_THREADS)
    if target is not None:
        target = check_real("target", target, owner, low=0.0)
    if isinstance(record, str) and record == "log":
        check_memory(8.0 * 4 * n_records, owner, f"{n_records} log-spaced records",
                     "Ask for fewer records (n_records=).")
    steps = record_steps(n_steps, record, n_records)
    check_memory(_job_bytes(model, n_steps, n_runs, steps.size, keep_paths, block_size, n_bands,
                            threads, noise), owner,
                 f"{n_steps} steps, {steps.size} recorded steps, {keep_paths} kept paths and "
                 f"{n_runs} runs", _RECORD_HINT + " Keep fewer paths or use fewer runs or steps.")
    inputs, edges = lower(model, optimizer, batch_size, n_steps, dtype,
                          noise, seed, steps, target, n_bands)
    if noise.code == NOISE_FINITE and inputs.schedule.batch.max() >= noise.n:
        raise ParameterError(f"The 'batch_size' parameter of {owner} must stay below the "
                             f"dataset size n = {noise.n} of FiniteData (minibatches are "
                             f"drawn without replacement). Got {int(inputs.schedule.batch.max())}"
                             " instead.")
    requested = method
    method = _choose_method(method, optimizer, noise, target, steps, owner)
    if requested == "auto" and method == "skip" and \
            transition_bytes(model, optimizer, steps.size, dtype) > AUTO_SKIP_BYTES:
        method = "step"  # the transitions would take more memory than the step kernel needs
    skip = None
    if method == "skip":
        check_memory(transition_bytes(model, optimizer, steps.size, dtype), owner,
                     f"the skip-ahead transitions of {model.n_groups} groups x {steps.size} "
                     "records", "Record fewer steps, or use method='step'.")
        skip = lower_skip(model, optimizer, batch_size, steps, dtype, owner, inputs)
        if requested == "auto" and not (np.isfinite(skip.phi).all()
                                        and np.isfinite(skip.fac).all()):
            # the transitions overflow (a diverging configuration): the step kernel shows
            # where and how each run diverges, and keeps a direction that never moves at 0
            method, skip = "step", None
    spec = {"model": model.to_dict(), "optimizer": optimizer.to_dict(),
            "batch_size": batch_size if isinstance(batch_size, int) else
            as_batch_schedule(batch_size).to_dict(),
            "n_steps": n_steps, "n_runs": n_runs, "seed": seed, "record": steps.tolist(),
            "target": target, "dtype": dtype, "keep_paths": keep_paths, "n_bands": n_bands,
            "noise": noise.to_dict(), "method": method}
    n_blocks = -(-n_runs // STAT_GROUP)
    plan = Plan(inputs=inputs, n_runs=n_runs, keep_paths=keep_paths, skip=skip)
    return Job(plan, spec, steps, inputs.directions.band, n_bands, inputs.recording.hist_lo,
               edges, target, keep_paths, n_runs, n_blocks, block_size, threads)


METHODS = ("auto", "step", "skip")
STATS_BYTES = 16 * 2 ** 20  # a range's per-group statistics (see simulate's ranges)
AUTO_SKIP_BYTES = 2e9  # "auto" takes the step kernel when the transitions would need more


def _choose_method(method, optimizer, noise, target, steps, owner):
    """Choose the sampler to run, "step" or "skip" (see :func:`simulate`'s ``method``)."""
    method = check_choice("method", method, owner, METHODS)
    why = skip_reason(optimizer, noise)
    if method == "skip":
        if why is not None:
            raise ParameterError(f"The 'method' parameter of {owner} can be 'skip' only for "
                                 f"linear optimizers with Gaussian noise: {why}. Use "
                                 "method='step' or 'auto'.")
        return "skip"
    if method == "step" or why is not None or target is not None:
        return "step"
    # skip costs about s normals per direction and record, the step kernel one per step
    n_intervals = max(steps.size - 1, 1)
    return "skip" if int(steps[-1]) >= 4 * state_size(optimizer) * n_intervals else "step"


# the progress line of the running simulation: its start, when its first wave of blocks
# ended (compilation and warm-up included) and how many blocks that wave did; the line's width
_PROGRESS: dict[str, Any] = {"start": None, "first": 0.0, "first_done": 0, "width": 0}
_PROGRESS_SHOWN = [False]


def _progress(done: int, total: int, start: float) -> None:
    """Draw one progress line on stderr, redrawn in place.

    The time left is extrapolated from the blocks done after the first wave, whose time
    includes compiling the kernels and warming up; until a second wave has finished it reads
    "estimating". Nothing is drawn in the first 2 s.
    """
    now = time.perf_counter()
    el = now - start
    state = _PROGRESS
    if state["start"] != start:  # a new simulation: its first wave just ended
        state.update(start=start, first=el, first_done=done)
    if el < 2.0 and done < total:
        return
    if done >= total:
        left = "done"
    elif done > state["first_done"]:
        rate = (el - state["first"]) / (done - state["first_done"])
        left = f"~{rate * (total - done):.0f} s left"
    else:
        left = "estimating the time left"
    bar = "#" * int(30 * done / total)
    text = f"[{bar:<30}] {100 * done / total:5.1f}%  {el:6.1f} s elapsed, {left}"
    pad = max(state["width"] - len(text), 0)  # blank what a longer earlier line left
    sys.stderr.write("\r" + text + " " * pad)
    sys.stderr.flush()
    state["width"] = max(state["width"], len(text))
    _PROGRESS_SHOWN[0] = True


def _progress_end() -> None:
    """End the progress line (so that what is printed next starts on a line of its own)."""
    _PROGRESS.update(start=None, width=0)
    if _PROGRESS_SHOWN[0]:
        sys.stderr.write("\n")
        sys.stderr.flush()
        _PROGRESS_SHOWN[0] = False
