import sys

from nqm_mc.cli import main

sys.exit(main())
