"""Write examples/calibration_runs.csv: Monte Carlo curves of a known power-law NQM plus a floor.

The truth (nqm_mc.calibration.synthetic.TRUTH): h_i = i^-1, c_i = 0.5 i^-1.2, v0 = 1,
d = 1000, floor 0.05. Four runs (SGD at B = 8, 32, 128 with learning rates 0.5, 1, 1.5;
heavy ball 0.05, 0.9 at B = 32), each the mean of 8 simulated trajectories (so it carries
Monte Carlo noise), recorded at 40 log-spaced steps up to 3000.

    python examples/make_calibration_runs.py
"""

import os

from nqm_mc.calibration import write_runs
from nqm_mc.calibration.synthetic import make_runs

if __name__ == "__main__":
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "calibration_runs.csv")
    print(write_runs(path, make_runs(seed=0)))
