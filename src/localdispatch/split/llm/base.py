"""What every provider shares: the message and reply shapes, the protocol, the HTTP timeout.

The splitter (and later features) talk to a model only through :class:`ChatProvider`, so they
do not care which server answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypedDict

import httpx

# A refused connection is instant; a host that drops packets must not hang us for the whole
# request timeout before we can say it is unreachable.
CONNECT_TIMEOUT_SECS = 10.0


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


def http_timeout(timeout_secs: float) -> httpx.Timeout:
    """``timeout_secs`` for a whole request, but at most CONNECT_TIMEOUT_SECS to connect."""
    return httpx.Timeout(timeout_secs, connect=min(timeout_secs, CONNECT_TIMEOUT_SECS))


# Every "no model" message names the way to go on without one.
NO_LLM = (
    " Or split without a model: add --no-llm to the same command (it splits by sentences "
    "and list items)."
)
