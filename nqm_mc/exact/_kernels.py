"""The exact engine's numba kernels under their earlier module name (``nqm_mc._exact_kernels``
is an alias of this module). The kernels live by concern in:

- :mod:`~nqm_mc.exact._linalg` -- small linear algebra (the (A, b) of each optimizer, 3 x 3
  products and sandwiches, closed-form eigen/inverse);
- :mod:`~nqm_mc.exact._powers` -- power tables and doubling sums;
- :mod:`~nqm_mc.exact._moments` -- moment recurrences, curves, steady state, stability;
- :mod:`~nqm_mc.exact._crossing` -- steps to target (envelopes, first crossing, bisection, the
  batch scan).
"""

from nqm_mc.exact._crossing import (  # noqa: F401
    MODAL_MAX_COND,
    _apply_power,
    _apply_power_one,
    _bisect,
    _bisect2,
    _certified_scan,
    _dominating,
    _envelope,
    _envelopes,
    _first_power,
    _initial_moments,
    _lift,
    _slope_constants,
    first_crossing_one,
    first_crossing_range,
    modal_bound,
    modal_coefficients,
)
from nqm_mc.exact._linalg import (  # noqa: F401
    KIND_HEAVY_BALL,
    KIND_NESTEROV,
    KIND_SGD,
    _eig2,
    _inv_small,
    _inv_sym,
    _matmul,
    _max_abs,
    _sandwich,
    _sandwich2_inplace,
    _sandwich_t,
    fill_linear_form,
)
from nqm_mc.exact._moments import (  # noqa: F401
    curve_chunk,
    is_stable,
    loss_at_kernel,
    steady_state_kernel,
)
from nqm_mc.exact._powers import (  # noqa: F401
    MAX_LOG2,
    _doubling_sum2,
    _power_table2,
    doubling_sum,
    power_table,
)
