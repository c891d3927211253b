"""dispatch_config.json: the model of every key, loading with friendly errors, and the schema.

Every key has a default, so ``{}`` is a valid file. Unknown keys are refused with the closest
valid name, wrong types name the key, the value and what was expected, and invalid JSON names
the line and column. Names follow the original Path-B dispatcher so its files keep working
(``worktree_prefix`` and ``worktree_placement`` included).

Settings can also live in the user config (``config.json`` in
``platformdirs.user_config_dir("localdispatch")``, or ``$LOCALDISPATCH_USER_CONFIG``): the
same keys, read under the repository's file, which wins key by key (a section's keys one by
one). The loaded :class:`Config` knows which file set each value (:meth:`Config.origin_of`),
and :func:`set_values` writes either file, checked first (``config set``, ``init``).
"""

from __future__ import annotations

import codecs
import difflib
import ipaddress
import json
import math
import os
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from localdispatch.errors import ConfigError, GitError
from localdispatch.git.commands import run_git
from localdispatch.statefile import write_atomic

CONFIG_FILENAME = "dispatch_config.json"
SCHEMA_FILENAME = "dispatch_config.schema.json"
DEFAULT_OLLAMA_HOST = "http://127.0.0.1:11434"
LAUNCHERS = ("split_task.py", "dispatch_workers.py", "ingest_suggested_tasks.py")
# What `worker_command` may hold in braces; workers.py fills them in for each attempt.
PLACEHOLDERS = ("task_file", "model", "worktree", "task_id", "files", "branch", "base")
# Text in braces that looks like a placeholder; other braces (JSON in an argument) are kept.
_PLACEHOLDER_LIKE = re.compile(r"\{([A-Za-z_][A-Za-z0-9_-]*)\}")
# Upper bounds: beyond them a value is a typo, and an infinite or huge one crashes a timer.
WEEK_SECS = 7 * 24 * 3600
HOUR_SECS = 3600
MAX_RETRIES = 100
# The user config: settings of this machine, read under every repository's file.
USER_CONFIG_ENV = "LOCALDISPATCH_USER_CONFIG"
USER_CONFIG_FILENAME = "config.json"
# Where a dispatch_config.json that localdispatch creates points its "$schema" (relative to
# the file; `localdispatch init` and `config set` put the schema there).
SCHEMA_REF = "./.dispatch/dispatch_config.schema.json"
# Settings that describe this machine, not the repository: they belong in the user config,
# so the shared dispatch_config.json does not point a teammate at someone else's disk.
MACHINE_KEYS: dict[str, str] = {
    "aider_cmd": "a path on this machine",
    "ollama.host": "the address of this machine's Ollama server",
    "llm.base_url": "the address of this machine's model server",
}
# Settings that describe one repository: in the user config they would apply to every one.
REPOSITORY_KEYS = (
    "repo_root",
    "branch",
    "test_command",
    "test_timeout_secs",
    "protected_paths",
    "worktree_dir",
    "worktree_prefix",
    "worktree_placement",
    "task_queue_file",
    "suggested_tasks_file",
)
# ... and those the user config refuses: repo_root is relative to the repository's file.
REPOSITORY_ONLY = ("repo_root",)
# Validation context: the dotted keys whose value comes from the user config.
USER_KEYS_CONTEXT = "user_keys"


def default_ollama_host() -> str:
    """``$OLLAMA_HOST`` as Ollama itself reads it (``host``, ``host:port`` or a URL)."""
    raw = os.environ.get("OLLAMA_HOST", "").strip()
    return normalize_host(raw) if raw else DEFAULT_OLLAMA_HOST


def normalize_host(raw: str) -> str:
    host = raw.strip().rstrip("/")
    if "://" not in host:
        host = "http://" + host
    scheme, rest = host.split("://", 1)
    if ":" not in rest.rsplit("]", 1)[-1]:
        rest += ":11434"
    # 0.0.0.0 is where a server listens, never where a client should connect.
    rest = rest.replace("0.0.0.0", "127.0.0.1")
    return f"{scheme}://{rest}"


def is_loopback(url: str) -> bool:
    """True for a server on this machine. Requests to it must never go through an
    HTTP_PROXY from the environment (a corporate proxy cannot reach the user's 127.0.0.1)."""
    host = (urlsplit(url if "://" in url else "http://" + url).hostname or "").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Section(BaseModel):
    # allow_inf_nan=False: Python's json reads NaN and Infinity, and neither is a usable setting.
    model_config = ConfigDict(
        extra="forbid", strict=True, validate_default=True, allow_inf_nan=False
    )


class OllamaConfig(_Section):
    host: str = Field(
        default_factory=default_ollama_host,
        description="Ollama server for the splitter; defaults to $OLLAMA_HOST or "
        "http://127.0.0.1:11434.",
    )
    model: str = Field("qwen2.5-coder:7b", description="Model the splitter asks.")
    timeout_secs: float = Field(
        120, gt=0, le=WEEK_SECS, description="Timeout of one request to the model."
    )

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        return normalize_host(value)


# What an environment variable's name may be on every OS; a key pasted in its place is not.
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Keys of the llm section that only mean something to the OpenAI-compatible provider.
_OPENAI_ONLY = ("base_url", "model", "api_key_env", "timeout_secs", "max_tokens")


