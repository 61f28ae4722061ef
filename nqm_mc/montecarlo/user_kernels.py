"""Kernels generated for user rules and noises, compiled once and cached across processes.

For each (:class:`~nqm_mc.spec.user.UpdateRule`, :class:`~nqm_mc.spec.user.GradientNoise`)
pair a small module is written as source text into the kernel cache directory
(``$NQM_MC_KERNEL_DIR``, default ``~/.cache/nqm_mc/kernels``), named by a hash of the rule's
and noise's module, qualified name and source, of the argument binding and of the sources of
the kernels it calls, then imported and compiled by numba with ``cache=True``: a second
process with the same rule (defined in a file) loads the compiled kernel from disk. A rule
without source (typed at an interactive prompt) is compiled in memory only.

The generated module fetches the user's functions from :data:`_REGISTRY` (filled before it is
imported) and calls them inside one kernel, ``run_block``, shaped like the built-in ones, with
the built-in helpers: initial state, noise, loss and band sums, statistics (:mod:`._kernels`,
:mod:`._statistics`, :mod:`._user_support`). The trajectory loop is written out inside
``run_block`` rather than called: numba optimises and emits a callee's code again inside each
caller, and the three-level version compiled in about twice the time. Two shapes:

* windowed: rules that use no reduction over directions, under the built-in Gaussian noise:
  chunks of directions advanced a window of steps at a time, like the built-in linear
  optimizers;
* one pass per step: rules that use ``loss`` or ``grad_sq``, and every user noise.

Both draw the same normals and sum the losses in the same order, so they give the same bits,
and the built-in optimizers written as rules give the built-in kernels' bits.
"""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import os
import sys
import tempfile
import textwrap
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, NamedTuple, cast

import numba
import numpy as np

from nqm_mc.montecarlo._rule_checks import RuleError, _explain, _validate
from nqm_mc.spec.schedules import Schedule, checked_pieces
from nqm_mc.spec.user import GradientNoise, UpdateRule

if TYPE_CHECKING:
    from nqm_mc.montecarlo.lowering import KernelInput

__all__ = ["UserInput", "UserPlan", "kernel_for", "plan_user", "kernel_dir", "RuleError"]

TEMPLATE_VERSION = "5"
_REGISTRY: dict[str, dict[str, Any]] = {}
_MODULES: dict[str, ModuleType] = {}
_LOCK = threading.RLock()
_ANNOUNCED: set[str] = set()
# (id(rule), id(noise)) -> (rule, noise, module): the objects are held, so their ids stay theirs
_BY_OBJECT: dict[tuple[int, int], tuple[Any, Any, ModuleType]] = {}


class UserInput(NamedTuple):
    """What the generated kernels take besides the built-in kernels' input."""

    hyper: np.ndarray  #: (n_hyper, K) hyperparameters per run of constant values, state dtype
    hyper_start: np.ndarray  #: (K,) first step of each run (int64; 0 first, increasing)
    init: np.ndarray  #: (n_state,) initial values of the state variables (float64)
    c: np.ndarray  #: (d,) the model's noise variances per direction (float64)
    noise_params: np.ndarray  #: (n_params,) the noise's parameters (float64)
    n_normals: int  #: normals per step of a user noise (0 under the built-in noise)


@dataclass(frozen=True)
class UserPlan:
    """A user rule (and noise) with their lowered inputs; travels with the plan (picklable)."""

    rule: UpdateRule
    noise: GradientNoise | None
    inputs: UserInput

    def run_block(self, inp: KernelInput, b: int, bb: int, block_size: int, n_runs: int,
                  keep_paths: int, run_start: np.ndarray, run_band: np.ndarray, out: Any,
                  stop: np.ndarray, nan_at: np.ndarray) -> None:
        """Run block b with the generated kernel (see ``_kernels.run_block``).

        Trajectories stopped by NaN get their step in ``nan_at`` (by slot).
        """
        mod = kernel_for(self.rule, self.noise)
        try:
            mod.run_block(inp.rule, inp.directions, inp.schedule, inp.noise, inp.recording,
                          inp.stream, b, bb, block_size, n_runs, keep_paths, run_start,
                          run_band, out, stop, self.inputs, nan_at)
        except numba.core.errors.NumbaError as err:
            raise RuleError(_explain(err, self.rule, self.noise)) from None


# --- the cache directory and keys ----------------------------------------------------------

