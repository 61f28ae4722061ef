"""One figure style for every figure the package draws.

- Colours: the Okabe-Ito palette (readable with the common colour-vision deficiencies);
  one fixed colour per preconditioning power p, black for exact curves, blue for Monte Carlo
  estimates, vermillion only for targets and thresholds, greys for bounds.
- Line styles separate optimizer families, as in the paper: SGD dashed, heavy-ball momentum
  (and Nesterov) and EMA solid; each family has its own marker.
- Titles carry the hyperparameter values (:func:`optimizer_text`, :func:`schedule_text`).
- Targets, bounds and steady states are labelled lines (:func:`target_line`,
  :func:`bound_line`); Monte Carlo against exact figures have a residual panel of
  z = (MC mean - exact) / s.e. with +-z* guide lines (:func:`residual_panel`).
- Step axes are logarithmic and still show step 0: a symmetric-log axis, linear between 0
  and 1 (:func:`log_steps`).
- :func:`save` writes one file per requested format (PNG, PDF, SVG), atomically.

Every plotting function of :mod:`nqm_mc.plotting`, :mod:`nqm_mc.studies` and
``validation.report`` draws inside :func:`context` and saves with :func:`save`. Scripts and
notebooks (the documentation gallery among them) call :func:`use` once instead, which applies
the same settings globally, and then draw with ``matplotlib.pyplot`` as usual.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterable, Iterator, Mapping
from types import ModuleType
from typing import Any, Union, cast

import numpy as np
from numpy.typing import ArrayLike

from nqm_mc._files import FORMATS, parse_formats, save_figure  # noqa: F401 (style.FORMATS, style.parse_formats)

PathLike = Union[str, "os.PathLike[str]"]

#: the Okabe-Ito palette (Okabe and Ito 2008), colour-blind safe
OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
}
#: the colour cycle of every axes (vermillion is kept for targets and thresholds, yellow is
#: too pale on white)
CYCLE = [OKABE_ITO[k] for k in ("blue", "orange", "green", "purple", "sky", "black")] + ["0.55"]
#: colours with a meaning
EXACT = OKABE_ITO["black"]
MONTE_CARLO = OKABE_ITO["blue"]
TARGET = OKABE_ITO["vermillion"]
BOUND = "0.35"
STEADY = "0.35"
BAND = OKABE_ITO["sky"]
DIVERGED = "0.88"
#: one colour per preconditioning power, the same in every figure
POWER_COLORS = {0.0: OKABE_ITO["blue"], 0.25: OKABE_ITO["orange"], 0.5: OKABE_ITO["green"],
                0.75: OKABE_ITO["purple"], 1.0: OKABE_ITO["sky"]}
#: line style and marker per optimizer family (SGD dashed, momentum solid, as in the paper)
FAMILIES: dict[str, dict[str, Any]] = {
    "sgd": {"ls": "--", "marker": "o", "name": "SGD"},
    "heavy_ball": {"ls": "-", "marker": "s", "name": "heavy-ball momentum"},
    "nesterov": {"ls": "-", "marker": "D", "name": "Nesterov momentum"},
    "ema": {"ls": "-", "marker": "^", "name": "SGD + EMA"},
    "schedule": {"ls": "-", "marker": "v", "name": "optimal schedule"},
    "adam": {"ls": "none", "marker": "o", "name": "Adam"},
}
#: resolution of PNG files
DPI = 200

RC: dict[str, Any] = {
    "font.size": 9, "axes.titlesize": 9.5, "axes.labelsize": 9, "legend.fontsize": 7.5,
    "xtick.labelsize": 8, "ytick.labelsize": 8, "axes.grid": True, "axes.grid.which": "major",
    "grid.alpha": 0.3, "grid.linewidth": 0.6, "axes.spines.top": False,
    "axes.spines.right": False, "axes.prop_cycle": None, "lines.linewidth": 1.5,
    "lines.markersize": 4, "legend.frameon": False, "figure.constrained_layout.use": True,
    "savefig.dpi": DPI, "pdf.fonttype": 42, "svg.fonttype": "path", "image.cmap": "cividis",
    "errorbar.capsize": 2,
}


def pyplot() -> ModuleType:
    """Return ``matplotlib.pyplot`` on the Agg backend (nothing is ever shown)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _rc() -> dict[str, Any]:
    """Return ``RC`` with the colour cycle filled in."""
    from cycler import cycler

    return dict(RC, **{"axes.prop_cycle": cycler(color=CYCLE)})


