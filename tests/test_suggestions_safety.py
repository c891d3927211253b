"""Suggestions are data, never a door: real symlinks, FIFOs, devices, folders and huge files in
place of a worker's suggested_tasks.txt and of the main one (issue 11, item 5).

Each test checks three things: nothing the file points at becomes a task (or lands in the
store), nothing blocks (every test has a short per-test timeout, and the CLI a process
timeout), and nothing is lost (what the link points to, and a refused main file, are still
there, unchanged).
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from conftest import git, run_script
from localdispatch.config import Config, load_config
from localdispatch.layout import Layout, layout_for
from localdispatch.store import TaskStore, open_store
from localdispatch.suggestions import (
    MAIN_FILE_CAP,
    WORKER_FILE_CAP,
    Harvest,
    SuggestionsError,
    TooLarge,
    UnsafeFile,
    harvest_worktree_suggestions,
    ingest,
    suggestions_grew,
)
from localdispatch.suggestions.feed import SuggestionFeed

SECRET = "aws_secret_access_key = SECRET-7f3a9c"
SECRET_TEXT = f"[default]\naws_access_key_id = AKIA-TEST\n{SECRET}\n"
DEV_ZERO = Path("/dev/zero")

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
needs_dev_zero = pytest.mark.skipif(not DEV_ZERO.exists(), reason="no /dev/zero on this OS")
# Every test here must end promptly: a FIFO that blocked a read would otherwise hang the suite.
pytestmark = pytest.mark.timeout(60)


# ---- helpers ------------------------------------------------------------------------------


def setup(repo: Path) -> tuple[Config, Layout, TaskStore]:
    config = load_config(cwd=repo)
    layout = layout_for(config)
    return config, layout, open_store(config, layout)


def use_suggestions_file(repo: Path, name: str) -> None:
    (repo / "dispatch_config.json").write_text(
        json.dumps({"suggested_tasks_file": name}), encoding="utf-8"
    )


def secret_file(tmp_path: Path) -> Path:
    """A credentials file outside the repository, as a worker could point a link at."""
    path = tmp_path / "home" / ".aws" / "credentials"
    path.parent.mkdir(parents=True)
    path.write_text(SECRET_TEXT, encoding="utf-8")
    return path


def symlink(link: Path, target: Path, *, folder: bool = False) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    try:
        link.symlink_to(target, target_is_directory=folder)
    except OSError as exc:  # Windows without the right to make symlinks
        pytest.skip(f"cannot make a symlink here: {exc}")


def worktree(repo: Path, name: str) -> Path:
    path = repo.parent / name
    git(repo, "worktree", "add", "-q", "-b", name, str(path))
    return path


def no_secret_anywhere(repo: Path) -> None:
    """The secret is in no file of the repository's state: store, main file, inbox, logs."""
    for path in [repo / "task_queue.json", *repo.glob("*.txt"), *(repo / ".dispatch").rglob("*")]:
        if path.is_file() and not path.is_symlink():
            assert "SECRET-7f3a9c" not in path.read_text(encoding="utf-8", errors="replace"), path


def ingest_script(repo: Path, *args: str, cwd: Path | None = None) -> tuple[int, str, str]:
    result = run_script("ingest_suggested_tasks.py", *args, cwd=cwd or repo, timeout=30)
    assert "Traceback" not in result.stderr, result.stderr
    return result.returncode, result.stdout, result.stderr


def task_titles(repo: Path) -> list[str]:
    path = repo / "task_queue.json"
    if not path.exists():
        return []
    return [task["title"] for task in json.loads(path.read_text(encoding="utf-8"))["tasks"]]


# ---- a worker's file ----------------------------------------------------------------------


def test_harvest_still_moves_a_regular_file_up_to_the_cap(repo: Path) -> None:
    _, layout, _ = setup(repo)
    tree = worktree(repo, "w-normal")
    line = b"Idea number %06d, a follow-up worth doing\n"
    count = WORKER_FILE_CAP // len(line % 0)
    data = b"".join(line % i for i in range(count))
    data += b"#" * (WORKER_FILE_CAP - len(data) - 1) + b"\n"  # exactly the cap
    assert len(data) == WORKER_FILE_CAP
    (tree / "suggested_tasks.txt").write_bytes(data)
    result = harvest_worktree_suggestions(tree, layout, "t-1")
    assert result == Harvest(moved=count)
    assert not (tree / "suggested_tasks.txt").exists()
    moved = layout.suggested_tasks.read_bytes().splitlines()
    assert moved[0] == b"Idea number 000000, a follow-up worth doing [from: t-1]"
    assert len(moved) == count


