"""`localdispatch demo` for real, and its scripted worker on real repositories."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import git, localdispatch, make_repo
from localdispatch.cli import main as cli_main
from localdispatch.demo.run import Demo, DemoOptions
from localdispatch.processes.supervisor import repo_marker
from localdispatch.processes.trees import marked_processes
from localdispatch.testing import demo_project
from localdispatch.testing.demo_worker import (
    Edit,
    EditError,
    apply_edit,
    has_markers,
    inside,
    parse_edits,
    render_edits,
    resolve_text,
)
from localdispatch.testing.demo_worker import main as worker_main

FRESH_MACHINE = ("GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME")
FRESH_MACHINE += ("GIT_COMMITTER_EMAIL", "EMAIL")


@pytest.fixture
def awkward_machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """git knows nobody and refuses to guess (user.useConfigOnly); the user's global settings
    would sign commits, convert line ends, write diff3 conflicts and run hooks that fail."""
    for name in FRESH_MACHINE:
        monkeypatch.delenv(name, raising=False)
    hooks = tmp_path / "global hooks"
    hooks.mkdir()
    for hook in ("pre-commit", "post-checkout", "pre-merge-commit", "commit-msg"):
        (hooks / hook).write_text("#!/bin/sh\necho refused by a global hook\nexit 1\n", "utf-8")
        (hooks / hook).chmod(0o755)
    global_config = tmp_path / "global gitconfig"
    global_config.write_text(
        "[user]\n\tuseConfigOnly = true\n[commit]\n\tgpgSign = true\n"
        "[core]\n\tautocrlf = true\n\thooksPath = " + hooks.as_posix() + "\n"
        "[merge]\n\tconflictStyle = diff3\n",
        encoding="utf-8",
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_config))


# ---- the real command ----------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.usefixtures("awkward_machine")
def test_the_demo_runs_the_whole_cycle(tmp_path: Path) -> None:
    where = tmp_path / "demo repo"
    result = localdispatch(
        "demo", "--dir", str(where), "--json", "--pace", "0.5", cwd=tmp_path, timeout=110
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    repo = Path(data["repo"])
    assert repo == where.resolve() and data["ok"] and data["problems"] == []
    assert "started t-2" in result.stderr and "conflict task" in result.stderr

    tasks = {t["id"]: t for t in data["tasks"]}
    board = json.loads(localdispatch("tasks", "list", "--all", "--json", cwd=repo).stdout)
    assert {t["id"]: t["status"] for t in board} == {i: t["status"] for i, t in tasks.items()}
    epics = [t for t in board if t["kind"] == "epic"]
    children = [t for t in board if t["kind"] == "task"]
    conflicts = [t for t in board if t["kind"] == "conflict"]
    assert len(epics) == 1 and epics[0]["status"] == "done"
    assert len(children) == len(demo_project.SUBTASKS)
    assert all(t["status"] == "done" and t["merged_commit"] for t in children)
    assert len(conflicts) == 1 and conflicts[0]["status"] == "done"
    (conflict,) = data["conflicts"]
    origin = next(t for t in children if t["id"] == conflict["for_task"])
    assert conflicts[0]["branch"] == origin["branch"] and conflict["merged_after_retry"]
    assert sorted(conflict["files"]) == sorted(demo_project.SHARED_FILES)
    assert any(line.startswith("resolved CHANGELOG.md") for line in conflict["resolution"])

    merged = [m for m in data["merges"] if m["status"] == "merged"]
    assert len(merged) == len(children)
    assert [m["task"] for m in data["merges"] if m["status"] == "conflict"] == [origin["id"]]

    for sub in demo_project.SUBTASKS:  # every worker's edit is on main
        for edit in sub.edits:
            assert edit.text in git(repo, "show", f"main:{edit.path}") + "\n", edit.path
    for name in git(repo, "ls-tree", "-r", "--name-only", "main").splitlines():
        assert not has_markers(git(repo, "show", f"main:{name}")), name
    # Both sides are kept, the line of the branch that was merged first first.
    changelog = git(repo, "show", "main:CHANGELOG.md")
    added = {s.title: s.edits[-1].text.strip() for s in demo_project.SUBTASKS[:2]}
    later = added.pop(origin["title"])
    assert changelog.index(added.popitem()[1]) < changelog.index(later)
    tracked = git(repo, "ls-files").splitlines()
    assert not [n for n in tracked if n.startswith(".dispatch/") or n.startswith("task_queue")]
    assert "suggested_tasks.txt" not in tracked
    assert git(repo, "status", "--porcelain") == ""

    assert marked_processes(repo_marker(repo)) == []
    events = (repo / ".dispatch" / "events.jsonl").read_text(encoding="utf-8").splitlines()
    for event in map(json.loads, events):
        if event["event"] == "start":
            assert not _alive(event["pid"]), event

    report = subprocess.run(
        [sys.executable, "-B", "-m", "statkit", *demo_project.REPORT_ARGS],
        cwd=repo,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=True,
    )
    assert report.stdout.strip() == demo_project.EXPECTED_REPORT


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_the_human_summary_and_cleanup(tmp_path: Path) -> None:
    where = tmp_path / "gone soon"
    result = localdispatch(
        "demo", "--dir", str(where), "--workers", "2", "--pace", "0", "--cleanup", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr
    assert "[2/4] Split the goal with the stub model at http://127.0.0.1:" in result.stderr
    assert "Conflict: merging ld/" in result.stdout and "kept both sides" in result.stdout
    assert "median: 3" in result.stdout and "Checks: all passed" in result.stdout
    assert "was deleted (--cleanup)" in result.stdout
    assert not where.exists()


def test_bad_usage_exits_2(tmp_path: Path) -> None:
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "keep.txt").write_text("mine\n", encoding="utf-8")
    result = localdispatch("demo", "--dir", str(taken), cwd=tmp_path)
    assert result.returncode == 2 and "not an empty folder" in result.stderr
    assert (taken / "keep.txt").read_text(encoding="utf-8") == "mine\n"
    assert sorted(p.name for p in taken.iterdir()) == ["keep.txt"]
    result = localdispatch("demo", "--workers", "1", "--dir", str(tmp_path / "new"), cwd=tmp_path)
    assert result.returncode == 2 and "two workers at once" in result.stderr


UNRESOLVING_WORKER = """\
import subprocess, sys
merging = subprocess.run(["git", "rev-parse", "-q", "--verify", "MERGE_HEAD"], check=False)
if merging.returncode == 0:
    print("Resolved everything! (Nothing was resolved.)")
    sys.exit(0)
