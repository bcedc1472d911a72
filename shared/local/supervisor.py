"""Runs the services as child processes for ``desk up``: start, show their logs, restart, stop.

Each child gets its own process group, so the terminal's Ctrl-C reaches only ``desk up``, which
then stops the services in order (SIGTERM, a grace period, SIGKILL) before the infrastructure.
On Linux a child also asks the kernel to SIGTERM it if ``desk up`` itself dies, so no service is
left behind even when ``desk up`` is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console
from rich.text import Text

from shared.local.lifetime import die_with_parent
from shared.logging import get_logger

log = get_logger(__name__)

_LINE_LIMIT = 1024 * 1024
"""Longest log line shown whole (a traceback with its chained causes fits)."""

_RAN_WELL_S = 60.0
"""A child that ran this long before exiting starts its restart pauses afresh."""

_COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red")
_LEVEL_STYLE = {
    "debug": "dim",
    "info": "",
    "warning": "yellow",
    "error": "bold red",
    "critical": "bold red",
}


@dataclass
class Child:
    name: str
    argv: Sequence[str]
    env: dict[str, str]
    colour: str
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    pumps: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


class Supervisor:
    """Keeps a set of child processes running until told to stop."""

    def __init__(self, console: Console | None = None, *, raw_logs: bool = False) -> None:
        self.console = console or Console(stderr=True, highlight=False, soft_wrap=True)
        self.raw_logs = raw_logs
        self.children: dict[str, Child] = {}
        self._stopping = False
        self._watchers: list[asyncio.Task[None]] = []
        self.on_change: Callable[[], None] = lambda: None

    async def start(self, name: str, argv: Sequence[str], env: dict[str, str]) -> Child:
        child = Child(name, argv, env, _COLOURS[len(self.children) % len(_COLOURS)])
        self.children[name] = child
        await self._spawn(child)
        self._watchers.append(asyncio.create_task(self._watch(child), name=f"watch {name}"))
        return child

    async def _spawn(self, child: Child) -> None:
        child.process = await asyncio.create_subprocess_exec(
            *child.argv,
            env={**os.environ, **child.env},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=_LINE_LIMIT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        assert child.process.stdout is not None
        assert child.process.stderr is not None
        child.pumps = [
            asyncio.create_task(self._pump(child, child.process.stdout)),
            asyncio.create_task(self._pump(child, child.process.stderr)),
        ]
        self.on_change()

    async def _watch(self, child: Child) -> None:
        """Restart a child that exits on its own, with a pause that grows while it keeps
        failing and starts afresh once it has run a while. A restart that cannot even start the
        process (no memory to fork, a file gone) is tried again the same way, never the end of
        the watch: a service left down for good while ``desk up`` looks fine is the worst case.
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        while True:
            if child.process is not None:
                code = await child.process.wait()
                await asyncio.gather(*child.pumps, return_exceptions=True)
                said = f"exited with code {code}"
            else:
                said = "could not be started"
            if self._stopping:
                return
            if loop.time() - started > _RAN_WELL_S:
                child.restarts = 0
            child.restarts += 1
            delay = min(30.0, 0.5 * 2 ** min(child.restarts, 6))
            self._say(child, f"{said}; restarting in {delay:.1f}s", "warning")
            await asyncio.sleep(delay)
            if self.stopping:
                return
            started = loop.time()
            try:
                await self._spawn(child)
            except OSError as error:
                child.process = None
                self._say(child, f"cannot start: {error}", "error")

    @property
    def stopping(self) -> bool:
        return self._stopping

    async def _pump(self, child: Child, stream: asyncio.StreamReader) -> None:
        """Show the child's lines for as long as it writes. Nothing ends this early: a pump that
        stopped would leave the child blocked on a full pipe at its next log line, the whole
        service frozen while it looks alive."""
        while True:
            try:
                line = await stream.readline()
            except ValueError:  # over the reader's limit: its head is gone, its tail follows
                self._show(child, f"(a log line of more than {_LINE_LIMIT} bytes was cut)")
                continue
            if not line:
                return
            try:
                self._show(child, line.decode("utf-8", "replace").rstrip())
            except Exception:
                log.exception("cannot show a child's log line", child=child.name)

    def _show(self, child: Child, line: str) -> None:
        if self.raw_logs:
            self.console.print(Text(line), markup=False)
            return
        try:
            record: Any = json.loads(line)
        except ValueError:
            self._say(child, line, "info")
            return
        if not isinstance(record, dict):
            self._say(child, line, "info")
            return
        level = str(record.pop("level", "info"))
        message = str(record.pop("event", ""))
        record.pop("service", None)
        record.pop("logger", None)
        stamp = str(record.pop("timestamp", ""))[11:19]
        extras = " ".join(f"{k}={v}" for k, v in record.items() if k != "exception")
        self._say(child, f"{stamp} {message} {extras}".strip(), level)
        if "exception" in record:
            self.console.print(Text(str(record["exception"]), style="red"))

    def _say(self, child: Child, text: str, level: str) -> None:
        line = Text(f"{child.name:>8} │ ", style=child.colour)
        line.append(text, style=_LEVEL_STYLE.get(level, ""))
        self.console.print(line)

    async def stop(self, grace: float) -> None:
        """SIGTERM every child, wait up to ``grace`` seconds, SIGKILL the rest."""
        self._stopping = True
        for child in self.children.values():
            _signal_group(child, signal.SIGTERM)
        waits = [c.process.wait() for c in self.children.values() if c.process]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), grace)
        except TimeoutError:
            for child in self.children.values():
                if child.process and child.process.returncode is None:
                    self._say(child, "did not stop in time; killing", "warning")
                    _signal_group(child, signal.SIGKILL)
            await asyncio.gather(*waits, return_exceptions=True)
        for watcher in self._watchers:
            watcher.cancel()
        await asyncio.gather(*self._watchers, return_exceptions=True)
        for child in self.children.values():
            await asyncio.gather(*child.pumps, return_exceptions=True)


def _signal_group(child: Child, sig: signal.Signals) -> None:
    if child.process is None or child.process.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(child.process.pid, sig)
