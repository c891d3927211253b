#!/usr/bin/env python3
"""Launcher for `ingest-suggested-tasks` that also works from a checkout that was never pip-installed."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))

from localdispatch.launcher import launch  # noqa: E402

if __name__ == "__main__":
    sys.exit(launch("main_ingest"))
