"""`python -m dsetlog` runs the `dset` command line."""

import sys

from dsetlog.cli import main

sys.exit(main())