from localdispatch.testing.demo_worker import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_an_unresolved_conflict_exits_1_and_says_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    script = tmp_path / "unresolving worker.py"
    script.write_text(UNRESOLVING_WORKER, encoding="utf-8")
    real = Demo._config_data

    def config_data(self: Demo) -> dict[str, Any]:
        data = real(self)
        data["worker_command"] = [sys.executable, str(script), *data["worker_command"][3:]]
        return data

    monkeypatch.setattr(Demo, "_config_data", config_data)
    where = tmp_path / "demo repo"
    code = cli_main(["demo", "--dir", str(where), "--pace", "0", "--workers", "2"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "The demo did not finish cleanly" in err and str(where.resolve()) in err
    assert "Resolve merge conflict" in err and "without a commit" in err
    assert "Checks failed:" in out and "conflict: t-7 failed" in out
    assert marked_processes(repo_marker(where.resolve())) == []


@pytest.mark.slow
def test_a_run_past_its_time_limit_is_stopped_and_says_so(tmp_path: Path) -> None:
    demo = Demo(DemoOptions(tmp_path / "slow demo", workers=2, pace_secs=30, time_limit_secs=1))
    demo.create_repo()
    demo.split()
    demo.dispatch()
    result = demo.result()
    assert not result.ok and result.timed_out and result.interrupted
    assert result.cause.startswith("the dispatcher was still busy after 1 s")
    assert result.checks[0].name == "time"
    assert marked_processes(repo_marker(demo.repo)) == []
    assert {t["status"] for t in result.tasks if t["kind"] == "task"} == {"open"}


# ---- the scripted worker on a real conflict ---------------------------------------------------


def _conflicted(repo: Path, style: str) -> Path:
    """A branch and main that both appended a line to CHANGELOG.md; the merge is started."""
    git(repo, "checkout", "-q", "-b", "ld/t-3-median")
    (repo / "CHANGELOG.md").write_text("# Changelog\n\n- total\n- median\n", encoding="utf-8")
    git(repo, "commit", "-q", "-am", "median")
    git(repo, "checkout", "-q", "main")
    (repo / "CHANGELOG.md").write_text("# Changelog\n\n- total\n- mean\n", encoding="utf-8")
    git(repo, "commit", "-q", "-am", "mean")
    git(repo, "checkout", "-q", "ld/t-3-median")
    merge = subprocess.run(
        ["git", "-c", f"merge.conflictStyle={style}", "merge", "--no-commit", "--no-ff", "main"],
        cwd=repo,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    assert merge.returncode != 0 and "CONFLICT" in merge.stdout
    task_file = repo.parent / "task file.md"
    task_file.write_text(
        "# Task t-7: Resolve merge conflict: ld/t-3-median\n\n## Resolve the merge conflict\n",
        encoding="utf-8",
    )
    return task_file


@pytest.mark.parametrize("style", ["merge", "diff3"])
def test_the_worker_resolves_a_conflict_keeping_both_sides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, style: str
) -> None:
    repo = make_repo(tmp_path / "my repo", {"CHANGELOG.md": "# Changelog\n\n- total\n"})
    task_file = _conflicted(repo, style)
    monkeypatch.chdir(repo)
    assert worker_main([str(task_file), "--base", "main"]) == 0
    assert git(repo, "show", "HEAD:CHANGELOG.md") == "# Changelog\n\n- total\n- mean\n- median"
    assert len(git(repo, "rev-list", "--parents", "-n", "1", "HEAD").split()) == 3
    assert git(repo, "status", "--porcelain") == ""
    assert git(repo, "merge-base", "--is-ancestor", "main", "HEAD") == ""


def test_the_worker_makes_the_edits_of_its_task(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    repo = make_repo(tmp_path / "my repo", demo_project.PROJECT_FILES)
    sub = demo_project.SUBTASKS[3]  # replaces, creates and appends
    task_file = tmp_path / "t-5.md"
    task_file.write_text(f"# Task t-5: {sub.title}\n\n{sub.reply()['description']}\n", "utf-8")
    monkeypatch.chdir(repo)
    assert worker_main([str(task_file)]) == 0
    assert git(repo, "log", "-1", "--format=%s") == f"t-5: {sub.title}"
    for edit in sub.edits:
        assert edit.text in (repo / edit.path).read_text(encoding="utf-8")
    assert git(repo, "status", "--porcelain") == ""
    assert worker_main([str(task_file)]) == 1  # the text to replace is gone: no commit
    assert git(repo, "log", "-1", "--format=%s") == f"t-5: {sub.title}"


# ---- the edit format and the resolution (pure) -----------------------------------------------


def test_the_planned_conflict_is_between_the_first_two_parallel_tasks() -> None:
    assert demo_project.conflicting() == [0, 1]
    first, second = (demo_project.SUBTASKS[i] for i in demo_project.conflicting())
    assert not set(first.files) & set(second.files)  # so the scheduler runs them at once


def test_every_planned_edit_survives_the_task_text() -> None:
    for sub in demo_project.SUBTASKS:
        assert parse_edits(sub.reply()["description"]) == sub.edits


def test_parse_edits_refuses_a_cut_block() -> None:
    with pytest.raises(EditError, match="not closed"):
        parse_edits("Create `a.py`:\n```python\nx = 1\n")
    with pytest.raises(EditError, match="no code block"):
        parse_edits("Append to `a.py`:\nx = 1\n")


def test_render_refuses_a_block_it_cannot_write() -> None:
    with pytest.raises(ValueError, match="fence"):
        render_edits([Edit("create", "a.md", "```\n")])


def test_edits_stay_inside_the_tree(tmp_path: Path) -> None:
    for bad in ("../outside.py", "/etc/passwd", "C:/Windows/x.py", ""):
        with pytest.raises(EditError, match="not a path inside"):
            inside(tmp_path, bad)
    with pytest.raises(EditError, match="does not exist"):
        apply_edit(tmp_path, Edit("append", "missing.md", "x\n"))
    (tmp_path / "a.txt").write_text("no newline", encoding="utf-8")
    apply_edit(tmp_path, Edit("append", "a.txt", "next\n"))
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "no newline\nnext\n"


def test_resolve_text_keeps_both_sides_once() -> None:
    text = (
        "head\n<<<<<<< HEAD\nshared\nours\n||||||| base\nold\n=======\nshared\ntheirs\n"
        ">>>>>>> main\ntail\n"
    )
    assert resolve_text(text) == ("head\nshared\ntheirs\nours\ntail\n", 1)
    assert resolve_text("no conflict\n") == ("no conflict\n", 0)
    with pytest.raises(ValueError, match="not closed"):
        resolve_text("<<<<<<< HEAD\nours\n=======\n")
