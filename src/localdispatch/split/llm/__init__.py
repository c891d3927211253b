"""The model client: a small provider interface, two providers, and asking for JSON.

Everything that talks to a language model goes through :class:`ChatProvider`, so the splitter
(and later features) do not care which server answers. There are two providers, chosen by
``llm.provider`` in :func:`provider_for`: Ollama through the official ``ollama`` client, and
any OpenAI-compatible server (llama.cpp, LM Studio, vLLM) through plain httpx.

Small local models misbehave in predictable ways: they think aloud in ``<think>`` blocks, wrap
JSON in code fences, put a sentence before it, stop half-way, or answer in the wrong shape.
:func:`extract_json` undoes the first three; :func:`ask_structured` asks again with the problem
spelled out, a bounded number of times, and keeps every raw reply on disk so a person can see
what the model actually said.

The modules: ``base`` (message shapes, the protocol), ``ollama_provider``, ``openai_provider``,
``replies`` (reading the JSON out of a reply), ``reply_log`` and ``asking`` (the repair loop).
Import from this package, not from them.
"""

from __future__ import annotations

from localdispatch.config import Config
from localdispatch.split.llm.asking import ask_structured
from localdispatch.split.llm.base import ChatMessage, ChatProvider
from localdispatch.split.llm.ollama_provider import OllamaProvider
from localdispatch.split.llm.openai_provider import (
    OpenAIProvider,
    closed_schema,
    response_format,
)
from localdispatch.split.llm.replies import InvalidReply, extract_json, strip_reasoning
from localdispatch.split.llm.reply_log import ReplyLog

__all__ = [
    "ChatMessage",
    "ChatProvider",
    "InvalidReply",
    "OllamaProvider",
    "OpenAIProvider",
    "ReplyLog",
    "ask_structured",
    "closed_schema",
    "extract_json",
    "provider_for",
    "response_format",
    "strip_reasoning",
]


# The one place a backend is chosen, so callers never compare provider names themselves.
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
