"""The model client: a small provider interface, the Ollama provider, and asking for JSON.

Everything that talks to a language model goes through :class:`ChatProvider`, so the splitter
(and later features) do not care which server answers. There are two providers, chosen by
``llm.provider`` in :func:`provider_for`: Ollama through the official ``ollama`` client, and
any OpenAI-compatible server (llama.cpp, LM Studio, vLLM) through plain httpx.

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

from .config import Config, is_loopback
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
            self._client = ollama.Client(
                host=self._host, timeout=timeout, trust_env=not is_loopback(self._host)
            )
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


# ---- OpenAI-compatible ---------------------------------------------------------------------

# How a schema is asked for. OpenAI, llama.cpp's llama-server, LM Studio and vLLM take
# "json_schema"; llama-cpp-python's server (and some hosted APIs) only know "json_object" with a
# "schema" beside it, and refuse the first with an error naming response_format (HTTP 400 or
# 422; llama-cpp-python says 500).
JSON_SCHEMA_FORMAT = "json_schema"
JSON_OBJECT_FORMAT = "json_object"
# Relative to the base URL; httpx appends them to its path (…/v1/chat/completions).
CHAT_ENDPOINT = "chat/completions"
MODELS_ENDPOINT = "models"
# A server's error text in a message: enough to see the cause, not a page of traceback.
DETAIL_CHARS = 300


class OpenAIProvider:
    """Any server that speaks OpenAI's ``POST {base_url}/chat/completions``.

    Plain httpx rather than the ``openai`` package: one endpoint does not justify the
    dependency, and local servers report errors in their own shapes, which we read ourselves.
    The API key is read from the environment variable ``api_key_env`` at the first request and
    sent only if it is set (local servers need none); it is never logged or put in a message.
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        model: str,
        timeout_secs: float,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        max_tokens: int | None = None,
        stream: bool = False,
    ) -> None:
        self._host = base_url.rstrip("/")
        self._model = model
        self.timeout_secs = timeout_secs
        self.api_key_env = api_key_env
        self.max_tokens = max_tokens
        self.stream = stream
        # Switched to JSON_OBJECT_FORMAT for the rest of the session by a server that refuses
        # the standard form, so only the first request pays for finding out.
        self.schema_format = JSON_SCHEMA_FORMAT
        self._client: httpx.Client | None = None

    @property
    def host(self) -> str:
        return self._host

    @property
    def model(self) -> str:
        return self._model

    @property
    def key_is_set(self) -> bool:
        return bool(os.environ.get(self.api_key_env, "").strip())

    def _api(self) -> httpx.Client:
        if self._client is None:
            headers = {"Accept": "application/json"}
            key = os.environ.get(self.api_key_env, "").strip()
            if key:
                headers["Authorization"] = f"Bearer {key}"
            timeout = httpx.Timeout(
                self.timeout_secs, connect=min(self.timeout_secs, CONNECT_TIMEOUT_SECS)
            )
            # The trailing slash makes "chat/completions" extend the base path (…/v1/…).
            self._client = httpx.Client(
                base_url=self._host + "/",
                headers=headers,
                timeout=timeout,
                trust_env=not is_loopback(self._host),
            )
        return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def chat(
        self,
        messages: Sequence[ChatMessage],
        *,
        schema: dict[str, Any] | None = None,
        context_tokens: int | None = None,
    ) -> ChatReply:
        # context_tokens has no place in this protocol: the server's context size is set when
        # it starts (a prompt that does not fit is refused with a message we pass on).
        del context_tokens
        body: dict[str, Any] = {
            "model": self._model,
            "messages": list(messages),
            "temperature": 0,
            "stream": self.stream,
        }
        if self.max_tokens:
            # A grammar-constrained small model can ramble inside a string until the context is
            # full (minutes on a CPU); cut off, the answer is marked truncated and asked again.
            body["max_tokens"] = self.max_tokens
        log.debug("asking %s at %s (%d messages)", self._model, self._host, len(messages))
        with self._translated_errors():
            if schema is None:
                return self._complete(body)
            body["response_format"] = response_format(schema, self.schema_format)
            try:
                return self._complete(body)
            except _FormatRefused:
                if self.schema_format != JSON_SCHEMA_FORMAT:
                    raise
            log.info(
                "%s refused response_format %s; asking with %s and a schema instead",
                self._host,
                JSON_SCHEMA_FORMAT,
                JSON_OBJECT_FORMAT,
            )
            self.schema_format = JSON_OBJECT_FORMAT
            body["response_format"] = response_format(schema, self.schema_format)
            return self._complete(body)

    def _complete(self, body: dict[str, Any]) -> ChatReply:
        if not self.stream:
            response = self._api().post(CHAT_ENDPOINT, json=body)
            self._check(response, CHAT_ENDPOINT)
            return completion_reply(response.json())
        with self._api().stream("POST", CHAT_ENDPOINT, json=body) as response:
            if response.is_error:
                response.read()
                self._check(response, CHAT_ENDPOINT)
            return streamed_reply(response.iter_lines())

    def list_models(self) -> list[str]:
        """Ids of the models the server offers (``GET {base_url}/models``)."""
        with self._translated_errors():
            response = self._api().get(MODELS_ENDPOINT)
            self._check(response, MODELS_ENDPOINT)
            data = response.json().get("data") or []
            return [str(m["id"]) for m in data if isinstance(m, dict) and m.get("id")]

    def _check(self, response: httpx.Response, endpoint: str) -> None:
        if response.is_success:
            return
        status = response.status_code
        detail = error_detail(response)
        lowered = response.text.lower()
        if status in (400, 422, 500) and "response_format" in lowered:
            # llama-cpp-python reports its validation error as a 500.
            raise _FormatRefused(detail)
        if status in (401, 403):
            raise key_refused(self._host, self.api_key_env, status, detail, self.key_is_set)
        if status == 404 and endpoint == CHAT_ENDPOINT and "model" in detail.lower():
            raise openai_model_missing(self._host, self._model, self._served_models())
        if status in (404, 405):
            raise LLMError(
                f"The server at {self._host} has no {self._host}/{endpoint} "
                f"(HTTP {status}): {detail}.",
                hint="Set llm.base_url to the server's OpenAI-compatible root; it usually ends "
                "in /v1 (e.g. http://127.0.0.1:8080/v1).",
                key="llm.base_url",
            )
        hint = "Check the server's log for the cause."
        if "context" in lowered or "too long" in lowered:
            hint = (
                "The prompt does not fit the server's context window: start the server with "
                "a larger one (llama.cpp: --ctx-size 8192; llama-cpp-python: --n_ctx 8192)."
            )
        raise LLMError(
            f"The server at {self._host} refused the request (HTTP {status}): {detail}.",
            hint=hint,
            key="llm.base_url",
        )

    def _served_models(self) -> list[str]:
        """What the server offers, for a message; empty if it cannot say."""
        try:
            return self.list_models()
        except LLMError:
            return []

    @contextmanager
    def _translated_errors(self) -> Iterator[None]:
        try:
            yield
        except LLMError:
            raise
        except _FormatRefused as refused:
            raise LLMError(
                f"The server at {self._host} accepts no JSON-schema output "
                f"(response_format {JSON_SCHEMA_FORMAT} or {JSON_OBJECT_FORMAT} with a schema): "
                f"{refused}.",
                hint="Update the server, or use one that supports it (llama.cpp's llama-server, "
                "LM Studio, vLLM, Ollama).",
                key="llm.base_url",
            ) from refused
        except Exception as exc:
            translated = openai_error(exc, self._host, self._model, self.timeout_secs)
            if translated is None:
                raise
            raise translated from exc


