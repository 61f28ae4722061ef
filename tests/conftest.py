"""Fixtures shared by several test files."""

import pytest


@pytest.fixture(scope="session")
def cluster():
    """A local Dask cluster of two single-threaded worker processes, started once for the run
    (each start pays two interpreters importing the package and loading its kernels)."""
    distributed = pytest.importorskip("dask.distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=":0") as c:
        yield c
