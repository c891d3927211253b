"""suggestions: parsing lines (pure), and ingest/harvest against real files and a real store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import git
from localdispatch.config import load_config
from localdispatch.layout import Layout, layout_for
from localdispatch.store import JsonStore, TaskDraft, TaskStore, open_store
from localdispatch.suggestions import (
    Harvest,
    LineIssue,
    RawLine,
    Suggestion,
    cut_title,
    harvest_worktree_suggestions,
    inbox,
    ingest,
    parse_line,
    plan_batch,
    split_lines,
    suggestions_grew,
)
from localdispatch.tasks import Task, title_key

# ---- pure: splitting and parsing --------------------------------------------------------


def lines_of(data: bytes, **kwargs: object) -> list[RawLine]:
    return split_lines(data, source="s.txt", **kwargs)[0]  # type: ignore[arg-type]


def one(text: str, known: tuple[str, ...] = ("t-1", "t-2", "t-7")) -> Suggestion | LineIssue:
    result = parse_line(RawLine("s.txt", 3, text.encode(), text), known)
    assert result is not None
    return result


def test_split_lines_handles_crlf_bom_nul_and_numbers() -> None:
    data = b"\xef\xbb\xbffirst\r\nsecond\n\x00\x00third\n"
    lines, used, count = split_lines(data, source="s.txt", first_line=5)
    assert [(line.number, line.text) for line in lines] == [
        (5, "first"),
        (6, "second"),
        (7, "third"),
    ]
    assert used == len(data) and count == 3


def test_split_lines_leaves_an_unfinished_last_line_unless_final() -> None:
    lines, used, count = split_lines(b"done\nhalf a li", source="s.txt", final=False)
    assert [line.text for line in lines] == ["done"] and used == 5 and count == 1
    assert [line.text for line in lines_of(b"done\nhalf a li")] == ["done", "half a li"]
    assert split_lines(b"no newline yet", source="s.txt", final=False) == ([], 0, 0)


def test_split_lines_reports_invalid_utf8_and_keeps_the_rest() -> None:
    [line] = lines_of(b"caf\xe9 au lait\n")
    assert line.bad_utf8 and line.text == "caf\ufffd au lait"
    assert line.data == b"caf\xe9 au lait"
    suggestion = parse_line(line, [])
    assert isinstance(suggestion, Suggestion)
    assert any("UTF-8" in note for note in suggestion.notes)


def test_tags_anywhere_any_case() -> None:
    result = one(
        "[PRIORITY: 1] Fix the parser [Files: src/a.py, b\\c.py] [after: T-1,t-2] [From: t-7]"
    )
    assert isinstance(result, Suggestion)
    assert result.title == "Fix the parser"
    assert result.priority == 1
    assert result.files == ("src/a.py", "b/c.py")
    assert result.after == ("t-1", "t-2")
    assert result.discovered_from == "t-7"
    draft = result.draft("ing-x")
    assert draft.priority == 1 and draft.depends_on == ["t-1", "t-2"]
    assert draft.extra == {"ingest_batch": "ing-x"}


def test_untagged_line_defaults_and_unknown_brackets_stay_in_the_title() -> None:
    result = one("  Handle [WIP] branches   in   the  merger ")
    assert isinstance(result, Suggestion)
    assert result.title == "Handle [WIP] branches in the merger"
    assert result.priority is None and result.draft().priority == 2
    assert result.files == () and result.discovered_from is None


def test_paths_are_confined_to_the_repository() -> None:
    result = one("Tidy [files: ok.py, ../../etc/passwd, /abs.py, .git/config, C:\\x.py]")
    assert isinstance(result, Suggestion)
    assert result.files == ("ok.py",)
    assert len(result.notes) == 4 and all("dropped path" in note for note in result.notes)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("Do it [priority: 9]", "[priority: 9] is not 0 (highest) to 4"),
        ("Do it [priority: high]", "[priority: high] is not 0"),
        ("Do it [after: t-1, t-99]", "names no existing task (t-99)"),
        ("Do it [from: t-42]", "[from: t-42] names no existing task"),
        ("Do it [after: ]", "names no task"),
        ("Do it [priority: 1] [priority: 3]", "two different [priority: ] tags"),
        ("Do it [from: t-1] [from: t-2]", "more than one task"),
        ("[files: a.py] [priority: 1]", "tags but no title"),
    ],
)
def test_bad_tags_make_the_line_invalid_with_its_number(text: str, reason: str) -> None:
    result = one(text)
    assert isinstance(result, LineIssue)
    assert reason in result.reason
    assert result.where == "s.txt line 3" and result.text == text


def test_blank_and_comment_lines_are_skipped() -> None:
    for text in ("", "   ", "# a comment", "   # indented comment"):
        assert parse_line(RawLine("s.txt", 1, b"", text), []) is None


def test_long_titles_are_cut_at_a_word_boundary_and_kept_whole_in_the_description() -> None:
    words = " ".join(f"word{i}" for i in range(80))
    result = one(words + " [priority: 0]")
    assert isinstance(result, Suggestion)
    assert len(result.title) <= 200 and result.title.endswith("…")
    assert words.startswith(result.title[:-1])
    assert result.title[-2].isdigit()  # cut after a whole word, not inside one
    assert result.description == words
    exact = "x" * 200
    assert cut_title(exact) == exact
    assert len(cut_title("y" * 500)) == 200  # no space at all: a hard cut


def test_title_key_ignores_case_and_runs_of_spaces() -> None:
    assert title_key("  Fix   THE\tparser ") == title_key("fix the parser")


def task(task_id: str, title: str, status: str = "open") -> Task:
    return Task(id=task_id, title=title, status=status)  # type: ignore[arg-type]


def test_plan_batch_drops_duplicates_of_active_tasks_and_earlier_lines() -> None:
    tasks = [
        task("t-1", "Fix the parser"),
        task("t-2", "Write docs", "in_progress"),
        task("t-3", "Old work", "done"),
        task("t-4", "Dropped", "cancelled"),
    ]
    data = (
        b"fix  the PARSER\n"
        b"Write docs [priority: 1]\n"
        b"Old work\n"
        b"dropped\n"
        b"New thing\n"
        b"\n"
        b"# note\n"
        b"new   THING [files: x.py]\n"
        b"Broken [after: t-99]\n"
        b"Broken\n"
    )
    batch = plan_batch(lines_of(data), tasks)
    assert [s.title for s in batch.accepted] == ["Old work", "dropped", "New thing", "Broken"]
    assert [(d.number, d.reason) for d in batch.duplicates] == [
        (1, "same as open task t-1"),
        (2, "same as in-progress task t-2"),
        (8, "same as line 5"),
    ]
    assert [issue.number for issue in batch.invalid] == [9]
    assert batch.skipped == 2


# ---- ingest against real files --------------------------------------------------------------


def setup(repo: Path) -> tuple[object, Layout, TaskStore]:
    config = load_config(cwd=repo)
    layout = layout_for(config)
    return config, layout, open_store(config, layout)


def append(path: Path, *lines: str) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in lines))


def titles(store: TaskStore) -> list[str]:
    return [t.title for t in store.all()]


def journal(layout: Layout) -> dict[str, object]:
    data: dict[str, object] = json.loads(
        (layout.state / "suggestions" / "journal.json").read_text(encoding="utf-8")
    )
    return data


def test_ingest_adds_tasks_and_takes_the_lines_out(repo: Path) -> None:
    config, layout, store = setup(repo)
    store.add(TaskDraft(title="Existing"))
    append(layout.suggested_tasks, "A [files: a.py] [after: t-1] [priority: 0]", "B [from: t-1]")
    report = ingest(config, layout, store)  # type: ignore[arg-type]
    assert [t.id for t in report.tasks] == ["t-2", "t-3"]
    a, b = store.get("t-2"), store.get("t-3")
    assert (a.files, a.depends_on, a.priority) == (["a.py"], ["t-1"], 0)
    assert b.discovered_from == "t-1"
    assert not layout.suggested_tasks.exists()
    assert journal(layout)["pending"] is None
    # nothing is read twice, and the state stays out of git
    assert ingest(config, layout, store).added == []  # type: ignore[arg-type]
    assert git(repo, "status", "--porcelain") == ""


def test_lines_appended_after_an_ingest_are_taken_next_time(repo: Path) -> None:
    config, layout, store = setup(repo)
    append(layout.suggested_tasks, "One", "Two")
    ingest(config, layout, store)  # type: ignore[arg-type]
    append(layout.suggested_tasks, "Three")
    report = ingest(config, layout, store)  # type: ignore[arg-type]
    assert [(s.title, s.line.number) for s, _ in report.added] == [("Three", 1)]
    assert titles(store) == ["One", "Two", "Three"]


@pytest.mark.skipif(os.name == "nt", reason="POSIX: an open handle follows the renamed file")
def test_a_late_line_written_through_an_old_handle_is_not_lost(repo: Path) -> None:
    config, layout, store = setup(repo)
    append(layout.suggested_tasks, "Early")
    # An appender opened the file before ingest renamed it and writes after.
    with layout.suggested_tasks.open("a", encoding="utf-8") as late:
        ingest(config, layout, store)  # type: ignore[arg-type]
        late.write("Late\n")
    assert suggestions_grew(layout, None)[0]
    report = ingest(config, layout, store)  # type: ignore[arg-type]
    assert [(s.title, s.line.number) for s, _ in report.added] == [("Late", 2)]
    assert titles(store) == ["Early", "Late"]


@pytest.mark.skipif(os.name != "nt", reason="Windows: an open file cannot be renamed")
def test_a_file_held_open_is_left_alone_with_a_warning(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbox, "ROTATE_PATIENCE_SECS", 0.2)
    config, layout, store = setup(repo)
    append(layout.suggested_tasks, "Kept")
    with layout.suggested_tasks.open("a", encoding="utf-8") as holder:
        report = ingest(config, layout, store)  # type: ignore[arg-type]
        holder.write("Also kept\n")
    assert report.warnings and report.added == []
    assert ingest(config, layout, store).tasks  # type: ignore[arg-type]
    assert titles(store) == ["Kept", "Also kept"]


def test_a_last_line_without_newline_is_taken_once_settled(repo: Path) -> None:
    config, layout, store = setup(repo)
    layout.suggested_tasks.write_bytes(b"First\r\nSaved without a newline")
    report = ingest(config, layout, store)  # type: ignore[arg-type]
    assert titles(store) == ["First", "Saved without a newline"]
    assert report.waiting == 0
    # the next writer starts a fresh file, so its line is not glued onto the old one
    append(layout.suggested_tasks, "Next")
    ingest(config, layout, store)  # type: ignore[arg-type]
    assert titles(store)[-1] == "Next"


def test_dry_run_changes_nothing(repo: Path) -> None:
    config, layout, store = setup(repo)
    append(layout.suggested_tasks, "A", "a", "Bad [priority: 7]")
    before = layout.suggested_tasks.read_bytes()
    report = ingest(config, layout, store, dry_run=True)  # type: ignore[arg-type]
    assert report.dry_run and [s.title for s, t in report.added if t is None] == ["A"]
    assert len(report.duplicates) == 1 and len(report.invalid) == 1
    assert layout.suggested_tasks.read_bytes() == before
    assert not layout.state.exists() and not layout.task_queue.exists()


def test_invalid_lines_are_kept_in_rejected_txt(repo: Path) -> None:
    config, layout, store = setup(repo)
    append(layout.suggested_tasks, "Good", "Needs [after: t-50]")
    report = ingest(config, layout, store)  # type: ignore[arg-type]
    assert [issue.number for issue in report.invalid] == [2]
    assert report.rejected_file is not None
    kept = report.rejected_file.read_text(encoding="utf-8")
    assert "Needs [after: t-50]\n" in kept and "suggested_tasks.txt line 2" in kept
    assert titles(store) == ["Good"]


def test_file_option_ingests_another_file(repo: Path) -> None:
    config, layout, store = setup(repo)
    other = repo / "notes" / "ideas.txt"
    other.parent.mkdir()
    other.write_text("From notes\n", encoding="utf-8")
    append(layout.suggested_tasks, "Untouched")
    report = ingest(config, layout, store, file=Path("notes/ideas.txt"))  # type: ignore[arg-type]
    assert [(s.title, s.line.source) for s, _ in report.added] == [("From notes", "ideas.txt")]
    assert not other.exists() and layout.suggested_tasks.exists()


def test_fully_read_snapshots_are_deleted_after_the_grace_period(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, layout, store = setup(repo)
    append(layout.suggested_tasks, "One")
    ingest(config, layout, store)  # type: ignore[arg-type]
    folder = layout.state / "suggestions"
    snapshots = sorted(p.name for p in folder.iterdir() if p.name[0].isdigit())
    assert snapshots == ["000001-suggested_tasks.txt"]  # kept a while for late appends
    monkeypatch.setattr(inbox, "DELETE_GRACE_SECS", 0.0)
    append(layout.suggested_tasks, "Two")
    ingest(config, layout, store)  # type: ignore[arg-type]
    assert not [p for p in folder.iterdir() if p.name[0].isdigit()]
    assert journal(layout)["snapshots"] == {} and journal(layout)["seq"] == 2


def test_suggestions_grew_only_when_there_is_something_to_read(repo: Path) -> None:
    config, layout, store = setup(repo)
    grew, marker = suggestions_grew(layout, None)
    assert not grew
    append(layout.suggested_tasks, "One")
    grew, marker = suggestions_grew(layout, marker)
    assert grew
    assert suggestions_grew(layout, marker) == (False, marker)
    ingest(config, layout, store)  # type: ignore[arg-type]
    grew, marker = suggestions_grew(layout, marker)
    assert not grew


def test_a_folder_in_place_of_the_file_is_refused(repo: Path) -> None:
    config, layout, store = setup(repo)
    (layout.suggested_tasks / "inside.txt").parent.mkdir()
    (layout.suggested_tasks / "inside.txt").write_text("x\n", encoding="utf-8")
    with pytest.raises(inbox.SuggestionsError, match="not a file"):
        ingest(config, layout, store)  # type: ignore[arg-type]
    assert (layout.suggested_tasks / "inside.txt").exists()


def test_a_corrupt_journal_is_reported_not_reset(repo: Path) -> None:
    config, layout, store = setup(repo)
    folder = layout.state / "suggestions"
    folder.mkdir(parents=True)
    (folder / "journal.json").write_text("{not json", encoding="utf-8")
    append(layout.suggested_tasks, "One")
    with pytest.raises(inbox.SuggestionsError, match="journal"):
        ingest(config, layout, store)  # type: ignore[arg-type]
    assert layout.suggested_tasks.exists()


# ---- harvest ------------------------------------------------------------------------------


def worktree(repo: Path, name: str) -> Path:
    path = repo.parent / name
    git(repo, "worktree", "add", "-q", "-b", name, str(path))
    return path


def test_harvest_moves_a_workers_lines_tagged_with_its_task(repo: Path) -> None:
    config, layout, store = setup(repo)
    store.add_many([TaskDraft(title="Worker task"), TaskDraft(title="Other")])
    tree = worktree(repo, "w1")
    (tree / "suggested_tasks.txt").write_bytes(
        b"\xef\xbb\xbfAdd tests\r\n\n# thinking out loud\nRefactor [from: t-2]\nbad \xff byte\n"
    )
    layout.suggested_tasks.write_bytes(b"A person's line without newline")
    assert harvest_worktree_suggestions(tree, layout, "t-1") == Harvest(moved=3)
    assert not (tree / "suggested_tasks.txt").exists()
    assert layout.suggested_tasks.read_bytes() == (
        b"A person's line without newline\n"
        b"Add tests [from: t-1]\n"
        b"Refactor [from: t-2]\n"
        b"bad \xff byte [from: t-1]\n"
    )
    report = ingest(config, layout, store)  # type: ignore[arg-type]
    assert [(t.title, t.discovered_from) for t in report.tasks] == [
        ("A person's line without newline", None),
        ("Add tests", "t-1"),
        ("Refactor", "t-2"),
        ("bad \ufffd byte", "t-1"),
    ]
    assert [issue.number for issue in report.notes] == [4]  # the invalid UTF-8 is reported
    assert harvest_worktree_suggestions(tree, layout, "t-1") == Harvest()
    assert git(tree, "status", "--porcelain") == ""


def test_harvest_with_the_file_outside_the_repository_moves_nothing(
    tmp_path: Path, repo: Path
) -> None:
    outside = tmp_path / "shared ideas.txt"
    (repo / "dispatch_config.json").write_text(
        json.dumps({"suggested_tasks_file": str(outside)}), encoding="utf-8"
    )
    _, layout, _ = setup(repo)
    tree = worktree(repo, "w2")
    assert harvest_worktree_suggestions(tree, layout, "t-1") == Harvest()


def test_json_store_keeps_the_batch_mark(tmp_path: Path) -> None:
    store = JsonStore(tmp_path / "q.json")
    [created] = store.add_many([TaskDraft(title="x", extra={"ingest_batch": "ing-1"})])
    assert (JsonStore(tmp_path / "q.json").get(created.id).model_extra or {}) == {
        "ingest_batch": "ing-1"
    }
