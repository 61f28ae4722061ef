"""``nqm-mc info``: versions, threads and the numba cache."""

from __future__ import annotations

import os
import sys

import numpy as np

from nqm_mc.cli._experiment import _json
from nqm_mc.cli._options import _add_json, _Formatter


def cmd_info(args):
    """Print the versions, threads and the state of the numba cache."""
    import numba
    import scipy

    import nqm_mc
    info = {
        "nqm_mc": nqm_mc.__version__, "python": sys.version.split()[0],
        "numpy": np.__version__, "numba": numba.__version__, "scipy": scipy.__version__,
        "cpu_count": os.cpu_count(), "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "numba_cache_dir": numba.config.CACHE_DIR or "(next to the package's sources)",
        "vector_width": ("512 bit (AVX-512)" if "-prefer-256-bit" in
                         (numba.config.CPU_FEATURES or "") else "numba's default"),
    }
    from nqm_mc import _compile_notice as cn
    cold = [k for k in cn.COMPILE_SECONDS if not cn._cached(k)]
    n = len(cn.COMPILE_SECONDS)
    info["kernels_cached"] = (f"{n - len(cold)} of {n} (the others compile on first use, "
                              f"~{cn.estimate(cold)} s)" if cold else f"all {n}")
    if args.json:
        print(_json(info))
    else:
        for k, v in info.items():
            print(f"{k:>16}: {v}")
    return 0


def add_parser(sub):
    """Declare ``nqm-mc info`` and its options on the subparsers ``sub``."""
    p = sub.add_parser("info", help="versions, threads and the numba cache",
                       description="example:\n  nqm-mc info --json",
                       formatter_class=_Formatter)
    _add_json(p, "the facts")
    return p
