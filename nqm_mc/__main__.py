"""``python -m nqm_mc``: the ``nqm-mc`` command line."""

import sys

from nqm_mc.cli import main

sys.exit(main())
