"""``localdispatch demo``: the whole cycle in a throwaway repository, with nothing installed.

1. A small Python project (:mod:`.testing.demo_project`) is committed on ``main`` in a new
   folder, with its own git identity (the machine may have none) and a dispatch_config.json
   whose workers are :mod:`.testing.demo_worker` and whose test gate is the project's tests.
2. The bundled stub model server (127.0.0.1 only) answers the real splitter, through the real
   Ollama provider: an epic and five tasks naming their files, some waiting for others.
3. The real dispatcher runs them until idle. Two tasks run at once and both add a line at the
   end of the same files; the second merge conflicts, becomes a conflict task, a worker on that
   branch keeps both sides, the merge is retried and lands.
4. :meth:`Demo.result` checks what a person would check and reports it as data.

Nothing here prints: the command (``cli/demo_cmd.py``) shows the progress and the result.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import CONFIG_FILENAME, Config, load_config
from .dispatcher import Dispatcher, RunSummary
from .errors import DispatchError, GitError, UsageError
from .events import EventLog
from .gitcmd import git_out, run_git
from .gitops import remove_tree
from .layout import Layout, ensure_state_ignored, layout_for
from .llm import OllamaProvider
from .splitter import WrittenPlan, split_goal, write_plan
from .store import TaskStore, open_store
from .supervisor import marked_processes, repo_marker
from .tasks import Task
from .testing import ModelServer, plan_reply
from .testing import demo_project as project
from .testing.demo_worker import has_markers

log = logging.getLogger(__name__)

Reporter = Callable[[dict[str, Any]], None]
MIN_WORKERS, MAX_WORKERS = 2, 8
LOG_LINES = 30


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
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class DemoResult:
    """Everything the demo shows at the end; ``as_dict`` is the ``--json`` output."""

    ok: bool
    repo: str
    goal: str
    model_server: str
    workers: int
    elapsed_secs: float
    split_secs: float
    dispatch_secs: float
    epic: str
    tasks: list[dict[str, Any]]
    counts: dict[str, int]
    merges: list[dict[str, Any]]
    conflicts: list[dict[str, Any]]
    summary: dict[str, Any]
    report_output: str
    main_log: list[str]
    checks: list[Check]
    interrupted: bool = False
    timed_out: bool = False
    kept: bool = True
    cause: str = ""  # why it failed, in one sentence (empty when ok)

    @property
    def problems(self) -> list[str]:
        return [f"{c.name}: {c.detail}" for c in self.checks if not c.ok]

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["problems"] = self.problems
        return data


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
        merges = _merges(events)
        conflicts = _conflicts(tasks, events)
        report = self._report_output()
        checks = [
            _check_tasks(tasks),
            _check_conflict(tasks, conflicts),
            self._check_edits(),
            self._check_markers(),
            _check_report(report),
            self._check_processes(),
            self._check_untracked_state(),
            self._check_checkout(),
        ]
        if self.timed_out:
            checks.insert(0, Check("time", False, self._time_message()))
        elif self.summary.interrupted:
            checks.insert(0, Check("interrupted", False, "the run was stopped before the end"))
        counts: dict[str, int] = {}
        for task in tasks:
            counts[task.status] = counts.get(task.status, 0) + 1
        epic = next((t.id for t in tasks if t.kind == "epic"), "")
        ok = all(c.ok for c in checks)
        if ok:
            cause = ""
        elif self.timed_out or self.summary.interrupted:
            cause = checks[0].detail
        else:
            cause = first_failure(tasks) or next(
                f"{c.name}: {c.detail}" for c in checks if not c.ok
            )
        return DemoResult(
            ok=ok,
            cause=cause,
            repo=str(self.repo),
            goal=project.GOAL,
            model_server=self.server_url,
            workers=self.options.workers,
            elapsed_secs=round(time.monotonic() - self.started, 2),
            split_secs=round(self.split_secs, 2),
            dispatch_secs=round(self.dispatch_secs, 2),
            epic=epic,
            tasks=[_task_data(t) for t in tasks],
            counts=counts,
            merges=merges,
            conflicts=conflicts,
            summary=asdict(self.summary),
            report_output=report,
            main_log=self._main_log(),
            checks=checks,
            interrupted=self.summary.interrupted,
            timed_out=self.timed_out,
        )

    def _time_message(self) -> str:
        return (
            f"the dispatcher was still busy after {self.options.time_limit_secs:g} s and was "
            f"stopped; the worker logs are in {self.layout.logs}"
        )

    def _check_edits(self) -> Check:
        """Every edit a worker was asked to make is on main."""
        edits = [edit for sub in project.SUBTASKS for edit in sub.edits]
        missing: list[str] = []
        for edit in edits:
            text = _show(self.repo, edit.path)
            if (text is None or edit.text not in text) and edit.path not in missing:
                missing.append(edit.path)
        detail = (
            f"edits to {len(missing)} file(s) are not on main ({_ids(missing, 4)})"
            if missing
            else f"all {len(edits)} edits are on main"
        )
        return Check("edits", not missing, detail)

    def _check_markers(self) -> Check:
        names = git_out(["ls-tree", "-r", "-z", "--name-only", "main"], self.repo).split("\0")
        marked = [n for n in names if n and has_markers(_show(self.repo, n) or "")]
        detail = "conflict markers in " + ", ".join(marked) if marked else "no conflict markers"
        return Check("markers", not marked, detail)

    def _check_processes(self) -> Check:
        alive = marked_processes(repo_marker(self.repo))
        pids = ", ".join(str(p.pid) for p in alive)
        return Check(
            "processes",
            not alive,
            f"worker processes still alive: {pids}" if alive else "none left",
        )

    def _check_untracked_state(self) -> Check:
        names = git_out(["ls-tree", "-r", "-z", "--name-only", "main"], self.repo).split("\0")
        state = {self.config.task_queue_file, self.config.suggested_tasks_file}
        tracked = [n for n in names if n in state or n.startswith(".dispatch/")]
        detail = "tracked state files: " + ", ".join(tracked) if tracked else "none tracked"
        return Check("state files", not tracked, detail)

    def _check_checkout(self) -> Check:
        status = git_out(["status", "--porcelain", "--untracked-files=all"], self.repo)
        branch = git_out(["symbolic-ref", "--quiet", "--short", "HEAD"], self.repo)
        ok = not status and branch == "main"
        detail = f"on {branch}, " + (
            "clean" if not status else "changed: " + status.replace("\n", "; ")
        )
        return Check("checkout", ok, detail)

    def _report_output(self) -> str:
        """Run the finished project's new command in the repository's checkout of main."""
        try:
            done = subprocess.run(
                [sys.executable, "-B", "-m", "statkit", *project.REPORT_ARGS],
                cwd=self.repo,
                capture_output=True,
                text=True,
                encoding="utf-8",
                errors="replace",
                env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "PYTHONIOENCODING": "utf-8"},
                timeout=30,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"could not run: {exc}"
        return (done.stdout if done.returncode == 0 else done.stderr).strip()

    def _main_log(self) -> list[str]:
        out = run_git(
            ["log", "--graph", "--oneline", "--no-decorate", f"-{LOG_LINES}", "main"],
            self.repo,
            check=False,
        ).stdout
        return out.rstrip().splitlines()

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


def _show(repo: Path, path: str) -> str | None:
    result = run_git(["show", f"main:{path}"], repo, check=False)
    return result.stdout if result.returncode == 0 else None


def _task_data(task: Task) -> dict[str, Any]:
    keys = ("id", "title", "kind", "status", "files", "depends_on", "parent", "branch")
    data = {key: getattr(task, key) for key in keys}
    data.update(merged_commit=task.merged_commit, closed_reason=task.closed_reason)
    return data


def _merges(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every merge outcome the dispatcher reported, in order."""
    keys = ("task", "branch", "status", "commit", "conflict_task", "retried", "message")
    return [
        {key: event.get(key) for key in keys}
        for event in events
        if event.get("event") == "merge_outcome"
    ]


