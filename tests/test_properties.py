"""Property-based tests of the public API: for arbitrary argument values (ints including huge
and negative ones, floats including nan, inf, -0.0 and huge ones, strings, None, bools, lists)
every call either returns a result or raises ParameterError -- never another exception, a hang
or a crash.

Constructors run in-process (pure Python). Calls that reach the numba kernels run in a child
process (tests/property_harness.py): hypothesis generates the examples here, one child runs a
batch of them, and a segfault, a hang or any other exception is reported against the example
that caused it. Generation is derandomized, so CI sees the same examples every run.
"""

import inspect
import math

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from nqm_mc import NQM, ParameterError
from nqm_mc.spec import optimizers as O
from nqm_mc.spec import schedules as S
from nqm_mc.spec.noise import FiniteData, StudentT
from tests.property_harness import Build, Call, check, run_examples

SETTINGS = dict(derandomize=True, deadline=None, database=None,
                suppress_health_check=list(HealthCheck))

# ------------------------------------------------------------------ arbitrary values
SPECIAL_INTS = [0, 1, -1, 2, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 53, 2 ** 53 + 1, 2 ** 62,
                2 ** 62 + 1, 2 ** 63 - 1, 2 ** 63, 2 ** 64, 10 ** 19, -2 ** 63, 10 ** 400]
SPECIAL_FLOATS = [0.0, -0.0, 0.5, 1.0, 2.5, 1e-320, 1e300, 1.7e308, -1e300, math.nan, math.inf,
                  -math.inf, 4.0, 2.0 ** 53, 2.0 ** 64]
ints = st.one_of(st.integers(-5, 40), st.sampled_from(SPECIAL_INTS),
                 st.integers(-2 ** 70, 2 ** 70))
floats = st.one_of(st.sampled_from(SPECIAL_FLOATS), st.floats())
scalars = st.one_of(ints, floats, st.text(max_size=3), st.none(), st.booleans())
anything = st.one_of(scalars, st.lists(st.one_of(ints, floats, st.booleans()), max_size=4))


def small_or_invalid(hi, bound=None):
    """Work sizes: small valid values, or values the API must refuse (never a valid huge one,
    which would be a legitimate long computation rather than a hang)."""
    bad = [st.integers(-2 ** 70, -1), st.floats(allow_nan=True).filter(
        lambda x: not (math.isfinite(x) and x.is_integer())), st.text(max_size=2), st.none(),
        st.booleans(), st.lists(st.integers(0, 3), max_size=2)]
    if bound is not None:
        bad.append(st.integers(bound + 1, 2 ** 70))
    return st.one_of(st.integers(0, hi), *bad)


# ------------------------------------------------------------------ built objects
def _b(kind, *args, **kwargs):
    return Build(kind, list(args), kwargs)


