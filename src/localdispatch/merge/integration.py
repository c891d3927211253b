"""The integration worktree, and moving the base branch without touching the user's files.

Merges, rebases and the test gate run in ``.dispatch/integration``: a private clone (see
``clones.py``) with a detached HEAD, so the user's checkout is never the place where a merge
happens and is never left mid-merge, and the test command (code a worker wrote) cannot reach
the user's refs, config or hooks. A merge that stops on a conflict is aborted, and the tree is
checked (no MERGE_HEAD, no rebase state, no changed or stray file) before anything else runs.
A merge reaches the user's repository only once every gate passed (:meth:`publish`).

The base branch then moves with a compare-and-swap from the tip the merge was made on
(:func:`advance`). When a checkout that is not ours has the base branch checked out, the move
is ``git merge --ff-only`` in that checkout: git moves the branch and the files together, and
refuses when it would overwrite a local change, an untracked file or an ignored file; the
branch then stays where it is and the reason names the user's files.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from localdispatch.errors import GitError
from localdispatch.git.clones import TamperedClone, ceiling_env, clone_at
from localdispatch.git.commands import run_git
from localdispatch.merge import checkout_journal
from localdispatch.merge.test_command import GateResult, run_test_command

log = logging.getLogger(__name__)

_SHA = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")
# Options that keep the user's git settings from changing what an unattended merge does.
_MERGE = ("merge", "--no-ff", "--no-edit", "--no-stat", "--no-verify-signatures", "--no-autostash")
_REBASE = ("-c", "rebase.updateRefs=false", "rebase", "--no-autostash", "--no-autosquash")
_FOLLOW = ("merge", "--ff-only", "--no-stat", "--no-overwrite-ignore", "--no-autostash")


@dataclass(frozen=True)
class Worktree:
    path: Path
    head: str | None
    branch: str | None  # the full ref, refs/heads/...; None when detached


def parse_worktrees(text: str) -> list[Worktree]:
    """``git worktree list --porcelain`` as a list (bare entries left out)."""
    trees = []
    for block in text.strip().split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, _, value = line.partition(" ")
            fields[key] = value
        if "worktree" in fields and "bare" not in fields:
            trees.append(
                Worktree(Path(fields["worktree"]), fields.get("HEAD"), fields.get("branch"))
            )
    return trees


def blocked_files(stderr: str) -> dict[str, list[str]]:
    """Files git named when it refused to overwrite them: {"changed": [...], "untracked": [...]}."""
    found: dict[str, list[str]] = {}
    kind: str | None = None
    for line in stderr.splitlines():
        if "would be overwritten" in line:
            kind = "untracked" if "untracked" in line else "changed"
        elif kind and line.startswith("\t"):
            found.setdefault(kind, []).append(line.strip())
        else:
            kind = None
    return found


def blocked_reason(base: str, checkout: Path, stderr: str) -> str:
    """Why ``base`` cannot move in ``checkout``, naming the user's files when git named them."""
    files = blocked_files(stderr)
    parts = []
    if files.get("changed"):
        parts.append("uncommitted changes to " + names(files["changed"]))
    if files.get("untracked"):
        parts.append("untracked or ignored files " + names(files["untracked"]))
    if parts:
        return (
            f"{base} cannot move forward: your checkout {checkout} has {' and '.join(parts)} "
            "that the merge would overwrite"
        )
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    detail = lines[0] if lines else "git refused without saying why"
    return f"{base} cannot move forward in your checkout {checkout}: {detail}"


_LOCK_FILE = re.compile(r"Unable to create '([^']+\.lock)': File exists")


def foreign_lock(stderr: str) -> str | None:
    """The lock file git named when it refused because one exists, or None."""
    found = _LOCK_FILE.search(stderr)
    return found.group(1) if found else None


def lock_steps(lock: str, repo: Path) -> list[str]:
    """What a person does about a lock file in their repository that is not ours: it is
    never removed by localdispatch, since a git command of theirs may be holding it."""
    return [
        f"make sure no git command is running in {repo} (an editor's git, a terminal)",
        f"then delete the stale lock file: {lock}",
        "then run the dispatcher again (one that is running retries the merge by itself)",
    ]


