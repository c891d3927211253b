"""The JSON backend: the contract suite, plus what only a file can get wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import localdispatch
from localdispatch.errors import StoreError
from localdispatch.store import JsonStore, TaskDraft
from store_contract import StoreContract


class TestJsonStoreContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path: Path) -> JsonStore:
        return JsonStore(tmp_path / "task_queue.json")


def test_file_format_and_lock_location(tmp_path: Path) -> None:
    path = tmp_path / "task_queue.json"
    lock = tmp_path / ".dispatch" / "locks" / "q.lock"
    store = JsonStore(path, lock_path=lock)
    store.add(TaskDraft(title="Hello ✓"))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 1 and data["next_id"] == 2
    assert data["tasks"][0]["id"] == "t-1" and data["tasks"][0]["title"] == "Hello ✓"
    assert lock.exists()
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"] == []


def test_two_store_objects_see_each_others_writes(tmp_path: Path) -> None:
    path = tmp_path / "task_queue.json"
    first, second = JsonStore(path), JsonStore(path)
    first.add(TaskDraft(title="A"))
    assert [t.title for t in second.all()] == ["A"]
    second.add(TaskDraft(title="B"))
    assert [t.title for t in first.all()] == ["A", "B"]


def test_legacy_format_is_read_and_upgraded(tmp_path: Path) -> None:
    path = tmp_path / "task_queue.json"
    legacy = {
        "tasks": [
            {"id": "task-1", "title": "Add cycle time chart", "status": "pending"},
            {"id": "task-2", "title": "Add WIP chart", "status": "done"},
            {"id": "task-3", "title": "Tooltips", "status": "in_progress"},
        ],
        "next_id": 4,
    }
    path.write_text(json.dumps(legacy), encoding="utf-8")
    store = JsonStore(path)
    tasks = store.all()
    assert [t.status for t in tasks] == ["open", "done", "in_progress"]
    assert path.read_text(encoding="utf-8") == json.dumps(legacy)  # reading changes nothing
    new = store.add(TaskDraft(title="New"))
    assert new.id == "t-4"
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == 1
    assert [t["id"] for t in data["tasks"]] == ["task-1", "task-2", "task-3", "t-4"]
    backup = path.with_name("task_queue.json.pre-upgrade.bak")
    assert json.loads(backup.read_text(encoding="utf-8")) == legacy


def test_next_id_never_reuses_an_id(tmp_path: Path) -> None:
    path = tmp_path / "task_queue.json"
    path.write_text(
        json.dumps({"version": 1, "next_id": 2, "tasks": [{"id": "t-7", "title": "x"}]}),
        encoding="utf-8",
    )
    assert JsonStore(path).add(TaskDraft(title="y")).id == "t-8"


@pytest.mark.parametrize(
    "content",
    [
        b'{"version": 1, "tasks": [',
        b"\xff\xfe garbage",
        b'{"version": 1, "tasks": [{"title": "no id"}]}',
        b'{"version": 1, "tasks": "nope"}',
        b'"just a string"',
        b'{"version": 1, "tasks": [{"id": "t-1", "title": "x", "status": "weird"}]}',
    ],
)
def test_corrupt_store_is_an_error_and_never_overwritten(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "task_queue.json"
    path.write_bytes(content)
    store = JsonStore(path)
    with pytest.raises(StoreError, match="corrupt") as caught:
        store.add(TaskDraft(title="would be lost"))
    assert str(path) in str(caught.value)
    with pytest.raises(StoreError):
        store.all()
    assert path.read_bytes() == content


def test_empty_file_is_an_empty_store(tmp_path: Path) -> None:
    path = tmp_path / "task_queue.json"
    path.write_bytes(b"  \n")
    assert JsonStore(path).all() == []


def test_bom_and_crlf_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "task_queue.json"
    text = '{\r\n "version": 1,\r\n "next_id": 2,\r\n "tasks": [{"id": "t-1", "title": "x"}]\r\n}'
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert [t.id for t in JsonStore(path).all()] == ["t-1"]


def test_unknown_fields_survive_a_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "task_queue.json"
    path.write_text(
        json.dumps(
            {"version": 1, "next_id": 2, "tasks": [{"id": "t-1", "title": "x", "owner": "ana"}]}
        ),
        encoding="utf-8",
    )
    store = JsonStore(path)
    store.update("t-1", priority=1)
    assert json.loads(path.read_text(encoding="utf-8"))["tasks"][0]["owner"] == "ana"


CRASH_WRITER = r"""
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from localdispatch.store import json_store, JsonStore, TaskDraft

def crash(src, dst):
    os._exit(9)  # power cut between writing the temporary file and moving it into place

json_store.Path.replace = crash
JsonStore(Path(sys.argv[1])).add(TaskDraft(title="never stored"))
"""


def test_crash_before_replace_leaves_old_file(tmp_path: Path) -> None:
    path = tmp_path / "task_queue.json"
    store = JsonStore(path)
    store.add(TaskDraft(title="kept"))
    before = path.read_bytes()
    src = str(Path(__file__).resolve().parent.parent / "src")
    result = subprocess.run(
        [sys.executable, "-c", CRASH_WRITER, str(path), src], check=False, timeout=60
    )
    assert result.returncode == 9
    assert path.read_bytes() == before
    assert [t.title for t in JsonStore(path).all()] == ["kept"]


ADDER = r"""
import sys
from pathlib import Path
sys.path.insert(0, sys.argv[3])
from localdispatch.store import JsonStore, TaskDraft

store = JsonStore(Path(sys.argv[1]))
for i in range(25):
    store.add(TaskDraft(title=f"worker {sys.argv[2]} task {i}"))
"""


def test_concurrent_processes_lose_no_write(tmp_path: Path) -> None:
    """8 real processes adding 25 tasks each at once end with 200 tasks and 200 ids."""
    path = tmp_path / "task_queue.json"
    src = str(Path(__file__).resolve().parent.parent / "src")
    procs = [
        subprocess.Popen([sys.executable, "-c", ADDER, str(path), str(n), src]) for n in range(8)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 8
    tasks = JsonStore(path).all()
    assert len(tasks) == 200
    assert len({t.id for t in tasks}) == 200
    assert len({t.title for t in tasks}) == 200


def test_concurrent_cli_closes_and_adds(repo: Path) -> None:
    """Updates and adds from separate CLI processes interleave without losing either."""
    for i in range(6):
        assert localdispatch("tasks", "add", f"Task {i}", cwd=repo).returncode == 0
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "localdispatch", "tasks", "close", f"t-{i + 1}"], cwd=repo
        )
        for i in range(6)
    ] + [
        subprocess.Popen(
            [sys.executable, "-m", "localdispatch", "tasks", "add", f"Late {i}"], cwd=repo
        )
        for i in range(4)
    ]
    assert [p.wait(timeout=120) for p in procs] == [0] * 10
    tasks = JsonStore(repo / "task_queue.json").all()
    assert len(tasks) == 10
    assert sum(t.status == "done" for t in tasks) == 6