def test_a_symlink_to_a_file_outside_is_refused_removed_and_never_read(
    tmp_path: Path, repo: Path
) -> None:
    config, layout, store = setup(repo)
    secret = secret_file(tmp_path)
    tree = worktree(repo, "w-link")
    symlink(tree / "suggested_tasks.txt", secret)
    layout.suggested_tasks.write_text("A person's idea\n", encoding="utf-8")

    result = harvest_worktree_suggestions(tree, layout, "t-3")

    assert result.moved == 0 and result.refused is not None
    assert result.refused.startswith("t-3: its suggested_tasks.txt is a symlink (to ")
    assert str(secret) in result.refused and "none were taken" in result.refused
    assert not os.path.lexists(tree / "suggested_tasks.txt")  # the link itself is gone
    assert secret.read_text(encoding="utf-8") == SECRET_TEXT  # its target is untouched
    assert layout.suggested_tasks.read_text(encoding="utf-8") == "A person's idea\n"
    ingest(config, layout, store)
    assert [t.title for t in store.all()] == ["A person's idea"]
    no_secret_anywhere(repo)


def test_a_symlinked_folder_on_the_way_is_refused_and_only_the_link_removed(
    tmp_path: Path, repo: Path
) -> None:
    use_suggestions_file(repo, "ideas/s.txt")
    config, layout, store = setup(repo)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "s.txt").write_text(SECRET_TEXT, encoding="utf-8")
    tree = worktree(repo, "w-folder-link")
    symlink(tree / "ideas", outside, folder=True)

    result = harvest_worktree_suggestions(tree, layout, "t-4")

    assert result.moved == 0 and result.refused is not None
    assert "its ideas/s.txt lies under ideas, which is a symlink (to " in result.refused
    assert "ideas was removed from its tree" in result.refused
    assert not os.path.lexists(tree / "ideas")
    assert (outside / "s.txt").read_text(encoding="utf-8") == SECRET_TEXT  # never deleted
    assert not layout.suggested_tasks.exists()
    ingest(config, layout, store)
    assert store.all() == []
    no_secret_anywhere(repo)


@needs_fifo
@pytest.mark.timeout(20)
def test_a_fifo_is_refused_without_blocking(repo: Path) -> None:
    _, layout, _ = setup(repo)
    tree = worktree(repo, "w-fifo")
    os.mkfifo(tree / "suggested_tasks.txt")  # nobody will ever write to it
    result = harvest_worktree_suggestions(tree, layout, "t-5")
    assert result.refused is not None and result.moved == 0
    assert "is a FIFO (named pipe)" in result.refused
    assert not os.path.lexists(tree / "suggested_tasks.txt")


@needs_dev_zero
@pytest.mark.timeout(20)
def test_a_symlink_to_dev_zero_is_refused_without_reading(repo: Path) -> None:
    _, layout, _ = setup(repo)
    tree = worktree(repo, "w-zero")
    symlink(tree / "suggested_tasks.txt", DEV_ZERO)
    result = harvest_worktree_suggestions(tree, layout, "t-6")
    assert result.refused is not None and "symlink (to /dev/zero)" in result.refused
    assert not os.path.lexists(tree / "suggested_tasks.txt")
    assert DEV_ZERO.exists() and not layout.suggested_tasks.exists()