@contextlib.contextmanager
def context() -> Iterator[ModuleType]:
    """Draw in the package's style: ``with style.context() as plt: ...``.

    The style holds inside the block only (``matplotlib.rc_context``); save inside it.
    """
    plt = pyplot()
    with plt.rc_context(_rc()):
        yield plt


def use() -> None:
    """Apply the package's matplotlib settings globally, for scripts and notebooks.

    The settings of :func:`context` (font sizes, grid, the Okabe-Ito colour cycle,
    constrained layout, PNG resolution) go into ``matplotlib.rcParams`` and stay until
    changed; ``matplotlib.rcdefaults()`` undoes them. Unlike :func:`context` and
    :func:`pyplot`, the backend is left alone, so figures still show in a notebook.

    Returns
    -------
    None

    See Also
    --------
    context : the same settings inside a ``with`` block only.

    Examples
    --------
    >>> import matplotlib
    >>> from nqm_mc import style
    >>> style.use()
    >>> matplotlib.rcParams["axes.spines.top"]
    False
    >>> matplotlib.rcdefaults()
    """
    import matplotlib

    cast(Any, matplotlib.rcParams).update(_rc())  # its stubs type every key as a literal


# ------------------------------------------------------------------------- colours, lines
def power_color(p: float, index: int = 0) -> str:
    """Return the colour of preconditioning power ``p`` (the cycle by ``index`` otherwise)."""
    for q, c in POWER_COLORS.items():
        if abs(float(p) - q) < 1e-9:
            return c
    return CYCLE[index % len(CYCLE)]


def family_style(family: str, p: float | None = None, index: int = 0) -> dict[str, Any]:
    """Return ``plot`` keywords for an optimizer family: line style, marker and colour.

    Parameters
    ----------
    family : str
        ``sgd``, ``heavy_ball``, ``nesterov``, ``ema``, ``schedule`` or ``adam``; anything
        else gets a solid line with round markers.
    p : float, optional
        The preconditioning power: sets the colour.
    index : int, default 0
        Position in the colour cycle when ``p`` is not given.

    Returns
    -------
    dict
        ``ls``, ``marker``, ``color``, ``ms`` and ``mfc`` (open markers for SGD).
    """
    f = FAMILIES.get(family, {"ls": "-", "marker": "o"})
    color = power_color(p, index) if p is not None else CYCLE[index % len(CYCLE)]
    return {"ls": f["ls"], "marker": f["marker"], "color": color, "ms": 4,
            "mfc": "white" if family == "sgd" else color}


def family_name(family: str) -> str:
    """Return the readable name of an optimizer family."""
    return str(FAMILIES.get(family, {"name": family}).get("name", family))


# ------------------------------------------------------------------------------ text
def fmt(x: Any) -> str:
    """Return a number in at most 4 significant digits (integers in full)."""
    if isinstance(x, (bool, np.bool_)) or x is None:
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}" if abs(int(x)) >= 10_000 else str(int(x))
    try:
        v = float(x)
    except (TypeError, ValueError):
        return str(x)
    if not math.isfinite(v):
        return str(v)
    if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
        m, e = f"{v:.3e}".split("e")
        return f"{float(m):g}e{int(e)}"
    return f"{v:.4g}"