lr_values = st.one_of(st.floats(0.001, 0.5), anything)
lr_schedules = st.one_of(
    lr_values,
    st.builds(lambda a: _b("Constant", a), anything),
    st.builds(lambda a, b, c: _b("StepDecay", a, b, c), lr_values, anything, anything),
    st.builds(lambda a, b: _b("CosineDecay", a, b), lr_values, anything),
    st.builds(lambda a, b, c: _b("LinearDecay", a, b, c), lr_values, anything, anything),
    st.builds(lambda a, b: _b("ExponentialDecay", a, b), lr_values, anything),
    st.builds(lambda b, v: _b("PiecewiseConstant", b, v), anything, anything),
    st.builds(lambda w, s: _b("Warmup", _b("Constant", 0.1), w, start=s), anything, anything),
    st.builds(lambda v: _b("user_lr", v), st.lists(floats, max_size=40)),
    st.builds(lambda v: _b("user_lr", v), anything),
)
batches = st.one_of(
    st.integers(1, 64), anything,
    st.builds(lambda b, s: _b("PiecewiseConstantBatch", b, s), anything, anything),
    st.builds(lambda v: _b("ConstantBatch", v), anything),
    st.builds(lambda v: _b("user_batch", v), st.lists(st.one_of(st.integers(-2, 70), floats),
                                                      max_size=40)),
)
models = st.one_of(
    st.builds(lambda d: _b("paper", d), small_or_invalid(30, bound=2 ** 53)),
    st.builds(lambda d, n: _b("binned", d, n), small_or_invalid(40), small_or_invalid(8)),
    st.builds(lambda d, a, b: _b("power_law", d, a, b), small_or_invalid(20), anything,
              anything),
    st.builds(lambda h, c, n, mu, v: _b("NQM", h, c, n, mu, v), anything, anything,
              st.one_of(st.none(), anything), anything, anything),
    st.builds(lambda h, c, n, mu, v: _b("NQM", h, c, n, mu, v),
              st.lists(st.floats(0.01, 2), min_size=1, max_size=4), st.just(1.0),
              st.one_of(st.none(), st.lists(st.integers(1, 3), min_size=1, max_size=4)),
              floats, floats),
)
linear_opts = st.one_of(
    st.builds(lambda a, p, e: _b("SGD", a, p, e), lr_schedules,
              st.one_of(st.just(0.0), anything), st.one_of(st.none(), anything)),
    st.builds(lambda a, m: _b("HeavyBall", a, m), lr_schedules, st.one_of(st.floats(0, 0.99),
                                                                        anything)),
    st.builds(lambda a, m, e: _b("Nesterov", a, m, ema=e), lr_schedules,
              st.one_of(st.floats(0, 0.99), anything), st.one_of(st.none(), anything)),
)
all_opts = st.one_of(
    linear_opts,
    st.builds(lambda a, b1, b2, e: _b("Adam", a, b1, b2, e), lr_schedules, anything, anything,
              anything),
    st.builds(lambda a, c: _b("SignSGD", a, clip_norm=c), lr_schedules, anything),
    st.builds(lambda a, d: _b("RMSProp", a, d), lr_schedules, anything),
)
noises = st.one_of(st.none(), anything, st.builds(lambda n: _b("StudentT", n), anything),
                   st.builds(lambda n: _b("FiniteData", n),
                             st.one_of(st.integers(2, 300), anything)))
good_model = st.sampled_from([_b("paper", 6), _b("binned", 30, 5),
                              _b("NQM", [1.0, 0.1], [1.0, 0.5], [1, 2], 0.5, 1.0)])
good_opt = st.sampled_from([_b("SGD", 0.1), _b("HeavyBall", 0.1, 0.5),
                            _b("Nesterov", 0.05, 0.9, ema=0.5),
                            _b("SGD", _b("CosineDecay", 0.2, 5), 0.5)])
good_batch = st.one_of(st.integers(1, 64), st.just(_b("PiecewiseConstantBatch", [3], [2, 8])))


def mostly(valid, wild, weight=3):
    """Valid ``weight`` times in ``weight + 1``: every argument is exercised with the others
    valid. (The map keeps one_of from flattening ``wild``'s own branches into this choice.)"""
    return st.one_of(*[valid.map(_same) for _ in range(weight)], wild.map(_same))


def _same(x):
    return x


models_w, linear_opts_w, all_opts_w, batches_w = models, linear_opts, all_opts, batches
models = mostly(good_model, models)
linear_opts = mostly(good_opt, linear_opts)
all_opts = mostly(good_opt, all_opts)
batches = mostly(good_batch, batches)


# ------------------------------------------------------------------ examples per function
def _call(fn_name, /, *args, **kwargs):
    return Call(fn_name, list(args), kwargs)


