"""Git for the dispatcher: task branches, slot repositories, commit counts and stale cleanup.

Every worker runs in a private clone of its own under ``worktree_dir`` (one per slot, reused
from task to task, see ``clones.py``); the user's own checkout is never a worker's tree, and
nothing of the user's repository but its objects is shared with one. A task branch reaches the
user's repository only when the dispatcher fetches it back after the worker has exited
(:func:`publish_branch`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from localdispatch.errors import GitError
from localdispatch.git.clones import PrivateClone
from localdispatch.git.commands import commit_args, git_out, run_git
from localdispatch.tasks import Task, slugify

log = logging.getLogger(__name__)

BRANCH_PREFIX = "ld/"
_CONFLICT_MARKERS = ("<<<<<<< ", ">>>>>>> ")


def task_branch(task: Task) -> str:
    """The branch of a task: ``ld/<id>-<slug>``; a conflict task works on its own ``branch``."""
    if task.kind == "conflict" and task.branch:
        return task.branch
    return f"{BRANCH_PREFIX}{task.id}-{slugify(task.title, limit=32)}"


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


def prepare_task_slot(clone: PrivateClone, base: str, branch: str) -> str:
    """Point the slot's ``branch`` at the tip of ``base`` and check it out; return that tip.

    A slot is reused as it is (the checkout resets its files). The base branch is set in the
    slot too, at the same commit, so a worker can name it.
    """
    start = base_tip(clone.origin.repo, base)
    _checkout(clone, branch, start, base)
    return start


def prepare_conflict_slot(clone: PrivateClone, base: str, branch: str) -> str:
    """Check out the existing ``branch`` in the slot and start merging ``base`` into it;
    return the branch's tip.

    The merge is left for the worker to finish: conflicting files hold git's markers and
    the rest is staged. :func:`finish_merge` commits it if the worker resolved but could not
    commit (Aider commits file by file, which git refuses in the middle of a merge).
    """
    repo = clone.origin.repo
    base_sha = base_tip(repo, base)
    tip = rev_parse(repo, f"refs/heads/{branch}")
    if tip is None:
        raise GitError(
            f"The branch {branch!r} of the conflict task does not exist in {repo}.",
            hint="Close the conflict task; its merge cannot be retried.",
            path=repo,
        )
    _checkout(clone, branch, tip, base, base_sha)
    result = clone.run(
        [*commit_args(clone.path), "merge", "--no-commit", "--no-ff", "--no-edit", base],
        check=False,
    )
    log.info("conflict slot %s: merging %s exited %s", clone.path, base, result.returncode)
    return tip


def _checkout(
    clone: PrivateClone, branch: str, commit: str, base: str, base_sha: str | None = None
) -> None:
    """Secure the slot, check ``branch`` out at ``commit`` (rebuilding a broken slot once),
    and name ``base`` in it."""
    clone.secure()
    clone.forget_history()
    try:
        clone.checkout_fresh(branch, commit)
    except GitError as exc:
        log.info("slot %s is broken (%s); rebuilding it", clone.path, exc)
        clone.discard()
        clone.secure()
        clone.checkout_fresh(branch, commit)
    if branch != base:
        clone.set_branch(base, base_sha or commit)


def publish_branch(
    clone: PrivateClone, branch: str, start: str, *, force: bool, tip: str | None = None
) -> str | None:
    """Bring the slot's ``branch`` (at ``tip``, if the caller knows it) into the user's
    repository: its objects that ``start`` (a commit the user's repository has) lacks, then
    the ref. Returns its tip there, or None when the slot has no such branch (nothing is
    written then).

    A task's branch is the dispatcher's to overwrite (a retry starts it anew); a conflict
    task's branch is the original task's, and only moves forward (``force`` False).
    """
    tip = tip or clone.rev(f"refs/heads/{branch}")
    if tip is None:
        return None
    repo, ref = clone.origin.repo, f"refs/heads/{branch}"
    clone.send(tip, start)
    expect: list[str] = []
    if not force:
        old = rev_parse(repo, ref)
        if old is not None:
            ancestor = run_git(["merge-base", "--is-ancestor", old, tip], repo, check=False)
            if ancestor.returncode != 0:
                raise GitError(
                    f"The branch {branch} moved in {repo} while its conflict was being "
                    "resolved; the resolution is not a continuation of it.",
                    hint=f"Resolve it by hand on {branch}, then close the conflict task.",
                    path=repo,
                )
            expect = [old]
    run_git(["update-ref", "-m", "localdispatch: work of a worker", ref, tip, *expect], repo)
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


def delete_branch(repo: Path, branch: str) -> bool:
    result = run_git(["branch", "--quiet", "-D", branch], repo, check=False)
    return result.returncode == 0


def cleanup_stale(repo: Path, keep_branches: Iterable[str], base: str) -> dict[str, list[str]]:
    """Tidy what a killed run may have left: worktree records of older versions' slots, and
    ``ld/`` branches with nothing to lose (every commit already in ``base``) that no task
    still needs. Nothing else is touched."""
    report: dict[str, list[str]] = {"branches": []}
    run_git(["worktree", "prune"], repo, check=False)
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
