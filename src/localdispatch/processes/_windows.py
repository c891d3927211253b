"""Holding a tree on Windows: one Job Object per tree, through ctypes (no pywin32).

The root starts suspended (``CREATE_SUSPENDED``, with ``CREATE_NEW_PROCESS_GROUP`` so the
console's Ctrl+C stays the dispatcher's to handle), joins a new Job Object that has
``JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE``, and only then runs: everything it ever starts is born
in the job, and breakaway is not allowed. Ending the tree is ``TerminateJobObject`` and
closing the handle. The dispatcher holds the only handle, so if it dies Windows closes the
handle and the job's members die with it.

``subprocess`` closes the primary thread's handle right after ``CreateProcess``, so the
process is resumed with ``NtResumeProcess`` (ntdll), which takes a process handle.
What escapes: a process started for the worker by a service (Task Scheduler, WMI, a COM
server) is not in its tree. Should the job not be made (an old Windows that forbids nested
jobs), the tree runs anyway and is held by the tree walk and the marker, as on macOS.

This module imports on every OS; only its calls need Windows.
"""

from __future__ import annotations

import ctypes
import logging
import subprocess
import sys
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

CREATE_SUSPENDED = 0x00000004
CREATE_NEW_PROCESS_GROUP = 0x00000200
JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE = 0x00002000
JOB_OBJECT_EXTENDED_LIMIT_INFORMATION = 9  # the JOBOBJECTINFOCLASS value
# PROCESS_TERMINATE | PROCESS_SET_QUOTA (both needed to join a job) | PROCESS_SUSPEND_RESUME
_PROCESS_ACCESS = 0x0001 | 0x0100 | 0x0800
_KILLED_EXIT_CODE = 1


class BasicLimits(ctypes.Structure):
    """JOBOBJECT_BASIC_LIMIT_INFORMATION."""

    _fields_ = [
        ("PerProcessUserTimeLimit", ctypes.c_int64),
        ("PerJobUserTimeLimit", ctypes.c_int64),
        ("LimitFlags", ctypes.c_uint32),
        ("MinimumWorkingSetSize", ctypes.c_size_t),
        ("MaximumWorkingSetSize", ctypes.c_size_t),
        ("ActiveProcessLimit", ctypes.c_uint32),
        ("Affinity", ctypes.c_size_t),
        ("PriorityClass", ctypes.c_uint32),
        ("SchedulingClass", ctypes.c_uint32),
    ]


class IoCounters(ctypes.Structure):
    """IO_COUNTERS."""

    _fields_ = [
        (name, ctypes.c_uint64)
        for name in ("Read", "Write", "Other", "ReadBytes", "WriteBytes", "OtherBytes")
    ]


class ExtendedLimits(ctypes.Structure):
    """JOBOBJECT_EXTENDED_LIMIT_INFORMATION (144 bytes on 64-bit Windows)."""

    _fields_ = [
        ("BasicLimitInformation", BasicLimits),
        ("IoInfo", IoCounters),
        ("ProcessMemoryLimit", ctypes.c_size_t),
        ("JobMemoryLimit", ctypes.c_size_t),
        ("PeakProcessMemoryUsed", ctypes.c_size_t),
        ("PeakJobMemoryUsed", ctypes.c_size_t),
    ]