class _FormatRefused(Exception):
    """The server does not understand the response_format it was sent."""


def response_format(schema: dict[str, Any], kind: str = JSON_SCHEMA_FORMAT) -> dict[str, Any]:
    """The ``response_format`` that constrains an answer to ``schema``, in the server's dialect."""
    strict = closed_schema(schema)
    if kind == JSON_OBJECT_FORMAT:
        return {"type": JSON_OBJECT_FORMAT, "schema": strict}
    # OpenAI wants a name of letters, digits, "_" and "-" (at most 64).
    name = re.sub(r"[^A-Za-z0-9_-]", "_", str(schema.get("title") or "answer"))[:64]
    return {
        "type": JSON_SCHEMA_FORMAT,
        "json_schema": {"name": name, "schema": strict, "strict": True},
    }


def closed_schema(schema: Any) -> Any:
    """A copy where every object with properties refuses others, as strict mode requires
    (and a grammar-constrained small model can no longer wander into invented keys)."""
    if isinstance(schema, list):
        return [closed_schema(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    copy = {key: closed_schema(value) for key, value in schema.items()}
    if isinstance(copy.get("properties"), dict):
        copy.setdefault("additionalProperties", False)
    return copy


def completion_reply(data: Any) -> ChatReply:
    """The text of a ``chat.completion`` object; ValueError if it is not one."""
    choices = data.get("choices") if isinstance(data, dict) else None
    if not choices or not isinstance(choices[0], dict):
        raise ValueError("the answer has no choices")
    message = choices[0].get("message") or {}
    return ChatReply(
        text=str(message.get("content") or ""),
        truncated=choices[0].get("finish_reason") == "length",
    )


def streamed_reply(lines: Iterator[str]) -> ChatReply:
    """The text of a server-sent-events stream of ``chat.completion.chunk`` objects.

    ValueError if the stream ends before a ``finish_reason`` or ``[DONE]``: that is an answer
    that broke off, not a short one.
    """
    parts: list[str] = []
    finish: str | None = None
    done = False
    for line in lines:
        if not line.startswith("data:"):
            continue  # blank separators, ": keep-alive" comments, "event:" names
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            done = True
            break
        chunk = json.loads(payload)
        if isinstance(chunk, dict) and chunk.get("error"):
            raise ValueError(f"the server reported an error mid-answer: {chunk['error']}")
        for choice in chunk.get("choices") or []:
            parts.append(str((choice.get("delta") or {}).get("content") or ""))
            finish = choice.get("finish_reason") or finish
    if finish is None and not done:
        raise ValueError("the stream ended before the answer was finished")
    return ChatReply(text="".join(parts), truncated=finish == "length")


def error_detail(response: httpx.Response) -> str:
    """The server's own words from an error answer, on one line, in any shape servers use."""
    words = _error_words(response)
    one_line = " ".join(words.split())
    return one_line if len(one_line) <= DETAIL_CHARS else one_line[: DETAIL_CHARS - 3] + "..."


def _error_words(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str) and error:
            return error
        if data.get("message"):
            return str(data["message"])
        detail = data.get("detail")  # FastAPI (llama-cpp-python): a list of field problems
        if isinstance(detail, list):
            return "; ".join(
                str(d.get("msg", d)) if isinstance(d, dict) else str(d) for d in detail
            )
        if detail:
            return str(detail)
    return response.text.strip() or response.reason_phrase or "no details"


def openai_error(exc: Exception, host: str, model: str, timeout_secs: float) -> LLMError | None:
    """The LLMError for an exception while talking to an OpenAI-compatible server, or None."""
    if isinstance(exc, httpx.ConnectTimeout | httpx.ConnectError | ConnectionError):
        return openai_unreachable(host)
    if isinstance(exc, httpx.TimeoutException):
        return LLMError(
            f"The server at {host} did not answer within {timeout_secs:g} s "
            f"(llm.timeout_secs) while running {model}.",
            hint="A server on a CPU can be slow to load and answer: raise llm.timeout_secs in "
            "dispatch_config.json, or choose a smaller llm.model.",
            key="llm.timeout_secs",
        )
    if isinstance(exc, httpx.HTTPError | ValueError | KeyError | TypeError | AttributeError):
        return LLMError(
            f"The answer from {host} broke off or is not the OpenAI chat API "
            f"({type(exc).__name__}: {exc}).",
            hint="Check that llm.base_url names an OpenAI-compatible server (its root, usually "
            "ending in /v1) and that it is healthy.",
            key="llm.base_url",
        )
    return None


def openai_unreachable(host: str) -> LLMError:
    return LLMError(
        f"Cannot reach the OpenAI-compatible server at {host}.",
        hint="Start it (llama.cpp: `llama-server -m MODEL.gguf --port 8080`; llama-cpp-python: "
        "`python -m llama_cpp.server --model MODEL.gguf --port 8080`; LM Studio: start its "
        "local server; vLLM: `vllm serve MODEL`), or set llm.base_url in dispatch_config.json "
        "to where it runs.",
        key="llm.base_url",
    )


def openai_model_missing(host: str, model: str, served: Sequence[str]) -> LLMError:
    offers = f" It offers: {', '.join(served[:10])}." if served else ""
    return LLMError(
        f"The model {model} is not available on the server at {host}.{offers}",
        hint=f"Set llm.model in dispatch_config.json to a model the server lists at "
        f"{host}/models, or load {model} in the server.",
        key="llm.model",
    )


def key_refused(host: str, env: str, status: int, detail: str, key_set: bool) -> LLMError:
    if key_set:
        hint = (
            f"The key comes from the environment variable {env} (llm.api_key_env); set it to "
            "a key this server accepts."
        )
    else:
        hint = (
            f"The environment variable {env} (llm.api_key_env) is not set, so no key was "
            "sent; set it to the server's API key."
        )
    return LLMError(
        f"The server at {host} refused the request without a valid API key "
        f"(HTTP {status}): {detail}.",
        hint=hint,
        key="llm.api_key_env",
    )


def provider_for(config: Config, *, stream: bool = False) -> ChatProvider:
    """The provider ``llm.provider`` names: Ollama (the ``ollama`` section) or OpenAI's API."""
    llm = config.llm
    if llm.provider == "openai" and llm.base_url and llm.model:
        return OpenAIProvider(
            llm.base_url,
            llm.model,
            llm.timeout_secs,
            api_key_env=llm.api_key_env,
            max_tokens=llm.max_tokens,
            stream=stream,
        )
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
    setting = "llm.model" if provider.name == "openai" else "ollama.model"
    hint = f"{where} Try again, or use a larger model ({setting}). {extra_hint}".strip()
    return LLMError(
        f"The model {provider.model} gave no valid {what} in {attempts} {tries}; the last "
        f"problem: {problem}.",
        hint=hint,
        path=reply_log.folder if reply_log is not None else None,
    )
