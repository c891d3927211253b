"""Suggestion files are data, never a door: open only a regular file, reached without
following a link, without blocking, and read a bounded number of bytes.

A worker controls everything in its tree, and the main suggested_tasks.txt is a file that can
be replaced by anything. Reading "the file at this path" naively lets that path choose what is
read: a symlink to a credentials file turns its lines into tasks (and so into branch names and
merge commit messages), a FIFO blocks the reader for ever, a link to /dev/zero never ends.
So every access here:

- walks from a trusted root folder to the file one folder at a time without following a link.
  POSIX: ``openat`` with O_NOFOLLOW|O_DIRECTORY on the fd of the folder above, so a folder
  cannot be swapped for a link between the check and the open. Windows has neither
  O_NOFOLLOW nor ``dir_fd``: ``lstat`` refuses symlinks and junctions on the way, and the
  opened file must be the very file that ``lstat`` saw;
- looks (``lstat``) before it opens, so a FIFO or a device is never opened at all, and opens
  with O_NONBLOCK|O_NOFOLLOW anyway, so one swapped in after the look can neither block nor
  lead elsewhere;
- trusts only ``fstat`` of what it opened: a regular file, or it is refused;
- reads at most ``cap + 1`` bytes, so it knows a file is too large without reading all of it.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from localdispatch.errors import DispatchError

MIB = 1 << 20
# A worker's suggestions are a few lines of ideas; 1 MiB is thousands of them.
WORKER_FILE_CAP = 1 * MIB
# The main file collects every worker's and person's lines between two ingests; the 10,000
# lines of bench/ingest_bench.py are about 1 MiB, so 16 MiB leaves room without letting a
# runaway writer make one ingest hold gigabytes in memory.
MAIN_FILE_CAP = 16 * MIB

IS_WINDOWS = os.name == "nt"
# Windows reparse points that stand for another name (symlinks, junctions, mount points) have
# this bit in their tag; others (OneDrive placeholders, deduplicated files) hold the file's own
# data and are read like any file.
_NAME_SURROGATE = 0x20000000


def _flag(name: str) -> int:
    """An ``os.O_*`` flag, or 0 where the platform does not have it."""
    return int(getattr(os, name, 0))


_SAFE = _flag("O_NOFOLLOW") | _flag("O_NONBLOCK") | _flag("O_NOCTTY") | _flag("O_CLOEXEC")
_READ = os.O_RDONLY | _SAFE | _flag("O_BINARY")
_APPEND = os.O_RDWR | os.O_APPEND | os.O_CREAT | _SAFE | _flag("O_BINARY")
_ROOT = os.O_RDONLY | _flag("O_DIRECTORY") | _flag("O_CLOEXEC")
_FOLDER = _ROOT | _flag("O_NOFOLLOW") | _flag("O_NONBLOCK")
# openat-style walking needs O_NOFOLLOW, O_DIRECTORY and dir_fd for these calls (not Windows).
_WALK = (
    not IS_WINDOWS
    and hasattr(os, "O_NOFOLLOW")
    and hasattr(os, "O_DIRECTORY")
    and {os.open, os.stat, os.readlink, os.unlink} <= os.supports_dir_fd
)


class SuggestionsError(DispatchError):
    """suggested_tasks.txt, a snapshot of it or the ingest journal cannot be read or moved."""


class UnsafeFile(SuggestionsError):
    """A suggestions file that is not a regular file, or lies under a link: refused, untouched.

    ``path`` is the file that was asked for; ``culprit`` the entry that is wrong (the file
    itself, or a folder on the way to it that is a link); ``what`` says what it is, e.g.
    ``"a symlink (to /home/u/.aws/credentials)"`` or ``"a FIFO (named pipe)"``.
    """

    def __init__(
        self,
        path: Path,
        culprit: Path,
        what: str,
        *,
        message: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.culprit, self.what = culprit, what
        super().__init__(
            message
            or f"{path} {self._reason(path, culprit, None)}{self._tail(path, culprit)}; "
            "suggestions are read only from a regular file, so it was left as it is.",
            hint=hint or self._fix(path, culprit),
            path=path,
        )

    def reason(self, base: Path | None = None) -> str:
        """What is wrong, after the file's name: "is a FIFO (named pipe)", or "lies under
        ideas, which is a symlink (to ...)"; folders are shown relative to ``base`` if given."""
        assert self.path is not None
        return self._reason(self.path, self.culprit, base)

    def _reason(self, path: Path, culprit: Path, base: Path | None) -> str:
        if culprit == path:
            return f"is {self.what}"
        return f"lies under {_shown(culprit, base)}, which is {self.what}"

    @staticmethod
    def _tail(path: Path, culprit: Path) -> str:
        # "is a folder, not a file": says plainly why a name that looks like a file is refused
        return ", not a file" if culprit == path else ""

    def _fix(self, path: Path, culprit: Path) -> str:
        if culprit != path:
            return (
                f"Replace {culprit} with a real folder, or point suggested_tasks_file "
                "(or --file) at a file that is not under a link."
            )
        if self.what.startswith("a folder"):
            return (
                "Move the folder away and put a regular text file in its place, or point "
                "suggested_tasks_file (or --file) at one."
            )
        if "link" in self.what:
            return (
                "Replace it with a regular file: delete the link (not what it points to) and "
                "append the lines you want as tasks to a new file of that name."
            )
        return "Delete it and put a regular text file in its place."