class LLMConfig(_Section):
    """Which protocol the splitter speaks: Ollama's own (the ``ollama`` section) or OpenAI's."""

    provider: Literal["ollama", "openai"] = Field(
        "ollama",
        description='"ollama" (the ollama section), or "openai" for any OpenAI-compatible '
        "server (llama.cpp server, LM Studio, vLLM) at llm.base_url.",
    )
    base_url: str | None = Field(
        None,
        description='For "openai": the API root, usually ending in /v1, e.g. '
        "http://127.0.0.1:8080/v1.",
    )
    model: str | None = Field(
        None, description='For "openai": the model name as the server lists it at /models.'
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description='For "openai": the environment variable that holds the API key (never '
        "the key itself); unset means no key is sent.",
    )
    timeout_secs: float = Field(
        120, gt=0, le=WEEK_SECS, description='For "openai": timeout of one request to the model.'
    )
    max_tokens: int | None = Field(
        None,
        ge=64,
        le=1_000_000,
        description='For "openai": most tokens one answer may have; a small model that rambles '
        "is cut off there and asked again. null: the server's own limit.",
    )

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        url = value.strip().rstrip("/")
        if not re.match(r"https?://[^/\s]+", url):
            raise ValueError(
                f"llm.base_url {value!r} is not an http:// or https:// URL; write the server's "
                "OpenAI-compatible root, e.g. http://127.0.0.1:8080/v1"
            )
        return url

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError(
                f"llm.api_key_env must name an environment variable (like OPENAI_API_KEY), "
                f"not hold the key; {_redact(value)} is not a variable name. Put the key in "
                "that variable and keep it out of this file"
            )
        return value

    @model_validator(mode="after")
    def _combination(self, info: ValidationInfo) -> LLMConfig:
        if self.provider == "ollama":
            # The user config may hold a machine's OpenAI-compatible server for the
            # repositories that choose it; only a repository's own stray keys are mistakes.
            machine_wide = (info.context or {}).get(USER_KEYS_CONTEXT, ())
            stray = [
                k
                for k in _OPENAI_ONLY
                if k in self.model_fields_set and f"llm.{k}" not in machine_wide
            ]
            if stray:
                raise ValueError(
                    f'llm.{stray[0]} is used only with llm.provider "openai"; with Ollama '
                    'set ollama.host, ollama.model and ollama.timeout_secs (or set "provider": '
                    '"openai")'
                )
            return self
        if not self.base_url:
            raise ValueError(
                'llm.provider "openai" needs llm.base_url, the server\'s OpenAI-compatible '
                "root, e.g. http://127.0.0.1:8080/v1 (llama.cpp server), "
                "http://127.0.0.1:1234/v1 (LM Studio) or http://127.0.0.1:8000/v1 (vLLM)"
            )
        if not self.model or not self.model.strip():
            raise ValueError(
                'llm.provider "openai" needs llm.model, the model\'s name as the server '
                f"lists it (GET {self.base_url}/models)"
            )
        return self


def _redact(value: str) -> str:
    """Enough of a mistaken value to recognize it, never a whole secret in an error message."""
    return repr(value[:4] + "...") if len(value) > 8 else repr(value)


class SplitConfig(_Section):
    max_subtasks: int = Field(10, ge=1, le=50, description="Most child tasks one split may make.")
    min_subtasks: int = Field(3, ge=1, le=50, description="Fewest child tasks one split may make.")
    max_attempts: int = Field(
        3, ge=1, le=10, description="Requests to the model before a split is given up."
    )

    @model_validator(mode="after")
    def _bounds(self) -> SplitConfig:
        if self.min_subtasks > self.max_subtasks:
            raise ValueError(
                f"split.min_subtasks ({self.min_subtasks}) is larger than "
                f"split.max_subtasks ({self.max_subtasks})"
            )
        return self