def schedule_text(lr: Any, symbol: str = "α") -> str:
    """Return a learning-rate schedule (a number, a dict or a schedule object) as text.

    >>> schedule_text({"kind": "cosine_decay", "initial": 0.1, "decay_steps": 2000,
    ...                "final": 0.001})
    'α cosine 0.1 → 0.001 over 2000 steps'
    """
    if hasattr(lr, "to_dict"):
        lr = lr.to_dict()
    if isinstance(lr, (int, float, np.integer, np.floating)):
        return f"{symbol} = {fmt(lr)}"
    if not isinstance(lr, Mapping):
        return f"{symbol} = {lr}"
    k = lr.get("kind")
    if k == "constant":
        return f"{symbol} = {fmt(lr['value'])}"
    if k == "cosine_decay":
        return (f"{symbol} cosine {fmt(lr['initial'])} → {fmt(lr.get('final', 0))} over "
                f"{fmt(lr['decay_steps'])} steps")
    if k == "linear_decay":
        return (f"{symbol} linear {fmt(lr['initial'])} → {fmt(lr['final'])} over "
                f"{fmt(lr['decay_steps'])} steps")
    if k == "exponential_decay":
        every = lr.get("decay_steps", 1)
        return (f"{symbol} = {fmt(lr['initial'])} × {fmt(lr['rate'])}^(t"
                + (f"/{fmt(every)})" if every != 1 else ")"))
    if k == "step_decay":
        return (f"{symbol} = {fmt(lr['initial'])}, × {fmt(lr['factor'])} every "
                f"{fmt(lr['step_size'])} steps")
    if k == "piecewise_constant":
        vals = lr.get("values", lr.get("sizes", []))
        b = lr.get("boundaries", [])
        if len(vals) > 4:
            return f"{symbol} piecewise: {len(vals)} pieces, {fmt(vals[0])} … {fmt(vals[-1])}"
        parts = [fmt(vals[0])] + [f"{fmt(v)} from step {fmt(s)}"
                                  for s, v in zip(b, vals[1:], strict=False)]
        return f"{symbol} = " + ", ".join(parts)
    if k == "warmup":
        inner = schedule_text(lr["schedule"], symbol)
        start = lr.get("start", 0.0)
        return (f"{inner}, warmup {fmt(lr['warmup_steps'])} steps"
                + (f" from {fmt(start)}" if start else ""))
    return f"{symbol}: {k}"


def batch_text(batch: Any) -> str:
    """Return a batch size (an int, a dict or a batch schedule) as text."""
    if hasattr(batch, "to_dict"):
        batch = batch.to_dict()
    if isinstance(batch, Mapping):
        if batch.get("kind") == "constant":
            return f"B = {fmt(batch['value'])}"
        return schedule_text(batch, "B")
    return f"B = {fmt(batch)}"


def optimizer_text(opt: Any, batch: Any = None) -> str:
    """Return an optimizer and its hyperparameters as one line of text.

    Parameters
    ----------
    opt : optimizer spec or dict
        An optimizer of :mod:`nqm_mc.spec.optimizers` or its ``to_dict()``.
    batch : int, dict or batch schedule, optional
        Appended as ``B = ...``.

    Returns
    -------
    str
        E.g. ``heavy ball: α = 0.05, β = 0.9, p = 0.25, B = 64``.
    """
    d = opt.to_dict() if hasattr(opt, "to_dict") else dict(opt or {})
    name = str(d.get("name", "?"))
    parts = [schedule_text(d.get("learning_rate"))]
    if "momentum" in d:
        parts.append(f"β = {fmt(d['momentum'])}")
    if name == "adam":
        parts.append(f"β₁ = {fmt(d.get('beta1'))}, β₂ = {fmt(d.get('beta2'))}")
    if d.get("preconditioning"):
        parts.append(f"p = {fmt(d['preconditioning'])}")
    if d.get("ema") is not None:
        parts.append(f"EMA γ = {fmt(d['ema'])}")
    if d.get("clip_norm") is not None:
        parts.append(f"clip {fmt(d['clip_norm'])}")
    if batch is not None:
        parts.append(batch_text(batch))
    readable = {"sgd": "SGD", "heavy_ball": "heavy ball", "nesterov": "Nesterov",
                "adam": "Adam", "rmsprop": "RMSProp", "adagrad": "Adagrad",
                "sign_sgd": "sign SGD"}.get(name, name)
    return f"{readable}: " + ", ".join(parts)


