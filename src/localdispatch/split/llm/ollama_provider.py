"""The Ollama provider: the server's ``/api/chat`` through the official ``ollama`` client.

Not named ``ollama.py``: ``import ollama`` below must mean the client package, for a reader
and for any tool that puts this folder on ``sys.path`` (running the file directly does).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import httpx
import ollama

from localdispatch.config import is_loopback
from localdispatch.errors import LLMError
from localdispatch.split.llm.base import NO_LLM, ChatMessage, ChatReply, http_timeout

log = logging.getLogger(__name__)


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
            timeout = http_timeout(self.timeout_secs)
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
        "dispatch_config.json (or $OLLAMA_HOST) to where it runs." + NO_LLM,
        key="ollama.host",
    )


def model_missing(host: str, model: str) -> LLMError:
    return LLMError(
        f"The model {model} is not available on the Ollama server at {host}.",
        hint=f"Download it with:  ollama pull {model}." + NO_LLM,
        key="ollama.model",
    )
