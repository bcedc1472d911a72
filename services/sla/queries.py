"""What operators' tools read of sla's tables: ``desk sla report``, ``desk sla what-if`` and
the running clocks ``desk policy diff`` lists."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from services.policy import Policy
from services.policy.sla import DEFAULT_SATISFACTION, Metric, SatisfactionPolicy, SlaPolicy, choose
from services.sla.clocks import SlaClock
from services.sla.replay import Chunk, Stored, replayed
from services.sla.report import Compliance, SlaReport, build_report
from services.sla.storage import tickets
from services.sla.timekeeper import TIMED, ClockFacts, clock_id
from services.sla.whatif import (
    Change,
    Counted,
    Key,
    Outcome,
    Tally,
    Verdict,
    WhatIf,
    change,
    compare,
    stored_count,
)
from shared.clock import service_now
from shared.database import Connection

__all__ = [
    "Compliance",
    "RunningClocks",
    "SlaReport",
    "WhatIf",
    "now",
    "report",
    "running_clocks",
    "what_if",
]

Stories = Callable[[Sequence[str], Sequence[str]], Awaitable[dict[str, list[Stored]]]]
"""Reads the lifecycle events of some tickets, of some types, as stored (dispatch's
``queries.ticket_stories``)."""
TIMED_TYPES = [kind.event_type() for kind in TIMED]
CHUNK = 2_000
"""Tickets replayed per round trip."""


async def _ready(conn: Connection) -> bool:
    """Whether sla has created its tables, up to the newest a report reads (its migration 003)."""
    return await conn.fetchval("SELECT to_regclass('sla.satisfaction')") is not None


async def now(conn: Connection, *, driven: bool = False) -> datetime:
    """sla's clock as the service reads it (``DESK_CLOCK=driven``: its ``desk_clock`` row)."""
    return await service_now(conn, "sla", driven=driven)


async def report(
    conn: Connection, since: datetime, satisfaction: SatisfactionPolicy = DEFAULT_SATISFACTION
) -> SlaReport | None:
    """Compliance, mean times, tickets at risk and CSAT since ``since``; None before sla created
    its tables (``desk migrate sla``)."""
    if not await _ready(conn):
        return None
    async with conn.transaction():
        await conn.execute("SET LOCAL search_path = sla")
        return await build_report(conn, since, satisfaction=satisfaction)


async def what_if(
    conn: Connection,
    proposed: Policy,
    version: str,
    *,
    since: datetime,
    until: datetime,
    stories: Stories,
    workers: int | None = None,
    chunk: int = CHUNK,
) -> WhatIf | None:
    """Compliance since ``since`` had ``proposed`` been in force: every ticket that can have an
    outcome in the window (open, or active since) replayed from its lifecycle events through
    the live rules; nothing is written. The actual figures are ``desk sla report``'s.

    Tickets are read ``chunk`` at a time; beyond one chunk they are replayed in ``workers``
    processes (default: one per core) while the next chunk is read.
    """
    if not await _ready(conn):
        return None
    began = time.perf_counter()
    result = WhatIf(since, until, version)
    tally = Tally(since)
    changed: list[tuple[Key, Outcome | None]] = []
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL search_path = sla")
        # What-if replays each clock to its last run: the actual side counts the same way.
        figures = (await build_report(conn, since, every_run=False)).compliance
        ids = [
            row[0]
            for row in await conn.fetch(
                "SELECT ticket_id::text FROM tickets "
                "WHERE NOT closed OR coalesce(updated_at, 'infinity') >= $1 ORDER BY received_at",
                since,
            )
        ]
        parallel = (workers or os.cpu_count() or 1) if len(ids) > chunk else 1
        async with _Replays(parallel) as replays:
            for start in range(0, len(ids), chunk):
                part = ids[start : start + chunk]
                actual = await _counting(conn, part, since)
                found = await stories(part, TIMED_TYPES)
                await replays.submit(
                    Chunk(proposed.sla, version, list(found.values()), until, since, actual)
                )
            for verdict in await replays.all():
                result.clocks += verdict.clocks
                tally.merge(verdict.tally)
                changed += verdict.changed
        result.tickets = len(ids)
        result.comparison = compare(figures, tally)
        result.changes = await _explained(conn, changed, since)
    result.seconds = time.perf_counter() - began
    return result