def noise_text(law: Any) -> str:
    """Return a gradient-noise law (spec or dict) as text: Gaussian, Student-t (ν = 3), ..."""
    d = law.to_dict() if hasattr(law, "to_dict") else dict(law or {"name": "gaussian"})
    name = d.get("name")
    if name == "gaussian":
        return "Gaussian"
    if name == "student_t":
        return f"Student-t, ν = {fmt(d.get('nu'))}"
    if name == "finite_data":
        return f"finite data, n = {fmt(d.get('n'))}"
    return str(name)


def model_text(model: Any) -> str:
    """Return a model (spec or dict) as a short text: kind and dimension."""
    d = model.to_dict() if hasattr(model, "to_dict") else dict(model or {})
    kind = d.get("kind", d.get("constructor", "custom"))
    dim = d.get("dim")
    if dim is None and "curvatures" in d:
        dim = len(d["curvatures"])
    return f"{kind} NQM" + (f", d = {fmt(dim)}" if dim is not None else "")


def wrap(text: str, width: int = 78) -> str:
    """Wrap each line of a title at about ``width`` characters, between list items."""
    out = []
    for line in text.split("\n"):
        cur = ""
        for part in line.split(", "):
            piece = part if not cur else cur + ", " + part
            if cur and len(piece) > width:
                out.append(cur + ",")
                cur = part
            else:
                cur = piece
        out.append(cur)
    return "\n".join(out)


def title(ax: Any, text: str, width: int = 78) -> None:
    """Set an axes title, wrapped (:func:`wrap`) so that it never runs past the figure."""
    ax.set_title(wrap(text, width))


# --------------------------------------------------------------------------------- axes
def log_steps(ax: Any, steps: ArrayLike, label: str = "step t") -> None:
    """Put the steps on a logarithmic x-axis that still shows step 0.

    When step 0 is among ``steps`` the axis is symmetric-log, linear on [0, 1] and
    logarithmic beyond, with a tick labelled 0; otherwise plainly logarithmic.
    """
    s = np.asarray(steps, dtype=float)
    if s.size and np.nanmin(s) <= 0:
        ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
        ax.set_xlim(left=0.0)
        _symlog_minor_ticks(ax, s)
    else:
        ax.set_xscale("log")
    ax.xaxis.set_major_formatter(step_formatter())
    ax.set_xlabel(label)


def log_x(ax: Any, label: str | None = None) -> None:
    """Put a logarithmic x-axis with plain-number ticks (see :func:`log_y`)."""
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(number_formatter())
    ax.xaxis.set_minor_formatter(_minor_formatter())
    if label is not None:
        ax.set_xlabel(label)


def log_y(ax: Any, label: str | None = None) -> None:
    """Put a logarithmic y-axis with plain numbers (0.01, 0.1, 1, 10, 100, 1000, then 10^k).

    When the axis spans less than about a decade and a half, the intermediate ticks (2, 3, 5
    times a power of ten) are labelled too, as plain numbers.
    """
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(number_formatter())
    ax.yaxis.set_minor_formatter(_minor_formatter())
    if label is not None:
        ax.set_ylabel(label)


