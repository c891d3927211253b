"""`localdispatch doctor`: what this machine and repository have, and what is missing.

Each check returns a :class:`Check` with a status (``ok``, ``warn``, ``fail``), what was found,
and the fix. Only failed *required* checks make doctor exit non-zero; a warning is advice.
Checks never raise: a probe that breaks is itself reported as a failed check.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import httpx

from localdispatch.config import (
    CONFIG_FILENAME,
    MACHINE_KEYS,
    REPOSITORY_KEYS,
    Config,
    is_loopback,
    is_machine_setting,
    load_config,
    shell_word,
    user_config_keys,
    user_config_path,
)
from localdispatch.errors import DispatchError, LLMError
from localdispatch.git.commands import run_git
from localdispatch.layout import Layout, layout_for
from localdispatch.split.llm import OpenAIProvider

Status = Literal["ok", "warn", "fail"]
MIN_PYTHON = (3, 10)
MIN_GIT = (2, 17)  # `git worktree remove` and `worktree prune` as we use them
GIT_CONFIG_ENV = (2, 31)  # GIT_CONFIG_COUNT: a worker's identity when the repo has none
MIN_FREE_BYTES = 1 << 30
PROBE_TIMEOUT_SECS = 3.0  # a model server on this machine answers a listing at once


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""
    required: bool = True

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_checks(config_path: Path | None, cwd: Path | None = None) -> list[Check]:
    """Every check, in the order a newcomer would fix them."""
    user_check = check_user_config()
    checks = [check_python(), check_git(), user_check]
    try:
        config = load_config(config_path, cwd=cwd)
    except DispatchError as exc:
        if user_check.status == "fail" and exc.path == user_config_path():
            detail = "not loaded while the user config is invalid (see above)"
            checks.append(Check("config", "fail", detail, user_check.fix))
        else:
            checks.append(Check("config", "fail", str(exc), "Fix the file as the message says."))
        return checks
    where = str(config.source) if config.source else "no dispatch_config.json (defaults)"
    if config.user_source:
        where += f" over the user config {config.user_source}"
    checks.append(Check("config", "ok", f"valid: {where}"))
    layout = layout_for(config)
    repo_check = check_repo(layout)
    checks.append(repo_check)
    if repo_check.status == "ok":
        checks.append(check_branch(config, layout))
        checks.append(check_state_ignored(layout))
    checks.append(_guard("settings placement", lambda: check_placement(config, layout)))
    checks.append(check_ollama(config))
    checks.append(check_worker(config))
    checks.append(check_disk(layout))
    if os.name == "nt":
        checks.append(check_longpaths(layout))
    return checks


def _guard(name: str, probe: Callable[[], Check]) -> Check:
    try:
        return probe()
    except Exception as exc:  # noqa: BLE001 - a broken probe is a finding, not a crash
        return Check(name, "fail", f"the check itself failed: {type(exc).__name__}: {exc}")


def check_python() -> Check:
    version = ".".join(str(part) for part in sys.version_info[:3])
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("python", "ok", f"Python {version} at {sys.executable}")
    return Check(
        "python",
        "fail",
        f"Python {version} is too old",
        "Install Python 3.10 or newer (python.org; on Windows `py -3.12`).",
    )


def check_git() -> Check:
    def probe() -> Check:
        if shutil.which("git") is None:
            return Check(
                "git", "fail", "git is not on PATH", "Install git from https://git-scm.com."
            )
        out = run_git(["--version"], Path.cwd()).stdout.strip()
        numbers = [int(p) for p in out.split()[2].split(".")[:2] if p.isdigit()]
        if tuple(numbers) < MIN_GIT:
            return Check("git", "fail", out, "Install git 2.17 or newer for worktrees.")
        if tuple(numbers) < GIT_CONFIG_ENV:
            return Check(
                "git",
                "warn",
                f"{out}: workers cannot be given a fallback identity (needs git 2.31)",
                "Set an identity (`git config --global user.name ...` and user.email) "
                "or install a newer git.",
                required=False,
            )
        return Check("git", "ok", out)

    return _guard("git", probe)


def check_user_config(path: Path | None = None) -> Check:
    """The user config (this machine's settings, under every repository's file): absent is
    fine; a file that would not load is a failure naming the file, the key and the fix."""
    path = path or user_config_path()
    try:
        keys = user_config_keys(path)
    except DispatchError as exc:
        if exc.hint:
            fix = exc.hint
        elif exc.key:
            fix = (
                f"Correct {exc.key} in {path}, or write it again checked: "
                f"`localdispatch config set {exc.key} VALUE --user`."
            )
        else:
            fix = f"Fix {path} by hand (every key in it is optional; {{}} is valid)."
        return Check("user config", "fail", exc.message, fix)
    if not path.exists():
        return Check(
            "user config",
            "ok",
            f"none at {path} (optional: this machine's settings, such as aider_cmd, go there "
            "with `localdispatch config set KEY VALUE --user`)",
        )
    listed = ", ".join(keys) if keys else "nothing"
    return Check("user config", "ok", f"valid: {path} (sets {listed})")


def check_placement(config: Config, layout: Layout) -> Check:
    """Settings in the file where they belong: this machine's paths in the user config, not
    in the repository's file that git shares; one repository's settings not in the user
    config, where they would apply to every repository."""
    user_file = config.user_source or user_config_path()
    to_user: list[str] = []
    to_repo: list[str] = []
    shared = config.source is not None and _shared_by_git(config.source, layout.repo)
    for key, what in MACHINE_KEYS.items():
        value = _value_of(config, key)
        if shared and config.origin_of(key) == config.source and is_machine_setting(key, value):
            to_user.append(
                f"{key} is {what}; move it to {user_file} with `localdispatch config set "
                f"{key} {shell_word(value)} --user` and remove it from {CONFIG_FILENAME}"
            )
    for key in REPOSITORY_KEYS:
        if config.user_source is not None and config.origin_of(key) == config.user_source:
            to_repo.append(
                f"{key} describes one repository but is in the user config, so it applies to "
                f"every repository on this machine; set it in the repository "
                f"(`localdispatch config set {key} {shell_word(_value_of(config, key))}`) and "
                f"remove it from {config.user_source}"
            )
    if not to_user and not to_repo:
        return Check(
            "settings placement",
            "ok",
            "no machine paths in the shared dispatch_config.json, no repository settings "
            "in the user config",
        )
    found = []
    if to_user:
        keys = ", ".join(move.split(" ", 1)[0] for move in to_user)
        found.append(f"{keys} in {config.source}, which git shares, would be better in {user_file}")
    if to_repo:
        keys = ", ".join(move.split(" ", 1)[0] for move in to_repo)
        found.append(f"{keys} in the user config would be better in {CONFIG_FILENAME}")
    return Check(
        "settings placement",
        "warn",
        "; ".join(found),
        "; ".join([*to_user, *to_repo]) + ".",
        required=False,
    )


def _value_of(config: Config, key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        value = getattr(value, part)
    return value


def _shared_by_git(path: Path, repo: Path) -> bool:
    """True when git tracks ``path``, or would once it is committed (not ignored)."""
    if run_git(["ls-files", "--error-unmatch", "--", str(path)], repo, check=False).returncode:
        ignored = run_git(["check-ignore", "-q", "--", str(path)], repo, check=False)
        return ignored.returncode == 1  # 0: ignored; 128: not in a repository
    return True


def check_repo(layout: Layout) -> Check:
    def probe() -> Check:
        result = run_git(["rev-parse", "--show-toplevel"], layout.repo, check=False)
        if result.returncode != 0:
            return Check(
                "repository",
                "fail",
                f"{layout.repo} is not a git repository",
                "Run `git init` there and make a first commit, or set repo_root.",
            )
        return Check("repository", "ok", f"git repository at {result.stdout.strip()}")

    if not layout.repo.is_dir():
        return Check("repository", "fail", f"{layout.repo} does not exist", "Fix repo_root.")
    return _guard("repository", probe)


def check_branch(config: Config, layout: Layout) -> Check:
    def probe() -> Check:
        ref = f"refs/heads/{config.branch}"
        if run_git(["rev-parse", "--verify", "--quiet", ref], layout.repo, check=False).returncode:
            origin = config.origin_of("branch")
            where = f" (it comes from {origin})" if origin else ""
            return Check(
                "branch",
                "fail",
                f"branch '{config.branch}' does not exist (or has no commit yet){where}",
                'Make a first commit, or set "branch" to your base branch: '
                "`localdispatch config set branch NAME` (`git branch --show-current` "
                "names the one you are on).",
            )
        return Check("branch", "ok", f"base branch '{config.branch}' exists")

    return _guard("branch", probe)


def check_state_ignored(layout: Layout) -> Check:
    def probe() -> Check:
        names = layout.state_files()
        tracked = run_git(["ls-files", "--", *names], layout.repo).stdout.split()
        if tracked:
            return Check(
                "state files",
                "fail",
                f"tracked by git: {', '.join(tracked)}",
                f"Untrack them: `git rm --cached {' '.join(tracked)}` and commit.",
            )
        probe_names = [".dispatch/x", *names]
        ignored = run_git(["check-ignore", "--", *probe_names], layout.repo, check=False)
        if len(ignored.stdout.split()) < len(probe_names):
            return Check(
                "state files",
                "warn",
                "not ignored by git yet",
                "They are added to .git/info/exclude the first time a command writes a task.",
                required=False,
            )
        return Check(
            "state files", "ok", "task_queue.json, suggested_tasks.txt, .dispatch/ ignored"
        )

    return _guard("state files", probe)


def check_ollama(config: Config) -> Check:
    """The splitter's model server: Ollama, or the OpenAI-compatible one llm.provider names."""
    if config.llm.provider == "openai":
        return _guard("model server", lambda: check_openai_server(config))
    host = config.ollama.host
    model = config.ollama.model
    try:
        with httpx.Client(base_url=host, timeout=3.0, trust_env=not is_loopback(host)) as client:
            version = client.get("/api/version").json().get("version", "?")
            names = [m.get("name", "") for m in client.get("/api/tags").json().get("models", [])]
    except (httpx.HTTPError, ValueError, AttributeError) as exc:
        return Check(
            "ollama",
            "fail",
            f"no Ollama server answers at {host} ({type(exc).__name__})",
            "Install Ollama from https://ollama.com and start it (`ollama serve`), or point "
            "ollama.host at yours: `localdispatch config set ollama.host URL --user` (or "
            "$OLLAMA_HOST).",
        )
    wanted = {model, f"{model}:latest"} if ":" not in model else {model}
    if not wanted & set(names):
        return Check(
            "ollama model",
            "fail",
            f"Ollama {version} at {host} does not have '{model}'",
            f"Pull it: `ollama pull {model}`.",
        )
    return Check("ollama", "ok", f"Ollama {version} at {host} has '{model}'")


