r"""Your own optimizer and your own gradient noise, compiled into the Monte Carlo kernels.

An :class:`UpdateRule` is a per-direction update written as a plain Python function of
scalars; a :class:`GradientNoise` is a function that writes the whole stochastic gradient
from the state. Both are compiled by numba into a kernel generated for them
(:mod:`nqm_mc.montecarlo.user_kernels`), which runs like the built-in kernels: on every
thread without the GIL, with the counter-based generator (the same bits for any thread count,
block size or executor), streaming statistics, kept paths, hitting times, divergence reports
and Ctrl-C.

Arguments are bound by name. The update function of a rule may take any of

* ``theta``: the direction's parameter; ``g``: its stochastic gradient at this step;
* the rule's state variables (``state``) and hyperparameters (``hyper``), by their names;
* ``lr``: the learning rate :math:`\alpha_t`; ``t``: the step (0 first, an integer);
* ``h``: the direction's curvature; ``dim``: the number of directions;
* ``loss``: :math:`\tfrac12\sum_j h_j\theta_j^2` before the step, and ``grad_sq``:
  :math:`\sum_j g_j^2`, per-step reductions over all directions (so that normalised updates
  and clipping by norm can be written);

and returns the new ``theta``, followed by the new state variables in the order of ``state``.

The gradient function of a noise may take ``g`` (the output: it writes the stochastic
gradient of every direction), ``theta``, ``h``, ``c`` (the model's curvatures and noise
variances, per direction), ``z`` (standard normals, ``normals(dim, batch)`` of them, the first
``dim`` the same as the built-in Gaussian noise's), ``batch``, ``loss``, ``dim`` and its own
parameters by name.

Examples
--------
>>> import math
>>> from nqm_mc import NQM, UpdateRule, simulate
>>> def lion(theta, g, m, lr, beta1, beta2):
...     c = beta1 * m + (1.0 - beta1) * g
...     step = 1.0 if c > 0 else (-1.0 if c < 0 else 0.0)
...     return theta - lr * step, beta2 * m + (1.0 - beta2) * g
>>> rule = UpdateRule(lion, learning_rate=0.01, state=("m",),
...                   hyper={"beta1": 0.9, "beta2": 0.99})
>>> res = simulate(NQM.paper(100), rule, 16, 200, 64)  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from nqm_mc.spec._checks import ParameterError, check_real
from nqm_mc.spec.schedules import Schedule, as_schedule

__all__ = ["UpdateRule", "GradientNoise", "LeastSquaresNoise", "MinibatchLeastSquares",
           "RULE_ARGUMENTS", "NOISE_ARGUMENTS"]

#: what an update function may take besides its state variables and hyperparameters
RULE_ARGUMENTS = ("theta", "g", "lr", "t", "h", "dim", "loss", "grad_sq")
#: what a noise's gradient function may take besides its parameters
NOISE_ARGUMENTS = ("g", "theta", "h", "c", "z", "batch", "loss", "dim")


def _parameters(fn: Callable[..., Any], owner: str, what: str) -> tuple[str, ...]:
    if not callable(fn):
        raise ParameterError(f"The {what!r} parameter of {owner} must be a function. "
                             f"Got {fn!r} instead.")
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        raise ParameterError(f"The {what!r} parameter of {owner} must be a plain Python "
                             f"function with named parameters. Got {fn!r} instead.") from None
    names = []
    for p in sig.parameters.values():
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise ParameterError(f"The {what!r} function {fn.__name__!r} of {owner} takes "
                                 f"{p}; only plain named parameters can be bound.")
        names.append(p.name)
    return tuple(names)


def _identifier(name: Any, owner: str, what: str) -> str:
    if not isinstance(name, str) or not name.isidentifier():
        raise ParameterError(f"The names in the {what!r} parameter of {owner} must be Python "
                             f"identifiers. Got {name!r} instead.")
    return name


def _line_of(fn: Callable[..., Any]) -> str:
    code = getattr(fn, "__code__", None)
    if code is None:
        return ""
    return f" ({code.co_filename}, line {code.co_firstlineno})"


@dataclass(frozen=True, eq=False)
class UpdateRule:
    r"""An optimizer written as a per-direction update of a small state.

    Parameters
    ----------
    update : function
        ``update(theta, g, <state>, lr, <hyper>, ...) -> (theta, <state>)``, a plain Python
        function of scalars that numba can compile (arguments bound by name: see
        :mod:`nqm_mc.spec.user`). It returns the new parameter, then the new state variables
        in the order of ``state`` (just the new parameter when there is no state).
    learning_rate : float or Schedule
        :math:`\alpha_t`, passed as ``lr``.
    state : sequence of str, or mapping of str to float or "theta"
        The per-direction state variables; each starts at 0, at the given constant, or at
        the initial parameter (``"theta"``).
    hyper : mapping of str to float or Schedule
        Hyperparameters, constants or schedules (evaluated at each step), passed by name.
    prepare : function, optional
        ``prepare(t, lr, <hyper>, ...) -> (values)``: per-step scalars computed once per step
        rather than once per direction (bias corrections, schedules of your own); it may take
        ``t``, ``lr``, ``dim``, ``loss``, ``grad_sq`` and the hyperparameters, and returns one
        number per name of ``prepared``, which the update function takes by those names.
    prepared : sequence of str
        The names of ``prepare``'s values.
    readout : str, optional
        A state variable whose loss is reported instead of the parameter's (for averaging
        and schedule-free rules); it must start at ``"theta"``. The loss at the parameter is
        in ``mean_theta`` either way.
    name : str, optional
        The rule's name in messages and results (default: the function's name).

    Raises
    ------
    ParameterError
        If an argument is invalid, or the function takes a parameter that is neither an
        argument the kernels provide nor a state variable or hyperparameter.

    Notes
    -----
    Per direction, with :math:`g_i = h_i\theta_i + \sqrt{c_i/B_t}\,z_i` under the built-in
    Gaussian noise, the rule maps :math:`(\theta_i, s_i) \mapsto (\theta_i', s_i')` using
    only this direction's values, the step's hyperparameters and the reductions ``loss`` and
    ``grad_sq``. Rules that use no reduction run in the windowed kernel of the built-in
    linear optimizers (chunks of directions advanced many steps at a time); the others in
    one pass over all directions per step. Both give the same bits.
    """

    update: Callable[..., Any]
    learning_rate: float | Schedule
    state: Sequence[str] | Mapping[str, float | str] = ()
    hyper: Mapping[str, float | Schedule] = field(default_factory=dict)
    readout: str | None = None
    name: str | None = None
    prepare: Callable[..., Any] | None = None
    prepared: Sequence[str] = ()

    def __post_init__(self) -> None:
        owner = "UpdateRule"
        params = _parameters(self.update, owner, "update")
        name = self.name if self.name is not None else getattr(self.update, "__name__", "rule")
        if not isinstance(name, str) or not name:
            raise ParameterError(f"The 'name' parameter of {owner} must be a non-empty string. "
                                 f"Got {self.name!r} instead.")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "learning_rate",
                           as_schedule(self.learning_rate, "learning_rate", owner))
        if isinstance(self.state, str):
            raise ParameterError(f"The 'state' parameter of {owner} must be a sequence of names "
                                 f"or a dict of initial values. Got {self.state!r} instead.")
        if isinstance(self.state, Mapping):
            items = list(self.state.items())
        else:
            items = [(s, 0.0) for s in self.state]
        init: dict[str, float | str] = {}
        for key, value in items:
            _identifier(key, owner, "state")
            if isinstance(value, str):
                if value != "theta":
                    raise ParameterError(f"The initial value of state variable {key!r} of "
                                         f"{owner} must be a float or 'theta'. Got {value!r} "
                                         "instead.")
                init[key] = "theta"
            else:
                init[key] = check_real(f"state[{key!r}]", value, owner)
        object.__setattr__(self, "state", init)
        if not isinstance(self.hyper, Mapping):
            raise ParameterError(f"The 'hyper' parameter of {owner} must be a dict of names to "
                                 f"floats or schedules. Got {self.hyper!r} instead.")
        hyper: dict[str, float | Schedule] = {}
        for hkey, hval in self.hyper.items():
            _identifier(hkey, owner, "hyper")
            hyper[hkey] = hval if isinstance(hval, Schedule) else \
                check_real(f"hyper[{hkey!r}]", hval, owner)
        object.__setattr__(self, "hyper", hyper)
        clash = set(init) & set(hyper) | (set(init) | set(hyper)) & set(RULE_ARGUMENTS)
        if clash:
            raise ParameterError(f"The names {sorted(clash)} of {owner} {name!r} are used "
                                 f"twice (state, hyperparameters and the kernel's arguments "
                                 f"{list(RULE_ARGUMENTS)} must differ).")
        if isinstance(self.prepared, str):
            raise ParameterError(f"The 'prepared' parameter of {owner} must be a sequence of "
                                 f"names. Got {self.prepared!r} instead.")
        prepared = tuple(_identifier(p, owner, "prepared") for p in self.prepared)
        object.__setattr__(self, "prepared", prepared)
        if (self.prepare is None) != (not prepared):
            raise ParameterError(f"The 'prepare' and 'prepared' parameters of {owner} "
                                 f"{name!r} go together: a function and the names of its "
                                 f"values. Got {self.prepare!r} and {prepared!r} instead.")
        taken = set(RULE_ARGUMENTS) | set(init) | set(hyper)
        if taken & set(prepared) or len(set(prepared)) < len(prepared):
            raise ParameterError(f"The names {list(prepared)} of 'prepared' of {owner} {name!r} "
                                 "must differ from each other, the state, the hyperparameters "
                                 f"and {list(RULE_ARGUMENTS)}.")
        if self.prepare is not None:
            allowed = {"t", "lr", "dim", "loss", "grad_sq"} | set(hyper)
            for p in _parameters(self.prepare, owner, "prepare"):
                if p not in allowed:
                    raise ParameterError(
                        f"The prepare function of rule {name!r} takes {p!r}; it may take "
                        f"{sorted(allowed)}{_line_of(self.prepare)}.")
        known = set(RULE_ARGUMENTS) | set(init) | set(hyper) | set(prepared)
        for p in params:
            if p not in known:
                raise ParameterError(
                    f"The update function of rule {name!r} takes {p!r}, which is neither an "
                    f"argument the kernels provide ({', '.join(RULE_ARGUMENTS)}) nor one of its "
                    f"state variables {list(init)} or hyperparameters {list(hyper)}"
                    f"{_line_of(self.update)}.")
        if "theta" not in params:
            raise ParameterError(f"The update function of rule {name!r} must take 'theta' "
                                 f"(the direction's parameter){_line_of(self.update)}.")
        if self.readout is not None:
            if self.readout not in init or init[self.readout] != "theta":
                raise ParameterError(f"The 'readout' parameter of {owner} must name a state "
                                     f"variable that starts at 'theta'. Got {self.readout!r} "
                                     f"instead (state: {init}).")

    @property
    def arguments(self) -> tuple[str, ...]:
        """The update function's parameter names, in order."""
        return _parameters(self.update, "UpdateRule", "update")

    @property
    def prepare_arguments(self) -> tuple[str, ...]:
        """The prepare function's parameter names, in order (empty without one)."""
        if self.prepare is None:
            return ()
        return _parameters(self.prepare, "UpdateRule", "prepare")

    @property
    def reductions(self) -> tuple[str, ...]:
        """The per-step reductions over all directions the rule uses."""
        return tuple(a for a in self.arguments + self.prepare_arguments
                     if a in ("loss", "grad_sq"))

    def to_dict(self) -> dict[str, Any]:
        """Return the rule as a plain dict (for results' provenance; not loadable back).

        Returns
        -------
        dict
            Its name, function, state, hyperparameters and learning rate.
        """
        fn = self.update
        return {"name": self.name, "user_rule": f"{fn.__module__}.{fn.__qualname__}",
                "learning_rate": self.learning_rate.to_dict(),  # type: ignore[union-attr]
                "state": dict(cast(Mapping[str, "float | str"], self.state)),
                "hyper": {k: v.to_dict() if isinstance(v, Schedule) else v
                          for k, v in self.hyper.items()},
                "readout": self.readout}