def _minor_formatter() -> Any:
    """Label 2, 3, 5 times a power of ten only on short log axes, as plain numbers."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):
        def _num_to_string(self, x: float, vmin: float, vmax: float) -> str:
            return f"{x:g}"

    return Plain(labelOnlyBase=False, minor_thresholds=(1.5, 0.6))


def _power_ticks(steps: bool) -> Any:
    """Return a tick formatter that writes every tick of an axis the same way.

    Plain numbers (0.01, 1, 1000) while every labelled tick in view lies in [0.001, 10^4);
    otherwise 10^k for each power of ten, so that one axis never shows both ``1000`` and
    ``10^4``. With ``steps``, only powers of ten are labelled (the symmetric-log step axis).
    """
    from matplotlib.ticker import Formatter

    class PowerTicks(Formatter):
        powers = False

        def set_locs(self, locs: Any) -> None:
            super().set_locs(locs)
            lo, hi = sorted(self.axis.get_view_interval()) if self.axis is not None else (
                -np.inf, np.inf)
            shown = [abs(x) for x in locs if x != 0 and lo <= x <= hi
                     and (not steps or _is_power(x))]
            self.powers = any(x >= 1e4 or x < 1e-3 for x in shown)

        def __call__(self, x: float, pos: Any = None) -> str:
            if x == 0:
                return "0"
            if _is_power(x) and (self.powers or not 1e-3 <= abs(x) < 1e4):
                return f"$10^{{{int(round(math.log10(abs(x))))}}}$"
            if steps and not _is_power(x):
                return ""
            return f"{x:g}" if 1e-3 <= abs(x) < 1e4 else f"{x:.0e}"

    return PowerTicks()


def _is_power(x: float) -> bool:
    e = math.log10(abs(x))
    return abs(e - round(e)) < 1e-6


def number_formatter() -> Any:
    """Return a tick formatter: plain numbers from 0.001 to 1000, else 10^k.

    On an axis with a tick beyond, every power of ten on it is written 10^k.
    """
    return _power_ticks(steps=False)


def step_formatter() -> Any:
    """Return a tick formatter for step counts, powers of ten only.

    0, 1, 10, 100, 1000 on an axis up to 1000; 0, 10^0, 10^1, ..., 10^5 on one that reaches
    10^4 or more.
    """
    return _power_ticks(steps=True)


def _symlog_minor_ticks(ax: Any, s: np.ndarray) -> None:
    from matplotlib.ticker import FixedLocator

    top = float(np.nanmax(s)) if s.size else 1.0
    decades = range(0, max(int(math.ceil(math.log10(max(top, 10.0)))), 1) + 1)
    minor = [k * 10.0 ** e for e in decades for k in range(2, 10)]
    ax.xaxis.set_minor_locator(FixedLocator([m for m in minor if m <= top * 10]))


def target_line(ax: Any, value: float | None, label: str | None = None, **kw: Any) -> None:
    """Draw a loss target as a labelled horizontal line (in the legend)."""
    if value is None:
        return
    kw = {"color": TARGET, "ls": (0, (4, 2)), "lw": 1.1, **kw}
    ax.axhline(value, label=label or f"target {fmt(value)}", **kw)


def bound_line(ax: Any, x: Any, y: Any, label: str = "lower bound", **kw: Any) -> None:
    """Draw a bound (e.g. the information-theoretic lower bound) as a labelled line."""
    kw = {"color": BOUND, "ls": ":", "lw": 1.5, **kw}
    ax.plot(x, y, label=label, **kw)


def steady_line(ax: Any, value: float | None, label: str | None = None) -> None:
    """Draw a steady-state loss as a labelled horizontal line."""
    if value is None or not np.isfinite(value):
        return
    ax.axhline(value, color=STEADY, ls="-.", lw=1.1,
               label=label or f"steady state {fmt(value)}")


def bonferroni_z(n: int, alpha: float = 0.05) -> float:
    """Return the Bonferroni threshold ``z*`` over ``n`` standard normals ``Z_i``.

    ``P(max_i |Z_i| > z*) <= alpha`` whatever their dependence.
    """
    from scipy.stats import norm

    return float(norm.isf(alpha / (2 * max(int(n), 1))))


def residual_panel(ax: Any, steps: Any, z: Any, z_star: float, what: str = "",
                   color: str = MONTE_CARLO, points: bool = True) -> None:
    """Draw z = (MC mean - exact) / s.e. against the steps, with +-z* guide lines.

    Parameters
    ----------
    ax : matplotlib axes
        The residual panel (under the main panel, sharing its x-axis).
    steps, z : array_like
        Steps and z-scores (NaN where undefined, e.g. a zero standard error at step 0).
    z_star : float
        The threshold drawn at +-z*.
    what : str
        How z* was chosen, appended to its legend entry.
    color : colour
        The points' colour.
    points : bool, default True
        Draw the points (False: the guide lines only, with limits that fit ``z``).
    """
    z = np.asarray(z, dtype=float)
    ax.axhline(0.0, color="0.4", lw=0.8)
    for sgn in (1, -1):
        ax.axhline(sgn * z_star, color=TARGET, ls=(0, (4, 2)), lw=1)
    if points:
        ax.plot(steps, z, "o", ms=3, color=color, mfc="white", mew=1)
    finite = np.abs(z[np.isfinite(z)])
    lim = max(z_star * 1.6, float(finite.max()) * 1.15 if finite.size else 0.0)
    ax.set_ylim(-lim, lim)
    ax.text(0.01, z_star, f"±z* = ±{z_star:.2f}" + (f": {what}" if what else ""),
            transform=ax.get_yaxis_transform(), va="bottom", ha="left", fontsize=7,
            color=TARGET)
    ax.set_ylabel("z = (MC − exact)/s.e.")


def mc_figure(plt: ModuleType, width: float = 6.0, height: float = 5.2) -> tuple[Any, Any, Any]:
    """Return (figure, main axes, residual axes): a main panel over a residual z panel."""
    fig, (a, b) = plt.subplots(2, 1, figsize=(width, height), sharex=True,
                               gridspec_kw={"height_ratios": [3, 1.2]})
    return fig, a, b


def legend(ax: Any, **kw: Any) -> Any:
    """Place the legend where it hides least, with a translucent white box."""
    kw = {"loc": "best", "frameon": True, "framealpha": 0.85, "edgecolor": "none", **kw}
    return ax.legend(**kw)


# ---------------------------------------------------------------------------- saving
def figure_paths(path: PathLike, formats: str | Iterable[str] | None = None) -> list[str]:
    """Return the files :func:`save` writes for ``path`` and ``formats``.

    Without ``formats`` the suffix of ``path`` decides (PNG when it has none); with them,
    one file per format: ``path`` with its suffix (png, pdf or svg) replaced.
    """
    p = os.fspath(path)
    stem, ext = os.path.splitext(p)
    if formats is None:
        return [p if ext else p + ".png"]
    if ext.lstrip(".").lower() not in FORMATS:
        stem = p
    return [f"{stem}.{f}" for f in parse_formats(formats)]


def output_names(stem: str, formats: str | Iterable[str] | None = None) -> list[str]:
    """Return the file names of a figure ``stem`` in ``formats`` (default PNG)."""
    return [os.path.basename(p) for p in figure_paths(stem + ".png", formats or "png")]


def save(fig: Any, path: PathLike, formats: str | Iterable[str] | None = None, *,
         overwrite: bool = True, close: bool = True) -> list[str]:
    """Write ``fig`` once per format, atomically; return the paths written.

    Parameters
    ----------
    fig : matplotlib figure
    path : str or path-like
        The file; its suffix is replaced by each format when ``formats`` is given.
    formats : str or sequence of str, optional
        Among ``png``, ``pdf``, ``svg`` (``"png,pdf"`` or ``["png", "pdf"]``). Default: the
        suffix of ``path``.
    overwrite : bool, default True
        Refuse to replace an existing file when False.
    close : bool, default True
        Close the figure after writing.

    Returns
    -------
    list of str
        The files written, in the order of ``formats``.
    """
    paths = figure_paths(path, formats)
    try:
        for p in paths:
            save_figure(fig, p, overwrite=overwrite, close=False,
                        dpi=DPI if p.endswith(".png") else None)
    finally:
        if close:
            pyplot().close(fig)
    return paths