EXACT = {
    "expected_loss": st.one_of(
        st.builds(lambda m, o, b, n: _call("expected_loss", m, o, b, n), models, linear_opts,
                  batches, small_or_invalid(30, bound=2 ** 62)),
        st.builds(lambda m, o, b, n: _call("expected_loss", m, o, b, n), good_model, good_opt,
                  batches, st.one_of(small_or_invalid(30, bound=2 ** 62),
                                     st.integers(10 ** 12, 2 ** 62))),
        st.builds(lambda o, b, r, e, g: _call("expected_loss", _b("paper", 6), o, b,
                                              record=r, record_every=e, group_moments=g)
                  if r is not None else _call("expected_loss", _b("paper", 6), o, b, 12,
                                              record_every=e, group_moments=g),
                  linear_opts, batches, st.one_of(st.none(), anything),
                  st.one_of(st.integers(1, 5), anything), st.booleans()),
    ),
    "loss_at": st.builds(lambda m, o, b, t: _call("loss_at", m, o, b, t), models, linear_opts,
                         batches, st.one_of(anything, st.lists(ints, max_size=3))),
    "steady_state": st.builds(lambda m, o, b: _call("steady_state", m, o, b), models,
                              linear_opts, batches),
    "stability": st.builds(lambda m, o, b: _call("stability", m, o, b), models, all_opts,
                           batches),
    "steps_to_target": st.builds(
        lambda m, o, b, t, me: _call("steps_to_target", m, o, b, t, method=me), models,
        linear_opts, batches, st.one_of(st.floats(0.01, 3), anything),
        st.one_of(st.sampled_from(["exact", "bisect", "reference"]), anything)),
    "steps_to_target_batch": st.builds(
        lambda o, t, b, lr, mo, caps: _call("steps_to_target_batch", _b("paper", 6), o, t, b,
                                            lr, mo, caps=caps),
        linear_opts, st.one_of(st.floats(0.01, 3), anything),
        st.one_of(st.integers(1, 64), anything), st.one_of(st.floats(0.001, 0.5), anything),
        st.one_of(st.none(), st.floats(0, 0.99), anything), st.one_of(st.none(), anything)),
}
SIM = st.builds(
    lambda m, o, b, n, r, kw: _call("simulate", m, o, b, n, r, progress=False, **kw),
    models, all_opts, batches, mostly(st.integers(0, 12), small_or_invalid(12, 2 ** 32 - 2)),
    mostly(st.integers(1, 40), small_or_invalid(40, bound=2 ** 32 - 1)),
    st.fixed_dictionaries({}, optional={
        "seed": mostly(st.integers(0, 2 ** 64 - 1), ints, weight=4),
        "record": mostly(st.sampled_from(["all", "log", 3, [0, 2]]), anything, weight=4),
        "n_records": mostly(st.integers(2, 20), small_or_invalid(20, bound=2 ** 32), weight=4),
        "target": mostly(st.floats(0.01, 5), anything, weight=4),
        "keep_paths": mostly(st.integers(0, 1), small_or_invalid(3), weight=4),
        "dtype": mostly(st.sampled_from(["float64", "float32"]), anything, weight=4),
        "threads": mostly(st.sampled_from([None, 1, 2]), anything, weight=4),
        "block_size": mostly(st.integers(1, 64), anything, weight=4),
        "n_bands": mostly(st.integers(1, 10), anything, weight=4),
        "noise": mostly(st.sampled_from([None, _b("StudentT", 5.0), _b("FiniteData", 300)]),
                        noises, weight=4)}),
)


@st.composite
def near_valid(draw_, fn_name, fields):
    """A valid call of ``fn_name`` with at most two of its arguments replaced by wild values.
    ``fields``: (name, valid strategy, wild strategy, positional?) in call order."""
    names = [f[0] for f in fields]
    bad = draw_(st.lists(st.sampled_from(names), max_size=2, unique=True))
    values = {name: draw_(wild if name in bad else valid) for name, valid, wild, _ in fields}
    args = [values[f[0]] for f in fields if f[3]]
    kwargs = {f[0]: values[f[0]] for f in fields if not f[3]}
    return _call(fn_name, *args, **kwargs)


_COMMON = [("model", good_model, models_w, True), ("optimizer", good_opt, linear_opts_w, True),
           ("batch_size", good_batch, batches_w, True)]
