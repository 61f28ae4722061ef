"""The module paths of earlier versions (``nqm_mc.model``, ``nqm_mc.scaling``, ...) as aliases
of their places in the layered layout, so that user code written against them still runs.

A meta-path finder maps each old name to its new module; the module object is the same, so
classes, functions and pickles agree whichever name imported them.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys

ALIASES = {
    "nqm_mc.model": "nqm_mc.spec.model",
    "nqm_mc.optimizers": "nqm_mc.spec.optimizers",
    "nqm_mc.schedules": "nqm_mc.spec.schedules",
    "nqm_mc.noise": "nqm_mc.spec.noise",
    "nqm_mc._validate": "nqm_mc.spec._checks",
    "nqm_mc.rotated": "nqm_mc.spec.rotated",
    "nqm_mc._exact_kernels": "nqm_mc.exact._kernels",
    "nqm_mc._mc_kernels": "nqm_mc.montecarlo._kernels",
    "nqm_mc._rng": "nqm_mc.montecarlo._rng",
    "nqm_mc._interrupt": "nqm_mc.montecarlo._interrupt",
    "nqm_mc.distributed": "nqm_mc.montecarlo.distributed",
    "nqm_mc.scaling": "nqm_mc.studies.scaling",
    "nqm_mc.schedule_opt": "nqm_mc.studies.schedule_opt",
    "nqm_mc.reproduce": "nqm_mc.studies.reproduce",
}


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, target):
        self.target = target

    def create_module(self, spec):
        module = importlib.import_module(self.target)
        self.spec = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self.spec  # executed under its own name: keep its own spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname, path=None, target=None):
        if fullname in ALIASES:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(ALIASES[fullname]))
        return None


def install():
    """Register the finder once."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
