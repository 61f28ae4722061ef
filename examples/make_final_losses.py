"""Write examples/final_losses.csv: final losses of a known size-aware NQM, one row per run.

The truth (nqm_mc.calibration.synthetic.TABLE_TRUTH): curvature 0.5 i^-1 (learning rate
included), initial loss 2 i^-1.2, noise 50 i^-2, d(N) = 4000 (N / 1.5e7)^0.6 trained
directions, floor 0.5. Eight model sizes (1e6 to 1.28e8) x B in {64, 256, 1024} x K in
{300, 1000, 3000}: 72 runs, losses times exp(0.01 z) with z standard normal (seed 0), and the
compute C = N B K.

    python examples/make_final_losses.py
"""

import os

from nqm_mc._files import write_csv
from nqm_mc.calibration.synthetic import make_table_runs

if __name__ == "__main__":
    t = make_table_runs(seed=0, sigma=0.01)
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "final_losses.csv")
    rows = [[f"{n:.6g}", int(b), int(k), f"{c:.6g}", repr(float(v))]
            for n, b, k, c, v in zip(t.N, t.B, t.K, t.C, t.loss, strict=True)]
    print(write_csv(path, ["N", "B", "K", "C", "loss"], rows))
