"""The provider for any OpenAI-compatible server (llama.cpp, LM Studio, vLLM) over plain httpx.

Local servers disagree on how a JSON schema is asked for and on the shape of their errors;
both are handled here so the rest of the program sees one :class:`~.base.ChatProvider`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx

from localdispatch.config import is_loopback
from localdispatch.errors import LLMError
from localdispatch.split.llm.base import NO_LLM, ChatMessage, ChatReply, http_timeout

log = logging.getLogger(__name__)

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
            timeout = http_timeout(self.timeout_secs)
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
        "to where it runs." + NO_LLM,
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
