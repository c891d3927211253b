"""The state files of localdispatch: one lock helper, one JSON document type, one atomic write.

Every shared file (the task store, state.json, pending_merges.json, the suggestions journal)
is written by :func:`write_atomic`: to a temporary file beside the target (``os.replace`` is
atomic only within one file system), flushed to disk, then moved over the target, so a crash
at any instant leaves either the old or the new file and a reader never needs a lock.

Every lock is a :class:`StateLock`: a ``filelock`` lock, which the operating system releases
when its holder dies (a crashed process never leaves a lock behind), and the one place where
filelock's ``Timeout`` becomes :class:`~localdispatch.errors.LockBusy`.

Every JSON state file is a :class:`JsonDocument`: an object with a ``"version"``. A file that
cannot be used (not UTF-8, not JSON, not an object, a version this program does not know) is an
error naming the file and where it went wrong, and the file is never overwritten: it may hold
the only record of work in flight, and a person can repair it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from localdispatch.errors import DispatchError, LockBusy, StoreError

# Long enough to wait behind any read-modify-write of another process (they take
# milliseconds); a lock held longer than this belongs to a stuck process, worth reporting.
LOCK_TIMEOUT_SECS = 60.0
UNTOUCHED = "The file was left untouched; localdispatch will not overwrite it."


class StateLock:
    """A file lock that only one process (and one thread) holds at a time.

    ``hold()`` waits up to ``timeout`` seconds and raises LockBusy naming the lock file and
    ``what`` it guards; ``attempt()`` waits up to its own timeout (none by default) and
    yields whether it got the lock, for the callers that decide for themselves what a busy
    lock means (the merge slot, the one-dispatcher lock, a probe).
    """

    def __init__(
        self,
        path: Path,
        *,
        what: str,
        timeout: float = LOCK_TIMEOUT_SECS,
        holder: str = "Another localdispatch process",
    ) -> None:
        self.path = Path(path)
        self.what = what
        self.timeout = timeout
        self.holder = holder

    @contextmanager
    def hold(self, timeout: float | None = None) -> Iterator[None]:
        """Hold the lock for the block; LockBusy if it stays busy for ``timeout`` seconds
        (default: the lock's own; negative: wait for ever)."""
        wait = self.timeout if timeout is None else timeout
        lock = self._acquire(wait)
        if lock is None:
            raise self.busy(wait)
        try:
            yield
        finally:
            lock.release()

    @contextmanager
    def attempt(self, timeout: float = 0.0) -> Iterator[bool]:
        """Yield True holding the lock for the block, or False if it stayed busy."""
        lock = self._acquire(timeout)
        try:
            yield lock is not None
        finally:
            if lock is not None:
                lock.release()

    def busy(self, waited: float) -> LockBusy:
        """The error of a lock that stayed busy for ``waited`` seconds."""
        return LockBusy(
            f"Timed out after {_seconds(waited)} s waiting for the lock on {self.what}.",
            hint=f"{self.holder} holds {self.path}; if none is running, delete that lock file.",
            path=self.path,
        )

    def _acquire(self, timeout: float) -> FileLock | None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A FileLock of its own for every hold, so it excludes every other hold, even one
        # nested in the same thread: that waits and fails loudly instead of being let in,
        # where the outer read-modify-write would silently overwrite the inner one.
        lock = FileLock(str(self.path))
        try:
            lock.acquire(timeout=timeout)
        except Timeout:
            return None
        return lock


class JsonDocument:
    """One JSON state file: an object with a ``"version"``, always replaced whole.

    - ``read()``: the object (``{}`` when the file does not exist); no lock is needed, since
      the file is only ever replaced atomically.
    - ``edit()``: read under ``lock_path``, let the caller change the dict, write it back.
    - ``write()``: for a caller that already holds the lock guarding the file (state.json is
      written only by the holder of the dispatcher lock, the ingest journal under the
      ingest lock); such documents have no ``lock_path`` of their own.

    A file without ``"version"`` is the oldest format and is read; one with a version above
    ``version`` (written by a newer localdispatch) or one that is not a version number is
    refused. Errors are ``error`` (a StoreError unless the caller's family differs), say
    ``kind`` and the path, and end with ``advice`` (what the file holds, what deleting it
    loses) and the promise that the file was left as it is.
    """

    def __init__(
        self,
        path: Path,
        lock_path: Path | None = None,
        *,
        version: int,
        kind: str,
        advice: str = "",
        error: type[DispatchError] = StoreError,
        lock_timeout: float = LOCK_TIMEOUT_SECS,
        blank_is_empty: bool = True,
        reader: Callable[[Path], bytes] = Path.read_bytes,
    ) -> None:
        self.path = Path(path)
        self.version = version
        self.kind = kind
        self.advice = advice
        self.error = error
        self.blank_is_empty = blank_is_empty
        self.lock = (
            StateLock(Path(lock_path), what=f"{kind} {self.path}", timeout=lock_timeout)
            if lock_path is not None
            else None
        )
        self._reader = reader

    # -- reading ---------------------------------------------------------------------------
    def read(self) -> dict[str, Any]:
        """The document; ``{}`` if the file does not exist (or is blank, if that is allowed)."""
        try:
            raw = self._reader(self.path)
        except FileNotFoundError:
            return {}
        except OSError as exc:
            raise self.error(
                f"Cannot read {self.kind} {self.path}: {exc}.",
                hint="Check its permissions; nothing was changed.",
                path=self.path,
            ) from exc
        return self.parse(raw)

    def parse(self, raw: bytes) -> dict[str, Any]:
        """The document held by the bytes ``raw`` of the file, checked (see the class)."""
        data = self.decode(raw)
        if data is None:
            if self.blank_is_empty:
                return {}
            raise self.corrupt("it is empty")
        if not isinstance(data, dict):
            raise self.corrupt(f"it holds {_json_kind(data)}, not an object")
        version = data.get("version")
        if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
            raise self.corrupt(
                f'its "version" is {json.dumps(version)}, not a number',
                f'Set "version" to {self.version}.',
            )
        newer = self.newer_version(data)
        if newer is not None:
            raise self.too_new(newer)
        if version is not None and version < 1:
            raise self.corrupt(f'its "version" is {version}', f'Set "version" to {self.version}.')
        return data

    def decode(self, raw: bytes) -> Any:
        """The JSON value of ``raw`` (None for a blank file), or the error naming the file
        and where it went wrong. A UTF-8 byte order mark, as Windows editors add, is fine."""
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise self.corrupt(f"not UTF-8 text (byte {exc.start})") from exc
        if not text.strip():
            return None
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise self.corrupt(
                f"invalid JSON at line {exc.lineno}, column {exc.colno}",
                "Fix the syntax there, or restore the file from a copy.",
            ) from exc
        except RecursionError as exc:  # brackets nested thousands deep
            raise self.corrupt(
                "the file is nested thousands of levels deep",
                "Remove the nested lists or objects by hand, or restore the file from a copy.",
            ) from exc
        except ValueError as exc:  # an integer of thousands of digits
            raise self.corrupt(
                "it holds a number with thousands of digits", "Fix that number by hand."
            ) from exc

    def newer_version(self, data: Mapping[str, Any]) -> int | None:
        """The version of ``data`` if it is a number above the one this program writes."""
        version = data.get("version")
        if isinstance(version, int) and not isinstance(version, bool) and version > self.version:
            return version
        return None

    # -- writing ---------------------------------------------------------------------------
    @contextmanager
    def edit(self) -> Iterator[dict[str, Any]]:
        """Read the document under its lock, let the caller change it, and write it back
        (not if the block raises). LockBusy if the lock stays busy."""
        if self.lock is None:
            raise TypeError(f"{self.path} has no lock of its own; its lock holder uses write()")
        with self.lock.hold():
            data = self.read()
            yield data
            self.write(data)

    def write(self, data: Mapping[str, Any]) -> None:
        """Replace the file with ``data`` and this program's ``"version"``, atomically."""
        document = {"version": self.version, **{k: v for k, v in data.items() if k != "version"}}
        payload = json.dumps(document, indent=1, ensure_ascii=False) + "\n"
        write_atomic(self.path, payload.encode("utf-8"))

    # -- errors ----------------------------------------------------------------------------
    def corrupt(self, what: str, fix: str = "", task_id: str | None = None) -> DispatchError:
        """The error of a file that cannot be used: ``what`` is wrong, ``fix`` says how."""
        hint = " ".join(part for part in (fix, self.advice, UNTOUCHED) if part)
        return self.error(
            f"{_capital(self.kind)} {self.path} is corrupt: {what}.",
            hint=hint,
            path=self.path,
            task_id=task_id,
        )

    def too_new(self, version: int) -> DispatchError:
        """The error of a file written by a newer localdispatch (format ``version``)."""
        return self.error(
            f"{_capital(self.kind)} {self.path} was written by a newer localdispatch (format "
            f"version {version}; this one reads up to {self.version}).",
            hint=" ".join(
                part
                for part in ("Run that newer localdispatch here.", self.advice, UNTOUCHED)
                if part
            ),
            path=self.path,
        )


def write_atomic(path: Path, payload: bytes) -> None:
    """Replace ``path`` with ``payload`` all at once. The temporary file is named
    ``<name>.<random>.tmp`` so the ignore pattern ``<name>.*`` covers it too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        replace_with_retry(Path(tmp_name), path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def replace_with_retry(source: Path, target: Path, attempts: int = 50) -> None:
    """os.replace, retried while Windows reports the target as in use by a reader."""
    for attempt in range(attempts):
        try:
            source.replace(target)
            return
        except PermissionError:
            # On Windows a file another process has open cannot be replaced; readers hold it
            # for milliseconds, so waiting a little is enough.
            if attempt == attempts - 1:
                raise
            time.sleep(0.02 * (attempt + 1))


def _seconds(value: float) -> str:
    return f"{value:.0f}" if value >= 1 else f"{value:.2g}"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


def _json_kind(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    return "null"