@dataclass(frozen=True, eq=False)
class GradientNoise:
    r"""A law of the stochastic gradient as a function of the state.

    Parameters
    ----------
    gradient : function
        ``gradient(g, theta, h, z, batch, ..., <params>)``, a plain Python function that
        numba can compile and that writes the stochastic gradient of every direction into
        ``g`` (arguments bound by name: see :mod:`nqm_mc.spec.user`). Its return value is
        ignored.
    normals : function
        ``normals(dim, batch) -> int``, the number of standard normals the gradient function
        needs per step; they arrive in ``z`` (from the counter-based generator: trajectory
        and step keyed, so the noise is reproducible and the same for every thread count).
    params : mapping of str to float
        Constant parameters, passed by name.
    name : str, optional
        The law's name (default: the gradient function's name).

    Raises
    ------
    ParameterError
        If an argument is invalid or the function takes an unknown parameter.
    """

    gradient: Callable[..., Any]
    normals: Callable[[int, int], int]
    params: Mapping[str, float] = field(default_factory=dict)
    name: str | None = None

    def __post_init__(self) -> None:
        owner = "GradientNoise"
        args = _parameters(self.gradient, owner, "gradient")
        _parameters(self.normals, owner, "normals")
        name = self.name if self.name is not None else getattr(self.gradient, "__name__",
                                                                "noise")
        object.__setattr__(self, "name", str(name))
        if not isinstance(self.params, Mapping):
            raise ParameterError(f"The 'params' parameter of {owner} must be a dict of names "
                                 f"to floats. Got {self.params!r} instead.")
        params = {_identifier(k, owner, "params"): check_real(f"params[{k!r}]", v, owner)
                  for k, v in self.params.items()}
        object.__setattr__(self, "params", params)
        clash = set(params) & set(NOISE_ARGUMENTS)
        if clash:
            raise ParameterError(f"The parameter names {sorted(clash)} of noise {name!r} are "
                                 f"taken by the kernel's arguments {list(NOISE_ARGUMENTS)}.")
        for p in args:
            if p not in NOISE_ARGUMENTS and p not in params:
                raise ParameterError(
                    f"The gradient function of noise {name!r} takes {p!r}, which is neither "
                    f"an argument the kernels provide ({', '.join(NOISE_ARGUMENTS)}) nor one of "
                    f"its parameters {list(params)}{_line_of(self.gradient)}.")
        if "g" not in args:
            raise ParameterError(f"The gradient function of noise {name!r} must take 'g' "
                                 f"(the array it writes){_line_of(self.gradient)}.")

    @property
    def arguments(self) -> tuple[str, ...]:
        """The gradient function's parameter names, in order."""
        return _parameters(self.gradient, "GradientNoise", "gradient")

    def n_normals(self, dim: int, batch: int) -> int:
        """Return the number of normals per step (checked: a non-negative integer).

        Parameters
        ----------
        dim, batch : int
            Number of directions and the largest batch size.

        Returns
        -------
        int
        """
        n = self.normals(dim, batch)
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool) or n < 0:
            raise ParameterError(f"The 'normals' function of noise {self.name!r} must return a "
                                 f"non-negative int. Got {n!r} for dim={dim}, batch={batch} "
                                 "instead.")
        return int(n)

    def to_dict(self) -> dict[str, Any]:
        """Return the law as a plain dict (for results' provenance; not loadable back).

        Returns
        -------
        dict
        """
        fn = self.gradient
        return {"name": self.name, "user_noise": f"{fn.__module__}.{fn.__qualname__}",
                "params": dict(self.params)}