def checkout_steps(checkout: Path, stderr: str) -> list[str]:
    files = blocked_files(stderr)
    named = names([*files.get("changed", []), *files.get("untracked", [])]) or "the files"
    return [
        f"in {checkout}: commit, stash or move {named}",
        "then run the dispatcher again (one that is running retries the merge by itself)",
    ]


def names(files: list[str], limit: int = 8) -> str:
    more = f" and {len(files) - limit} more" if len(files) > limit else ""
    return ", ".join(files[:limit]) + more


def same_path(a: Path, b: Path) -> bool:
    return os.path.normcase(str(a.resolve())) == os.path.normcase(str(b.resolve()))


def checked_out(branch: str, trees: list[Worktree]) -> bool:
    return any(tree.branch == f"refs/heads/{branch}" for tree in trees)


def rebasing(trees: list[Worktree], ref: str) -> Path | None:
    """A worktree in the middle of rebasing ``ref`` (its HEAD is detached meanwhile)."""
    for tree in trees:
        gitdir = _gitdir_of(tree.path)
        for name in ("rebase-merge", "rebase-apply"):
            try:
                head = (gitdir / name / "head-name").read_text(encoding="utf-8").strip()
            except OSError:
                continue
            if head == ref:
                return tree.path
    return None


def _gitdir_of(path: Path) -> Path:
    dotgit = path / ".git"
    try:
        text = dotgit.read_text(encoding="utf-8").strip()
    except OSError:  # a folder (the main worktree) or missing
        return dotgit
    target = Path(text.removeprefix("gitdir:").strip())
    return target if target.is_absolute() else (path / target)


# ---- the integration worktree --------------------------------------------------------------


@dataclass
class MergeStep:
    head: str | None  # the merge commit, or None when the merge did not happen
    conflicts: list[str] = field(default_factory=list)
    error: str | None = None


