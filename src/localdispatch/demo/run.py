"""``localdispatch demo``: the whole cycle in a throwaway repository, with nothing installed.

1. A small Python project (:mod:`.testing.demo_project`) is committed on ``main`` in a new
   folder, with its own git identity (the machine may have none) and a dispatch_config.json
   whose workers are :mod:`.testing.demo_worker` and whose test gate is the project's tests.
2. The bundled stub model server (127.0.0.1 only) answers the real splitter, through the real
   Ollama provider: an epic and five tasks naming their files, some waiting for others.
3. The real dispatcher runs them until idle. Two tasks run at once and both add a line at the
   end of the same files; the second merge conflicts, becomes a conflict task, a worker on that
   branch keeps both sides, the merge is retried and lands.
4. :meth:`Demo.result` checks what a person would check (:mod:`.demo_checks`) and returns
   it as data.

Nothing here prints: the command (``cli/demo_cmd.py``) shows the progress and the result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from localdispatch.config import CONFIG_FILENAME, Config, load_config
from localdispatch.demo import checks
from localdispatch.demo.checks import Check, DemoResult
from localdispatch.dispatch.loop import Dispatcher
from localdispatch.dispatch.summary import RunSummary
from localdispatch.errors import DispatchError, GitError, UsageError
from localdispatch.events import EventLog
from localdispatch.git.clones import remove_tree
from localdispatch.git.commands import run_git
from localdispatch.layout import Layout, ensure_state_ignored, layout_for
from localdispatch.split.llm import OllamaProvider
from localdispatch.split.splitter import WrittenPlan, split_goal, write_plan
from localdispatch.store import TaskStore, open_store
from localdispatch.tasks import Task
from localdispatch.testing import ModelServer, plan_reply
from localdispatch.testing import demo_project as project

log = logging.getLogger(__name__)

Reporter = Callable[[dict[str, Any]], None]
MIN_WORKERS, MAX_WORKERS = 2, 8

class DemoError(DispatchError):
    """The demo could not be set up or run (exit code 1)."""


@dataclass
class DemoOptions:
    directory: Path | None = None  # None: a new folder under the system's temp folder
    workers: int = 3
    pace_secs: float = 3.0  # how long each scripted worker "thinks"
    time_limit_secs: float = 100.0  # the dispatcher is stopped if it runs longer

    def check(self) -> None:
        if not MIN_WORKERS <= self.workers <= MAX_WORKERS:
            raise UsageError(
                f"--workers must be between {MIN_WORKERS} and {MAX_WORKERS} (got {self.workers}).",
                hint="The planned conflict needs two workers at once.",
            )
        if not 0 <= self.pace_secs <= 30:
            raise UsageError(f"--pace must be between 0 and 30 seconds (got {self.pace_secs:g}).")


@dataclass
class SplitInfo:
    written: WrittenPlan
    server_url: str
    warnings: list[str] = field(default_factory=list)


class Demo:
    """One demo run; the steps are separate so the command can show each as it happens."""

    def __init__(self, options: DemoOptions) -> None:
        options.check()
        if shutil.which("git") is None:
            raise GitError(
                "git is not installed or not on PATH; the demo needs it.",
                hint="Install git (https://git-scm.com; on Windows, Git for Windows) and open "
                "a new terminal.",
            )
        self.options = options
        self.repo = _new_folder(options.directory)
        self.started = time.monotonic()
        self.split_secs = 0.0
        self.dispatch_secs = 0.0
        self.server_url = ""
        self.summary = RunSummary()
        self.timed_out = False
        self._dispatcher: Dispatcher | None = None
        self._config: Config | None = None
        self._layout: Layout | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            raise DemoError("The demo repository has not been created yet.")
        return self._config

    @property
    def layout(self) -> Layout:
        return self._layout or layout_for(self.config)

    def store(self) -> TaskStore:
        return open_store(self.config, self.layout)

    # ---- 1. the repository -----------------------------------------------------------------
    def create_repo(self) -> Path:
        """The sample project committed on main, with a local identity and the config."""
        repo = self.repo
        run_git(["init", "--quiet"], repo)
        # Not `init -b`: that needs git 2.28; this works on every git with worktrees.
        run_git(["symbolic-ref", "HEAD", "refs/heads/main"], repo)
        # Hooks from the user's templates or core.hooksPath (pre-commit, git-lfs) belong to
        # their own repositories; the demo's points at a folder that holds none.
        no_hooks = (repo / ".git" / "no-hooks").as_posix()
        for key, value in (*_LOCAL_GIT_CONFIG, ("core.hooksPath", no_hooks)):
            run_git(["config", key, value], repo)
        for name, text in project.PROJECT_FILES.items():
            target = repo.joinpath(*name.split("/"))
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text, encoding="utf-8", newline="\n")
        config_path = repo / CONFIG_FILENAME
        config_path.write_text(
            json.dumps(self._config_data(), indent=2) + "\n", encoding="utf-8", newline="\n"
        )
        self._config = load_config(config_path)
        self._layout = layout_for(self._config)
        ensure_state_ignored(self._layout)  # before anything writes a state file
        names = [*project.PROJECT_FILES, CONFIG_FILENAME]
        run_git(["add", "--", *names], repo)
        run_git(["commit", "--quiet", "--no-verify", "-m", "statkit: total and a CLI"], repo)
        return repo

    def _config_data(self) -> dict[str, Any]:
        worker = [sys.executable, "-m", "localdispatch.testing.demo_worker", "{task_file}"]
        worker += ["--base", "{base}", "--pace", f"{self.options.pace_secs:g}"]
        return {
            "branch": "main",
            "num_workers": self.options.workers,
            "worker_backend": "command",
            "worker_command": worker,
            "worker_timeout_secs": 60,
            "worker_kill_grace_secs": 2,
            "max_worker_retries": 1,
            "poll_interval_secs": 0.1,
            # The project's own tests gate every merge, as they should in a real repository.
            "test_command": [sys.executable, "-B", "-m", "unittest", "discover", "-q"],
            "test_timeout_secs": 60,
            "ollama": {"model": project.MODEL},
        }

    # ---- 2. the split ----------------------------------------------------------------------
    def split(self) -> SplitInfo:
        """The real splitter against the stub model server, written to the task store."""
        started = time.monotonic()
        reply = plan_reply(*project.plan_subtasks())
        with _no_proxy_for_loopback(), ModelServer([reply], models=[project.MODEL]) as server:
            self.server_url = server.url
            provider = OllamaProvider(server.url, project.MODEL, timeout_secs=30)
            try:
                plan = split_goal(self.config, self.layout, project.GOAL, provider=provider)
            finally:
                provider.close()
        written = write_plan(self.store(), plan)
        self.split_secs = time.monotonic() - started
        return SplitInfo(written, self.server_url, list(plan.warnings))

    # ---- 3. the dispatcher -----------------------------------------------------------------
    def dispatch(self, reporter: Reporter | None = None) -> RunSummary:
        """Run the dispatcher until idle (the way `dispatch_workers.py --until-idle` does)."""
        started = time.monotonic()
        dispatcher = Dispatcher(
            self.config,
            self.layout,
            workers=self.options.workers,
            until_idle=True,
            reporter=reporter,
        )
        self._dispatcher = dispatcher
        watchdog = threading.Timer(self.options.time_limit_secs, self._time_up)
        watchdog.daemon = True
        watchdog.start()
        try:
            self.summary = dispatcher.run()
        finally:
            watchdog.cancel()
            self._dispatcher = None
            self.dispatch_secs = time.monotonic() - started
        return self.summary

    def interrupt(self) -> int:
        """Ctrl+C: stop the dispatcher at once (it is only a demo). Thread-safe."""
        dispatcher = self._dispatcher
        if dispatcher is None:
            return 0
        count = dispatcher.interrupt()
        while count < 2:
            count = dispatcher.interrupt()
        return count

    def _time_up(self) -> None:
        self.timed_out = True
        log.warning(
            "demo: the dispatcher ran past %.0f s; stopping it", self.options.time_limit_secs
        )
        self.interrupt()

    # ---- 4. the result ---------------------------------------------------------------------
    def result(self) -> DemoResult:
        """What happened, and the checks that say whether it all worked."""
        tasks = self.store().all()
        events = EventLog(self.layout.events).read()
        found = checks.conflicts(tasks, events)
        report = checks.report_output(self.repo)
        verdict = [
            checks.check_tasks(tasks),
            checks.check_conflict(found),
            checks.check_report(report),
            *checks.repo_checks(self.repo, self.config),
        ]
        stopped = self._stopped()
        if stopped is not None:
            verdict.insert(0, stopped)
        return DemoResult(
            ok=all(c.ok for c in verdict),
            cause=self._cause(verdict, tasks, stopped),
            repo=str(self.repo),
            goal=project.GOAL,
            model_server=self.server_url,
            workers=self.options.workers,
            elapsed_secs=round(time.monotonic() - self.started, 2),
            split_secs=round(self.split_secs, 2),
            dispatch_secs=round(self.dispatch_secs, 2),
            epic=next((t.id for t in tasks if t.kind == "epic"), ""),
            tasks=[checks.task_data(t) for t in tasks],
            counts=checks.status_counts(tasks),
            merges=checks.merges(events),
            conflicts=found,
            summary=asdict(self.summary),
            report_output=report,
            main_log=checks.main_log(self.repo),
            checks=verdict,
            interrupted=self.summary.interrupted,
            timed_out=self.timed_out,
        )

    def _stopped(self) -> Check | None:
        if self.timed_out:
            return Check(
                "time",
                False,
                f"the dispatcher was still busy after {self.options.time_limit_secs:g} s and "
                f"was stopped; the worker logs are in {self.layout.logs}",
            )
        if self.summary.interrupted:
            return Check("interrupted", False, "the run was stopped before the end")
        return None

    @staticmethod
    def _cause(verdict: list[Check], tasks: list[Task], stopped: Check | None) -> str:
        """Why the demo failed, in one sentence: a stop, else the first task that failed."""
        failed = [c for c in verdict if not c.ok]
        if not failed:
            return ""
        if stopped is not None:
            return stopped.detail
        return checks.first_failure(tasks) or f"{failed[0].name}: {failed[0].detail}"

    # ---- the folder ------------------------------------------------------------------------
    def remove(self) -> bool:
        """Delete the demo repository (``--cleanup``); False if the system kept some of it."""
        try:
            remove_tree(self.repo)
        except OSError as exc:
            log.warning("could not remove %s: %s", self.repo, exc)
            return False
        return True


# git settings of the demo repository itself: an identity (a fresh machine has none), no
# signing prompt, LF line ends, plain two-way conflict markers whatever the user's own taste.
_LOCAL_GIT_CONFIG = (
    ("user.name", "localdispatch demo"),
    ("user.email", "demo@localdispatch.invalid"),
    ("commit.gpgSign", "false"),
    ("core.autocrlf", "false"),
    ("merge.conflictStyle", "merge"),
)


def _new_folder(directory: Path | None) -> Path:
    """The demo's repository folder: new, or empty if the user named one."""
    if directory is None:
        return Path(tempfile.mkdtemp(prefix="localdispatch-demo-")).resolve()
    path = directory.expanduser().resolve()
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise UsageError(
            f"--dir {path} is not an empty folder.",
            hint="Name a new folder (the demo creates a repository there), or leave out --dir.",
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DemoError(f"Cannot create the demo folder {path}: {exc}.", path=path) from exc
    return path


@contextlib.contextmanager
def _no_proxy_for_loopback() -> Iterator[None]:
    """Keep a proxy in $HTTP_PROXY away from the stub server: it only listens on 127.0.0.1."""
    saved = {name: os.environ.get(name) for name in ("NO_PROXY", "no_proxy")}
    for name, value in saved.items():
        hosts = [h for h in (value or "").split(",") if h.strip()]
        os.environ[name] = ",".join([*hosts, "127.0.0.1", "localhost"])
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
