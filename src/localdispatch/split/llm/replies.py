"""Reading a model's reply (pure): the JSON in it, despite think blocks, fences and prose.

Small local models think aloud in ``<think>`` blocks, wrap JSON in code fences, put a sentence
before it, or stop half-way; :func:`extract_json` undoes the first three and names the fourth.
"""

from __future__ import annotations

import json
import re
from typing import Any


class InvalidReply(ValueError):
    """A reply that cannot be used; the message is written for the model to correct itself."""


_THINK_BLOCK = re.compile(r"<(think|thinking|reasoning)>.*?</\1>", re.DOTALL | re.IGNORECASE)
_THINK_CLOSE = re.compile(r"</(?:think|thinking|reasoning)>", re.IGNORECASE)
_THINK_OPEN = re.compile(r"<(?:think|thinking|reasoning)>", re.IGNORECASE)
_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\r?\n?(.*?)(?:```|\Z)", re.DOTALL)
# Looking for the JSON start at every bracket of a long garbage reply would be quadratic.
MAX_JSON_STARTS = 50


def strip_reasoning(text: str) -> str:
    """The reply without its ``<think>`` blocks (closed, orphaned closing tag, or unclosed)."""
    text = _THINK_BLOCK.sub("", text)
    closes = list(_THINK_CLOSE.finditer(text))
    if closes:
        # Some servers eat the opening tag; the answer is what follows the last closing one.
        text = text[closes[-1].end() :]
    opening = _THINK_OPEN.search(text)
    if opening:
        # Cut off while still thinking: nothing after the tag is an answer.
        text = text[: opening.start()]
    return text.strip()


def extract_json(text: str) -> Any:
    """The JSON value in a model's reply, despite think blocks, fences and prose around it.

    Accepts an object, or a list of objects (a model that forgets the wrapper). Raises
    InvalidReply with a message meant for the model.
    """
    cleaned = strip_reasoning(text)
    if not cleaned:
        raise InvalidReply("the reply was empty; it must be a JSON object")
    candidates = [m.group(1) for m in _FENCE.finditer(cleaned)] + [cleaned]
    first_error: json.JSONDecodeError | None = None
    for candidate in candidates:
        value, error = _first_json_value(candidate)
        if value is not None:
            return value
        first_error = first_error or error
    if first_error is None:
        raise InvalidReply("the reply holds no JSON object")
    if _looks_cut_off(first_error):
        raise InvalidReply("the JSON is cut off before its end (missing closing brackets)")
    raise InvalidReply(
        f"the JSON is malformed at line {first_error.lineno}, column {first_error.colno}: "
        f"{first_error.msg}"
    )


def _first_json_value(text: str) -> tuple[Any, json.JSONDecodeError | None]:
    decoder = json.JSONDecoder()
    error: json.JSONDecodeError | None = None
    for count, match in enumerate(re.finditer(r"[{\[]", text)):
        if count >= MAX_JSON_STARTS:
            break
        try:
            value, _end = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError as exc:
            if _looks_cut_off(exc):
                # Every later bracket lies inside this unfinished value: answering with one
                # of its complete inner objects would hide that the reply was cut off.
                return None, exc
            error = error or exc
            continue
        # "[1]" in a sentence before the answer decodes too; only an object or a list of
        # objects can be the answer.
        if isinstance(value, dict) or (
            isinstance(value, list) and value and all(isinstance(v, dict) for v in value)
        ):
            return value, None
    return None, error


def _looks_cut_off(error: json.JSONDecodeError) -> bool:
    rest = error.doc[error.pos :].strip()
    return not rest or error.msg.startswith("Unterminated string")
