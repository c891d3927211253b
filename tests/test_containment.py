"""Nothing left running: real daemons that detach and drop their marker, real gates, real
janitor passes next to real children of ours whose exit status must survive them."""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from localdispatch import processes
from localdispatch.merge.test_command import run_test_command
from localdispatch.processes import Registry
from localdispatch.processes._fallback import FallbackBackend
from localdispatch.processes._windows import ExtendedLimits
from localdispatch.processes.supervisor import (
    WorkerHandle,
    repo_marker,
    start_worker,
    worker_marker,
)
from localdispatch.processes.trees import MARKER_ENV, kill_tree, marked_processes

LINUX = sys.platform.startswith("linux")
linux_only = pytest.mark.skipif(
    not LINUX, reason="orphans are adopted (child subreaper) only on Linux"
)
posix_only = pytest.mark.skipif(os.name == "nt", reason="the daemon scripts use os.fork")

SLEEPER = "import time\nwhile True: time.sleep(0.05)\n"

# The daemon: re-executed by the worker below with or without the marker, so that
# /proc/<pid>/environ shows what it kept. It writes its pid and sleeps (or exits at once,
# to become a zombie; or ignores SIGTERM, to need the kill after the grace period).
DAEMON = """
import os, signal, sys, time
pid_file, behaviour = sys.argv[1], sys.argv[2]
if behaviour == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
tmp = pid_file + ".tmp"
with open(tmp, "w", encoding="utf-8") as handle:
    handle.write(str(os.getpid()))
os.replace(tmp, pid_file)
if behaviour == "exit":
    sys.exit(0)
while True:
    time.sleep(0.05)
"""

# The worker: double-forks a daemon that calls setsid(), drops LOCALDISPATCH_WORKER (or
# keeps it) and re-execs itself; waits until the daemon is up; then exits when the go file
# appears (or never, with "hang").
WORKER = """
import os, sys, time
daemon, pid_file, marker, behaviour, go = sys.argv[1:6]
pid = os.fork()
if pid == 0:
    os.setsid()
    if os.fork() > 0:
        os._exit(0)
    env = dict(os.environ)
    if marker == "drop":
        env.pop("LOCALDISPATCH_WORKER", None)
    os.execve(sys.executable, [sys.executable, daemon, pid_file, behaviour], env)
os.waitpid(pid, 0)
while not os.path.exists(pid_file):
    time.sleep(0.02)
while go == "hang" or not os.path.exists(go):
    time.sleep(0.02)
"""


def write_scripts(tmp_path: Path) -> tuple[Path, Path]:
    daemon, worker = tmp_path / "daemon.py", tmp_path / "worker.py"
    daemon.write_text(DAEMON, encoding="utf-8")
    worker.write_text(WORKER, encoding="utf-8")
    return daemon, worker


def start_daemonizing_worker(
    tmp_path: Path, name: str, *, marker: str, behaviour: str = "sleep", go: str = "go"
) -> tuple[WorkerHandle, Path, Path]:
    """A worker whose daemon keeps (``marker="keep"``) or drops (``"drop"``) the marker."""
    daemon, worker = write_scripts(tmp_path)
    pid_file, go_file = tmp_path / f"{name}.pid", tmp_path / f"{name}.go"
    argv = [sys.executable, str(worker), str(daemon), str(pid_file), marker, behaviour]
    handle = start_worker(
        name,
        [*argv, "hang" if go == "hang" else str(go_file)],
        cwd=tmp_path,
        log_path=tmp_path / f"{name}.log",
        marker=worker_marker(tmp_path, 1, name),
    )
    return handle, pid_file, go_file


