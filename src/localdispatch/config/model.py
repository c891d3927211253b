"""The model of every key of dispatch_config.json (and of the user config): types, ranges,
defaults, the rules between keys, and the derived values the rest of the package reads."""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
import shlex
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

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


