"""Where every file of localdispatch lives in a repository, derived from the config in one place.

State never goes through git: the ignore lines are written to ``.git/info/exclude``, which is
shared by every worktree and is not itself tracked, so the user's checkout stays clean and no
state file can be committed, merged or conflicted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from localdispatch import processes
from localdispatch.config import CONFIG_FILENAME, LAUNCHERS, Config
from localdispatch.errors import ConfigError

STATE_DIR = ".dispatch"
EXCLUDE_HEADER = "# localdispatch state (added by localdispatch; keep these lines)"


@dataclass(frozen=True)
class Layout:
    """Absolute paths of the repository, its state folder and the files in it."""

    repo: Path
    config_file: Path | None
    task_queue: Path
    suggested_tasks: Path
    worktrees: Path
    worktree_prefix: str

    @property
    def state(self) -> Path:
        return self.repo / STATE_DIR

    @property
    def locks(self) -> Path:
        return self.state / "locks"

    @property
    def logs(self) -> Path:
        return self.state / "logs"

    @property
    def events(self) -> Path:
        return self.state / "events.jsonl"

    @property
    def store_lock(self) -> Path:
        return self.locks / "task_queue.lock"

    @property
    def state_file(self) -> Path:
        """The dispatcher's own state: its owner and the attempts it watches."""
        return self.state / "state.json"

    @property
    def dispatcher_lock(self) -> Path:
        """Held by the one dispatcher of this repository."""
        return self.locks / "dispatcher.lock"

    @property
    def merge_slot_lock(self) -> Path:
        """Held by whoever is merging into the base branch (merges land one at a time)."""
        return self.locks / "merge_slot.lock"

    @property
    def pending_merges(self) -> Path:
        return self.state / "pending_merges.json"

    @property
    def pending_merges_lock(self) -> Path:
        return self.locks / "pending_merges.lock"

    @property
    def suggestions_inbox(self) -> Path:
        """The snapshots taken out of suggested_tasks.txt and their journal (see suggestions/)."""
        return self.state / "suggestions"

    @property
    def suggestions_lock(self) -> Path:
        """Held by the one ingest that moves lines out of the suggestions file."""
        return self.locks / "suggestions.lock"

    def attempt_message(self, task_id: str, attempt: int) -> Path:
        """The task text a worker attempt is given: under .dispatch/, never in its tree."""
        return self.state / "tasks" / f"{_attempt_stem(task_id, attempt)}.md"

    def attempt_aiderignore(self, task_id: str, attempt: int) -> Path:
        return self.state / "tasks" / f"{_attempt_stem(task_id, attempt)}.aiderignore"

    def attempt_log(self, task_id: str, attempt: int) -> Path:
        return self.logs / f"{_attempt_stem(task_id, attempt)}.log"

    def aider_history(self, task_id: str) -> Path:
        """Aider's chat and input history of a task, kept across its attempts."""
        return self.state / "history" / task_id

    def test_log(self, task_id: str) -> Path:
        """The output of the test command run on the merge of a task's branch."""
        return self.logs / "merges" / f"{task_id}-test.log"

    @property
    def import_lock(self) -> Path:
        """Held while a plan is imported, so two imports of one file cannot both add it."""
        return self.locks / "import.lock"

    @property
    def checkout_journal(self) -> Path:
        """The journal of an update of the user's checkout (see checkout_journal.py)."""
        return self.state / "checkout_update.json"

    @property
    def integration(self) -> Path:
        """The private clone where merges and the test gate run."""
        return self.state / "integration"

    def slot_worktree(self, slot: int) -> Path:
        return self.worktrees / f"{self.worktree_prefix}{slot}"

    def repo_relative(self, path: Path) -> str | None:
        """``path`` as git spells it in this repository (forward slashes), or None outside."""
        return _relative(path, self.repo)

    def state_files(self) -> list[str]:
        """The repo-relative state files a branch must never carry (store, suggestions)."""
        return [
            rel
            for rel in map(self.repo_relative, (self.task_queue, self.suggested_tasks))
            if rel is not None
        ]

    def ignore_patterns(self) -> list[str]:
        """Repo-relative patterns for every state file that lives inside the repository."""
        patterns = [f"/{STATE_DIR}/"]
        for path in (self.task_queue, self.suggested_tasks, self.worktrees):
            rel = _relative(path, self.repo)
            if rel is not None and not rel.startswith(STATE_DIR + "/"):
                patterns.append("/" + rel + ("/" if path == self.worktrees else ""))
                if path == self.task_queue:
                    patterns.append("/" + rel + ".*")
        return patterns

    def default_protected_paths(self) -> list[str]:
        """The config, the launchers and the state files: what a worker must never change."""
        protected = [CONFIG_FILENAME, "dispatch_config.schema.json", *LAUNCHERS, STATE_DIR + "/**"]
        if self.config_file is not None:
            rel = _relative(self.config_file, self.repo)
            if rel is not None:
                protected.append(rel)
        protected.extend(self.state_files())
        return sorted(set(protected))


