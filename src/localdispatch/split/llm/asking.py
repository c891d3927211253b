"""Asking until the answer is valid: the repair loop around any :class:`~.base.ChatProvider`.

A model that answers in the wrong shape is asked again with the problem spelled out, a bounded
number of times; the raw replies go to a :class:`~.reply_log.ReplyLog` so a person can see what
the model actually said.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from localdispatch.errors import LLMError
from localdispatch.split.llm.base import ChatMessage, ChatProvider
from localdispatch.split.llm.reply_log import ReplyLog

log = logging.getLogger(__name__)

T = TypeVar("T")

# How much of a bad reply is sent back to the model when asking it to correct itself: enough
# to see its mistake, not so much that the repair request overflows a small context window.
ECHO_CHARS = 6000


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
