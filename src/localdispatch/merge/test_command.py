"""The test gate: ``test_command`` run on the prepared merge before the base branch moves.

It fails closed. The command runs in the merged tree with a time limit, under the same
supervisor as a worker; a non-zero exit, a program that cannot be found or started, and a
timeout all block the merge, and on a timeout the command's whole process tree is killed
(grandchildren included, on Windows as on POSIX) so nothing keeps running in the integration
tree.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from localdispatch.errors import WorkerError
from localdispatch.processes.supervisor import gate_marker, start_worker

log = logging.getLogger(__name__)

NOT_FOUND = 127
CANNOT_RUN = 126
TAIL_LINES = 40
TAIL_CHARS = 4000
# How long a timed-out test command may take to exit after SIGTERM before it is killed.
KILL_GRACE = 2.0


# ---- the test command --------------------------------------------------------------------


@dataclass(frozen=True)
class GateResult:
    """How one run of ``test_command`` went. ``exit_code`` is None after a timeout."""

    argv: tuple[str, ...]
    exit_code: int | None
    timed_out: bool
    seconds: float
    tail: str
    log_path: Path

    @property
    def passed(self) -> bool:
        return self.exit_code == 0 and not self.timed_out

    @property
    def summary(self) -> str:
        name = " ".join(self.argv)
        if self.timed_out:
            return f"the test command `{name}` timed out after {self.seconds:.0f} s and was killed"
        if self.exit_code == 0:
            return f"the test command `{name}` passed in {self.seconds:.1f} s"
        if self.exit_code == NOT_FOUND:
            return f"the test command `{name}` was not found (exit {NOT_FOUND})"
        if self.exit_code == CANNOT_RUN:
            return f"the test command `{name}` could not be started (exit {CANNOT_RUN})"
        return f"the test command `{name}` failed with exit code {self.exit_code}"


def run_test_command(
    argv: Sequence[str],
    cwd: Path,
    *,
    timeout: float,
    log_path: Path,
    repo: Path,
    env: Mapping[str, str] | None = None,
    kill_grace: float = KILL_GRACE,
) -> GateResult:
    """Run ``argv`` in ``cwd`` (never through a shell) as a supervised tree; output goes to
    ``log_path``.

    The command runs under the same supervisor as a worker, marked as ``repo``'s test gate:
    at its timeout its whole tree is killed, whatever it leaves behind goes when it ends,
    and a dispatcher killed mid-gate leaves a process the next run's sweep of ``repo``'s
    marker finds. The output goes to a file rather than a pipe so that a grandchild that
    outlives a killed command cannot keep us waiting on the pipe's other end.
    """
    started = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log_path.write_bytes(b"")
    full_env = {"PYTHONIOENCODING": "utf-8", "PYTHONDONTWRITEBYTECODE": "1", **(env or {})}
    code, timed_out = _run_logged(list(argv), cwd, timeout, log_path, full_env, repo, kill_grace)
    result = GateResult(
        argv=tuple(argv),
        exit_code=code,
        timed_out=timed_out,
        seconds=time.monotonic() - started,
        tail=read_tail(log_path),
        log_path=log_path,
    )
    log.info("test gate in %s: %s", cwd, result.summary)
    return result


def _run_logged(
    argv: list[str],
    cwd: Path,
    timeout: float,
    log_path: Path,
    env: dict[str, str],
    repo: Path,
    kill_grace: float,
) -> tuple[int | None, bool]:
    path_var = env.get("PATH", os.environ.get("PATH"))
    program = resolve_program(argv[0], cwd, path_var) if argv else None
    if program is None:
        _note(log_path, f"localdispatch: test command {argv[:1]} not found on PATH\n")
        return NOT_FOUND, False
    try:
        handle = start_worker(
            "test-gate",
            [program, *argv[1:]],
            cwd=cwd,
            log_path=log_path,
            marker=gate_marker(repo),
            env=env,
        )
    except WorkerError as exc:
        if isinstance(exc.__cause__, FileNotFoundError):
            _note(log_path, f"localdispatch: test command {program} not found\n")
            return NOT_FOUND, False
        # not executable, bad format: cannot run means cannot pass
        _note(log_path, f"localdispatch: cannot start test command {program}: {exc.__cause__}\n")
        return CANNOT_RUN, False
    if handle.wait(timeout):
        return handle.returncode, False
    handle.kill(kill_grace)
    _note(log_path, f"\nlocaldispatch: killed the test command after {timeout:g} s\n")
    return None, True


def _note(log_path: Path, text: str) -> None:
    with log_path.open("ab") as out:
        out.write(text.encode("utf-8"))


def resolve_program(name: str, cwd: Path, path_var: str | None) -> str | None:
    """The program to start: a path (relative to ``cwd``) or a name found on PATH."""
    if "/" in name or "\\" in name:
        candidate = Path(name) if Path(name).is_absolute() else cwd / name
        return str(candidate) if candidate.exists() else None
    # shutil.which knows PATHEXT, so `npm` finds npm.cmd on Windows.
    return shutil.which(name, path=path_var)


def read_tail(path: Path, lines: int = TAIL_LINES, chars: int = TAIL_CHARS) -> str:
    """The end of a log file as text: its last ``lines`` lines, at most ``chars`` characters."""
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - chars * 4))
            data = handle.read()
    except OSError:
        return ""
    text = data.decode("utf-8", errors="replace").replace("\r\n", "\n")
    tail = "\n".join(text.rstrip("\n").splitlines()[-lines:])
    return tail[-chars:]
