"""The validation suite's statistics: they live in :mod:`nqm_mc.theory.stats` (public).

This module keeps the earlier import path working.
"""

from nqm_mc.theory.stats import (  # noqa: F401
    LossLaw,
    band_moments,
    holm,
    ks_against_law,
    max_abs_z_threshold,
    sample_variance_se,
    sensitivity,
    two_sided_p,
)