def protected_patterns(config: Config, layout: Layout) -> list[str]:
    """What workers may not change: always the config, launchers and state files (a worker
    that rewrote the dispatcher's own scripts is how the ancestor broke), plus the user's own."""
    return sorted({*layout.default_protected_paths(), *(config.protected_paths or [])})


def layout_for(config: Config) -> Layout:
    repo = config.repo_path
    if config.worktree_placement == "sibling":
        worktrees = repo.parent
        prefix = f"{repo.name}-{config.worktree_prefix}"
    else:
        worktrees = repo / config.worktree_dir
        prefix = config.worktree_prefix
    return Layout(
        repo=repo,
        config_file=config.source,
        task_queue=repo / config.task_queue_file,
        suggested_tasks=repo / config.suggested_tasks_file,
        worktrees=worktrees.resolve(),
        worktree_prefix=prefix,
    )


def _attempt_stem(task_id: str, attempt: int) -> str:
    return f"{task_id}-attempt{attempt}"


def _relative(path: Path, root: Path) -> str | None:
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        return None


def git_common_dir(repo: Path) -> Path | None:
    """The shared .git folder of ``repo`` (the same for all its worktrees), or None."""
    try:
        out = processes.run(
            ["git", "rev-parse", "--git-common-dir"],
            cwd=repo,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            check=False,
        )
    except (FileNotFoundError, NotADirectoryError):
        return None
    if out.returncode != 0:
        return None
    common = Path(out.stdout.strip())
    return common if common.is_absolute() else (repo / common).resolve()


def ensure_state_ignored(layout: Layout) -> Path | None:
    """Add the state files to .git/info/exclude once; return the exclude file, or None.

    Returns None when the repository is not a git repository: a store can still be used
    there (``localdispatch tasks`` works anywhere), and nothing can be committed by accident.
    """
    common = git_common_dir(layout.repo)
    if common is None:
        return None
    exclude = common / "info" / "exclude"
    try:
        existing = exclude.read_text(encoding="utf-8") if exclude.exists() else ""
    except OSError as exc:
        raise ConfigError(
            f"Cannot read {exclude} to keep localdispatch's state out of git: {exc}.",
            hint="Add the lines " + " ".join(layout.ignore_patterns()) + " to .gitignore.",
            path=exclude,
        ) from exc
    present = {line.strip() for line in existing.splitlines()}
    missing = [p for p in layout.ignore_patterns() if p not in present]
    if not missing:
        return exclude
    lines = [] if EXCLUDE_HEADER in present else [EXCLUDE_HEADER]
    prefix = "" if not existing or existing.endswith("\n") else "\n"
    try:
        exclude.parent.mkdir(parents=True, exist_ok=True)
        with exclude.open("a", encoding="utf-8", newline="\n") as handle:
            handle.write(prefix + "\n".join([*lines, *missing]) + "\n")
    except OSError as exc:
        raise ConfigError(
            f"Cannot write {exclude} to keep localdispatch's state out of git: {exc}.",
            hint="Add the lines " + " ".join(missing) + " to .gitignore yourself.",
            path=exclude,
        ) from exc
    return exclude
