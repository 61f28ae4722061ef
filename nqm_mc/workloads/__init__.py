"""Real training workloads to compare the NQM with, small enough to ship with the tests.

- :mod:`~nqm_mc.workloads.digits` -- softmax regression on scikit-learn's bundled digits data
  (no download), trained with SGD and heavy-ball momentum in NumPy, with its per-example
  gradient noise scale.
"""
