"""Git for the dispatcher: slot worktrees, task branches, commit counts and stale cleanup.

Every worker runs in a worktree of its own under ``worktree_dir`` (one per slot, reused from
task to task); the user's own checkout is never a worker's tree and its branch is never
switched. When a worker finishes, its worktree's HEAD is detached so the task branch is free
to be merged and deleted elsewhere (git refuses to delete a branch that a worktree has out).
"""

from __future__ import annotations

import logging
import re
import shutil
import stat
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import GitError
from .gitcmd import commit_args, git_out, run_git
from .tasks import Task, slugify

log = logging.getLogger(__name__)

BRANCH_PREFIX = "ld/"
_CONFLICT_MARKERS = ("<<<<<<< ", ">>>>>>> ")


def task_branch(task: Task) -> str:
    """The branch of a task: ``ld/<id>-<slug>``; a conflict task works on its own ``branch``."""
    if task.kind == "conflict" and task.branch:
        return task.branch
    return f"{BRANCH_PREFIX}{task.id}-{slugify(task.title, limit=32)}"


@dataclass(frozen=True)
class Worktree:
    path: Path
    head: str | None
    branch: str | None
    locked: bool = False
    prunable: bool = False


def list_worktrees(repo: Path) -> list[Worktree]:
    """Every worktree git knows for ``repo`` (the main checkout first)."""
    out = git_out(["worktree", "list", "--porcelain"], repo)
    result: list[Worktree] = []
    fields: dict[str, str] = {}
    for line in [*out.splitlines(), ""]:
        if line.strip():
            key, _, value = line.partition(" ")
            fields[key] = value
            continue
        if "worktree" in fields:
            branch = fields.get("branch", "")
            result.append(
                Worktree(
                    path=Path(fields["worktree"]),
                    head=fields.get("HEAD"),
                    branch=branch.removeprefix("refs/heads/") or None,
                    locked="locked" in fields,
                    prunable="prunable" in fields,
                )
            )
        fields = {}
    return result


def rev_parse(repo: Path, rev: str) -> str | None:
    """The commit ``rev`` names, or None if it names nothing."""
    result = run_git(["rev-parse", "--verify", "--quiet", rev + "^{commit}"], repo, check=False)
    if result.returncode != 0:
        return None
    return result.stdout.strip() or None


def branch_exists(repo: Path, branch: str) -> bool:
    return rev_parse(repo, f"refs/heads/{branch}") is not None


def commits_between(repo: Path, start: str, branch: str) -> list[str]:
    """Commits on ``branch`` that ``start`` does not have (``git rev-list start..branch``);
    none if the branch does not exist."""
    result = run_git(["rev-list", f"{start}..refs/heads/{branch}", "--"], repo, check=False)
    return result.stdout.split() if result.returncode == 0 else []


def make_editable(worktree: Path, rel_path: str) -> None:
    """Let a worker edit ``rel_path`` although .git/info/exclude ignores it.

    The suggestions file is ignored so it can never be merged, but Aider refuses to edit an
    ignored file. An intent-to-add entry (``git add -N``) makes git stop treating it as
    ignored in this worktree only; whatever the worker then commits is taken out again by
    :func:`drop_state_files` after its lines were harvested.
    """
    target = worktree / rel_path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.touch(exist_ok=True)
    run_git(["add", "--intent-to-add", "--force", "--", rel_path], worktree, check=False)


def changed_files(repo: Path, start: str, branch: str) -> dict[str, str]:
    """Every file ``branch`` changed since ``start``, with git's status letter (``A`` added,
    ``M`` modified, ``D`` deleted, ``T`` type changed; a rename is a deletion and an addition).

    One ``git diff --name-status`` answers what took three calls after each attempt: which
    state files to drop, whether the commits change anything in sum, which files they added.
    Empty if the branch does not exist.
    """
    result = run_git(
        ["diff", "--name-status", "--no-renames", "-z", start, f"refs/heads/{branch}", "--"],
        repo,
        check=False,
    )
    if result.returncode != 0:
        return {}
    fields = result.stdout.split("\0")  # "M\0path\0A\0path\0...", ending in "\0"
    return dict(zip(fields[1::2], fields[0::2], strict=False))


def drop_state_files(worktree: Path, start: str, changed: list[str]) -> list[str]:
    """Take the dispatcher's state files out of the branch checked out in ``worktree``.

    A worker told to append ideas to suggested_tasks.txt may commit that file (Aider commits
    every file it edits). Such a branch would be refused by the protected-path gate and the
    task's real work lost, so the file is untracked in one more commit instead; its lines
    were already harvested from the worktree. ``changed`` are the state files the branch
    changed since ``start`` (see :func:`changed_files`); afterwards none of them differs
    from ``start``. Returns the paths that were dropped.
    """
    if not changed:
        return []
    run_git(["rm", "-r", "--cached", "--quiet", "--ignore-unmatch", "--", *changed], worktree)
    restore = run_git(["ls-tree", "--name-only", start, "--", *changed], worktree).stdout.split()
    if restore:  # tracked in the base already: put the base's version back
        run_git(["checkout", start, "--", *restore], worktree)
    run_git(
        [
            *commit_args(worktree),
            "commit",
            "--quiet",
            "--no-verify",
            "-m",
            "localdispatch: keep state files out of the branch",
        ],
        worktree,
    )
    return changed


