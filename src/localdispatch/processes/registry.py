"""Every process the dispatcher starts, registered the instant it exists; and the janitor.

Two kinds of start go through :class:`Registry`:

- a *tree* (``spawn(argv, marker=...)``): a worker attempt or a test gate. It runs in a
  session or process group of its own (and a Job Object on Windows), carries its marker in
  its environment, and stays *live* until :meth:`Registry.release` says the attempt is over.
- a *plain* child (``spawn(argv)``, ``run(argv)``): git and other short commands of the
  dispatcher itself.

Where the OS hands us the orphans of our trees (a Linux child subreaper), the janitor finds
them as our own direct children that we did not start: it kills those that carry no marker or
the marker of an attempt that has ended, leaves those that carry a live attempt's marker (a
worker may use a helper), and reaps zombies. It reaps one pid at a time, never
``waitpid(-1)``, which would steal the exit status of our own ``Popen`` children; the lock
taken around each start and around the janitor's listing means a child is never seen before
it is registered.
"""

from __future__ import annotations

import logging
import os
import secrets
import subprocess
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import psutil

from localdispatch.processes.trees import MARKER_ENV, kill_tree, marked_processes

log = logging.getLogger(__name__)

# Set on the dispatcher's plain children (git), never on a tree: a process that detached from
# one of our own git commands (``git gc --auto`` daemonizes) carries it, is no attempt's
# leftover, and finishes by itself.
HELPER_ENV = "LOCALDISPATCH_HELPER"
# How long an orphan may take to exit after SIGTERM when its attempt ends.
JANITOR_GRACE = 1.0

Verdict = Literal["leave", "reap", "kill"]


class Backend(Protocol):
    """What one OS offers to hold a process tree (``_linux``, ``_windows``, ``_fallback``)."""

    @property
    def adopts_orphans(self) -> bool:
        """True when orphans of our trees become our own children (the janitor's work)."""
        ...

    def prepare(self) -> None:
        """Called once, before the first tree starts (Linux: become a child subreaper)."""

    def tree_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        """Popen ``kwargs`` plus what starts a tree apart (own session or process group)."""
        ...

    def contain(self, popen: subprocess.Popen[Any]) -> object | None:
        """Put a just-started tree in a container and let it run; None when there is none.

        Raises OSError when the process cannot be let run (the caller kills it)."""
        ...

    def close(self, container: object) -> None:
        """Kill every process in ``container`` and release it."""

    def child_pids(self) -> list[int] | None:
        """This process's children, read cheaply; None: ask psutil (a scan of every process)."""
        ...

    def foreign_session(self, pid: int) -> bool:
        """True when ``pid`` is in a session other than ours (so not one of our own)."""
        ...

    def reap(self, pid: int) -> None:
        """Collect the exit status of our child ``pid`` if it has exited (never blocks)."""


@dataclass
class _Child:
    popen: subprocess.Popen[Any]
    marker: str | None  # None: a plain child
    container: object | None = None


