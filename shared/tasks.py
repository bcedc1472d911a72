"""Background tasks, supervised: the relay, the dead-letter publisher, the purge of processed
ids, and every worker a service adds (timers, deliveries, gauges).

A task that raises — anything: a lost database session, a ``KafkaError`` after a broker outage,
a bug — is not left dead while the process looks alive. It is run again after a backoff
(``task_restart_backoff``, doubling up to ``task_restart_backoff_max``), and while it is down
``/ready`` names it, ``desk_task_up{service,task}`` is 0 and a log line says why. A restarted
task counts as up again once it has run as long as the pause before it without failing, so one
that fails at once stays down. A task that returns has finished and is no longer watched.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from shared.logging import get_logger
from shared.metrics import TASK_RESTARTS, TASK_UP
from shared.scheduling import backoff

log = get_logger(__name__)


class BackgroundTasks:
    """The supervised tasks of one service process."""

    def __init__(self, service: str, first_delay: timedelta, longest_delay: timedelta) -> None:
        self.service = service
        self.first_delay = first_delay
        self.longest_delay = longest_delay
        self._up: dict[str, bool] = {}
        self._running: list[asyncio.Task[None]] = []

    @property
    def health(self) -> dict[str, bool]:
        """Task name -> running (not failed, or recovered since)."""
        return dict(self._up)

    def start(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        self._set(name, up=True)
        task = asyncio.create_task(self._supervise(name, run), name=f"{self.service} {name}")
        self._running.append(task)

    async def stop(self, within: float | None = None) -> None:
        """Cancel every task and wait ``within`` seconds at most for them to end. A task stuck
        in its cancellation (asyncpg cancelling a query on a server that does not answer) is
        left behind, named, so the rest of the stop still runs."""
        running, self._running = self._running, []
        if not running:
            return
        for task in running:
            task.cancel()
        done, pending = await asyncio.wait(running, timeout=within)
        for task in done:
            if not task.cancelled():
                task.exception()  # retrieved: its failure was logged when it happened
        if pending:
            log.warning(
                "background tasks did not stop in time; left behind",
                tasks=sorted(t.get_name() for t in pending),
                after_s=within,
            )

    async def _supervise(self, name: str, run: Callable[[], Awaitable[None]]) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        recovered: asyncio.TimerHandle | None = None
        while True:
            started = loop.time()
            try:
                await run()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if recovered is not None:
                    recovered.cancel()
                if loop.time() - started > self.longest_delay.total_seconds():
                    failures = 0  # it ran well for a long while: start the backoff afresh
                failures += 1
                delay = backoff(failures, self.first_delay, self.longest_delay).total_seconds()
                self._set(name, up=False)
                TASK_RESTARTS.labels(self.service, name).inc()
                log.error(
                    "background task failed; restarting it",
                    task=name,
                    error=f"{type(error).__name__}: {error}",
                    failures=failures,
                    retry_in_s=round(delay, 3),
                    exc_info=True,
                )
                await asyncio.sleep(delay)
                recovered = loop.call_later(delay, self._set, name, True)
            else:
                log.info("background task finished", task=name)
                self._up.pop(name, None)
                TASK_UP.labels(self.service, name).set(0)
                return

    def _set(self, name: str, up: bool) -> None:
        self._up[name] = up
        TASK_UP.labels(self.service, name).set(1 if up else 0)
