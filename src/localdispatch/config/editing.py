"""Writing settings: `localdispatch config set` and `init`, into either file, the whole
result checked before anything is written."""

from __future__ import annotations

import codecs
import difflib
import json
import os
import re
import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
)

from localdispatch.config.loading import (
    Layer,
    check_alone,
    check_repo_root,
    combine,
    find_config,
    label_of,
    leaves,
    read_layer,
    read_user_layer,
    repository_top,
    section_names,
    user_config_path,
)
from localdispatch.config.messages import field_names, parse_json, section_model
from localdispatch.config.model import (
    CONFIG_FILENAME,
    MACHINE_KEYS,
    REPOSITORY_KEYS,
    REPOSITORY_ONLY,
    SCHEMA_REF,
    Config,
)
from localdispatch.errors import ConfigError
from localdispatch.statefile import write_atomic

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
    data = parse_json(text, label_of(path, user), path) if original is not None else {}
    if original is None and not user:
        data["$schema"] = SCHEMA_REF
    for key, value in values.items():
        _assign(data, keys[key], value, path)
    layer = Layer(path, data, "", user)
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
        names = field_names(model)
        if part not in names:
            prefix = ".".join(parts[:number])
            valid = sorted(f"{prefix}.{name}" if prefix else name for name in names)
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
            guess = f"did you mean '{close[0]}'?" if close else "valid keys: " + ", ".join(valid)
            raise ConfigError(f"Unknown key '{key}'; {guess}", key=key)
        if number < len(parts) - 1:
            inner = section_model([*parts[: number + 1]])
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


def _validate_written(layer: Layer, cwd: Path | None) -> Layer | None:
    """Load the settings as they would be after writing ``layer``; the other file's layer."""
    check_alone(layer)
    if layer.user:
        here = (cwd or Path.cwd()).resolve()
        top = repository_top(here)
        found = find_config(here, stop=top)
        other = read_layer(found, user=False) if found else None
        config = combine(other, layer, other.path.resolve().parent if other else here)
        if other is not None:
            check_repo_root(config, other.path)
        return other
    other = read_user_layer()
    config = combine(layer, other, layer.path.resolve().parent)
    check_repo_root(config, layer.path)
    return other


def _refused(values: Mapping[str, object], path: Path, exc: ConfigError) -> ConfigError:
    """The check's words, led by what was being set and ending in what was not done."""
    what = ", ".join(f"{key} = {json.dumps(value, default=str)}" for key, value in values.items())
    problem = exc.message
    for prefix in (f"{label_of(path, True)}: ", f"{path}: "):
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


def _notes(values: Mapping[str, object], *, user: bool, other: Layer | None) -> list[str]:
    """Advice on where the settings just written belong, and whether they apply here."""
    written = leaves(_nested(values))
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
        if user and other is not None and key in leaves(other.data):
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
    sections = section_names()
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
