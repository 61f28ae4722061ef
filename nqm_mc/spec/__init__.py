"""Specifications: what is simulated or solved, checked once and immutable.

- :mod:`~nqm_mc.spec.model` -- the NQM (curvatures, noise variances, multiplicities, initial
  state) and its constructors;
- :mod:`~nqm_mc.spec.optimizers` -- the optimizer registry and its specifications;
- :mod:`~nqm_mc.spec.schedules` -- learning-rate and batch-size schedules;
- :mod:`~nqm_mc.spec.noise` -- laws of the gradient noise;
- :mod:`~nqm_mc.spec.rotated` -- non-aligned (rotated) models.

Nothing here runs an engine; both engines read these specifications through their lowering
layers.
"""
