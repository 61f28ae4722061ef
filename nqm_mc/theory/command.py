"""``nqm-mc validate --theory FILE.py:FUNCTION -c EXPERIMENT.toml``: a user's theory checked.

The function is loaded from the file and called once with the experiment's model, optimizer,
batch size and recorded steps::

    def predict(model, optimizer, batch_size, steps):
        # return E[L_t] at the steps (an array), or a dict with "mean" and optionally
        # "variance", "statistics" ({name: expectation}), "covariance" and "correlation"
        # ({(s, t): value})
        ...

The experiment runs as ``nqm-mc simulate`` would run it; :func:`nqm_mc.check` judges the
prediction. The command prints the verdict, writes ``theory_check.json`` (every number),
``theory_check.csv`` (the mean record by record) and ``theory_check.png`` (the figure with its
residual panel), and exits 0 when the check passes, 1 when it fails, 2 on bad input.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from nqm_mc.spec._checks import ParameterError

__all__ = ["THEORY_HELP", "load_theory", "predictions", "run"]

PREDICTION_KEYS = ("mean", "variance", "statistics", "covariance", "correlation")
OUTPUTS = ("theory_check.json", "theory_check.csv")
THEORY_HELP = ("check your own prediction: FILE.py:FUNCTION, a function (model, optimizer, "
               "batch_size, steps) returning E[L_t] at the steps, or a dict with 'mean' and "
               "optionally 'variance', 'statistics' and 'covariance'; needs -c EXPERIMENT.toml")
EPILOG = """theory example (examples/sgd_theory.py, SGD's closed form):
  def sgd_mean(model, optimizer, batch_size, steps):
      h, c, n = model.curvatures, model.noise_variances, model.multiplicities
      a = optimizer.base_learning_rate
      q = (1 - a * h)[None, :] ** (2 * steps[:, None])
      start = h / 2 * (model.initial_mean ** 2 + model.initial_variance)
      floor = a * c / (2 * batch_size * (2 - a * h))
      return (n * (q * start + (1 - q) * floor)).sum(axis=1)

  nqm-mc validate --theory examples/sgd_theory.py:sgd_mean -c examples/sgd_theory.toml"""


def load_theory(spec: str) -> Callable[..., Any]:
    """Return the function a ``FILE.py:FUNCTION`` argument names.

    Parameters
    ----------
    spec : str
        ``path/to/file.py:function_name``.

    Returns
    -------
    callable

    Raises
    ------
    ParameterError
        In one sentence: no ``:``, the file missing or not Python, an error while importing it,
        or no callable of that name.
    """
    path, sep, name = spec.rpartition(":")
    if not sep or not path or not name:
        raise ParameterError(f"--theory must be FILE.py:FUNCTION; got {spec!r}")
    if not os.path.isfile(path):
        raise ParameterError(f"--theory: the file {path!r} does not exist")
    if not path.endswith(".py"):
        raise ParameterError(f"--theory: {path!r} is not a Python file (.py)")
    mod_name = "_nqm_mc_theory_" + os.path.splitext(os.path.basename(path))[0]
    loader_spec = importlib.util.spec_from_file_location(mod_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ParameterError(f"--theory: cannot load {path!r} as a Python module")
    module = importlib.util.module_from_spec(loader_spec)
    try:
        loader_spec.loader.exec_module(module)
    except SyntaxError as err:
        raise ParameterError(f"--theory: {path}, line {err.lineno}: SyntaxError: "
                             f"{err.msg}") from None
    except Exception as err:
        raise ParameterError(f"--theory: importing {path} raised {type(err).__name__}: "
                             f"{err}") from None
    fn = getattr(module, name, None)
    if not callable(fn):
        found = sorted(k for k, v in vars(module).items()
                       if callable(v) and not k.startswith("_")
                       and getattr(v, "__module__", None) == mod_name)
        raise ParameterError(f"--theory: {path} has no function {name!r}"
                             + (f"; it defines {', '.join(found)}" if found else ""))
    return fn


def predictions(fn: Callable[..., Any], model: Any, optimizer: Any, batch_size: Any,
                steps: np.ndarray, label: str = "the theory function") -> dict[str, Any]:
    """Call a theory function and return its predictions as :func:`nqm_mc.check` keywords.

    Parameters
    ----------
    fn : callable
        ``fn(model, optimizer, batch_size, steps)``.
    model, optimizer, batch_size
        The experiment's specs.
    steps : ndarray of int64
        The recorded steps.
    label : str
        How to name the function in errors.

    Returns
    -------
    dict
        ``{"mean": ...}`` and any of "variance", "statistics", "covariance".

    Raises
    ------
    ParameterError
        The function raised, or returned something else than an array or a dict of the
        known keys.
    """
    try:
        out = fn(model, optimizer, batch_size, steps.copy())
    except Exception as err:
        raise ParameterError(f"{label} raised {type(err).__name__}: {err}") from None
    if isinstance(out, Mapping):
        unknown = [k for k in out if k not in PREDICTION_KEYS]
        if unknown:
            raise ParameterError(f"{label} returned the unknown key {unknown[0]!r}; allowed: "
                                 f"{', '.join(PREDICTION_KEYS)}")
        return dict(out)
    if out is None:
        raise ParameterError(f"{label} returned None; it must return E[L_t] at the steps (an "
                             "array) or a dict of predictions")
    return {"mean": out}


def run(args: argparse.Namespace) -> int:
    """Run ``nqm-mc validate --theory``; return 0 (passed), 1 (failed) or 2 (bad input)."""
    from nqm_mc import _files, style
    from nqm_mc.theory.verdict import (
        check,
        complete_experiment,
        experiment_steps,
        run_experiment,
    )
    if not getattr(args, "config", None):
        raise ParameterError("--theory needs the experiment: -c EXPERIMENT.toml")
    if getattr(args, "case", None):
        raise ParameterError("--case selects validation cases; it does not apply with --theory")
    fn = load_theory(args.theory)
    formats = getattr(args, "format", None)
    out = _files.prepare_output(args.out, list(OUTPUTS)
                                + style.output_names("theory_check", formats), "validate",
                                args.force)
    exp = complete_experiment(args.config)
    runs = getattr(args, "runs", None) or int(exp.run.get("runs", 100))
    runs *= int(getattr(args, "runs_factor", 1) or 1)
    # the function is called first, with the steps the run will record: every path is kept
    # when a variance or a covariance is to be tested
    steps = experiment_steps(exp)
    label = f"the theory function {args.theory}"
    pred = predictions(fn, exp.model, exp.optimizer, exp.batch_size, steps, label)
    keep = runs if {"variance", "covariance", "correlation"} & set(pred) else None
    quiet = getattr(args, "json", False)
    if not quiet:
        print(f"simulating {runs} runs of {args.config} for {args.theory}", file=sys.stderr,
              flush=True)
    res, _ = run_experiment(exp, runs=runs, seed=args.seed, threads=args.threads,
                            keep_paths=keep, progress=None if not quiet else False)
    v = check(res, **pred)
    m = v.comparisons.get("mean")
    _files.write_json(out.path("theory_check.json"),
                      {"theory": args.theory, "config": str(args.config), **v.to_dict(),
                       "spec": res.spec}, indent=1)
    if m is not None:
        _files.write_csv(out.path("theory_check.csv"),
                         ["step", "mc_mean", "mc_sem", "predicted", "z"],
                         [(int(t), a, s, p, z) for t, a, s, p, z in zip(
                             v.steps, m.estimate, m.se, m.predicted, m.z, strict=True)])
    v.plot(out.path("theory_check.png"), formats,
           title=f"{args.theory} on {os.path.basename(str(args.config))}: "
                 f"{'passed' if v.passed else 'FAILED'}, max |z| = {v.max_abs_z:.2f} "
                 f"(threshold {v.threshold:.2f})")
    out.finish()
    if quiet:
        print(_files.json_dumps({"theory": args.theory, "config": str(args.config),
                                 **{k: x for k, x in v.to_dict().items()
                                    if k != "comparisons"}}, indent=1))
    else:
        print(v)
        print(f"wrote {out.path('theory_check.json')}, theory_check.csv and "
              f"theory_check.png in {out.dir}")
    return 0 if v.passed else 1
