"""The merge queue against real git repositories: merges, conflicts, gates, waiting, retries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import git
from localdispatch.config import CONFIG_FILENAME, load_config
from localdispatch.errors import StoreError
from localdispatch.events import EventLog
from localdispatch.layout import Layout, ensure_state_ignored, layout_for
from localdispatch.merge.gates import PathGate
from localdispatch.merge.integration import blocked_files, blocked_reason, parse_worktrees
from localdispatch.merge.pending import PendingMerge, next_step
from localdispatch.merge.queue import MergeQueue
from localdispatch.store import JsonStore, TaskDraft, open_store
from localdispatch.tasks import Task


@dataclass
class Env:
    """A repository with a config, a store, an event log and a merge queue on it."""

    repo: Path
    layout: Layout
    store: JsonStore
    events: EventLog
    queue: MergeQueue

    def task(self, title: str = "do work", **extra: Any) -> Task:
        task = self.store.add(TaskDraft(title=title, **extra))
        claimed = self.store.claim(task.id)
        assert claimed is not None
        return claimed

    def branch(self, name: str, files: dict[str, str], base: str = "main") -> str:
        """Commit ``files`` on a new branch from ``base`` in a scratch worktree (then removed)."""
        scratch = self.repo.parent / f"scratch-{name.replace('/', '-')}"
        git(self.repo, "worktree", "add", "-q", "-b", name, str(scratch), base)
        for rel, text in files.items():
            target = scratch / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        git(scratch, "add", "--force", "--", *files)
        git(scratch, "commit", "-q", "-m", f"work on {name}")
        git(self.repo, "worktree", "remove", "--force", str(scratch))
        return name

    def tip(self, ref: str = "main") -> str:
        return git(self.repo, "rev-parse", f"refs/heads/{ref}")

    def event_names(self) -> list[str]:
        return [e["event"] for e in self.events.read()]


def make_env(repo: Path, **config: Any) -> Env:
    (repo / CONFIG_FILENAME).write_text(json.dumps(config), encoding="utf-8")
    git(repo, "add", CONFIG_FILENAME)
    git(repo, "commit", "-q", "-m", "config")
    loaded = load_config(repo / CONFIG_FILENAME)
    layout = layout_for(loaded)
    ensure_state_ignored(layout)
    store = open_store(loaded, layout)
    assert isinstance(store, JsonStore)
    events = EventLog(layout.events)
    return Env(repo, layout, store, events, MergeQueue(loaded, layout, store, events))


@pytest.fixture
def env(repo: Path) -> Env:
    return make_env(repo)


def test_clean_merge_lands_moves_the_checkout_and_records_the_commit(env: Env) -> None:
    task = env.task()
    branch = env.branch("ld/t-1-work", {"feature.py": "x = 1\n"})
    before = env.tip()

    outcome = env.queue.merge(task, branch)

    assert outcome.status == "merged", outcome.message
    assert outcome.commit == env.tip() != before
    assert git(env.repo, "rev-parse", "HEAD") == outcome.commit
    assert (env.repo / "feature.py").read_text(encoding="utf-8") == "x = 1\n"
    assert git(env.repo, "status", "--porcelain") == ""
    done = env.store.get(task.id)
    assert done.status == "done"
    assert done.merged_commit == outcome.commit
    assert git(env.repo, "branch", "--list", branch) == ""
    assert "merge" in env.event_names()
    assert env.queue.pending() == []


# ---- helpers -----------------------------------------------------------------------------

MARKER = "<" * 7


def assert_never_mid_merge(env: Env) -> None:
    """No MERGE_HEAD in any worktree of the repository, no conflict marker in any file."""
    leftovers = [
        p for p in (env.repo / ".git").rglob("*") if p.name in ("MERGE_HEAD", "rebase-merge")
    ]
    assert leftovers == []
    for path in env.repo.rglob("*"):
        if ".git" in path.parts or not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        assert MARKER not in text, f"conflict marker in {path}"


def two_conflicting_branches(env: Env) -> tuple[Task, str, Task, str]:
    (env.repo / "shared.txt").write_text("line one\nline two\n", encoding="utf-8")
    git(env.repo, "add", "shared.txt")
    git(env.repo, "commit", "-q", "-m", "shared file")
    first, second = env.task("first edit"), env.task("second edit", priority=3)
    a = env.branch("ld/a", {"shared.txt": "line one by A\nline two\n"})
    b = env.branch("ld/b", {"shared.txt": "line one by B\nline two\n"})
    return first, a, second, b


def resolve_on_branch(env: Env, branch: str, files: dict[str, str]) -> None:
    """What a person or a conflict worker does: merge the base into the branch and commit."""
    scratch = env.repo.parent / "resolve"
    git(env.repo, "worktree", "add", "-q", str(scratch), branch)
    subprocess.run(["git", "merge", "-q", "main"], cwd=scratch, capture_output=True, check=False)
    for rel, text in files.items():
        (scratch / rel).write_text(text, encoding="utf-8")
    git(scratch, "add", "-A")
    git(scratch, "commit", "-q", "--no-edit")
    git(env.repo, "worktree", "remove", "--force", str(scratch))


# ---- conflicts -----------------------------------------------------------------------------


def test_same_line_yields_one_merge_and_one_conflict_task(env: Env) -> None:
    first, a, second, b = two_conflicting_branches(env)

    assert env.queue.merge(first, a).status == "merged"
    base_before = env.tip()
    outcome = env.queue.merge(second, b)

    assert outcome.status == "conflict", outcome.message
    assert env.tip() == base_before
    assert_never_mid_merge(env)
    assert git(env.repo, "status", "--porcelain") == ""
    conflict = env.store.get(outcome.conflict_task_id or "")
    assert conflict.title == f"Resolve merge conflict: {b}"
    assert conflict.kind == "conflict"
    assert conflict.branch == b
    assert conflict.priority <= second.priority
    assert conflict.files == ["shared.txt"]
    for needle in (b, base_before, "shared.txt", "git merge main", "commit"):
        assert needle in conflict.description
    assert env.store.get(second.id).status == "in_progress"
    assert env.queue.pending_task_ids() == {second.id}
    [pending] = env.queue.pending()
    assert pending["task"] == second.id and pending["branch"] == b
    assert "shared.txt" in str(pending["reason"]) and pending["since"]
    assert "merge_conflict" in env.event_names()
    # Nothing to do until the conflict task is closed.
    assert env.queue.retry_pending() == []


def test_closing_the_resolved_conflict_task_retries_and_finishes_the_original(env: Env) -> None:
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)
    conflict_id = env.queue.merge(second, b).conflict_task_id
    assert conflict_id is not None
    resolve_on_branch(env, b, {"shared.txt": "line one by A and B\nline two\n"})
    env.store.close(conflict_id, reason="resolved")

    [outcome] = env.queue.retry_pending()

    assert outcome.status == "merged", outcome.message
    assert outcome.task_id == second.id
    done = env.store.get(second.id)
    assert done.status == "done" and done.merged_commit == env.tip() == outcome.commit
    assert (env.repo / "shared.txt").read_text(encoding="utf-8").startswith("line one by A and B")
    assert env.queue.pending() == []
    assert "merge_retry" in env.event_names()
    assert_never_mid_merge(env)


def test_merging_the_conflict_task_itself_also_finishes_the_original(env: Env) -> None:
    # The dispatcher runs the conflict task on the same branch and then merges that branch.
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)
    conflict = env.store.get(env.queue.merge(second, b).conflict_task_id or "")
    env.store.claim(conflict.id)
    resolve_on_branch(env, b, {"shared.txt": "resolved\nline two\n"})

    outcome = env.queue.merge(env.store.get(conflict.id), b)

    assert outcome.status == "merged", outcome.message
    assert env.store.get(conflict.id).status == "done"
    original = env.store.get(second.id)
    assert original.status == "done" and original.merged_commit == outcome.commit
    assert env.queue.pending() == [] and env.queue.retry_pending() == []


def test_a_conflict_task_that_conflicts_again_is_rejected_not_nested(env: Env) -> None:
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)
    conflict = env.store.get(env.queue.merge(second, b).conflict_task_id or "")
    env.store.claim(conflict.id)

    outcome = env.queue.merge(env.store.get(conflict.id), b)  # nothing was resolved

    assert outcome.status == "rejected"
    titles = [t.title for t in env.store.all() if t.kind == "conflict"]
    assert titles == [conflict.title]
    assert_never_mid_merge(env)


def test_max_merge_attempts_marks_the_task_failed(repo: Path) -> None:
    env = make_env(repo, max_merge_attempts=2)
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)
    conflict_id = env.queue.merge(second, b).conflict_task_id
    env.store.close(conflict_id or "", reason="closed without resolving")

    [outcome] = env.queue.retry_pending()

    assert outcome.status == "failed"
    failed = env.store.get(second.id)
    assert failed.status == "failed"
    assert "shared.txt" in (failed.closed_reason or "") and "2 failed merges" in outcome.message
    assert env.queue.pending() == []
    assert git(env.repo, "branch", "--list", b) != ""  # kept for a person


def test_cancelled_conflict_task_fails_the_original(env: Env) -> None:
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)
    conflict_id = env.queue.merge(second, b).conflict_task_id or ""
    env.store.close(conflict_id, reason="not worth it", status="cancelled")

    [outcome] = env.queue.retry_pending()

    assert outcome.status == "failed"
    assert "cancelled" in (env.store.get(second.id).closed_reason or "")


def test_a_conflict_no_worker_resolved_waits_for_a_person_with_the_steps(env: Env) -> None:
    """The workers gave up on the conflict task: the original task is not failed, its branch
    is kept, and the pending merge says exactly what a person runs."""
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)
    conflict_id = env.queue.merge(second, b).conflict_task_id or ""
    env.store.close(conflict_id, reason="failed after 3 attempts", status="failed")

    assert env.queue.retry_pending() == []

    assert env.store.get(second.id).status == "in_progress"
    assert git(env.repo, "rev-parse", "--verify", "-q", b)  # the branch is kept
    [entry] = env.queue.pending()
    assert entry["person"] and "no worker could resolve" in entry["reason"]
    steps = "\n".join(entry["steps"])
    assert f"git worktree add ../resolve-{conflict_id} {b}" in steps
    assert "git merge main" in steps and f"localdispatch tasks close {conflict_id}" in steps
    assert env.event_names().count("merge_needs_person") == 1
    assert env.queue.retry_pending() == [] and env.event_names().count("merge_needs_person") == 1

    # The person resolves by hand and closes the failed conflict task: the merge is retried.
    resolve_on_branch(env, b, {"shared.txt": "line one by A and B\nline two\n"})
    env.store.close(conflict_id, reason="resolved by hand")
    [outcome] = env.queue.retry_pending()
    assert outcome.status == "merged"
    assert env.store.get(second.id).status == "done"
    assert git(env.repo, "show", "main:shared.txt") == "line one by A and B\nline two"


def test_reopening_a_failed_conflict_task_gives_it_back_to_the_workers(env: Env) -> None:
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)
    conflict_id = env.queue.merge(second, b).conflict_task_id or ""
    env.store.close(conflict_id, status="failed")
    env.queue.retry_pending()
    assert env.queue.pending()[0]["person"]

    env.store.reopen(conflict_id)
    env.queue.retry_pending()

    [entry] = env.queue.pending()
    assert not entry["person"] and entry["state"] == "conflict"


def test_a_person_reopening_the_original_drops_the_pending_merge(env: Env) -> None:
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)
    env.queue.merge(second, b)
    env.store.reopen(second.id)

    assert env.queue.retry_pending() == []
    assert env.queue.pending() == []
    assert "merge_dropped" in env.event_names()


def test_without_conflict_tasks_a_conflict_is_a_rejection(repo: Path) -> None:
    env = make_env(repo, create_task_on_merge_conflict=False)
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)

    outcome = env.queue.merge(second, b)

    assert outcome.status == "rejected" and "shared.txt" in outcome.message
    assert [t for t in env.store.all() if t.kind == "conflict"] == []
    assert env.queue.pending() == []


def test_without_auto_retry_a_branch_merged_by_hand_finishes_the_task(repo: Path) -> None:
    env = make_env(repo, auto_retry_merge_on_conflict_close=False)
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)
    conflict_id = env.queue.merge(second, b).conflict_task_id or ""
    resolve_on_branch(env, b, {"shared.txt": "by hand\nline two\n"})
    env.store.close(conflict_id)
    assert env.queue.retry_pending() == []  # closed, but nobody merged it yet
    git(env.repo, "merge", "-q", "--no-edit", b)

    [outcome] = env.queue.retry_pending()

    assert outcome.status == "merged"
    assert env.store.get(second.id).status == "done"


def test_auto_rebase_lands_what_a_plain_merge_cannot(repo: Path) -> None:
    env = make_env(repo, on_conflict="auto_rebase")
    (repo / "v.txt").write_text("a\n", encoding="utf-8")
    git(repo, "add", "v.txt")
    git(repo, "commit", "-q", "-m", "v")
    task = env.task()
    scratch = repo.parent / "rb"
    git(repo, "worktree", "add", "-q", "-b", "ld/rb", str(scratch), "main")
    for text in ("c\n", "d\n"):  # first the change main also gets, then one on top
        (scratch / "v.txt").write_text(text, encoding="utf-8")
        git(scratch, "commit", "-q", "-am", f"v={text.strip()}")
    git(repo, "worktree", "remove", str(scratch))
    (repo / "v.txt").write_text("c\n", encoding="utf-8")
    git(repo, "commit", "-q", "-am", "main also sets c")

    outcome = env.queue.merge(task, "ld/rb")

    assert outcome.status == "merged", outcome.message
    assert (repo / "v.txt").read_text(encoding="utf-8") == "d\n"
    assert "rebas" in (env.store.get(task.id).closed_reason or "")
    assert [t for t in env.store.all() if t.kind == "conflict"] == []
    assert_never_mid_merge(env)


def test_auto_rebase_that_conflicts_creates_the_conflict_task(repo: Path) -> None:
    env = make_env(repo, on_conflict="auto_rebase")
    first, a, second, b = two_conflicting_branches(env)
    env.queue.merge(first, a)
    branch_tip = env.tip(b)

    outcome = env.queue.merge(second, b)

    assert outcome.status == "conflict"
    assert env.tip(b) == branch_tip  # the failed rebase left the branch alone
    assert [e["ok"] for e in env.events.read() if e["event"] == "merge_rebase"] == [False]
    assert_never_mid_merge(env)


# ---- the user's checkout -------------------------------------------------------------------


def test_dirty_file_the_merge_touches_makes_it_wait_and_keeps_the_change(env: Env) -> None:
    task = env.task()
    branch = env.branch("ld/readme", {"README.md": "# demo\nmore\n"})
    (env.repo / "README.md").write_text("# my own edit\n", encoding="utf-8")
    before = env.tip()

    outcome = env.queue.merge(task, branch)

    assert outcome.status == "waiting" and outcome.person  # only the user can move it on
    assert "README.md" in outcome.message and str(env.repo) in outcome.message
    [entry] = env.queue.pending()
    assert entry["person"] and any("README.md" in step for step in entry["steps"])
    assert env.tip() == before
    assert (env.repo / "README.md").read_text(encoding="utf-8") == "# my own edit\n"
    assert env.store.get(task.id).status == "in_progress"
    assert env.queue.pending_task_ids() == {task.id}
    assert env.queue.retry_pending() == []  # still blocked: nothing new to report

    git(env.repo, "checkout", "--", "README.md")  # the user puts their change away
    [retried] = env.queue.retry_pending()

    assert retried.status == "merged"
    assert (env.repo / "README.md").read_text(encoding="utf-8") == "# demo\nmore\n"
    assert env.store.get(task.id).merged_commit == env.tip()
    assert [e["event"] for e in env.events.read()].count("merge_needs_person") == 1


def test_dirty_file_the_merge_does_not_touch_is_kept(env: Env) -> None:
    task = env.task()
    branch = env.branch("ld/other", {"other.py": "y = 2\n"})
    (env.repo / "README.md").write_text("# my own edit\n", encoding="utf-8")
    (env.repo / "notes.txt").write_text("mine\n", encoding="utf-8")

    outcome = env.queue.merge(task, branch)

    assert outcome.status == "merged", outcome.message
    assert (env.repo / "other.py").exists()
    assert (env.repo / "README.md").read_text(encoding="utf-8") == "# my own edit\n"
    assert (env.repo / "notes.txt").read_text(encoding="utf-8") == "mine\n"
    assert git(env.repo, "diff", "--name-only") == "README.md"
    assert git(env.repo, "ls-files", "--others", "--exclude-standard") == "notes.txt"


@pytest.mark.parametrize("ignored", [False, True])
def test_untracked_or_ignored_file_the_merge_would_create_makes_it_wait(
    env: Env, ignored: bool
) -> None:
    task = env.task()
    name = "build.log" if ignored else "new.txt"
    if ignored:
        (env.repo / ".gitignore").write_text("*.log\n", encoding="utf-8")
        git(env.repo, "add", ".gitignore")
        git(env.repo, "commit", "-q", "-m", "ignore logs")
    branch = env.branch("ld/new", {name: "from the branch\n"})
    (env.repo / name).write_text("the user's own\n", encoding="utf-8")

    outcome = env.queue.merge(task, branch)

    assert outcome.status == "waiting" and name in outcome.message
    assert (env.repo / name).read_text(encoding="utf-8") == "the user's own\n"


def test_user_committing_while_it_waits_makes_it_merge_onto_the_new_tip(env: Env) -> None:
    (env.repo / "five.txt").write_text("1\n2\n3\n4\n5\n", encoding="utf-8")
    git(env.repo, "add", "five.txt")
    git(env.repo, "commit", "-q", "-m", "five")
    task = env.task()
    branch = env.branch("ld/five", {"five.txt": "one\n2\n3\n4\n5\n"})
    (env.repo / "five.txt").write_text("1\n2\n3\n4\nfive\n", encoding="utf-8")
    assert env.queue.merge(task, branch).status == "waiting"
    git(env.repo, "commit", "-q", "-am", "the user's own commit")
    users_commit = env.tip()

    [outcome] = env.queue.retry_pending()

    assert outcome.status == "merged", outcome.message
    assert (env.repo / "five.txt").read_text(encoding="utf-8") == "one\n2\n3\n4\nfive\n"
    assert git(env.repo, "merge-base", "--is-ancestor", users_commit, env.tip()) == ""
    assert git(env.repo, "status", "--porcelain") == ""


def test_base_checked_out_nowhere_moves_by_compare_and_swap(env: Env) -> None:
    git(env.repo, "checkout", "-q", "-b", "elsewhere")
    task = env.task()
    branch = env.branch("ld/cas", {"cas.py": "\n"})

    outcome = env.queue.merge(task, branch)

    assert outcome.status == "merged"
    assert env.tip() == outcome.commit
    assert git(env.repo, "rev-parse", "--abbrev-ref", "HEAD") == "elsewhere"
    assert not (env.repo / "cas.py").exists()


def test_a_rebase_of_the_base_in_progress_makes_it_wait(env: Env) -> None:
    git(env.repo, "checkout", "-q", "-b", "side")
    (env.repo / "README.md").write_text("side\n", encoding="utf-8")
    git(env.repo, "commit", "-q", "-am", "side")
    git(env.repo, "checkout", "-q", "main")
    (env.repo / "README.md").write_text("main\n", encoding="utf-8")
    git(env.repo, "commit", "-q", "-am", "main")
    subprocess.run(["git", "rebase", "side"], cwd=env.repo, capture_output=True, check=False)
    task = env.task()
    branch = env.branch("ld/x", {"x.py": "\n"}, base="refs/heads/main")

    outcome = env.queue.merge(task, branch)

    assert outcome.status == "waiting" and "rebase" in outcome.message


# ---- gates ---------------------------------------------------------------------------------


def test_a_branch_that_edits_the_config_is_rejected(env: Env) -> None:
    task = env.task()
    branch = env.branch("ld/cfg", {CONFIG_FILENAME: '{"num_workers": 64}\n', "ok.py": "\n"})
    before = env.tip()

    outcome = env.queue.merge(task, branch)

    assert outcome.status == "rejected"
    assert CONFIG_FILENAME in outcome.message
    assert env.tip() == before
    assert env.store.get(task.id).status == "in_progress"
    [event] = [e for e in env.events.read() if e["event"] == "merge_rejected"]
    assert CONFIG_FILENAME in event["reason"]


def test_renaming_a_protected_file_away_is_rejected(env: Env) -> None:
    task = env.task()
    scratch = env.repo.parent / "mv"
    git(env.repo, "worktree", "add", "-q", "-b", "ld/mv", str(scratch), "main")
    git(scratch, "mv", CONFIG_FILENAME, "renamed.json")
    git(scratch, "commit", "-q", "-m", "rename")
    git(env.repo, "worktree", "remove", str(scratch))

    assert env.queue.merge(task, "ld/mv").status == "rejected"


def test_configured_protected_paths_support_double_star(repo: Path) -> None:
    env = make_env(repo, protected_paths=["infra/**/*.tf"])
    task = env.task()

    outcome = env.queue.merge(task, env.branch("ld/tf", {"infra/prod/eu/main.tf": "x\n"}))

    assert outcome.status == "rejected" and "infra/prod/eu/main.tf" in outcome.message
    ok = env.queue.merge(env.task(), env.branch("ld/ok", {"infra/readme.md": "x\n"}))
    assert ok.status == "merged"


def gate_env(repo: Path, script: str, **config: Any) -> Env:
    return make_env(repo, test_command=[sys.executable, "-c", script], **config)


def test_a_failing_test_command_blocks_the_merge_with_its_output(repo: Path) -> None:
    env = gate_env(repo, "import sys; print('assertion exploded'); sys.exit(3)")
    task = env.task()
    before = env.tip()

    outcome = env.queue.merge(task, env.branch("ld/t", {"t.py": "\n"}))

    assert outcome.status == "rejected"
    assert "exit code 3" in outcome.message and "assertion exploded" in outcome.message
    assert env.tip() == before
    assert env.store.get(task.id).status == "in_progress"
    [gate] = [e for e in env.events.read() if e["event"] == "test_gate"]
    assert gate["passed"] is False and gate["exit_code"] == 3


def test_a_missing_test_command_blocks_the_merge(repo: Path) -> None:
    env = make_env(repo, test_command="no-such-test-runner-xyz --all")
    task = env.task()
    before = env.tip()

    outcome = env.queue.merge(task, env.branch("ld/t", {"t.py": "\n"}))

    assert outcome.status == "rejected" and "127" in outcome.message
    assert env.tip() == before


def test_a_test_command_that_times_out_is_killed_with_its_children(repo: Path) -> None:
    pid_file = repo.parent / "grandchild.pid"
    script = (
        "import subprocess, sys, time, pathlib\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"pathlib.Path({str(pid_file)!r}).write_text(str(child.pid), encoding='utf-8')\n"
        "time.sleep(60)\n"
    )
    env = gate_env(repo, script, test_timeout_secs=1)
    task = env.task()
    before = env.tip()

    outcome = env.queue.merge(task, env.branch("ld/t", {"t.py": "\n"}))

    assert outcome.status == "rejected" and "timed out" in outcome.message
    assert env.tip() == before
    grandchild = int(pid_file.read_text(encoding="utf-8"))
    assert not psutil.pid_exists(grandchild) or (
        psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    )


def test_the_test_command_runs_on_the_merged_tree(repo: Path) -> None:
    check = (
        "import os, sys; sys.exit(0 if os.path.exists('a.py') and os.path.exists('b.py') else 1)"
    )
    env = gate_env(repo, check)
    first, second = env.task(), env.task()
    a = env.branch("ld/a", {"a.py": "\n"})
    b = env.branch("ld/b", {"b.py": "\n"})

    assert env.queue.merge(first, a).status == "rejected"  # a alone: b.py is missing
    git(env.repo, "merge", "-q", "--no-edit", b)  # now main has b.py
    assert env.queue.merge(first, a).status == "merged"
    assert [e["passed"] for e in env.events.read() if e["event"] == "test_gate"] == [False, True]
    assert env.store.get(second.id).status == "in_progress"


def test_repeated_gate_failures_end_in_failed(repo: Path) -> None:
    env = gate_env(repo, "raise SystemExit(1)", max_merge_attempts=2)
    task = env.task()
    branch = env.branch("ld/t", {"t.py": "\n"})

    assert env.queue.merge(task, branch).status == "rejected"
    outcome = env.queue.merge(task, branch)

    assert outcome.status == "failed"
    assert env.store.get(task.id).status == "failed"


# ---- slot, records, identity, recovery -----------------------------------------------------


def test_a_killed_holder_of_the_merge_slot_does_not_block(env: Env) -> None:
    # A real process takes the slot and is killed (as a crashed dispatcher would be).
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom filelock import FileLock\nlock = FileLock(sys.argv[1])\n"
            "lock.acquire()\nprint('locked', flush=True)\ntime.sleep(60)\n",
            str(env.queue.slot_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
        encoding="utf-8",
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        env.queue.slot_timeout = 0.2
        task = env.task()
        branch = env.branch("ld/s", {"s.py": "\n"})

        assert env.queue.merge(task, branch).status == "waiting"
        assert "merge slot" in env.queue.pending()[0]["reason"]
    finally:
        psutil.Process(holder.pid).kill()
        holder.wait()
        assert holder.stdout is not None
        holder.stdout.close()
    [outcome] = env.queue.retry_pending()

    assert outcome.status == "merged"


def test_merge_slot_off_still_merges(repo: Path) -> None:
    env = make_env(repo, merge_slot=False)
    assert env.queue.merge(env.task(), env.branch("ld/n", {"n.py": "\n"})).status == "merged"
    assert not env.queue.slot_path.exists()


def test_an_error_leaves_the_merge_waiting_with_the_reason(repo: Path) -> None:
    env = make_env(repo, branch="trunk")  # no such branch
    task = env.task()

    outcome = env.queue.merge(task, env.branch("ld/e", {"e.py": "\n"}))

    assert outcome.status == "waiting" and "trunk" in outcome.message
    assert env.queue.pending_task_ids() == {task.id}
    assert "merge_error" in env.event_names()
    git(env.repo, "branch", "trunk", "main")
    [retried] = env.queue.retry_pending()
    assert retried.status == "merged"
    assert env.tip("trunk") == retried.commit


def test_a_vanished_branch_fails_the_task(env: Env) -> None:
    task = env.task()
    outcome = env.queue.merge(task, "ld/never-existed")
    assert outcome.status == "failed"
    assert "no longer exists" in (env.store.get(task.id).closed_reason or "")


def test_merges_commit_as_localdispatch_without_a_git_identity(
    env: Env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    task = env.task()
    branch = env.branch("ld/id", {"id.py": "\n"})
    for name in ("AUTHOR", "COMMITTER"):
        monkeypatch.delenv(f"GIT_{name}_NAME")
        monkeypatch.delenv(f"GIT_{name}_EMAIL")
    monkeypatch.delenv("EMAIL", raising=False)
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-config"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    queue = MergeQueue(env.queue.config, env.layout, env.store, env.events)

    outcome = queue.merge(task, branch)

    assert outcome.status == "merged", outcome.message
    assert git(env.repo, "log", "-1", "--format=%cn %ce") == "localdispatch localdispatch@localhost"


def test_a_merged_branch_still_checked_out_is_deleted_once_released(env: Env) -> None:
    task = env.task()
    held = env.repo.parent / "held"
    git(env.repo, "worktree", "add", "-q", "-b", "ld/held", str(held), "main")
    (held / "h.py").write_text("\n", encoding="utf-8")
    git(held, "add", "h.py")
    git(held, "commit", "-q", "-m", "h")

    assert env.queue.merge(task, "ld/held").status == "merged"
    assert git(env.repo, "branch", "--list", "ld/held") != ""
    git(held, "checkout", "-q", "--detach")
    env.queue.retry_pending()

    assert git(env.repo, "branch", "--list", "ld/held") == ""


def test_branches_are_kept_when_configured(repo: Path) -> None:
    env = make_env(repo, delete_merged_branches=False)
    env.queue.merge(env.task(), env.branch("ld/keep", {"k.py": "\n"}))
    assert git(env.repo, "branch", "--list", "ld/keep") != ""


def test_a_merge_journal_left_by_a_crash_is_finished(env: Env) -> None:
    task = env.task()
    branch = env.branch("ld/j", {"j.py": "\n"})
    with env.queue.state.edit() as book:  # what a dispatcher killed mid-merge leaves
        book.put(PendingMerge(task.id, branch, "merging", "merging", "2024-01-01T00:00:00Z"))
    fresh = MergeQueue(env.queue.config, env.layout, env.store, env.events)
    assert fresh.pending_task_ids() == {task.id}

    [outcome] = fresh.retry_pending()

    assert outcome.status == "merged"
    assert env.store.get(task.id).status == "done"


def test_a_merge_that_already_landed_is_recorded_not_redone(env: Env) -> None:
    task = env.task()
    branch = env.branch("ld/dup", {"d.py": "\n"})
    git(env.repo, "merge", "-q", "--no-edit", branch)
    tip = env.tip()

    outcome = env.queue.merge(task, branch)

    assert outcome.status == "merged" and outcome.commit == tip == env.tip()


def test_a_deleted_integration_worktree_is_recreated(env: Env) -> None:
    env.queue.merge(env.task(), env.branch("ld/1", {"1.py": "\n"}))
    shutil.rmtree(env.queue.integration_path)
    queue = MergeQueue(env.queue.config, env.layout, env.store, env.events)

    assert queue.merge(env.task(), env.branch("ld/2", {"2.py": "\n"})).status == "merged"
    assert (env.repo / "1.py").exists() and (env.repo / "2.py").exists()


def test_many_merges_in_a_row_each_land(env: Env) -> None:
    for n in range(5):
        outcome = env.queue.merge(env.task(), env.branch(f"ld/m{n}", {f"m{n}.py": "\n"}))
        assert outcome.status == "merged"
    assert len(git(env.repo, "log", "--merges", "--format=%H").splitlines()) == 5
    assert git(env.repo, "status", "--porcelain") == ""


# ---- pure pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "hit"),
    [
        ("dispatch_config.json", "dispatch_config.json", True),
        ("dispatch_config.json", "sub/dispatch_config.json", False),
        (".dispatch/**", ".dispatch/x/y.json", True),
        ("**/*.lock", "a/b/c.lock", True),
        ("**/*.lock", "c.lock", True),
        ("scripts/**/*.py", "scripts/run.py", True),
        ("scripts/**/*.py", "scripts/a/b/run.py", True),
        ("scripts/*.py", "scripts/a/run.py", False),
        ("scripts", "scripts/run.py", True),
        ("scripts/", "scripts/run.py", True),
        ("scripts", "scripts2/run.py", False),
        ("*.json", "a/b.json", False),
        ("/task_queue.json", "task_queue.json", True),
        ("tools\\gen.py", "tools/gen.py", True),
        ("f?le.[ch]", "file.c", True),
        ("f?le.[!ch]", "file.c", False),
    ],
)
def test_protected_patterns(pattern: str, path: str, hit: bool) -> None:
    assert (PathGate([pattern], ignore_case=False).matching(path) is not None) is hit


def test_protected_patterns_ignore_case_where_the_file_system_does() -> None:
    assert PathGate(["dispatch_config.json"], ignore_case=True).matching("Dispatch_Config.JSON")
    assert not PathGate(["dispatch_config.json"], ignore_case=False).matching(
        "Dispatch_Config.JSON"
    )


def test_default_protected_paths_cover_config_launchers_and_state(env: Env) -> None:
    gate = PathGate(env.layout.default_protected_paths())
    for path in (
        CONFIG_FILENAME,
        "dispatch_workers.py",
        ".dispatch/events.jsonl",
        "task_queue.json",
    ):
        assert gate.matching(path), path
    assert gate.matching("src/app.py") is None


def test_blocked_reason_names_the_users_files() -> None:
    stderr = (
        "error: Your local changes to the following files would be overwritten by merge:\n"
        "\ta.py\n\tdir/b.py\nPlease commit your changes or stash them before you merge.\n"
        "error: The following untracked working tree files would be overwritten by merge:\n"
        "\tnew.txt\nPlease move or remove them before you merge.\nAborting\n"
    )
    assert blocked_files(stderr) == {"changed": ["a.py", "dir/b.py"], "untracked": ["new.txt"]}
    reason = blocked_reason("main", Path("my repo"), stderr)
    assert "a.py, dir/b.py" in reason and "new.txt" in reason and "my repo" in reason
    assert "MERGE_HEAD exists" in blocked_reason("main", Path("r"), "fatal: MERGE_HEAD exists\n")


def test_parse_worktrees() -> None:
    text = (
        "worktree /r/my repo\nHEAD abc\nbranch refs/heads/main\n\n"
        "worktree /r/w 1\nHEAD def\ndetached\n\nworktree /bare\nbare\n"
    )
    trees = parse_worktrees(text)
    assert [(t.path, t.branch) for t in trees] == [
        (Path("/r/my repo"), "refs/heads/main"),
        (Path("/r/w 1"), None),
    ]


def _task(status: str = "in_progress", **extra: Any) -> Task:
    return Task(id=extra.pop("id", "t-1"), title="x", status=status, **extra)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("state", "original", "conflict", "auto", "action"),
    [
        ("waiting", _task(), None, True, "retry"),
        ("merging", _task(), None, True, "retry"),
        ("waiting", None, None, True, "drop"),
        ("waiting", _task("open"), None, True, "drop"),
        ("waiting", _task("done"), None, True, "drop"),
        ("conflict", _task(), _task("open", id="t-2"), True, "skip"),
        ("conflict", _task(), _task("in_progress", id="t-2"), True, "skip"),
        ("conflict", _task(), _task("done", id="t-2"), True, "retry"),
        ("conflict", _task(), _task("done", id="t-2"), False, "check_merged"),
        ("conflict", _task(), _task("failed", id="t-2"), True, "person"),
        ("conflict", _task(), _task("cancelled", id="t-2"), True, "fail"),
        ("conflict", _task(), None, True, "create_task"),
    ],
)
def test_next_step(
    state: str, original: Task | None, conflict: Task | None, auto: bool, action: str
) -> None:
    entry = PendingMerge("t-1", "ld/x", state, "r", "now", conflict_task="t-2")  # type: ignore[arg-type]
    assert next_step(entry, original, conflict, auto).action == action


def test_next_step_recreates_a_missing_conflict_task() -> None:
    entry = PendingMerge("t-1", "ld/x", "conflict", "r", "now")
    assert next_step(entry, _task(), None, True).action == "create_task"


def test_a_corrupt_pending_file_is_reported_and_left_alone(env: Env) -> None:
    env.layout.pending_merges.parent.mkdir(parents=True, exist_ok=True)
    env.layout.pending_merges.write_text("{not json", encoding="utf-8")
    with pytest.raises(StoreError, match=r"pending_merges\.json"):
        env.queue.pending()
    assert env.layout.pending_merges.read_text(encoding="utf-8") == "{not json"
