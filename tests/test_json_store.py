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
from localdispatch.store.validation import validate_document
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
        b'{"version": 1, "tasks": [{"id": "t-1", "title": "a"}, {"id": "t-1", "title": "b"}]}',
        b'{"version": 1, "tasks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b'{"version": 1, "next_id": 1' + b"0" * 5000 + b', "tasks": []}',
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
from localdispatch.store.validation import validate_document

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


# ---- bad input: one message naming the file, the task and the fix; the file untouched ------


def _doc(*tasks: object, version: int | None = 1) -> object:
    data: dict[str, object] = {"next_id": 9, "tasks": list(tasks)}
    if version is not None:
        data["version"] = version
    return data


@pytest.mark.parametrize(
    ("data", "where", "what", "fix"),
    [
        (
            _doc({"id": "t-1", "title": "A"}, {"id": "t-2", "title": "B"}, {"id": "t-1"}),
            "task #3 (id 't-1')",
            "has the same id as task #1",
            "Ids must be unique",
        ),
        (_doc({"id": 7, "title": "A"}), "task #1", "its id is the number 7", "short id"),
        (_doc({"id": None, "title": "A"}), "task #1", "its id is null, not a string", "id"),
        (_doc({"id": "", "title": "A"}), "task #1", "its id is empty", "short id"),
        (_doc({"id": "   ", "title": "A"}), "task #1", "its id is empty", "short id"),
        (_doc({"id": "t 1", "title": "A"}), "task #1", "holds whitespace (U+0020 SPACE)", "id"),
        (_doc({"id": "t-1\n", "title": "A"}), "task #1", "holds whitespace", "id"),
        (_doc({"id": "t-\u0007", "title": "A"}), "task #1", "holds a control character", "id"),
        (_doc({"id": "t-\u202e1", "title": "A"}), "task #1", "holds a control character", "id"),
        (_doc({"id": "t-" + "9" * 300}), "task #1", "is 302 characters long (at most 100)", "id"),
        (_doc({"id": "t-1"}, "do the thing"), "task #2", "is a string, not an object", "fix or"),
        (_doc({"id": "t-1"}, [1, 2]), "task #2", "is a list, not an object", "remove"),
        (_doc({"title": "Nameless"}), "task #1", "(title 'Nameless') has no \"id\"", "Give it"),
        (
            _doc({"id": "t-4", "title": "Resolve", "kind": "conflict"}),
            "task #1 (id 't-4')",
            'is a conflict task without a "branch"',
            '"kind": "task"',
        ),
        (
            _doc({"id": "t-4", "kind": "conflict", "branch": " "}),
            "task #1 (id 't-4')",
            'without a "branch"',
            "git branch",
        ),
        (
            _doc({"id": "t-1", "depends_on": {"t-0": True}}),
            "task #1 (id 't-1')",
            '"depends_on": {"t-0": true}, which is not a list of ids',
            '"depends_on": ["t-1", "t-2"]',
        ),
        (
            _doc({"id": "t-1", "depends_on": ["t-0", 3]}),
            "task #1 (id 't-1')",
            '"depends_on" holding 3, which is not an id',
            "as strings",
        ),
        (
            _doc({"id": "t-1", "parent": ["t-0"]}),
            "task #1 (id 't-1')",
            '"parent": ["t-0"], which is not an id',
            "or null",
        ),
        (
            _doc({"id": "t-1", "discovered_from": 4}),
            "task #1 (id 't-1')",
            '"discovered_from": 4',
            "or null",
        ),
        (
            _doc({"id": "t-1", "notes": json.loads("[" * 60 + "]" * 60)}),
            "task #1 (id 't-1')",
            "nested more than 50 levels deep",
            "remove the nested",
        ),
        ({"version": 1, "tasks": {"t-1": {}}}, "the file", '"tasks": an object, not a list', "[]"),
        ("tasks", "the file", "holds a string, not an object", '"version": 1'),
    ],
)
def test_validate_document_names_the_task_and_the_fix(
    data: object, where: str, what: str, fix: str
) -> None:
    problems = validate_document(data)
    assert problems, "expected a problem"
    first = problems[0]
    assert first.where == where
    assert what in first.what
    assert fix in first.fix


def test_validate_document_accepts_every_format_localdispatch_reads() -> None:
    assert validate_document(_doc()) == []
    assert validate_document(_doc({"id": "t-1", "title": "A", "depends_on": ["t-0"]})) == []
    # The original Path-B format: integer ids, comma-separated depends_on, a bare list.
    legacy = _doc({"id": 1, "title": "A", "depends_on": "2, 3"}, {"id": "task-2"}, version=None)
    assert validate_document(legacy) == []
    assert validate_document([{"id": "task-1", "title": "A"}]) == []
    conflict = {"id": "t-3", "kind": "conflict", "branch": "ld/t-1-a", "title": "Resolve"}
    assert validate_document(_doc(conflict)) == []
    ids = ["t-12", "bd-a1b2", "task_3", "Épique-1", "t-✓"]
    assert validate_document(_doc(*({"id": i} for i in ids))) == []
    assert validate_document(_doc({"id": "t-1", "notes": [[{"a": [1]}]]})) == []


def test_every_problem_is_listed_in_file_order() -> None:
    data = _doc({"id": "t-1"}, {"id": "t-1"}, {"id": ""}, {"id": "t-2", "kind": "conflict"})
    assert [p.where for p in validate_document(data)] == [
        "task #2 (id 't-1')",
        "task #3",
        "task #4 (id 't-2')",
    ]


def test_a_bad_document_stops_every_store_call_and_is_left_byte_for_byte(tmp_path: Path) -> None:
    path = tmp_path / "task_queue.json"
    content = (
        b'{"version": 1, "next_id": 3, "tasks": [\n'
        b' {"id": "t-1", "title": "First"},\n {"id": "t-2", "title": "Second"},\n'
        b' {"id": "t-1", "title": "Copy of first"},\n {"id": ""}\n]}\n'
    )
    path.write_bytes(content)
    store = JsonStore(path)
    calls = [
        store.all,
        lambda: store.get("t-1"),
        lambda: store.add(TaskDraft(title="lost")),
        lambda: store.claim("t-1"),
        lambda: store.close("t-2"),
        lambda: store.update("t-2", priority=1),
    ]
    for call in calls:
        with pytest.raises(StoreError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(f"The task store {path} is corrupt: task #3 (id 't-1') ")
        assert "same id as task #1 (and 1 more problem)" in message
        assert "give one of the two a new id" in message and "left untouched" in message
        assert caught.value.task_id == "t-1" and caught.value.path == path
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["task_queue.json", "task_queue.json.lock"]
