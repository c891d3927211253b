"""Test helpers that ship with the package, so the demo and every test suite can use them.

:class:`ModelServer` is a real HTTP server on 127.0.0.1 that speaks the Ollama API (and the
OpenAI chat-completions protocol) with scripted replies; see its module for details.
"""

from __future__ import annotations

from localdispatch.testing.model_server import (
    ModelServer,
    ScriptedReply,
    closed_port,
    plan_reply,
)

__all__ = ["ModelServer", "ScriptedReply", "closed_port", "plan_reply"]
