"""`python -m localdispatch ...` is the same as the `localdispatch` command."""

import sys

from .cli import main

sys.exit(main())
