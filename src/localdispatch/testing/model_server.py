"""A scripted stand-in for an Ollama server (and an OpenAI-compatible one) on 127.0.0.1.

It is a real HTTP server, so the real ``ollama`` client, httpx and Aider talk to it exactly as
they would to Ollama: ``/api/chat`` (NDJSON streaming or one JSON answer), ``/api/tags``,
``/api/version``, ``/api/show``, ``/api/ps``, ``GET /``, and the OpenAI protocol's
``/v1/chat/completions`` (one JSON answer or server-sent events) and ``/v1/models``. A model
it does not hold gets the 404 Ollama sends. Chat answers come from a queue of scripted replies;
every request is recorded for assertions.

A reply to Aider can be written once, in no edit format, and the stub writes it in the one
Aider's system prompt asks for (whole file, SEARCH/REPLACE, fenced SEARCH/REPLACE, unified
diff, or V4A patch), so a test need not know which ``--edit-format`` localdispatch chose:

    AiderReply([FileEdit("hello.py", '    return "hello"\n', '    return "hi"\n')])

    with ModelServer(['{"subtasks": []}'], models=["qwen2.5-coder:7b"]) as server:
        ... point ollama.host (or $OLLAMA_HOST) at server.url ...
        assert server.chat_requests[0].body["format"]["type"] == "object"

It listens on 127.0.0.1 only and on a port the system picks, so tests can run side by side.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

LOOPBACK = "127.0.0.1"
OLLAMA_VERSION = "0.6.5"


@dataclass
class ScriptedReply:
    """One answer to a chat request, with the ways a real server can misbehave."""

    text: str = ""
    delay_secs: float = 0.0  # wait before answering (to trigger client timeouts)
    status: int = 200  # anything else answers {"error": error} with this status
    error: str = ""
    done_reason: str = "stop"  # "length" tells the client the model hit its limit
    cut_stream: bool = False  # streaming: drop the connection half-way through


Reply = str | ScriptedReply | Callable[[dict[str, Any]], "str | ScriptedReply"]


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    body: Any
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def messages(self) -> list[dict[str, Any]]:
        """The chat messages of a chat request (empty for other requests)."""
        if isinstance(self.body, dict) and isinstance(self.body.get("messages"), list):
            return list(self.body["messages"])
        return []


def _full_name(model: str) -> str:
    # Ollama treats "llama3" and "llama3:latest" as the same model.
    return model if ":" in model else model + ":latest"


class ModelServer:
    """A real HTTP server that answers chat requests from a script. Use it as a context manager.

    ``replies`` are consumed one per chat request, in order; a callable receives the request
    body and returns the reply. When they run out, ``default_reply`` answers (if given),
    otherwise the request fails with HTTP 500 so a test sees that it asked too often.
    ``delay_secs`` delays every chat answer. ``models`` are the models the server holds.
    """

    def __init__(
        self,
        replies: Iterable[Reply] = (),
        *,
        models: Iterable[str] = ("qwen2.5-coder:7b",),
        default_reply: Reply | None = None,
        delay_secs: float = 0.0,
        chunk_chars: int = 24,
    ) -> None:
        self.models = [_full_name(m) for m in models]
        self.default_reply = default_reply
        self.delay_secs = delay_secs
        self.chunk_chars = max(1, chunk_chars)
        self._replies: deque[Reply] = deque(replies)
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> ModelServer:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        httpd = _Server((LOOPBACK, 0), _Handler)
        httpd.owner = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        # Wake handlers that are sleeping through a scripted delay so shutdown is immediate.
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- what tests use --------------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the model server is not running; call start() first")
        return int(self._httpd.server_address[1])

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``, the value for ollama.host or $OLLAMA_HOST."""
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def openai_url(self) -> str:
        """The base URL an OpenAI client wants (``.../v1``)."""
        return self.url + "/v1"

    def add_replies(self, *replies: Reply) -> None:
        with self._lock:
            self._replies.extend(replies)

    @property
    def pending(self) -> int:
        """Scripted replies not used yet."""
        with self._lock:
            return len(self._replies)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.path in ("/api/chat", "/v1/chat/completions")]

    # -- used by the handler ---------------------------------------------------------------
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_reply(self, body: dict[str, Any]) -> ScriptedReply:
        with self._lock:
            reply = self._replies.popleft() if self._replies else self.default_reply
        if reply is None:
            return ScriptedReply(status=500, error="model server stub: no scripted reply left")
        if callable(reply):
            reply = reply(body)
        return reply if isinstance(reply, ScriptedReply) else ScriptedReply(text=reply)

    def _holds(self, model: str) -> bool:
        return _full_name(model) in self.models

    def _wait(self, seconds: float) -> bool:
        """Sleep; False if the server is stopping (the handler should give up)."""
        return not self._stopping.wait(seconds) if seconds > 0 else True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ModelServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that time out hang up on a handler that is still writing; that is expected.
        return None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None  # keep test output clean

    @property
    def owner(self) -> ModelServer:
        return self.server.owner

    # -- dispatch --------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._send(200, b"", "text/plain; charset=utf-8")

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        self.close_connection = True
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        self.owner._record(RecordedRequest(method, path, body, dict(self.headers.items())))
        routes: dict[tuple[str, str], Callable[[Any], None]] = {
            ("GET", "/"): lambda _b: self._send(200, b"Ollama is running", "text/plain"),
            ("GET", "/api/version"): lambda _b: self._json(200, {"version": OLLAMA_VERSION}),
            ("GET", "/api/tags"): lambda _b: self._json(200, {"models": self._model_list()}),
            ("GET", "/api/ps"): lambda _b: self._json(200, {"models": []}),
            ("POST", "/api/show"): self._show,
            ("POST", "/api/chat"): self._ollama_chat,
            ("GET", "/v1/models"): lambda _b: self._json(200, self._openai_models()),
            ("POST", "/v1/chat/completions"): self._openai_chat,
        }
        route = routes.get((method, path))
        if route is None:
            self._json(404, {"error": f"404 page not found: {path}"})
            return
        route(body if isinstance(body, dict) else {})

    def _read_body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            return raw.decode("utf-8", "replace")

    # -- Ollama ----------------------------------------------------------------------------
    def _model_list(self) -> list[dict[str, Any]]:
        return [
            {
                "name": name,
                "model": name,
                "modified_at": "2025-01-01T00:00:00Z",
                "size": 4_683_087_332,
                "digest": "0" * 64,
                "details": {"format": "gguf", "family": "qwen2", "parameter_size": "7.6B"},
            }
            for name in self.owner.models
        ]

    def _show(self, body: dict[str, Any]) -> None:
        model = str(body.get("model") or body.get("name") or "")
        if not self.owner._holds(model):
            self._json(404, {"error": f"model '{model}' not found"})
            return
        self._json(
            200,
            {
                "modelfile": f"FROM {model}",
                "parameters": "temperature 0",
                "template": "{{ .Prompt }}",
                "details": {"format": "gguf", "family": "qwen2", "parameter_size": "7.6B"},
                "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 32768},
                "capabilities": ["completion", "tools"],
            },
        )

    def _ollama_chat(self, body: dict[str, Any]) -> None:
        model = str(body.get("model") or "")
        if not self.owner._holds(model):
            self._json(404, {"error": f"model '{model}' not found"})
            return
        reply = self._scripted(body)
        if reply is None:
            return
        if reply.status != 200:
            self._json(reply.status, {"error": reply.error or "scripted failure"})
            return
        counts = {"prompt_eval_count": _tokens(body), "eval_count": len(reply.text) // 4 + 1}
        if body.get("stream", True) is False:
            self._json(
                200,
                {
                    "model": model,
                    "created_at": _now(),
                    "message": {"role": "assistant", "content": reply.text},
                    "done": True,
                    "done_reason": reply.done_reason,
                    "total_duration": 1_000_000,
                    **counts,
                },
            )
            return
        self._start_stream("application/x-ndjson")
        for piece in self._pieces(reply):
            line = {"model": model, "created_at": _now(), "done": False}
            line["message"] = {"role": "assistant", "content": piece}
            self._chunk(json.dumps(line).encode("utf-8") + b"\n")
        if reply.cut_stream:
            return  # no final chunk, no terminating chunk: the client sees a broken body
        final = {
            "model": model,
            "created_at": _now(),
            "message": {"role": "assistant", "content": ""},
            "done": True,
            "done_reason": reply.done_reason,
            "total_duration": 1_000_000,
            **counts,
        }
        self._chunk(json.dumps(final).encode("utf-8") + b"\n")
        self._end_stream()

    # -- OpenAI-compatible -----------------------------------------------------------------
    def _openai_models(self) -> dict[str, Any]:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "library"}
            for name in self.owner.models
        ]
        return {"object": "list", "data": data}

    def _openai_chat(self, body: dict[str, Any]) -> None:
        model = str(body.get("model") or "")
        if not self.owner._holds(model):
            message = f'model "{model}" not found, try pulling it first'
            self._json(404, {"error": {"message": message, "type": "api_error"}})
            return
        reply = self._scripted(body)
        if reply is None:
            return
        if reply.status != 200:
            error = {"message": reply.error or "scripted failure", "type": "api_error"}
            self._json(reply.status, {"error": error})
            return
        finish = "length" if reply.done_reason == "length" else "stop"
        base = {"id": "chatcmpl-stub", "created": int(time.time()), "model": model}
        if not body.get("stream"):
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": reply.text},
                "finish_reason": finish,
            }
            usage = {"prompt_tokens": _tokens(body), "completion_tokens": len(reply.text) // 4}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            self._json(
                200, {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            )
            return
        self._start_stream("text/event-stream")
        chunk_base = {**base, "object": "chat.completion.chunk"}
        deltas = [{"role": "assistant", "content": ""}]
        deltas += [{"content": piece} for piece in self._pieces(reply)]
        for delta in deltas:
            choice = {"index": 0, "delta": delta, "finish_reason": None}
            self._event({**chunk_base, "choices": [choice]})
        if reply.cut_stream:
            return
        self._event({**chunk_base, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
        self._chunk(b"data: [DONE]\n\n")
        self._end_stream()

    # -- helpers ---------------------------------------------------------------------------
    def _scripted(self, body: dict[str, Any]) -> ScriptedReply | None:
        """The next reply, after its delay; None if the server stopped while waiting."""
        reply = self.owner._next_reply(body)
        if not self.owner._wait(self.owner.delay_secs + reply.delay_secs):
            return None
        return reply

    def _pieces(self, reply: ScriptedReply) -> list[str]:
        size = self.owner.chunk_chars
        text = reply.text
        pieces = [text[i : i + size] for i in range(0, len(text), size)] or [""]
        return pieces[: max(1, len(pieces) // 2)] if reply.cut_stream else pieces

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode("utf-8"), "application/json; charset=utf-8")

    def _send(self, status: int, payload: bytes, content_type: str) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        except OSError:
            pass  # the client hung up (it timed out); nothing to tell it

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()

    def _event(self, data: dict[str, Any]) -> None:
        self._chunk(b"data: " + json.dumps(data).encode("utf-8") + b"\n\n")

    def _chunk(self, data: bytes) -> None:
        try:
            self.wfile.write(f"{len(data):X}\r\n".encode("ascii") + data + b"\r\n")
            self.wfile.flush()
        except OSError:
            pass

    def _end_stream(self) -> None:
        try:
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            pass


def _tokens(body: dict[str, Any]) -> int:
    messages = body.get("messages") or []
    chars = sum(len(str(m.get("content", ""))) for m in messages if isinstance(m, dict))
    return chars // 4 + 1


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (for "server is down" tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def plan_reply(*subtasks: dict[str, Any], wrap: str = "subtasks") -> str:
    """A splitter reply as a model would write it; each subtask gets empty defaults."""
    filled = [
        {
            "title": task.get("title", f"Subtask {i}"),
            "description": task.get("description", ""),
            "files": task.get("files", []),
            "depends_on": task.get("depends_on", []),
            "acceptance_criteria": task.get("acceptance_criteria", []),
            **{k: v for k, v in task.items() if k not in ("title", "description", "files")},
        }
        for i, task in enumerate(subtasks, start=1)
    ]
    return json.dumps({wrap: filled}, indent=2)


# ---- answering Aider in the edit format it asked for ----------------------------------------
# Aider (0.86) tells the model its edit format in the system prompt; these are phrases of each
# format's prompt (aider/coders/*_prompts.py), checked in this order.
EditFormat = Literal["whole", "diff", "diff-fenced", "udiff", "patch", "architect"]
_FORMAT_MARKERS: tuple[tuple[str, EditFormat], ...] = (
    ("*** Begin Patch", "patch"),  # patch_prompts: the V4A format
    ("`diff -U0`", "udiff"),  # udiff_prompts and udiff_simple_prompts
    ("1. The opening fence and code language", "diff-fenced"),  # editblock_fenced_prompts
    ("*SEARCH/REPLACE block*", "diff"),  # editblock_prompts
    ("*file listing*", "whole"),  # wholefile_prompts
    ("Act as an expert architect engineer", "architect"),  # architect_prompts
)
# Aider's files message (base_prompts.files_content_prefix; the architect's says "so you see").
_FILES_PREFIX = "I have *added these files to the chat*"
# Aider fences file contents with the first of these that no line of the files starts with
# (base_coder.all_fences), and expects the model's reply to use the same one.
_FENCES = (
    ("````", "````"),
    ("```", "```"),
    *((f"<{tag}>", f"</{tag}>") for tag in ("source", "code", "pre", "codeblock", "sourcecode")),
)


@dataclass(frozen=True)
class FileEdit:
    """One change to one file as a model means it, in no edit format yet.

    ``search`` is text the file holds now and ``replace`` what takes its place; an empty
    ``search`` appends ``replace`` to the file, or makes the file if Aider has not got it.
    In whole format, where the reply is the entire file, the file's text is taken from the
    request (Aider sends every file in its chat) and the edit made to it; a ``search`` the
    file does not hold then leaves it as it was, the nearest a whole file comes to an edit
    that does not apply.
    """

    path: str
    search: str = ""
    replace: str = ""


def edit_format_of(body: dict[str, Any]) -> EditFormat | None:
    """The edit format Aider's request asks for, from its system prompt; None if not Aider's."""
    messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
    system = [m for m in messages if m.get("role") == "system"]
    # Models that take no system prompt get it as the first user message instead.
    text = "\n".join(_content(m) for m in (system or messages[:1]))
    return next((name for marker, name in _FORMAT_MARKERS if marker in text), None)


def asks_for_commit_message(body: dict[str, Any]) -> bool:
    """True for Aider's request for a commit message (aider/prompts.py commit_system)."""
    messages = body.get("messages") or []
    system = " ".join(
        _content(m) for m in messages if isinstance(m, dict) and m.get("role") == "system"
    )
    return "commit message" in system.lower() and edit_format_of(body) is None


def files_in_chat(body: dict[str, Any]) -> tuple[dict[str, str], tuple[str, str]]:
    """The files Aider sent with the request (the latest text of each) and its fence."""
    files: dict[str, str] = {}
    fence = _FENCES[1]
    for message in body.get("messages") or []:
        if not isinstance(message, dict) or message.get("role") != "user":
            continue
        text = _content(message)
        if not text.startswith(_FILES_PREFIX):
            continue
        lines = text.splitlines(keepends=True)
        index = 0
        while index + 1 < len(lines):
            opening = lines[index + 1].rstrip("\n")
            found = next((f for f in _FENCES if f[0] == opening), None)
            name = lines[index].strip()
            if found is None or not name:
                index += 1
                continue
            fence, body_lines, index = found, [], index + 2
            while index < len(lines) and not lines[index].rstrip("\n").endswith(found[1]):
                body_lines.append(lines[index])
                index += 1
            last = lines[index].rstrip("\n")[: -len(found[1])] if index < len(lines) else ""
            files[name] = "".join(body_lines) + last
            index += 1
    return files, fence


def edit_reply(body: dict[str, Any], edits: Sequence[FileEdit], intro: str = "") -> str:
    """``edits`` written in the edit format ``body`` (Aider's request) asks for.

    Whole format needs each changed file's text, from the request: a file with a ``search``
    that Aider did not send raises ValueError. An unknown format gets whole files.
    """
    style = edit_format_of(body) or "whole"
    files, fence = files_in_chat(body)
    head = intro.rstrip("\n") + "\n\n" if intro.strip() else ""
    if style == "architect":  # the architect only describes; its editor is asked next
        said = [f"In {e.path}, replace {e.search!r} with {e.replace!r}." for e in edits]
        return head + "\n".join(said) + "\n"
    if style in ("diff", "diff-fenced"):
        return head + "".join(_search_replace(e, fence, style == "diff-fenced") for e in edits)
    by_file: dict[str, list[FileEdit]] = {}
    for edit in edits:
        by_file.setdefault(edit.path, []).append(edit)
    if style == "udiff":
        return head + "".join(_unified(path, group, files) for path, group in by_file.items())
    if style == "patch":  # the whole reply is the patch: Aider reads no words around it
        parts = [_v4a(path, group, files) for path, group in by_file.items()]
        return "*** Begin Patch\n" + "".join(parts) + "*** End Patch\n"
    listings = [
        _listing(path, _apply(path, group, files), fence) for path, group in by_file.items()
    ]
    return head + "".join(listings)


@dataclass(frozen=True)
class AiderReply:
    """A reply for Aider: ``edits`` in the edit format each request asks for.

    A callable reply, so it can be queued or be the ``default_reply``; asked for a commit
    message it answers ``commit_message`` instead. Whole format with a ``search`` in a file
    Aider did not send is answered with HTTP 500 naming the file, which shows in Aider's log.
    """

    edits: Sequence[FileEdit]
    intro: str = ""
    commit_message: str = "Make the requested change"

    def __call__(self, body: dict[str, Any]) -> str | ScriptedReply:
        if asks_for_commit_message(body):
            return self.commit_message
        try:
            return edit_reply(body, self.edits, self.intro)
        except ValueError as err:
            return ScriptedReply(status=500, error=f"model server stub: {err}")


def _content(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):  # the OpenAI protocol's content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return str(content or "")


def _ends(text: str) -> str:
    return text if not text or text.endswith("\n") else text + "\n"


def _apply(path: str, edits: Sequence[FileEdit], files: dict[str, str]) -> str:
    if path not in files and any(e.search for e in edits):
        raise ValueError(f"{path} is not in Aider's chat, so its whole text is unknown")
    text = files.get(path, "")
    for edit in edits:
        if not edit.search:
            text = _ends(text) + edit.replace if text else edit.replace
        elif edit.search in text:
            text = text.replace(edit.search, edit.replace, 1)
    return text


def _listing(path: str, text: str, fence: tuple[str, str]) -> str:
    return f"{path}\n{fence[0]}\n{_ends(text)}{fence[1]}\n"


def _search_replace(edit: FileEdit, fence: tuple[str, str], fenced: bool) -> str:
    block = f"<<<<<<< SEARCH\n{_ends(edit.search)}=======\n{_ends(edit.replace)}>>>>>>> REPLACE\n"
    if fenced:  # diff-fenced: the path goes inside the fence
        return f"{fence[0]}\n{edit.path}\n{block}{fence[1]}\n"
    return f"{edit.path}\n{fence[0]}\n{block}{fence[1]}\n"


def _prefixed(text: str, mark: str) -> str:
    return "".join(f"{mark}{line}\n" for line in text.splitlines())


def _unified(path: str, edits: Sequence[FileEdit], files: dict[str, str]) -> str:
    # A new file is a diff from nothing, in diff's own words (the prompt asks for them).
    source = f"--- {path}" if path in files else "--- /dev/null"
    hunks = ["@@ ... @@\n" + _prefixed(e.search, "-") + _prefixed(e.replace, "+") for e in edits]
    return f"```diff\n{source}\n+++ {path}\n" + "".join(hunks) + "```\n"


def _v4a(path: str, edits: Sequence[FileEdit], files: dict[str, str]) -> str:
    if path not in files:
        added = "".join(_prefixed(e.replace, "+") for e in edits)
        return f"*** Add File: {path}\n{added}"
    hunks = []
    for edit in edits:
        # V4A places a hunk by its lines; an append is the whole file followed by the new lines.
        search = edit.search or files[path]
        replace = edit.replace if edit.search else _ends(files[path]) + edit.replace
        hunks.append("@@\n" + _prefixed(search, "-") + _prefixed(replace, "+"))
    return f"*** Update File: {path}\n" + "".join(hunks)
