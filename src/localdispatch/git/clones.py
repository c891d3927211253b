"""Private clones: the repositories workers (and the test gate) run in, sharing nothing but
objects with the user's repository.

A git worktree shares its repository's refs, config and hooks, so a worker in one could move
``main`` with ``git update-ref`` or plant a hook that the dispatcher's next git command ran in
the user's checkout. Each slot, and the integration tree where merges and the test gate run,
is instead a repository of its own: ``git init`` with the user's object store as an
*alternate* (read-only borrowing, so creating one copies nothing and a new attempt costs what a
worktree checkout cost), its own refs, its own config written by us, and no remote. Objects a
worker writes stay in the clone; the dispatcher copies the task branch back into the user's
repository once the worker has exited (:meth:`PrivateClone.send`, objects checked by git),
the one way anything crosses over.

A worker runs as the user and may still write anything into its clone's ``.git``. So before
the dispatcher runs git there again, :meth:`PrivateClone.secure` checks that ``.git`` holds
only plain files and folders (a symlinked ``refs`` or ``index``, or a ``commondir`` file,
would aim the dispatcher's own commands at the user's repository) and rewrites what git reads
to decide what to run or where to look: the config, the alternates, hooks, grafts, shallow.
A clone that fails the check is never used again: the attempt is refused and the folder
deleted (links are removed, never followed).
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from localdispatch.errors import GitError
from localdispatch.git.commands import git_out, run_git, start_git
from localdispatch.layout import git_common_dir

log = logging.getLogger(__name__)

# Files and folders of a git dir that make git look elsewhere or run something: rewritten or
# removed before every use. (The config is rewritten whole, which covers includes,
# core.worktree, core.hooksPath, filter and diff drivers, and the rest.)
_REMOVED = (
    "commondir",  # makes this git dir a linked worktree of another repository
    "gitdir",
    "config.worktree",
    "shallow",
    "info/grafts",
    "info/attributes",
    "objects/info/http-alternates",
    "hooks",
)
# Copied from the user's repository config so files check out and commit the same way there.
_INHERITED_KEYS = (
    "core.autocrlf",
    "core.eol",
    "core.safecrlf",
    "core.ignorecase",
    "core.precomposeunicode",
    "core.symlinks",
    "core.filemode",
    "core.longpaths",
    "core.quotepath",
    "user.name",
    "user.email",
    "user.signingKey",
    "commit.gpgSign",
    "gpg.format",
    "gpg.program",
    "i18n.commitencoding",
    "merge.conflictStyle",
)
_REPARSE_POINT = 0x400  # FILE_ATTRIBUTE_REPARSE_POINT: a Windows symlink or junction


class TamperedClone(GitError):
    """A clone's .git was changed so that using it could reach the user's repository."""


@dataclass(frozen=True)
class Origin:
    """What a clone needs to know about the user's repository (read once per process)."""

    repo: Path
    objects: Path
    config_text: str
    # The user's tags as a packed-refs file: tools a worker or a test command runs (git
    # describe, setuptools-scm) read versions from them. Copies of names; the objects are
    # the user's own, seen through the alternate.
    tags_text: str = ""

    @classmethod
    def of(cls, repo: Path) -> Origin:
        objects = Path(git_out(["rev-parse", "--git-path", "objects"], repo))
        if not objects.is_absolute():
            objects = (repo / objects).resolve()
        tags = run_git(
            ["for-each-ref", "--format=%(objectname) %(refname)", "refs/tags"], repo, check=False
        ).stdout
        tags_text = "# pack-refs with:\n" + tags if tags.strip() else ""
        return cls(repo, objects, _config_text(repo), tags_text)


_ORIGINS: dict[Path, Origin] = {}
_ORIGINS_LOCK = threading.Lock()


def origin_for(repo: Path) -> Origin:
    """The :class:`Origin` of ``repo``, read once per process (three git calls)."""
    key = repo.resolve()
    with _ORIGINS_LOCK:
        if key not in _ORIGINS:
            _ORIGINS[key] = Origin.of(key)
        return _ORIGINS[key]


def clone_at(repo: Path, path: Path, exclude: Sequence[str] = ()) -> PrivateClone:
    """The private clone at ``path`` of the user's repository ``repo``."""
    return PrivateClone(origin_for(repo), path, exclude)


