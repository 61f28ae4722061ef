"""Monte Carlo results and their storage (.npz arrays plus a JSON sidecar with provenance)."""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field

import numpy as np

__all__ = ["SimulationResult", "load_result", "provenance"]

RNG_SCHEME = ("Philox4x32-10; key = (seed mod 2^32, trajectory id); counter = (index within "
              "step, step, purpose [0 gradient, 1 initial state], seed div 2^32); Box-Muller "
              "normals from 53-bit (float64) or 24-bit (float32) uniforms")


def provenance():
    """Versions and machine facts recorded with every result."""
    import numba
    import scipy

    import nqm_mc
    return {"nqm_mc": nqm_mc.__version__, "numpy": np.__version__, "numba": numba.__version__,
            "scipy": scipy.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "rng": RNG_SCHEME}


@dataclass
class SimulationResult:
    """What :func:`nqm_mc.simulate` returns.

    Per recorded step (arrays of length R): ``mean`` loss over the finite runs, its standard
    error ``sem``, the sample ``variance``, ``quantiles`` (Q x R, at ``quantile_levels``),
    ``mean_theta`` (loss at theta; equal to ``mean`` without EMA), ``n_finite`` and
    ``n_diverged``; ``band_mean_square`` (R x n_bands) is the mean of the readout's square over
    the directions of each curvature band. ``hitting_times`` holds every run's first step with
    loss < target (-1 never, -2 diverged first) when a target was given.
    """

    steps: np.ndarray
    mean: np.ndarray
    sem: np.ndarray
    variance: np.ndarray
    quantile_levels: np.ndarray
    quantiles: np.ndarray
    mean_theta: np.ndarray
    n_finite: np.ndarray
    n_diverged: np.ndarray
    band_mean_square: np.ndarray
    band_edges: np.ndarray
    hitting_times: np.ndarray | None
    paths: np.ndarray | None
    spec: dict
    meta: dict = field(default_factory=dict)

    @property
    def n_runs(self):
        return int(self.spec["n_runs"])

    @property
    def diverged(self):
        return bool(self.n_diverged[-1] > 0)

    def hitting_summary(self):
        """Mean, quantiles and the fraction that never hit, over the runs that hit."""
        if self.hitting_times is None:
            return None
        ht = self.hitting_times
        hit = ht[ht >= 0]
        out = {"target": self.spec.get("target"), "n_runs": int(ht.size),
               "fraction_never": float(np.mean(ht == -1)),
               "fraction_diverged": float(np.mean(ht == -2))}
        if hit.size:
            out.update(mean=float(hit.mean()),
                       sem=float(hit.std(ddof=1) / np.sqrt(hit.size)) if hit.size > 1 else
                       float("nan"),
                       quantiles={f"{q:g}": float(v) for q, v in zip(  # noqa: B905
                           (0.05, 0.25, 0.5, 0.75, 0.95),
                           np.quantile(hit, (0.05, 0.25, 0.5, 0.75, 0.95)))})
        return out

    # ------------------------------------------------------------------ storage
    _ARRAYS = ("steps", "mean", "sem", "variance", "quantile_levels", "quantiles", "mean_theta",
               "n_finite", "n_diverged", "band_mean_square", "band_edges", "hitting_times",
               "paths")

    def save(self, path):
        """Write ``path`` (.npz) and ``path`` with .json (specs, seed, versions, RNG scheme)."""
        path = os.fspath(path)
        base = path[:-4] if path.endswith(".npz") else path
        os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
        arrays = {k: getattr(self, k) for k in self._ARRAYS if getattr(self, k) is not None}
        np.savez_compressed(base + ".npz", **arrays)
        with open(base + ".json", "w") as f:
            json.dump({"kind": "simulation", "spec": self.spec, "meta": self.meta}, f, indent=2,
                      default=_json_default)
        return base + ".npz"

    def equals(self, other):
        """Bitwise equality of every array and the spec."""
        for k in self._ARRAYS:
            a, b = getattr(self, k), getattr(other, k)
            if (a is None) != (b is None):
                return False
            if a is not None and not np.array_equal(a, b, equal_nan=True):
                return False
        return self.spec == other.spec


def _json_default(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(type(o).__name__)


def load_result(path):
    """Load a result written by :meth:`SimulationResult.save`."""
    path = os.fspath(path)
    base = os.path.splitext(path)[0] if path.endswith((".npz", ".json")) else path
    with open(base + ".json") as f:
        side = json.load(f)
    with np.load(base + ".npz") as z:
        arrays = {k: z[k] for k in z.files}
    kw = {k: arrays.get(k) for k in SimulationResult._ARRAYS}
    return SimulationResult(**kw, spec=side["spec"], meta=side.get("meta", {}))


def save_study(results, directory, labels=None):
    """Save several results (a sweep) into one directory: result_000.npz/.json ... and
    study.json indexing them (label, spec summary, file), with provenance."""
    os.makedirs(directory, exist_ok=True)
    labels = labels or [f"{i:03d}" for i in range(len(results))]
    index = []
    for lab, res in zip(labels, results, strict=True):
        name = f"result_{lab}"
        res.save(os.path.join(directory, name))
        s = res.spec
        index.append({"label": lab, "file": name + ".npz", "optimizer": s.get("optimizer"),
                      "batch_size": s.get("batch_size"), "seed": s.get("seed"),
                      "n_runs": s.get("n_runs"), "final_mean": float(res.mean[-1]),
                      "final_sem": float(res.sem[-1])})
    with open(os.path.join(directory, "study.json"), "w") as f:
        json.dump({"kind": "study", "provenance": provenance(), "results": index}, f,
                  indent=1, default=_json_default)
    return os.path.join(directory, "study.json")


def load_study(directory):
    """The results of :func:`save_study`, in order, as a dict label -> SimulationResult."""
    with open(os.path.join(directory, "study.json")) as f:
        index = json.load(f)["results"]
    return {e["label"]: load_result(os.path.join(directory, e["file"])) for e in index}