def kernel_dir() -> Path:
    """Return the directory of the generated kernels (created if missing).

    ``$NQM_MC_KERNEL_DIR`` if set, else ``$XDG_CACHE_HOME/nqm_mc/kernels`` (``~/.cache`` by
    default), else a directory under the system's temporary directory.

    Returns
    -------
    Path
    """
    env = os.environ.get("NQM_MC_KERNEL_DIR")
    if env:
        path = Path(env)
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"),
                                                                ".cache")
        path = Path(base) / "nqm_mc" / "kernels"
    try:
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK):
            raise OSError
    except OSError:
        path = Path(tempfile.gettempdir()) / f"nqm_mc_kernels_{os.getuid()}"
        path.mkdir(parents=True, exist_ok=True)
    return path


def _source(fn: Any) -> tuple[str, bool]:
    """(source text, whether it came from a file)."""
    try:
        return textwrap.dedent(inspect.getsource(fn)), True
    except (OSError, TypeError):
        code = getattr(fn, "__code__", None)
        return (repr(code.co_code) + repr(code.co_consts) if code is not None else repr(fn),
                False)


_SUPPORT_HASH: list[str] = []


def _support_hash() -> str:
    """Hash of the sources the generated kernels call (numba's cache does not see callees)."""
    if not _SUPPORT_HASH:
        here = Path(__file__).parent
        h = hashlib.sha256()
        for name in ("_kernels.py", "_statistics.py", "_rng.py", "_user_support.py",
                     "_interrupt.py", "user_kernels.py"):
            h.update((here / name).read_bytes())
        h.update(numba.__version__.encode())
        _SUPPORT_HASH.append(h.hexdigest())
    return _SUPPORT_HASH[0]


def _windowed(rule: UpdateRule, noise: GradientNoise | None) -> bool:
    return noise is None and not rule.reductions


def _key(rule: UpdateRule, noise: GradientNoise | None) -> tuple[str, bool]:
    """(hash key of the generated module, whether it may be cached on disk)."""
    parts: dict[str, Any] = {"template": TEMPLATE_VERSION, "support": _support_hash()}
    src, in_file = _source(rule.update)
    fn = rule.update
    psrc, pfile = _source(rule.prepare) if rule.prepare is not None else ("", True)
    in_file = in_file and pfile
    parts["prepare"] = [psrc, rule.prepare_arguments, list(rule.prepared)]
    parts["rule"] = [fn.__module__, fn.__qualname__, src, rule.arguments,
                     [(k, v == "theta") for k, v in rule.state.items()],  # type: ignore[union-attr]
                     list(rule.hyper), rule.readout]
    if noise is not None:
        nsrc, nfile = _source(noise.gradient)
        msrc, mfile = _source(noise.normals)
        in_file = in_file and nfile and mfile
        parts["noise"] = [noise.gradient.__module__, noise.gradient.__qualname__, nsrc, msrc,
                          noise.arguments, list(noise.params)]
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20], in_file


# --- code generation ------------------------------------------------------------------------

_HEADER = '''"""Generated by nqm_mc for update rule @NAME@@NOISENAME@ (key @KEY@); do not edit."""

import numpy as np
from numba import njit

from nqm_mc.montecarlo import _user_support as U
from nqm_mc.montecarlo._interrupt import stop_requested
from nqm_mc.montecarlo._kernels import _new_work, _start, piece_at
from nqm_mc.montecarlo._statistics import (
    _add_hsq16,
    _band_sums,
    _sumsq16,
    begin_trajectory,
    end_trajectory,
    half_quadratic,
    loss_chunk,
)
from nqm_mc.montecarlo.user_kernels import registered

_update = registered("@KEY@", "update")
_noise = registered("@KEY@", "noise")
_normals = registered("@KEY@", "normals")
_prepare = registered("@KEY@", "prepare")
_first = U.first
'''