class Registry:
    """The processes this dispatcher started, and the janitor for the ones it did not."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self.token = f"{os.getpid()}-{secrets.token_hex(8)}"
        self._lock = threading.Lock()  # held around each start and each listing of children
        self._janitor = threading.Lock()  # one janitor pass at a time: no pid reaped twice
        self._children: dict[int, _Child] = {}  # id(popen) -> child
        self._prepared = False

    # ---- starting ----------------------------------------------------------------------

    def spawn(
        self, argv: Sequence[str], *, marker: str | None = None, **popen_kwargs: Any
    ) -> subprocess.Popen[Any]:
        """Start ``argv`` (never through a shell) and register it before anything can see it.

        With ``marker`` the process starts a tree: its own session or process group (a Job
        Object on Windows) and ``marker`` in its environment; it stays live until
        :meth:`release`. Without, it is a plain child. Other keywords go to ``Popen``;
        ``env=None`` means this process's environment, as for ``Popen``.
        """
        if marker == "":
            raise ValueError("a process tree needs a marker that is not empty")
        env = dict(os.environ if popen_kwargs.get("env") is None else popen_kwargs["env"])
        if marker is None:
            env[HELPER_ENV] = self.token
            kwargs = dict(popen_kwargs)
        else:
            env.pop(HELPER_ENV, None)
            env[MARKER_ENV] = marker
            kwargs = self.backend.tree_kwargs(dict(popen_kwargs))
        kwargs["env"] = env
        with self._lock:
            if marker is not None and not self._prepared:
                self.backend.prepare()
                self._prepared = True
            self._prune()
            popen: subprocess.Popen[Any] = subprocess.Popen(list(argv), **kwargs)
            child = _Child(popen, marker)
            self._children[id(popen)] = child
        if marker is not None:
            try:
                child.container = self.backend.contain(popen)
            except OSError:
                popen.kill()
                popen.wait()
                self.release(popen)
                raise
        return popen

    def run(
        self,
        argv: Sequence[str],
        *,
        input: str | bytes | None = None,  # the name subprocess.run gives it
        capture_output: bool = False,
        timeout: float | None = None,
        check: bool = False,
        **popen_kwargs: Any,
    ) -> subprocess.CompletedProcess[Any]:
        """``subprocess.run`` on :meth:`spawn`: on a timeout the child's whole tree is killed,
        then ``TimeoutExpired`` is raised as ``subprocess.run`` raises it."""
        if input is not None:
            if popen_kwargs.get("stdin") is not None:
                raise ValueError("stdin and input arguments may not both be used.")
            popen_kwargs["stdin"] = subprocess.PIPE
        if capture_output:
            if popen_kwargs.get("stdout") is not None or popen_kwargs.get("stderr") is not None:
                raise ValueError("stdout and stderr arguments may not be used with capture_output.")
            popen_kwargs["stdout"] = popen_kwargs["stderr"] = subprocess.PIPE
        with self.spawn(argv, **popen_kwargs) as process:
            try:
                stdout, stderr = process.communicate(input, timeout=timeout)
            except subprocess.TimeoutExpired as exc:
                _kill_child_tree(process)
                if os.name == "nt":  # as subprocess.run: Windows needs the pipes drained
                    exc.stdout, exc.stderr = process.communicate()
                else:
                    process.wait()
                raise
            except BaseException:
                _kill_child_tree(process)
                raise
            code = process.wait()  # at once: communicate() has waited
            if check and code:
                raise subprocess.CalledProcessError(code, process.args, stdout, stderr)
        return subprocess.CompletedProcess(process.args, code, stdout, stderr)

    # ---- ending ------------------------------------------------------------------------

    def release(self, popen: subprocess.Popen[Any]) -> list[int]:
        """The tree started as ``popen`` is over (its root exited or was killed): kill what
        is left of it that only containment can reach, and reap; returns the pids killed.

        Its marker stops being live first, so the janitor takes its marked orphans too. A
        Job Object (Windows) is closed with every member; without a container or adopted
        orphans (macOS) the marker is all there is to find a detached descendant by.
        """
        with self._lock:
            child = self._children.pop(id(popen), None)
        if child is None or child.marker is None:
            return []
        pids: list[int] = []
        if child.container is not None:
            self.backend.close(child.container)
        elif not self.backend.adopts_orphans:
            strays = marked_processes(child.marker)
            if strays:
                pids += kill_tree(None, grace=JANITOR_GRACE, known=strays)
        pids += self._sweep(JANITOR_GRACE, thorough=True)
        return pids

    def sweep(self, grace: float = 0.0) -> list[int]:
        """The janitor: kill and reap the orphans we adopted; returns the pids killed.

        Cheap enough for every tick: one listing of our own children, and an environment
        read only for a child we did not start. Does nothing where orphans are not adopted.
        """
        return self._sweep(grace, thorough=False)

    def _sweep(self, grace: float, *, thorough: bool) -> list[int]:
        if not self.backend.adopts_orphans:
            return []
        with self._janitor:
            strangers, live = self._strangers(thorough)
            doomed = []
            for proc in strangers:
                verdict = self._judge(proc, live)
                if verdict == "reap":
                    self.backend.reap(proc.pid)
                elif verdict == "kill":
                    doomed.append(proc)
            if not doomed:
                return []
            log.info(
                "killing %d process(es) left behind by finished attempts: %s",
                len(doomed),
                [p.pid for p in doomed],
            )
            pids = kill_tree(None, grace=grace, known=doomed)
            # They are our zombies now, and so are their children, adopted as they died.
            for proc in self._strangers(thorough)[0]:
                if self._judge(proc, live) == "reap":
                    self.backend.reap(proc.pid)
            return pids

    def _strangers(self, thorough: bool) -> tuple[list[psutil.Process], set[str]]:
        """Our direct children that we did not start, and the markers of live trees.

        ``thorough`` lists them with psutil, which cannot miss one; otherwise the backend's
        cheap listing is used where it has one."""
        with self._lock:
            # Read the registry before listing: a child reaped in between is gone from the
            # listing, and one started in between cannot be (the lock holds starts).
            ours = {c.popen.pid for c in self._children.values() if c.popen.returncode is None}
            live = {c.marker for c in self._children.values() if c.marker is not None}
            pids = None if thorough else self.backend.child_pids()
            if pids is None:
                try:
                    pids = [p.pid for p in psutil.Process().children()]
                except psutil.Error:
                    pids = []
        strangers = []
        for pid in pids:
            if pid in ours:
                continue
            try:
                strangers.append(psutil.Process(pid))
            except psutil.NoSuchProcess:
                continue  # reaped already
        return strangers, live

    def _judge(self, proc: psutil.Process, live: set[str]) -> Verdict:
        # A tree always starts a session of its own and nothing can join ours from outside,
        # so a child in our session is no tree's orphan: it is one this process started
        # without us (or an orphan of a plain child), and its exit status is not ours.
        if not self.backend.foreign_session(proc.pid):
            return "leave"
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return "reap"
            env = proc.environ()
        except psutil.NoSuchProcess:
            return "leave"
        except (psutil.AccessDenied, OSError):
            env = {}  # a setuid helper, say: nothing tells it apart, so it goes
        if env.get(HELPER_ENV) == self.token or env.get(MARKER_ENV, "") in live:
            return "leave"
        return "kill"

    def _prune(self) -> None:
        """Forget plain children that have been reaped (trees wait for release)."""
        done = [
            key
            for key, child in self._children.items()
            if child.marker is None and child.popen.returncode is not None
        ]
        for key in done:
            del self._children[key]


def _kill_child_tree(process: subprocess.Popen[Any]) -> None:
    try:
        root = psutil.Process(process.pid)
    except psutil.Error:
        process.kill()
        return
    kill_tree(root, grace=0.0)