def read_pid(path: Path, timeout: float = 30) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = path.read_text(encoding="utf-8").strip() if path.exists() else ""
        if text.isdigit():  # not a file caught half-written
            return int(text)
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def running(tag: str) -> list[int]:
    """Pids of running processes whose command line holds ``tag`` (a unique path)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and tag in " ".join(proc.cmdline()):
                found.append(proc.pid)
        except psutil.Error:
            continue
    return found


def vanished(pid: int) -> bool:
    """Gone for good: not running and not a zombie waiting to be reaped."""
    return not psutil.pid_exists(pid)


def until(condition: object, timeout: float = 15) -> bool:
    """Poll ``condition()`` until it holds or the deadline passes; its last value."""
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return bool(condition())
        time.sleep(0.02)
    return True


def status(pid: int) -> str | None:
    try:
        return str(psutil.Process(pid).status())
    except psutil.NoSuchProcess:
        return None


def kill_running(tag: str) -> None:
    """Clean up after a failed test: only processes whose command line names ``tag``."""
    for pid in running(tag):
        with contextlib.suppress(psutil.Error):
            psutil.Process(pid).kill()


# ---- a daemon that detached and dropped its marker ---------------------------------------


@linux_only
def test_a_daemon_left_by_a_worker_that_exits_is_gone(tmp_path: Path) -> None:
    handle, pid_file, go = start_daemonizing_worker(tmp_path, "w1", marker="drop")
    pid = read_pid(pid_file)
    try:
        daemon = psutil.Process(pid)
        # It is out of the worker's tree and session, and the marker is gone from its
        # environment; only the subreaper makes it one of ours.
        assert MARKER_ENV not in daemon.environ()
        assert os.getsid(pid) != os.getsid(handle.pid)
        assert until(lambda: daemon.ppid() == os.getpid())
        go.write_text("go", encoding="utf-8")
        assert handle.wait(30) and handle.returncode == 0
        assert until(lambda: vanished(pid))
    finally:
        kill_running(str(tmp_path))


@linux_only
def test_a_daemon_that_ignores_sigterm_is_gone_after_a_timeout_kill(tmp_path: Path) -> None:
    handle, pid_file, _ = start_daemonizing_worker(
        tmp_path, "w1", marker="drop", behaviour="stubborn", go="hang"
    )
    pid = read_pid(pid_file)
    try:
        handle.kill(grace=0.5)  # what the dispatcher does at worker_timeout_secs
        assert handle.is_done() and handle.killed
        assert until(lambda: vanished(pid))
    finally:
        kill_running(str(tmp_path))


@linux_only
def test_a_live_attempts_daemon_keeps_running_only_while_it_keeps_the_marker(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "c").mkdir()
    kept, kept_pid_file, _ = start_daemonizing_worker(tmp_path / "a", "a", marker="keep", go="hang")
    dropped, dropped_pid_file, _ = start_daemonizing_worker(
        tmp_path / "b", "b", marker="drop", go="hang"
    )
    kept_pid, dropped_pid = read_pid(kept_pid_file), read_pid(dropped_pid_file)
    other = start_worker(
        "c",
        [sys.executable, "-c", "pass"],
        cwd=tmp_path / "c",
        log_path=tmp_path / "c" / "c.log",
        marker=worker_marker(tmp_path, 3, "c"),
    )
    try:
        assert other.wait(30)  # another attempt ends: the janitor runs
        processes.sweep()  # and the dispatcher's tick runs it again
        # A helper that still carries its live attempt's marker is left to that attempt...
        assert status(kept_pid) not in (None, psutil.STATUS_ZOMBIE)
        # ...one that dropped it cannot be told from a leftover, whatever its attempt.
        assert until(lambda: vanished(dropped_pid))
        assert not kept.is_done() and not dropped.is_done()

        kept.kill(grace=1)  # its attempt ends: now it goes
        assert until(lambda: vanished(kept_pid))
    finally:
        for handle in (kept, dropped, other):
            handle.kill(grace=0.5)
        kill_running(str(tmp_path))


@linux_only
def test_zombie_orphans_are_reaped(tmp_path: Path) -> None:
    handle, pid_file, _ = start_daemonizing_worker(
        tmp_path, "w1", marker="keep", behaviour="exit", go="hang"
    )
    pid = read_pid(pid_file)
    try:
        # Adopted by us and exited: a zombie only we can reap, while its attempt still runs.
        assert until(lambda: status(pid) == psutil.STATUS_ZOMBIE)
        assert psutil.Process(pid).ppid() == os.getpid()
        processes.sweep()
        assert vanished(pid)
    finally:
        handle.kill(grace=0.5)


# ---- our own children are never the janitor's --------------------------------------------


@linux_only
def test_the_janitor_never_touches_our_own_children(tmp_path: Path) -> None:
    """Long and short children of ours, one even in a session of its own, run through many
    janitor passes: none is killed, and each one's exit status reaches its own Popen."""
    go = tmp_path / "go"
    waiter = (
        "import os, sys, time\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
        "sys.exit(7)\n"
    )
    long_child = processes.spawn([sys.executable, "-c", waiter])
    own_session = processes.spawn([sys.executable, "-c", waiter], start_new_session=True)
    codes: list[int] = []
    stop = threading.Event()

    def short_runs() -> None:
        while not stop.is_set():
            # In a session of its own, like an orphan: only the registry tells them apart.
            done = processes.run(
                [sys.executable, "-c", "raise SystemExit(3)"], start_new_session=True
            )
            codes.append(done.returncode)

    # A child of ours that has exited and is not waited for yet: a zombie in a session of its
    # own, exactly like an adopted orphan. Only the registry says its status is not ours.
    exited = processes.spawn(
        [sys.executable, "-c", "raise SystemExit(5)"], start_new_session=True
    )
    assert until(lambda: status(exited.pid) == psutil.STATUS_ZOMBIE)
    runner = threading.Thread(target=short_runs)
    runner.start()
    handle, pid_file, go_file = start_daemonizing_worker(tmp_path, "w1", marker="drop")
    try:
        daemon = read_pid(pid_file)
        for _ in range(50):
            processes.sweep()
        go_file.write_text("go", encoding="utf-8")
        assert handle.wait(30)  # its end runs the janitor as well
        assert until(lambda: vanished(daemon))
        assert long_child.poll() is None and own_session.poll() is None
    finally:
        stop.set()
        runner.join(60)
        go.write_text("go", encoding="utf-8")
    assert long_child.wait(30) == 7 and own_session.wait(30) == 7 and exited.wait(30) == 5
    assert codes and set(codes) == {3}


