r"""Skip-ahead sampling: the recorded states of linear optimizers, without the steps between.

For SGD, heavy ball and Nesterov (any preconditioning power, with or without EMA, any
learning-rate and batch-size schedule) with Gaussian noise, every direction's state
:math:`x = (\theta[, m][, e])` evolves as :math:`x_{t+1} = A_t x_t + b_t z_t`. Between two
recorded steps it therefore moves as one Gaussian step,
:math:`x(t_{k+1}) = \Phi_k x(t_k) + \eta_k`, :math:`\eta_k \sim N(0, \Sigma_k)`, with
:math:`\Phi_k` the product of the :math:`A_t` and :math:`\Sigma_k` the accumulated noise
covariance. Both depend on the direction's group and the interval, not on the trajectory:
they are built once per simulation (:func:`transitions`), in float64, from the runs of
constant hyperparameters (:func:`~nqm_mc.montecarlo.lowering.hyper_runs`: never a per-step
array), by doubling over every run; steps whose hyperparameters change every step (a cosine
decay, a warmup) are applied to chunks of groups at once, as vectors over the groups, in
parallel over the chunks (plain SGD has its own scalar kernel). A trajectory then costs
O(d) per recorded step instead of per step, and the joint law of its recorded states is
exactly that of the step-by-step process: means, variances, quantiles, band statistics and
kept paths are exact in distribution. Hitting times are the first *recorded* step below the
target (their resolution is the record grid; :func:`crossing_grid` places a dense grid
around the exact engine's expected crossing).

Memory: the transitions take ``2 s^2 (R - 1) G`` floats for G groups, R recorded steps and a
state of size s (1 for SGD, 2 with momentum or EMA, 3 with both): the paper's model
(G = 10^4) at 100 records needs 16 MB for SGD, 63 MB for heavy ball, 143 MB for heavy ball
with EMA (float64; half in float32).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, NamedTuple

import numba
import numpy as np

from nqm_mc.montecarlo import _skip_kernels as SK
from nqm_mc.montecarlo.lowering import hyper_runs
from nqm_mc.spec.codes import KIND_SGD, NOISE_GAUSSIAN

__all__ = ["SkipInput", "skip_reason", "state_size", "transitions", "transition_bytes",
           "lower_skip", "crossing_grid"]


class SkipInput(NamedTuple):
    """What the skip-ahead kernel needs besides the step kernels' input."""

    group: np.ndarray  #: (d,) group of each direction, int64
    grid: np.ndarray  #: (K,) steps 0 = grid[0] < ... : the recorded steps (0 prepended)
    phi: np.ndarray  #: (K - 1, s, s, G) state transitions, state dtype
    fac: np.ndarray  #: (K - 1, s, s, G) factors F with F F^T = Sigma, state dtype
    state: tuple[int, ...]  #: s zeros: the state size, as a type for the kernel


def skip_reason(optimizer, noise):
    """None when skip-ahead sampling is exact for this optimizer and noise law, else why not."""
    if not optimizer.is_linear:
        return (f"{type(optimizer).__name__}"
                + (" with clipping" if optimizer.clip_norm is not None else "")
                + " is not linear in the gradient")
    if noise.code != NOISE_GAUSSIAN:
        return f"the {type(noise).__name__} noise law is not Gaussian"
    return None


def state_size(optimizer):
    """s: 1 (theta), plus 1 for momentum, plus 1 for EMA."""
    return 1 + (optimizer.kind_code != KIND_SGD) + (optimizer.ema is not None)


def transition_bytes(model, optimizer, n_intervals, dtype="float64"):
    """Bytes of the transitions of ``n_intervals`` intervals (kernel copy and float64 build)."""
    s = state_size(optimizer)
    per = 2.0 * s * s * n_intervals * model.n_groups
    return per * 8 + (per * 4 if dtype == "float32" else 0)


def _grid(steps):
    steps = np.asarray(steps, np.int64)
    return steps if steps[0] == 0 else np.concatenate([[0], steps]).astype(np.int64)