class Config(_Section):
    """Every key of dispatch_config.json, with its default."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        validate_default=True,
        allow_inf_nan=False,
        populate_by_name=True,
        title="localdispatch configuration (dispatch_config.json)",
    )

    schema_ref: str | None = Field(
        None, alias="$schema", description="Path or URL of this file's JSON Schema, for editors."
    )
    repo_root: str = Field(".", description="The repository to work on, relative to this file.")
    branch: str = Field("main", min_length=1, description="Base branch that work is merged into.")
    num_workers: int = Field(2, ge=1, le=64, description="Workers that run at once.")
    worker_backend: Literal["aider", "command"] = Field(
        "aider", description='"aider", or "command" to run `worker_command`.'
    )
    model: str = Field("ollama_chat/qwen2.5-coder:7b", description="Model passed to Aider.")
    aider_cmd: str = Field("aider", description="The Aider executable: a name on PATH or a path.")
    aider_edit_format: (
        Literal["whole", "diff", "diff-fenced", "udiff", "udiff-simple", "patch", "architect"]
        | None
    ) = Field(
        None,
        description='Aider\'s --edit-format. null: "whole" for Ollama and LM Studio models '
        "under 30B parameters, Aider's own choice for the model otherwise.",
    )
    aider_extra_args: list[str] = Field(
        [],
        description="More Aider arguments, after localdispatch's own (a later flag wins), "
        'e.g. ["--map-tokens", "1024"] for a repo map or ["--timeout", "300"].',
    )
    worker_command: list[str] | None = Field(
        None,
        description='Worker argv for worker_backend "command"; placeholders '
        + ", ".join("{" + name + "}" for name in PLACEHOLDERS)
        + ". Never run through a shell.",
    )
    worker_timeout_secs: float = Field(
        1800,
        ge=0,
        le=WEEK_SECS,
        description="Wall-clock limit per worker attempt; 0 means none.",
    )
    max_worker_retries: int = Field(
        2,
        ge=0,
        le=MAX_RETRIES,
        description="Attempts after the first before a task is marked failed.",
    )
    auto_merge_worktrees: bool = Field(True, description="Merge finished work into `branch`.")
    merge_slot: bool = Field(True, description="Serialize merges with a file lock.")
    create_task_on_merge_conflict: bool = Field(True, description="A conflict becomes a task.")
    auto_retry_merge_on_conflict_close: bool = Field(
        True, description="Retry the merge when its conflict task is closed."
    )
    on_conflict: Literal["assign_back", "auto_rebase"] = Field(
        "assign_back", description='"assign_back", or "auto_rebase" to try a rebase first.'
    )
    sanity_gate: bool = Field(
        True,
        description="Refuse a branch whose changed files hold conflict markers, Python that "
        "does not compile, or JSON/TOML that does not parse.",
    )
    test_command: list[str] | str | None = Field(
        None, description="Run in the merged result before `branch` moves; failure blocks it."
    )
    test_timeout_secs: float = Field(
        600,
        gt=0,
        le=WEEK_SECS,
        description="Limit for one run of test_command; a timeout blocks the merge.",
    )
    protected_paths: list[str] | None = Field(
        None,
        description="Glob patterns of more paths that workers must not change; a branch that "
        "changes one is not merged. The config, the launchers and the state files are always "
        "protected.",
    )
    max_merge_attempts: int = Field(
        3,
        ge=1,
        le=MAX_RETRIES,
        description="Merges of one branch (after conflicts or a failed test gate) before its "
        "task is marked failed.",
    )
    worker_kill_grace_secs: float = Field(
        5,
        ge=0,
        le=HOUR_SECS,
        description="After a timeout, how long a worker may exit cleanly before kill.",
    )
    delete_merged_branches: bool = Field(True, description="Delete a task branch once merged.")
    poll_interval_secs: float = Field(0.5, gt=0, le=60, description="Supervisor tick.")
    worktree_dir: str = Field(
        ".dispatch/worktrees", description="Where worker worktrees live, relative to repo_root."
    )
    worktree_prefix: str = Field(
        "w", min_length=1, description="Name prefix of worker worktrees (Path-B key)."
    )
    worktree_placement: Literal["inside", "sibling"] | None = Field(
        None,
        description='Path-B key: "sibling" puts worktrees beside the repository; "inside" '
        "(or unset) uses worktree_dir.",
    )
    store: Literal["json"] = Field(
        "json", description='Where tasks live: "json" (task_queue_file).'
    )
    task_queue_file: str = Field("task_queue.json", description="The JSON task store.")
    suggested_tasks_file: str = Field("suggested_tasks.txt", description="Follow-up ideas.")
    ollama: OllamaConfig = Field(default_factory=OllamaConfig)
    llm: LLMConfig = Field(default_factory=LLMConfig)
    split: SplitConfig = Field(default_factory=SplitConfig)

    # Where the file was read from; relative paths resolve against its folder.
    _source: Path | None = None
    _base_dir: Path = Path()
    # The user config that was read under it (None when there is none) and, for every key
    # a file set, that file (dotted keys: "ollama.host").
    _user_source: Path | None = None
    _origins: dict[str, Path] = PrivateAttr(default_factory=dict)

    @field_validator("worker_command")
    @classmethod
    def _known_placeholders(cls, value: list[str] | None) -> list[str] | None:
        for number, element in enumerate(value or []):
            for name in _PLACEHOLDER_LIKE.findall(element):
                if name not in PLACEHOLDERS:
                    raise ValueError(unknown_placeholder(name, number, element))
        return value

    @model_validator(mode="after")
    def _command_backend_needs_argv(self) -> Config:
        if self.worker_backend == "command" and not self.worker_command:
            raise ValueError('worker_backend "command" needs worker_command (an argv list)')
        if self.worker_backend != "command" and self.worker_command is not None:
            raise ValueError(
                f'worker_command is set but worker_backend is "{self.worker_backend}", so it '
                "would never run (remove it to run Aider); did you mean "
                '"worker_backend": "command"?'
            )
        return self

    # -- derived values -------------------------------------------------------------------
    def splitter_target(self) -> tuple[str, str]:
        """The model the splitter asks and the server it asks, whichever provider is chosen."""
        if self.llm.provider == "openai" and self.llm.base_url and self.llm.model:
            return self.llm.model, self.llm.base_url
        return self.ollama.model, self.ollama.host

    @property
    def source(self) -> Path | None:
        """The file this config was read from, or None for built-in defaults."""
        return self._source

    @property
    def user_source(self) -> Path | None:
        """The user config file read under the repository's, or None if there is none."""
        return self._user_source

    def origin_of(self, key: str) -> Path | None:
        """The file that set ``key`` (dotted for sections: ``"ollama.host"``), or None when
        the value is the built-in default."""
        return self._origins.get(key)

    @property
    def origins(self) -> dict[str, Path]:
        """Every key a file set (dotted, in file order, the repository's keys last) and that
        file; a key not listed has its default."""
        return dict(self._origins)

    @property
    def repo_path(self) -> Path:
        return (self._base_dir / self.repo_root).resolve()

    def test_argv(self) -> list[str] | None:
        """test_command as an argv list; a string is split the way the platform's shell would."""
        if self.test_command is None:
            return None
        if isinstance(self.test_command, list):
            return list(self.test_command)
        return split_command_string(self.test_command)


