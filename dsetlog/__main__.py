"""`python -m dsetlog` runs the `dset` command line."""

import sys

from dsetlog.cli.main import main

sys.exit(main())