class _Win32:
    """The kernel32 and ntdll functions used here, with their argument and result types."""

    create_job: Callable[..., Any]
    set_job_info: Callable[..., Any]
    open_process: Callable[..., Any]
    assign: Callable[..., Any]
    terminate_job: Callable[..., Any]
    close_handle: Callable[..., Any]
    resume: Callable[..., Any]

    def __init__(self) -> None:
        if sys.platform != "win32":
            raise OSError("Job Objects exist only on Windows")
        from ctypes import wintypes

        kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
        ntdll = ctypes.WinDLL("ntdll")
        handle, dword, bool_ = wintypes.HANDLE, wintypes.DWORD, wintypes.BOOL
        self.create_job = kernel32.CreateJobObjectW
        self.create_job.argtypes = [wintypes.LPVOID, wintypes.LPCWSTR]
        self.create_job.restype = handle
        self.set_job_info = kernel32.SetInformationJobObject
        self.set_job_info.argtypes = [handle, ctypes.c_int, wintypes.LPVOID, dword]
        self.set_job_info.restype = bool_
        self.open_process = kernel32.OpenProcess
        self.open_process.argtypes = [dword, bool_, dword]
        self.open_process.restype = handle
        self.assign = kernel32.AssignProcessToJobObject
        self.assign.argtypes = [handle, handle]
        self.assign.restype = bool_
        self.terminate_job = kernel32.TerminateJobObject
        self.terminate_job.argtypes = [handle, wintypes.UINT]
        self.terminate_job.restype = bool_
        self.close_handle = kernel32.CloseHandle
        self.close_handle.argtypes = [handle]
        self.close_handle.restype = bool_
        self.resume = ntdll.NtResumeProcess
        self.resume.argtypes = [handle]
        self.resume.restype = ctypes.c_long  # NTSTATUS: 0 is success

    def error(self, what: str) -> OSError:
        if sys.platform != "win32":
            return OSError(what)
        return ctypes.WinError(ctypes.get_last_error(), what)


class WindowsBackend:
    """Each tree in a Job Object that kills its members when closed."""

    def __init__(self) -> None:
        self._win32: _Win32 | None = None

    @property
    def adopts_orphans(self) -> bool:
        return False  # Windows re-parents nobody; the job holds them instead

    def prepare(self) -> None:
        return None

    def tree_kwargs(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        flags = int(kwargs.get("creationflags", 0))
        kwargs["creationflags"] = flags | CREATE_NEW_PROCESS_GROUP | CREATE_SUSPENDED
        return kwargs

    def contain(self, popen: subprocess.Popen[Any]) -> object | None:
        """Put the suspended root in a new job, then let it run; the job's handle, or None."""
        api = self._api()
        process = api.open_process(_PROCESS_ACCESS, False, popen.pid)
        if not process:
            raise api.error(f"cannot open process {popen.pid} to start it")
        try:
            job = self._new_job(api)
            if job is not None and not api.assign(job, process):
                log.warning(
                    "process %s could not join a Job Object (%s); only the process tree "
                    "and its marker will find what it leaves behind",
                    popen.pid,
                    api.error("AssignProcessToJobObject"),
                )
                api.close_handle(job)
                job = None
            status = api.resume(process)
            if status != 0:
                if job is not None:
                    api.close_handle(job)  # kills the process with it
                raise OSError(f"NtResumeProcess({popen.pid}) failed: 0x{status & 0xFFFFFFFF:08x}")
            return job
        finally:
            api.close_handle(process)

    def close(self, container: object) -> None:
        if not isinstance(container, int):  # contain() returns a handle or None
            return
        api = self._api()
        job = container
        if not api.terminate_job(job, _KILLED_EXIT_CODE):
            log.debug("TerminateJobObject: %s", api.error("TerminateJobObject"))
        api.close_handle(job)  # kill-on-close takes anything that raced the terminate

    def child_pids(self) -> list[int] | None:
        return None

    def foreign_session(self, pid: int) -> bool:
        return False

    def reap(self, pid: int) -> None:
        return None

    def _api(self) -> _Win32:
        if self._win32 is None:
            self._win32 = _Win32()
        return self._win32

    @staticmethod
    def _new_job(api: _Win32) -> int | None:
        job = api.create_job(None, None)
        if not job:
            log.warning("cannot create a Job Object: %s", api.error("CreateJobObjectW"))
            return None
        info = ExtendedLimits()
        info.BasicLimitInformation.LimitFlags = JOB_OBJECT_LIMIT_KILL_ON_JOB_CLOSE
        if not api.set_job_info(
            job, JOB_OBJECT_EXTENDED_LIMIT_INFORMATION, ctypes.byref(info), ctypes.sizeof(info)
        ):
            log.warning("cannot set up a Job Object: %s", api.error("SetInformationJobObject"))
            api.close_handle(job)
            return None
        return int(job)