# One kernel per rule, the trajectory loop written out in it (why: the module docstring);
# @TRAJECTORY@ is _WINDOW or _PASS below.
_BLOCK = '''

@njit(cache=@CACHE@, error_model="numpy", nogil=True)
def run_block(rule, dirs, sched, law, rec, stream, b, bb, block_size, n_runs, keep_paths,
              run_start, run_band, out, stop, user, nan_at):
    R = rec.steps.shape[0]
    first = b - bb
    work = _new_work(rule, dirs, law, R, rec.n_bands)
    ft = dirs.coef_a.dtype
    S = np.zeros((@NSTATE@, dirs.h.shape[0]), ft)
    zn = np.zeros(user.n_normals + 4, ft)
    single = dirs.single
    h = dirs.h
    ca = dirs.coef_a
    cb = dirs.coef_b
    c = user.c
    theta = work.theta
    g = work.g
    q = work.q
    lw = work.lw
    z = work.z
    ws = work.ws
    record = rec.steps
    T = record[R - 1]
    d = h.shape[0]
    hyper = user.hyper
    hyper_start = user.hyper_start
    readout = @READOUT@
    per = loss_chunk(single)
@BLOCKVIEWS@
    for j in range(block_size):
        traj = b * block_size + j
        if traj >= n_runs:
            break
        slot = traj - first * block_size
        if not begin_trajectory(out, slot, work, stop):
            continue
        key = (np.uint32(stream.seed_hi), np.uint32(stream.seed_lo), np.uint32(traj))
        loss_th, hit, r = _start(dirs, rec, work, run_start, run_band, key)
@INIT@
        div = -1
        piece = np.int64(0)  # np.int64: a literal 0 would compile the callees once more for it
        hpiece = np.int64(0)
@TRAJECTORY@
        if U.is_nan_stop(work, div):
            nan_at[slot] = div
        end_trajectory(out, bb, slot, traj, hit, div, r, keep_paths, work, rec)
'''

# windowed: chunks of directions advanced a window of 64 steps at a time (as _kernels._window)
_WINDOW = '''\
        t0 = np.int64(0)
        while t0 < T:
            if stop_requested(stop) != 0:
                break
            w = min(64, T - t0)
            piece = piece_at(sched.start, t0, piece)
            hpiece = piece_at(hyper_start, t0, hpiece)
            for s in range(w):
                for k in range(32):
                    lw[s, k] = 0.0
            for lo in range(0, d, per):
                n = min(per, d - lo)
                th = theta[lo:]
                aa = ca[lo:]
                bv = cb[lo:]
                hh = h[lo:]
@VIEWS@
                rw = r
                wpiece = piece
                whpiece = hpiece
                for s in range(w):
                    t = t0 + s
                    U.chunk_noise(lo, n, t, key, ws, z)
                    wpiece = piece_at(sched.start, t, wpiece)
                    whpiece = piece_at(hyper_start, t, whpiece)
                    lr = sched.learning_rate[wpiece]
                    isb = sched.inv_sqrt_batch[wpiece]
@HYPER@
                    for i in range(n):
                        gi = aa[i] * th[i] + bv[i] * isb * z[i]
                        @CALL@
                    _add_hsq16(h, theta, lo, n, lw[s, 0:16], q)
@READOUTSUM@
                    if rw < R and record[rw] == t + 1:
                        _band_sums(readout, lo, lo + n, run_start, run_band, work.rec_band[rw])
                        rw += 1
            hit, div, r = U.after_window(work, rec, t0, w, hit, r, @HASREADOUT@)
            if div >= 0:
                break
            t0 += w'''

# one pass over the directions per step (rules with reductions, user noises)
_PASS = '''\
        for t in range(T):
            if stop_requested(stop) != 0:
                break
            piece = piece_at(sched.start, t, piece)
            hpiece = piece_at(hyper_start, t, hpiece)
@NOISE@
@REDUCE@
            lr = sched.learning_rate[piece]
@HYPER@
            for i in range(d):
                @CALL@
            loss_th = half_quadratic(h, theta, q)
            loss = @LOSS@
            hit, div, r = U.after_step(work, rec, t + 1, loss, loss_th, hit, r, readout,
                                       run_start, run_band, per)
            if div >= 0:
                break'''


