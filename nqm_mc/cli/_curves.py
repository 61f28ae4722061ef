"""The exact curve beside a run: step by step, or by O(log t) jumps for long horizons."""

from __future__ import annotations

import numpy as np


def _first_diverged_step(curve):
    """The first recorded step whose expected loss overflowed (past 1e300), or None."""
    from nqm_mc.spec.codes import DIVERGED
    bad = ~(np.asarray(curve.mean) < DIVERGED)
    return int(curve.steps[int(np.argmax(bad))]) if bad.any() else None


def _curve_by_jumps(model, opt, batch_size, record):
    """The exact curve at the recorded steps by O(log t) jumps (constant hyperparameters), for
    horizons too long to step through."""
    from nqm_mc import exact
    from nqm_mc.spec.codes import DIVERGED
    mean, var, mth = exact.loss_at(model, opt, batch_size, record)
    st = exact.stability(model, opt)
    bad = ~(mean < DIVERGED)
    mean = np.where(bad, np.inf, mean)
    var = np.where(bad | ~np.isfinite(var), np.inf, var)
    mth = np.where(~np.isfinite(mth), np.inf, mth)
    reason = "" if st.stable else st.reason
    if bad.any():
        reason = (reason or "diverges") + \
            f"; the expected loss overflows at step {int(record[np.argmax(bad)])}"
    return exact.ExactCurve(record, mean, var, mth, diverged=bool(bad.any() or not st.stable),
                            reason=reason)


def _exact_curve(model, opt, batch_size, record):
    """The exact curve at the recorded steps of a run: by O(log t) jumps per record for a long
    run with constant hyperparameters, else step by step."""
    from nqm_mc import exact
    record = np.asarray(record)
    if opt.is_constant and isinstance(batch_size, int) and record.size and record[-1] > 100_000:
        return _curve_by_jumps(model, opt, batch_size, record)
    return exact.expected_loss(model, opt, batch_size, record=record)


def _steady_loss(model, opt, batch_size):
    """The exact steady-state loss of constant hyperparameters and a linear optimizer (None
    otherwise, or when there is none: the iteration diverges)."""
    from nqm_mc import exact
    if not (opt.is_linear and opt.is_constant and isinstance(batch_size, int)):
        return None
    ss = exact.steady_state(model, opt, batch_size)
    return float(ss.loss) if ss.stable else None
