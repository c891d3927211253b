"""Turning what pydantic and json say about a config file into one plain message per problem
(the key, its line, the closest valid name, the allowed range), and the schema and the
README's table generated from the model."""

from __future__ import annotations

import difflib
import json
import math
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_core import ErrorDetails

from localdispatch.config.model import (
    CONFIG_FILENAME,
    HOUR_SECS,
    WEEK_SECS,
    Config,
    LLMConfig,
    OllamaConfig,
    SplitConfig,
)
from localdispatch.errors import ConfigError


def parse_config(text: str, *, source: Path | str = CONFIG_FILENAME) -> Config:
    """Validate config text; every problem becomes one ConfigError naming the key."""
    data = parse_json(text, source)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise friendly(exc.errors(), text, source) from None


def parse_json(text: str, source: Path | str, path: Path | None = None) -> dict[str, Any]:
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


def friendly(
    errors: list[ErrorDetails], text: str, source: Path | str, path: Path | None = None
) -> ConfigError:
    problems = [describe_error(err, text) for err in errors]
    first_key = ".".join(str(p) for p in errors[0]["loc"]) if errors else None
    message = f"{source}: " + "; ".join(problems[:5])
    if len(problems) > 5:
        message += f"; and {len(problems) - 5} more problems"
    if not message.endswith(("?", ".")):
        message += "."
    return ConfigError(message, path=path or source, key=first_key)


def describe_error(err: Any, text: str) -> str:
    loc = [str(p) for p in err["loc"]]
    key = ".".join(loc)
    where = _line_of(text, loc[-1]) if loc else ""
    if err["type"] == "extra_forbidden":
        section = section_model(loc[:-1])
        valid = sorted(field_names(section))
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
    field = section_model(loc[:-1]).model_fields.get(loc[-1]) if loc else None
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


def section_model(path: list[str]) -> type[BaseModel]:
    model: type[BaseModel] = Config
    for part in path:
        field = model.model_fields.get(part)
        annotation = field.annotation if field else None
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            model = annotation
    return model


def field_names(model: type[BaseModel]) -> set[str]:
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


