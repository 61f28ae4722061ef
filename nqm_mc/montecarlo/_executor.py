"""What the driver needs of an executor that runs groups of trajectories elsewhere.

:class:`~nqm_mc.montecarlo.distributed.DaskExecutor` is one; the driver knows it only through
this protocol, so that the driver does not import the module that imports it.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, Protocol


class Executor(Protocol):
    """Runs the blocks of a plan (``nqm_mc.montecarlo.blocks.Plan``) and yields their parts in
    block order."""

    def submit_ranges(self, plan: Any, n_blocks: int) -> list[Any]:
        """Submit the blocks of ``plan``; return one future per task."""
        ...

    def gather_in_order(self, futures: Sequence[Any]) -> Iterator[dict[str, Any]]:
        """Yield the parts of submitted tasks in block order."""
        ...

    def map_ranges(self, plan: Any, n_blocks: int) -> Iterator[dict[str, Any]]:
        """Submit and gather: the parts of every block of ``plan`` in order."""
        ...