NEAR = {
    "expected_loss": near_valid("expected_loss", _COMMON + [
        ("n_steps", st.integers(0, 30), st.one_of(small_or_invalid(30, bound=2 ** 62),
                                                  st.integers(10 ** 12, 2 ** 62)), True),
        ("record_every", st.integers(1, 5), anything, False),
        ("group_moments", st.booleans(), anything, False)]),
    "loss_at": near_valid("loss_at", _COMMON + [
        ("t", st.one_of(st.integers(0, 2 ** 62), st.lists(st.integers(0, 2 ** 62), max_size=3)),
         st.one_of(anything, st.lists(ints, max_size=3)), True)]),
    "steady_state": near_valid("steady_state", _COMMON),
    "stability": near_valid("stability", _COMMON[:1] + [
        ("optimizer", good_opt, all_opts_w, True), _COMMON[2]]),
    "steps_to_target": near_valid("steps_to_target", _COMMON + [
        ("target", st.floats(0.01, 3), anything, True),
        ("method", st.sampled_from(["exact", "bisect", "reference"]), anything, False)]),
    "steps_to_target_batch": near_valid("steps_to_target_batch", [
        ("model", good_model, models_w, True), ("optimizer", good_opt, linear_opts_w, True),
        ("target", st.floats(0.01, 3), anything, True),
        ("batch_sizes", st.lists(st.integers(1, 64), min_size=1, max_size=3), anything, True),
        ("learning_rates", st.floats(0.001, 0.5), anything, True)]),
    "simulate": near_valid("simulate", [
        ("model", good_model, models_w, True), ("optimizer", good_opt, all_opts_w, True),
        ("batch_size", good_batch, batches_w, True),
        ("n_steps", st.integers(0, 12), small_or_invalid(12, 2 ** 32 - 2), True),
        ("n_runs", st.integers(1, 40), small_or_invalid(40, bound=2 ** 32 - 1), True),
        ("seed", st.integers(0, 2 ** 64 - 1), ints, False),
        ("record", st.sampled_from(["all", "log", 3, [0, 2]]), anything, False),
        ("n_records", st.integers(2, 20), small_or_invalid(20, bound=2 ** 32), False),
        ("target", st.one_of(st.none(), st.floats(0.01, 5)), anything, False),
        ("keep_paths", st.integers(0, 1), small_or_invalid(3), False),
        ("dtype", st.sampled_from(["float64", "float32"]), anything, False),
        ("threads", st.sampled_from([None, 1]), anything, False),
        ("block_size", st.integers(1, 64), anything, False),
        ("n_bands", st.integers(1, 10), anything, False),
        ("noise", st.sampled_from([None, _b("StudentT", 5.0), _b("FiniteData", 300)]), noises,
         False),
        ("progress", st.just(False), st.just(False), False)]),
}


def draw(strategy, n):
    """``n`` examples of ``strategy``, the same every run."""
    out = []

    @settings(max_examples=n, phases=[Phase.generate], **SETTINGS)
    @given(strategy)
    def collect(x):
        out.append(x)

    collect()
    return out


# ------------------------------------------------------------------ in-process: constructors
def _n_params(fn, required=False):
    ps = inspect.signature(fn).parameters.values()
    return sum(1 for p in ps if not required or p.default is inspect.Parameter.empty)


def _with_args(callables):
    """(callable, positional args): as many args as the callable needs, up to all it takes
    (a wrong arity is Python's TypeError, not the API's business)."""
    return st.sampled_from(callables).flatmap(lambda c: st.tuples(
        st.just(c), st.lists(anything, min_size=_n_params(c, True), max_size=_n_params(c))))


def _returns_or_parameter_error(fn, *args, **kwargs):
    try:
        fn(*args, **kwargs)
    except ParameterError:
        pass


@settings(max_examples=200, **SETTINGS)
@given(_with_args([O.SGD, O.HeavyBall, O.Nesterov, O.Adam, O.RMSProp, O.Adagrad, O.SignSGD]))
def test_optimizers_return_or_raise_parameter_error(cls_args):
    cls, args = cls_args
    _returns_or_parameter_error(cls, *args)


@settings(max_examples=300, **SETTINGS)
@given(_with_args([S.Constant, S.PiecewiseConstant, S.StepDecay, S.ExponentialDecay,
                   S.LinearDecay, S.CosineDecay, S.Warmup, S.ConstantBatch,
                   S.PiecewiseConstantBatch, S.as_schedule, S.as_batch_schedule, StudentT,
                   FiniteData]),
       st.one_of(anything, st.integers(0, 50)))
def test_schedules_return_or_raise_parameter_error(cls_args, t):
    cls, args = cls_args
    try:
        sched = cls(*args)
    except ParameterError:
        return
    if isinstance(sched, (S.Schedule, S.BatchSchedule)):
        _returns_or_parameter_error(S.checked_values, sched, 7)
        if isinstance(sched, S.Schedule):
            _returns_or_parameter_error(sched, t)


@settings(max_examples=200, **SETTINGS)
@given(_with_args([NQM, NQM.paper, NQM.binned, NQM.power_law]))
def test_models_return_or_raise_parameter_error(fn_args):
    fn, args = fn_args
    _returns_or_parameter_error(fn, *args)


# ------------------------------------------------------------------ in a child process
N_EXACT, N_SIM = 50, 150


