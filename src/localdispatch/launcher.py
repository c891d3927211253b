"""Start a command from a plain checkout: only the standard library is imported here, so a
missing dependency becomes a clear message instead of a traceback."""

from __future__ import annotations

import importlib
import sys


def launch(entry: str) -> int:
    """Run ``localdispatch.cli.<entry>``; explain how to install what is missing."""
    try:
        cli = importlib.import_module("localdispatch.cli")
    except ModuleNotFoundError as exc:
        missing = exc.name or "a dependency"
        sys.stderr.write(
            f"error: localdispatch needs the Python package '{missing}', which is not installed "
            f"for {sys.executable}. Install localdispatch and its dependencies with:\n"
            f'  "{sys.executable}" -m pip install -e .\n'
            "(run it in the localdispatch folder).\n"
        )
        return 2
    main = getattr(cli, entry)
    return int(main(None) or 0)