class TooLarge(UnsafeFile):
    """A regular suggestions file larger than its cap: refused, left as it is."""

    def __init__(self, path: Path, size: int, cap: int) -> None:
        self.size, self.cap = size, cap
        super().__init__(
            path,
            path,
            f"{size:,} bytes",
            message=f"{path} is {size:,} bytes, more than the {size_text(cap)} a suggestions "
            "file may hold, so it was left as it is.",
            hint="Split it: move some of its lines into other files and ingest each with "
            "--file, or delete the lines that are not tasks.",
        )

    def reason(self, base: Path | None = None) -> str:
        return f"is {self.size:,} bytes, over the {size_text(self.cap)} cap"


def size_text(size: int) -> str:
    """``16 MiB`` for a whole number of MiB, else the bytes."""
    return f"{size // MIB} MiB" if size % MIB == 0 else f"{size:,} bytes"


def _shown(path: Path, base: Path | None) -> str:
    if base is not None:
        try:
            return path.relative_to(base).as_posix()
        except ValueError:
            pass
    return str(path)


def _printable(text: str, limit: int = 200) -> str:
    # A link's target is chosen by whoever made the link; keep it to one harmless line.
    clean = "".join(ch if ch.isprintable() else "?" for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"


def describe(info: os.stat_result, target: Callable[[], str] | None = None) -> str | None:
    """None for a regular file; else what the entry is ("a symlink (to x)", "a folder")."""
    if stat.S_ISLNK(info.st_mode):
        try:
            return f"a symlink (to {_printable(target())})" if target else "a symlink"
        except OSError:
            return "a symlink"
    if getattr(info, "st_reparse_tag", 0) & _NAME_SURROGATE:
        return "a link (a junction or symlink)"
    if stat.S_ISREG(info.st_mode):
        return None
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(info.st_mode):
            return name
    return "a special file"


def _is_folder(info: os.stat_result) -> bool:
    return stat.S_ISDIR(info.st_mode) and describe(info) == "a folder"


def plain_path(path: Path) -> Path:
    """``path`` made absolute with ``.`` and ``..`` folded away, without following any link
    (``resolve`` would ask the file system, and a link would choose the answer)."""
    return Path(os.path.normpath(Path(path).absolute()))


def _target_of(path: Path) -> Callable[[], str]:
    return lambda: str(path.readlink())


def _missing(path: Path) -> FileNotFoundError:
    return FileNotFoundError(2, "No such file or directory", str(path))


# ---- reaching a file without following a link ---------------------------------------------


def _anchor(path: Path, root: Path | None) -> tuple[Path, Path, tuple[str, ...]]:
    """``path`` and ``root`` normalised, and the folder names between them.

    ``..`` is folded away first, so the walk can never climb out of ``root``; a path outside
    ``root`` (or no root) is checked from its own folder: only its last name then.
    """
    path = plain_path(path)
    base = plain_path(root) if root is not None else path.parent
    try:
        parts = path.relative_to(base).parts
    except ValueError:
        base, parts = path.parent, (path.name,)
    if not parts:  # the root itself is not a file inside it
        base, parts = path.parent, (path.name,)
    return path, base, parts[:-1]


@contextmanager
def _folder(path: Path, root: Path | None) -> Iterator[tuple[int | None, str, Path]]:
    """The folder holding ``path``, reached from ``root`` without following a link.

    Yields ``(dir_fd, name, path)``: on POSIX an fd of that folder and the file's name in it;
    on Windows ``None``, after each folder on the way was checked with lstat. Raises
    UnsafeFile for a link on the way, FileNotFoundError when a folder is missing.
    """
    path, base, folders = _anchor(path, root)
    if not _WALK:
        here = base
        for name in folders:
            here = here / name
            info = os.lstat(here)
            if not _is_folder(info):
                if stat.S_ISREG(info.st_mode):
                    raise _missing(path)  # a file where a folder should be: nothing to read
                what = describe(info, _target_of(here))
                raise UnsafeFile(path, here, what or "a special file")
        yield None, path.name, path
        return
    fd = os.open(base, _ROOT)  # the root is ours to trust (it may itself sit under a link)
    try:
        here = base
        for name in folders:
            here = here / name
            try:
                inner = os.open(name, _FOLDER, dir_fd=fd)
            except OSError as exc:
                _explain(path, here, name, fd, exc)
            os.close(fd)
            fd = inner
        yield fd, path.name, path
    finally:
        os.close(fd)


def _explain(path: Path, here: Path, name: str, fd: int, exc: OSError) -> None:
    """Why a folder on the way could not be opened: always raises."""
    try:
        info = os.stat(name, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        raise _missing(path) from exc
    if stat.S_ISREG(info.st_mode):
        raise _missing(path) from exc
    if _is_folder(info):
        raise exc  # a real folder we may not open: the OS error says why
    what = describe(info, lambda: os.readlink(name, dir_fd=fd)) or "a special file"
    raise UnsafeFile(path, here, what) from exc


def _lstat(fd: int | None, name: str, path: Path) -> os.stat_result:
    if fd is None:
        return os.lstat(path)
    return os.stat(name, dir_fd=fd, follow_symlinks=False)


def _refuse_unless_regular(fd: int | None, name: str, path: Path) -> os.stat_result:
    info = _lstat(fd, name, path)
    what = describe(
        info, _target_of(path) if fd is None else (lambda: os.readlink(name, dir_fd=fd))
    )
    if what is not None:
        raise UnsafeFile(path, path, what)
    return info


@contextmanager
def _opened(path: Path, root: Path | None, *, append: bool = False) -> Iterator[int]:
    """A raw fd of the regular file ``path`` (see the module docstring for every check)."""
    with _folder(path, root) as (dir_fd, name, full):
        try:
            seen: os.stat_result | None = _refuse_unless_regular(dir_fd, name, full)
        except FileNotFoundError:
            if not append:
                raise _missing(full) from None
            seen = None  # created below, with O_NOFOLLOW so a link made meanwhile is refused
        flags = _APPEND if append else _READ
        try:
            fd = os.open(name if dir_fd is not None else full, flags, dir_fd=dir_fd)
        except FileNotFoundError:
            raise _missing(full) from None
        except OSError as exc:
            # Swapped for a link (ELOOP), a FIFO without a writer (ENXIO) or such after lstat.
            try:
                _refuse_unless_regular(dir_fd, name, full)
            except FileNotFoundError:
                raise _missing(full) from exc
            raise
        try:
            _check_opened(fd, full, seen)
            yield fd
        finally:
            os.close(fd)


def _check_opened(fd: int, path: Path, seen: os.stat_result | None) -> None:
    info = os.fstat(fd)
    what = describe(info)
    if what is not None:
        raise UnsafeFile(path, path, what)
    if seen is not None and IS_WINDOWS and not _same_file(info, seen):
        # No O_NOFOLLOW: the open may have followed a link made after lstat. Same file or none.
        raise UnsafeFile(path, path, "a file that was replaced while it was being opened")


def _same_file(opened: os.stat_result, seen: os.stat_result) -> bool:
    if not (opened.st_ino and seen.st_ino):
        return True  # a file system without file ids: the lstat check is all there is
    # Newer Pythons may give one call a 128-bit id (ReFS) and the other its 64-bit form.
    low = (1 << 64) - 1
    return opened.st_dev == seen.st_dev and (opened.st_ino & low) == (seen.st_ino & low)


def _read_upto(fd: int, limit: int) -> bytes:
    # Ask for what fstat says is left (+1 to see growth) in one read, not a fixed chunk size:
    # each os.read allocates its full request first.
    expected = max(os.fstat(fd).st_size - os.lseek(fd, 0, os.SEEK_CUR), 0) + 1
    chunks: list[bytes] = []
    while limit > 0:
        chunk = os.read(fd, min(limit, max(expected, 64 * 1024)))
        if not chunk:
            break
        chunks.append(chunk)
        limit -= len(chunk)
    return b"".join(chunks)


# ---- what the rest of the package calls ---------------------------------------------------


def inspect_regular(path: Path, *, root: Path | None = None) -> os.stat_result:
    """lstat of the regular file ``path`` without opening it (a FIFO or device is not even
    opened). Raises FileNotFoundError when it is absent, UnsafeFile when it is not a regular
    file or a folder between ``root`` and it is a link."""
    with _folder(path, root) as (dir_fd, name, full):
        try:
            return _refuse_unless_regular(dir_fd, name, full)
        except FileNotFoundError:
            raise _missing(full) from None


def read_regular(path: Path, *, cap: int, root: Path | None = None) -> bytes:
    """The whole of the regular file ``path``; TooLarge if it holds more than ``cap`` bytes
    (found by reading at most ``cap + 1``). Raises FileNotFoundError or UnsafeFile as
    :func:`inspect_regular` does."""
    with _opened(path, root) as fd:
        data = _read_upto(fd, cap + 1)
        if len(data) > cap:
            raise TooLarge(Path(path), max(os.fstat(fd).st_size, len(data)), cap)
    return data


def read_slice(path: Path, *, offset: int, limit: int, root: Path | None = None) -> bytes:
    """At most ``limit`` bytes of the regular file ``path`` from ``offset`` on."""
    with _opened(path, root) as fd:
        os.lseek(fd, offset, os.SEEK_SET)
        return _read_upto(fd, limit)


def append_regular(path: Path, payload: bytes, *, root: Path | None = None) -> None:
    """Append ``payload`` to the regular file ``path`` (created if absent) in O_APPEND writes,
    starting a new line first if the file ends in an unfinished one. Never writes through a
    link, into a FIFO or a device."""
    try:
        _append(path, payload, root)
    except FileNotFoundError:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        _append(path, payload, root)


def _append(path: Path, payload: bytes, root: Path | None) -> None:
    with _opened(path, root, append=True) as fd:
        if os.fstat(fd).st_size > 0:  # never glue our first line onto an unfinished one
            os.lseek(fd, -1, os.SEEK_END)
            if os.read(fd, 1) != b"\n":
                payload = b"\n" + payload
        view = memoryview(payload)
        while view:
            view = view[os.write(fd, view) :]


def remove_entry(path: Path, *, root: Path) -> None:
    """Remove ``path`` itself, reached from ``root`` without following a link: a link is
    unlinked (never what it points to), a FIFO or device node deleted, a real folder removed
    with what is in it (``shutil.rmtree`` does not follow links inside). Absent is fine."""
    try:
        with _folder(path, root) as (dir_fd, name, full):
            info = _lstat(dir_fd, name, full)
            if _is_folder(info):
                shutil.rmtree(full)
            elif dir_fd is not None:
                os.unlink(name, dir_fd=dir_fd)
            else:
                full.unlink()  # on Windows this removes a junction or folder link itself
    except FileNotFoundError:
        return