def _conflicts(tasks: list[Task], events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each conflict task: whose merge it came from, where, how it ended, what the worker did."""
    index = {task.id: task for task in tasks}
    result = []
    for task in tasks:
        if task.kind != "conflict":
            continue
        origin = next(
            (
                e
                for e in events
                if e.get("event") == "conflict_task" and e.get("conflict_task") == task.id
            ),
            {},
        )
        source = index.get(str(origin.get("task", task.discovered_from or "")))
        landed = [
            e
            for e in events
            if e.get("event") == "merge_outcome"
            and e.get("status") == "merged"
            and source is not None
            and e.get("task") == source.id
        ]
        result.append(
            {
                "task": task.id,
                "title": task.title,
                "status": task.status,
                "branch": task.branch,
                "files": list(task.files),
                "for_task": source.id if source else None,
                "for_task_status": source.status if source else None,
                "resolution": _resolution(events, task.id),
                "merged_after_retry": bool(landed),
                "merged_commit": landed[-1].get("commit") if landed else None,
            }
        )
    return result


def _resolution(events: list[dict[str, Any]], task_id: str) -> list[str]:
    """What the worker said it did, from the log of its last attempt."""
    starts = [e for e in events if e.get("event") == "start" and e.get("task") == task_id]
    if not starts or not starts[-1].get("log"):
        return []
    try:
        text = Path(str(starts[-1]["log"])).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    return [
        line.strip()
        for line in text.splitlines()
        if line.startswith(("resolved ", f"{task_id}: committed"))
    ]


def _check_tasks(tasks: list[Task]) -> Check:
    failed = [t.id for t in tasks if t.status == "failed"]
    other = [t.id for t in tasks if t.status not in ("done", "failed")]
    parts = [f"{len(failed)} failed ({_ids(failed)})"] if failed else []
    parts += [f"{len(other)} not finished ({_ids(other)})"] if other else []
    if not tasks:
        parts = ["there are no tasks"]
    return Check("tasks", not parts, ", ".join(parts) or f"all {len(tasks)} done")


def _check_report(output: str) -> Check:
    command = f"`python -m statkit {' '.join(project.REPORT_ARGS)}`"
    if output == project.EXPECTED_REPORT:
        return Check("report", True, f"{command} prints the expected report")
    last = output.splitlines()[-1] if output.strip() else "nothing"
    return Check("report", False, f"{command} printed {last!r}")


def _ids(ids: list[str], limit: int = 6) -> str:
    return ", ".join(ids[:limit]) + (f" and {len(ids) - limit} more" if len(ids) > limit else "")


def first_failure(tasks: list[Task]) -> str | None:
    """The task that failed first, with its reason: usually the cause of the rest."""
    failed = sorted((t for t in tasks if t.status == "failed"), key=lambda t: t.updated_at)
    if not failed:
        return None
    task = failed[0]
    return f"task {task.id} ({task.title}) failed: {task.closed_reason or 'no reason given'}"


def _check_conflict(tasks: list[Task], conflicts: list[dict[str, Any]]) -> Check:
    if len(conflicts) != 1:
        return Check("conflict", False, f"expected one conflict task, found {len(conflicts)}")
    (conflict,) = conflicts
    ok = conflict["status"] == "done" and conflict["merged_after_retry"]
    detail = f"{conflict['task']} {conflict['status']}; the merge of {conflict['branch']} " + (
        "was retried and landed" if conflict["merged_after_retry"] else "did not land"
    )
    return Check("conflict", ok, detail)
