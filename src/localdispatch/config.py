"""dispatch_config.json: the model of every key, loading with friendly errors, and the schema.

Every key has a default, so ``{}`` is a valid file. Unknown keys are refused with the closest
valid name, wrong types name the key, the value and what was expected, and invalid JSON names
the line and column. Names follow the original Path-B dispatcher so its files keep working
(``worktree_prefix`` and ``worktree_placement`` included).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import shlex
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from localdispatch.errors import ConfigError, GitError
from localdispatch.git.commands import run_git

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
    def _combination(self) -> LLMConfig:
        if self.provider == "ollama":
            stray = [k for k in _OPENAI_ONLY if k in self.model_fields_set]
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
    """Load ``path``, or the nearest dispatch_config.json, or the defaults if there is none.

    Inside a git repository the search goes up to its top level, and without a config that
    top level is the repository, so every command works alike from any folder in it. Outside
    any repository the current folder is the repository. An explicit ``path`` that does not
    exist is an error, and so is a ``repo_root`` that names no folder.
    """
    cwd = (cwd or Path.cwd()).resolve()
    if path is None:
        top = repository_top(cwd)
        path = find_config(cwd, stop=top)
        if path is None:
            config = Config()
            config._base_dir = top or cwd
            return config
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"Config file {path} does not exist.",
            hint="Create it (`{}` is a valid config) or pass --config with the right path.",
            path=path,
        )
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read {path}: {exc}.", path=path) from exc
    config = parse_config(text, source=path)
    config._source = path.resolve()
    config._base_dir = path.resolve().parent
    _check_repo_root(config, path)
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


def parse_config(text: str, *, source: Path | str = CONFIG_FILENAME) -> Config:
    """Validate config text; every problem becomes one ConfigError naming the key."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"{source}: invalid JSON at line {exc.lineno}, column {exc.colno}: "
            f"{_json_problem(exc)}.",
            hint="Fix the syntax there (a missing comma or quote, or a trailing comma).",
            path=source,
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
            path=source,
        ) from exc
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: the top level must be a JSON object ({{...}}), not {type(data).__name__}.",
            path=source,
        )
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise _friendly(exc, data, text, source) from None


def _json_problem(exc: json.JSONDecodeError) -> str:
    """json's message, or plain words for the mistake people make most: a trailing comma."""
    before = exc.doc[: exc.pos].rstrip()
    if before.endswith(",") and exc.doc[exc.pos : exc.pos + 1] in ("}", "]"):
        return "trailing comma before the closing bracket (JSON does not allow it)"
    return exc.msg


def _friendly(
    exc: ValidationError, data: dict[str, Any], text: str, source: Path | str
) -> ConfigError:
    problems = [_describe(err, data, text) for err in exc.errors()]
    first_key = ".".join(str(p) for p in exc.errors()[0]["loc"]) if exc.errors() else None
    message = f"{source}: " + "; ".join(problems[:5])
    if len(problems) > 5:
        message += f"; and {len(problems) - 5} more problems"
    if not message.endswith(("?", ".")):
        message += "."
    return ConfigError(message, path=source, key=first_key)


def _describe(err: Any, data: dict[str, Any], text: str) -> str:
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