def unknown_placeholder(name: str, number: int, element: str) -> str:
    """Words for a ``{name}`` in worker_command that no attempt would fill in."""
    valid = ", ".join("{" + known + "}" for known in PLACEHOLDERS)
    close = difflib.get_close_matches(name.lower().replace("-", "_"), PLACEHOLDERS, n=1)
    guess = f" (did you mean {{{close[0]}}}?)" if close else ""
    return (
        f"worker_command[{number}] {json.dumps(element)} holds {{{name}}}, which is not a "
        f"placeholder{guess}; the valid ones are {valid}"
    )


def split_command_string(text: str) -> list[str]:
    """Split a command string into argv without ever handing it to a shell."""
    if os.name == "nt":
        # POSIX rules would eat the backslashes of Windows paths.
        return [part.strip('"') for part in shlex.split(text, posix=False)]
    return shlex.split(text)


def repository_top(folder: Path) -> Path | None:
    """The top level of the git repository that holds ``folder`` (as ``git rev-parse
    --show-toplevel`` says), or None outside any repository or without git."""
    try:
        result = run_git(["rev-parse", "--show-toplevel"], folder, check=False, timeout=30)
    except (GitError, OSError):
        return None
    top = result.stdout.strip()
    return Path(top).resolve() if result.returncode == 0 and top else None


def find_config(start: Path, stop: Path | None = None) -> Path | None:
    """dispatch_config.json in ``start`` or the nearest folder above it, up to ``stop``.

    ``stop`` is the repository's top level: a config above it belongs to something else.
    """
    start = start.resolve()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILENAME
        if candidate.is_file():
            return candidate
        if stop is not None and folder == stop:
            break
    return None


def load_config(path: Path | None = None, *, cwd: Path | None = None) -> Config:
    """Load ``path``, or the nearest dispatch_config.json, or the defaults if there is none,
    over the user config (:func:`user_config_path`) when that file exists.

    Inside a git repository the search goes up to its top level, and without a config that
    top level is the repository, so every command works alike from any folder in it. Outside
    any repository the current folder is the repository. An explicit ``path`` that does not
    exist is an error, and so is a ``repo_root`` that names no folder.
    """
    cwd = (cwd or Path.cwd()).resolve()
    top = None
    if path is None:
        top = repository_top(cwd)
        path = find_config(cwd, stop=top)
    repo = _read_layer(Path(path), user=False) if path is not None else None
    user = _read_user_layer()
    base_dir = repo.path.resolve().parent if repo else (top or cwd)
    config = _combine(repo, user, base_dir)
    if repo is not None:
        _check_repo_root(config, repo.path)
    return config


def _check_repo_root(config: Config, source: Path) -> None:
    repo = config.repo_path
    if repo.is_dir():
        return
    what = "is a file, not a folder" if repo.exists() else "does not exist"
    raise ConfigError(
        f"{source}: repo_root {config.repo_root!r} resolves to {repo}, which {what};",
        hint='set "repo_root" to the repository\'s folder, relative to the folder this file '
        'is in ("." is that folder itself).',
        path=source,
        key="repo_root",
    )


# ---- the user config under the repository's ------------------------------------------------


def user_config_path() -> Path:
    """The user config: ``$LOCALDISPATCH_USER_CONFIG``, or ``config.json`` in
    ``platformdirs.user_config_dir("localdispatch")``. The file need not exist."""
    override = os.environ.get(USER_CONFIG_ENV, "").strip()
    if override:
        return Path(override).expanduser().absolute()
    return Path(platformdirs.user_config_dir("localdispatch")) / USER_CONFIG_FILENAME


@dataclass(frozen=True)
class _Layer:
    """One file's settings: the repository's dispatch_config.json or the user config."""

    path: Path
    data: dict[str, Any]
    text: str  # for line numbers in messages; "" for settings not written yet
    user: bool

    def label(self) -> str:
        return _label(self.path, self.user)


def _read_user_layer(path: Path | None = None) -> _Layer | None:
    """The user config checked on its own (JSON, key names, types, ranges, no repo_root),
    or None when the file does not exist. Checks that need both files wait for them."""
    path = user_config_path() if path is None else path
    if not path.exists():
        return None
    return _read_layer(path, user=True)


def user_config_keys(path: Path | None = None) -> list[str]:
    """The keys the user config sets (dotted), after checking it as :func:`load_config`
    would; [] when there is no such file. Raises ConfigError naming the file and key."""
    layer = _read_user_layer(path)
    return _leaves(layer.data) if layer else []


