"""Process trees with psutil: name a process safely, find its tree, kill all of it.

A tree is what one started program became: Aider starts git, linters and the model client,
and a killed parent leaves its children running unless they are found first. So a kill
collects the descendants *before* it touches the parent, re-scans them (a child may fork while
we work, and an orphaned grandchild is re-parented out of reach) and adds every process that
carries the tree's environment marker, which every descendant inherits unless it drops it.
Processes are named by ``(pid, create_time)``, never by pid alone, so a pid the system has
since reused is never killed.

Nothing here reaps (``waitpid``) a process: the children the dispatcher started are reaped
by their own ``Popen``, and a wait here would steal their exit status. Death is observed
instead: a zombie counts as gone.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass

import psutil

log = logging.getLogger(__name__)

# Every worker (and test gate) and everything it starts carries this variable; its value
# names the repository and the attempt, so a sweep after a crash finds exactly this
# repository's processes.
MARKER_ENV = "LOCALDISPATCH_WORKER"
_CREATE_TIME_TOLERANCE = 1e-3
_KILL_WAIT = 5.0
_POLL = 0.02


@dataclass(frozen=True)
class ProcessKey:
    """A process named so that a reused pid never matches: its pid and its creation time."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, proc: psutil.Process) -> ProcessKey:
        return cls(proc.pid, proc.create_time())


def find_process(key: ProcessKey) -> psutil.Process | None:
    """The live process with this pid *and* creation time, or None (exited or pid reused)."""
    try:
        proc = psutil.Process(key.pid)
        if abs(proc.create_time() - key.create_time) > _CREATE_TIME_TOLERANCE:
            return None
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """The processes among ``procs`` that still run (a zombie has finished running)."""
    result = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                result.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return result


def descendants(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Every process below any of ``procs``, each once."""
    found: dict[ProcessKey, psutil.Process] = {}
    for proc in procs:
        try:
            for child in proc.children(recursive=True):
                found.setdefault(ProcessKey.of(child), child)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return list(found.values())


def marked_processes(marker_prefix: str) -> list[psutil.Process]:
    """Live processes whose environment carries a marker starting with ``marker_prefix``.

    This reads every process's environment, so it is for the moments a tree ends, not for
    every tick. Reading another process's environment can be refused (another user's, or a
    protected process on Windows); those cannot be ours, so they are skipped.
    """
    own = os.getpid()
    found = []
    for proc in psutil.process_iter():
        if proc.pid == own:
            continue
        try:
            value = proc.environ().get(MARKER_ENV, "")
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, OSError):
            continue
        if value.startswith(marker_prefix):
            found.append(proc)
    return found


def kill_tree(
    root: psutil.Process | None,
    *,
    grace: float,
    marker: str | None = None,
    known: Iterable[psutil.Process] = (),
) -> list[int]:
    """Terminate ``root`` and every descendant, wait ``grace`` seconds, then kill survivors.

    Children are collected *before* the parent is signalled (once it dies they are
    re-parented and no longer its descendants), re-scanned after each round, and joined by
    ``known`` (descendants seen earlier, with theirs) and by every process carrying
    ``marker``. Returns the pids that were signalled.
    """
    members: dict[ProcessKey, psutil.Process] = {}
    extra = list(known)

    def gather() -> None:
        roots = [p for p in [root, *extra, *members.values()] if p is not None]
        marked = marked_processes(marker) if marker else []
        for proc in alive([*roots, *descendants(roots), *marked]):
            try:
                members.setdefault(ProcessKey.of(proc), proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue

    gather()
    signalled = {key.pid for key in members}
    for method, wait in (("terminate", grace), ("kill", _KILL_WAIT)):
        for _ in range(3):
            before = set(members)
            for proc in alive(members.values()):
                try:
                    getattr(proc, method)()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            gather()  # a member may have forked between the scan and the signal
            if set(members) == before:
                break
        signalled |= {key.pid for key in members}
        if wait_gone(members.values(), wait):
            break
    leftover = alive(members.values())
    if leftover:
        log.warning("processes %s survived a kill", [p.pid for p in leftover])
    return sorted(signalled)


def wait_gone(procs: Iterable[psutil.Process], timeout: float) -> bool:
    """Wait up to ``timeout`` seconds until none of ``procs`` runs; True if none does.

    Unlike ``psutil.wait_procs`` this never reaps, so a ``Popen`` keeps its exit status.
    """
    pending = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        pending = alive(pending)
        if not pending:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(_POLL)
