"""What a user rule or noise must be, checked, and what went wrong, in its author's terms.

:func:`_validate` compiles the user's functions alone for float64 and checks what they
return, before :mod:`nqm_mc.montecarlo.user_kernels` generates a kernel around them;
:func:`_explain` turns a numba error into one sentence (what failed, why, and the offending
line) for a :class:`RuleError`.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import re
import textwrap
from typing import Any

import numba
from numba import types

from nqm_mc.spec._checks import ParameterError
from nqm_mc.spec.user import GradientNoise, UpdateRule


class RuleError(ParameterError):
    """A user rule or noise does not compile or returns the wrong shape."""


# --- checks and error messages --------------------------------------------------------------

_RULE_TYPES = {"theta": types.float64, "g": types.float64, "lr": types.float64,
               "t": types.int64, "h": types.float64, "dim": types.int64,
               "loss": types.float64, "grad_sq": types.float64}
_ARR = types.Array(types.float64, 1, "C")
_NOISE_TYPES = {"g": _ARR, "theta": _ARR, "h": _ARR, "c": _ARR, "z": _ARR,
                "batch": types.int64, "loss": types.float64, "dim": types.int64}


def _validate(rule: UpdateRule, noise: GradientNoise | None, fns: dict[str, Any]) -> None:
    """Compile the user's functions alone for float64 and check what the rule returns."""
    sig = tuple(_RULE_TYPES.get(a, types.float64) for a in rule.arguments)
    try:
        fns["update"].compile(sig)
    except numba.core.errors.NumbaError as err:
        raise RuleError(_explain(err, rule, None, what="update")) from None
    ret = fns["update"].overloads[sig].signature.return_type
    n = 1 + len(rule.state)
    shape = ("theta" if n == 1 else "(" + ", ".join(["theta", *rule.state]) + ")")
    ok = (isinstance(ret, types.Number) and n == 1) or (
        isinstance(ret, types.BaseTuple) and len(ret) == n
        and all(isinstance(x, types.Number) for x in ret))
    if not ok:
        got = (f"a tuple of {len(ret)} values ({ret})" if isinstance(ret, types.BaseTuple)
               else f"{ret}")
        raise RuleError(f"The update function of rule {rule.name!r} must return {shape}: "
                        f"{n} number{'s' if n > 1 else ''}; it returns {got}"
                        f"{_return_line(rule.update)}.")
    if rule.prepare is not None:
        psig = tuple(_RULE_TYPES.get(a, types.float64) for a in rule.prepare_arguments)
        try:
            fns["prepare"].compile(psig)
        except numba.core.errors.NumbaError as err:
            raise RuleError(_explain(err, rule, None, what="prepare")) from None
        pret = fns["prepare"].overloads[psig].signature.return_type
        k = len(rule.prepared)
        pok = (isinstance(pret, types.Number) and k == 1) or (
            isinstance(pret, types.BaseTuple) and len(pret) == k
            and all(isinstance(x, types.Number) for x in pret))
        if not pok:
            raise RuleError(f"The prepare function of rule {rule.name!r} must return "
                            f"{k} number{'s' if k > 1 else ''} ({', '.join(rule.prepared)}); "
                            f"it returns {pret}{_return_line(rule.prepare)}.")
    if noise is None:
        return
    nsig = tuple(_NOISE_TYPES.get(a, types.float64) for a in noise.arguments)
    try:
        fns["noise"].compile(nsig)
    except numba.core.errors.NumbaError as err:
        raise RuleError(_explain(err, rule, noise, what="noise")) from None
    msig = (types.int64, types.int64)
    try:
        fns["normals"].compile(msig)
    except numba.core.errors.NumbaError as err:
        raise RuleError(_explain(err, rule, noise, what="normals")) from None
    mret = fns["normals"].overloads[msig].signature.return_type
    if not isinstance(mret, types.Integer):
        raise RuleError(f"The normals function of noise {noise.name!r} must return an int; "
                        f"it returns {mret}{_return_line(noise.normals)}.")


def _return_line(fn: Any) -> str:
    """' (file, line n: `return ...`)' of the function's first return statement, or ''."""
    try:
        lines, start = inspect.getsourcelines(fn)
        tree = ast.parse(textwrap.dedent("".join(lines)))
    except (OSError, TypeError, SyntaxError):
        return ""
    for node in ast.walk(tree):
        if isinstance(node, ast.Return):
            n = start + node.lineno - 1
            text = linecache.getline(fn.__code__.co_filename, n).strip()
            return f" ({fn.__code__.co_filename}, line {n}: `{text}`)"
    return ""


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _explain(err: BaseException, rule: UpdateRule, noise: GradientNoise | None,
             what: str = "kernel") -> str:
    """One sentence out of a numba error: what failed, why, and the offending line."""
    msg = _ANSI.sub("", str(err))
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    skip = ("Failed in ", "During:", "File ", "^", "<source", "This error may have",
            "Enable logging", "raised from", "No implementation", "Resolution failure",
            "- Resolution", "Known signatures", "* ", "def ", "Rewrite ", "This is not usually")
    reason = next((ln for ln in lines if not ln.startswith(skip) and "(step:" not in ln),
                  lines[0] if lines else "unknown error")
    reason = reason.rstrip(".")
    if len(reason) > 200:
        reason = reason[:197] + "..."
    files = {getattr(getattr(f, "__code__", None), "co_filename", None)
             for f in (rule.update, rule.prepare, noise and noise.gradient,
                       noise and noise.normals)}
    where = ""
    for m in re.finditer(r'File "([^"]+)", line (\d+)', msg):
        if m.group(1) in files or where == "":
            text = linecache.getline(m.group(1), int(m.group(2))).strip()
            where = f" ({m.group(1)}, line {m.group(2)}: `{text}`)"
            if m.group(1) in files:
                break
    if what in ("update", "prepare"):
        subject = f"The {what} function of rule {rule.name!r}"
    elif what in ("noise", "normals") and noise is not None:
        fn = "gradient" if what == "noise" else "normals"
        subject = f"The {fn} function of noise {noise.name!r}"
    else:
        subject = f"The kernel of rule {rule.name!r}" + (
            f" with noise {noise.name!r}" if noise is not None else "")
    hint = ("; a helper function it calls must be compiled too (decorate it with "
            "@numba.njit)" if "Numba type of <class 'function'>" in reason else "")
    return f"{subject} does not compile: {reason}{where}{hint}."