def _read_layer(path: Path, *, user: bool) -> _Layer:
    if not path.is_file():
        what = "The user config" if user else "Config file"
        state = "is not a file" if path.exists() else "does not exist"
        fix = (
            f"Point ${USER_CONFIG_ENV} at a file, or unset it."
            if user
            else "Create it (`{}` is a valid config) or pass --config with the right path."
        )
        raise ConfigError(f"{what} {path} {state}.", hint=fix, path=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}.", path=path) from exc
    layer = _Layer(path, _parse_json(text, _label(path, user), path), text, user)
    _check_alone(layer)
    return layer


def _label(path: Path, user: bool) -> str:
    return f"{path} (user config)" if user else str(path)


def _check_alone(layer: _Layer) -> None:
    """Everything one file can be wrong about by itself. What depends on a combination
    (``llm.base_url`` with ``llm.provider``) is checked once both files are merged, since
    the other file may hold the rest."""
    if layer.user:
        misplaced = [key for key in REPOSITORY_ONLY if key in layer.data]
        if misplaced:
            key = misplaced[0]
            raise ConfigError(
                f"{layer.label()}: {key} cannot be set in the user config: it names one "
                "repository's folder, relative to that repository's dispatch_config.json.",
                hint=f'Remove "{key}" from {layer.path}; set it in the repository instead '
                f"(`localdispatch config set {key} PATH` there).",
                path=layer.path,
                key=key,
            )
    try:
        Config.model_validate(layer.data)
    except ValidationError as exc:
        alone = [err for err in exc.errors() if not _is_combination(err)]
        if alone:
            raise _friendly(alone, layer.text, layer.label(), layer.path) from None


def _is_combination(err: ErrorDetails) -> bool:
    """A rule about several keys together: a model validator (its loc is a section or the
    top), not one key's value."""
    if err["type"] != "value_error":
        return False
    model: type[BaseModel] = Config
    for part in err["loc"]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return False
        model = annotation
    return True


def _sections() -> set[str]:
    return {
        name
        for name, info in Config.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }


def _leaves(data: Mapping[str, Any]) -> list[str]:
    """The dotted keys a file sets: a section's keys one by one; ``$schema`` is no setting."""
    keys: list[str] = []
    sections = _sections()
    for key, value in data.items():
        if key == "$schema":
            continue
        if key in sections and isinstance(value, dict):
            keys.extend(f"{key}.{inner}" for inner in value)
        else:
            keys.append(key)
    return keys


