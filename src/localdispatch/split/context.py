"""What the splitter shows the model about the repository: its files and the head of its README.

A model can only name the right files if it sees them, but a small local model has a small
context window: a 5,000-file repository listed in full would push the instructions out of it.
So the list is trimmed to a token budget, keeping first the files most likely to matter:
paths that share words with the goal, files the user named, top-level files (manifests,
entry points) and recently changed files. What was left out is summarized by folder, so the
model still knows the shape of the repository and that more exists.

Reading git and the README is the only I/O here (:func:`build_context`); choosing and
rendering (:func:`render_context`) is pure and tested directly.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from localdispatch.git.commands import run_git

# Tokens of repository context (file list and README head) in the splitter's prompt. With the
# instructions and the goal the whole prompt stays under about 6,000 tokens, which fits the
# 8,192-token window we ask Ollama for with room left for the answer.
DEFAULT_BUDGET_TOKENS = 4000
# Conservative for paths and code, where tokenizers average 3-4 characters per token; an
# overestimate only costs a few listed files, an underestimate could overflow the window.
CHARS_PER_TOKEN = 3
README_SHARE = 0.2
README_MAX_CHARS = 2000
README_MAX_BYTES = 16_384
RECENT_COMMITS = 30
SUMMARY_FOLDERS = 10
README_NAMES = ("readme.md", "readme.rst", "readme.txt", "readme")

_STOPWORDS = frozenset(
    str.split(
        "a an the and or but with without for to of in on at by from into onto as is are be "
        "it its this that these those all any each every some new full add adds adding make "
        "makes use using used support supports implement create update fix improve better "
        "should must can will so we our us you your i me my also then when where which what "
        "how not no yes more less very via per just only"
    )
)
_CAMEL = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+")
_WORD_SPLIT = re.compile(r"[^A-Za-z0-9]+")
_BADGE = re.compile(r"^\s*(\[!\[|!\[|<img|<p\s|</p>|<a\s|<div|</div>|<br)", re.IGNORECASE)


def estimate_tokens(text: str) -> int:
    """Estimated tokens of ``text`` (about 3 characters each; see CHARS_PER_TOKEN)."""
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass(frozen=True)
class RepoContext:
    """The rendered prompt section and the figures behind it."""

    text: str
    files: tuple[str, ...]  # every tracked file, for "does this path exist?"
    shown: int
    readme: str | None
    note: str = ""  # why there is no file list, when there is none

    @property
    def total(self) -> int:
        return len(self.files)

    @property
    def omitted(self) -> int:
        return self.total - self.shown

    @property
    def tokens(self) -> int:
        return estimate_tokens(self.text)


# ---- reading the repository (I/O) --------------------------------------------------------


def build_context(
    repo: Path,
    goal: str,
    *,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    hint_files: Sequence[str] = (),
) -> RepoContext:
    """Read the tracked files, recent changes and README of ``repo`` and render them."""
    files = tracked_files(repo)
    note = "" if files else f"{repo} has no files tracked by git (or is not a git repository)"
    readme = _read_readme(repo, files)
    return render_context(
        files,
        goal,
        recent=recent_files(repo) if files else [],
        readme=readme,
        budget_tokens=budget_tokens,
        hint_files=hint_files,
        note=note,
    )


def tracked_files(repo: Path) -> list[str]:
    """``git ls-files`` as forward-slash paths; empty when ``repo`` is not a git repository."""
    # -z and quotepath=off: names with spaces or non-ASCII letters arrive exactly as written.
    result = run_git(["-c", "core.quotepath=off", "ls-files", "-z"], repo, check=False)
    if result.returncode != 0:
        return []
    return [name for name in result.stdout.split("\0") if name]


def recent_files(repo: Path, commits: int = RECENT_COMMITS) -> list[str]:
    """Files changed in the last ``commits`` commits, most recent first, without repeats."""
    result = run_git(
        ["-c", "core.quotepath=off", "log", f"-n{commits}", "--name-only", "--format=", "-z"],
        repo,
        check=False,
    )
    if result.returncode != 0:
        return []
    names = (name.strip("\n") for name in result.stdout.split("\0"))
    return list(dict.fromkeys(name for name in names if name))


def _read_readme(repo: Path, files: Sequence[str]) -> tuple[str, str] | None:
    name = find_readme(files) or find_readme(p.name for p in _top_level(repo))
    if name is None:
        return None
    try:
        with (repo / name).open("rb") as handle:
            raw = handle.read(README_MAX_BYTES)
    except OSError:
        return None
    return name, raw.decode("utf-8", errors="replace")


def _top_level(repo: Path) -> list[Path]:
    try:
        return [p for p in repo.iterdir() if p.is_file()]
    except OSError:
        return []


# ---- choosing and rendering (pure) -------------------------------------------------------


def find_readme(files: Iterable[str]) -> str | None:
    """The top-level README among ``files``, preferring Markdown."""
    top = {name.lower(): name for name in files if "/" not in name}
    for candidate in README_NAMES:
        if candidate in top:
            return top[candidate]
    return None


def goal_words(goal: str) -> set[str]:
    """The words of a goal that can identify files: no stopwords, no one- or two-letter words."""
    words = {_stem(w) for w in _split_words(goal)}
    return {w for w in words if len(w) >= 3 and w not in _STOPWORDS}


def path_words(path: str) -> set[str]:
    return {_stem(w) for w in _split_words(path) if len(w) >= 2}


def _split_words(text: str) -> list[str]:
    words: list[str] = []
    for chunk in _WORD_SPLIT.split(text):
        words.extend(part.lower() for part in _CAMEL.findall(chunk))
    return words


def _stem(word: str) -> str:
    # Enough to match "metrics" with "metric" and "dashboards" with "dashboard".
    return word[:-1] if len(word) > 3 and word.endswith("s") else word


def _matches(goal: set[str], words: set[str]) -> int:
    """How many goal words a path shares, counting prefixes of 4+ letters ("auth"/"author")."""
    count = 0
    for g in goal:
        if g in words or any(
            min(len(g), len(w)) >= 4 and (g.startswith(w) or w.startswith(g)) for w in words
        ):
            count += 1
    return count


def rank_files(
    files: Sequence[str],
    goal: str,
    *,
    recent: Sequence[str] = (),
    hint_files: Sequence[str] = (),
) -> list[str]:
    """``files`` from most to least worth showing the model for ``goal``."""
    wanted = goal_words(goal)
    recency = {name: 1.0 - i / max(len(recent), 1) for i, name in enumerate(recent)}
    hints = set(hint_files)
    # Many files share a folder; split each folder into words once.
    folder_words: dict[str, set[str]] = {}

    def score(path: str) -> float:
        folder, _, name = path.rpartition("/")
        if folder not in folder_words:
            folder_words[folder] = path_words(folder)
        matched = _matches(wanted, folder_words[folder] | path_words(name))
        depth = path.count("/")
        value = 10.0 * matched - 0.5 * min(depth, 6)
        # Top-level files (README, manifests, entry points) orient the model in any repository,
        # so they outrank a file that shares one word with the goal.
        value += 12.0 if depth == 0 else 0.0
        value += 4.0 + 2.0 * recency[path] if path in recency else 0.0
        value += 30.0 if path in hints else 0.0
        return value

    return sorted(files, key=lambda p: (-score(p), p))


def select_within(ranked: Sequence[str], budget_chars: int) -> list[str]:
    """The best-ranked paths whose lines fit in ``budget_chars``, sorted by path."""
    chosen: list[str] = []
    used = 0
    for path in ranked:
        cost = len(path) + 1
        if used + cost <= budget_chars:
            chosen.append(path)
            used += cost
        elif budget_chars - used < 8:
            break  # nothing but the shortest names would fit now
    return sorted(chosen)


def readme_excerpt(text: str, max_chars: int) -> str:
    """The README's first lines without badges and HTML, cut at a line end within max_chars."""
    lines: list[str] = []
    used = 0
    blank = False
    for line in text.replace("\r\n", "\n").split("\n"):
        if _BADGE.match(line):
            continue
        if not line.strip():
            if blank or not lines:
                continue
            blank = True
        else:
            blank = False
        if used + len(line) + 1 > max_chars:
            break
        lines.append(line.rstrip())
        used += len(line) + 1
    return "\n".join(lines).strip()