def _generate(key: str, rule: UpdateRule, noise: GradientNoise | None, cache: bool) -> str:
    """Return the generated module's source."""
    state = list(rule.state)
    hyper = list(rule.hyper)
    windowed = _windowed(rule, noise)
    ind = " " * (20 if windowed else 12)  # the indentation of the step's body
    hp = "whpiece" if windowed else "hpiece"
    if windowed:
        views = "\n".join(f"                s{k} = S[{k}, lo:]" for k in range(len(state)))
        block_views = ""
    else:
        views = ""
        block_views = "\n".join(f"    s{k} = S[{k}]" for k in range(len(state)))
    init = []
    if state:
        init.append("        for i in range(d):")
        for k, name in enumerate(state):
            src = "theta[i]" if cast(Mapping[str, Any], rule.state)[name] == "theta" \
                else f"user.init[{k}]"
            init.append(f"            S[{k}, i] = {src}")
    hyp = "\n".join(f"{ind}hp{j} = hyper[{j}, {hp}]" for j in range(len(hyper)))
    theta_e, g_e, h_e = ("th[i]", "gi", "hh[i]") if windowed else ("theta[i]", "g[i]", "h[i]")
    bind = {"theta": theta_e, "g": g_e, "lr": "lr", "t": "t", "h": h_e, "dim": "d",
            "loss": "loss_th", "grad_sq": "grad_sq"}
    bind.update({name: f"s{k}[i]" for k, name in enumerate(state)})
    bind.update({name: f"hp{j}" for j, name in enumerate(hyper)})
    npre = len(rule.prepared)
    if npre:
        pargs = ", ".join(bind[a] for a in rule.prepare_arguments)
        lhs = ", ".join(f"pv{j}" for j in range(npre))
        hyp += (f"\n{ind}{lhs} = _prepare({pargs})" if npre > 1 else
                f"\n{ind}pv0 = _first(_prepare({pargs}))")
        bind.update({name: f"pv{j}" for j, name in enumerate(rule.prepared)})
    args = ", ".join(bind[a] for a in rule.arguments)
    if state:
        call = ", ".join([theta_e] + [f"s{k}[i]" for k in range(len(state))]) + \
            f" = _update({args})"
    else:
        call = f"{theta_e} = _first(_update({args}))"
    ro = None if rule.readout is None else state.index(rule.readout)
    readout = "theta" if ro is None else f"S[{ro}]"
    subs = {"@KEY@": key, "@NAME@": repr(rule.name),
            "@NOISENAME@": "" if noise is None else f" and noise {noise.name!r}",
            "@CACHE@": "True" if cache else "False", "@NSTATE@": str(len(state)),
            "@VIEWS@": views, "@BLOCKVIEWS@": block_views, "@INIT@": "\n".join(init),
            "@HYPER@": hyp, "@CALL@": call, "@READOUT@": readout}
    if windowed:
        body = _WINDOW
        subs["@HASREADOUT@"] = "np.bool_(False)" if ro is None else "np.bool_(True)"
        subs["@READOUTSUM@"] = ("" if ro is None else
                                f"{ind}_add_hsq16(h, readout, lo, n, lw[s, 16:32], q)")
    else:
        body = _PASS
        if noise is None:
            noise_src = ("            U.fill_noise(z, d, t, key, ws)\n"
                         "            U.gaussian_gradient(g, theta, ca, cb, "
                         "sched.inv_sqrt_batch[piece], z)")
        else:
            nb = {"g": "g", "theta": "theta", "h": "h", "c": "c", "z": "zn",
                  "batch": "sched.batch[piece]", "loss": "loss_th", "dim": "d"}
            nb.update({p: f"user.noise_params[{j}]" for j, p in enumerate(noise.params)})
            nargs = ", ".join(nb[a] for a in noise.arguments)
            noise_src = ("            nz = min(_normals(d, sched.batch[piece]), zn.shape[0] - 4)\n"
                         "            U.fill_noise(zn, nz, t, key, ws)\n"
                         f"            _noise({nargs})")
        subs["@NOISE@"] = noise_src
        subs["@REDUCE@"] = ("            grad_sq = _sumsq16(g, np.int64(0), d)"
                            if "grad_sq" in rule.reductions else "")
        subs["@LOSS@"] = "loss_th" if ro is None else "half_quadratic(h, readout, q)"
    text = _HEADER + _BLOCK.replace("@TRAJECTORY@", body)
    for mark, src_text in subs.items():
        text = text.replace(mark, src_text)
    lines = text.split("\n")
    kept = [ln for i, ln in enumerate(lines)  # the blank lines empty fields left in bodies
            if ln.strip() or i + 1 == len(lines) or not lines[i + 1].startswith(" ")]
    return "\n".join(kept)


def registered(key: str, what: str) -> Any:
    """Return the compiled user function ``what`` ("update", "noise", ...) of module ``key``."""
    return _REGISTRY[key][what]


def _unused(*args: Any) -> int:  # pragma: no cover - placeholder of a missing noise
    return 0


_NJIT = {"error_model": "numpy"}