def _config_text(repo: Path) -> str:
    """The config of a private clone: only what shapes files and commits, copied over."""
    lines = ["[core]", "\trepositoryformatversion = 1", "\tbare = false"]
    lines += ["\tlogallrefupdates = true"]
    fmt = run_git(["rev-parse", "--show-object-format"], repo, check=False).stdout.strip()
    inherited: dict[str, dict[str, str]] = {}
    out = run_git(["config", "--local", "--list", "-z"], repo, check=False).stdout
    wanted = set(_INHERITED_KEYS)
    for item in filter(None, out.split("\0")):
        key, _, value = item.partition("\n")
        if key.lower() in {k.lower() for k in wanted} and "\n" not in value:
            section, _, name = key.rpartition(".")
            inherited.setdefault(section, {})[name] = value
    for name, value in inherited.pop("core", {}).items():
        lines.append(f"\t{name} = {_quote(value)}")
    for section, values in inherited.items():
        lines.append(f"[{section}]")
        lines.extend(f"\t{name} = {_quote(value)}" for name, value in values.items())
    lines += ["[gc]", "\tauto = 0", "[maintenance]", "\tauto = false"]
    lines += ["[extensions]", f"\tobjectformat = {fmt or 'sha1'}"]
    # Git LFS files check out from the user's own LFS store, as they did in a worktree.
    common = git_common_dir(repo)
    lfs = common / "lfs" if common is not None else None
    if lfs is not None and lfs.is_dir():
        lines += ["[lfs]", f"\tstorage = {_quote(lfs.as_posix())}"]
    return "\n".join(lines) + "\n"


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


