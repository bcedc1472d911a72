"""What ``desk up`` starts ends with it, or is found and ended by the next ``desk up``.

Two mechanisms, because one is not enough. On Linux a child asks the kernel to SIGTERM it when
the thread that started it dies (:func:`die_with_parent`): a ``kill -9`` of ``desk up``, a closed
terminal or the OOM killer then takes the children along. Where that is unavailable, or the
signal did not end the child, a :class:`PidFile` beside the data lets the next ``desk up`` find
the process it left behind and end it — only if the pid still names *that* process (same start
time, same command line) and the ``desk up`` that started it is gone: never a stranger's
process, never one a running ``desk up`` still uses.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from shared.logging import get_logger

log = get_logger(__name__)

_PR_SET_PDEATHSIG = 1
# Looked up here, in the parent: the child between fork and exec only calls it (loading a
# library there could deadlock on a lock another thread of the parent held at the fork).
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """``preexec_fn`` of a child: SIGTERM it when its parent dies (Linux; elsewhere a no-op).

    The kernel sends it when the *thread* that forked the child ends, so start such children
    from a thread that lives as long as the parent (the main thread, the event loop's).
    """
    if _prctl is not None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class StillInUse(RuntimeError):
    """The process a pid file names belongs to a ``desk up`` that is still running."""


@dataclass(frozen=True)
class PidFile:
    """Names a process this program started, and this program, so a later run can tell a
    leftover from a stranger (a reused pid) and from a sibling's process still in use."""

    path: Path

    def record(self, pid: int) -> None:
        content = {"process": _identity(pid), "owner": _identity(os.getpid())}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(content))
        os.replace(tmp, self.path)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def end_leftover(self, timeout: float = 10.0) -> int | None:
        """End the process named here if a previous owner left it behind; return its pid.

        Raises :class:`StillInUse` when its owner still runs (the file is then kept).
        """
        try:
            content: dict[str, Any] = json.loads(self.path.read_text())
            process, owner = content["process"], content["owner"]
        except (OSError, ValueError, KeyError, TypeError):
            self.clear()
            return None
        leftover = _same_process(process)
        if leftover is None:
            self.clear()
            return None
        if _same_process(owner) is not None:
            raise StillInUse(
                f"process {process['pid']} ({self.path.name}) belongs to a running program, "
                f"pid {owner['pid']}"
            )
        log.warning(
            "ending a process a killed desk up left behind",
            pid=leftover.pid,
            command=" ".join(process["cmdline"])[:200],
        )
        leftover.terminate()
        try:
            leftover.wait(timeout)
        except psutil.TimeoutExpired:
            leftover.kill()
            leftover.wait(timeout)
        self.clear()
        return int(process["pid"])


def _identity(pid: int) -> dict[str, Any]:
    """What tells this process from a later one with its pid. Read just after it was started,
    its command line can still be empty (the kernel has not finished its ``exec``): recorded so,
    a later start would take the process for a stranger and leave it running. So an empty one is
    read again, for a moment."""
    process = psutil.Process(pid)
    cmdline, deadline = process.cmdline(), time.monotonic() + _EXEC_SETTLES_WITHIN
    while not cmdline and time.monotonic() < deadline:
        time.sleep(0.005)
        cmdline = process.cmdline()
    return {"pid": pid, "create_time": process.create_time(), "cmdline": cmdline}


_EXEC_SETTLES_WITHIN = 2.0


def _same_process(identity: dict[str, Any]) -> psutil.Process | None:
    """The running process ``identity`` describes, or None if that pid is gone or now names
    another process."""
    try:
        process = psutil.Process(int(identity["pid"]))
        same = (
            abs(process.create_time() - float(identity["create_time"])) < 0.01
            and process.cmdline() == identity["cmdline"]
            and process.status() != psutil.STATUS_ZOMBIE
        )
    except (psutil.Error, KeyError, TypeError, ValueError):
        return None
    return process if same else None
