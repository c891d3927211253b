"""Running git: one function that every module uses, so errors and encodings are handled once.

GitPython is used where it helps (reading repository state); commands that GitPython does not
wrap well (worktrees, merges with their exit codes) go through ``git`` itself with an argv list.
"""

from __future__ import annotations

import logging
import os
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from .errors import GitError

log = logging.getLogger(__name__)

# Never let git open an editor or a pager, or ask for credentials on a terminal: the
# dispatcher runs unattended and a prompt would hang it.
_QUIET_ENV = {
    "GIT_TERMINAL_PROMPT": "0",
    "GIT_EDITOR": "true" if os.name != "nt" else "cmd /c exit 0",
    "GIT_PAGER": "cat" if os.name != "nt" else "more",
    "GIT_MERGE_AUTOEDIT": "no",
    "LC_ALL": "C",
}


def git_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(_QUIET_ENV)
    if extra:
        env.update(extra)
    return env


def run_git(
    args: Sequence[str],
    cwd: Path,
    *,
    check: bool = True,
    env: Mapping[str, str] | None = None,
    timeout: float | None = 120,
) -> subprocess.CompletedProcess[str]:
    """Run ``git ARGS`` in ``cwd``; raise GitError with git's own message unless check=False."""
    argv = ["git", *args]
    log.debug("git %s (in %s)", " ".join(args), cwd)
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            stdin=subprocess.DEVNULL,
            env=git_env(env),
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError as exc:
        raise GitError(
            "git is not installed or not on PATH.",
            hint="Install git (https://git-scm.com) and open a new terminal.",
        ) from exc
    except subprocess.TimeoutExpired as exc:
        raise GitError(f"`git {' '.join(args)}` did not finish in {timeout} s in {cwd}.") from exc
    if check and result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise GitError(
            f"`git {' '.join(args)}` failed in {cwd}: {' '.join(detail[-3:]) or 'no output'}",
            path=cwd,
        )
    return result


def commit_args(repo: Path) -> list[str]:
    """``-c`` options for commits the dispatcher itself makes (merges, resolutions).

    CI machines and fresh installs have no git identity, so a fallback one is given for what
    the repository lacks; and signing is switched off, because a signing prompt (gpg's
    pinentry) would hang an unattended merge until its timeout.
    """
    out = run_git(["config", "--get-regexp", r"^user\.(name|email)$"], repo, check=False).stdout
    have = {line.split(" ", 1)[0].lower() for line in out.splitlines()}
    args = ["-c", "commit.gpgSign=false"]
    if "user.name" not in have:
        args += ["-c", "user.name=localdispatch"]
    if "user.email" not in have:
        args += ["-c", "user.email=localdispatch@localhost"]
    return args


def git_out(args: Sequence[str], cwd: Path, **kwargs: object) -> str:
    """stdout of a git command that must succeed, stripped."""
    return run_git(args, cwd, **kwargs).stdout.strip()  # type: ignore[arg-type]
