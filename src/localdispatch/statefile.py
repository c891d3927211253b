"""Writing a state file so that a crash at any instant leaves either the old or the new one.

Every shared file of localdispatch (the task store, state.json, pending_merges.json, the
suggestions journal) is written here: to a temporary file beside the target (``os.replace``
is atomic only within one file system), flushed to disk, then moved over the target.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


def write_atomic(path: Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload`` all at once. The temporary file is named
    ``<name>.<random>.tmp`` so the ignore pattern ``<name>.*`` covers it too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        replace_with_retry(Path(tmp_name), path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def replace_with_retry(source: Path, target: Path, attempts: int = 50) -> None:
    """os.replace, retried while Windows reports the target as in use by a reader."""
    for attempt in range(attempts):
        try:
            source.replace(target)
            return
        except PermissionError:
            # On Windows a file another process has open cannot be replaced; readers hold it
            # for milliseconds, so waiting a little is enough.
            if attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))
