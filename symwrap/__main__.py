"""``python -m symwrap``: the command line."""

import sys

from symwrap.cli import main

sys.exit(main())
