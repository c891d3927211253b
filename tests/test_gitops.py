"""Slot worktrees and task branches in real repositories (folders with spaces)."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import git
from localdispatch import gitops
from localdispatch.errors import GitError
from localdispatch.tasks import Task


def commit_in(tree: Path, name: str, text: str, message: str = "work") -> str:
    (tree / name).write_text(text, encoding="utf-8")
    git(tree, "add", name)
    git(tree, "commit", "-q", "-m", message)
    return git(tree, "rev-parse", "HEAD")


def slot(repo: Path, n: int = 1) -> Path:
    return repo / ".dispatch" / "worktrees" / f"w{n}"


def test_task_branch_names() -> None:
    assert gitops.task_branch(Task(id="t-4", title="Fix the CLI!")) == "ld/t-4-fix-the-cli"
    conflict = Task(id="t-9", title="Resolve", kind="conflict", branch="ld/t-4-fix-the-cli")
    assert gitops.task_branch(conflict) == "ld/t-4-fix-the-cli"


def test_fresh_branch_in_a_slot_worktree_leaves_the_user_alone(repo: Path) -> None:
    (repo / "mine.txt").write_text("uncommitted work of the user\n", encoding="utf-8")
    tree = slot(repo)
    start = gitops.prepare_task_worktree(repo, tree, "main", "ld/t-1-a")
    assert start == git(repo, "rev-parse", "main")
    assert gitops.current_branch(tree) == "ld/t-1-a"
    assert gitops.current_branch(repo) == "main"
    assert (repo / "mine.txt").read_text(encoding="utf-8") == "uncommitted work of the user\n"
    assert not (tree / "mine.txt").exists()
    commit_in(tree, "a.txt", "a\n")
    commit_in(tree, "b.txt", "b\n")
    assert len(gitops.commits_between(repo, start, "ld/t-1-a")) == 2
    assert gitops.commits_between(repo, start, "ld/no-such-branch") == []


def test_a_slot_is_reused_and_reset_for_the_next_task(repo: Path) -> None:
    tree = slot(repo)
    gitops.prepare_task_worktree(repo, tree, "main", "ld/t-1-a")
    commit_in(tree, "a.txt", "a\n")
    (tree / "junk.txt").write_text("untracked\n", encoding="utf-8")
    (tree / "README.md").write_text("dirty\n", encoding="utf-8")
    gitops.release_worktree(tree)
    assert gitops.current_branch(tree) is None
    git(repo, "branch", "-D", "ld/t-1-a")  # possible only because the worktree let go of it
    gitops.prepare_task_worktree(repo, tree, "main", "ld/t-2-b")
    assert gitops.current_branch(tree) == "ld/t-2-b"
    assert not (tree / "junk.txt").exists() and not (tree / "a.txt").exists()
    assert (tree / "README.md").read_text(encoding="utf-8") == "# demo\n"
    assert len([w for w in gitops.list_worktrees(repo)]) == 2


def test_the_base_moving_on_is_picked_up(repo: Path) -> None:
    tree = slot(repo)
    gitops.prepare_task_worktree(repo, tree, "main", "ld/t-1-a")
    gitops.release_worktree(tree)
    new_tip = commit_in(repo, "base.txt", "moved\n")
    assert gitops.prepare_task_worktree(repo, tree, "main", "ld/t-2-b") == new_tip
    assert (tree / "base.txt").exists()


def test_a_retry_resets_the_old_branch(repo: Path) -> None:
    tree = slot(repo)
    gitops.prepare_task_worktree(repo, tree, "main", "ld/t-1-a")
    commit_in(tree, "a.txt", "a\n")
    gitops.release_worktree(tree)
    start = gitops.prepare_task_worktree(repo, tree, "main", "ld/t-1-a")
    assert gitops.commits_between(repo, start, "ld/t-1-a") == []


def test_missing_base_branch_and_the_main_checkout_are_refused(repo: Path) -> None:
    with pytest.raises(GitError, match="does not exist"):
        gitops.prepare_task_worktree(repo, slot(repo), "trunk", "ld/t-1-a")
    with pytest.raises(GitError, match="main checkout"):
        gitops.ensure_worktree(repo, repo, "main")


def test_half_made_and_deleted_worktrees_are_rebuilt(repo: Path) -> None:
    tree = slot(repo)
    tree.mkdir(parents=True)
    (tree / "leftover.txt").write_text("from a killed `git worktree add`\n", encoding="utf-8")
    gitops.prepare_task_worktree(repo, tree, "main", "ld/t-1-a")
    assert not (tree / "leftover.txt").exists()
    gitops.release_worktree(tree)
    gitops.remove_tree(tree)
    gitops.prepare_task_worktree(repo, tree, "main", "ld/t-2-b")
    assert gitops.current_branch(tree) == "ld/t-2-b"


def test_cleanup_frees_branches_and_deletes_only_empty_unneeded_ones(repo: Path) -> None:
    tree = slot(repo)
    gitops.prepare_task_worktree(repo, tree, "main", "ld/t-1-a")
    commit_in(tree, "a.txt", "a\n")  # t-1 has real work: must survive
    git(repo, "branch", "ld/t-2-empty")
    git(repo, "branch", "ld/t-3-kept")
    git(repo, "branch", "user-branch")
    report = gitops.cleanup_stale(
        repo, repo / ".dispatch" / "worktrees", "w", ["ld/t-3-kept"], "main"
    )
    assert report["detached"] == [str(tree)]
    assert report["branches"] == ["ld/t-2-empty"]
    assert gitops.branch_exists(repo, "ld/t-1-a")
    assert gitops.branch_exists(repo, "ld/t-3-kept")
    assert gitops.branch_exists(repo, "user-branch")
    assert gitops.current_branch(repo) == "main"


def make_conflict(repo: Path) -> str:
    tree = slot(repo, 2)
    gitops.prepare_task_worktree(repo, tree, "main", "ld/t-1-a")
    commit_in(tree, "README.md", "# from the branch\n")
    gitops.release_worktree(tree)
    commit_in(repo, "README.md", "# from main\n")
    return "ld/t-1-a"


def test_conflict_worktree_starts_the_merge_and_an_unresolved_one_is_aborted(
    repo: Path,
) -> None:
    branch = make_conflict(repo)
    tree = slot(repo)
    tip = gitops.prepare_conflict_worktree(repo, tree, "main", branch)
    assert tip == git(repo, "rev-parse", branch)
    assert gitops.current_branch(tree) == branch
    assert gitops.merge_in_progress(tree)
    assert "<<<<<<<" in (tree / "README.md").read_text(encoding="utf-8")
    assert gitops.finish_merge(tree) is False  # nothing resolved: aborted, no commit
    assert not gitops.merge_in_progress(tree)
    assert git(repo, "rev-parse", branch) == tip


def test_a_resolved_but_uncommitted_merge_is_committed(repo: Path) -> None:
    branch = make_conflict(repo)
    tree = slot(repo)
    tip = gitops.prepare_conflict_worktree(repo, tree, "main", branch)
    (tree / "README.md").write_text("# both\n", encoding="utf-8")
    git(tree, "add", "README.md")  # what Aider does before its commit is refused
    assert gitops.finish_merge(tree) is True
    commits = gitops.commits_between(repo, tip, branch)
    assert len(commits) >= 2  # the merge commit and main's commit it brings in
    assert git(repo, "merge-base", "--is-ancestor", "main", branch) == ""


def test_conflict_task_on_a_missing_branch(repo: Path) -> None:
    with pytest.raises(GitError, match="conflict task"):
        gitops.prepare_conflict_worktree(repo, slot(repo), "main", "ld/gone")
