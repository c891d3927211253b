"""The model client: a small provider interface, the Ollama provider, and asking for JSON.

Everything that talks to a language model goes through :class:`ChatProvider`, so the splitter
(and later features) do not care which server answers. Today there is one provider, Ollama
through the official ``ollama`` client; an OpenAI-compatible one can be added beside it and
chosen in :func:`provider_for` without touching its callers.

Small local models misbehave in predictable ways: they think aloud in ``<think>`` blocks, wrap
JSON in code fences, put a sentence before it, stop half-way, or answer in the wrong shape.
:func:`extract_json` undoes the first three; :func:`ask_structured` asks again with the problem
spelled out, a bounded number of times, and keeps every raw reply on disk so a person can see
what the model actually said.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Generic, Protocol, TypedDict, TypeVar

import httpx
import ollama

from .config import Config
from .errors import LLMError

log = logging.getLogger(__name__)

T = TypeVar("T")

# A refused connection is instant; a host that drops packets must not hang us for the whole
# request timeout before we can say it is unreachable.
CONNECT_TIMEOUT_SECS = 10.0
# How much of a bad reply is sent back to the model when asking it to correct itself: enough
# to see its mistake, not so much that the repair request overflows a small context window.
ECHO_CHARS = 6000


class ChatMessage(TypedDict):
    role: str
    content: str


@dataclass(frozen=True)
class ChatReply:
    """The text of one answer and whether the server cut it off at its length limit."""

    text: str
    truncated: bool = False


class ChatProvider(Protocol):
    """One chat model on one server. Implementations raise LLMError with a readable message."""

    @property
    def name(self) -> str:
        """The provider's kind, e.g. ``"ollama"``."""
        ...

    @property
    def host(self) -> str:
        """Where the server is, for messages."""
        ...

    @property
    def model(self) -> str:
        """The model's name as the server knows it."""
        ...

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: dict[str, Any] | None = None,
        context_tokens: int | None = None,
    ) -> ChatReply:
        """One deterministic (temperature 0) answer; ``schema`` constrains it to that JSON."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...


class InvalidReply(ValueError):
    """A reply that cannot be used; the message is written for the model to correct itself."""


# ---- Ollama ------------------------------------------------------------------------------


class OllamaProvider:
    """The Ollama server's ``/api/chat`` through the official ``ollama`` client."""

    name = "ollama"

    def __init__(self, host: str, model: str, timeout_secs: float, *, stream: bool = False) -> None:
        self._host = host
        self._model = model
        self.timeout_secs = timeout_secs
        # Streaming changes nothing in the result; it exists so both transports are tested.
        self.stream = stream
        self._client: ollama.Client | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def model(self) -> str:
        return self._model

    def _api(self) -> ollama.Client:
        if self._client is None:
            timeout = httpx.Timeout(
                self.timeout_secs, connect=min(self.timeout_secs, CONNECT_TIMEOUT_SECS)
            )
            self._client = ollama.Client(host=self._host, timeout=timeout)
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()  # type: ignore[no-untyped-call]  # untyped upstream
            self._client = None

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: dict[str, Any] | None = None,
        context_tokens: int | None = None,
    ) -> ChatReply:
        options: dict[str, Any] = {"temperature": 0}
        if context_tokens:
            # Ollama silently drops the start of a prompt longer than num_ctx (2,048 or 4,096
            # tokens by default), which would cut off our instructions; ask for enough.
            options["num_ctx"] = context_tokens
        log.debug("asking %s at %s (%d messages)", self._model, self._host, len(messages))
        with self._translated_errors():
            if self.stream:
                return self._chat_streamed(messages, schema, options)
            response = self._api().chat(
                model=self._model,
                messages=list(messages),
                format=schema,
                options=options,
                stream=False,
            )
            return ChatReply(
                text=response.message.content or "", truncated=response.done_reason == "length"
            )

    def _chat_streamed(
        self,
        messages: Sequence[ChatMessage],
        schema: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> ChatReply:
        parts: list[str] = []
        done_reason: str | None = None
        for chunk in self._api().chat(
            model=self._model, messages=list(messages), format=schema, options=options, stream=True
        ):
            parts.append(chunk.message.content or "")
            if chunk.done:
                done_reason = chunk.done_reason
        return ChatReply(text="".join(parts), truncated=done_reason == "length")

    def list_models(self) -> list[str]:
        """Names of the models the server has pulled (``/api/tags``)."""
        with self._translated_errors():
            return [m.model for m in self._api().list().models if m.model]

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except LLMError:
            raise
        except Exception as exc:
            translated = ollama_error(exc, self._host, self._model, self.timeout_secs)
            if translated is None:
                raise
            raise translated from exc


def ollama_error(exc: Exception, host: str, model: str, timeout_secs: float) -> LLMError | None:
    """The LLMError for an exception from the ollama client, or None if it is not one of its."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | ConnectionError):
        return unreachable(host)
    if isinstance(exc, httpx.TimeoutException):
        return LLMError(
            f"The Ollama server at {host} did not answer within {timeout_secs:g} s "
            f"(ollama.timeout_secs) while running {model}.",
            hint="The first request loads the model and can be slow on a CPU: raise "
            "ollama.timeout_secs in dispatch_config.json, or choose a smaller ollama.model.",
            key="ollama.timeout_secs",
        )
    if isinstance(exc, ollama.ResponseError):
        if exc.status_code == 404 and "not found" in exc.error.lower():
            return model_missing(host, model)
        status = f" (HTTP {exc.status_code})" if exc.status_code > 0 else ""
        return LLMError(
            f"The Ollama server at {host} refused the request{status}: {exc.error}.",
            hint="Check the server's log (or `ollama serve` output) for the cause.",
            key="ollama.host",
        )
    if isinstance(exc, httpx.HTTPError | ValueError | KeyError | TypeError):
        # A dropped connection mid-answer, or something that is not the Ollama API at all.
        return LLMError(
            f"The answer from {host} broke off or is not the Ollama API "
            f"({type(exc).__name__}: {exc}).",
            hint="Check that ollama.host names an Ollama server and that it is healthy.",
            key="ollama.host",
        )
    return None


def unreachable(host: str) -> LLMError:
    return LLMError(
        f"Cannot reach the Ollama server at {host}.",
        hint="Start it with `ollama serve` (or open the Ollama app), or set ollama.host in "
        "dispatch_config.json (or $OLLAMA_HOST) to where it runs.",
        key="ollama.host",
    )


def model_missing(host: str, model: str) -> LLMError:
    return LLMError(
        f"The model {model} is not available on the Ollama server at {host}.",
        hint=f"Download it with:  ollama pull {model}",
        key="ollama.model",
    )


def provider_for(config: Config, *, stream: bool = False) -> ChatProvider:
    """The provider the config names (only Ollama in this version)."""
    return OllamaProvider(
        config.ollama.host, config.ollama.model, config.ollama.timeout_secs, stream=stream
    )


# ---- raw reply log -----------------------------------------------------------------------


@dataclass
class ReplyLog:
    """Writes the prompt and every raw reply of one request to ``folder/<stem>.*.txt``.

    A failure to write is logged and ignored: losing a log must never lose a split.
    """

    folder: Path
    stem: str
    files: list[Path] = field(default_factory=list)

    @classmethod
    def new(cls, folder: Path, purpose: str) -> ReplyLog:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-%f")
        return cls(folder=Path(folder), stem=f"{purpose}-{stamp}-{os.getpid()}")

    @property
    def pattern(self) -> str:
        return f"{self.stem}.reply-*.txt"

    def save_prompt(self, messages: Sequence[ChatMessage]) -> Path | None:
        text = "\n\n".join(f"--- {m['role']} ---\n{m['content']}" for m in messages)
        return self._write(f"{self.stem}.prompt.txt", text + "\n")

    def save_reply(self, attempt: int, text: str) -> Path | None:
        return self._write(f"{self.stem}.reply-{attempt}.txt", text)

    def _write(self, name: str, text: str) -> Path | None:
        path = self.folder / name
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8", newline="\n")
        except OSError as exc:
            log.warning("could not save the model's text to %s: %s", path, exc)
            return None
        self.files.append(path)
        return path


# ---- reading a reply ---------------------------------------------------------------------

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


# ---- asking until the answer is valid ----------------------------------------------------


@dataclass
class StructuredAnswer(Generic[T]):
    value: T
    attempts: int
    log_files: list[Path]


def ask_structured(
    provider: ChatProvider,
    messages: Sequence[ChatMessage],
    parse: Callable[[str], T],
    *,
    schema: dict[str, Any] | None,
    max_attempts: int,
    reply_log: ReplyLog | None = None,
    context_tokens: int | None = None,
    what: str = "answer",
    extra_hint: str = "",
) -> StructuredAnswer[T]:
    """Ask until ``parse`` accepts a reply, feeding each problem back, at most ``max_attempts``.

    ``parse`` raises InvalidReply (or any ValueError) with a message for the model. Server
    errors (unreachable, missing model, timeout) are raised at once: asking again would not help.
    """
    if reply_log is not None:
        reply_log.save_prompt(messages)
    conversation = list(messages)
    problem = ""
    for attempt in range(1, max_attempts + 1):
        reply = provider.chat(conversation, schema=schema, context_tokens=context_tokens)
        if reply_log is not None:
            reply_log.save_reply(attempt, reply.text)
        try:
            value = parse(reply.text)
        except ValueError as exc:
            problem = str(exc)
            if reply.truncated:
                problem = "the reply was cut off at the model's length limit; be briefer"
        else:
            return StructuredAnswer(value, attempt, list(reply_log.files if reply_log else []))
        again = "; asking again" if attempt < max_attempts else ""
        log.warning(
            "reply %d of %s was not a valid %s: %s%s", attempt, provider.model, what, problem, again
        )
        conversation = [
            *messages,
            ChatMessage(role="assistant", content=reply.text[:ECHO_CHARS]),
            ChatMessage(role="user", content=repair_request(problem)),
        ]
    raise _never_valid(provider, what, max_attempts, problem, reply_log, extra_hint)


def repair_request(problem: str) -> str:
    return (
        f"Your previous answer could not be used: {problem}.\n"
        "Answer again with only the corrected, complete JSON object that follows the schema. "
        "No explanations, no code fences."
    )


def _never_valid(
    provider: ChatProvider,
    what: str,
    attempts: int,
    problem: str,
    reply_log: ReplyLog | None,
    extra_hint: str,
) -> LLMError:
    tries = "attempt" if attempts == 1 else "attempts"
    where = (
        f"The raw replies are saved in {reply_log.folder} ({reply_log.pattern})."
        if reply_log is not None
        else "The raw replies were not saved."
    )
    hint = f"{where} Try again, or use a larger model (ollama.model). {extra_hint}".strip()
    return LLMError(
        f"The model {provider.model} gave no valid {what} in {attempts} {tries}; the last "
        f"problem: {problem}.",
        hint=hint,
        path=reply_log.folder if reply_log is not None else None,
    )
