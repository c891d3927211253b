"""The model client: reading replies, the Ollama provider against a real local server, repair."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localdispatch.config import parse_config
from localdispatch.errors import LLMError
from localdispatch.llm import (
    ChatMessage,
    InvalidReply,
    OllamaProvider,
    ReplyLog,
    ask_structured,
    extract_json,
    provider_for,
    strip_reasoning,
)
from localdispatch.testing import ModelServer, ScriptedReply, closed_port

MODEL = "qwen2.5-coder:7b"
MESSAGES = [ChatMessage(role="user", content="Say hello as JSON.")]


@pytest.fixture
def server() -> Iterator[ModelServer]:
    with ModelServer(models=[MODEL]) as running:
        yield running


def provider(server: ModelServer, *, stream: bool = False, timeout: float = 10) -> OllamaProvider:
    return OllamaProvider(server.url, MODEL, timeout, stream=stream)


# ---- extract_json (pure) -----------------------------------------------------------------


def test_plain_json_is_read() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}


def test_think_blocks_fences_and_prose_are_stripped() -> None:
    reply = (
        "<think>The user wants {json}. Let me think about [1] thing.</think>\n"
        'Sure! Here is the plan:\n```json\n{"a": [1, 2]}\n```\nHope this helps.'
    )
    assert extract_json(reply) == {"a": [1, 2]}


def test_orphan_closing_think_tag_keeps_only_what_follows() -> None:
    assert extract_json('reasoning {"wrong": 1} </think> {"right": 2}') == {"right": 2}


def test_unclosed_think_is_not_an_answer() -> None:
    with pytest.raises(InvalidReply, match=r"no JSON|empty"):
        extract_json('<think>I will answer {"a": 1} soon')


def test_bracketed_prose_before_the_object_is_skipped() -> None:
    assert extract_json('As noted in [1], the answer: {"ok": true} (done)') == {"ok": True}


def test_a_bare_list_of_objects_is_accepted() -> None:
    assert extract_json('[{"title": "x"}]') == [{"title": "x"}]


def test_truncated_json_is_reported_as_cut_off() -> None:
    with pytest.raises(InvalidReply, match="cut off"):
        extract_json('{"subtasks": [{"title": "Add the dashb')
    with pytest.raises(InvalidReply, match="cut off"):
        extract_json('```json\n{"subtasks": [{"title": "x"}, ')


def test_malformed_json_names_line_and_column() -> None:
    with pytest.raises(InvalidReply, match="line 2, column"):
        extract_json('{"a": 1,\n "b" 2}')


def test_empty_reply() -> None:
    with pytest.raises(InvalidReply, match="empty"):
        extract_json("  <think>hmm</think>  ")


def test_strip_reasoning_variants() -> None:
    assert strip_reasoning("<THINKING>x</THINKING>answer") == "answer"
    assert strip_reasoning("<reasoning>\nx\n</reasoning>\n answer ") == "answer"


# ---- the Ollama provider against a real HTTP server --------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_chat_returns_text_and_sends_schema_temperature_and_context(
    server: ModelServer, stream: bool
) -> None:
    server.add_replies('{"hello": "world, a reply long enough to arrive in several chunks"}')
    schema = {"type": "object", "properties": {"hello": {"type": "string"}}}
    client = provider(server, stream=stream)
    try:
        reply = client.chat(MESSAGES, schema=schema, context_tokens=8192)
    finally:
        client.close()
    assert json.loads(reply.text)["hello"].startswith("world")
    assert not reply.truncated
    body = server.chat_requests[0].body
    assert body["model"] == MODEL
    assert body["stream"] is stream
    assert body["format"] == schema
    assert body["options"]["temperature"] == 0
    assert body["options"]["num_ctx"] == 8192


@pytest.mark.parametrize("stream", [False, True])
def test_length_limit_marks_reply_truncated(server: ModelServer, stream: bool) -> None:
    server.add_replies(ScriptedReply('{"a": [1, 2', done_reason="length"))
    reply = provider(server, stream=stream).chat(MESSAGES)
    assert reply.truncated


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_says_ollama_pull(server: ModelServer, stream: bool) -> None:
    client = OllamaProvider(server.url, "llama3.2:1b", 5, stream=stream)
    with pytest.raises(LLMError) as caught:
        client.chat(MESSAGES)
    message = str(caught.value)
    assert "llama3.2:1b" in message
    assert "ollama pull llama3.2:1b" in message
    assert caught.value.key == "ollama.model"


@pytest.mark.parametrize("stream", [False, True])
def test_server_down_names_the_host_and_ollama_serve(stream: bool) -> None:
    host = f"http://127.0.0.1:{closed_port()}"
    with pytest.raises(LLMError) as caught:
        OllamaProvider(host, MODEL, 5, stream=stream).chat(MESSAGES)
    assert host in str(caught.value)
    assert "ollama serve" in str(caught.value)


@pytest.mark.parametrize("stream", [False, True])
def test_slow_server_times_out_with_a_message(stream: bool) -> None:
    with (
        ModelServer([ScriptedReply("{}", delay_secs=5)], models=[MODEL]) as slow,
        pytest.raises(LLMError) as caught,
    ):
        OllamaProvider(slow.url, MODEL, 0.3, stream=stream).chat(MESSAGES)
    assert "did not answer within 0.3 s" in str(caught.value)
    assert "ollama.timeout_secs" in str(caught.value)


def test_stream_that_breaks_off_is_reported(server: ModelServer) -> None:
    server.add_replies(ScriptedReply('{"a": "' + "x" * 200 + '"}', cut_stream=True))
    with pytest.raises(LLMError, match="broke off"):
        provider(server, stream=True).chat(MESSAGES)


def test_server_error_is_reported_with_its_words(server: ModelServer) -> None:
    server.add_replies(ScriptedReply(status=500, error="out of memory"))
    with pytest.raises(LLMError, match="out of memory"):
        provider(server).chat(MESSAGES)


def test_list_models(server: ModelServer) -> None:
    assert provider(server).list_models() == [MODEL]


def test_provider_for_reads_the_config(server: ModelServer) -> None:
    config = parse_config(json.dumps({"ollama": {"host": server.url, "timeout_secs": 7}}))
    chosen = provider_for(config)
    assert (chosen.name, chosen.host, chosen.model) == ("ollama", server.url, MODEL)


# ---- asking until valid ------------------------------------------------------------------


def _parse_greeting(text: str) -> str:
    data = extract_json(text)
    if not isinstance(data, dict) or "hello" not in data:
        raise InvalidReply("the object needs a 'hello' key")
    return str(data["hello"])


def test_repair_sends_the_problem_back_and_succeeds(server: ModelServer, tmp_path: Path) -> None:
    server.add_replies('{"hi": 1}', '<think>oops</think>{"hello": "there"}')
    log = ReplyLog.new(tmp_path / "logs", "test")
    answer = ask_structured(
        provider(server), MESSAGES, _parse_greeting, schema=None, max_attempts=3, reply_log=log
    )
    assert (answer.value, answer.attempts) == ("there", 2)
    second = server.chat_requests[1].messages
    assert second[-2] == {"role": "assistant", "content": '{"hi": 1}'}
    assert "needs a 'hello' key" in second[-1]["content"]
    replies = sorted((tmp_path / "logs").glob("test-*.reply-*.txt"))
    assert [p.read_text(encoding="utf-8") for p in replies] == [
        '{"hi": 1}',
        '<think>oops</think>{"hello": "there"}',
    ]
    assert list((tmp_path / "logs").glob("test-*.prompt.txt"))


def test_never_valid_names_the_log_folder(server: ModelServer, tmp_path: Path) -> None:
    server.default_reply = "no JSON here, sorry"
    log = ReplyLog.new(tmp_path / "logs", "test")
    with pytest.raises(LLMError) as caught:
        ask_structured(
            provider(server), MESSAGES, _parse_greeting, schema=None, max_attempts=2, reply_log=log
        )
    message = str(caught.value)
    assert "2 attempts" in message
    assert str(tmp_path / "logs") in message
    assert "no JSON object" in message
    assert len(server.chat_requests) == 2
    assert len(list((tmp_path / "logs").glob("*.reply-*.txt"))) == 2


def test_truncated_reply_asks_for_brevity(server: ModelServer) -> None:
    server.add_replies(ScriptedReply('{"hello": "wor', done_reason="length"), '{"hello": "w"}')
    answer = ask_structured(
        provider(server), MESSAGES, _parse_greeting, schema=None, max_attempts=2
    )
    assert answer.attempts == 2
    assert "length limit" in server.chat_requests[1].messages[-1]["content"]


def test_server_errors_are_not_retried(server: ModelServer) -> None:
    missing = OllamaProvider(server.url, "nope:1b", 5)
    with pytest.raises(LLMError, match="ollama pull nope:1b"):
        ask_structured(missing, MESSAGES, _parse_greeting, schema=None, max_attempts=3)
    assert len(server.chat_requests) == 1


def test_unwritable_log_folder_does_not_stop_the_request(
    server: ModelServer, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder", encoding="utf-8")
    server.add_replies('{"hello": "x"}')
    log = ReplyLog.new(blocker / "logs", "test")
    answer: Any = ask_structured(
        provider(server), MESSAGES, _parse_greeting, schema=None, max_attempts=1, reply_log=log
    )
    assert answer.value == "x"
    assert answer.log_files == []
