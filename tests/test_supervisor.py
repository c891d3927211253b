"""Real processes under supervision: start, exit callback, logs, process trees, kills."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import psutil

from localdispatch.processes.supervisor import repo_marker, start_worker, tree_stats, worker_marker
from localdispatch.processes.trees import MARKER_ENV, ProcessKey, find_process, marked_processes

SLEEPER = "import time\nwhile True: time.sleep(0.05)\n"


def gone(pid: int, created: float) -> bool:
    return find_process(ProcessKey(pid, created)) is None


def wait_for_file(path: Path, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(encoding="utf-8").strip():
            return path.read_text(encoding="utf-8")
        time.sleep(0.02)
    raise AssertionError(f"{path} never appeared")


def test_exit_is_reported_at_once_with_output_in_the_log(tmp_path: Path) -> None:
    exited = threading.Event()
    code = (
        "import os, sys\n"
        "print('ünïcode', os.environ['PYTHONIOENCODING'], os.environ['" + MARKER_ENV + "'])\n"
        "print('stdin:', repr(sys.stdin.read()))\n"
        "sys.stderr.write('to stderr\\n')\n"
        "sys.exit(3)\n"
    )
    log = tmp_path / "logs" / "w 1.log"
    handle = start_worker(
        "w1",
        [sys.executable, "-c", code],
        cwd=tmp_path,
        log_path=log,
        marker="ld-test/1/t-1/abc",
        on_exit=lambda _h: exited.set(),
    )
    assert exited.wait(30)
    assert handle.is_done() and handle.returncode == 3 and handle.exited_at is not None
    text = log.read_text(encoding="utf-8")
    assert "ünïcode utf-8 ld-test/1/t-1/abc" in text
    assert "stdin: ''" in text and "to stderr" in text


def test_a_missing_program_is_a_worker_error(tmp_path: Path) -> None:
    import pytest

    from localdispatch.errors import WorkerError

    with pytest.raises(WorkerError, match="cannot start"):
        start_worker(
            "w1",
            [str(tmp_path / "no such program")],
            cwd=tmp_path,
            log_path=tmp_path / "x.log",
            marker="m",
        )


def test_kill_takes_the_grandchild_too(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    code = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}])\n"
        f"open({str(pid_file)!r}, 'w', encoding='utf-8').write(str(p.pid))\n"
        "while True: time.sleep(0.05)\n"
    )
    handle = start_worker(
        "w1",
        [sys.executable, "-c", code],
        cwd=tmp_path,
        log_path=tmp_path / "w.log",
        marker="ld-test/1/t-2/x",
    )
    child = psutil.Process(int(wait_for_file(pid_file)))
    child_key = ProcessKey.of(child)
    pids = handle.kill(grace=2)
    assert handle.is_done() and handle.killed
    assert handle.pid in pids and child.pid in pids
    assert gone(*vars(handle.key).values()) and gone(child_key.pid, child_key.create_time)


def test_an_orphaned_grandchild_is_gone_when_its_attempt_ends(tmp_path: Path) -> None:
    """The middle process exits: the grandchild is in nobody's tree any more, but it carries
    the marker (and is held by the platform), so the end of the attempt takes it."""
    pid_file = tmp_path / "orphan.pid"
    go = tmp_path / "go"
    spawner = (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}])\n"
        f"open({str(pid_file)!r}, 'w', encoding='utf-8').write(str(p.pid))\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
    )
    marker = worker_marker(tmp_path, 1, "t-3")
    handle = start_worker(
        "w1",
        [sys.executable, "-c", spawner],
        cwd=tmp_path,
        log_path=tmp_path / "w.log",
        marker=marker,
    )
    orphan = psutil.Process(int(wait_for_file(pid_file)))
    key = ProcessKey.of(orphan)
    try:
        assert orphan.pid in [p.pid for p in marked_processes(repo_marker(tmp_path))]
        go.write_text("go", encoding="utf-8")
        assert handle.wait(30)
        assert gone(key.pid, key.create_time)
    finally:
        if not gone(key.pid, key.create_time):
            orphan.kill()


def test_a_normal_exit_takes_known_leftovers_with_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "left.pid"
    go = tmp_path / "go"
    code = (
        "import os, subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, '-c', {SLEEPER!r}])\n"
        f"open({str(pid_file)!r}, 'w', encoding='utf-8').write(str(p.pid))\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.02)\n"
    )
    handle = start_worker(
        "w1",
        [sys.executable, "-c", code],
        cwd=tmp_path,
        log_path=tmp_path / "w.log",
        marker="ld-test/1/t-4/x",
    )
    child = psutil.Process(int(wait_for_file(pid_file)))
    key = ProcessKey.of(child)
    handle.observe()
    assert key in {ProcessKey.of(p) for p in handle.known_descendants()}
    go.write_text("go", encoding="utf-8")
    assert handle.wait(30)
    assert gone(key.pid, key.create_time)


def test_a_reused_pid_is_never_taken_for_ours() -> None:
    me = psutil.Process()
    assert find_process(ProcessKey.of(me)) is not None
    assert find_process(ProcessKey(me.pid, me.create_time() - 100)) is None
    assert find_process(ProcessKey(2**22 + 12345, 1.0)) is None


def test_tree_stats_of_a_running_worker(tmp_path: Path) -> None:
    handle = start_worker(
        "w1",
        [sys.executable, "-c", SLEEPER],
        cwd=tmp_path,
        log_path=tmp_path / "w.log",
        marker="ld-test/1/t-5/x",
    )
    try:
        stats = tree_stats(handle.key, sample_secs=0.05)
        assert stats.processes == 1 and stats.rss_bytes > 0 and stats.cpu_percent >= 0
        assert handle.stats().processes == 1
    finally:
        handle.kill(grace=1)
    assert tree_stats(handle.key).processes == 0


def test_markers_name_the_repository(tmp_path: Path) -> None:
    one = worker_marker(tmp_path / "a", 1, "t-1")
    assert one.startswith(repo_marker(tmp_path / "a") + "/1/t-1/")
    assert not one.startswith(repo_marker(tmp_path / "b"))
