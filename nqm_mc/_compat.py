"""The public module paths of release 0.1.0 (``nqm_mc.model``, ``nqm_mc.scaling``, ...), kept
importable for one more release with a ``DeprecationWarning`` that names the new path.

Release 0.1.0 was published with a flat layout; code written against it (``from nqm_mc.scaling
import tune``) and results pickled by it still load. Each old path is a small module whose
module-level ``__getattr__`` (PEP 562, as numpy and scipy deprecate their moved modules) warns
and returns the object from its new module, so classes, functions and pickles agree whichever
path found them. A meta-path finder makes these modules on first import: no file per old path.

``nqm_mc.schedules`` is not deprecated: it is the package attribute ``nqm_mc.schedules`` (the
module :mod:`nqm_mc.spec.schedules`), and importing it by that path stays silent.
The private modules of 0.1.0 (``nqm_mc._validate``, ``nqm_mc._rng``, the kernel modules, ...)
carried no promise and are not kept.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types
import warnings
from typing import Any

#: old public path -> its place in the layered layout (deprecated: warn on use)
DEPRECATED = {
    "nqm_mc.model": "nqm_mc.spec.model",
    "nqm_mc.optimizers": "nqm_mc.spec.optimizers",
    "nqm_mc.noise": "nqm_mc.spec.noise",
    "nqm_mc.rotated": "nqm_mc.spec.rotated",
    "nqm_mc.distributed": "nqm_mc.montecarlo.distributed",
    "nqm_mc.scaling": "nqm_mc.studies.scaling",
    "nqm_mc.schedule_opt": "nqm_mc.studies.schedule_opt",
    "nqm_mc.reproduce": "nqm_mc.studies.reproduce",
}
#: old path -> the same module object, silently (it is also a package attribute)
ALIASES = {"nqm_mc.schedules": "nqm_mc.spec.schedules"}
#: the release in which the deprecated paths go
REMOVED_IN = "0.3.0"


def _deprecated_module(old: str, new: str) -> types.ModuleType:
    """A module named ``old`` whose attributes are ``new``'s, each read with a warning."""
    module = types.ModuleType(old, f"Deprecated alias of :mod:`{new}` (removed in "
                                   f"{REMOVED_IN}).")

    def __getattr__(name: str) -> Any:
        if name.startswith("__") and name.endswith("__") and name != "__all__":
            raise AttributeError(f"module {old!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(new), name)
        warnings.warn(f"{old} is deprecated and will be removed in nqm_mc {REMOVED_IN}; "
                      f"import {name} from {new} instead.", DeprecationWarning, stacklevel=2)
        return value

    def __dir__() -> list[str]:
        return dir(importlib.import_module(new))

    module.__getattr__ = __getattr__  # type: ignore[method-assign]
    module.__dir__ = __dir__  # type: ignore[method-assign]
    return module


class _AliasLoader(importlib.abc.Loader):
    def __init__(self, old: str) -> None:
        self.old = old

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if self.old in ALIASES:
            module = importlib.import_module(ALIASES[self.old])
            self.spec = module.__spec__
            return module
        return _deprecated_module(self.old, DEPRECATED[self.old])

    def exec_module(self, module: types.ModuleType) -> None:
        if self.old in ALIASES:
            module.__spec__ = self.spec  # executed under its own name: keep its own spec


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any = None,
                  target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in DEPRECATED or fullname in ALIASES:
            return importlib.machinery.ModuleSpec(fullname, _AliasLoader(fullname))
        return None


def install() -> None:
    """Register the finder once."""
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.append(_AliasFinder())