# --- least-squares regression with Gaussian features ------------------------------------------

def _least_squares_gradient(g, theta, h, z, batch, loss, label_variance):  # pragma: no cover
    """G <- H theta + B^-1/2 [(H theta) z_d + sqrt(theta' H theta + sigma^2) H^1/2 z]."""
    d = theta.shape[0]
    s = math.sqrt(2.0 * loss + label_variance)
    z0 = z[d]
    isb = 1.0 / math.sqrt(batch)
    for i in range(d):
        hth = h[i] * theta[i]
        g[i] = hth + isb * (hth * z0 + s * math.sqrt(h[i]) * z[i])


def _least_squares_normals(dim, batch):  # pragma: no cover
    return dim + 1


def _minibatch_gradient(g, theta, h, z, batch, label_variance):  # pragma: no cover
    """Write g = (1/B) sum_b x_b (x_b' theta - eps_b) of a fresh minibatch.

    x_b = H^1/2 u_b, u_b = z[b d:(b + 1) d], eps_b = sigma z[B d + b].
    """
    d = theta.shape[0]
    sig = math.sqrt(label_variance)
    for i in range(d):
        g[i] = 0.0
    for b in range(batch):
        u = z[b * d:(b + 1) * d]
        r = 0.0
        for i in range(d):
            r += math.sqrt(h[i]) * u[i] * theta[i]
        r -= sig * z[batch * d + b]
        for i in range(d):
            g[i] += math.sqrt(h[i]) * u[i] * r
    inv = 1.0 / batch
    for i in range(d):
        g[i] = g[i] * inv