def _merge(under: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    """``over`` wins key by key, and a section's keys one by one."""
    merged = {key: value for key, value in under.items() if key != "$schema"}
    sections = _sections()
    for key, value in over.items():
        below = merged.get(key)
        if key in sections and isinstance(value, dict) and isinstance(below, dict):
            merged[key] = {**below, **value}
        else:
            merged[key] = value
    return merged


def _combine(repo: _Layer | None, user: _Layer | None, base_dir: Path) -> Config:
    """The repository's settings over the user's, each file already checked alone."""
    layers = [layer for layer in (user, repo) if layer is not None]
    merged: dict[str, Any] = {}
    origins: dict[str, Path] = {}
    for layer in layers:
        merged = _merge(merged, layer.data)
        for key in _leaves(layer.data):
            origins.pop(key, None)  # the winner's place is its own file's order
            origins[key] = layer.path.resolve()
    from_user = {key for key, origin in origins.items() if user and origin == user.path.resolve()}
    try:
        config = Config.model_validate(merged, context={USER_KEYS_CONTEXT: from_user})
    except ValidationError as exc:
        raise _combination_error(exc.errors(), layers) from None
    config._source = repo.path.resolve() if repo else None
    config._user_source = user.path.resolve() if user else None
    config._base_dir = base_dir
    config._origins = origins
    return config


def _combination_error(errors: list[ErrorDetails], layers: list[_Layer]) -> ConfigError:
    """A rule about several keys that the merged settings break, naming the file (or both
    files) that set the keys it is about."""
    err = errors[0]
    problem = _describe(err, "")
    section = ".".join(str(part) for part in err["loc"])
    involved = [
        layer
        for layer in layers
        if any(_mentions(problem, key) for key in _leaves(layer.data) if key.startswith(section))
    ] or [layer for layer in layers if any(k.startswith(section) for k in _leaves(layer.data))]
    involved = involved or layers[-1:]
    where = " with ".join(layer.label() for layer in reversed(involved)) or CONFIG_FILENAME
    message = f"{where}: {problem}"
    if not message.endswith(("?", ".")):
        message += "."
    path = involved[-1].path if involved else None
    return ConfigError(message, path=path, key=section or None)


def _mentions(text: str, key: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", text) is not None


def parse_config(text: str, *, source: Path | str = CONFIG_FILENAME) -> Config:
    """Validate config text; every problem becomes one ConfigError naming the key."""
    data = _parse_json(text, source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _friendly(exc.errors(), text, source) from None


def _parse_json(text: str, source: Path | str, path: Path | None = None) -> dict[str, Any]:
    """The file's top-level object; bad JSON names the line and column. ``source`` is how
    messages name the file, ``path`` the file itself (default: ``source``)."""
    path = path or Path(source)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
            f"{_json_problem(exc)}.",
            hint="Fix the syntax there (a missing comma or quote, or a trailing comma).",
            path=path,
        ) from exc
    except (ValueError, RecursionError) as exc:
        # An integer of thousands of digits, or brackets nested thousands deep.
        if isinstance(exc, RecursionError):
            what = "is nested too deeply"
        else:
            what = "holds a number too long to read"
        raise ConfigError(
            f"{source}: the JSON {what}.",
            hint="A config is a flat object of settings; fix the file by hand.",
            path=path,
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a JSON object ({{...}}), not {type(data).__name__}.",
            path=path,
        )
    return data


def _json_problem(exc: json.JSONDecodeError) -> str:
    """json's message, or plain words for the mistake people make most: a trailing comma."""
    before = exc.doc[: exc.pos].rstrip()
    if before.endswith(",") and exc.doc[exc.pos : exc.pos + 1] in ("}", "]"):
        return "trailing comma before the closing bracket (JSON does not allow it)"
    return exc.msg


def _friendly(
    errors: list[ErrorDetails], text: str, source: Path | str, path: Path | None = None
) -> ConfigError:
    problems = [_describe(err, text) for err in errors]
    first_key = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
    message = f"{source}: " + "; ".join(problems[:5])
    if len(problems) > 5:
        message += f"; and {len(problems) - 5} more problems"
    if not message.endswith(("?", ".")):
        message += "."
    return ConfigError(message, path=path or source, key=first_key)


def _describe(err: Any, text: str) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    where = _line_of(text, loc[-1]) if loc else ""
    if err["type"] == "extra_forbidden":
        section = _section_model(loc[:-1])
        valid = sorted(_field_names(section))
        close = difflib.get_close_matches(loc[-1], valid, n=1, cutoff=0.6)
        hint = (
            f"did you mean '{'.'.join([*loc[:-1], close[0]])}'?"
            if close
            else ("valid keys are " + ", ".join(valid))
        )
        return f"unknown key '{key}'{where}; {hint}"
    if not loc or err["type"] == "value_error":
        reason = str(err["msg"]).removeprefix("Value error, ")
        return f"{key}: {reason}" if key and key not in reason else reason
    value = err.get("input")
    in_range = err["type"] in _OUT_OF_RANGE
    expected = _allowed_range(loc, value) if in_range else _expected(err)
    return f"key '{key}'{where} has value {json.dumps(value, default=str)}; expected {expected}"


_OUT_OF_RANGE = frozenset(
    {"finite_number", "greater_than_equal", "greater_than", "less_than_equal", "less_than"}
)
_SPANS: dict[float, str] = {WEEK_SECS: "a week", 24 * 3600: "a day", HOUR_SECS: "an hour"}


def _allowed_range(loc: list[str], value: Any) -> str:
    """The key's bounds in words, e.g. "a number from 0 to 3600 seconds (an hour)"."""
    field = _section_model(loc[:-1]).model_fields.get(loc[-1]) if loc else None
    low: tuple[float, bool] | None = None  # (bound, exclusive)
    high: tuple[float, bool] | None = None
    for rule in field.metadata if field else ():
        for attr, exclusive in (("ge", False), ("gt", True)):
            if getattr(rule, attr, None) is not None:
                low = (getattr(rule, attr), exclusive)
        for attr, exclusive in (("le", False), ("lt", True)):
            if getattr(rule, attr, None) is not None:
                high = (getattr(rule, attr), exclusive)
    integer = field is not None and field.annotation in (int, int | None)
    kind = "an integer" if integer else "a number"
    if isinstance(value, float) and not math.isfinite(value):
        kind = "a finite number"
    text = kind
    if low is not None:
        text += f" above {_number(low[0])}" if low[1] else f" from {_number(low[0])}"
    if high is not None:
        joint = " and" if low is not None and low[1] else ""
        limit = "below" if high[1] else ("to" if low is not None and not low[1] else "at most")
        text += f"{joint} {limit} {_number(high[0])}"
        if loc[-1].endswith("_secs"):
            text += " seconds"
        if high[0] in _SPANS:
            text += f" ({_SPANS[high[0]]})"
    return text


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _expected(err: Any) -> str:
    kind = err["type"]
    ctx = err.get("ctx") or {}
    simple = {
        "int_type": "an integer",
        "int_parsing": "an integer",
        "int_from_float": "an integer",
        "float_type": "a number",
        "float_parsing": "a number",
        "bool_type": "true or false",
        "bool_parsing": "true or false",
        "string_type": "a string",
        "list_type": "a list",
        "model_type": "an object ({...})",
        "dict_type": "an object ({...})",
    }
    if kind in simple:
        return simple[kind]
    if kind == "literal_error":
        return f"one of {ctx.get('expected')}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return str(err["msg"]).lower().replace("input should be ", "a number ")
    if kind == "string_too_short":
        return "a non-empty string"
    return str(err["msg"]).removeprefix("Value error, ")


def _line_of(text: str, key: str) -> str:
    needle = json.dumps(key)
    for number, line in enumerate(text.splitlines(), start=1):
        if needle in line:
            return f" (line {number})"
    return ""


def _section_model(path: list[str]) -> type[BaseModel]:
    model: type[BaseModel] = Config
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return model


def _field_names(model: type[BaseModel]) -> set[str]:
    return {info.alias or name for name, info in model.model_fields.items()}


def config_schema() -> dict[str, Any]:
    """The JSON Schema of dispatch_config.json, as committed in dispatch_config.schema.json."""
    schema = Config.model_json_schema(by_alias=True, mode="validation")
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    # Dynamic defaults must not leak the machine that generated the schema.
    ollama = schema.get("$defs", {}).get("OllamaConfig", {}).get("properties", {})
    if "host" in ollama:
        ollama["host"].pop("default", None)
    return schema


def schema_text() -> str:
    return json.dumps(config_schema(), indent=2, ensure_ascii=False) + "\n"


def reference_markdown() -> str:
    """The README's table of every key, its default and meaning, generated from the model."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    sections = (
        ("", Config),
        ("ollama.", OllamaConfig),
        ("llm.", LLMConfig),
        ("split.", SplitConfig),
    )
    for prefix, model in sections:
        for name, info in model.model_fields.items():
            key = info.alias or name
            if key == "$schema" or (not prefix and key in ("ollama", "llm", "split")):
                continue
            if prefix == "ollama." and key == "host":
                default = "`$OLLAMA_HOST` or `http://127.0.0.1:11434`"
            else:
                default = f"`{json.dumps(info.default)}`"
            meaning = (info.description or "").replace("|", "\\|")
            rows.append(f"| `{prefix}{key}` | {default} | {meaning} |")
    return "\n".join(rows) + "\n"


# ---- writing settings: `config set` and `init` ---------------------------------------------


def parse_value(text: str, key: str | None = None) -> object:
    """A value from the command line: JSON when it parses (``3``, ``true``, ``["pytest"]``),
    else the text itself (``C:/Users/me/aider.exe``, ``http://gpu-box:11434``). Text that
    opens like a JSON list, object or string but does not parse is a typo, not text."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        if text.lstrip()[:1] in ("[", "{", '"'):
            what = f"{key} value" if key else "value"
            raise ConfigError(
                f"The {what} {text} opens like JSON but is not JSON: {exc.msg} at column "
                f"{exc.colno}; nothing was written.",
                hint='Write it whole, e.g. \'["pytest", "-q"]\' (quotes around it in the '
                "shell, double quotes inside).",
                key=key,
            ) from exc
        return text
    except (ValueError, RecursionError):
        return text


def set_values(
    path: Path, values: Mapping[str, object], *, user: bool, cwd: Path | None = None
) -> list[str]:
    """Write ``values`` (dotted keys for sections: ``"ollama.host"``) into ``path``, and
    return notes for the person (a machine path in the repository's file, a repository
    setting in the user file, a value the other file overrides).

    ``path`` is the repository's dispatch_config.json (created with ``"$schema"`` if
    missing), or with ``user=True`` the user config (:func:`user_config_path`). The file's
    other keys, their order and its style (indentation, line endings) are kept. The result
    is checked as :func:`load_config` would load it (the repository's file over the user
    config; for the user config, under the repository's file found from ``cwd``) and written
    atomically only if it is valid; otherwise ConfigError names the key and value and
    nothing is written.
    """
    path = Path(path)
    keys = {key: _setting_key(key) for key in values}
    misplaced = [key for key in values if user and key in REPOSITORY_ONLY]
    if misplaced:
        raise ConfigError(
            f"{misplaced[0]} cannot be set in the user config ({path}): it names one "
            "repository's folder, relative to that repository's dispatch_config.json. "
            "Nothing was written.",
            hint=f"Set it in the repository: `localdispatch config set {misplaced[0]} PATH`.",
            path=path,
            key=misplaced[0],
        )
    original = path.read_bytes() if path.exists() else None
    text = _decode(original, path) if original is not None else ""
    data = _parse_json(text, _label(path, user), path) if original is not None else {}
    if original is None and not user:
        data["$schema"] = SCHEMA_REF
    for key, value in values.items():
        _assign(data, keys[key], value, path)
    layer = _Layer(path, data, "", user)
    try:
        other = _validate_written(layer, cwd)
    except ConfigError as exc:
        raise _refused(values, path, exc) from None
    payload = _render(data, text if original is not None else None, original)
    if (path.read_bytes() if path.exists() else None) != original:
        raise ConfigError(
            f"{path} changed while it was being edited; nothing was written.",
            hint="Run the command again.",
            path=path,
        )
    write_atomic(path, payload)
    return _notes(values, user=user, other=other)


def _setting_key(key: str) -> list[str]:
    """``key`` split at its dots, refused with the closest valid key if it names none."""
    parts = key.split(".")
    model: type[BaseModel] = Config
    for number, part in enumerate(parts):
        names = _field_names(model)
        if part not in names:
            prefix = ".".join(parts[:number])
            valid = sorted(f"{prefix}.{name}" if prefix else name for name in names)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            guess = f"did you mean '{close[0]}'?" if close else "valid keys: " + ", ".join(valid)
            raise ConfigError(f"Unknown key '{key}'; {guess}", key=key)
        if number < len(parts) - 1:
            inner = _section_model([*parts[: number + 1]])
            if inner is model:
                raise ConfigError(
                    f"'{'.'.join(parts[: number + 1])}' holds a value, not a section, so "
                    f"'{key}' is no key.",
                    hint=f"Set '{'.'.join(parts[: number + 1])}' itself.",
                    key=key,
                )
            model = inner
    return parts


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"Cannot read {path}: {exc}.", path=path) from exc


def _assign(data: dict[str, Any], parts: list[str], value: object, path: Path) -> None:
    node = data
    for depth, part in enumerate(parts[:-1]):
        inner = node.setdefault(part, {})
        if not isinstance(inner, dict):
            name = ".".join(parts[: depth + 1])
            raise ConfigError(
                f"{path}: '{name}' is {json.dumps(inner)}, not an object ({{...}}), so "
                f"'{'.'.join(parts)}' cannot be set in it.",
                hint=f"Set '{name}' to an object, e.g. `localdispatch config set {name} {{}}`.",
                path=path,
                key=name,
            )
        node = inner
    node[parts[-1]] = value


def _validate_written(layer: _Layer, cwd: Path | None) -> _Layer | None:
    """Load the settings as they would be after writing ``layer``; the other file's layer."""
    _check_alone(layer)
    if layer.user:
        here = (cwd or Path.cwd()).resolve()
        top = repository_top(here)
        found = find_config(here, stop=top)
        other = _read_layer(found, user=False) if found else None
        config = _combine(other, layer, other.path.resolve().parent if other else here)
        if other is not None:
            _check_repo_root(config, other.path)
        return other
    other = _read_user_layer()
    config = _combine(layer, other, layer.path.resolve().parent)
    _check_repo_root(config, layer.path)
    return other


def _refused(values: Mapping[str, object], path: Path, exc: ConfigError) -> ConfigError:
    """The check's words, led by what was being set and ending in what was not done."""
    what = ", ".join(f"{key} = {json.dumps(value, default=str)}" for key, value in values.items())
    problem = exc.message
    for prefix in (f"{_label(path, True)}: ", f"{path}: "):
        problem = problem.removeprefix(prefix)
    message = f"Refused {what}: {problem}"
    if not message.endswith((".", "?")):
        message += "."
    return ConfigError(
        f"{message} Nothing was written to {path}.",
        hint=exc.hint,
        path=exc.path or path,
        key=exc.key or next(iter(values), None),
    )


def _render(data: dict[str, Any], text: str | None, original: bytes | None) -> bytes:
    """``data`` as JSON in the style of the file it replaces (``text``, None for a new
    file): its indentation (or one line), line endings, byte order mark and final newline."""
    indent: str | None = "  "
    found = re.search(r'^([ \t]+)"', text or "", re.MULTILINE)
    if found:
        indent = found.group(1)
    elif text is not None and "\n" not in text.strip() and text.strip() != "{}":
        indent = None  # a one-line file of settings stays one line
    rendered = json.dumps(data, indent=indent, ensure_ascii=False)
    if text is None or text.endswith(("\n", "\r")):
        rendered += "\n"
    if text is not None and "\r\n" in text:
        rendered = rendered.replace("\n", "\r\n")
    bom = codecs.BOM_UTF8 if original is not None and original.startswith(codecs.BOM_UTF8) else b""
    return bom + rendered.encode("utf-8")


def _notes(values: Mapping[str, object], *, user: bool, other: _Layer | None) -> list[str]:
    """Advice on where the settings just written belong, and whether they apply here."""
    written = _leaves(_nested(values))
    flat = _flatten(_nested(values))
    notes: list[str] = []
    for key in written:
        if not user and is_machine_setting(key, flat[key]):
            notes.append(
                f"{key} is {MACHINE_KEYS[key]}; it is usually better in the user config "
                f"({user_config_path()}), which is not shared through git: "
                f"`localdispatch config set {key} {shell_word(flat[key])} --user`, then "
                f"remove it from {CONFIG_FILENAME}."
            )
        if user and key in REPOSITORY_KEYS:
            notes.append(
                f"{key} describes one repository; in the user config it applies to every "
                f"repository on this machine that does not set it. It is usually better in "
                f"the repository's {CONFIG_FILENAME}: `localdispatch config set {key} "
                f"{shell_word(flat[key])}` inside the repository."
            )
        if user and other is not None and key in _leaves(other.data):
            notes.append(
                f"{other.path} also sets {key}, and the repository's file wins: remove it "
                "there for this value to apply in that repository."
            )
    return notes


def _nested(values: Mapping[str, object]) -> dict[str, Any]:
    nested: dict[str, Any] = {}
    for key, value in values.items():
        _assign(nested, key.split("."), value, Path())
    return nested


def _flatten(data: Mapping[str, Any]) -> dict[str, Any]:
    sections = _sections()
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if key in sections and isinstance(value, dict):
            flat.update({f"{key}.{inner}": item for inner, item in value.items()})
        else:
            flat[key] = value
    return flat


def is_machine_setting(key: str, value: object) -> bool:
    """True for a value that describes this machine (MACHINE_KEYS): an Aider given by its
    path, not a bare name on PATH, which is the same on every machine."""
    if key not in MACHINE_KEYS:
        return False
    if key == "aider_cmd":
        return isinstance(value, str) and ("/" in value or "\\" in value or value[:1] == "~")
    return value is not None


def shell_word(value: object) -> str:
    """``value`` as one word to paste into a command line (``config set`` parses it back)."""
    text = value if isinstance(value, str) else json.dumps(value)
    if text and re.fullmatch(r"[\w@%+=:,./\\~-]+", text):
        return text
    if os.name == "nt":
        return '"' + text.replace('"', '\\"') + '"'
    return shlex.quote(text)
