"""Test tiers: the default run and the CI tier (``-m ci``, run by ``.ci/run``)."""

import pytest


def example_counts(default, full):
    """Parameters of a property test: ``default`` examples in the default run and ``full`` in
    the CI tier (derandomized tests draw the same examples every run)."""
    return [pytest.param(default, id=f"{default}-examples"),
            pytest.param(full, id=f"{full}-examples", marks=pytest.mark.ci)]