def test_run_is_subprocess_run_and_a_timeout_kills_the_whole_tree(tmp_path: Path) -> None:
    done = processes.run(
        [sys.executable, "-c", "import sys; print('ünï'); sys.stderr.write('err')"],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "ünï\n", "err")
    echo = [sys.executable, "-c", "import sys; print(sys.stdin.read())"]
    assert processes.run(echo, input=b"in", capture_output=True).stdout.strip() == b"in"
    with pytest.raises(subprocess.CalledProcessError):
        processes.run([sys.executable, "-c", "raise SystemExit(2)"], check=True)

    pid_file = tmp_path / "grandchild.pid"
    parent = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}, {str(pid_file)!r}])\n"
        f"open({str(pid_file)!r}, 'w', encoding='utf-8').write(str(p.pid))\n"
        "while True: time.sleep(0.05)\n"
    )
    with pytest.raises(subprocess.TimeoutExpired):
        processes.run([sys.executable, "-c", parent], timeout=5, stdout=subprocess.DEVNULL)
    try:
        assert until(lambda: not running(str(pid_file)))
    finally:
        kill_running(str(tmp_path))


# ---- the test gate ------------------------------------------------------------------------


@linux_only
def test_a_gate_that_times_out_leaves_nothing(tmp_path: Path) -> None:
    daemon, worker = write_scripts(tmp_path)
    pid_file = tmp_path / "gate-daemon.pid"
    argv = [sys.executable, str(worker), str(daemon), str(pid_file), "drop", "stubborn", "hang"]
    result = run_test_command(
        argv, tmp_path, timeout=5, log_path=tmp_path / "gate.log", repo=tmp_path, kill_grace=0.5
    )
    try:
        assert result.timed_out and not result.passed, (result.summary, result.tail)
        assert result.exit_code is None and "killed the test command" in result.tail
        assert until(lambda: not running(str(pid_file)))
        assert marked_processes(repo_marker(tmp_path)) == []
        # A machine slow enough to reach the timeout before the daemon is up has no daemon
        # to find; the line above covers that case.
        if pid_file.exists():
            pid = read_pid(pid_file)
            assert until(lambda: vanished(pid))  # killed and reaped
    finally:
        kill_running(str(tmp_path))