def kernel_for(rule: UpdateRule, noise: GradientNoise | None = None) -> ModuleType:
    """Return the generated module of a rule and noise (generated, imported once per process).

    Parameters
    ----------
    rule : UpdateRule
    noise : GradientNoise, optional
        None: the built-in Gaussian noise.

    Returns
    -------
    module
        Its ``run_block`` has the signature of ``_kernels.run_block`` plus ``user`` (a
        :class:`UserInput`) and ``nan_at``.

    Raises
    ------
    RuleError
        If the rule or noise does not compile or the rule returns the wrong shape.
    """
    known = _BY_OBJECT.get((id(rule), id(noise)))
    if known is not None and known[0] is rule and known[1] is noise:
        return known[2]  # the same objects again (every block of a run): no hashing
    key, in_file = _key(rule, noise)
    with _LOCK:
        mod = _MODULES.get(key)
        if mod is not None:
            _BY_OBJECT[(id(rule), id(noise))] = (rule, noise, mod)
            return mod
        fns = {"update": numba.njit(inline="always", **_NJIT)(rule.update),
               "noise": numba.njit(**_NJIT)(noise.gradient if noise else _unused),
               "normals": numba.njit(**_NJIT)(noise.normals if noise else _unused),
               "prepare": numba.njit(**_NJIT)(rule.prepare or _unused)}
        _REGISTRY[key] = fns
        name = f"nqm_mc_kernel_{key}"
        text = _generate(key, rule, noise, in_file)
        if in_file:
            path = kernel_dir() / f"{name}.py"
            if not path.exists() or path.read_text() != text:
                tmp = path.with_suffix(f".{os.getpid()}.{threading.get_ident()}.tmp")
                tmp.write_text(text)
                os.replace(tmp, path)
        else:
            path = Path(tempfile.mkdtemp(prefix="nqm_mc_rule_")) / f"{name}.py"
            path.write_text(text)
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
        if not (in_file and _cached(mod.run_block)):
            _validate(rule, noise, fns)  # a cached kernel compiled: the rule is known good
            _announce(key, rule, noise)
        _MODULES[key] = mod
        _BY_OBJECT[(id(rule), id(noise))] = (rule, noise, mod)
        return mod


def _cached(dispatcher: Any) -> bool:
    try:
        return bool(dispatcher._cache._cache_file._load_index())
    except Exception:
        return False


def _announce(key: str, rule: UpdateRule, noise: GradientNoise | None) -> None:
    """Print the compile notice (stderr), once per kernel and process."""
    if key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        with_noise = "" if noise is None else f" with noise {noise.name!r}"
        sys.stderr.write(f"compiling the kernel of update rule {rule.name!r}{with_noise} "
                         "(first run only, ~5 s)\n")
        sys.stderr.flush()


# --- lowering -------------------------------------------------------------------------------

def plan_user(rule: UpdateRule, noise: GradientNoise | None, inputs: KernelInput,
              n_steps: int, model_c: np.ndarray) -> UserPlan:
    """Lower a rule and noise next to the built-in kernels' input.

    Parameters
    ----------
    rule : UpdateRule
    noise : GradientNoise or None
    inputs : KernelInput
        The lowered run (its learning rates are the rule's).
    n_steps : int
        Number of steps.
    model_c : ndarray
        The model's noise variances per direction.

    Returns
    -------
    UserPlan
    """
    from nqm_mc.montecarlo.lowering import merged_runs
    ft = inputs.directions.coef_a.dtype
    T = max(n_steps, 1)
    columns = []
    for name, v in rule.hyper.items():
        if isinstance(v, Schedule):
            pc = checked_pieces(v, T, f"hyper[{name!r}]", f"rule {rule.name!r}")
            columns.append((pc.starts, pc.values))
        else:
            columns.append((np.zeros(1, np.int64), np.full(1, v, dtype=np.float64)))
    start, rows = merged_runs(columns) if columns else (np.zeros(1, np.int64), [])
    hyper = np.ascontiguousarray(np.array(rows, dtype=ft).reshape(len(rows), start.size))
    init = np.array([0.0 if v == "theta" else float(v)
                     for v in cast(Mapping[str, float], rule.state).values()], dtype=np.float64)
    d = inputs.directions.h.size
    n_normals = 0
    params = np.zeros(0)
    if noise is not None:
        n_normals = max(noise.n_normals(d, int(bs)) for bs in np.unique(inputs.schedule.batch))
        params = np.array(list(noise.params.values()), dtype=np.float64)
    user = UserInput(hyper=hyper, hyper_start=start, init=init,
                     c=np.ascontiguousarray(model_c, np.float64),
                     noise_params=params, n_normals=int(n_normals))
    return UserPlan(rule=rule, noise=noise, inputs=user)