def test_an_oversize_file_is_refused_with_its_size_and_the_cap(repo: Path) -> None:
    _, layout, _ = setup(repo)
    layout.suggested_tasks.write_text("Kept\n", encoding="utf-8")
    tree = worktree(repo, "w-big")
    (tree / "suggested_tasks.txt").write_bytes(b"Another idea\n" * (WORKER_FILE_CAP // 13 + 1))
    size = (tree / "suggested_tasks.txt").stat().st_size
    result = harvest_worktree_suggestions(tree, layout, "t-7")
    assert result.refused is not None and result.moved == 0
    assert f"is {size:,} bytes, over the 1 MiB cap" in result.refused
    assert not (tree / "suggested_tasks.txt").exists()
    assert layout.suggested_tasks.read_text(encoding="utf-8") == "Kept\n"


def test_a_folder_named_like_the_file_is_refused(repo: Path) -> None:
    _, layout, _ = setup(repo)
    tree = worktree(repo, "w-dir")
    (tree / "suggested_tasks.txt").mkdir()
    (tree / "suggested_tasks.txt" / "inside.txt").write_text("Not a task\n", encoding="utf-8")
    result = harvest_worktree_suggestions(tree, layout, "t-8")
    assert result.refused is not None and "is a folder" in result.refused
    assert not os.path.lexists(tree / "suggested_tasks.txt")
    assert not layout.suggested_tasks.exists()


def test_the_feed_hands_the_dispatcher_a_note_only_when_something_was_refused(
    tmp_path: Path, repo: Path
) -> None:
    config, layout, store = setup(repo)
    feed = SuggestionFeed(config, layout, store)
    tree = worktree(repo, "w-feed")
    (tree / "suggested_tasks.txt").write_text("Fine idea\n", encoding="utf-8")
    assert feed.harvest(tree, "t-1") is None
    symlink(tree / "suggested_tasks.txt", secret_file(tmp_path))
    note = feed.harvest(tree, "t-2")
    assert note is not None and note.startswith("t-2: its suggested_tasks.txt is a symlink")
    assert feed.harvest(tree, "t-2") is None  # removed: nothing left to refuse


def test_a_main_file_that_is_a_link_is_never_written_through(tmp_path: Path, repo: Path) -> None:
    config, layout, store = setup(repo)
    secret = secret_file(tmp_path)
    symlink(layout.suggested_tasks, secret)
    tree = worktree(repo, "w-into-link")
    (tree / "suggested_tasks.txt").write_text("Worker idea\n", encoding="utf-8")
    with pytest.raises(SuggestionsError, match="were not moved"):
        harvest_worktree_suggestions(tree, layout, "t-1")
    assert secret.read_text(encoding="utf-8") == SECRET_TEXT
    assert (tree / "suggested_tasks.txt").read_text(encoding="utf-8") == "Worker idea\n"
    note = SuggestionFeed(config, layout, store).harvest(tree, "t-1")
    assert note is not None and note.startswith("t-1: its suggestions were not moved")


# ---- the main file, through the real CLI ----------------------------------------------------


def test_the_cli_still_ingests_a_regular_file_with_crlf_and_bom(repo: Path) -> None:
    (repo / "suggested_tasks.txt").write_bytes(b"\xef\xbb\xbfFirst idea\r\nSecond idea\r\n")
    code, out, err = ingest_script(repo)
    assert code == 0, err
    assert "Added 2 tasks:" in out
    assert task_titles(repo) == ["First idea", "Second idea"]


def test_the_cli_refuses_a_main_file_that_is_a_symlink(tmp_path: Path, repo: Path) -> None:
    secret = secret_file(tmp_path)
    link = repo / "suggested_tasks.txt"
    symlink(link, secret)
    for args in ((), ("--dry-run",)):
        code, _, err = ingest_script(repo, *args)
        assert code == 1
        assert str(link) in err and f"is a symlink (to {secret})" in err
        assert "Replace it with a regular file" in err
    assert link.is_symlink() and link.readlink() == secret  # left exactly as it was
    assert secret.read_text(encoding="utf-8") == SECRET_TEXT
    assert task_titles(repo) == []
    inbox = repo / ".dispatch" / "suggestions"
    assert not [p for p in inbox.glob("*") if p.is_symlink()]  # never renamed into the inbox
    no_secret_anywhere(repo)


def test_the_cli_refuses_a_main_file_under_a_symlinked_folder(
    tmp_path: Path, repo: Path
) -> None:
    use_suggestions_file(repo, "ideas/next.txt")
    outside = tmp_path / "shared"
    outside.mkdir()
    (outside / "next.txt").write_text(SECRET_TEXT, encoding="utf-8")
    symlink(repo / "ideas", outside, folder=True)
    code, _, err = ingest_script(repo)
    assert code == 1
    assert "lies under" in err and "ideas, which is a symlink" in err
    assert (outside / "next.txt").read_text(encoding="utf-8") == SECRET_TEXT
    assert (repo / "ideas").is_symlink()
    no_secret_anywhere(repo)


@needs_fifo
@pytest.mark.timeout(40)
def test_the_cli_refuses_a_fifo_at_once_and_leaves_it(repo: Path) -> None:
    fifo = repo / "suggested_tasks.txt"
    os.mkfifo(fifo)
    for args in ((), ("--dry-run",)):
        code, _, err = ingest_script(repo, *args)
        assert code == 1 and "is a FIFO (named pipe)" in err and str(fifo) in err
    elsewhere = repo / "notes.fifo"
    os.mkfifo(elsewhere)
    code, _, err = ingest_script(repo, "--file", "notes.fifo")
    assert code == 1 and "is a FIFO (named pipe)" in err
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and stat.S_ISFIFO(elsewhere.lstat().st_mode)


@needs_dev_zero
@pytest.mark.timeout(40)
def test_the_cli_refuses_a_link_to_dev_zero_without_reading_it(repo: Path) -> None:
    link = repo / "suggested_tasks.txt"
    symlink(link, DEV_ZERO)
    code, _, err = ingest_script(repo)
    assert code == 1 and "is a symlink (to /dev/zero)" in err
    assert link.is_symlink()


def test_the_cli_refuses_an_oversize_main_file_and_leaves_it(repo: Path) -> None:
    big = repo / "suggested_tasks.txt"
    data = b"Idea\n" * (MAIN_FILE_CAP // 5 + 1)
    big.write_bytes(data)
    code, _, err = ingest_script(repo)
    assert code == 1
    assert f"is {len(data):,} bytes, more than the 16 MiB" in err and str(big) in err
    assert big.stat().st_size == len(data) and big.read_bytes() == data
    assert task_titles(repo) == []


def test_the_cli_refuses_a_folder_and_leaves_what_is_in_it(repo: Path) -> None:
    folder = repo / "suggested_tasks.txt"
    folder.mkdir()
    (folder / "inside.txt").write_text("Kept\n", encoding="utf-8")
    code, _, err = ingest_script(repo)
    assert code == 1 and "is a folder, not a file" in err
    assert (folder / "inside.txt").read_text(encoding="utf-8") == "Kept\n"


# ---- the main file, in process ------------------------------------------------------------


def test_file_option_pointing_at_a_link_is_refused(tmp_path: Path, repo: Path) -> None:
    config, layout, store = setup(repo)
    secret = secret_file(tmp_path)
    symlink(repo / "notes.txt", secret)
    with pytest.raises(UnsafeFile, match="is a symlink"):
        ingest(config, layout, store, file=Path("notes.txt"))
    assert (repo / "notes.txt").is_symlink() and store.all() == []


def test_ingest_raises_too_large_naming_size_and_cap(repo: Path) -> None:
    config, layout, store = setup(repo)
    layout.suggested_tasks.write_bytes(b"x" * (MAIN_FILE_CAP + 1))
    with pytest.raises(TooLarge) as caught:
        ingest(config, layout, store)
    assert (caught.value.size, caught.value.cap) == (MAIN_FILE_CAP + 1, MAIN_FILE_CAP)
    assert caught.value.hint and "--file" in caught.value.hint
    assert layout.suggested_tasks.stat().st_size == MAIN_FILE_CAP + 1


@pytest.mark.timeout(20)
def test_the_dispatcher_tick_never_blocks_or_raises_on_an_unsafe_main_file(
    tmp_path: Path, repo: Path
) -> None:
    config, layout, store = setup(repo)
    feed = SuggestionFeed(config, layout, store)
    secret = secret_file(tmp_path)
    makers = [lambda p: symlink(p, secret), lambda p: p.mkdir()]
    if hasattr(os, "mkfifo"):
        makers.append(os.mkfifo)
    if DEV_ZERO.exists():
        makers.append(lambda p: symlink(p, DEV_ZERO))
    for make in makers:
        make(layout.suggested_tasks)
        suggestions_grew(layout, None)  # a stat: never opens, never follows
        assert feed.ingest_new() == 0  # ingest's refusal is logged, not raised
        assert store.all() == []
        if layout.suggested_tasks.is_dir() and not layout.suggested_tasks.is_symlink():
            layout.suggested_tasks.rmdir()
        else:
            layout.suggested_tasks.unlink()
    no_secret_anywhere(repo)


def test_a_link_planted_in_the_inbox_is_never_followed(tmp_path: Path, repo: Path) -> None:
    config, layout, store = setup(repo)
    inbox = layout.state / "suggestions"
    symlink(inbox / "000007-suggested_tasks.txt", secret_file(tmp_path))
    layout.suggested_tasks.write_text("Real idea\n", encoding="utf-8")
    report = ingest(config, layout, store)
    assert [t.title for t in report.tasks] == ["Real idea"]
    dry = ingest(config, layout, store, dry_run=True)
    assert dry.added == []
    no_secret_anywhere(repo)