class IntegrationTree:
    """The private clone where merges, rebases and the test gate happen.

    ``_head`` is what HEAD is known to be with a clean tree, so a merge that follows another
    needs no reset; None means unknown (first use, after a test run or a failure): reset and
    clean before the next use. ``_secured`` is False once untrusted code (the test command)
    has run in it: the clone is checked and its git settings rewritten before the next use.
    """

    def __init__(
        self, repo: Path, path: Path, git_args: list[str], exclude: Sequence[str] = ()
    ) -> None:
        self.repo = repo
        self.path = path
        self.git_args = git_args
        self.clone = clone_at(repo, path, exclude)
        self.gitdir: Path | None = None
        self._head: str | None = None
        self._secured = False

    def ensure(self, base_sha: str) -> Path:
        if not self._secured:
            self._head = None
            try:
                self.clone.secure()
            except TamperedClone as exc:  # discarded already: the next secure makes it anew
                log.warning("%s", exc)
                self.clone.secure()
            self._secured = True
            self.gitdir = self.clone.git_dir
            self._recover()
            self.clone.copy_tags()
        assert self.gitdir is not None
        return self.gitdir

    def check_after_untrusted(self) -> None:
        """After the test command ran here: TamperedClone if it left the clone unsafe."""
        self._secured = False
        self._head = None
        self.clone.secure()
        self.clone.copy_tags()
        self._secured = True

    def publish(self, commit: str, *haves: str) -> None:
        """Copy ``commit`` (and what it needs beyond the commits ``haves``, which the user's
        repository has) into the user's repository, writing no ref there: the base branch
        moves to it separately, by compare-and-swap."""
        self.clone.send(commit, *haves)

    def _recover(self) -> None:
        """Clear what a process killed mid-rebase left behind (a reset clears a merge)."""
        assert self.gitdir is not None
        if (self.gitdir / "rebase-merge").exists() or (self.gitdir / "rebase-apply").exists():
            run_git(["rebase", "--quit"], self.path, check=False)

    def forget(self) -> None:
        self._head = None

    def reset(self, sha: str) -> None:
        if self._head == sha:
            return
        if self._head is None:  # unknown: HEAD may even be a branch in a new clone
            run_git(["checkout", "--force", "--quiet", "--detach", sha], self.path)
            run_git(["clean", "-ffdxq"], self.path)
        else:
            run_git(["reset", "--hard", "-q", sha], self.path)
        self._head = sha

    def read_head(self) -> str:
        assert self.gitdir is not None
        try:
            text = (self.gitdir / "HEAD").read_text(encoding="utf-8").strip()
        except OSError:
            text = ""
        if _SHA.fullmatch(text):
            return text
        return run_git(["rev-parse", "HEAD"], self.path).stdout.strip()

    def merge(self, sha: str, message: str, base_sha: str) -> MergeStep:
        self._head = None
        result = run_git(
            [*self.git_args, *_MERGE, "-m", message, sha],
            self.path,
            check=False,
        )
        if result.returncode == 0:
            self._head = self.read_head()
            return MergeStep(self._head)
        assert self.gitdir is not None
        if (self.gitdir / "MERGE_HEAD").exists():
            unmerged = run_git(["diff", "--name-only", "--diff-filter=U", "-z"], self.path)
            files = [name for name in unmerged.stdout.split("\0") if name]
            run_git(["merge", "--abort"], self.path, check=False)
            self.verify_clean(base_sha)
            return MergeStep(None, conflicts=files)
        self.verify_clean(base_sha)
        words = (result.stderr or result.stdout).strip().splitlines()
        return MergeStep(None, error=" ".join(words[-3:]) or f"exit code {result.returncode}")

    def rebase(self, branch_sha: str, onto: str) -> str | None:
        """Rebase ``branch_sha`` onto ``onto`` on the detached HEAD; the new tip, or None."""
        self._head = None
        run_git(["reset", "--hard", "-q", branch_sha], self.path)
        result = run_git(
            [*self.git_args, *_REBASE, onto],
            self.path,
            check=False,
        )
        if result.returncode == 0:
            return self.read_head()
        run_git(["rebase", "--abort"], self.path, check=False)
        self.verify_clean(onto)
        return None

    def verify_clean(self, expect: str) -> None:
        """Make sure no merge or rebase is left half-done and no file differs from ``expect``."""
        problem = self._problem(expect)
        if problem:
            log.warning("integration worktree %s: %s; resetting it", self.path, problem)
            run_git(["reset", "--hard", "-q", expect], self.path)
            run_git(["clean", "-ffdxq"], self.path)
            problem = self._problem(expect)
            if problem:
                raise GitError(
                    f"The integration worktree {self.path} cannot be cleaned: {problem}.",
                    hint="Delete that folder; it is recreated on the next merge.",
                    path=self.path,
                )
        self._head = expect

    def _problem(self, expect: str) -> str | None:
        assert self.gitdir is not None
        for name in ("MERGE_HEAD", "rebase-merge", "rebase-apply", "CHERRY_PICK_HEAD"):
            if (self.gitdir / name).exists():
                return f"{name} is left over"
        if self.read_head() != expect:
            return "HEAD is not where it should be"
        status = run_git(["status", "--porcelain", "--untracked-files=all"], self.path).stdout
        if status.strip():
            return "files differ: " + " ".join(status.split()[:6])
        return None

    def run_gate(self, argv: list[str], timeout: float, log_path: Path) -> GateResult:
        self._head = None  # the command may leave files behind
        self._secured = False  # and may write into the clone's .git
        return run_test_command(
            argv,
            self.path,
            timeout=timeout,
            log_path=log_path,
            repo=self.repo,
            env=ceiling_env(self.path, self.repo),
        )


@dataclass(frozen=True)
class Advance:
    moved: bool
    base_moved: bool = False  # the base is no longer at the old tip: redo the merge
    reason: str = ""  # why it cannot move yet
    trees: tuple[Worktree, ...] = ()
    steps: tuple[str, ...] = ()  # what a person must do first (empty: it moves by itself)


def list_worktrees(repo: Path) -> list[Worktree]:
    return parse_worktrees(run_git(["worktree", "list", "--porcelain"], repo).stdout)


