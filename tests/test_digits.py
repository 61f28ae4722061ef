"""The digits softmax-regression workload: gradients, noise scale, training, crossings."""

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("sklearn")

from nqm_mc import ParameterError  # noqa: E402
from nqm_mc.workloads.digits import (  # noqa: E402
    Digits,
    first_crossing,
    log_record,
    train,
)


@pytest.fixture(scope="module")
def problem():
    return Digits(l2=1e-3)


@pytest.fixture(scope="module")
def point(problem):
    rng = np.random.default_rng(3)
    return 0.3 * rng.standard_normal(problem.shape)


def test_data(problem):
    assert problem.features.shape == (1797, 65) and problem.onehot.shape == (1797, 10)
    assert np.all(problem.features[:, -1] == 1) and problem.features.max() == 1.0
    assert problem.loss(np.zeros(problem.shape)) == pytest.approx(np.log(10))


def test_gradient_by_finite_differences(problem, point):
    g = problem.gradient(point)
    rng = np.random.default_rng(0)
    v = rng.standard_normal(problem.shape)
    eps = 1e-5
    fd = (problem.loss(point + eps * v) - problem.loss(point - eps * v)) / (2 * eps)
    assert fd == pytest.approx((g * v).sum(), rel=1e-7)
    per = problem.per_example_gradients(point)
    np.testing.assert_allclose(per.mean(0) + problem.l2 * point, g, atol=1e-14)


def test_noise_scale_against_explicit_matrices(problem, point):
    # per-example gradients and the explicit 650 x 650 Hessian
    x = problem.features
    z = x @ point
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    s = np.einsum("nk,kl->nkl", p, np.eye(10)) - p[:, :, None] * p[:, None, :]
    hess = np.einsum("na,nb,nkl->akbl", x, x, s).reshape(650, 650) / x.shape[0]
    hess += problem.l2 * np.eye(650)
    per = problem.per_example_gradients(point).reshape(x.shape[0], -1)
    sigma = np.cov(per, rowvar=False, bias=True)
    big_g = problem.gradient(point).ravel()
    b_simple = np.trace(sigma) / (big_g @ big_g)
    b_noise = np.sum(hess * sigma) / (big_g @ hess @ big_g)
    got = problem.noise_scale(point)
    assert got[0] == pytest.approx(b_simple, rel=1e-9)
    assert got[1] == pytest.approx(b_noise, rel=1e-9)


def _minibatch_norms(problem, point, batch, n_draws, seed):
    """|g_B - G|^2 over independent minibatches drawn with replacement."""
    rng = np.random.default_rng(seed)
    per = problem.per_example_gradients(point).reshape(problem.n_examples, -1)
    mean = per.mean(0)
    idx = rng.integers(0, problem.n_examples, size=(n_draws, batch))
    dev = per[idx].mean(1) - mean
    return (dev * dev).sum(1)


@pytest.mark.parametrize("factor, expect_pass", [(1.0, True), (0.5, False)])
def test_minibatch_noise_is_trace_sigma_over_b(problem, point, factor, expect_pass):
    # E|g_B - G|^2 = tr(Sigma) / B: the numerator of B_simple; factor 0.5 is the power check
    per = problem.per_example_gradients(point).reshape(problem.n_examples, -1)
    tr_sigma = np.trace(np.cov(per, rowvar=False, bias=True))
    batch = 4
    d = _minibatch_norms(problem, point, batch, 4000, seed=1)
    z = (d.mean() - factor * tr_sigma / batch) / (d.std(ddof=1) / np.sqrt(d.size))
    thr = stats.norm.isf(1e-5 / 2 / 2)  # two comparisons
    assert (abs(z) < thr) == expect_pass, z


def test_train_one_sgd_step_by_hand(problem):
    lr, B, seed = 0.5, 3, 7
    runs = train(problem, B, [lr], [1], n_seeds=2, seed=seed)
    for j in range(2):
        idx = np.random.default_rng([seed, B, j]).integers(0, problem.n_examples, size=(1, B))[0]
        xb, yb = problem.features[idx], problem.onehot[idx]
        r = np.exp(xb @ np.zeros(problem.shape))
        r = r / r.sum(1, keepdims=True) - yb
        w1 = -lr * (xb.T @ r / B)
        np.testing.assert_allclose(runs.weights[0, j], w1, rtol=1e-13, atol=1e-16)
        assert runs.loss[0, j, 1] == pytest.approx(problem.loss(w1), rel=1e-13)