def ceiling_env(
    tree: Path, repo: Path | None = None, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Stop git's search for a repository before it reaches the user's repository ``repo``.

    Slots and the integration tree live inside the user's repository (under ``.dispatch``):
    a worker that deleted its clone's .git, or ran git in a folder of its own or one above
    its tree, would otherwise find the user's repository and act on it. Git never walks up
    *into* a ceiling folder, so both the tree's parent and the repository are ceilings.
    """
    environ = os.environ if environ is None else environ
    ceilings = [str(tree.parent.resolve())]
    if repo is not None:
        ceilings.append(str(repo.resolve()))
    ceilings.extend(filter(None, [environ.get("GIT_CEILING_DIRECTORIES")]))
    return {"GIT_CEILING_DIRECTORIES": os.pathsep.join(ceilings)}


def _ensure_content(path: Path, text: str) -> None:
    """Make ``path`` hold ``text``, writing only when it does not (the usual case after a
    worker is that nothing changed). No fsync: a clone's files are not the user's data, and
    one a crash left half-written is rewritten or the clone remade on its next use."""
    data = text.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return
    except OSError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".localdispatch-tmp")
    tmp.write_bytes(data)
    tmp.replace(path)


def remove_stale_locks(git_dir: Path) -> list[str]:
    """Delete git's ``*.lock`` files in a clone's git dir; returns their paths.

    Only for a clone nothing runs in (its worker tree killed, or at a restart after the
    earlier run's processes were killed): a lock left then is from a process that died
    holding it, and git would refuse every later command until it is gone.
    """
    removed = []
    for folder, _dirs, files in os.walk(git_dir):
        for name in files:
            if name.endswith(".lock"):
                path = Path(folder) / name
                path.unlink(missing_ok=True)
                removed.append(str(path))
    return removed


def _plain_path(path: Path) -> bool:
    """Whether neither the clone's folder nor the folder holding it is a link (the two an
    occupant can reach by walking up from its own tree). Links further up, such as a
    temporary folder that is one on macOS, are the user's own and are fine."""
    return not any(link_like(os.lstat(folder)) for folder in (path, path.parent))


def same_file(first: Path, second: Path) -> bool:
    try:
        return first.samefile(second)
    except OSError:
        return False


def link_like(info: os.stat_result) -> bool:
    """A symlink, or on Windows any reparse point (symlink or junction)."""
    if stat.S_ISLNK(info.st_mode):
        return True
    return bool(getattr(info, "st_file_attributes", 0) & _REPARSE_POINT)


def git_dir_problem(git_dir: Path) -> str | None:
    """Why ``git_dir`` may not be trusted, or None: it and everything in it must be plain
    files and folders, and it must not name another repository's git dir as its own."""
    try:
        info = os.lstat(git_dir)
    except FileNotFoundError:
        return f"{git_dir} is missing"
    if link_like(info) or not stat.S_ISDIR(info.st_mode):
        return f"{git_dir} is not a plain folder"
    for folder, dirs, files in os.walk(git_dir):
        for name in (*dirs, *files):
            path = Path(folder) / name
            entry = os.lstat(path)
            if link_like(entry):
                return f"{path} is a link"
            if not (stat.S_ISDIR(entry.st_mode) or stat.S_ISREG(entry.st_mode)):
                return f"{path} is not a regular file"
    return None


class PrivateClone:
    """One private clone at ``path`` of the repository ``origin`` describes."""

    def __init__(self, origin: Origin, path: Path, exclude: Sequence[str] = ()) -> None:
        self.origin = origin
        self.path = path
        self.git_dir = path / ".git"
        self.exclude = list(exclude)

    # -- making and trusting it ------------------------------------------------------------
    def secure(self) -> None:
        """Make the clone ready for the dispatcher's git commands, creating it if needed.

        Raises TamperedClone (after deleting the folder) when an earlier occupant left its
        .git in a state that could reach the user's repository.
        """
        if not os.path.lexists(self.path):
            self._create()
            return
        if not _plain_path(self.path):
            # The folder itself was swapped for a link (to the user's repository, say):
            # following it would aim everything below at whatever it points to.
            self.discard()
            raise TamperedClone(
                f"The private repository {self.path} was replaced by a link.",
                hint="Its work is not taken; the link was removed (not what it points to).",
                path=self.path,
            )
        if not os.path.lexists(self.git_dir) or self._old_worktree():
            log.info("%s is not a private clone yet; making it one", self.path)
            self.discard()
            run_git(["worktree", "prune"], self.origin.repo, check=False)
            self._create()
            return
        problem = git_dir_problem(self.git_dir)
        if problem is None and (self.git_dir / "commondir").exists():
            problem = f"{self.git_dir / 'commondir'} points it at another repository"
        if problem is None:
            for lock in remove_stale_locks(self.git_dir):
                log.info("removed the stale lock %s (its holder is gone)", lock)
        if problem is not None:
            self.discard()
            raise TamperedClone(
                f"The private repository {self.path} was tampered with: {problem}.",
                hint="Its work is not taken; the folder was deleted and is made anew.",
                path=self.path,
            )
        self._rewrite()

    def _old_worktree(self) -> bool:
        """Whether the folder is a worktree an earlier version of localdispatch made here (a
        ``.git`` file that the user's repository lists as its worktree): it is removed from
        the user's repository's records and made a clone. Any other ``.git`` file is not
        ours: the occupant replaced the clone's folder, which :meth:`secure` refuses."""
        info = os.lstat(self.git_dir)
        if link_like(info) or not stat.S_ISREG(info.st_mode):
            return False
        listed = run_git(["worktree", "list", "--porcelain"], self.origin.repo, check=False)
        for line in listed.stdout.splitlines():
            if line.startswith("worktree ") and same_file(Path(line[9:]), self.path):
                run_git(
                    ["worktree", "remove", "--force", "--force", str(self.path)],
                    self.origin.repo,
                    check=False,
                )
                return True
        return False

    def _create(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(self.path):
            self.discard()
        # --template= with no folder: no sample hooks, nothing from the user's template dir.
        run_git(["init", "--quiet", "--template=", str(self.path)], self.path.parent)
        self._rewrite()

    def _rewrite(self) -> None:
        for name in _REMOVED:
            target = self.git_dir / name
            if target.is_dir():
                remove_tree(target)
            elif os.path.lexists(target):
                target.unlink()
        _ensure_content(self.git_dir / "config", self.origin.config_text)
        alternates = self.git_dir / "objects" / "info" / "alternates"
        _ensure_content(alternates, self.origin.objects.as_posix() + "\n")
        exclude = self.git_dir / "info" / "exclude"
        _ensure_content(exclude, "".join(f"{line}\n" for line in self.exclude))

    def discard(self) -> None:
        """Delete the clone's folder; links (it, or inside it) are removed, never followed."""
        if not os.path.lexists(self.path):
            return
        if link_like(os.lstat(self.path)):
            _remove_link(self.path)
        else:
            remove_tree(self.path)

    # -- git in the clone ------------------------------------------------------------------
    def run(
        self, args: Sequence[str], *, check: bool = True, timeout: float | None = 120
    ) -> subprocess.CompletedProcess[str]:
        """``git args`` in the clone, its git dir named explicitly (never discovered)."""
        full = ["--git-dir", str(self.git_dir), "--work-tree", str(self.path), *args]
        return run_git(full, self.path, check=check, timeout=timeout)

    def git(self, args: Sequence[str]) -> str:
        """stdout of a git command in the clone that must succeed, stripped."""
        return self.run(args).stdout.strip()

    def rev(self, ref: str) -> str | None:
        """The commit ``ref`` names in the clone, or None."""
        found = self.run(["rev-parse", "--verify", "--quiet", ref + "^{commit}"], check=False)
        if found.returncode != 0:
            return None
        return found.stdout.strip() or None

    def forget_history(self) -> None:
        """Drop every ref, reflog and object of the clone's own (between attempts).

        What an attempt committed has been copied to the user's repository by then, and a
        new attempt starts from commits that are all there (seen through the alternate), so
        the clone needs none of it: each attempt starts with a git dir holding nothing from
        the last occupant but the index, and the check of ``.git`` stays small however many
        attempts the slot has seen.
        """
        objects = self.git_dir / "objects"
        if objects.is_dir():
            for entry in objects.iterdir():
                if entry.name not in ("info", "pack") and entry.is_dir():
                    remove_tree(entry)
            pack = objects / "pack"
            if pack.is_dir():
                remove_tree(pack)
        for name in ("refs", "logs"):
            if (self.git_dir / name).is_dir():
                remove_tree(self.git_dir / name)
        (self.git_dir / "packed-refs").unlink(missing_ok=True)
        (self.git_dir / "refs" / "heads").mkdir(parents=True, exist_ok=True)
        (self.git_dir / "refs" / "tags").mkdir(exist_ok=True)
        self.copy_tags()

    def copy_tags(self) -> None:
        """Give the clone the user's tags (read when the run started), as packed refs."""
        if self.origin.tags_text:
            _ensure_content(self.git_dir / "packed-refs", self.origin.tags_text)

    def checkout_fresh(self, branch: str, commit: str) -> None:
        """Point ``branch`` at ``commit``, check it out and remove every other file."""
        self.run(["checkout", "--force", "--quiet", "-B", branch, commit])
        self.run(["clean", "-ffdxq"])

    def set_branch(self, branch: str, commit: str) -> None:
        """Point ``branch`` at ``commit``. Written as a loose ref file when it can be (the
        clone is ours and nothing runs in it now: a git process saved per attempt)."""
        ref = self.git_dir / "refs" / "heads" / branch
        try:
            ref.parent.mkdir(parents=True, exist_ok=True)
            _ensure_content(ref, commit + "\n")
        except OSError:
            self.run(["update-ref", f"refs/heads/{branch}", commit])

    def send(self, tip: str, *haves: str) -> None:
        """Copy the objects of ``tip`` that the commits ``haves`` lack into the user's
        repository (``haves`` are commits it has: what they reach is not sent again).

        ``git pack-objects`` in the clone piped into ``git unpack-objects --strict`` in the
        user's repository: two processes where a fetch starts five, and every object is
        checked (its hash and its links) before it is written. Writes no ref.
        """
        args = ["pack-objects", "--stdout", "--revs", "-q"]
        unpack = ["unpack-objects", "-q", "--strict"]
        packer = start_git(["--git-dir", str(self.git_dir), *args], self.path)
        unpacker = start_git(unpack, self.origin.repo, stdin=packer.stdout)
        assert packer.stdin is not None and packer.stdout is not None
        packer.stdout.close()  # the unpacker owns the read end now
        try:
            wanted = [tip, *(f"^{have}" for have in haves)]
            packer.stdin.write("".join(f"{rev}\n" for rev in wanted).encode("ascii"))
            packer.stdin.close()
        except OSError:
            pass  # the packer died early; its exit code below says so
        packer.stdin = None  # written and closed: communicate() must not touch it again
        errors = [p.communicate(timeout=120)[1] for p in (unpacker, packer)]
        if packer.returncode or unpacker.returncode:
            detail = b" ".join(errors).decode("utf-8", "replace").strip()
            raise GitError(
                f"Copying the objects of {tip[:12]} from {self.path} into "
                f"{self.origin.repo} failed: {detail or 'no output'}",
                path=self.path,
            )


def _remove_link(path: Path) -> None:
    """Remove a symlink or a Windows junction itself, never what it points to."""
    try:
        path.unlink()
    except (IsADirectoryError, PermissionError):  # a directory link on Windows
        path.rmdir()


def remove_tree(path: Path) -> None:
    """shutil.rmtree that also removes read-only files (git makes some on Windows). Links
    inside are removed, never followed (junctions too, since Python 3.8)."""

    def on_error(func: Callable[..., Any], target: str, _info: Any) -> None:
        Path(target).chmod(stat.S_IWRITE | stat.S_IREAD)
        func(target)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=on_error)
    else:
        shutil.rmtree(path, onerror=on_error)
