"""Holding a tree on Linux: the dispatcher is a child subreaper.

With ``prctl(PR_SET_CHILD_SUBREAPER, 1)`` a process that loses its parent anywhere below the
dispatcher (a daemon that double-forked and called ``setsid``) is re-parented to the
dispatcher instead of to init, so it stays findable as one of our own children even after it
removed its environment marker; the janitor in ``registry`` does the rest. cgroups would hold
a tree as well, but need a delegated v2 hierarchy that an ordinary user rarely has.

What still escapes: a process started for the worker by something outside its tree (a
systemd or D-Bus activation, ``at``, ``ssh localhost``); and, when the dispatcher itself is
killed, an orphan that had dropped its marker within the last tick (a marked one is found by
the next run's sweep). Where ``prctl`` fails (an old kernel, a sandbox), Linux falls back to
the tree walk and the marker, as on macOS.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import sys
from pathlib import Path

from localdispatch.processes._fallback import FallbackBackend

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36


class LinuxBackend(FallbackBackend):
    """A tree walk and the marker, plus every orphan of a tree adopted by the dispatcher."""

    def __init__(self) -> None:
        self._subreaper = False
        self._session: int | None = None

    @property
    def adopts_orphans(self) -> bool:
        return self._subreaper

    def prepare(self) -> None:
        self._subreaper = become_subreaper()
        # The platform tests below are always true here; they keep type checkers and the
        # Windows scan from reading POSIX calls as unguarded.
        if self._subreaper and sys.platform.startswith("linux"):
            self._session = os.getsid(0)

    def child_pids(self) -> list[int] | None:
        """Our children from ``/proc/self/task/*/children``: one small read per thread of
        ours, where psutil would read every process's ``stat``. None where the kernel lacks
        the file (CONFIG_PROC_CHILDREN). The kernel may miss a child that comes or goes
        during the read; the next tick sees it."""
        tasks = Path("/proc/self/task")
        try:
            threads = [entry.name for entry in tasks.iterdir()]
        except OSError:
            return None
        pids: list[int] = []
        for tid in threads:
            try:
                text = (tasks / tid / "children").read_text(encoding="ascii")
            except FileNotFoundError:
                if tid == str(os.getpid()):
                    return None  # the main thread has no such file: the kernel lacks it
                continue  # the thread ended; its children went to another thread
            except OSError:
                continue
            pids += [int(pid) for pid in text.split()]
        return pids

    def foreign_session(self, pid: int) -> bool:
        if not sys.platform.startswith("linux") or self._session is None:
            return False
        try:
            return os.getsid(pid) != self._session
        except ProcessLookupError:
            return False  # gone: nothing to do
        except OSError:
            return True  # refused: then it is not in our session

    def reap(self, pid: int) -> None:
        if not sys.platform.startswith("linux"):
            return
        with contextlib.suppress(ChildProcessError):  # reaped already
            os.waitpid(pid, os.WNOHANG)  # this pid only: never another child's status


def become_subreaper() -> bool:
    """Make this process a child subreaper; False (logged at debug) where that fails."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0:
            log.debug("this process is now a child subreaper: orphans of workers come back")
            return True
        errno = ctypes.get_errno()
        log.debug("prctl(PR_SET_CHILD_SUBREAPER) failed: %s", os.strerror(errno))
    except (OSError, AttributeError) as exc:
        log.debug("prctl(PR_SET_CHILD_SUBREAPER) is not available: %s", exc)
    return False