def test_train_heavy_ball_two_steps_by_hand(problem):
    lr, beta, B, seed = 0.3, 0.8, 2, 1
    runs = train(problem, B, [lr], [2], momentum=beta, n_seeds=1, seed=seed)
    idx = np.random.default_rng([seed, B, 0]).integers(0, problem.n_examples, size=(2, B))
    w = np.zeros(problem.shape)
    m = np.zeros(problem.shape)
    for t in range(2):
        xb, yb = problem.features[idx[t]], problem.onehot[idx[t]]
        z = xb @ w
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = xb.T @ (p - yb) / B + problem.l2 * w
        m = beta * m + g
        w = w - lr * m
    np.testing.assert_allclose(runs.weights[0, 0], w, rtol=1e-12, atol=1e-15)


def test_train_reproducible_and_independent_of_chunks_and_grid(problem):
    rec = [0, 5, 20, 40]
    a = train(problem, 8, [0.1, 1.0], rec, n_seeds=2, seed=3)
    b = train(problem, 8, [0.1, 1.0], rec, n_seeds=2, seed=3, chunk=7)
    c = train(problem, 8, [1.0], rec, n_seeds=2, seed=3)
    assert np.array_equal(a.loss, b.loss)
    np.testing.assert_allclose(c.loss[0], a.loss[1], rtol=1e-12)
    d = train(problem, 8, [0.1, 1.0], rec, n_seeds=2, seed=4)
    assert not np.array_equal(a.loss, d.loss)
    assert a.loss.shape == (2, 2, 4) and a.mean_loss.shape == (2, 4)
    assert np.all(a.standard_error() >= 0)
    kept = train(problem, 8, [0.1], rec, n_seeds=1, seed=3, keep_weights=True)
    assert kept.weights.shape == (1, 1, 4, 65, 10)
    assert problem.loss(kept.weights[0, 0, 2]) == pytest.approx(kept.loss[0, 0, 2])


def test_too_large_learning_rate_does_not_train(problem):
    runs = train(problem, 4, [200.0, 0.5], [0, 50], n_seeds=1)
    assert runs.loss[0, 0, -1] > 10 * runs.loss[0, 0, 0] > 10 * runs.loss[1, 0, -1]


def test_first_crossing():
    steps = np.array([0, 10, 100, 1000])
    loss = np.array([1.0, 0.5, 0.1, 0.01])
    assert first_crossing(steps, loss, 2.0) == 0.0
    assert first_crossing(steps, loss, 0.001) == np.inf
    # log-log interpolation between (10, 0.5) and (100, 0.1)
    t = first_crossing(steps, loss, 0.2)
    f = np.log(0.5 / 0.2) / np.log(0.5 / 0.1)
    assert t == pytest.approx(10 * 10 ** f)
    # linear from step 0
    assert first_crossing(steps, loss, 0.75) == pytest.approx(10 * np.log(1 / .75) / np.log(2))
    r = log_record(1000, 10)
    assert r[0] == 0 and r[-1] == 1000 and np.all(np.diff(r) > 0)


@pytest.mark.parametrize("call, match", [
    (lambda p: Digits(l2=-1.0), "'l2'"),
    (lambda p: train("x", 1, [0.1], [1]), "'problem'"),
    (lambda p: train(p, 0, [0.1], [1]), "'batch_size'"),
    (lambda p: train(p, 1, [0.0], [1]), "'learning_rates'"),
    (lambda p: train(p, 1, [], [1]), "'learning_rates'"),
    (lambda p: train(p, 1, [0.1], [-1]), "'record'"),
    (lambda p: train(p, 1, [0.1], [1], momentum=1.0), "'momentum'"),
    (lambda p: train(p, 1, [0.1], [1], n_seeds=0), "'n_seeds'"),
    (lambda p: p.noise_scale(np.zeros((3, 3))), "'weights'"),
    (lambda p: first_crossing([0, 1], [1.0, 0.5], -1.0), "'target'"),
])
def test_bad_input(problem, call, match):
    with pytest.raises(ParameterError, match=match):
        call(problem)


@pytest.mark.slow
def test_comparison_script_quick(capsys):
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).parents[1] / "benchmarks" / "digits_calibration.py"
    spec = importlib.util.spec_from_file_location("digits_calibration", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.main(["--quick"])
    out = capsys.readouterr().out
    assert "Held-out SGD batch sizes" in out and "NQM fit on" in out
