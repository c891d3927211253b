"""Slot repositories and task branches in real repositories (folders with spaces).

Each slot is a private clone that borrows the user's objects and shares nothing else; these
tests try to reach the user's repository from a slot the way a hostile worker would.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import git
from localdispatch.errors import GitError
from localdispatch.git import branches
from localdispatch.git.clones import (
    PrivateClone,
    TamperedClone,
    ceiling_env,
    clone_at,
    remove_tree,
)
from localdispatch.tasks import Task


def commit_in(tree: Path, name: str, text: str, message: str = "work") -> str:
    (tree / name).write_text(text, encoding="utf-8")
    git(tree, "add", name)
    git(tree, "commit", "-q", "-m", message)
    return git(tree, "rev-parse", "HEAD")


def slot(repo: Path, n: int = 1) -> PrivateClone:
    return clone_at(repo, repo / ".dispatch" / "worktrees" / f"w{n}")


def refs(repo: Path) -> str:
    return git(repo, "for-each-ref", "--format=%(refname) %(objectname)")


def test_task_branch_names() -> None:
    assert branches.task_branch(Task(id="t-4", title="Fix the CLI!")) == "ld/t-4-fix-the-cli"
    conflict = Task(id="t-9", title="Resolve", kind="conflict", branch="ld/t-4-fix-the-cli")
    assert branches.task_branch(conflict) == "ld/t-4-fix-the-cli"


def test_a_slot_is_a_private_clone_and_leaves_the_user_alone(repo: Path) -> None:
    (repo / "mine.txt").write_text("uncommitted work of the user\n", encoding="utf-8")
    before = refs(repo)
    clone = slot(repo)
    start = branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    tree = clone.path
    assert start == git(repo, "rev-parse", "main")
    assert (tree / ".git").is_dir()  # a repository of its own, not a worktree
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1
    assert branches.current_branch(tree) == "ld/t-1-a"
    assert git(tree, "rev-parse", "main") == start  # the base is there by name too
    assert branches.current_branch(repo) == "main"
    assert (repo / "mine.txt").read_text(encoding="utf-8") == "uncommitted work of the user\n"
    assert not (tree / "mine.txt").exists()
    commit_in(tree, "a.txt", "a\n")
    commit_in(tree, "b.txt", "b\n")
    assert refs(repo) == before  # nothing reached the user's refs...
    assert len(branches.commits_between(tree, start, "ld/t-1-a")) == 2
    tip = branches.publish_branch(clone, "ld/t-1-a", start, force=True)  # ...until it is sent
    assert tip == git(tree, "rev-parse", "HEAD")
    assert len(branches.commits_between(repo, start, "ld/t-1-a")) == 2
    assert branches.publish_branch(clone, "ld/no-such-branch", start, force=True) is None


def test_a_slot_is_reused_and_reset_for_the_next_task(repo: Path) -> None:
    clone = slot(repo)
    tree = clone.path
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    commit_in(tree, "a.txt", "a\n")
    (tree / "junk.txt").write_text("untracked\n", encoding="utf-8")
    (tree / "README.md").write_text("dirty\n", encoding="utf-8")
    branches.prepare_task_slot(clone, "main", "ld/t-2-b")
    assert branches.current_branch(tree) == "ld/t-2-b"
    assert not (tree / "junk.txt").exists() and not (tree / "a.txt").exists()
    assert (tree / "README.md").read_text(encoding="utf-8") == "# demo\n"


def test_the_base_moving_on_is_picked_up(repo: Path) -> None:
    clone = slot(repo)
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    new_tip = commit_in(repo, "base.txt", "moved\n")
    assert branches.prepare_task_slot(clone, "main", "ld/t-2-b") == new_tip
    assert (clone.path / "base.txt").exists()


def test_a_retry_resets_the_old_branch(repo: Path) -> None:
    clone = slot(repo)
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    commit_in(clone.path, "a.txt", "a\n")
    start = branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    assert branches.commits_between(clone.path, start, "ld/t-1-a") == []


def test_a_missing_base_branch_is_refused(repo: Path) -> None:
    with pytest.raises(GitError, match="does not exist"):
        branches.prepare_task_slot(slot(repo), "trunk", "ld/t-1-a")


def test_half_made_and_deleted_slots_are_rebuilt(repo: Path) -> None:
    clone = slot(repo)
    clone.path.mkdir(parents=True)
    (clone.path / "leftover.txt").write_text("from a killed run\n", encoding="utf-8")
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    assert not (clone.path / "leftover.txt").exists()
    remove_tree(clone.path)
    branches.prepare_task_slot(clone, "main", "ld/t-2-b")
    assert branches.current_branch(clone.path) == "ld/t-2-b"


def test_a_worktree_left_by_an_older_version_becomes_a_clone(repo: Path) -> None:
    path = repo / ".dispatch" / "worktrees" / "w1"
    git(repo, "worktree", "add", "-q", "--detach", str(path), "main")
    branches.prepare_task_slot(clone_at(repo, path), "main", "ld/t-1-a")
    assert (path / ".git").is_dir()
    assert git(repo, "worktree", "list", "--porcelain").count("worktree ") == 1


def test_cleanup_deletes_only_empty_unneeded_branches(repo: Path) -> None:
    clone = slot(repo)
    start = branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    commit_in(clone.path, "a.txt", "a\n")  # t-1 has real work: must survive
    branches.publish_branch(clone, "ld/t-1-a", start, force=True)
    git(repo, "branch", "ld/t-2-empty")
    git(repo, "branch", "ld/t-3-kept")
    git(repo, "branch", "user-branch")
    report = branches.cleanup_stale(repo, ["ld/t-3-kept"], "main")
    assert report["branches"] == ["ld/t-2-empty"]
    assert branches.branch_exists(repo, "ld/t-1-a")
    assert branches.branch_exists(repo, "ld/t-3-kept")
    assert branches.branch_exists(repo, "user-branch")
    assert branches.current_branch(repo) == "main"


def make_conflict(repo: Path) -> str:
    clone = slot(repo, 2)
    start = branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    commit_in(clone.path, "README.md", "# from the branch\n")
    branches.publish_branch(clone, "ld/t-1-a", start, force=True)
    commit_in(repo, "README.md", "# from main\n")
    return "ld/t-1-a"


def test_conflict_slot_starts_the_merge_and_an_unresolved_one_is_aborted(repo: Path) -> None:
    branch = make_conflict(repo)
    clone = slot(repo)
    tree = clone.path
    tip = branches.prepare_conflict_slot(clone, "main", branch)
    assert tip == git(repo, "rev-parse", branch)
    assert branches.current_branch(tree) == branch
    assert branches.merge_in_progress(tree)
    assert "<<<<<<<" in (tree / "README.md").read_text(encoding="utf-8")
    assert branches.finish_merge(tree) is False  # nothing resolved: aborted, no commit
    assert not branches.merge_in_progress(tree)
    assert git(repo, "rev-parse", branch) == tip


def test_a_resolved_but_uncommitted_merge_is_committed_and_published(repo: Path) -> None:
    branch = make_conflict(repo)
    clone = slot(repo)
    tree = clone.path
    tip = branches.prepare_conflict_slot(clone, "main", branch)
    (tree / "README.md").write_text("# both\n", encoding="utf-8")
    git(tree, "add", "README.md")  # what Aider does before its commit is refused
    assert branches.finish_merge(tree) is True
    branches.publish_branch(clone, branch, tip, force=False)
    commits = branches.commits_between(repo, tip, branch)
    assert len(commits) >= 2  # the merge commit and main's commit it brings in
    assert git(repo, "merge-base", "--is-ancestor", "main", branch) == ""


def test_conflict_task_on_a_missing_branch(repo: Path) -> None:
    with pytest.raises(GitError, match="conflict task"):
        branches.prepare_conflict_slot(slot(repo), "main", "ld/gone")


# ---- a hostile worker in its slot -------------------------------------------------------


def worker_git(tree: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """git as a worker runs it: in its tree, with the environment the dispatcher gives it."""
    return subprocess.run(
        ["git", *args],
        cwd=tree,
        capture_output=True,
        text=True,
        encoding="utf-8",
        env={**os.environ, **ceiling_env(tree, tree.parents[2])},
        check=False,
    )


def test_a_worker_moving_main_moves_only_its_own_main(repo: Path) -> None:
    clone = slot(repo)
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    evil = commit_in(clone.path, "evil.txt", "x\n")
    before = refs(repo)
    assert worker_git(clone.path, "update-ref", "refs/heads/main", evil).returncode == 0
    assert worker_git(clone.path, "push", "origin", "HEAD:main").returncode != 0  # no remote
    assert refs(repo) == before


def test_a_worker_that_deletes_its_git_folder_finds_no_repository(repo: Path) -> None:
    clone = slot(repo)
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    evil = commit_in(clone.path, "evil.txt", "x\n")
    before = refs(repo)
    remove_tree(clone.path / ".git")
    result = worker_git(clone.path, "update-ref", "refs/heads/main", evil)
    assert result.returncode != 0 and "not a git repository" in result.stderr
    assert refs(repo) == before


def test_hooks_and_config_a_worker_plants_never_run(repo: Path, tmp_path: Path) -> None:
    clone = slot(repo)
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    proof = tmp_path / "hook ran"
    hook = f"#!/bin/sh\necho ran > '{proof}'\n"
    hooks = clone.git_dir / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("pre-commit", "post-checkout", "reference-transaction", "post-merge"):
        (hooks / name).write_text(hook, encoding="utf-8")
        (hooks / name).chmod(0o755)
    assert not (repo / ".git" / "hooks" / "reference-transaction").exists()  # slot's own
    git(clone.path, "config", "core.hooksPath", str(hooks))
    git(clone.path, "config", "core.fsmonitor", f"sh -c 'echo ran > \"{proof}\"'")
    commit_in(repo, "base.txt", "moved\n")
    start = branches.prepare_task_slot(clone, "main", "ld/t-2-b")  # checkout, clean, refs
    commit_in(clone.path, "a.txt", "a\n")  # git itself (no hooks path any more)
    branches.publish_branch(clone, "ld/t-2-b", start, force=True)
    assert not proof.exists()
    assert "hooksPath" not in (clone.git_dir / "config").read_text(encoding="utf-8")


def test_the_dispatchers_git_runs_no_hook_of_the_users_repository(
    repo: Path, tmp_path: Path
) -> None:
    proof = tmp_path / "hook ran"
    hooks = repo / ".git" / "hooks"
    hooks.mkdir(exist_ok=True)
    for name in ("reference-transaction", "post-checkout", "post-merge", "pre-commit"):
        (hooks / name).write_text(f"#!/bin/sh\necho {name} >> '{proof}'\n", encoding="utf-8")
        (hooks / name).chmod(0o755)
    clone = slot(repo)
    start = branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    commit_in(clone.path, "a.txt", "a\n")
    branches.publish_branch(clone, "ld/t-1-a", start, force=True)  # a ref update in the user's
    branches.cleanup_stale(repo, [], "main")
    assert branches.branch_exists(repo, "ld/t-1-a")
    assert not proof.exists()


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
@pytest.mark.parametrize("target", ["refs", "index", "HEAD", "packed-refs"])
def test_a_git_folder_linked_into_the_users_repository_is_refused(
    repo: Path, target: str
) -> None:
    clone = slot(repo)
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    commit_in(clone.path, "a.txt", "a\n")
    planted = clone.git_dir / target
    if planted.is_dir():
        remove_tree(planted)
    elif planted.exists():
        planted.unlink()
    planted.symlink_to(repo / ".git" / target)
    before = refs(repo)
    with pytest.raises(TamperedClone, match="is a link"):
        clone.secure()
    assert not clone.path.exists()  # discarded, and the link was not followed
    assert (repo / ".git" / target).exists() or target == "packed-refs"
    assert refs(repo) == before
    branches.prepare_task_slot(clone, "main", "ld/t-2-b")  # made anew
    assert branches.current_branch(clone.path) == "ld/t-2-b"


def test_a_commondir_file_pointing_at_the_users_repository_is_refused(repo: Path) -> None:
    clone = slot(repo)
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    (clone.git_dir / "commondir").write_text(str(repo / ".git"), encoding="utf-8")
    before = refs(repo)
    with pytest.raises(TamperedClone, match="commondir"):
        branches.prepare_task_slot(clone, "main", "ld/t-2-b")
    assert refs(repo) == before


def test_a_git_file_in_place_of_the_folder_is_refused(repo: Path) -> None:
    clone = slot(repo)
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    remove_tree(clone.git_dir)
    (clone.path / ".git").write_text(f"gitdir: {repo / '.git'}\n", encoding="utf-8")
    before = refs(repo)
    with pytest.raises(TamperedClone, match="not a plain folder"):
        clone.secure()
    assert refs(repo) == before and git(repo, "status", "--porcelain") == ""


@pytest.mark.skipif(os.name == "nt", reason="symlinks need privileges on Windows")
def test_a_slot_folder_swapped_for_a_link_to_the_users_repository_is_refused(
    repo: Path,
) -> None:
    clone = slot(repo)
    branches.prepare_task_slot(clone, "main", "ld/t-1-a")
    remove_tree(clone.path)
    clone.path.symlink_to(repo, target_is_directory=True)
    lock = repo / ".git" / "index.lock"
    lock.write_text("", encoding="utf-8")  # a git of the user's, running right now
    config_before = (repo / ".git" / "config").read_text(encoding="utf-8")
    before = refs(repo)

    with pytest.raises(TamperedClone, match="replaced by a link"):
        branches.prepare_task_slot(clone, "main", "ld/t-2-b")

    assert lock.exists()  # nothing of the user's was taken for the slot's own
    assert (repo / ".git" / "config").read_text(encoding="utf-8") == config_before
    assert refs(repo) == before and (repo / "README.md").exists()
    assert not os.path.lexists(clone.path)  # the link itself is gone
    lock.unlink()
    branches.prepare_task_slot(clone, "main", "ld/t-2-b")
    assert (clone.path / ".git").is_dir()