class _Replays:
    """Chunks of tickets replayed in worker processes while the next chunk is read, or here
    when one process is all there is (or all it takes)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[asyncio.Future[Verdict]] = []
        self._done: list[Verdict] = []

    async def __aenter__(self) -> _Replays:
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")  # no fork of a process with a loop
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    async def submit(self, chunk: Chunk) -> None:
        if self._pool is None:
            self._done.append(replayed(chunk))
            return
        loop = asyncio.get_running_loop()
        self._pending.append(loop.run_in_executor(self._pool, replayed, chunk))
        if len(self._pending) > 2 * self.workers:  # bounded: memory stays flat
            self._done.append(await self._pending.pop(0))

    async def all(self) -> list[Verdict]:
        for job in self._pending:
            self._done.append(await job)
        self._pending.clear()
        return self._done


async def _counting(
    conn: Connection, ticket_ids: Sequence[str], since: datetime
) -> dict[Key, Counted]:
    """How the tickets' clocks count since ``since`` now, from the projection's columns (those
    that count; their terms are read only for the clocks a proposal changes:
    :func:`_explained`)."""
    rows = await conn.fetch(
        "SELECT ticket_id::text, metric, status, met_at, breached_at FROM clocks "
        "WHERE ticket_id = ANY($1::uuid[]) AND coalesce(met_at, breached_at) >= $2",
        ticket_ids,
        since,
    )
    found: dict[Key, Counted] = {}
    for ticket_id, metric, status, met_at, breached_at in rows:
        counted = stored_count(status, met_at, breached_at, since)
        if counted is not None:
            found[(ticket_id, metric)] = counted
    return found


async def _explained(
    conn: Connection, changed: list[tuple[Key, Outcome | None]], since: datetime
) -> list[Change]:
    """The changes in ticket order, each with why: the actual clocks' terms come from their
    stored state."""
    rows = await conn.fetch(
        "SELECT state FROM clocks WHERE clock_id = ANY($1::text[])",
        [clock_id(ticket, metric) for (ticket, metric), _ in changed],
    )
    actual: dict[Key, Outcome] = {}
    for row in rows:
        clock = SlaClock.model_validate_json(row[0])
        actual[(clock.ticket_id, clock.metric)] = Outcome.of(clock)
    pairs = [(actual.get(key), after) for key, after in changed]
    pairs.sort(key=lambda pair: _order(*pair))
    return [change(before, after, since) for before, after in pairs]


def _order(before: Outcome | None, after: Outcome | None) -> tuple[str, str]:
    some = before or after
    assert some is not None, "a change has a clock on one side at least"
    return some.number, some.metric


@dataclass(frozen=True)
class RunningClocks:
    """Clocks of one metric that run now (paused ones too), and how many of them the proposed
    policy would start with other terms. Those keep their own: a clock keeps the terms it
    started with, a new policy applies to clocks started after it."""

    metric: str
    running: int
    other_terms: int


async def running_clocks(conn: Connection, proposed: SlaPolicy | None) -> list[RunningClocks]:
    if not await _ready(conn):
        return []
    rows = await conn.fetch(
        "SELECT state FROM sla.clocks WHERE status IN ('running', 'paused', 'breached')"
    )
    clocks = [SlaClock.model_validate_json(row[0]) for row in rows]
    async with conn.transaction():
        await conn.execute("SET LOCAL search_path = sla")
        facts = await tickets(conn, [c.ticket_id for c in clocks])
    running: Counter[str] = Counter()
    other: Counter[str] = Counter()
    for clock in clocks:
        running[clock.metric] += 1
        other[clock.metric] += _other_terms(clock, proposed, facts.get(clock.ticket_id))
    return [RunningClocks(m, running[m], other[m]) for m in sorted(running)]


def _other_terms(clock: SlaClock, proposed: SlaPolicy | None, facts: ClockFacts | None) -> bool:
    chosen = choose(proposed, cast(Metric, clock.metric), facts) if proposed and facts else None
    if proposed is None or chosen is None:
        return True
    rule = chosen[1]
    ladder = [(s.level, s.after.total_seconds()) for s in proposed.escalation]
    return (
        clock.target_s != rule.target.total_seconds()
        or clock.calendar_version != proposed.calendars[rule.calendar].version
        or clock.warnings != proposed.warnings
        or [(s.level, s.after_s) for s in clock.ladder] != ladder
    )
