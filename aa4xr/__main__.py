"""``python -m aa4xr``: the ``aa4xr`` command."""

import sys

from .cli import main

sys.exit(main())
