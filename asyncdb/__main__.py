"""``python -m asyncdb``: the same command line as the ``asyncdb`` script."""

import sys

from .cli import main

sys.exit(main())
