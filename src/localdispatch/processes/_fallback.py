"""Holding a tree where the OS offers nothing more: macOS and other POSIX systems.

A tree starts a session of its own (so the console's Ctrl+C, which the dispatcher handles,
does not reach it), and is found by walking it with psutil and by its environment marker.

What holds on macOS: every process still in the tree, and every process that carries the
attempt's marker, is killed when the attempt ends. A descendant that detaches (double fork,
``setsid``; it is re-parented to launchd) AND removes ``LOCALDISPATCH_WORKER`` from its
environment cannot be told from any other process of yours, and can outlive the attempt.
"""

from __future__ import annotations

import subprocess
from typing import Any


class FallbackBackend:
    """Tree walk and marker only: no container, no adopted orphans."""

    @property
    def adopts_orphans(self) -> bool:
        return False

    def prepare(self) -> None:
        return None

    def tree_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        # This backend only ever runs on POSIX (Windows has _windows), where a session of
        # its own also keeps a worker's descendants out of the dispatcher's session.
        kwargs.setdefault("start_new_session", True)
        return kwargs

    def contain(self, popen: subprocess.Popen[Any]) -> object | None:
        return None

    def close(self, container: object) -> None:
        return None

    def child_pids(self) -> list[int] | None:
        return None

    def foreign_session(self, pid: int) -> bool:
        return False

    def reap(self, pid: int) -> None:
        return None
