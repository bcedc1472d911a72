"""A stop that ends: the stop signal arms a deadline inside the grace, and a service still
stopping when it passes says what it was waiting on and exits at once.

Why: a graceful stop waits on the broker (consumers leaving their groups, the producer's flush)
and on PostgreSQL (the pool's connections coming back), and the libraries bound none of those
waits. Once, in CI, every service was still alive a minute after SIGTERM, with nothing in the
output to say why. An orchestrator would SIGKILL at its own timeout, silently; exiting here first
leaves the tasks it was waiting on in the log. Exiting early is a crash, which the claims and the
relay's checkpoint already make harmless: what was not recorded is done again.

A thread, not the event loop, keeps the deadline: a loop blocked in a write or a busy handler
must not be able to hold it off.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import threading

from shared.logging import get_logger

log = get_logger(__name__)

EXIT_CODE = 70
"""The exit status of a stop cut short (``EX_SOFTWARE``): a supervisor starts the service again."""

EXIT_MARGIN = 0.1
"""Share of the grace left for the exit itself: the process is gone within the grace."""


class StopDeadline:
    """Armed by the first stop signal; a later one changes nothing."""

    def __init__(self, service: str, grace: float) -> None:
        self.service = service
        self.seconds = grace * (1 - EXIT_MARGIN)
        self._timer: threading.Timer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def arm(self) -> None:
        """Called from the signal handler, on the loop's thread."""
        if self._timer is not None:
            return
        try:
            self._loop = asyncio.get_running_loop()
        except RuntimeError:
            self._loop = None
        self._timer = threading.Timer(self.seconds, self._overran)
        self._timer.daemon = True
        self._timer.start()

    def _overran(self) -> None:
        # The last word must not hold the exit: stderr may be a pipe nobody drains any more.
        last_word = threading.Timer(self.seconds * EXIT_MARGIN / 2, os._exit, [EXIT_CODE])
        last_word.daemon = True
        last_word.start()
        log.error(
            "stop overran its deadline; exiting now",
            service=self.service,
            deadline_s=round(self.seconds, 2),
            waiting_on=waiting_on(self._loop),
        )
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(EXIT_CODE)


def waiting_on(loop: asyncio.AbstractEventLoop | None, most: int = 40) -> list[str]:
    """The loop's tasks, each with the innermost lines it waits at (read from another thread:
    a best effort, good enough for a last word)."""
    if loop is None:
        return []
    try:
        tasks = list(asyncio.all_tasks(loop))
    except RuntimeError:
        return ["(the task list changed while read)"]
    tasks.sort(key=lambda t: t.get_name().startswith("Task-"))  # the service's own, named, first
    lines = []
    for task in tasks[:most]:
        try:
            frames = task.get_stack()
        except Exception:
            frames = []
        where = " < ".join(
            f"{os.path.basename(f.f_code.co_filename)}:{f.f_lineno} {f.f_code.co_name}"
            for f in reversed(frames[-3:])
        )
        lines.append(f"{task.get_name()}: {where or 'not started'}")
    return lines