def _minibatch_normals(dim, batch):  # pragma: no cover
    return batch * (dim + 1)


def LeastSquaresNoise(label_variance: float = 0.0) -> GradientNoise:  # noqa: N802
    r"""Minibatch gradient noise of least-squares regression with Gaussian features (Gaussian).

    Parameters
    ----------
    label_variance : float >= 0
        :math:`\sigma^2`, the variance of the label noise.

    Returns
    -------
    GradientNoise

    Notes
    -----
    With features :math:`x \sim N(0, H)`, labels :math:`y = x^\top\theta^* + \varepsilon`,
    :math:`\varepsilon \sim N(0, \sigma^2)` and :math:`\theta` measured from the optimum
    :math:`\theta^*`, the gradient of a minibatch of :math:`B` examples has mean
    :math:`H\theta` and covariance (Isserlis' theorem)

    .. math::

        \frac1B\left[H\theta\theta^\top H + \operatorname{tr}(H\theta\theta^\top)\,H
        + \sigma^2 H\right],

    which depends on the iterate (multiplicative noise). This law draws a Gaussian with that
    covariance in O(d) per step from :math:`d + 1` normals :math:`(z, z_0)`:

    .. math::

        g = H\theta + \frac{1}{\sqrt B}\left[(H\theta)\,z_0
        + \sqrt{\theta^\top H\theta + \sigma^2}\;H^{1/2} z\right].

    The model's curvatures are the spectrum of :math:`H`; its noise variances are not used.
    :func:`MinibatchLeastSquares` samples the real minibatch, whose gradient has the same
    mean and covariance but is not Gaussian.
    """
    s2 = check_real("label_variance", label_variance, "LeastSquaresNoise", low=0.0,
                    closed=(True, False))
    return GradientNoise(_least_squares_gradient, _least_squares_normals,
                         {"label_variance": s2}, name="least_squares")


def MinibatchLeastSquares(label_variance: float = 0.0) -> GradientNoise:  # noqa: N802
    r"""Return the gradient of real minibatches of synthetic least-squares data as a noise.

    Parameters
    ----------
    label_variance : float >= 0
        :math:`\sigma^2`, the variance of the label noise.

    Returns
    -------
    GradientNoise

    Notes
    -----
    Each step draws :math:`B` fresh examples :math:`x_b = H^{1/2}u_b`,
    :math:`u_b \sim N(0, I_d)`, with label noise :math:`\varepsilon_b \sim N(0, \sigma^2)`,
    and returns the gradient of their mean squared error (online SGD on an infinite data
    stream):

    .. math::

        g = \frac1B\sum_{b=1}^{B} x_b\,(x_b^\top\theta - \varepsilon_b),

    O(Bd) per step from :math:`B(d + 1)` normals. Its mean and covariance are those of
    :func:`LeastSquaresNoise`.
    """
    s2 = check_real("label_variance", label_variance, "MinibatchLeastSquares", low=0.0,
                    closed=(True, False))
    return GradientNoise(_minibatch_gradient, _minibatch_normals, {"label_variance": s2},
                         name="minibatch_least_squares")
