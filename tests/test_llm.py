"""The model client: reading replies, both providers against a real local server, repair."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from localdispatch.config import parse_config
from localdispatch.errors import ConfigError, LLMError
from localdispatch.split.llm import (
    ChatMessage,
    InvalidReply,
    OllamaProvider,
    OpenAIProvider,
    ReplyLog,
    ask_structured,
    closed_schema,
    extract_json,
    provider_for,
    response_format,
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


# ---- the OpenAI-compatible provider against the same server ------------------------------

KEY_ENV = "LOCALDISPATCH_TEST_KEY"


def openai_provider(
    server: ModelServer, *, model: str = MODEL, stream: bool = False, timeout: float = 10
) -> OpenAIProvider:
    return OpenAIProvider(server.openai_url, model, timeout, api_key_env=KEY_ENV, stream=stream)


def llama_cpp_python_dialect(body: dict[str, Any]) -> str | ScriptedReply:
    """What llama-cpp-python's server does: it refuses "json_schema" and wants "json_object"."""
    if body.get("response_format", {}).get("type") != "json_object":
        return ScriptedReply(
            status=500,
            error="1 validation error: {'loc': ('body', 'response_format', 'type'), "
            "'msg': \"Input should be 'text' or 'json_object'\"}",
        )
    return '{"hello": "from a grammar"}'


@pytest.mark.parametrize("stream", [False, True])
def test_openai_chat_sends_schema_temperature_and_model(
    server: ModelServer, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    server.add_replies('{"hello": "world, a reply long enough to arrive in several chunks"}')
    schema = {"title": "Greeting", "type": "object", "properties": {"hello": {"type": "string"}}}
    client = openai_provider(server, stream=stream)
    try:
        reply = client.chat(MESSAGES, schema=schema, context_tokens=8192)
    finally:
        client.close()
    assert json.loads(reply.text)["hello"].startswith("world")
    assert not reply.truncated
    request = server.chat_requests[0]
    assert request.path == "/v1/chat/completions"
    body = request.body
    assert (body["model"], body["stream"], body["temperature"]) == (MODEL, stream, 0)
    assert body["messages"] == MESSAGES
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "Greeting",
            "schema": {**schema, "additionalProperties": False},
            "strict": True,
        },
    }
    assert "max_tokens" not in body
    assert "authorization" not in {k.lower() for k in request.headers}