def has_net_change(repo: Path, start: str, branch: str) -> bool:
    """Whether ``branch`` differs from ``start`` at all: commits that cancel out are no work."""
    result = run_git(["diff", "--quiet", start, f"refs/heads/{branch}", "--"], repo, check=False)
    return result.returncode != 0


def added_files(repo: Path, start: str, branch: str) -> list[str]:
    """Files that ``branch`` added since ``start`` (repo-relative, forward slashes); none if
    the branch does not exist."""
    result = run_git(
        [
            "diff",
            "--name-only",
            "--no-renames",
            "--diff-filter=A",
            "-z",
            f"{start}...refs/heads/{branch}",
            "--",
        ],
        repo,
        check=False,
    )
    return [name for name in result.stdout.split("\0") if name] if result.returncode == 0 else []


def current_branch(repo: Path) -> str | None:
    result = run_git(["symbolic-ref", "--quiet", "--short", "HEAD"], repo, check=False)
    return result.stdout.strip() or None


def _same_path(first: Path, second: Path) -> bool:
    try:
        return first.resolve() == second.resolve()
    except OSError:
        return False


def _registered(repo: Path, path: Path) -> Worktree | None:
    for tree in list_worktrees(repo):
        if _same_path(tree.path, path):
            return tree
    return None