def check_openai_server(config: Config) -> Check:
    """``GET {llm.base_url}/models`` answers (with the key, if any) and lists llm.model."""
    base_url, model = config.llm.base_url or "", config.llm.model or ""
    provider = OpenAIProvider(
        base_url, model, PROBE_TIMEOUT_SECS, api_key_env=config.llm.api_key_env
    )
    try:
        served = provider.list_models()
    except LLMError as exc:
        return Check("model server", "fail", exc.message, exc.hint or "")
    finally:
        provider.close()
    # Ollama's own OpenAI API lists "name:latest" for a model asked for as "name".
    if model in served or f"{model}:latest" in served:
        return Check("model server", "ok", f"the server at {base_url} offers '{model}'")
    offered = ", ".join(served[:10]) or "no models"
    return Check(
        "model server",
        "warn",
        f"the server at {base_url} lists {offered}, not '{model}'",
        "Set llm.model to a model it lists (a server that holds one model, like llama.cpp's, "
        "answers with that one whatever the name; others refuse the request).",
        required=False,
    )


def check_worker(config: Config) -> Check:
    if config.worker_backend == "command" and config.worker_command:
        program = config.worker_command[0]
        label, fix = "worker command", "Fix worker_command[0] (a name on PATH or a path)."
    else:
        program = config.aider_cmd
        label = "aider"
        fix = (
            "Install Aider in its own environment (`python -m pip install aider-install && "
            "aider-install`, or `pipx install aider-chat`) or set aider_cmd to its path on "
            "this machine: `localdispatch config set aider_cmd PATH --user`."
        )
    found = shutil.which(program) or (program if Path(program).is_file() else None)
    if found:
        return Check(label, "ok", f"{program} found at {found}")
    return Check(label, "fail", f"'{program}' is not on PATH and is not a file", fix)


def check_disk(layout: Layout) -> Check:
    folder = layout.repo if layout.repo.exists() else Path.cwd()
    free = shutil.disk_usage(folder).free
    detail = f"{free / (1 << 30):.1f} GiB free for worktrees"
    if free < MIN_FREE_BYTES:
        return Check(
            "disk",
            "warn",
            detail,
            "Free some space: every worker has a full worktree.",
            required=False,
        )
    return Check("disk", "ok", detail)


def check_longpaths(layout: Layout) -> Check:
    result = run_git(["config", "--get", "core.longpaths"], layout.repo, check=False)
    if result.stdout.strip().lower() == "true":
        return Check("long paths", "ok", "git core.longpaths is true")
    return Check(
        "long paths",
        "warn",
        "git core.longpaths is not set; worktrees nest paths deeper than 260 characters",
        "Run `git config --global core.longpaths true`.",
        required=False,
    )


def passed(checks: list[Check]) -> bool:
    return not any(c.status == "fail" and c.required for c in checks)