def test_openai_key_comes_from_the_named_variable(
    server: ModelServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test-123")
    server.add_replies("{}")
    openai_provider(server).chat(MESSAGES)
    headers = {k.lower(): v for k, v in server.chat_requests[0].headers.items()}
    assert headers["authorization"] == "Bearer sk-test-123"


def test_openai_max_tokens_is_sent_when_configured(server: ModelServer) -> None:
    server.add_replies("{}")
    OpenAIProvider(server.openai_url, MODEL, 10, max_tokens=512).chat(MESSAGES)
    assert server.chat_requests[0].body["max_tokens"] == 512


@pytest.mark.parametrize("stream", [False, True])
def test_openai_length_limit_marks_reply_truncated(server: ModelServer, stream: bool) -> None:
    server.add_replies(ScriptedReply('{"a": [1, 2', done_reason="length"))
    assert openai_provider(server, stream=stream).chat(MESSAGES).truncated


@pytest.mark.parametrize("stream", [False, True])
def test_openai_unknown_model_is_named_with_what_the_server_offers(
    server: ModelServer, stream: bool
) -> None:
    with pytest.raises(LLMError) as caught:
        openai_provider(server, model="llama3.2:1b", stream=stream).chat(MESSAGES)
    message = str(caught.value)
    assert "The model llama3.2:1b is not available" in message
    assert server.openai_url in message and MODEL in message
    assert caught.value.key == "llm.model"


@pytest.mark.parametrize("stream", [False, True])
def test_openai_server_down_names_the_url_and_how_to_start_one(stream: bool) -> None:
    base_url = f"http://127.0.0.1:{closed_port()}/v1"
    with pytest.raises(LLMError) as caught:
        OpenAIProvider(base_url, MODEL, 5, stream=stream).chat(MESSAGES)
    message = str(caught.value)
    assert f"Cannot reach the OpenAI-compatible server at {base_url}" in message
    assert "llama_cpp.server" in message and "llm.base_url" in message
    assert caught.value.key == "llm.base_url"


@pytest.mark.parametrize("stream", [False, True])
def test_openai_slow_server_times_out_with_a_message(stream: bool) -> None:
    with (
        ModelServer([ScriptedReply("{}", delay_secs=5)], models=[MODEL]) as slow,
        pytest.raises(LLMError) as caught,
    ):
        OpenAIProvider(slow.openai_url, MODEL, 0.3, stream=stream).chat(MESSAGES)
    assert "did not answer within 0.3 s" in str(caught.value)
    assert caught.value.key == "llm.timeout_secs"


@pytest.mark.parametrize("key_set", [False, True])
def test_openai_401_names_the_key_variable(
    server: ModelServer, key_set: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if key_set:
        monkeypatch.setenv(KEY_ENV, "sk-wrong-key-value")
    else:
        monkeypatch.delenv(KEY_ENV, raising=False)
    server.add_replies(ScriptedReply(status=401, error="Incorrect API key provided"))
    with pytest.raises(LLMError) as caught:
        openai_provider(server).chat(MESSAGES)
    message = str(caught.value)
    assert "HTTP 401" in message and "Incorrect API key provided" in message
    assert KEY_ENV in message and caught.value.key == "llm.api_key_env"
    assert ("is not set" in message) is not key_set
    assert "sk-wrong-key-value" not in message


def test_openai_base_url_without_v1_is_explained(server: ModelServer) -> None:
    with pytest.raises(LLMError) as caught:
        OpenAIProvider(server.url, MODEL, 5).chat(MESSAGES)
    message = str(caught.value)
    assert "HTTP 404" in message and "/v1" in message
    assert caught.value.key == "llm.base_url"


def test_openai_models_listing_without_v1_is_explained(server: ModelServer) -> None:
    with pytest.raises(LLMError) as caught:
        OpenAIProvider(server.url, MODEL, 5).list_models()
    assert "/v1" in str(caught.value) and caught.value.key == "llm.base_url"


def test_openai_stream_that_breaks_off_is_reported(server: ModelServer) -> None:
    server.add_replies(ScriptedReply('{"a": "' + "x" * 200 + '"}', cut_stream=True))
    with pytest.raises(LLMError, match="broke off"):
        openai_provider(server, stream=True).chat(MESSAGES)


def test_openai_server_error_is_reported_with_its_words(server: ModelServer) -> None:
    server.add_replies(ScriptedReply(status=500, error="CUDA out of\n   memory"))
    with pytest.raises(LLMError, match=r"HTTP 500\): CUDA out of memory\."):
        openai_provider(server).chat(MESSAGES)


def test_openai_context_overflow_says_how_to_start_a_larger_server(server: ModelServer) -> None:
    server.add_replies(
        ScriptedReply(status=400, error="Requested tokens (9000) exceed context window of 2048")
    )
    with pytest.raises(LLMError, match="--n_ctx 8192"):
        openai_provider(server).chat(MESSAGES)


@pytest.mark.parametrize("stream", [False, True])
def test_server_that_only_knows_json_object_gets_the_schema_that_way(
    server: ModelServer, stream: bool
) -> None:
    server.default_reply = llama_cpp_python_dialect
    schema = {"type": "object", "properties": {"hello": {"type": "string"}}}
    client = openai_provider(server, stream=stream)
    assert json.loads(client.chat(MESSAGES, schema=schema).text) == {"hello": "from a grammar"}
    assert json.loads(client.chat(MESSAGES, schema=schema).text) == {"hello": "from a grammar"}
    formats = [r.body["response_format"] for r in server.chat_requests]
    assert [f["type"] for f in formats] == ["json_schema", "json_object", "json_object"]
    assert formats[1]["schema"] == {**schema, "additionalProperties": False}


def test_server_without_any_schema_output_is_a_clear_error(server: ModelServer) -> None:
    server.default_reply = ScriptedReply(status=400, error="unknown field response_format")
    with pytest.raises(LLMError, match="accepts no JSON-schema output"):
        openai_provider(server).chat(MESSAGES, schema={"type": "object"})
    assert len(server.chat_requests) == 2


def test_openai_list_models(server: ModelServer) -> None:
    assert openai_provider(server).list_models() == [MODEL]


def test_closed_schema_forbids_extra_keys_at_every_level() -> None:
    schema = {
        "type": "object",
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"}}},
        "$defs": {"Item": {"type": "object", "properties": {"a": {"type": "string"}}}},
    }
    closed = closed_schema(schema)
    assert closed["additionalProperties"] is False
    assert closed["$defs"]["Item"]["additionalProperties"] is False
    assert "additionalProperties" not in schema  # the original is left alone


def test_response_format_name_is_what_openai_accepts() -> None:
    fmt = response_format({"title": "Plan reply (v2)", "type": "object"})
    assert fmt["json_schema"]["name"] == "Plan_reply__v2_"
    assert response_format({"type": "object"}, "json_object") == {
        "type": "json_object",
        "schema": {"type": "object"},
    }


def test_repair_loop_is_the_same_over_openai(server: ModelServer, tmp_path: Path) -> None:
    server.add_replies('{"hi": 1}', '```json\n{"hello": "there"}\n```')
    log = ReplyLog.new(tmp_path / "logs", "test")
    answer = ask_structured(
        openai_provider(server),
        MESSAGES,
        _parse_greeting,
        schema=None,
        max_attempts=3,
        reply_log=log,
    )
    assert (answer.value, answer.attempts) == ("there", 2)
    second = server.chat_requests[1].messages
    assert second[-2] == {"role": "assistant", "content": '{"hi": 1}'}
    assert "needs a 'hello' key" in second[-1]["content"]


def test_never_valid_over_openai_points_at_llm_model(server: ModelServer) -> None:
    server.default_reply = "no JSON here"
    with pytest.raises(LLMError) as caught:
        ask_structured(
            openai_provider(server), MESSAGES, _parse_greeting, schema=None, max_attempts=2
        )
    assert "no valid answer in 2 attempts" in str(caught.value)
    assert "(llm.model)" in str(caught.value)


# ---- choosing the provider in the config -------------------------------------------------


def test_provider_for_openai_reads_the_llm_section(server: ModelServer) -> None:
    config = parse_config(
        json.dumps(
            {
                "llm": {
                    "provider": "openai",
                    "base_url": server.openai_url + "/",
                    "model": MODEL,
                    "api_key_env": KEY_ENV,
                    "timeout_secs": 7,
                    "max_tokens": 256,
                }
            }
        )
    )
    chosen = provider_for(config)
    assert isinstance(chosen, OpenAIProvider)
    assert (chosen.name, chosen.host, chosen.model) == ("openai", server.openai_url, MODEL)
    assert (chosen.timeout_secs, chosen.api_key_env, chosen.max_tokens) == (7, KEY_ENV, 256)
    assert config.splitter_target() == (MODEL, server.openai_url)


def test_ollama_stays_the_default_provider() -> None:
    config = parse_config("{}")
    assert config.llm.provider == "ollama"
    assert isinstance(provider_for(config), OllamaProvider)
    assert config.splitter_target() == (config.ollama.model, config.ollama.host)


@pytest.mark.parametrize(
    ("llm", "fragments"),
    [
        ({"provider": "openai"}, ["needs llm.base_url", "http://127.0.0.1:8080/v1"]),
        (
            {"provider": "openai", "base_url": "http://127.0.0.1:8080/v1"},
            ["needs llm.model", "GET http://127.0.0.1:8080/v1/models"],
        ),
        ({"base_url": "http://127.0.0.1:8080/v1"}, ["llm.base_url is used only with", "ollama"]),
        ({"model": "x"}, ["llm.model is used only with", "ollama.model"]),
        (
            {"provider": "openai", "base_url": "127.0.0.1:8080", "model": "m"},
            ["llm.base_url '127.0.0.1:8080' is not an http:// or https:// URL"],
        ),
        (
            {
                "provider": "openai",
                "base_url": "http://h/v1",
                "model": "m",
                "api_key_env": "sk-abc123456",
            },
            ["must name an environment variable", "keep it out of this file"],
        ),
        ({"provider": "anthropic"}, ["'llm.provider'", "'ollama'", "'openai'"]),
        ({"base_ur": "x"}, ["did you mean 'llm.base_url'"]),
    ],
)
def test_llm_section_errors_name_the_key_and_the_fix(
    llm: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(json.dumps({"llm": llm}), source="dispatch_config.json")
    message = str(caught.value)
    assert message.startswith("dispatch_config.json")
    for fragment in fragments:
        assert fragment in message
    assert "sk-abc123456" not in message