def omitted_summary(omitted: Iterable[str], limit: int = SUMMARY_FOLDERS) -> str:
    """'src/vendor/ (3,000), docs/ (388), and 4 more folders' for the files left out."""
    counts: Counter[str] = Counter()
    for path in omitted:
        parts = path.split("/")[:-1]
        counts["/".join(parts[:2]) + "/" if parts else "(top level)"] += 1
    if not counts:
        return ""
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    shown = ", ".join(f"{folder} ({count:,})" for folder, count in ranked[:limit])
    rest = len(ranked) - limit
    return shown + (f", and {rest} more folders" if rest > 0 else "")


def render_context(
    files: Sequence[str],
    goal: str,
    *,
    recent: Sequence[str] = (),
    readme: tuple[str, str] | None = None,
    budget_tokens: int = DEFAULT_BUDGET_TOKENS,
    hint_files: Sequence[str] = (),
    note: str = "",
) -> RepoContext:
    """The repository section of the prompt, within ``budget_tokens`` (estimated)."""
    budget = budget_tokens * CHARS_PER_TOKEN
    sections: list[str] = []
    readme_name = None
    if readme is not None:
        readme_name, readme_text = readme
        excerpt = readme_excerpt(readme_text, min(README_MAX_CHARS, int(budget * README_SHARE)))
        if excerpt:
            sections.append(f"{readme_name} (first lines):\n{excerpt}")
    # The header and the left-out summary are rendered after choosing; reserve their room.
    reserve = 200 + 40 * SUMMARY_FOLDERS
    room = budget - sum(len(s) + 2 for s in sections) - reserve
    chosen = select_within(rank_files(files, goal, recent=recent, hint_files=hint_files), room)
    if files:
        sections.append(_file_section(files, chosen))
    elif note:
        sections.append(f"No file list: {note}.")
    text = "\n\n".join(sections)
    return RepoContext(text, tuple(files), len(chosen), readme_name, note)


def _file_section(files: Sequence[str], chosen: Sequence[str]) -> str:
    total = len(files)
    if len(chosen) == total:
        header = f"Files tracked by git (all {total:,}):"
    else:
        header = (
            f"Files tracked by git ({len(chosen):,} of {total:,} shown; "
            f"{total - len(chosen):,} left out to fit the prompt):"
        )
    lines = [header, *chosen]
    if len(chosen) < total:
        shown = set(chosen)
        summary = omitted_summary(p for p in files if p not in shown)
        lines.append(f"Folders with files left out: {summary}")
    return "\n".join(lines)
