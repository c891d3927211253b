"""Bad input through the real scripts: one plain message naming the file, key or task and the
fix, the right exit code, no traceback, and nothing changed on disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from conftest import commit_config, git, localdispatch, run_script

TRIVIAL_WORKER = {
    "worker_backend": "command",
    "worker_command": [sys.executable, "-c", "pass", "{task_file}"],
    "poll_interval_secs": 0.05,
    "worker_timeout_secs": 30,
}


def _queue(*tasks: object) -> bytes:
    text = json.dumps({"version": 1, "next_id": 9, "tasks": list(tasks)}, indent=1)
    return text.encode("utf-8") + b"\n"


BAD_QUEUES = {
    "duplicate ids": (
        _queue(
            {"id": "t-1", "title": "Write the parser"},
            {"id": "t-2", "title": "Use the parser", "depends_on": ["t-1"]},
            {"id": "t-1", "title": "Write the parser again"},
        ),
        ["task #3 (id 't-1') has the same id as task #1", "give one of the two a new id"],
    ),
    "id with a space": (
        _queue({"id": "t 1", "title": "Spaced"}),
        ["task #1 (title 'Spaced'): its id \"t 1\" holds whitespace", "id without spaces"],
    ),
    "id not a string": (
        _queue({"id": ["t-1"], "title": "Listed"}),
        ["task #1 (title 'Listed'): its id is a list, not a string"],
    ),
    "task not an object": (
        _queue({"id": "t-1", "title": "Fine"}, "Add a chart"),
        ["task #2 is a string, not an object", "fix or remove that entry"],
    ),
    "conflict without branch": (
        _queue({"id": "t-1", "title": "Resolve merge conflict", "kind": "conflict"}),
        ["task #1 (id 't-1') is a conflict task without a \"branch\"", '"kind": "task"'],
    ),
    "depends_on not a list": (
        _queue({"id": "t-1", "title": "A", "depends_on": 2}),
        ["task #1 (id 't-1') has \"depends_on\": 2, which is not a list of ids"],
    ),
    "parent not an id": (
        _queue({"id": "t-1", "title": "A", "parent": {"id": "t-0"}}),
        ['task #1 (id \'t-1\') has "parent": {"id": "t-0"}, which is not an id'],
    ),
    "nested 100,000 deep": (
        b'{"version": 1, "tasks": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        ["the file is nested thousands of levels deep", "restore the file from a copy"],
    ),
}


def _assert_refused(result_stderr: str, code: int, expected_code: int, needles: list[str]) -> None:
    assert code == expected_code, result_stderr
    assert "Traceback" not in result_stderr and "Unexpected error" not in result_stderr
    errors = [line for line in result_stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, result_stderr
    for needle in needles:
        assert needle in errors[0], result_stderr


@pytest.mark.parametrize("case", list(BAD_QUEUES))
def test_a_bad_task_queue_is_named_and_left_as_it_is(repo: Path, case: str) -> None:
    content, needles = BAD_QUEUES[case]
    queue = repo / "task_queue.json"
    queue.write_bytes(content)
    (repo / "suggested_tasks.txt").write_text("A follow-up idea\n", encoding="utf-8")
    runs = [
        localdispatch("tasks", "list", cwd=repo),
        localdispatch("tasks", "add", "One more", cwd=repo),
        localdispatch("tasks", "close", "t-1", cwd=repo),
        run_script("ingest_suggested_tasks.py", cwd=repo),
    ]
    for result in runs:
        _assert_refused(
            result.stderr, result.returncode, 1, [f"The task store {queue} is corrupt: ", *needles]
        )
        assert "left untouched; localdispatch will not overwrite it" in result.stderr
    assert queue.read_bytes() == content
    assert (repo / "suggested_tasks.txt").read_text(encoding="utf-8") == "A follow-up idea\n"
    assert not list(repo.glob("task_queue.json?*"))  # no .bak, no temporary file


def test_duplicate_ids_stop_dispatch_at_once_instead_of_hanging(repo: Path) -> None:
    commit_config(repo, TRIVIAL_WORKER)
    content, needles = BAD_QUEUES["duplicate ids"]
    queue = repo / "task_queue.json"
    queue.write_bytes(content)
    result = run_script("dispatch_workers.py", "--until-idle", cwd=repo, timeout=60)
    _assert_refused(result.stderr, result.returncode, 1, needles)
    assert str(queue) in result.stderr
    assert queue.read_bytes() == content
    assert git(repo, "branch", "--list", "ld/*") == ""  # no attempt started


# ---- tasks add --files: confined exactly as a model's or a suggestion's paths ---------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("../x", "climbs out of the repository"),
        ("a/../../x", "climbs out of the repository"),
        ("/etc/passwd", "is absolute"),
        ("~/.ssh/id_rsa", "is absolute"),
        ("C:\\x", "has a drive letter"),
        ("\\\\server\\share\\x", "is absolute"),
        (".git/config", "points into .git"),
        (".GIT/hooks/pre-commit", "points into .git"),
        ("vendor/lib/.git/config", "points into .git"),
        (".git./config", "points into .git"),
        (".git /config", "points into .git"),
        ("GIT~1/config", "points into .git"),
        (".git::$INDEX_ALLOCATION/config", "points into .git"),
        (".", "names the repository root itself"),
    ],
)
def test_confine_refuses_paths_outside_the_repository(raw: str, reason: str) -> None:
    from localdispatch.paths import confine

    path, why = confine(raw)
    assert path is None and why.startswith(reason)


def test_confine_takes_a_subfolder_path_as_git_does() -> None:
    from localdispatch.paths import confine

    assert confine("a.py", relative_to="src") == ("src/a.py", "")
    assert confine("../README.md", relative_to="src/app") == ("src/README.md", "")
    assert confine("../../x", relative_to="src") == (None, "climbs out of the repository with '..'")
    assert confine("../.git/config", relative_to="src") == (None, "points into .git")
    assert confine(".gitignore") == (".gitignore", "")
    assert confine(".github/workflows/ci.yml") == (".github/workflows/ci.yml", "")
    assert confine("src\\win\\path.py") == ("src/win/path.py", "")


def test_tasks_add_refuses_paths_outside_the_repository(repo: Path) -> None:
    bad = ["../x", "/etc/passwd", "C:\\x", ".git/config"]
    result = localdispatch("tasks", "add", "Sneaky", "--files", ",".join(["ok.py", *bad]), cwd=repo)
    _assert_refused(
        result.stderr,
        result.returncode,
        2,
        [
            "tasks add --files: '../x' climbs out of the repository with '..'; "
            "'/etc/passwd' is absolute; 'C:\\x' has a drive letter; "
            "'.git/config' points into .git. Nothing was added.",
            f"inside the repository {repo}",
        ],
    )
    for one in bad:
        single = localdispatch("tasks", "add", "Sneaky", "--files", one, cwd=repo)
        _assert_refused(single.stderr, single.returncode, 2, [f"'{one}'", "Nothing was added"])
    assert not (repo / "task_queue.json").exists()
    assert git(repo, "status", "--porcelain") == ""


def test_tasks_add_from_a_subfolder_takes_paths_as_git_does(repo: Path) -> None:
    sub = repo / "src" / "app"
    sub.mkdir(parents=True)
    result = localdispatch(
        "tasks", "add", "Split the module", "--json", "--files", "views.py,../util.py", cwd=sub
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["files"] == ["src/app/views.py", "src/util.py"]
    climbing = localdispatch("tasks", "add", "Out", "--files", "../../../x", cwd=sub)
    _assert_refused(climbing.stderr, climbing.returncode, 2, ["'../../../x' climbs out"])
    # The store is the top level's, however deep the command ran.
    assert (repo / "task_queue.json").exists()
    assert not (sub / "task_queue.json").exists()


# ---- the repository is the repository: every command works on its top level -----------------


def test_from_a_subfolder_without_a_config_state_lands_at_the_top_only(repo: Path) -> None:
    sub = repo / "docs" / "guide"
    sub.mkdir(parents=True)
    (sub / "page.md").write_text("# page\n", encoding="utf-8")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "docs")
    added = localdispatch("tasks", "add", "Write the guide", "--files", "page.md", cwd=sub)
    assert added.returncode == 0, added.stderr
    (repo / "suggested_tasks.txt").write_text("Proofread the guide\n", encoding="utf-8")
    ingested = run_script("ingest_suggested_tasks.py", "--json", cwd=sub)
    assert ingested.returncode == 0, ingested.stderr
    assert [a["title"] for a in json.loads(ingested.stdout)["added"]] == ["Proofread the guide"]
    listed = json.loads(localdispatch("tasks", "list", "--json", cwd=sub).stdout)
    assert [(t["title"], t["files"]) for t in listed] == [
        ("Write the guide", ["docs/guide/page.md"]),
        ("Proofread the guide", []),
    ]
    assert (repo / "task_queue.json").is_file() and (repo / ".dispatch").is_dir()
    leftovers = [p for p in (repo / "docs").rglob("*") if p.name != "page.md" and p.is_file()]
    assert leftovers == [] and not (sub / ".dispatch").exists()
    assert git(repo, "status", "--porcelain") == ""
    checked = json.loads(localdispatch("config", "check", "--json", cwd=sub).stdout)
    assert checked["config_file"] is None and checked["repo"] == str(repo.resolve())


def test_the_config_search_stops_at_the_repository_top(repo: Path) -> None:
    # A config above the repository belongs to something else.
    (repo.parent / "dispatch_config.json").write_text('{"num_workers": 7}', encoding="utf-8")
    sub = repo / "src"
    sub.mkdir()
    outer = json.loads(localdispatch("config", "check", "--json", cwd=sub).stdout)
    assert outer["config_file"] is None and outer["settings"]["num_workers"] == 2
    assert outer["repo"] == str(repo.resolve())
    commit_config(repo, {"num_workers": 3})
    inner = json.loads(localdispatch("config", "check", "--json", cwd=sub).stdout)
    assert inner["config_file"] == str((repo / "dispatch_config.json").resolve())
    assert inner["settings"]["num_workers"] == 3


def test_dispatch_from_a_subfolder_works_on_the_top_level(repo: Path) -> None:
    commit_config(repo, TRIVIAL_WORKER)
    sub = repo / "pkg"
    sub.mkdir()
    result = run_script("dispatch_workers.py", "--until-idle", cwd=sub, timeout=60)
    assert result.returncode == 0, result.stderr
    assert not (sub / ".dispatch").exists() and not (sub / "task_queue.json").exists()
    assert git(repo, "status", "--porcelain") == ""


def test_outside_any_repository_the_current_folder_is_still_the_repository(
    tmp_path: Path,
) -> None:
    from localdispatch.config import load_config

    folder = tmp_path / "plain"
    folder.mkdir()
    assert load_config(cwd=folder).repo_path == folder.resolve()
    listed = localdispatch("tasks", "list", cwd=folder)
    assert listed.returncode == 0 and "No tasks" in listed.stderr
    checked = localdispatch("config", "check", cwd=folder)
    _assert_refused(checked.stderr, checked.returncode, 1, ["is not a git repository"])
