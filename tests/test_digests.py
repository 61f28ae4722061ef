"""Bitwise identity: a fast subset of benchmarks/digests.py against tests/data/digests.json.

The stored digests record the bits of the current results; a change of any of them (a kernel
rewritten, a reduction reordered) fails here. Run ``python benchmarks/digests.py`` for every
case, and ``python benchmarks/digests.py --write`` only when a change of bits is intended.
"""

import importlib.util
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load():
    spec = importlib.util.spec_from_file_location(
        "nqm_mc_digests", os.path.join(ROOT, "benchmarks", "digests.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


D = _load()
ALL = D.load_all()
STORED = D.load()  # this machine's numeric class (empty when it has no record)
RECORDED = pytest.mark.skipif(not STORED["cases"],
                              reason=f"no digests recorded for {D.numeric_class()}")


def test_every_case_is_recorded():
    recorded = set().union(*(set(c["cases"]) for c in ALL["classes"].values()))
    assert recorded == set(D.CASES)  # each case on some class, no stale names
    assert set(D.FAST) <= set(D.CASES)


def test_digest_depends_on_dtype_shape_and_bytes():
    import numpy as np
    a = np.arange(6, dtype=np.float64)
    assert D.digest_array(a) == D.digest_array(a.copy())
    assert D.digest_array(a) != D.digest_array(a.reshape(2, 3))
    assert D.digest_array(a) != D.digest_array(a.astype(np.int64))
    assert D.digest_array(a.reshape(2, 3).T) == D.digest_array(np.ascontiguousarray(
        a.reshape(2, 3).T))
    assert D.digest_array(None) is None


@RECORDED
@pytest.mark.parametrize("name", D.FAST)
def test_bits_unchanged(name):
    if name not in STORED["cases"]:
        pytest.skip(f"{name} not recorded for {D.numeric_class()}")
    got = D.compute([name])
    diff = D.compare(STORED["cases"], got)
    assert not diff, f"{name}: the bits of {diff[name]} changed"


@RECORDED
def test_thread_count_and_block_size_keep_the_bits():
    got = D.compute(["mc_sgd_64_threads1_block48"])
    assert got["mc_sgd_64_threads1_block48"] == STORED["cases"]["mc_sgd_64"]
