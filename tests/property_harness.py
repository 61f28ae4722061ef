"""Run API calls described by picklable examples in a child process, so that a crash (a
segfault in a kernel), a hang or an unexpected exception is reported against the example that
caused it instead of killing the test session.

An example is ``Call(target, args, kwargs)``; any argument may be a ``Build`` (a public object
to construct in the child: a model, an optimizer, a schedule, a noise law). Outcomes are "ok"
(returned), "param" (raised ParameterError) or "error: <traceback>" (anything else).

Usage from a test: ``outcomes = run_examples(examples, timeout)``; it raises AssertionError
naming the example when the child dies or exceeds ``timeout``. ``check(examples, outcomes)``
raises when any outcome is an error.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import traceback
from collections import namedtuple

Call = namedtuple("Call", "target args kwargs")
Build = namedtuple("Build", "kind args kwargs")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ------------------------------------------------------------------ child side
def _builders():
    import numpy as np

    import nqm_mc
    from nqm_mc.spec import noise, optimizers, schedules
    from nqm_mc.spec.schedules import BatchSchedule, Schedule

    class UserSchedule(Schedule):
        """A user's schedule returning the same list whatever n is asked for."""

        def __init__(self, out):
            self.out = out

        def values(self, n):
            return np.asarray(self.out) if not isinstance(self.out, str) else self.out

    class UserBatches(BatchSchedule):
        def __init__(self, out):
            self.out = out

        def values(self, n):
            return np.asarray(self.out) if not isinstance(self.out, str) else self.out

    b = {"NQM": nqm_mc.NQM, "paper": nqm_mc.NQM.paper, "power_law": nqm_mc.NQM.power_law,
         "binned": nqm_mc.NQM.binned, "user_lr": UserSchedule, "user_batch": UserBatches}
    for mod in (optimizers, schedules, noise):
        for name in mod.__all__:
            b[name] = getattr(mod, name)
    return b


def _segfault():
    """A deliberately broken function: reads address 0."""
    import ctypes
    ctypes.string_at(0)


def _type_error():
    """A deliberately broken function: raises something else than ParameterError."""
    raise TypeError("deliberately broken")


def _sleep(seconds):
    import time
    time.sleep(seconds)


BROKEN = {"segfault": _segfault, "type_error": _type_error, "sleep": _sleep}


def _targets():
    import nqm_mc

    t = {name: getattr(nqm_mc, name) for name in (
        "expected_loss", "loss_at", "steady_state", "stability", "steps_to_target",
        "steps_to_target_batch", "simulate")}
    t.update(BROKEN)
    return t


def _build(x, builders):
    if isinstance(x, Build):
        args = [_build(a, builders) for a in x.args]
        kwargs = {k: _build(v, builders) for k, v in x.kwargs.items()}
        return builders[x.kind](*args, **kwargs)
    if isinstance(x, list):
        return [_build(a, builders) for a in x]
    return x


def _child():
    examples = pickle.load(sys.stdin.buffer)
    if all(e.target in BROKEN for e in examples):  # power checks: no need for the package
        builders, targets, ParameterError = {}, BROKEN, ()
    else:
        from nqm_mc import ParameterError
        builders, targets = _builders(), _targets()
    out = sys.stdout
    for i, ex in enumerate(examples):
        out.write(f"START {i}\n")
        out.flush()
        try:
            fn = targets[ex.target]
            args = [_build(a, builders) for a in ex.args]
            kwargs = {k: _build(v, builders) for k, v in ex.kwargs.items()}
            fn(*args, **kwargs)
        except ParameterError:
            res = "param"
        except Exception:  # noqa: BLE001 - every other exception is the finding
            res = "error: " + traceback.format_exc().replace("\n", "\\n")
        else:
            res = "ok"
        out.write(f"END {i} {res}\n")
        out.flush()


# ------------------------------------------------------------------ parent side
def run_examples(examples, timeout=120.0):
    """Outcomes of the examples run in order in one child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("PYTHONFAULTHANDLER", "1")
    cmd = [sys.executable, "-W", "ignore", "-m", "tests.property_harness"]
    try:
        proc = subprocess.run(cmd, input=pickle.dumps(list(examples)), capture_output=True,
                              timeout=timeout, cwd=ROOT, env=env)
        stdout, rc, stderr = proc.stdout, proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as err:
        stdout, rc, stderr = err.stdout or b"", None, err.stderr or b""
    outcomes = {}
    started = None
    for line in stdout.decode(errors="replace").splitlines():
        if line.startswith("START "):
            started = int(line.split()[1])
        elif line.startswith("END "):
            _, i, res = line.split(" ", 2)
            outcomes[int(i)] = res
            started = None
    if rc is None:
        raise AssertionError(f"hang: no result within {timeout} s; running example "
                             f"{started}: {examples[started] if started is not None else '?'}")
    if rc != 0 or len(outcomes) != len(examples):
        raise AssertionError(
            f"crash: the child exited with code {rc} while running example {started}: "
            f"{examples[started] if started is not None else '?'}\n"
            f"{stderr.decode(errors='replace')[-3000:]}")
    return [outcomes[i] for i in range(len(examples))]


def check(examples, outcomes):
    """Raise AssertionError listing every example that raised something else than
    ParameterError."""
    bad = [(ex, res) for ex, res in zip(examples, outcomes, strict=True)
           if res.startswith("error")]
    if bad:
        lines = [f"{ex}\n    {res.replace(chr(92) + 'n', chr(10) + '    ')}"
                 for ex, res in bad[:5]]
        raise AssertionError(f"{len(bad)} of {len(examples)} calls raised something else than "
                             "ParameterError:\n" + "\n".join(lines))


if __name__ == "__main__":
    # run the importable module's copy, so that unpickled Call and Build are its classes
    from tests.property_harness import _child as child
    child()
