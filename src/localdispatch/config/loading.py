"""Finding and loading the configuration: the repository's dispatch_config.json over the user
config, key by key, with the file each value came from."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import platformdirs
from pydantic import (
    BaseModel,
    ValidationError,
)
from pydantic_core import ErrorDetails

from localdispatch.config.messages import describe_error, friendly, parse_json
from localdispatch.config.model import (
    CONFIG_FILENAME,
    REPOSITORY_ONLY,
    USER_CONFIG_ENV,
    USER_CONFIG_FILENAME,
    USER_KEYS_CONTEXT,
    Config,
)
from localdispatch.errors import ConfigError, GitError
from localdispatch.git.commands import run_git


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
    repo = read_layer(Path(path), user=False) if path is not None else None
    user = read_user_layer()
    base_dir = repo.path.resolve().parent if repo else (top or cwd)
    config = combine(repo, user, base_dir)
    if repo is not None:
        check_repo_root(config, repo.path)
    return config


def check_repo_root(config: Config, source: Path) -> None:
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
class Layer:
    """One file's settings: the repository's dispatch_config.json or the user config."""

    path: Path
    data: dict[str, Any]
    text: str  # for line numbers in messages; "" for settings not written yet
    user: bool

    def label(self) -> str:
        return label_of(self.path, self.user)


def read_user_layer(path: Path | None = None) -> Layer | None:
    """The user config checked on its own (JSON, key names, types, ranges, no repo_root),
    or None when the file does not exist. Checks that need both files wait for them."""
    path = user_config_path() if path is None else path
    if not path.exists():
        return None
    return read_layer(path, user=True)


def user_config_keys(path: Path | None = None) -> list[str]:
    """The keys the user config sets (dotted), after checking it as :func:`load_config`
    would; [] when there is no such file. Raises ConfigError naming the file and key."""
    layer = read_user_layer(path)
    return leaves(layer.data) if layer else []


def read_layer(path: Path, *, user: bool) -> Layer:
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
    layer = Layer(path, parse_json(text, label_of(path, user), path), text, user)
    check_alone(layer)
    return layer


def label_of(path: Path, user: bool) -> str:
    return f"{path} (user config)" if user else str(path)


def check_alone(layer: Layer) -> None:
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
            raise friendly(alone, layer.text, layer.label(), layer.path) from None


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


def section_names() -> set[str]:
    return {
        name
        for name, info in Config.model_fields.items()
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)
    }


def leaves(data: Mapping[str, Any]) -> list[str]:
    """The dotted keys a file sets: a section's keys one by one; ``$schema`` is no setting."""
    keys: list[str] = []
    sections = section_names()
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
    sections = section_names()
    for key, value in over.items():
        below = merged.get(key)
        if key in sections and isinstance(value, dict) and isinstance(below, dict):
            merged[key] = {**below, **value}
        else:
            merged[key] = value
    return merged


def combine(repo: Layer | None, user: Layer | None, base_dir: Path) -> Config:
    """The repository's settings over the user's, each file already checked alone."""
    layers = [layer for layer in (user, repo) if layer is not None]
    merged: dict[str, Any] = {}
    origins: dict[str, Path] = {}
    for layer in layers:
        merged = _merge(merged, layer.data)
        for key in leaves(layer.data):
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


def _combination_error(errors: list[ErrorDetails], layers: list[Layer]) -> ConfigError:
    """A rule about several keys that the merged settings break, naming the file (or both
    files) that set the keys it is about."""
    err = errors[0]
    problem = describe_error(err, "")
    section = ".".join(str(part) for part in err["loc"])
    involved = [
        layer
        for layer in layers
        if any(_mentions(problem, key) for key in leaves(layer.data) if key.startswith(section))
    ] or [layer for layer in layers if any(k.startswith(section) for k in leaves(layer.data))]
    involved = involved or layers[-1:]
    where = " with ".join(layer.label() for layer in reversed(involved)) or CONFIG_FILENAME
    message = f"{where}: {problem}"
    if not message.endswith(("?", ".")):
        message += "."
    path = involved[-1].path if involved else None
    return ConfigError(message, path=path, key=section or None)


def _mentions(text: str, key: str) -> bool:
    return re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", text) is not None


