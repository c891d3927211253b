"""Worker processes under psutil supervision: start, wait, time out, kill the whole tree.

A worker is a process *tree*: Aider starts git, linters and the model client, and a killed
parent leaves its children running unless they are found first. So every kill here collects
the descendants before it touches the parent, re-scans them (a child may fork while we work,
and an orphaned grandchild is re-parented out of reach), and finally sweeps for processes that
carry the worker's environment marker, which every descendant inherits. Processes are named by
``(pid, create_time)``, never by pid alone, so a pid the system has since reused is never
killed.

Waiting is not polling: each worker has a thread blocked in ``Popen.wait()`` that calls back
the moment the process exits, so the dispatcher refills a slot within milliseconds.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from .errors import WorkerError

log = logging.getLogger(__name__)

# Every worker and everything it starts carries this variable; its value names the repository
# and the worker, so a sweep after a crash finds exactly this repository's workers.
MARKER_ENV = "LOCALDISPATCH_WORKER"
_CREATE_TIME_TOLERANCE = 1e-3
_IS_WINDOWS = os.name == "nt"


@dataclass(frozen=True)
class ProcessKey:
    """A process named so that a reused pid never matches: its pid and its creation time."""

    pid: int
    create_time: float

    @classmethod
    def of(cls, proc: psutil.Process) -> ProcessKey:
        return cls(proc.pid, proc.create_time())


@dataclass
class TreeStats:
    """CPU and memory of a worker's whole tree, for --status."""

    processes: int = 0
    cpu_percent: float = 0.0
    rss_bytes: int = 0
    cpu_seconds: float = 0.0


def repo_marker(repo: Path) -> str:
    """The marker prefix of one repository's workers (stable across runs and machines)."""
    digest = hashlib.sha1(str(Path(repo).resolve()).encode("utf-8")).hexdigest()
    return f"ld-{digest[:12]}"


def worker_marker(repo: Path, slot: int, task_id: str) -> str:
    """A marker unique to one worker attempt: repository, slot, task and a nonce."""
    return f"{repo_marker(repo)}/{slot}/{task_id}/{uuid.uuid4().hex[:8]}"


def popen_platform_kwargs() -> dict[str, Any]:
    """Detach workers from the console's Ctrl+C, the one platform choice of this module.

    The dispatcher decides what Ctrl+C means (stop starting, then kill); a worker that got
    the console's signal itself would die mid-edit on the first press.
    """
    if _IS_WINDOWS:
        return {"creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)}
    return {"start_new_session": not _IS_WINDOWS}


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


def _alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    result = []
    for proc in procs:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                result.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return result


def _descendants(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
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

    Reading another process's environment can be refused (another user's, or a protected
    process on Windows); those cannot be ours, so they are skipped.
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
    ``known`` (descendants seen earlier) and by every process carrying ``marker``.
    Returns the pids that were signalled.
    """
    members: dict[ProcessKey, psutil.Process] = {}

    def gather() -> None:
        roots = [p for p in [root, *members.values()] if p is not None]
        extra = list(known) + (marked_processes(marker) if marker else [])
        for proc in _alive([*roots, *_descendants(roots), *extra]):
            try:
                members.setdefault(ProcessKey.of(proc), proc)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue

    gather()
    signalled = {key.pid for key in members}
    for method, wait in (("terminate", grace), ("kill", 5.0)):
        for _ in range(3):
            before = set(members)
            for proc in _alive(members.values()):
                try:
                    getattr(proc, method)()
                except (psutil.NoSuchProcess, psutil.AccessDenied):
                    continue
            gather()  # a member may have forked between the scan and the signal
            if set(members) == before:
                break
        signalled |= {key.pid for key in members}
        _, survivors = psutil.wait_procs(_alive(members.values()), timeout=wait)
        if not survivors:
            break
    leftover = _alive(members.values())
    if leftover:
        log.warning("processes %s survived a kill", [p.pid for p in leftover])
    return sorted(signalled)


def tree_stats(root: ProcessKey, sample_secs: float = 0.0) -> TreeStats:
    """CPU and memory of a worker tree; with ``sample_secs`` the CPU figure is a live rate."""
    proc = find_process(root)
    if proc is None:
        return TreeStats()
    procs = _alive([proc, *_descendants([proc])])
    stats = TreeStats(processes=len(procs))
    for member in procs:
        try:
            with member.oneshot():
                stats.rss_bytes += member.memory_info().rss
                times = member.cpu_times()
                stats.cpu_seconds += times.user + times.system
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
            for child in _descendants([proc]):
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
        root = find_process(self.key)
        pids = kill_tree(root, grace=grace, marker=self.marker, known=self.known_descendants())
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

    ``on_exit`` runs on the waiter thread as soon as the process has exited and any
    descendants it left behind are killed.
    """
    if not argv:
        raise WorkerError(f"Worker {name}: the command is empty.", hint="Check worker_command.")
    full_env = dict(os.environ)
    full_env.update(env or {})
    full_env["PYTHONIOENCODING"] = "utf-8"
    full_env[MARKER_ENV] = marker
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log_file:
        try:
            popen = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                **popen_platform_kwargs(),
            )
        except (FileNotFoundError, PermissionError, NotADirectoryError) as exc:
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
    # A worker that exited normally may have left a child behind (a daemonized linter, a
    # model server); it would hold files in the worktree open, so it goes too.
    leftovers = _alive(handle.known_descendants())
    if leftovers:
        log.info("worker %s left %d process(es) behind; killing them", handle.name, len(leftovers))
        kill_tree(None, grace=1.0, known=leftovers)
    handle._done.set()
    if on_exit is not None:
        try:
            on_exit(handle)
        except Exception:  # a callback must never kill the waiter thread silently
            log.exception("worker %s: exit callback failed", handle.name)
