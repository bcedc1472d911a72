"""Live changes for the people watching: ``GET /api/stream`` (server-sent events).

One worker per console process listens for the journal's announcements (``NOTIFY`` on commit,
:func:`services.console.feeds.announce`), reads the changed tickets once and hands each watcher
those it may see — and tells it of a ticket that moved out of its sight (``ticket_left``: a
transfer to another group, a specialist group's answer), which it would otherwise keep showing
as it last was. A watcher that cannot keep up is told to reload (``resync``) instead of growing
a queue without bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from prometheus_client import Gauge

from services.console import listing
from services.console.feeds import CHANGES
from services.console.visibility import Viewer
from shared.database import connect
from shared.logging import get_logger
from shared.service import Service

log = get_logger(__name__)
WATCHERS = Gauge("desk_console_stream_watchers", "People watching the live stream now.")
KEEPALIVE_S = 15.0
RETRY_CHECK_S = 2.0
"""How soon a caller's check that could not be made (the database away) is tried again."""


class CannotCheck(Exception):
    """A stream's caller could not be checked (not: was refused): the stream holds its changes
    back until a check succeeds, and does not sign the person out."""


BACKLOG = 1000


class Change(NamedTuple):
    event: str
    data: dict[str, Any]
    asked: str | None = None
    """A ticket's: the group its specialist request waits on, which sees it too (not sent)."""


@dataclass(eq=False)
class Watcher:
    viewer: Viewer
    queue: asyncio.Queue[Change] = field(default_factory=lambda: asyncio.Queue(BACKLOG))

    def offer(self, event: str, data: dict[str, Any], asked: str | None = None) -> None:
        try:
            self.queue.put_nowait(Change(event, data, asked))
        except asyncio.QueueFull:
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(Change("resync", {}))


class ChangeStream:
    """Fans changes out to the watchers of this process, at most ``per_caller`` streams of
    one person at a time (each holds a queue of up to :data:`BACKLOG` changes)."""

    def __init__(self, per_caller: int = 8) -> None:
        self.watchers: set[Watcher] = set()
        self.per_caller = per_caller

    def admits(self, viewer: Viewer) -> bool:
        """Whether ``viewer`` may open one more stream."""
        held = sum(1 for w in self.watchers if w.viewer.subject == viewer.subject)
        return held < self.per_caller

    async def follow(self, service: Service) -> None:
        """The worker: listen, read what changed, hand it out; until cancelled. Raises once
        its connection is lost (a restart of PostgreSQL, a failover, an idle session killed):
        asyncpg then stops calling the listener without an error, so the worker would wait
        for good while ``/ready`` said all was well. Its supervisor starts it again, and every
        watcher is told to reload: what changed while nobody listened is not known."""
        notices: asyncio.Queue[str | None] = asyncio.Queue()
        conn = await connect(
            service.database_url or service.settings.require_database_url(), schema=service.schema
        )

        def heard(*args: Any) -> None:
            notices.put_nowait(args[3])

        try:
            conn.add_termination_listener(lambda _: notices.put_nowait(None))
            await conn.add_listener(CHANGES, heard)
            self._resync()
            while True:
                ids: set[str] = set()
                left: dict[str, set[tuple[str, str | None]]] = {}
                board = False
                notice: str | None = await notices.get()
                while True:  # a burst: one read for all of it
                    if notice is None:
                        raise ConnectionError("the stream's listening connection was lost")
                    payload = json.loads(notice)
                    ids.update(payload.get("tickets", ()))
                    for ticket, places in payload.get("left", {}).items():
                        left.setdefault(ticket, set()).update((g, a) for g, a in places)
                    board = board or bool(payload.get("board"))
                    if notices.empty():
                        break
                    notice = notices.get_nowait()
                await self._hand_out(service, sorted(ids), board, left)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close(timeout=2))

    def _resync(self) -> None:
        for watcher in list(self.watchers):
            watcher.offer("resync", {})

    async def _hand_out(
        self,
        service: Service,
        ids: list[str],
        board: bool,
        left: dict[str, set[tuple[str, str | None]]],
    ) -> None:
        if not self.watchers:
            return
        async with service.pool.acquire() as conn:
            changed = await listing.summaries(conn, ids) if ids else []
        for watcher in list(self.watchers):
            viewer = watcher.viewer
            for ticket, asked in changed:
                if viewer.sees_ticket(ticket.group_id, ticket.agent_id, asked):
                    watcher.offer("ticket", ticket.model_dump(mode="json"), asked)
                elif any(viewer.sees_ticket(g, a) for g, a in left.get(ticket.ticket_id, ())):
                    gone = {"ticket_id": ticket.ticket_id, "number": ticket.number}
                    watcher.offer("ticket_left", gone)
            if board:
                watcher.offer("board", {})

    async def events(
        self,
        viewer: Viewer,
        closing: asyncio.Event,
        gone: Callable[[], Any],
        *,
        recheck: Callable[[], Awaitable[Viewer | None]],
        every: float,
    ) -> AsyncIterator[bytes]:
        """The SSE body of one watcher, until the client leaves, the service closes, or
        ``recheck`` (every ``every`` seconds) no longer lets the caller in: a token outlived by
        its stream would keep showing tickets to whoever held it. A check that cannot be made
        (:class:`CannotCheck`) shows nothing more until one can (tried every few seconds), then
        ``resync``: a database restart does not sign every open desk out."""
        if not self.admits(viewer):  # opened together with others since the route asked
            yield b"event: too_many_streams\ndata: {}\n\n"
            return
        watcher = Watcher(viewer)
        self.watchers.add(watcher)
        WATCHERS.inc()
        clock = asyncio.get_running_loop().time
        due_at = clock() + every
        unchecked = False  # a check could not be made: changes held back until one is
        try:
            yield b"retry: 2000\n\n"
            while not closing.is_set():
                item = await _next(watcher, closing, max(0.0, min(KEEPALIVE_S, due_at - clock())))
                if clock() >= due_at:
                    try:
                        still = await recheck()
                    except CannotCheck:
                        unchecked, due_at = True, clock() + min(every, RETRY_CHECK_S)
                    else:
                        if still is None:
                            yield b"event: signed_out\ndata: {}\n\n"
                            return
                        watcher.viewer = still  # their groups as the directory says now
                        due_at = clock() + every
                        if unchecked:  # what was held back is gone: the desk reloads
                            unchecked = False
                            yield b"event: resync\ndata: {}\n\n"
                if item is None or unchecked:
                    if closing.is_set() or await gone():
                        return
                    if item is None:
                        yield b": keepalive\n\n"
                    continue
                event, data, asked = item
                if event == "ticket" and not _sees(watcher.viewer, data, asked):
                    continue  # offered under the groups the caller had before the check
                yield f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()
        finally:
            self.watchers.discard(watcher)
            WATCHERS.dec()


async def _next(watcher: Watcher, closing: asyncio.Event, within: float) -> Change | None:
    """The watcher's next change; None when the service closes or nothing came ``within``
    seconds."""
    getting = asyncio.ensure_future(watcher.queue.get())
    stopping = asyncio.ensure_future(closing.wait())
    try:
        await asyncio.wait({getting, stopping}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in (getting, stopping):
            if not waiting.done():
                waiting.cancel()
    if getting.done() and not getting.cancelled():
        return getting.result()
    return None


def _sees(viewer: Viewer, ticket: dict[str, Any], asked: str | None) -> bool:
    return viewer.sees_ticket(ticket.get("group_id"), ticket.get("agent_id"), asked)
