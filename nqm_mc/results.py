"""Monte Carlo results and their storage.

A result is one .npz holding the arrays and the metadata JSON (spec, provenance), with a
readable .json copy beside it.
"""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NoReturn

import numpy as np

from nqm_mc.spec._checks import ParameterError

__all__ = ["SimulationResult", "load_result", "save_study", "load_study", "provenance",
           "ResultFileError"]

RNG_SCHEME = ("Philox4x32-10; key = (seed mod 2^32, trajectory id); counter = (index within "
              "step, step, purpose [0 gradient, 1 initial state], seed div 2^32); Box-Muller "
              "normals from 53-bit (float64) or 24-bit (float32) uniforms")


def provenance() -> dict[str, str]:
    """Return the versions and machine facts recorded with every result.

    Returns
    -------
    dict
        Versions of nqm_mc, numpy, numba, scipy and Python, the machine and the random
        number scheme.
    """
    import numba
    import scipy

    from nqm_mc._version import __version__
    return {"nqm_mc": __version__, "numpy": np.__version__, "numba": numba.__version__,
            "scipy": scipy.__version__, "python": platform.python_version(),
            "machine": platform.machine(), "rng": RNG_SCHEME}


@dataclass
class SimulationResult:
    """The statistics of a Monte Carlo run, as :func:`nqm_mc.simulate` returns them.

    Per recorded step (arrays of length R): ``mean`` loss over the finite runs, its standard
    error ``sem``, the sample ``variance``, ``quantiles`` (Q x R, at ``quantile_levels``),
    ``mean_theta`` (loss at theta; equal to ``mean`` without EMA), ``n_finite`` and
    ``n_diverged``; ``band_mean_square`` (R x n_bands) is the mean of the readout's square over
    the directions of each curvature band. ``hitting_times`` holds every run's first step with
    loss < target (-1 never, -2 diverged first, -3 stopped by an interruption before it hit)
    when a target was given. After an interruption (``meta["interrupted"]``) each recorded
    step's statistics cover the ``n_finite`` runs that reached it.

    Attributes
    ----------
    steps : ndarray of int64, shape (R,)
        The recorded steps.
    mean, sem, variance, mean_theta : ndarray, shape (R,)
        Statistics of the loss over the finite runs at each recorded step.
    quantile_levels : ndarray, shape (Q,)
        Levels of ``quantiles`` (Q x R), read from a histogram of log10 of the loss.
    n_finite, n_diverged : ndarray of int64, shape (R,)
        Runs counted at each step, and runs diverged by then.
    band_mean_square : ndarray, shape (R, n_bands)
        Mean square of the readout per curvature band; ``band_edges`` are the band edges.
    hitting_times : ndarray of int64 or None
        One per run when a target was given.
    paths : ndarray or None
        Recorded losses of the first ``keep_paths`` runs.
    spec : dict
        The JSON description of the run (model, optimizer, schedules, seed, ...).
    meta : dict
        Provenance, timings and interruption marks.

    See Also
    --------
    load_result : read a saved result back.
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
    spec: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_runs(self) -> int:
        """Number of runs asked for (``spec["n_runs"]``)."""
        return int(self.spec["n_runs"])

    @property
    def diverged(self) -> bool:
        """Whether any run diverged by the last recorded step."""
        return bool(self.n_diverged[-1] > 0)

    def hitting_summary(self) -> dict[str, Any] | None:
        """Summarise the hitting times.

        Returns
        -------
        dict or None
            The target, the number of runs, the fractions that never hit and that diverged,
            and over the runs that hit: ``mean``, ``sem`` and ``quantiles`` (5, 25, 50, 75,
            95 %). None when no target was given.
        """
        if self.hitting_times is None:
            return None
        ht = self.hitting_times
        stopped = int(np.count_nonzero(ht == -3))  # interrupted before they hit
        ht = ht[ht != -3]
        hit = ht[ht >= 0]
        n = max(int(ht.size), 1)
        out = {"target": self.spec.get("target"), "n_runs": int(ht.size),
               "fraction_never": float(np.count_nonzero(ht == -1) / n),
               "fraction_diverged": float(np.count_nonzero(ht == -2) / n)}
        if stopped:
            out["n_interrupted"] = stopped  # not in the fractions: their outcome is unknown
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

    def save(self, path: str | os.PathLike[str], overwrite: bool = False) -> str:
        """Write the result to ``path`` (.npz) and return that path.

        ``path`` may end in .npz, .json or nothing: 'x', 'x.npz' and 'x.json' all name the
        result x.npz. The .npz holds every array and, as the string entry ``__meta__``, the
        JSON of the spec and metadata (specs, seed, versions, RNG scheme; strict JSON with
        NaN and infinities as null), so arrays and metadata cannot disagree. A readable copy
        of the JSON is written beside it as x.json; :func:`load_result` reads only the .npz.
        Writes are atomic (a killed process leaves the old result or the new one). An
        existing result is replaced only with ``overwrite=True``.

        Parameters
        ----------
        path : str or path-like
            'x', 'x.npz' or 'x.json'.
        overwrite : bool, default False
            Replace an existing result.

        Returns
        -------
        str
            The path of the .npz written.

        Raises
        ------
        nqm_mc._files.OutputExistsError
            A FileExistsError, if the result exists and ``overwrite`` is false.
        """
        from nqm_mc import _files
        base = _base(path)
        npz = base + ".npz"
        if not overwrite and os.path.lexists(npz):
            raise _files.OutputExistsError(npz, "pass overwrite=True to replace it")
        os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
        doc = {"kind": "simulation", "format_version": FORMAT_VERSION, "spec": self.spec,
               "meta": self.meta}
        text = _files.json_dumps(doc, indent=2)  # encoded before anything is written
        arrays = {k: getattr(self, k) for k in self._ARRAYS if getattr(self, k) is not None}
        arrays[META_KEY] = np.array(text)
        try:
            _files.write_npz(npz, arrays, overwrite=overwrite)
        except FileExistsError:
            raise _files.OutputExistsError(npz, "pass overwrite=True to replace it") from None
        _files.write_text(base + ".json", text + "\n", overwrite=True)
        return npz

    def equals(self, other: SimulationResult) -> bool:
        """Return whether every array and the spec are equal, bit for bit.

        Parameters
        ----------
        other : SimulationResult
            The result to compare with (NaN equals NaN).

        Returns
        -------
        bool
        """
        for k in self._ARRAYS:
            a, b = getattr(self, k), getattr(other, k)
            if (a is None) != (b is None):
                return False
            if a is not None and not np.array_equal(a, b, equal_nan=True):
                return False
        return self.spec == other.spec


FORMAT_VERSION = 2  # 1: arrays in .npz, spec and meta only in the .json sidecar
META_KEY = "__meta__"
_PER_RECORD = ("mean", "sem", "variance", "mean_theta", "n_finite", "n_diverged")


class ResultFileError(ParameterError):
    """A saved result (or study) cannot be read: missing, damaged or inconsistent."""


def _base(path: str | os.PathLike[str]) -> str:
    """'x', 'x.npz' and 'x.json' all name the result stored in x.npz."""
    path = os.fspath(path)
    return path[:-4] if path.endswith(".npz") else path[:-5] if path.endswith(".json") else path


def _read_npz(npz: str) -> dict[str, np.ndarray]:
    import zipfile
    if not os.path.exists(npz):
        raise ResultFileError(f"No saved result at {npz}: the file does not exist.")
    if os.path.isdir(npz):
        raise ResultFileError(f"No saved result at {npz}: it is a directory.")
    try:
        # our own file object: np.load leaks its own when the archive is damaged
        with open(npz, "rb") as f, np.load(f, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (AttributeError, TypeError):  # np.load returned a bare array
        raise ResultFileError(f"{npz} is not a saved result: it holds a single array, not an "
                              ".npz archive.") from None
    except (zipfile.BadZipFile, EOFError, ValueError, OSError, KeyError, RuntimeError,
            NotImplementedError, UnicodeDecodeError, OverflowError, MemoryError,
            __import__("zlib").error, __import__("struct").error) as err:
        raise ResultFileError(f"{npz} is not a readable result: the .npz archive is damaged, "
                              f"truncated or not an archive ({type(err).__name__}).") from None


def _read_meta(npz: str, arrays: dict[str, np.ndarray], base: str) -> Any:
    if META_KEY in arrays:
        entry = arrays.pop(META_KEY)
        try:
            doc = json.loads(str(entry[()]))
        except (ValueError, TypeError, IndexError):
            raise ResultFileError(f"{npz} is not a valid result: its metadata entry is not "
                                  "JSON text.") from None
        version = doc.get("format_version") if isinstance(doc, dict) else None
        if version != FORMAT_VERSION:
            raise ResultFileError(f"{npz} has result format version {version!r}, which this "
                                  f"nqm_mc (format {FORMAT_VERSION}) cannot read.")
        return doc
    side = base + ".json"  # format 1: the metadata live only in the sidecar
    try:
        with open(side, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ResultFileError(f"{npz} is not a valid result: it has no metadata entry and "
                              f"there is no {side} beside it.") from None
    except (OSError, ValueError) as err:
        raise ResultFileError(f"{side} (metadata of an old-format result) is not readable "
                              f"JSON ({type(err).__name__}).") from None
    if isinstance(doc, dict) and doc.get("format_version", 1) != 1:
        raise ResultFileError(f"{side} has result format version "
                              f"{doc.get('format_version')!r}, which this nqm_mc cannot read.")
    return doc


def _check(npz: str, doc: Any,
           arrays: dict[str, np.ndarray]) -> tuple[dict[str, Any], dict[str, Any]]:
    def bad(what: str) -> NoReturn:
        raise ResultFileError(f"{npz} is not a valid result: {what}.")

    if not isinstance(doc, dict):
        bad(f"its metadata are a JSON {type(doc).__name__}, not an object")
    if doc.get("kind", "simulation") != "simulation":
        bad(f"it holds a {doc.get('kind')!r}, not a simulation")
    spec, meta = doc.get("spec"), doc.get("meta", {})
    if not isinstance(spec, dict):
        bad("its metadata have no 'spec' object")
    if not isinstance(meta, dict):
        bad("its 'meta' entry is not an object")
    n_runs = spec.get("n_runs")
    if not isinstance(n_runs, int) or isinstance(n_runs, bool) or n_runs < 0:
        bad("its spec has no integer 'n_runs'")
    required = [k for k in SimulationResult._ARRAYS if k not in ("hitting_times", "paths")]
    missing = [k for k in required if k not in arrays]
    if missing:
        bad(f"the array{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"{'are' if len(missing) > 1 else 'is'} missing")
    for k, a in arrays.items():
        if k in SimulationResult._ARRAYS and a.dtype.kind not in "biuf":
            bad(f"the array {k!r} is not numeric ({a.dtype})")
    steps = arrays["steps"]
    if steps.ndim != 1:
        bad(f"'steps' has shape {steps.shape}, not one dimension")
    R = steps.size
    rec = spec.get("record")
    if isinstance(rec, list) and len(rec) != R:
        bad(f"it has {R} steps but its spec records {len(rec)}")
    for k in _PER_RECORD:
        if arrays[k].shape != (R,):
            bad(f"{k!r} has shape {arrays[k].shape}, expected ({R},) for {R} recorded steps")
    Q = arrays["quantile_levels"].size
    if arrays["quantile_levels"].ndim != 1 or arrays["quantiles"].shape != (Q, R):
        bad(f"'quantiles' has shape {arrays['quantiles'].shape}, expected ({Q}, {R})")
    bms = arrays["band_mean_square"]
    nb = spec.get("n_bands")
    if bms.ndim != 2 or bms.shape[0] != R or (isinstance(nb, int) and bms.shape[1] != nb):
        bad(f"'band_mean_square' has shape {bms.shape}, expected ({R}, "
            f"{nb if isinstance(nb, int) else 'n_bands'})")
    if arrays["band_edges"].ndim != 1:
        bad("'band_edges' is not one-dimensional")
    ht = arrays.get("hitting_times")
    if ht is not None:
        # one per run; an interrupted run has one per trajectory of the groups it reached
        ok = {n_runs, meta.get("runs_completed", n_runs), meta.get("runs_covered", n_runs)}
        if ht.ndim != 1 or ht.size not in ok:
            bad(f"'hitting_times' has shape {ht.shape}, expected one per run "
                f"({' or '.join(str(n) for n in sorted(ok))})")
    p = arrays.get("paths")
    if p is not None:
        kp = spec.get("keep_paths")
        if p.ndim != 2 or p.shape[1] != R or (isinstance(kp, int) and p.shape[0] != kp):
            bad(f"'paths' has shape {p.shape}, expected "
                f"({kp if isinstance(kp, int) else 'keep_paths'}, {R})")
    return spec, meta


def load_result(path: str | os.PathLike[str]) -> SimulationResult:
    """Load a result written by :meth:`SimulationResult.save` ('x', 'x.npz' or 'x.json').

    Only the .npz is read (results of format 1, whose metadata live in the .json sidecar,
    still load).

    Parameters
    ----------
    path : str or path-like
        'x', 'x.npz' or 'x.json'.

    Returns
    -------
    SimulationResult

    Raises
    ------
    ResultFileError
        A ParameterError with one sentence naming the file and what is wrong, if the file is
        missing, damaged or inconsistent.
    """
    base = _base(path)
    npz = base + ".npz"
    arrays = _read_npz(npz)
    doc = _read_meta(npz, arrays, base)
    spec, meta = _check(npz, doc, arrays)
    kw: dict[str, Any] = {k: arrays.get(k) for k in SimulationResult._ARRAYS}
    return SimulationResult(**kw, spec=spec, meta=meta)


def save_study(results: Sequence[SimulationResult], directory: str | os.PathLike[str],
               labels: Sequence[str] | None = None, overwrite: bool = False) -> str:
    """Save several results (a sweep) into one directory.

    The directory receives result_LABEL.npz/.json per result and study.json indexing them
    (label, spec summary, file), with provenance. Every file is written atomically and the
    index last, so a study interrupted while saving has no index (or the previous one).

    Parameters
    ----------
    results : sequence of SimulationResult
        The results, in order.
    directory : str or path-like
        Created if missing.
    labels : sequence of str, optional
        One label per result (default ``000``, ``001``, ...).
    overwrite : bool, default False
        Replace existing files.

    Returns
    -------
    str
        The path of study.json.

    Raises
    ------
    ParameterError
        If the number of labels differs from the number of results.
    nqm_mc._files.OutputExistsError
        If a file exists and ``overwrite`` is false.
    """
    from nqm_mc import _files
    labels = labels or [f"{i:03d}" for i in range(len(results))]
    if len(labels) != len(results):
        raise ParameterError(f"The 'labels' parameter of save_study must have one label per "
                             f"result ({len(results)}). Got {len(labels)} instead.")
    index_path = os.path.join(directory, "study.json")
    names = [f"result_{lab}" for lab in labels]
    if not overwrite:
        for p in [index_path] + [os.path.join(directory, n + ".npz") for n in names]:
            if os.path.lexists(p):
                raise _files.OutputExistsError(p, "pass overwrite=True to replace it")
    os.makedirs(directory, exist_ok=True)
    index = []
    for lab, name, res in zip(labels, names, results, strict=True):
        res.save(os.path.join(directory, name), overwrite=overwrite)
        s = res.spec
        index.append({"label": lab, "file": name + ".npz", "optimizer": s.get("optimizer"),
                      "batch_size": s.get("batch_size"), "seed": s.get("seed"),
                      "n_runs": s.get("n_runs"), "final_mean": float(res.mean[-1]),
                      "final_sem": float(res.sem[-1])})
    _files.write_json(index_path, {"kind": "study", "format_version": FORMAT_VERSION,
                                   "provenance": provenance(), "results": index},
                      indent=1, overwrite=overwrite)
    return index_path


def load_study(directory: str | os.PathLike[str]) -> dict[str, SimulationResult]:
    """Load the results saved by :func:`save_study`.

    Parameters
    ----------
    directory : str or path-like
        The directory holding study.json.

    Returns
    -------
    dict
        label -> SimulationResult, in the order saved.

    Raises
    ------
    ResultFileError
        If the index or a result is missing or not readable.
    """
    index_path = os.path.join(directory, "study.json")
    try:
        with open(index_path, encoding="utf-8") as f:
            doc = json.load(f)
    except FileNotFoundError:
        raise ResultFileError(f"No saved study at {directory}: {index_path} does not "
                              "exist.") from None
    except (OSError, ValueError) as err:
        raise ResultFileError(f"{index_path} is not readable JSON "
                              f"({type(err).__name__}).") from None
    index = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(index, list) or not all(isinstance(e, dict) and "label" in e
                                              and isinstance(e.get("file"), str)
                                              for e in index):
        raise ResultFileError(f"{index_path} is not a study index (no list of results with "
                              "labels and files).")
    return {e["label"]: load_result(os.path.join(directory, e["file"])) for e in index}
