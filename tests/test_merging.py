"""The merge queue against real git repositories: merges, conflicts, gates, waiting, retries."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from conftest import git
from localdispatch.config import CONFIG_FILENAME, load_config
from localdispatch.events import EventLog
from localdispatch.layout import Layout, ensure_state_ignored, layout_for
from localdispatch.merging import MergeQueue
from localdispatch.store import JsonStore, TaskDraft, open_store
from localdispatch.tasks import Task


@dataclass
class Env:
    """A repository with a config, a store, an event log and a merge queue on it."""

    repo: Path
    layout: Layout
    store: JsonStore
    events: EventLog
    queue: MergeQueue

    def task(self, title: str = "do work", **extra: Any) -> Task:
        task = self.store.add(TaskDraft(title=title, **extra))
        claimed = self.store.claim(task.id)
        assert claimed is not None
        return claimed

    def branch(self, name: str, files: dict[str, str], base: str = "main") -> str:
        """Commit ``files`` on a new branch from ``base`` in a scratch worktree (then removed)."""
        scratch = self.repo.parent / f"scratch-{name.replace('/', '-')}"
        git(self.repo, "worktree", "add", "-q", "-b", name, str(scratch), base)
        for rel, text in files.items():
            target = scratch / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8")
        git(scratch, "add", "-A")
        git(scratch, "commit", "-q", "-m", f"work on {name}")
        git(self.repo, "worktree", "remove", "--force", str(scratch))
        return name

    def tip(self, ref: str = "main") -> str:
        return git(self.repo, "rev-parse", f"refs/heads/{ref}")

    def event_names(self) -> list[str]:
        return [e["event"] for e in self.events.read()]


def make_env(repo: Path, **config: Any) -> Env:
    (repo / CONFIG_FILENAME).write_text(json.dumps(config), encoding="utf-8")
    git(repo, "add", CONFIG_FILENAME)
    git(repo, "commit", "-q", "-m", "config")
    loaded = load_config(repo / CONFIG_FILENAME)
    layout = layout_for(loaded)
    ensure_state_ignored(layout)
    store = open_store(loaded, layout)
    assert isinstance(store, JsonStore)
    events = EventLog(layout.events)
    return Env(repo, layout, store, events, MergeQueue(loaded, layout, store, events))


@pytest.fixture
def env(repo: Path) -> Env:
    return make_env(repo)


def test_clean_merge_lands_moves_the_checkout_and_records_the_commit(env: Env) -> None:
    task = env.task()
    branch = env.branch("ld/t-1-work", {"feature.py": "x = 1\n"})
    before = env.tip()

    outcome = env.queue.merge(task, branch)

    assert outcome.status == "merged", outcome.message
    assert outcome.commit == env.tip() != before
    assert git(env.repo, "rev-parse", "HEAD") == outcome.commit
    assert (env.repo / "feature.py").read_text(encoding="utf-8") == "x = 1\n"
    assert git(env.repo, "status", "--porcelain") == ""
    done = env.store.get(task.id)
    assert done.status == "done"
    assert done.merged_commit == outcome.commit
    assert git(env.repo, "branch", "--list", branch) == ""
    assert "merge" in env.event_names()
    assert env.queue.pending() == []