def ensure_worktree(repo: Path, path: Path, base: str) -> None:
    """Make ``path`` a worktree of ``repo`` (detached at ``base``), reusing a healthy one."""
    if _same_path(repo, path):
        raise GitError(f"Refused to use the main checkout {repo} as a worker's worktree.")
    tree = _registered(repo, path)
    if tree is not None and (path / ".git").is_file():
        return
    if tree is not None:
        run_git(["worktree", "remove", "--force", "--force", str(path)], repo, check=False)
    run_git(["worktree", "prune"], repo, check=False)
    if path.exists():
        log.info("removing half-made worktree folder %s", path)
        remove_tree(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_git(["worktree", "add", "--detach", "--force", str(path), base], repo)


def check_repository(repo: Path, base: str) -> str:
    """Before any work: ``repo`` must be a git repository whose base branch has a commit.
    Returns the base tip; otherwise a GitError that says what to do."""
    if not repo.is_dir():
        raise GitError(
            f"The repository folder {repo} does not exist.",
            hint='Fix "repo_root" in dispatch_config.json (it is relative to that file).',
            path=repo,
        )
    if run_git(["rev-parse", "--git-dir"], repo, check=False).returncode != 0:
        raise GitError(
            f"{repo} is not a git repository.",
            hint='Run `git init` there and make a first commit, or set "repo_root".',
            path=repo,
        )
    if rev_parse(repo, "HEAD") is None and not branch_exists(repo, base):
        raise GitError(
            f"The repository {repo} has no commit yet.",
            hint="Make a first commit (workers start from the tip of the base branch).",
            path=repo,
        )
    return base_tip(repo, base)


def base_tip(repo: Path, base: str) -> str:
    """The commit at the tip of the base branch; GitError naming the fix if it is missing."""
    tip = rev_parse(repo, f"refs/heads/{base}")
    if tip is None:
        raise GitError(
            f"The base branch {base!r} does not exist in {repo}.",
            hint='Create it, or set "branch" in dispatch_config.json to your base branch '
            "(`git branch --show-current` names the one you are on).",
            path=repo,
        )
    return tip


def prepare_task_worktree(repo: Path, path: Path, base: str, branch: str) -> str:
    """Point the worktree at a fresh ``branch`` from the tip of ``base``; return its start.

    A slot that already is a worktree is reused as it is (the checkout resets its files;
    a broken one is rebuilt). A leftover branch of the same name, from an attempt that made
    no commit, is reset.
    """
    start = base_tip(repo, base)
    if _same_path(repo, path) or not (path / ".git").is_file():
        ensure_worktree(repo, path, start)  # refuses the main checkout
    checkout = ["checkout", "--force", "--quiet", "-B", branch, start]
    if run_git(checkout, path, check=False).returncode != 0:
        log.info("worktree %s is broken; rebuilding it", path)
        ensure_worktree(repo, path, start)
        run_git(checkout, path)
    run_git(["clean", "-ffdxq"], path)
    return start


def prepare_conflict_worktree(repo: Path, path: Path, base: str, branch: str) -> str:
    """Check out the existing ``branch`` and start merging ``base`` into it; return its tip.

    The merge is left for the worker to finish: conflicting files hold git's markers and
    the rest is staged. :func:`finish_merge` commits it if the worker resolved but could not
    commit (Aider commits file by file, which git refuses in the middle of a merge).
    """
    ensure_worktree(repo, path, base_tip(repo, base))
    tip = rev_parse(repo, f"refs/heads/{branch}")
    if tip is None:
        raise GitError(
            f"The branch {branch!r} of the conflict task does not exist in {repo}.",
            hint="Close the conflict task; its merge cannot be retried.",
            path=repo,
        )
    run_git(["merge", "--abort"], path, check=False)
    run_git(["checkout", "--force", "--quiet", branch], path)
    run_git(["reset", "--hard", "--quiet", tip], path)
    run_git(["clean", "-ffdxq"], path)
    result = run_git(
        [*commit_args(repo), "merge", "--no-commit", "--no-ff", "--no-edit", base],
        path,
        check=False,
    )
    log.info(
        "conflict worktree %s: merge of %s into %s exited %s", path, base, branch, result.returncode
    )
    return tip


def merge_in_progress(worktree: Path) -> bool:
    return rev_parse(worktree, "MERGE_HEAD") is not None


def finish_merge(worktree: Path) -> bool:
    """Commit a merge the worker resolved but left uncommitted; abort one it did not resolve.

    Returns True if a merge commit was made. Resolved means: no unmerged paths and no
    conflict markers left in the changed files.
    """
    if not merge_in_progress(worktree):
        return False
    unmerged = git_out(["diff", "--name-only", "--diff-filter=U"], worktree).split()
    if unmerged or _has_markers(worktree):
        log.info("merge in %s is unresolved (%s); aborting it", worktree, ", ".join(unmerged))
        run_git(["merge", "--abort"], worktree, check=False)
        return False
    run_git([*commit_args(worktree), "commit", "--no-edit", "--quiet", "--no-verify"], worktree)
    return True


def _has_markers(worktree: Path) -> bool:
    changed = git_out(["diff", "--cached", "--name-only", "-z"], worktree).split("\0")
    for name in filter(None, changed):
        path = worktree / name
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except (OSError, IsADirectoryError):
            continue
        if any(line.startswith(_CONFLICT_MARKERS) for line in text.splitlines()):
            return True
    return False


def release_worktree(path: Path) -> None:
    """Detach the worktree's HEAD so its branch can be merged, checked out or deleted."""
    if (path / ".git").exists():
        if merge_in_progress(path):
            run_git(["merge", "--abort"], path, check=False)
        run_git(["checkout", "--quiet", "--detach"], path, check=False)


def delete_branch(repo: Path, branch: str) -> bool:
    result = run_git(["branch", "--quiet", "-D", branch], repo, check=False)
    return result.returncode == 0


def cleanup_stale(
    repo: Path,
    worktrees_dir: Path,
    prefix: str,
    keep_branches: Iterable[str],
    base: str,
) -> dict[str, list[str]]:
    """Tidy what a killed run may have left: dead worktree records, slot worktrees still
    holding a branch, and ``ld/`` branches with nothing to lose (every commit already in
    ``base``) that no task still needs.

    Slot worktrees (``<prefix><n>`` under ``worktrees_dir``) are kept, since they are
    reused, but detached so no branch stays held. Nothing else is touched.
    """
    report: dict[str, list[str]] = {"detached": [], "branches": []}
    run_git(["worktree", "prune"], repo, check=False)
    pattern = re.compile(re.escape(prefix) + r"\d+")
    for tree in list_worktrees(repo):
        if _same_path(tree.path, repo) or not _inside(tree.path, worktrees_dir):
            continue
        if pattern.fullmatch(tree.path.name) and tree.branch:
            release_worktree(tree.path)
            report["detached"].append(str(tree.path))
    keep = set(keep_branches)
    for branch in merged_task_branches(repo, base):
        if branch not in keep and delete_branch(repo, branch):
            report["branches"].append(branch)
    return report


def merged_task_branches(repo: Path, base: str) -> list[str]:
    """``ld/`` branches whose every commit is already in ``base``."""
    out = git_out(
        [
            "branch",
            "--format=%(refname:short)",
            "--merged",
            f"refs/heads/{base}",
            "--list",
            f"{BRANCH_PREFIX}*",
        ],
        repo,
    )
    return [line.strip() for line in out.splitlines() if line.strip()]


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except (ValueError, OSError):
        return False


def remove_tree(path: Path) -> None:
    """shutil.rmtree that also removes read-only files (git objects on Windows)."""

    def on_error(func: Callable[..., Any], target: str, _info: Any) -> None:
        Path(target).chmod(stat.S_IWRITE)
        func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=on_error)
    else:
        shutil.rmtree(path, onerror=on_error)
