"""A worker: what it is told, how it is started, and whether it can be started at all.

``launch_attempt`` prepares a slot and starts one attempt. The argv (Aider's non-interactive
flags, or ``worker_command`` with its placeholders) is built as a list and never given to a
shell. The task text goes to a file under ``.dispatch/tasks/``, outside every slot, so it can
never be committed. How a finished attempt is judged is ``verdict.py``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from localdispatch.config import PLACEHOLDERS, Config, is_loopback
from localdispatch.dispatch.aider import (
    aider_argv,
    aider_env,
    chat_files,
    choose_edit_format,
    is_ollama_model,
    make_folders_for,
    write_aiderignore,
)
from localdispatch.dispatch.state import RunRecord
from localdispatch.errors import WorkerError
from localdispatch.git import branches
from localdispatch.git.clones import ceiling_env, clone_at
from localdispatch.git.commands import identity_env
from localdispatch.layout import Layout, protected_patterns
from localdispatch.processes.supervisor import WorkerHandle, start_worker, worker_marker
from localdispatch.tasks import Task


@dataclass(frozen=True)
class WorkerFiles:
    """Where one attempt's files live (all under .dispatch/, none in the worktree)."""

    task_file: Path
    log: Path
    history_dir: Path
    aiderignore: Path


def attempt_files(layout: Layout, task: Task, attempt: int) -> WorkerFiles:
    return WorkerFiles(
        task_file=layout.attempt_message(task.id, attempt),
        log=layout.attempt_log(task.id, attempt),
        history_dir=layout.aider_history(task.id),
        aiderignore=layout.attempt_aiderignore(task.id, attempt),
    )


def protected_paths(config: Config, layout: Layout) -> list[str]:
    return protected_patterns(config, layout)


def task_instructions(
    task: Task,
    *,
    branch: str,
    base: str,
    protected: Sequence[str],
    suggestions_file: str = "suggested_tasks.txt",
) -> str:
    """The message a worker receives: the task, its files, and the rules of the game."""
    lines = [f"# Task {task.id}: {task.title}", ""]
    if task.description.strip():
        lines += [task.description.strip(), ""]
    if task.attempts > 1 and task.closed_reason:
        lines += [f"Note: an earlier attempt did not succeed ({task.closed_reason}).", ""]
    lines.append("## Files to focus on")
    if task.files:
        lines += [f"- {name}" for name in task.files]
    else:
        lines.append("No files were named: change as few files as the task needs.")
    lines.append("")
    if task.kind == "conflict":
        lines += [
            "## Resolve the merge conflict",
            f"This worktree is on branch `{branch}`, and a merge of `{base}` into it has been "
            "started. Edit the files that hold conflict markers (<<<<<<<, =======, >>>>>>>) so "
            "both sides' intent is kept, remove every marker, then commit the merge "
            "(`git add` the files, then `git commit --no-edit`). If no merge is in progress, "
            f"run `git merge {base}` first.",
            "",
        ]
    lines += [
        "## Rules",
        f"- You work in a git worktree on branch `{branch}` (based on `{base}`). Stay on it; "
        "do not switch branches, rebase or push.",
        "- Commit your work on this branch when you are done. Only committed work counts: "
        "an attempt without a commit is treated as failed.",
        "- Do not change these protected paths: " + ", ".join(f"`{p}`" for p in protected) + ".",
        f"- Follow-up ideas: append one line per idea to `{suggestions_file}` at the root of "
        "this worktree (for example `Add tests for the parser [files: tests/test_parser.py] "
        f"[from: {task.id}]`). Do not commit that file.",
    ]
    return "\n".join(lines) + "\n"