def test_a_gate_and_its_children_are_killed_at_the_timeout(tmp_path: Path) -> None:
    """The same on every OS for a child that stays in the tree and keeps its marker."""
    pid_file = tmp_path / "child.pid"
    gate = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}, {str(pid_file)!r}])\n"
        f"open({str(pid_file)!r}, 'w', encoding='utf-8').write(str(p.pid))\n"
        "while True: time.sleep(0.05)\n"
    )
    result = run_test_command(
        [sys.executable, "-c", gate],
        tmp_path,
        timeout=5,
        log_path=tmp_path / "gate.log",
        repo=tmp_path,
        kill_grace=0.5,
    )
    try:
        assert result.timed_out, (result.summary, result.tail)
        assert until(lambda: not running(str(pid_file)))
        assert marked_processes(repo_marker(tmp_path)) == []
    finally:
        kill_running(str(tmp_path))


def test_a_passing_gate_is_marked_as_the_repositorys_and_its_output_is_logged(
    tmp_path: Path,
) -> None:
    show = f"import os; print('gate', os.environ[{MARKER_ENV!r}])"
    result = run_test_command(
        [sys.executable, "-c", show],
        tmp_path,
        timeout=60,
        log_path=tmp_path / "g.log",
        repo=tmp_path / "repo",
    )
    assert result.passed and result.exit_code == 0
    assert f"gate {repo_marker(tmp_path / 'repo')}/gate/" in result.tail


GATE_RUNNER = """
import sys
from pathlib import Path
from localdispatch.merge.test_command import run_test_command
repo, gate, log = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
run_test_command([sys.executable, gate], repo, timeout=600, log_path=log, repo=repo)
"""


def test_a_gate_left_by_a_killed_dispatcher_is_found_by_the_repositorys_sweep(
    tmp_path: Path,
) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    pid_file = tmp_path / "gate.pid"
    gate = tmp_path / "gate.py"
    gate.write_text(
        "import os, time\n"
        f"open({str(pid_file)!r}, 'w', encoding='utf-8').write(str(os.getpid()))\n"
        "while True: time.sleep(0.05)\n",
        encoding="utf-8",
    )
    dispatcher = subprocess.Popen(
        [sys.executable, "-c", GATE_RUNNER, str(repo), str(gate), str(tmp_path / "gate.log")]
    )
    try:
        pid = read_pid(pid_file)
    finally:
        psutil.Process(dispatcher.pid).kill()  # SIGKILL: no cleanup of any kind
        dispatcher.wait(30)
    try:
        assert status(pid) not in (None, psutil.STATUS_ZOMBIE)
        strays = marked_processes(repo_marker(repo))  # what recovery.kill_leftovers does
        assert [p.pid for p in strays] == [pid]
        kill_tree(None, grace=1, known=strays)
        assert until(lambda: status(pid) in (None, psutil.STATUS_ZOMBIE))
        processes.sweep()  # re-parented to this (subreaper) process on Linux: reaped
    finally:
        kill_running(str(tmp_path))


# ---- without adopted orphans (macOS, or Linux where prctl is refused) ----------------------


@posix_only
def test_without_adopted_orphans_the_marker_finds_a_detached_daemon(tmp_path: Path) -> None:
    registry = Registry(FallbackBackend())
    daemon, worker = write_scripts(tmp_path)
    pid_file = tmp_path / "d.pid"
    go = tmp_path / "go"
    popen = registry.spawn(
        [sys.executable, str(worker), str(daemon), str(pid_file), "keep", "sleep", str(go)],
        marker=worker_marker(tmp_path, 1, "t-1"),
    )
    pid = read_pid(pid_file)
    try:
        go.write_text("go", encoding="utf-8")
        assert popen.wait(30) == 0
        assert status(pid) not in (None, psutil.STATUS_ZOMBIE)
        assert pid in registry.release(popen)
        assert until(lambda: status(pid) in (None, psutil.STATUS_ZOMBIE))
        processes.sweep()
    finally:
        kill_running(str(tmp_path))


def test_the_windows_module_imports_everywhere_and_its_structure_has_windows_size() -> None:
    if ctypes.sizeof(ctypes.c_void_p) != 8:
        pytest.skip("the documented size is for 64-bit Windows")
    assert ctypes.sizeof(ExtendedLimits) == 144
