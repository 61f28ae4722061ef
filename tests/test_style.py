"""The one figure style: palette, family line styles, titles with values, residual panels,
step 0 on log axes, and PDF/SVG output. Tiny inputs, Agg backend."""

import csv
import types

import matplotlib
import numpy as np
import pytest
from matplotlib.colors import to_hex

matplotlib.use("Agg")

from nqm_mc import NQM, SGD, HeavyBall, ParameterError, expected_loss, plotting, simulate, style  # noqa: E402
from nqm_mc.spec import schedules as S  # noqa: E402
from nqm_mc.studies.scaling import ScalingResult  # noqa: E402

ALLOWED = {to_hex(c) for c in [*style.CYCLE, *style.POWER_COLORS.values(), style.EXACT,
                               style.MONTE_CARLO, style.TARGET, style.STEADY, style.BAND,
                               style.BOUND, style.DIVERGED, "0.25", "0.3", "0.4", "0.45",
                               "0.6", "white"]}


@pytest.fixture
def figures(monkeypatch):
    """Capture every figure handed to style.save (still written, then kept open)."""
    kept = []
    real = style.save

    def save(fig, path, formats=None, **kw):
        kept.append(fig)
        return real(fig, path, formats, close=False)

    monkeypatch.setattr(style, "save", save)
    yield kept
    import matplotlib.pyplot as plt
    for f in kept:
        plt.close(f)


def _line_colors(ax):
    return {to_hex(ln.get_color()) for ln in ax.get_lines()}


def _legend_texts(ax):
    leg = ax.get_legend()
    return [t.get_text() for t in leg.get_texts()] if leg is not None else []


@pytest.fixture(scope="module")
def small_run():
    model = NQM.paper(20)
    opt = SGD(0.3)
    res = simulate(model, opt, 8, 60, 64, seed=3, record="log", n_records=15, target=1.0,
                   keep_paths=5, progress=False)
    return model, opt, res, expected_loss(model, opt, 8, record=res.steps)


def test_titles_carry_the_hyperparameter_values():
    t = style.optimizer_text(HeavyBall(0.05, 0.9, preconditioning=0.25), 64)
    assert t == "heavy ball: α = 0.05, β = 0.9, p = 0.25, B = 64"
    t = style.optimizer_text(SGD(S.Warmup(S.CosineDecay(0.1, 2000, 0.001), 50), ema=0.99),
                             S.PiecewiseConstantBatch([10], [4, 8]))
    assert "cosine 0.1 → 0.001 over 2000 steps" in t and "warmup 50 steps" in t
    assert "EMA γ = 0.99" in t and "B = 4, 8 from step 10" in t
    assert "constant" not in style.optimizer_text(SGD(0.1).to_dict(), 32)


def test_formats_are_checked_and_map_to_files(tmp_path):
    assert style.parse_formats("png, PDF,svg,png") == ("png", "pdf", "svg")
    for bad in ("jpg", "", "png;pdf"):
        with pytest.raises(ParameterError, match="formats"):
            style.parse_formats(bad)
    assert style.figure_paths(tmp_path / "a.png", "pdf,svg") == [str(tmp_path / "a.pdf"),
                                                                  str(tmp_path / "a.svg")]
    assert style.figure_paths("a.png") == ["a.png"]
    assert style.output_names("fig", ("png", "svg")) == ["fig.png", "fig.svg"]


