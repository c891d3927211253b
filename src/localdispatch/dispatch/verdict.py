"""A finished attempt's verdict (pure): commits count, the exit code only explains a failure.

Aider exits 0 when the model did nothing, so a worker is judged by the commits on its branch;
a refusal (a tampered slot, Aider saying it gave up) or files named like a model's sentences
make a failed attempt whatever was committed. ``attempt.verdict_for`` gathers the facts.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from localdispatch.git import branches
from localdispatch.tasks import Task

# ---- judging (pure) ----------------------------------------------------------------------

Outcome = Literal["merge", "done", "retry", "failed"]


@dataclass(frozen=True)
class Verdict:
    outcome: Outcome
    reason: str


def judge(
    task: Task,
    *,
    commits: int,
    timed_out: bool,
    exit_code: int | None,
    timeout_secs: float,
    max_retries: int,
    auto_merge: bool,
    log_path: Path | str,
    accidental: Sequence[str] = (),
    refusal: str | None = None,
) -> Verdict:
    """What a finished attempt means. Commits count; the exit code only explains a failure.

    A worker killed at its timeout that had committed is judged like any other: its commits
    are whole edits (Aider commits each one it applies), and the merge queue's checks stand
    between them and the base branch. Commits that add ``accidental`` files (see
    :func:`accidental_files`) make a failed attempt that names them, so they are never merged.
    A ``refusal`` (the worker tampered with its repository, or said it gave up) makes a
    failed attempt whatever was committed, with that as its reason.
    """
    if refusal:
        return retry_or_fail(task, f"{refusal} (log: {log_path})", max_retries)
    if commits > 0 and accidental and task.kind != "conflict":
        shown = ", ".join(json.dumps(name, ensure_ascii=False) for name in accidental[:5])
        more = f" and {len(accidental) - 5} more" if len(accidental) > 5 else ""
        why = (
            f"it added files the task did not name whose names look like a model's sentences, "
            f"not file names: {shown}{more}"
        )
        return retry_or_fail(task, f"{why} (log: {log_path})", max_retries)
    if commits > 0:
        plural = "s" if commits != 1 else ""
        if task.kind == "conflict":
            return Verdict("done", f"conflict resolved in {commits} commit{plural}")
        if not auto_merge:
            return Verdict("done", f"{commits} commit{plural}; branch left for you to merge")
        return Verdict("merge", f"{commits} commit{plural}")
    if timed_out:
        why = f"timed out after {timeout_secs:g} s without a commit"
    elif exit_code not in (0, None):
        why = f"exited with code {exit_code} without a commit"
    else:
        why = "finished without a commit"
    return retry_or_fail(task, f"{why} (log: {log_path})", max_retries)


def retry_or_fail(task: Task, reason: str, max_retries: int) -> Verdict:
    """A failed attempt: retry while attempts remain, else the task has failed.

    ``task.attempts`` already counts the attempt that just failed (it is raised at claim).
    """
    if task.attempts > max_retries:
        tries = "attempt" if task.attempts == 1 else "attempts"
        return Verdict("failed", f"failed after {task.attempts} {tries}: {reason}")
    return Verdict("retry", f"attempt {task.attempts} failed: {reason}")


# ---- accidental files (pure, but for the git call in find_accidental_files) ---------------

# Characters that no file a worker was asked for has in its name: what is left of a markdown
# line (backticks, asterisks) and what Windows forbids in names.
_ODD_CHARS = frozenset('`*"<>|?:')


def looks_accidental(path: str) -> bool:
    """Whether a new file's name looks like a sentence rather than a file name.

    Aider's whole-file format takes the line above each code block as the file's name, so a
    chatty model's "Here is the updated file:" becomes a file called ``Here is the updated
    file``. Such names have spaces, end in ``:`` or ``.``, or carry markdown characters.
    """
    for part in path.replace("\\", "/").split("/"):
        if not part:
            continue
        if any(ch.isspace() for ch in part) or part.endswith(".") or _ODD_CHARS & set(part):
            return True
    return False


def accidental_files(added: Iterable[str], named: Iterable[str]) -> list[str]:
    """The files in ``added`` that look like accidents and that the task did not name."""
    wanted = {_comparable(name) for name in named}
    return [path for path in added if _comparable(path) not in wanted and looks_accidental(path)]


def _comparable(path: str) -> str:
    return path.replace("\\", "/").removeprefix("./").strip("/").casefold()


def find_accidental_files(repo: Path, start: str, branch: str, task: Task) -> list[str]:
    """Accidental files among those the task's branch added since ``start``.

    A conflict task's branch holds the base branch's new files too, so it is not checked.
    """
    if task.kind == "conflict":
        return []
    return accidental_files(branches.added_files(repo, start, branch), task.files)