def transitions(model, optimizer, batch_size, steps, owner="simulate", on_compiled=None):
    """Build (Phi, F) of every group and interval of the grid, in float64.

    The grid is ``steps`` with 0 prepended; the arrays have shape (K - 1, s, s, G) with
    F F^T = Sigma (see the module docstring). ``on_compiled``, if given, is called once the
    building kernel is compiled (or loaded from the cache), just before it runs.
    """
    grid = _grid(steps)
    T = int(grid[-1])
    n = max(T, 1)
    seg_start, (lr_r, isb_r) = hyper_runs(optimizer, batch_size, n, owner)
    seg_start = np.append(seg_start, np.int64(n))
    h, c = model.curvatures, model.noise_variances
    p = optimizer.preconditioning
    hp = h ** (-p)
    a_g = np.ascontiguousarray(hp * h, np.float64)
    b_g = np.ascontiguousarray(hp * np.sqrt(c), np.float64)
    s = state_size(optimizer)
    K = grid.size
    phi = np.zeros((K - 1, s, s, model.n_groups))
    fac = np.zeros((K - 1, s, s, model.n_groups))
    beta = float(getattr(optimizer, "momentum", 0.0))
    gamma = float(optimizer.ema) if optimizer.ema is not None else 0.0
    args: tuple[Any, ...]
    if s == 1:  # plain SGD: its own scalar chunk (compiles in a fraction of the time)
        chunk, args = SK._sgd_chunk, (a_g, b_g, lr_r, isb_r, seg_start, grid, phi, fac)
    else:
        chunk, args = SK._general_chunk, (int(optimizer.kind_code), optimizer.ema is not None,
                                          a_g, b_g, beta, gamma, lr_r, isb_r, seg_start, grid,
                                          phi, fac)
    if on_compiled is not None:
        chunk.compile(tuple(numba.typeof(x) for x in args) + (numba.int64, numba.int64))
        on_compiled()
    SK.by_chunks(chunk, args, model.n_groups)
    return phi, fac


def sampler_signature(inputs: Any, state: tuple[int, ...]) -> tuple[Any, ...]:
    """Return the numba types of a ``run_blocks_skip`` call on ``inputs``.

    ``inputs`` is the run's lowering.KernelInput and ``state`` a tuple of s zeros (s state
    variables): the types blocks.run_range passes.
    """
    from nqm_mc.montecarlo._interrupt import new_flag
    from nqm_mc.montecarlo.lowering import new_statistics
    ft = inputs.directions.coef_a.dtype
    s = len(state)
    idx = np.zeros(1, np.int64)
    mats = np.zeros((1, s, s, 1), ft)
    args = (inputs.rule, inputs.directions, inputs.recording, inputs.stream, idx, idx, mats,
            mats, state, 0, 0, 0, 0, 0, 0, 0, idx, idx, new_statistics(1, 1, 1, 1, 0),
            new_flag())
    return tuple(numba.typeof(x) for x in args)


def _compile_sampler(inputs: Any, state: tuple[int, ...]) -> Callable[[], None]:
    """Return a callback that compiles ``run_blocks_skip`` for ``inputs`` in the background.

    The compilation (or the load from the cache) runs in a thread: it takes one core and
    overlaps the transitions (whose kernel releases the GIL); the blocks then find the sampler
    compiled, or wait for it on numba's compiler lock.
    """
    def start() -> None:
        sig = sampler_signature(inputs, state)

        def work() -> None:
            try:
                SK.run_blocks_skip.compile(sig)
            except Exception:  # noqa: BLE001 - the blocks' own call compiles and reports
                pass
        threading.Thread(target=work, name="nqm-mc-compile-skip", daemon=True).start()
    return start


def lower_skip(model, optimizer, batch_size, steps, dtype, owner="simulate", inputs=None):
    """Build the :class:`SkipInput` of a checked simulation (transitions in the state dtype).

    With ``inputs`` (the run's lowering.KernelInput), the sampler kernel is compiled in the
    background while the transitions are built.
    """
    ft = np.float32 if dtype == "float32" else np.float64
    state = (0,) * state_size(optimizer)
    phi, fac = transitions(model, optimizer, batch_size, steps, owner,
                           None if inputs is None else _compile_sampler(inputs, state))
    group = np.repeat(np.arange(model.n_groups, dtype=np.int64), model.multiplicities)
    with np.errstate(over="ignore"):  # an overflowing transition stays inf in float32 too
        return SkipInput(group=group, grid=_grid(steps), phi=np.ascontiguousarray(phi, ft),
                         fac=np.ascontiguousarray(fac, ft), state=state)


def crossing_grid(model, optimizer, batch_size, target, n_steps, n_records=100, n_dense=60,
                  width=0.25):
    """Choose record steps for hitting times under skip-ahead.

    About ``n_records`` log-spaced steps plus ``n_dense`` evenly spaced steps within ``width``
    (relative) of the exact engine's expected first crossing of ``target`` (when it is reached
    within ``n_steps``).

    Examples
    --------
    >>> steps = crossing_grid(NQM.paper(), SGD(0.0147), 4, 0.01, 2_000_000)  # doctest: +SKIP
    >>> res = simulate(NQM.paper(), SGD(0.0147), 4, 2_000_000, 1000, record=steps,
    ...                target=0.01, method="skip")                          # doctest: +SKIP
    """
    from nqm_mc.exact.engine import steps_to_target
    from nqm_mc.montecarlo.lowering import record_steps
    base = record_steps(n_steps, "log", n_records)
    hit = steps_to_target(model, optimizer, batch_size, target)
    if not hit.reached or hit.steps > n_steps:
        return base
    lo = max(1, int(hit.steps * (1 - width)))
    hi = min(n_steps, int(np.ceil(hit.steps * (1 + width))))
    dense = np.unique(np.linspace(lo, hi, n_dense).round().astype(np.int64))
    return np.unique(np.concatenate([base, dense]))
