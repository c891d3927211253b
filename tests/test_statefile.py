"""statefile: the one lock helper and the one JSON document type, against real processes."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil
import pytest

from localdispatch.errors import LockBusy, StoreError
from localdispatch.statefile import JsonDocument, StateLock
from localdispatch.suggestions.regular_file import SuggestionsError

HOLDER = (
    "import sys, time\nfrom filelock import FileLock\n"
    "lock = FileLock(sys.argv[1])\nlock.acquire()\nprint('locked', flush=True)\ntime.sleep(60)\n"
)

EDITOR = r"""
import sys
from pathlib import Path
from localdispatch.statefile import JsonDocument

doc = JsonDocument(Path(sys.argv[1]), Path(sys.argv[2]), version=1, kind="the counter")
for _ in range(int(sys.argv[3])):
    with doc.edit() as data:
        data["count"] = data.get("count", 0) + 1
        data.setdefault("writers", []).append(sys.argv[4])
"""


@contextmanager
def held_elsewhere(lock_path: Path) -> Iterator[None]:
    """A real second process holds ``lock_path`` for the block, then is killed (as a crashed
    holder would be: the operating system releases its lock)."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(lock_path)],
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        yield
    finally:
        psutil.Process(holder.pid).kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()


def document(tmp_path: Path, **kwargs: object) -> JsonDocument:
    return JsonDocument(
        tmp_path / "state" / "thing.json",
        tmp_path / "locks" / "thing.lock",
        version=1,
        kind="the thing file",
        **kwargs,  # type: ignore[arg-type]
    )


# ---- the lock ------------------------------------------------------------------------------


def test_a_lock_held_by_another_process_is_lock_busy_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "thing.lock"
    lock = StateLock(path, what="the thing file /x/thing.json", timeout=0.2)
    with held_elsewhere(path), pytest.raises(LockBusy) as caught, lock.hold():
        pytest.fail("the lock was held by another process")
    message = str(caught.value)
    assert "the thing file /x/thing.json" in message and str(path) in message
    assert "Timed out after 0.2 s" in message
    assert caught.value.path == path
    with lock.hold():  # its holder died: the operating system released the lock
        pass


def test_attempt_says_whether_the_lock_was_free(tmp_path: Path) -> None:
    path = tmp_path / "locks" / "probe.lock"
    lock = StateLock(path, what="the probe")
    with held_elsewhere(path), lock.attempt() as held:
        assert held is False
    with lock.attempt() as held:
        assert held is True
        # Held by this process now: another StateLock on the same file finds it busy.
        with StateLock(path, what="the probe").attempt() as other:
            assert other is False
    with StateLock(path, what="the probe").attempt() as again:
        assert again is True  # released when the block ended


def test_a_hold_nested_in_one_thread_is_refused_not_let_in(tmp_path: Path) -> None:
    # Let in, the inner read-modify-write would be overwritten by the outer one.
    lock = StateLock(tmp_path / "nested.lock", what="the nest", timeout=0.1)
    with lock.hold():
        with lock.attempt() as held:
            assert held is False
        with pytest.raises(LockBusy, match="the nest"), lock.hold():
            pytest.fail("a nested hold was let in")


# ---- the JSON document ---------------------------------------------------------------------


def test_round_trip_with_its_version(tmp_path: Path) -> None:
    doc = document(tmp_path)
    assert doc.read() == {}  # no file yet
    doc.write({"items": ["ä", 2], "version": 99})  # the document's own version wins
    text = doc.path.read_text(encoding="utf-8")
    assert text.startswith('{\n "version": 1,') and text.endswith("}\n") and "ä" in text
    assert doc.read() == {"version": 1, "items": ["ä", 2]}
    with doc.edit() as data:
        data["more"] = True
    assert doc.read() == {"version": 1, "items": ["ä", 2], "more": True}
    assert [p.name for p in doc.path.parent.iterdir()] == ["thing.json"]  # no temporary left


def test_a_file_without_a_version_is_the_oldest_format(tmp_path: Path) -> None:
    doc = document(tmp_path)
    doc.path.parent.mkdir(parents=True)
    doc.path.write_text('{"items": []}', encoding="utf-8")
    assert doc.read() == {"items": []}
    with doc.edit() as data:
        data["items"].append(1)
    assert json.loads(doc.path.read_text(encoding="utf-8")) == {"version": 1, "items": [1]}


@pytest.mark.parametrize(
    ("content", "what"),
    [
        (b'{"items": [1,\n  2,, 3]}', "invalid JSON at line 2, column 5"),
        (b"[1, 2]", "it holds a list, not an object"),
        (b"\xff\xfe{}", "not UTF-8 text (byte 0)"),
        (b"[" * 100_000 + b"]" * 100_000, "nested thousands of levels deep"),
        (b'{"version": "one"}', '"version" is "one", not a number'),
        (b'{"version": 0}', '"version" is 0'),
    ],
    ids=["syntax", "list", "bytes", "nesting", "version text", "version 0"],
)
def test_a_corrupt_file_is_named_and_never_overwritten(
    tmp_path: Path, content: bytes, what: str
) -> None:
    doc = document(tmp_path, advice="It lists the things; deleting it forgets them.")
    doc.path.parent.mkdir(parents=True)
    doc.path.write_bytes(content)
    def edit() -> None:
        with doc.edit():
            pytest.fail("a corrupt file was handed out for editing")

    for call in (doc.read, edit):
        with pytest.raises(StoreError) as caught:
            call()
        message = str(caught.value)
        assert message.startswith(f"The thing file {doc.path} is corrupt: ") and what in message
        assert "deleting it forgets them" in message
        assert "left untouched; localdispatch will not overwrite it" in message
        assert caught.value.path == doc.path
    assert doc.path.read_bytes() == content


def test_a_newer_version_is_refused_and_left_alone(tmp_path: Path) -> None:
    doc = document(tmp_path)
    doc.path.parent.mkdir(parents=True)
    content = b'{"version": 2, "items": [], "new_in_2": {}}'
    doc.path.write_bytes(content)
    newer = "written by a newer localdispatch"
    with pytest.raises(StoreError, match=newer) as caught, doc.edit() as data:
        data["items"] = ["would lose new_in_2"]
    assert "format version 2; this one reads up to 1" in str(caught.value)
    assert doc.path.read_bytes() == content


def test_blank_files(tmp_path: Path) -> None:
    doc = document(tmp_path)
    doc.path.parent.mkdir(parents=True)
    doc.path.write_bytes(b" \n")
    assert doc.read() == {}
    strict = document(tmp_path, blank_is_empty=False, error=SuggestionsError)
    with pytest.raises(SuggestionsError, match="is corrupt: it is empty"):
        strict.read()


def test_a_document_without_a_lock_is_written_by_its_lock_holder(tmp_path: Path) -> None:
    doc = JsonDocument(tmp_path / "state.json", version=1, kind="the state")
    doc.write({"runs": []})
    with pytest.raises(TypeError, match="no lock of its own"), doc.edit():
        pass
    assert doc.read() == {"version": 1, "runs": []}


def test_edits_from_two_processes_lose_no_update(tmp_path: Path) -> None:
    doc = document(tmp_path)
    assert doc.lock is not None
    rounds = 40
    argv = [sys.executable, "-c", EDITOR, str(doc.path), str(doc.lock.path), str(rounds)]
    procs = [subprocess.Popen([*argv, name]) for name in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    data = doc.read()
    assert data["count"] == 2 * rounds
    assert sorted(data["writers"]) == ["a"] * rounds + ["b"] * rounds
