"""``python -m symwrap``: the command line.

``python -m`` puts the working directory first on the import path. A model spec such as ``pkg.module:factory``
imports and runs code, so the working directory is taken off again: a file that happens to lie there is never
imported by accident (``symwrap eval --import-cwd`` puts it back on purpose).
"""

import os
import sys

from symwrap.cli import main

if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

sys.exit(main())
