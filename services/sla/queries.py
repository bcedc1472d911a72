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
from services.sla.replay import Stored, outcomes
from services.sla.report import Compliance, SlaReport, build_report
from services.sla.storage import tickets
from services.sla.timekeeper import TIMED, ClockFacts, clock_id
from services.sla.whatif import Change, Outcome, WhatIf, change, compare
from shared.clock import service_now
from shared.database import Connection
from shared.eventstore import RecordedEvent

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

Histories = Callable[[Sequence[str], Sequence[str]], Awaitable[dict[str, list[RecordedEvent]]]]
"""Reads the lifecycle events of some tickets, of some types (dispatch's
``queries.ticket_histories``)."""
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
    histories: Histories,
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
    actual: dict[tuple[str, str], Outcome] = {}
    proposal: dict[tuple[str, str], Outcome] = {}
    async with conn.transaction(isolation="repeatable_read", readonly=True):
        await conn.execute("SET LOCAL search_path = sla")
        figures = (await build_report(conn, since)).compliance
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
                for outcome in await _outcomes(conn, part):
                    actual[(outcome.ticket_id, outcome.metric)] = outcome
                found = await histories(part, TIMED_TYPES)
                stories = [
                    [(e.type, e.time, str(e.id), e.data_json) for e in events]
                    for events in found.values()
                ]
                await replays.submit(proposed.sla, version, stories, until)
            for outcome in await replays.all():
                proposal[(outcome.ticket_id, outcome.metric)] = outcome
        result.tickets = len(ids)
        result.clocks = len(proposal)
        result.comparison, changed = compare(figures, actual, proposal, since)
        result.changes = await _explained(conn, changed, actual, proposal, since)
    result.seconds = time.perf_counter() - began
    return result


class _Replays:
    """Chunks of tickets replayed in worker processes while the next chunk is read, or here
    when one process is all there is (or all it takes)."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: list[asyncio.Future[list[Outcome]]] = []
        self._done: list[Outcome] = []

    async def __aenter__(self) -> _Replays:
        if self.workers > 1:
            context = multiprocessing.get_context("spawn")  # no fork of a process with a loop
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    async def submit(
        self, policy: SlaPolicy | None, version: str, stories: list[list[Stored]], until: datetime
    ) -> None:
        if self._pool is None:
            self._done += outcomes(policy, version, stories, until)
            return
        loop = asyncio.get_running_loop()
        job = loop.run_in_executor(self._pool, outcomes, policy, version, stories, until)
        self._pending.append(job)
        if len(self._pending) > 2 * self.workers:  # bounded: memory stays flat
            self._done += await self._pending.pop(0)

    async def all(self) -> list[Outcome]:
        for job in self._pending:
            self._done += await job
        self._pending.clear()
        return self._done


async def _outcomes(conn: Connection, ticket_ids: Sequence[str]) -> list[Outcome]:
    """How the tickets' clocks count now, from the projection's columns (their terms are read
    only for the clocks a proposal changes: :func:`_explained`)."""
    rows = await conn.fetch(
        "SELECT ticket_id::text, number, metric, group_id, status, met_at, breached_at, elapsed_s "
        "FROM clocks WHERE ticket_id = ANY($1::uuid[])",
        ticket_ids,
    )
    return [Outcome.counting(**dict(row)) for row in rows]


async def _explained(
    conn: Connection,
    changed: list[tuple[str, str]],
    actual: dict[tuple[str, str], Outcome],
    proposal: dict[tuple[str, str], Outcome],
    since: datetime,
) -> list[Change]:
    """The changes, each with why: the actual clocks' terms come from their stored state."""
    rows = await conn.fetch(
        "SELECT state FROM clocks WHERE clock_id = ANY($1::text[])",
        [clock_id(ticket, metric) for ticket, metric in changed],
    )
    for row in rows:
        clock = SlaClock.model_validate_json(row[0])
        actual[(clock.ticket_id, clock.metric)] = Outcome.of(clock)
    return [change(actual.get(key), proposal.get(key), since) for key in changed]


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