_P, _SGD = _b("paper", 6), _b("SGD", 0.1)
# fixed examples with known outcomes, run with the generated ones: the harness sees real
# results and refusals of every function (a broken harness reporting everything as refused
# fails here)
FIXED = [
    (_call("expected_loss", _P, _SGD, 4, 5), "ok"),
    (_call("expected_loss", _P, _SGD, 4, 10 ** 12), "param"),
    (_call("loss_at", _P, _SGD, 4, 2 ** 62), "ok"),
    (_call("loss_at", _P, _SGD, 4, 2 ** 63), "param"),
    (_call("steady_state", _P, _SGD, 4), "ok"),
    (_call("steady_state", _P, _SGD, 10 ** 19), "param"),
    (_call("stability", _P, _SGD, 4), "ok"),
    (_call("stability", _P, _SGD, "abc"), "param"),
    (_call("steps_to_target", _P, _SGD, 4, 0.5), "ok"),
    (_call("steps_to_target", _P, _SGD, 2.5, 0.5), "param"),
    (_call("steps_to_target_batch", _P, _SGD, 0.5, 4, [0.1, 0.2]), "ok"),
    (_call("steps_to_target_batch", _P, _SGD, 0.5, 4, [0.1], caps=2 ** 64 - 1), "param"),
    (_call("simulate", _P, _SGD, 4, 5, 16, progress=False), "ok"),
    (_call("simulate", _P, _SGD, 10 ** 19, 10, 16, noise=_b("FiniteData", 16),
           progress=False), "param"),
]


def _run_with_fixed(generated):
    fixed = [ex for ex, _ in FIXED]
    outcomes = run_examples(fixed + generated, timeout=240)
    check(fixed + generated, outcomes)
    assert outcomes[:len(fixed)] == [o for _, o in FIXED]
    return outcomes[len(fixed):]


def _check_function(examples, outcomes, name):
    got = [o for ex, o in zip(examples, outcomes, strict=True) if ex.target == name]
    assert got.count("ok") >= 3 and got.count("param") >= 3, (name, got)


def test_exact_engine_returns_or_raises_parameter_error():
    examples = [ex for name, strat in sorted(EXACT.items()) for ex in draw(strat, N_EXACT)]
    examples += [ex for name, strat in sorted(NEAR.items()) if name != "simulate"
                 for ex in draw(strat, N_EXACT)]
    outcomes = _run_with_fixed(examples)
    for name in EXACT:
        _check_function(examples, outcomes, name)


def test_simulate_returns_or_raises_parameter_error():
    examples = draw(SIM, N_SIM // 2) + draw(NEAR["simulate"], N_SIM)
    outcomes = _run_with_fixed(examples)
    _check_function(examples, outcomes, "simulate")


# ------------------------------------------------------------------ power of the harness
def test_harness_reports_a_crash_a_hang_and_other_exceptions():
    """The harness fails the test when a call segfaults, hangs or raises something else than
    ParameterError, and names the example."""
    with pytest.raises(AssertionError, match=r"crash: .* example 1: Call\(target='segfault'"):
        run_examples([Call("sleep", [0], {}), Call("segfault", [], {}),
                      Call("sleep", [0], {})], timeout=60)
    with pytest.raises(AssertionError, match=r"hang: .* example 0: Call\(target='sleep'"):
        run_examples([Call("sleep", [30], {})], timeout=2)
    ex = [Call("sleep", [0], {}), Call("type_error", [], {})]
    out = run_examples(ex, timeout=60)
    assert out[0] == "ok" and out[1].startswith("error")
    with pytest.raises(AssertionError, match="(?s)1 of 2 calls raised.*type_error.*TypeError"):
        check(ex, out)


def test_harness_runs_real_calls_and_sees_a_broken_kernel_input():
    """The same path as the property tests: a valid call returns, a refused one is "param",
    and a crash in the middle of real calls is attributed to its example."""
    ex = [_call("expected_loss", _b("paper", 5), _b("SGD", 0.1), 4, 3),
          _call("expected_loss", _b("paper", 5), _b("SGD", 0.1), 10 ** 19, 3),
          Call("segfault", [], {}),
          _call("loss_at", _b("paper", 5), _b("SGD", 0.1), 4, 3)]
    with pytest.raises(AssertionError, match=r"example 2: Call\(target='segfault'"):
        run_examples(ex, timeout=120)
    assert run_examples(ex[:2], timeout=120) == ["ok", "param"]
