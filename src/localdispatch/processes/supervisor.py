"""Worker processes under supervision: start, wait, time out, kill the whole tree.

A worker (or a test gate) is a process *tree*, started through ``containment`` so that the
tree is held the way the platform allows (a child subreaper on Linux, a Job Object on
Windows, the tree walk and the environment marker everywhere). A kill terminates the whole
tree, waits a grace period, then kills what is left; see ``processes.trees.kill_tree``.

Waiting is not polling: each worker has a thread blocked in ``Popen.wait()``. When the
process exits, that thread first makes sure nothing of the attempt is left running (the
descendants seen while it ran, and whatever ``processes.release`` can still reach), then
calls back, so the dispatcher refills the slot only once the tree is gone, within
milliseconds when nothing was left.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from localdispatch import processes
from localdispatch.errors import WorkerError
from localdispatch.processes.trees import (
    ProcessKey,
    alive,
    descendants,
    find_process,
    kill_tree,
)

log = logging.getLogger(__name__)


# How long leftovers of a worker that exited by itself may take to exit after SIGTERM.
_LEFTOVER_GRACE = 1.0


@dataclass
class TreeStats:
    """CPU and memory of a worker's whole tree, for --status."""

    processes: int = 0
    cpu_percent: float = 0.0
    rss_bytes: int = 0


def repo_marker(repo: Path) -> str:
    """The marker prefix of one repository's workers (stable across runs and machines)."""
    digest = hashlib.sha1(str(Path(repo).resolve()).encode("utf-8")).hexdigest()
    return f"ld-{digest[:12]}"


def worker_marker(repo: Path, slot: int, task_id: str) -> str:
    """A marker unique to one worker attempt: repository, slot, task and a nonce."""
    return f"{repo_marker(repo)}/{slot}/{task_id}/{uuid.uuid4().hex[:8]}"


def gate_marker(repo: Path) -> str:
    """A marker unique to one run of the test gate, found by the repository's sweep."""
    return f"{repo_marker(repo)}/gate/{uuid.uuid4().hex[:8]}"


def tree_stats(root: ProcessKey, sample_secs: float = 0.0) -> TreeStats:
    """CPU and memory of a worker tree; with ``sample_secs`` the CPU figure is a live rate."""
    proc = find_process(root)
    if proc is None:
        return TreeStats()
    procs = alive([proc, *descendants([proc])])
    stats = TreeStats(processes=len(procs))
    for member in procs:
        try:
            with member.oneshot():
                stats.rss_bytes += member.memory_info().rss
                member.cpu_percent(None)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    if sample_secs > 0:
        time.sleep(sample_secs)
        for member in procs:
            try:
                stats.cpu_percent += member.cpu_percent(None)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
    return stats


@dataclass
class WorkerHandle:
    """One started worker process: its Popen, identity, log file and the thread awaiting it."""

    name: str
    popen: subprocess.Popen[bytes]
    key: ProcessKey
    marker: str
    log_path: Path
    started: float
    exited_at: float | None = None
    returncode: int | None = None
    killed: bool = False
    _known: dict[ProcessKey, psutil.Process] = field(default_factory=dict)
    _done: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # Held while a kill runs: the waiter cleans up only after it, so the kill's grace period
    # is not cut short when the root dies at the first signal.
    _kill_lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def pid(self) -> int:
        return self.key.pid

    def is_done(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """True once the process has exited and its leftovers are cleaned up."""
        return self._done.wait(timeout)

    def observe(self) -> None:
        """Remember the current descendants, so ones orphaned by a normal exit are found."""
        proc = find_process(self.key)
        if proc is None:
            return
        with self._lock:
            for child in descendants([proc]):
                try:
                    self._known.setdefault(ProcessKey.of(child), child)
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue

    def known_descendants(self) -> list[psutil.Process]:
        with self._lock:
            return list(self._known.values())

    def kill(self, grace: float) -> list[int]:
        """Kill the whole tree (terminate, then kill after ``grace``); wait until it is gone."""
        self.killed = True
        with self._kill_lock:
            root = find_process(self.key)
            known = self.known_descendants()
            pids = kill_tree(root, grace=grace, marker=self.marker, known=known)
        self.wait(grace + 10)
        return pids

    def stats(self, sample_secs: float = 0.0) -> TreeStats:
        return tree_stats(self.key, sample_secs)


def start_worker(
    name: str,
    argv: Sequence[str],
    *,
    cwd: Path,
    log_path: Path,
    marker: str,
    env: Mapping[str, str] | None = None,
    on_exit: Callable[[WorkerHandle], None] | None = None,
) -> WorkerHandle:
    """Start ``argv`` (never through a shell) with stdin closed and output to ``log_path``.

    The process starts a tree of its own, marked with ``marker`` (see ``containment``).
    ``on_exit`` runs on the waiter thread as soon as the process has exited and everything
    it left behind is gone. A program that cannot be started is a WorkerError whose
    ``__cause__`` is the OSError.
    """
    if not argv:
        raise WorkerError(f"Worker {name}: the command is empty.", hint="Check worker_command.")
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONIOENCODING"] = "utf-8"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        try:
            popen = processes.spawn(
                argv,
                marker=marker,
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            raise WorkerError(
                f"Worker {name}: cannot start {argv[0]!r}: {exc.strerror or exc}.",
                hint="Check that the program is installed and on PATH (aider_cmd or "
                "worker_command in dispatch_config.json).",
            ) from exc
    try:
        key = ProcessKey.of(psutil.Process(popen.pid))
    except psutil.NoSuchProcess:
        # Exited already (and not reaped yet, so this is rare): its pid is still ours.
        key = ProcessKey(popen.pid, time.time())
    handle = WorkerHandle(
        name=name, popen=popen, key=key, marker=marker, log_path=log_path, started=time.time()
    )
    thread = threading.Thread(
        target=_await_exit, args=(handle, on_exit), name=f"wait-{name}", daemon=True
    )
    thread.start()
    log.info("worker %s started: pid %s, log %s", name, popen.pid, log_path)
    return handle


def _await_exit(handle: WorkerHandle, on_exit: Callable[[WorkerHandle], None] | None) -> None:
    handle.returncode = handle.popen.wait()
    handle.exited_at = time.time()
    with handle._kill_lock:
        _clean_up(handle)
    handle._done.set()
    if on_exit is not None:
        try:
            on_exit(handle)
        except Exception:  # a callback must never kill the waiter thread silently
            log.exception("worker %s: exit callback failed", handle.name)


def _clean_up(handle: WorkerHandle) -> None:
    """Leave nothing of the attempt running: a worker that exited may have left a child
    behind (a daemonized linter, a model server) holding files in the worktree open."""
    try:
        leftovers = alive(handle.known_descendants())
        if leftovers:
            log.info(
                "worker %s left %d process(es) behind; killing them", handle.name, len(leftovers)
            )
            kill_tree(None, grace=_LEFTOVER_GRACE, known=leftovers)
        pids = processes.release(handle.popen)
        if pids:
            log.info("worker %s: killed %s, left behind after it ended", handle.name, pids)
    except Exception:  # the slot must still be given back: log, never kill the waiter
        log.exception("worker %s: cleaning up after it failed", handle.name)
