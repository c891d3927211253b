"""`python -m localdispatch ...` is the same as the `localdispatch` command."""

import sys

from localdispatch.cli import main

sys.exit(main())
