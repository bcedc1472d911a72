"""What operators' tools read of sla's tables: ``desk sla report``, ``desk sla what-if`` and
the running clocks ``desk policy diff`` lists."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import cast

from services.policy import Policy
from services.policy.sla import Metric, SlaPolicy, choose
from services.sla.clocks import SlaClock
from services.sla.replay import Lifecycle, replay
from services.sla.report import Compliance, SlaReport, build_report
from services.sla.storage import tickets
from services.sla.timekeeper import ClockFacts
from services.sla.whatif import Outcome, WhatIf, compare
from shared.database import Connection
from shared.events import EVENTS
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

Histories = Callable[[Sequence[str]], Awaitable[dict[str, list[RecordedEvent]]]]
"""Reads the lifecycle events of some tickets (dispatch's ``queries.ticket_histories``)."""
CHUNK = 2_000
"""Tickets replayed per round trip."""


async def _ready(conn: Connection) -> bool:
    return await conn.fetchval("SELECT to_regclass('sla.clocks')") is not None


async def now(conn: Connection, *, driven: bool = False) -> datetime:
    """sla's clock as the service reads it (``DESK_CLOCK=driven``: its ``desk_clock`` row)."""
    sql = (
        "SELECT coalesce((SELECT value FROM sla.desk_clock LIMIT 1), clock_timestamp())"
        if driven and await _ready(conn)
        else "SELECT clock_timestamp()"
    )
    found: datetime = await conn.fetchval(sql)
    return found


async def report(conn: Connection, since: datetime) -> SlaReport | None:
    """Compliance, mean times and tickets at risk since ``since``; None before sla created its
    tables (``desk migrate sla``)."""
    if not await _ready(conn):
        return None
    async with conn.transaction():
        await conn.execute("SET LOCAL search_path = sla")
        return await build_report(conn, since)


async def what_if(
    conn: Connection,
    proposed: Policy,
    version: str,
    *,
    since: datetime,
    until: datetime,
    histories: Histories,
) -> WhatIf | None:
    """Compliance since ``since`` had ``proposed`` been in force: every ticket that can have an
    outcome in the window (open, or active since) replayed from its lifecycle events through
    the live rules; nothing is written. The actual figures are ``desk sla report``'s."""
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
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            rows = await conn.fetch(
                "SELECT state FROM clocks WHERE ticket_id = ANY($1::uuid[])", chunk
            )
            for row in rows:
                outcome = Outcome.of(SlaClock.model_validate_json(row[0]))
                actual[(outcome.ticket_id, outcome.metric)] = outcome
            for events in (await histories(chunk)).values():
                history = [_lifecycle(e) for e in events]
                for clock in replay(proposed.sla, version, history, until):
                    proposal[(clock.ticket_id, clock.metric)] = Outcome.of(clock)
        result.tickets = len(ids)
    result.clocks = len(proposal)
    result.comparison, result.changes = compare(figures, actual, proposal, since)
    result.seconds = time.perf_counter() - began
    return result


def _lifecycle(recorded: RecordedEvent) -> Lifecycle:
    data = json.loads(recorded.raw)["data"]
    return Lifecycle(EVENTS.decode(recorded.type, data), recorded.time, str(recorded.id))


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