def test_pdf_and_svg_are_written_when_asked(tmp_path, small_run):
    model, opt, res, ex = small_run
    first = plotting.plot_exact(ex, tmp_path / "e.png", None, 1.0, "t", formats="png,pdf,svg")
    assert first == str(tmp_path / "e.png")
    assert (tmp_path / "e.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "e.pdf").read_bytes()[:4] == b"%PDF"
    assert b"<svg" in (tmp_path / "e.svg").read_bytes()[:1000]
    plotting.plot_mean(res, tmp_path / "m.png", ex, formats=["svg"])
    assert (tmp_path / "m.svg").exists() and not (tmp_path / "m.png").exists()


def test_monte_carlo_against_exact_has_a_residual_panel(tmp_path, small_run, figures):
    model, opt, res, ex = small_run
    plotting.plot_mean(res, tmp_path / "m.png", ex)
    fig = figures[-1]
    main, resid = fig.axes
    assert resid.get_ylabel().startswith("z = (MC")
    z = resid.get_lines()[-1].get_ydata()  # the points: (MC mean - exact) / s.e.
    want = (res.mean - ex.mean) / res.sem
    np.testing.assert_allclose(np.asarray(z, float), want, rtol=1e-12)
    guides = sorted(ln.get_ydata()[0] for ln in resid.get_lines()[:-1])
    zs = style.bonferroni_z(res.steps.size)
    np.testing.assert_allclose(guides, [-zs, 0.0, zs])
    # labelled target, values in the title, palette colours, step 0 shown on a log axis
    assert "target 1" in _legend_texts(main)
    assert "α = 0.3" in main.get_title() and "B = 8" in main.get_title()
    assert _line_colors(main) <= ALLOWED
    assert res.steps[0] == 0 and main.get_xscale() == "symlog"
    fig.canvas.draw()
    assert "0" in [t.get_text() for t in resid.get_xticklabels()]
    # without an exact curve: one panel
    plotting.plot_mean(res, tmp_path / "m2.png")
    assert len(figures[-1].axes) == 1


@pytest.mark.parametrize("kind", ["plot_quantiles", "plot_paths", "plot_hitting_times"])
def test_every_result_figure_uses_the_style(tmp_path, small_run, figures, kind):
    model, opt, res, ex = small_run
    getattr(plotting, kind)(res, tmp_path / f"{kind}.png")
    ax = figures[-1].axes[0]
    assert _line_colors(ax) <= ALLOWED
    assert "α = 0.3" in ax.get_title() and "N = 64 runs" in ax.get_title()
    if kind != "plot_hitting_times":
        assert ax.get_xscale() == "symlog"  # step 0 recorded


def test_exact_figure_labels_steady_state_target_and_crossing(tmp_path, small_run, figures):
    model, opt, res, ex = small_run
    from nqm_mc import steady_state
    plotting.plot_exact(ex, tmp_path / "e.png", steady_state(model, opt, 8), 1.0, "title",
                        steps_to_target=12)
    texts = _legend_texts(figures[-1].axes[0])
    assert any(t.startswith("steady state") for t in texts)
    assert "target 1" in texts and "first below target: step 12" in texts


def _scaling(family, p, steps):
    b = np.array([4, 16, 64, 256])
    return ScalingResult(family, p, 0.01, "grid", b, np.asarray(steps, float),
                         np.full(4, 0.1), np.full(4, 0.9 if family != "sgd" else np.nan),
                         1e4 / (2 * 0.01 * b))


def test_scaling_csv_figure_separates_families(tmp_path, figures):
    rows = _scaling("sgd", 0.0, [4e5, 1e5, 4e4, 3e4]).to_rows() + \
        _scaling("heavy_ball", 0.5, [4e5, 1e5, 2.5e4, 8e3]).to_rows()
    path = tmp_path / "s.csv"
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plotting.plot_scaling(path, tmp_path / "s.png")
    ax = figures[-1].axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    assert lines["SGD, p = 0, target 0.01"].get_linestyle() == "--"
    assert lines["heavy-ball momentum, p = 0.5, target 0.01"].get_linestyle() == "-"
    assert "lower bound d / (2 L B)" in lines
    assert to_hex(lines["heavy-ball momentum, p = 0.5, target 0.01"].get_color()) == \
        to_hex(style.POWER_COLORS[0.5])
    # one curve: perfect scaling and the critical batch size are drawn
    plotting.plot_scaling(_write(tmp_path / "one.csv", rows[:4]), tmp_path / "one.png")
    texts = _legend_texts(figures[-1].axes[0])
    assert any(t.startswith("critical B = 256") for t in texts)


def _write(path, rows):
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


@pytest.mark.early
def test_reproduce_draws_every_curve_of_the_notebook(tmp_path, monkeypatch, figures):
    """SGD dashed and momentum/EMA solid for p in {0, 0.25, 0.5, 0.75}, coloured by p."""
    from nqm_mc.studies import reproduce, scaling, schedule_opt

    def fake_tune(model, family, B, target, preconditioning=0.0, **kw):
        b = np.asarray(B, float)
        s = 1e6 / b * (1 + b / (64 * (1 + preconditioning))) / (2 if family != "sgd" else 1)
        r = _scaling(family, preconditioning, s[:4])
        r.batch_sizes, r.steps = np.asarray(B), s
        r.learning_rate, r.second = np.full(b.size, 0.1), np.full(b.size, 0.5)
        r.lower_bound = 1e4 / (2 * target * b)
        return r

    def fake_schedule(model, b, target, n):
        return schedule_opt.OptimalSchedule(100, 10, np.geomspace(1, 0.01, n), 0.0, target, b,
                                            0.0, 2.0)

    monkeypatch.setattr(reproduce, "tune", fake_tune)
    monkeypatch.setattr(schedule_opt, "optimal_schedule", fake_schedule)
    monkeypatch.setattr(scaling, "monte_carlo_confirmation", lambda *a, **k: [])
    reproduce.run(str(tmp_path), quick=True, log=lambda *a: None, formats="svg")
    for name in reproduce.FIGURES:
        assert (tmp_path / f"{name}.svg").exists() and (tmp_path / f"{name}.csv").exists()
        assert not (tmp_path / f"{name}.png").exists()
    assert len(figures) == len(reproduce.FIGURES)
    by_name = {name: f.axes[0] for name, f in zip(reproduce.FIGURES, figures, strict=True)}
    for key in ("momentum_vs_sgd", "ema_vs_sgd"):
        ax = by_name[key]
        curves = [ln for ln in ax.get_lines() if ln.get_marker() not in (None, "None", "")]
        dashed = {to_hex(ln.get_color()) for ln in curves if ln.get_linestyle() == "--"}
        solid = {to_hex(ln.get_color()) for ln in curves if ln.get_linestyle() == "-"}
        want = {to_hex(style.POWER_COLORS[p]) for p in (0.0, 0.25, 0.5, 0.75)}
        assert dashed == want and solid == want, key  # SGD dashed, the other family solid
        assert len(curves) == 8
        texts = _legend_texts(ax)
        assert "lower bound d / (2 L B)" in texts and "SGD (dashed)" in texts
        assert [f"p = {p:g}" for p in (0, 0.25, 0.5, 0.75)] == texts[:4]
    # the loss-curve figure shows step 0 and the target
    ax = by_name["loss_curves"]
    assert ax.get_xscale() == "symlog" and "target 0.01" in _legend_texts(ax)
    assert set(reproduce.output_names("svg")) >= {"momentum_vs_sgd.svg", "ema_vs_sgd.csv"}


def test_adam_proxy_legend_and_marks_agree(tmp_path, figures):
    from nqm_mc.studies import adam_proxy as ap

    bs = [1, 16, 256]
    adam = np.array([1000.0, 100.0, 40.0])
    se = np.array([10.0, 30.0, 1.0])
    prox = {p: types.SimpleNamespace(steps=np.array([1000.0, 100.0, 20.0]) * (1 + p))
            for p in ap.PROXY_POWERS}
    ratio = adam / prox[0.0].steps
    fails = np.array([False, False, True])
    ap._plot_adam_proxy(tmp_path / "a.png", bs, adam, se, prox, 0.0, fails, 0.1,
                        ratio=ratio)
    ax = figures[-1].axes[0]
    texts = _legend_texts(ax)
    assert any("by more than 2 s.e." in t and "×1.5" in t for t in texts)
    circles = [ln for ln in ax.get_lines() if ln.get_markersize() == 13]
    assert len(circles) == 1 and list(circles[0].get_xdata()) == [256.0]
    assert {a.get_text() for a in ax.texts} >= {"×1.00", "×2.00"}


def test_validation_plot_has_the_residual_panel(tmp_path, figures):
    from validation.report import _plot_case

    t = np.array([0, 1, 2, 5, 10, 20])
    r = {"case": "c", "feature": "f", "verdict": "pass", "runs": 100, "steps": t.tolist(),
         "mc_mean": (5.0 / (1 + t)).tolist(), "mc_sem": [0.1] * 6,
         "exact_mean": (5.0 / (1 + t)).tolist(), "wrong_mean": (6.0 / (1 + t)).tolist(),
         "wrong": "lr x 1.1", "z_mean": [0.1, -0.5, 1.0, 0.0, 0.3, -1.2], "threshold": 4.2,
         "n_tests": 6, "max_abs_z": 1.2, "power_verdict": "rejected (good)"}
    _plot_case(r, tmp_path / "c.png", "png,svg")
    assert (tmp_path / "c.svg").exists()
    main, resid = figures[-1].axes
    assert resid.get_ylabel().startswith("z = (MC")
    assert sorted(ln.get_ydata()[0] for ln in resid.get_lines()[:3]) == [-4.2, 0.0, 4.2]
    assert main.get_xscale() == "symlog" and _line_colors(main) <= ALLOWED


def test_cli_format_option(tmp_path):
    from tests.cli_inprocess import run

    r = run("exact", "--dim", "50", "--steps", "100", "--out", str(tmp_path), "--format",
            "pdf,svg")
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "exact_curve.pdf").exists() and (tmp_path / "exact_curve.svg").exists()
    assert not (tmp_path / "exact_curve.png").exists()
    r = run("exact", "--dim", "50", "--steps", "100", "--out", str(tmp_path), "--format", "pdf")
    assert r.returncode == 2 and "already exists" in r.stderr  # never overwritten silently
    r = run("exact", "--out", str(tmp_path), "--format", "jpg")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "jpg" in r.stderr


def test_use_applies_the_style_globally_and_rcdefaults_undoes_it():
    try:
        style.use()
        rc = matplotlib.rcParams
        assert rc["axes.spines.top"] is False and rc["figure.constrained_layout.use"]
        assert [to_hex(c["color"]) for c in rc["axes.prop_cycle"]] == \
            [to_hex(c) for c in style.CYCLE]
    finally:
        matplotlib.rcdefaults()
    assert matplotlib.rcParams["axes.spines.top"] is True
