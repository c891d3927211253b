"""`localdispatch init`: a starting configuration for the repository you stand in.

It looks, it never asks: the repository's real base branch, a test suite it can name, Aider
(on PATH or in the usual places a user installs it), the Ollama server and a coding model on
it. Repository settings go to the tracked ``dispatch_config.json``; what belongs to this
machine (the full path of Aider, a non-default Ollama address) goes to the user's own config
file, so a teammate's checkout is not pointed at someone else's disk. Nothing existing is
overwritten unless asked (``--force``, with a backup). The detections are plain functions of
what they are given (files, a PATH, a model list), so they are tested directly.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from localdispatch.config import (
    CONFIG_FILENAME,
    SCHEMA_REF,
    default_ollama_host,
    is_loopback,
    load_config,
    repository_top,
    schema_text,
    set_values,
    user_config_path,
)
from localdispatch.errors import ConfigError, UsageError
from localdispatch.git.commands import run_git
from localdispatch.layout import ensure_state_ignored, layout_for

# Models that write code well enough to be worth picking when Ollama has several, best first.
CODING_MODELS = ("qwen2.5-coder", "qwen3-coder", "deepseek-coder", "codestral", "codellama")
BASE_BRANCH_GUESSES = ("main", "master", "trunk", "develop")


@dataclass
class Detected:
    """One thing ``init`` looked for: what it found (None if nothing) and how it knows."""

    what: str
    value: object | None
    how: str


@dataclass
class InitReport:
    repo: Path
    config_file: Path
    backup: Path | None = None
    repo_settings: dict[str, object] = field(default_factory=dict)
    user_settings: dict[str, object] = field(default_factory=dict)
    user_file: Path | None = None
    found: list[Detected] = field(default_factory=list)
    missing: list[Detected] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def next_commands(self) -> list[str]:
        """The three commands that take a new user from here to work merged."""
        split = 'split-task "Describe the goal in a sentence or two"'
        if not any(d.what == "model server" for d in self.found):
            split += " --no-llm"
        return [split, "dispatch-workers --plan", "dispatch-workers --until-idle"]


# ---- detections (pure apart from what they are handed) ------------------------------------


def base_branch(current: str | None, branches: Sequence[str], default: str | None) -> Detected:
    """The branch work should land on: the one checked out, else git's init.defaultBranch if
    it exists, else a usual name that exists."""
    if current:
        return Detected("base branch", current, "the branch checked out")
    if default and default in branches:
        return Detected("base branch", default, "git's init.defaultBranch")
    for name in BASE_BRANCH_GUESSES:
        if name in branches:
            return Detected("base branch", name, f"a branch named {name}")
    return Detected("base branch", None, "no branch is checked out and none is named main/master")


def suite_command(files: Mapping[str, str]) -> Detected:
    """A test command for the suite the repository's files name; ``files`` maps the
    repository-relative names of a few well-known files to their text ("" for a folder)."""
    package = _json_object(files.get("package.json"))
    script = str(package.get("scripts", {}).get("test", "")) if package else ""
    if script and "no test specified" not in script:
        return Detected("test command", ["npm", "test"], "package.json has a test script")
    if _python_tests(files):
        how = "a Python test suite (pytest)"
        return Detected("test command", ["python", "-m", "pytest", "-q"], how)
    for name, argv, how in (
        ("go.mod", ["go", "test", "./..."], "a Go module"),
        ("Cargo.toml", ["cargo", "test"], "a Rust crate"),
        ("pom.xml", ["mvn", "-q", "test"], "a Maven project"),
    ):
        if name in files:
            return Detected("test command", argv, how)
    if re.search(r"^test\s*:", files.get("Makefile", ""), re.MULTILINE):
        return Detected("test command", ["make", "test"], "a Makefile with a test target")
    return Detected("test command", None, "no test suite found that it can name")


def _python_tests(files: Mapping[str, str]) -> bool:
    if "pytest.ini" in files or "[tool:pytest]" in files.get("setup.cfg", ""):
        return True
    if "[pytest]" in files.get("tox.ini", ""):
        return True
    if re.search(r"^\[tool\.pytest", files.get("pyproject.toml", ""), re.MULTILINE):
        return True
    python = "pyproject.toml" in files or "setup.cfg" in files
    return python and ("tests/" in files or "test/" in files)


def _json_object(text: str | None) -> dict[str, dict[str, object]]:
    try:
        data = json.loads(text or "")
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def aider(which: Callable[[str], str | None], candidates: Iterable[Path]) -> Detected:
    """Aider on PATH (nothing to set), or in a place users install it (its full path)."""
    if which("aider"):
        return Detected("Aider", "aider", "on PATH")
    for path in candidates:
        if path.is_file():
            return Detected("Aider", path.as_posix(), f"installed at {path}")
    return Detected("Aider", None, "not on PATH nor in ~/aider-venv, pipx or uv tools")


def aider_candidates(home: Path) -> list[Path]:
    """Where Aider's own installers, pipx and the README's venv put it."""
    exe = "aider.exe" if os.name == "nt" else "aider"
    bin_dir = "Scripts" if os.name == "nt" else "bin"
    return [
        home / ".local" / "bin" / exe,  # aider-install (uv tool) and pipx on Linux/macOS
        home / "aider-venv" / bin_dir / exe,
        home / ".local" / "pipx" / "venvs" / "aider-chat" / bin_dir / exe,
        home / ".local" / "share" / "uv" / "tools" / "aider-chat" / bin_dir / exe,
        home / "AppData" / "Roaming" / "uv" / "tools" / "aider-chat" / bin_dir / exe,
    ]


def coding_model(names: Sequence[str]) -> str | None:
    """The model Ollama has that is best for code, or its first one."""
    for family in CODING_MODELS:
        for name in names:
            if name.startswith(family):
                return name
    return names[0] if names else None


# ---- looking around (I/O) -----------------------------------------------------------------


def ollama_models(host: str, timeout: float = 2.0) -> list[str] | None:
    """The models the Ollama server at ``host`` has, or None when it does not answer."""
    url = host.rstrip("/") + "/api/tags"
    try:
        reply = httpx.get(url, timeout=timeout, trust_env=not is_loopback(url))
        models = reply.json().get("models", [])
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return [str(m.get("name", "")) for m in models if isinstance(m, dict) and m.get("name")]


def well_known_files(repo: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    names = ("package.json", "pyproject.toml", "pytest.ini", "setup.cfg", "tox.ini", "go.mod")
    for name in (*names, "Cargo.toml", "pom.xml", "Makefile"):
        path = repo / name
        if path.is_file():
            found[name] = path.read_text(encoding="utf-8", errors="replace")
    for folder in ("tests", "test"):
        if (repo / folder).is_dir():
            found[folder + "/"] = ""
    return found


def git_branches(repo: Path) -> tuple[str | None, list[str], str | None]:
    current = run_git(["symbolic-ref", "--quiet", "--short", "HEAD"], repo, check=False)
    listed = run_git(["branch", "--format=%(refname:short)"], repo, check=False).stdout.split()
    default = run_git(["config", "--get", "init.defaultBranch"], repo, check=False).stdout
    head = current.stdout.strip() if current.returncode == 0 else ""
    # An unborn branch (no commit yet) is checked out but does not exist: it is still the
    # branch the first commit will make.
    return head or None, listed, default.strip() or None


# ---- init ---------------------------------------------------------------------------------


def init_repository(
    cwd: Path,
    *,
    force: bool = False,
    which: Callable[[str], str | None] = shutil.which,
    home: Path | None = None,
    ollama_host: str | None = None,
) -> InitReport:
    """Write a starting configuration for the repository that holds ``cwd``.

    Raises UsageError outside a repository, and ConfigError when a config exists (unless
    ``force``: it is then kept as a timestamped backup beside the new one).
    """
    top = repository_top(cwd)
    if top is None:
        raise UsageError(
            f"{cwd} is not inside a git repository.",
            hint="Run `localdispatch init` in your repository (or `git init` and make a first "
            "commit first).",
        )
    report = InitReport(repo=top, config_file=top / CONFIG_FILENAME)
    if report.config_file.exists() and not force:
        raise ConfigError(
            f"{report.config_file} exists already; init never overwrites it.",
            hint="`localdispatch config check` shows what it holds and `localdispatch config "
            "set KEY VALUE` changes one setting; `localdispatch init --force` replaces it "
            "(keeping a backup).",
            path=report.config_file,
        )
    _look_around(report, which, home or Path.home(), ollama_host or default_ollama_host())
    if report.config_file.exists():
        report.backup = report.config_file.with_name(
            f"{CONFIG_FILENAME}.bak-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        shutil.copy2(report.config_file, report.backup)
        report.config_file.unlink()
    report.notes += set_values(report.config_file, report.repo_settings, user=False, cwd=top)
    if report.user_settings:
        report.user_file = user_config_path()
        report.notes += set_values(report.user_file, report.user_settings, user=True, cwd=top)
    layout = layout_for(load_config(report.config_file))
    ensure_state_ignored(layout)
    schema = top / SCHEMA_REF
    schema.parent.mkdir(parents=True, exist_ok=True)
    schema.write_text(schema_text(), encoding="utf-8", newline="\n")
    return report


def _look_around(
    report: InitReport, which: Callable[[str], str | None], home: Path, host: str
) -> None:
    """Fill the report's settings and what was found and not found."""
    found = [base_branch(*git_branches(report.repo)), suite_command(well_known_files(report.repo))]
    found.append(aider(which, aider_candidates(home)))
    models = ollama_models(host)
    model = coding_model(models) if models else None
    if models is None:
        found.append(Detected("model server", None, f"no Ollama answers at {host}"))
    elif model is None:
        found.append(Detected("model server", None, f"Ollama at {host} has no model yet"))
    else:
        found.append(Detected("model server", model, f"Ollama at {host}"))
    settings = report.repo_settings
    for item in found:
        (report.found if item.value is not None else report.missing).append(item)
    branch, tests, aider_found = (item.value for item in found[:3])
    settings["branch"] = branch or "main"
    if tests is not None:
        settings["test_command"] = tests
    if model is not None:
        settings["model"] = f"ollama_chat/{model}"
        settings["ollama.model"] = model
    if isinstance(aider_found, str) and aider_found != "aider":
        report.user_settings["aider_cmd"] = aider_found  # a path on this machine