def advance(repo: Path, base: str, old: str, new: str, ours: Path, journal: Path) -> Advance:
    """Move ``refs/heads/<base>`` from ``old`` to ``new`` if every checkout can follow.

    ``ours`` (the integration worktree) is not a checkout that has to follow. The result says
    whether the branch moved, or the base had moved meanwhile (redo the merge), or why it
    cannot move yet; it also carries the worktree list, which callers reuse.
    """
    trees = list_worktrees(repo)
    settled = checkout_journal.settle(journal, repo)  # an update a crash cut off, if any
    if settled.state == "person":
        return Advance(False, reason=settled.reason, trees=tuple(trees), steps=settled.steps)
    if settled.state == "finished":
        return Advance(False, base_moved=True, trees=tuple(trees))  # merge onto the new tip
    if old == new:
        return Advance(moved=True, trees=tuple(trees))
    ref = f"refs/heads/{base}"
    holders = [
        t for t in trees if t.branch == ref and t.path.exists() and not same_path(t.path, ours)
    ]
    busy = rebasing(trees, ref)
    if busy is not None:
        reason = f"{base} cannot move forward: a rebase of it is in progress in {busy}"
        steps = (f"finish or abort the rebase in {busy} (git rebase --continue or --abort)",)
        return Advance(False, reason=reason, trees=tuple(trees), steps=steps)
    if len(holders) > 1:
        where = ", ".join(str(t.path) for t in holders)
        reason = f"{base} cannot move forward: it is checked out in several places ({where})"
        steps = (f"switch all but one of {where} to another branch",)
        return Advance(False, reason=reason, trees=tuple(trees), steps=steps)
    if not holders:
        cas = run_git(
            ["update-ref", "-m", "localdispatch: merge", ref, new, old], repo, check=False
        )
        if cas.returncode == 0:
            return Advance(True, trees=tuple(trees))
        return _refused(repo, base, old, cas.stderr, trees)
    update = checkout_journal.CheckoutUpdate(str(holders[0].path), base, old, new)
    checkout_journal.begin(journal, update)
    try:
        return _follow(repo, base, holders[0].path, old, new, trees)
    finally:
        checkout_journal.end(journal)  # a crash skips this: settle() then finds the journal


def _refused(repo: Path, base: str, old: str, stderr: str, trees: list[Worktree]) -> Advance:
    """Why a move of the base failed: a lock file that is not ours (a person must look), or
    the base moved meanwhile (redo the merge)."""
    lock = foreign_lock(stderr)
    if lock is not None:
        reason = f"{base} cannot move forward: git found the lock file {lock}"
        steps = tuple(lock_steps(lock, repo))
        return Advance(False, reason=reason, trees=tuple(trees), steps=steps)
    now = run_git(["rev-parse", "--verify", "-q", f"refs/heads/{base}"], repo, check=False)
    if now.stdout.strip() != old:
        return Advance(False, base_moved=True, trees=tuple(trees))
    detail = stderr.strip().splitlines()
    reason = f"{base} cannot move forward: {detail[-1] if detail else 'git refused'}"
    steps = (f"see why git refuses to update {base} in {repo}, then run the dispatcher again",)
    return Advance(False, reason=reason, trees=tuple(trees), steps=steps)


def _follow(
    repo: Path, base: str, checkout: Path, old: str, new: str, trees: list[Worktree]
) -> Advance:
    """Fast-forward the checkout that has the base checked out, or say why it cannot."""
    # git refuses the fast-forward if the branch no longer contains `old`'s successor `new`
    # (the user committed) and if a local change, untracked or ignored file would be lost.
    result = run_git(
        [*_FOLLOW, "--no-verify-signatures", new],
        checkout,
        check=False,
    )
    if result.returncode == 0:
        return Advance(True, trees=tuple(trees))
    stderr = result.stderr or result.stdout
    if foreign_lock(stderr) is not None:
        return _refused(repo, base, old, stderr, trees)
    now = run_git(["rev-parse", "--verify", "-q", f"refs/heads/{base}"], repo, check=False)
    if now.stdout.strip() != old:
        return Advance(False, base_moved=True, trees=tuple(trees))
    reason = blocked_reason(base, checkout, stderr)
    steps = tuple(checkout_steps(checkout, stderr))
    return Advance(False, reason=reason, trees=tuple(trees), steps=steps)