def write_task_file(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    return path


def worker_argv(
    config: Config,
    task: Task,
    *,
    task_file: Path,
    worktree: Path,
    branch: str,
    history_dir: Path,
    aiderignore: Path | None = None,
) -> list[str]:
    """The argv of one worker attempt, for either backend."""
    if config.worker_backend == "command":
        values = {
            "task_file": str(task_file),
            "model": config.model,
            "worktree": str(worktree),
            "task_id": task.id,
            "branch": branch,
            "base": config.branch,
        }
        return expand_command(config.worker_command or [], values, task.files)
    return aider_argv(
        config.aider_cmd,
        config.model,
        task_file,
        history_dir,
        chat_files(task.files, worktree),
        edit_format=choose_edit_format(config.model, config.aider_edit_format),
        aiderignore=aiderignore,
        extra_args=config.aider_extra_args,
    )


def worker_env(
    config: Config, layout: Layout, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Variables added to a worker's environment: a git identity for its commits when the
    repository has none, and for Aider the settings of an unattended run."""
    environ = os.environ if environ is None else environ
    env = identity_env(layout.repo, environ)
    if config.worker_backend == "aider":
        llm = config.llm
        openai_base = llm.base_url if llm.provider == "openai" else None
        env.update(
            aider_env(
                config.model,
                environ,
                ollama_host=config.ollama.host,
                openai_base=openai_base,
                openai_key_env=llm.api_key_env,
            )
        )
    return env


def check_worker_program(config: Config) -> None:
    """Before any work: the worker program must exist (a missing one would fail every task
    the same way, and is the user's to fix). Relative paths are left to the start, since they
    are resolved in each worker's tree."""
    if config.worker_backend == "aider":
        program, key = config.aider_cmd, "aider_cmd"
    else:
        program, key = (config.worker_command or [""])[0], "worker_command"
    path = Path(program)
    if path.name == program:
        found = shutil.which(program) is not None
    elif path.is_absolute():
        found = path.is_file()
    else:
        return
    if not found:
        raise WorkerError(
            f"The worker program {program!r} ({key} in dispatch_config.json) was not found.",
            hint="Install it, or set "
            + (key if key == "aider_cmd" else "worker_command[0]")
            + " to its full path (see README, Installing Aider beside localdispatch).",
            key=key,
        )


def model_server_problem(config: Config, layout: Layout) -> str | None:
    """Why Aider workers cannot use their model server, or None if it answers.

    Aider itself retries an unreachable server (or a model Ollama does not have) for over a
    minute and then exits 0 with nothing done, so every attempt would burn its time and a
    retry before failing. The dispatcher asks here before it starts work and after an attempt
    without a commit (see ``model_watch.py``).
    """
    if config.worker_backend != "aider":
        return None
    env = {**worker_env(config, layout), **os.environ}
    if is_ollama_model(config.model):
        base, probe, variable = env.get("OLLAMA_API_BASE"), "/api/tags", "OLLAMA_API_BASE"
        start = "start it with `ollama serve` (or the Ollama app), or fix ollama.host"
    elif config.model.startswith("openai/"):
        base, probe, variable = env.get("OPENAI_API_BASE"), "/models", "OPENAI_API_BASE"
        start = "start it, or fix llm.base_url"
    else:
        return None  # a hosted model: its reachability is the provider's business
    if not base:
        return f"Aider's model {config.model} needs {variable} (or llm.base_url) to be set."
    url = base.rstrip("/") + probe
    try:
        reply = httpx.get(url, timeout=3.0, trust_env=not is_loopback(url))
    except httpx.HTTPError as exc:
        return (
            f"no model server answers at {base} ({type(exc).__name__}), which Aider workers "
            f"use for {config.model}; {start}."
        )
    if is_ollama_model(config.model):
        return _ollama_lacks(reply, config.model, base)
    return None


def _ollama_lacks(reply: httpx.Response, model: str, base: str) -> str | None:
    """Why Ollama's model list (``/api/tags``) shows it cannot serve ``model``, or None."""
    try:
        names = {str(m.get("name", "")) for m in reply.json().get("models", [])}
    except (ValueError, AttributeError, TypeError):
        return None  # not Ollama's answer: let Aider find out what the server is
    wanted = model.split("/", 1)[1]
    if ":" not in wanted:
        wanted += ":latest"
    if wanted in names or wanted.removesuffix(":latest") in names:
        return None
    return (
        f"the Ollama server at {base} does not have the model {wanted} that Aider workers "
        f"use; run `ollama pull {wanted}`, or set \"model\" to one it has."
    )


def expand_command(
    template: Sequence[str], values: Mapping[str, str], files: Sequence[str]
) -> list[str]:
    """Substitute placeholders element by element; ``{files}`` alone becomes one arg per file.

    Inside a longer element ``{files}`` becomes the files joined by spaces. Other text in
    braces is left alone (an argument may legitimately contain JSON).
    """
    if not template:
        raise WorkerError(
            'worker_backend "command" needs worker_command (an argv list).', key="worker_command"
        )
    argv: list[str] = []
    for element in template:
        if element == "{files}":
            argv.extend(files)
            continue
        for name in PLACEHOLDERS:
            token = "{" + name + "}"
            if token in element:
                value = " ".join(files) if name == "files" else values.get(name, "")
                element = element.replace(token, value)
        argv.append(element)
    program = shutil.which(argv[0])
    if program and Path(argv[0]).name == argv[0]:
        argv[0] = program
    return argv


def launch_attempt(
    config: Config,
    layout: Layout,
    slot: int,
    task: Task,
    *,
    branch: str,
    attempt: int,
    on_exit: Callable[[WorkerHandle], None],
) -> tuple[RunRecord, WorkerHandle]:
    """Start one attempt of ``task`` in ``slot``: its worktree, its task file, its process.

    The returned record is what state.json keeps about the attempt.
    """
    repo, base = layout.repo, config.branch
    worktree = layout.slot_worktree(slot)
    clone = clone_at(repo, worktree)
    if task.kind == "conflict":
        start_commit = branches.prepare_conflict_slot(clone, base, branch)
    else:
        start_commit = branches.prepare_task_slot(clone, base, branch)
    files = attempt_files(layout, task, attempt)
    suggestions = layout.repo_relative(layout.suggested_tasks)
    if suggestions is not None:
        branches.make_editable(worktree, suggestions)
    # The one protected file a worker is asked to write: neither the rules nor Aider's
    # ignore list may forbid it (its lines are harvested and it never reaches a merge).
    protected = [p for p in protected_paths(config, layout) if p != suggestions]
    text = task_instructions(
        task,
        branch=branch,
        base=base,
        protected=protected,
        suggestions_file=config.suggested_tasks_file,
    )
    write_task_file(files.task_file, text)
    files.history_dir.mkdir(parents=True, exist_ok=True)
    aiderignore = None
    if config.worker_backend == "aider":
        make_folders_for(task.files, worktree)
        aiderignore = write_aiderignore(files.aiderignore, protected, worktree)
    argv = worker_argv(
        config,
        task,
        task_file=files.task_file,
        worktree=worktree,
        branch=branch,
        history_dir=files.history_dir,
        aiderignore=aiderignore,
    )
    marker = worker_marker(repo, slot, task.id)
    handle = start_worker(
        f"{layout.worktree_prefix}{slot}",
        argv,
        cwd=worktree,
        log_path=files.log,
        marker=marker,
        env={**worker_env(config, layout), **ceiling_env(worktree, repo)},
        on_exit=on_exit,
    )
    record = RunRecord(
        slot=slot,
        task_id=task.id,
        kind=task.kind,
        branch=branch,
        start_commit=start_commit,
        worktree=str(worktree),
        log=str(files.log),
        attempt=attempt,
        marker=marker,
        pid=handle.key.pid,
        create_time=handle.key.create_time,
        started_at=handle.started,
    )
    return record, handle
