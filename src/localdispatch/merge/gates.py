"""What may land: the gates that judge the change a merge would make to the base branch.

Every gate here looks at exactly one thing: the tree of the base tip against the tree of the
prepared merge (``git diff base merged``), never at a diff from a merge base. A branch whose
history re-merges an old commit with ``-s ours`` (a criss-cross) can revert a file on the base
without that file showing up in ``base...branch``; it does show up here, because this is what
the user's checkout would be fast-forwarded across.

In order, cheapest first: protected paths (the config, the launchers, the state files and the
user's own patterns), a tracked ``.gitignore`` that would un-ignore a state file, and the
sanity gate (conflict markers, Python that does not compile, JSON/TOML that does not parse).
The test command runs after these, in the merge queue.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from localdispatch.errors import GitError
from localdispatch.git.commands import SAFE_CONFIG, run_git
from localdispatch.merge.sanity import ParserProcess, check_merge


def changed_paths(tree: Path, base: str, merged: str) -> dict[str, str]:
    """Every path the merge changes, with git's status letter (A, M, D, T).

    ``--no-renames``: a renamed protected file must show up under its old name too.
    """
    out = run_git(["diff", "--name-status", "--no-renames", "-z", base, merged, "--"], tree).stdout
    fields = out.split("\0")
    return dict(zip(fields[1::2], fields[0::2], strict=False))


def state_samples(ignore_patterns: Iterable[str]) -> list[str]:
    """A path each state-file pattern must keep ignored (``/.dispatch/`` -> a file in it)."""
    samples = []
    for pattern in ignore_patterns:
        path = pattern.lstrip("/")
        if path.endswith("/"):
            path += "state.json"
        samples.append(path.replace("*", "bak"))
    return samples


def unignored(tree: Path, samples: Sequence[str]) -> list[str]:
    """The ``samples`` that are not ignored in ``tree`` as checked out (its info/exclude
    holds the patterns the user's repository has; a tracked .gitignore outranks them)."""
    if not samples:
        return []
    result = run_git(["check-ignore", "--no-index", "--", *samples], tree, check=False)
    if result.returncode not in (0, 1):  # 1: none ignored; anything else: git could not say
        raise GitError(f"`git check-ignore` failed in {tree}: {result.stderr.strip()}")
    ignored = set(result.stdout.splitlines())
    return [path for path in samples if path not in ignored]


def refusal(
    tree: Path,
    base: str,
    merged: str,
    *,
    path_gate: PathGate,
    samples: Sequence[str],
    sanity: bool,
    parsers: ParserProcess | None = None,
) -> str | None:
    """Why the merge of ``merged`` onto ``base`` may not land, or None.

    ``tree`` is the integration tree with ``merged`` checked out.
    """
    changes = changed_paths(tree, base, merged)
    hits = path_gate.hits(changes)
    if hits:
        return f"it changes protected paths: {describe_hits(hits)}"
    ignores = [path for path in changes if PurePosixPath(path).name == ".gitignore"]
    if ignores:
        exposed = unignored(tree, samples)
        if exposed:
            return (
                f"its change to {', '.join(ignores)} would stop git from ignoring "
                f"localdispatch's state ({', '.join(exposed)}), which would then show up in "
                "your `git status` and could be committed"
            )
    if sanity:
        report = check_merge(tree, base, merged, git_args=SAFE_CONFIG, parsers=parsers)
        if report.findings:
            return f"the sanity gate found {report.summary()}"
    return None


# ---- protected paths (pure) ------------------------------------------------------------


def glob_to_regex(pattern: str) -> str:
    """A glob over repo-relative paths as a regular expression (without anchors).

    ``*`` and ``?`` stay inside one folder, ``**`` crosses folders (``**/`` may match no
    folder at all), ``[...]`` is a character class; a pattern ending in ``/`` means everything
    under that folder. Backslashes are folder separators, as Windows users write them.
    """
    text = pattern.strip().replace("\\", "/").lstrip("/")
    if text.endswith("/"):
        text += "**"
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif text.startswith("**", i):
            out.append(".*")
            i += 2
        elif text[i] == "*":
            out.append("[^/]*")
            i += 1
        elif text[i] == "?":
            out.append("[^/]")
            i += 1
        elif text[i] == "[" and "]" in text[i + 2 :]:
            end = text.index("]", i + 2)
            body = text[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(text[i]))
            i += 1
    return "".join(out)


class PathGate:
    """Which changed paths a branch may not touch.

    A pattern also protects everything under a folder it names (``scripts`` covers
    ``scripts/run.py``), so a worker cannot slip past a rule by the way it writes a path.
    Matching ignores case on Windows and macOS, whose file systems do.
    """

    def __init__(self, patterns: Sequence[str], *, ignore_case: bool | None = None) -> None:
        self.patterns = [p for p in patterns if p.strip()]
        if ignore_case is None:
            ignore_case = sys.platform in ("win32", "darwin")
        flags = re.IGNORECASE if ignore_case else 0
        self._compiled = [
            (p, re.compile(f"(?:{glob_to_regex(p)})(?:/.*)?", flags)) for p in self.patterns
        ]

    def matching(self, path: str) -> str | None:
        """The first pattern that protects ``path``, or None."""
        clean = path.replace("\\", "/").lstrip("/")
        return next((p for p, rx in self._compiled if rx.fullmatch(clean)), None)

    def hits(self, paths: Iterable[str]) -> list[tuple[str, str]]:
        """(path, pattern) for every protected path among ``paths``."""
        found = []
        for path in paths:
            pattern = self.matching(path)
            if pattern is not None:
                found.append((path, pattern))
        return found


def describe_hits(hits: Sequence[tuple[str, str]], limit: int = 5) -> str:
    shown = ", ".join(f"{path} (protected by {pattern!r})" for path, pattern in hits[:limit])
    more = f" and {len(hits) - limit} more" if len(hits) > limit else ""
    return shown + more
