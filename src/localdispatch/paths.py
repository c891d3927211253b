"""Confining paths that come from a model, a suggestion line or the command line to the
repository.

A path is kept only if it names something inside the repository: absolute paths, drive
letters, UNC paths, ``..`` that climbs out, and paths into a ``.git`` folder (at any depth,
in any spelling Windows treats as the same name) are refused. What is kept is normalized to a
forward-slash path relative to the repository root, which is how git and the task ``files``
field spell paths on every platform.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_DRIVE = re.compile(r"^[A-Za-z]:")


@dataclass
class ConfinedPaths:
    """The paths that were kept and, for each dropped one, why."""

    kept: list[str] = field(default_factory=list)
    dropped: list[tuple[str, str]] = field(default_factory=list)


def confine(raw: str, relative_to: str = "") -> tuple[str | None, str]:
    """``(normalized, "")`` for a path inside the repository, else ``(None, reason)``.

    ``relative_to`` is the repo-relative folder a relative path starts from (the current
    folder of a command run in a subfolder, as git takes paths); ``..`` may climb out of it
    but not out of the repository. Pure string logic (no file system access), so a path that
    does not exist yet, the normal case for a task that creates a file, is judged the same as
    one that does.
    """
    text = raw.strip().strip("`'\"").strip()
    if not text:
        return None, "empty"
    if "\x00" in text:
        return None, "contains a NUL character"
    text = text.replace("\\", "/")
    if _DRIVE.match(text):
        return None, "has a drive letter"
    if text.startswith("/") or text.startswith("~"):
        return None, "is absolute"
    parts: list[str] = []
    for part in [*relative_to.replace("\\", "/").split("/"), *text.split("/")]:
        if part in ("", "."):
            continue
        if part == "..":
            if not parts:
                return None, "climbs out of the repository with '..'"
            parts.pop()
            continue
        parts.append(part)
    if not parts:
        return None, "names the repository root itself"
    if any(_is_git_folder(part) for part in parts):
        return None, "points into .git"
    return "/".join(parts), ""


def _is_git_folder(part: str) -> bool:
    """``.git`` as any file system may spell it: in any case, with the trailing dots and
    spaces Windows drops, as an NTFS stream (``.git::$INDEX_ALLOCATION``) or by its 8.3 short
    name (``GIT~1``). Git refuses these names for the same reason."""
    name = part.split(":", 1)[0].rstrip(". ").lower()
    return name in (".git", "git~1")


def confine_all(raws: Iterable[str], relative_to: str = "") -> ConfinedPaths:
    """Confine every path, dropping duplicates while keeping the first spelling's order."""
    result = ConfinedPaths()
    seen: set[str] = set()
    for raw in raws:
        path, reason = confine(raw, relative_to)
        if path is None:
            result.dropped.append((raw, reason))
        elif path not in seen:
            seen.add(path)
            result.kept.append(path)
    return result
