"""Validation suite: the Monte Carlo engine against the exact recurrences.

Run ``python -m validation --quick`` (or ``nqm-mc validate``); see validation/cases.py for the
cases and validation/suite.py for the statistics.
"""
