"""sla's tables: ticket facts, the clocks projection, and claiming due timers.

Locking: a consumer batch locks the clock rows of its tickets (``FOR UPDATE``, waiting); the
timer worker claims due rows with ``FOR UPDATE SKIP LOCKED`` (never waiting). So two sla
instances never fire the same timer, a consumer and the worker never decide on the same clock at
once, and nobody waits in a cycle.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from services.dispatch.events import SatisfactionRecorded
from services.sla.clocks import SlaClock, fold
from services.sla.events import ClockStarted
from services.sla.timekeeper import ClockFacts
from shared.database import Connection
from shared.eventstore import RecordedEvent
from shared.projection import Projection

_FACTS = (
    "ticket_id",
    "number",
    "complexity",
    "priority",
    "channel",
    "complaint",
    "major_complaint",
    "received_at",
    "group_id",
    "agent_id",
    "waiting",
    "updated_at",
    "closed",
    "read_version",
)
_FACT_TYPES = (
    "uuid",
    "text",
    "text",
    "text",
    "text",
    "boolean",
    "boolean",
    "timestamptz",
    "text",
    "text",
    "boolean",
    "timestamptz",
    "boolean",
    "integer",
)


async def tickets(conn: Connection, ids: Iterable[str]) -> dict[str, ClockFacts]:
    rows = await conn.fetch(
        f"SELECT ticket_id::text, {', '.join(_FACTS[1:])} FROM tickets "
        "WHERE ticket_id = ANY($1::uuid[])",
        list(set(ids)),
    )
    return {row[0]: ClockFacts(*row) for row in rows}


async def save_tickets(conn: Connection, facts: Sequence[ClockFacts]) -> None:
    if not facts:
        return
    columns = [[getattr(f, name) for f in facts] for name in _FACTS]
    params = ", ".join(f"${n}::{t}[]" for n, t in enumerate(_FACT_TYPES, start=1))
    updates = ", ".join(f"{c} = excluded.{c}" for c in _FACTS[2:])  # all but the ids
    await conn.execute(
        f"INSERT INTO tickets ({', '.join(_FACTS)}) SELECT * FROM unnest({params}) "
        f"ON CONFLICT (ticket_id) DO UPDATE SET {updates}",
        *columns,
    )


@dataclass(frozen=True)
class Score:
    """A customer's survey score, with who answered for the ticket when it was given."""

    rated: SatisfactionRecorded
    group_id: str
    agent_id: str | None
    at: datetime


async def save_scores(conn: Connection, scores: Sequence[Score]) -> None:
    """Keep each ticket's score (dispatch records one per ticket; a replay changes nothing)."""
    if not scores:
        return
    await conn.executemany(
        "INSERT INTO satisfaction (ticket_id, number, group_id, agent_id, score, recorded_at) "
        "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (ticket_id) DO NOTHING",
        [
            (s.rated.ticket_id, s.rated.number, s.group_id, s.agent_id, s.rated.score, s.at)
            for s in scores
        ],
    )


async def lock_clocks(conn: Connection, ticket_ids: Iterable[str]) -> dict[str, SlaClock]:
    """The tickets' clocks, locked until the transaction ends (waits for the timer worker)."""
    rows = await conn.fetch(
        "SELECT state FROM clocks WHERE ticket_id = ANY($1::uuid[]) ORDER BY clock_id FOR UPDATE",
        list(set(ticket_ids)),
    )
    found = [SlaClock.model_validate_json(row[0]) for row in rows]
    return {clock.clock_id: clock for clock in found}


async def note_partitions(conn: Connection, partitions: dict[str, int]) -> None:
    """Remember on which partition each ticket's events arrive (written when it changes)."""
    if not partitions:
        return
    await conn.execute(
        "UPDATE tickets t SET read_partition = p.partition "
        "FROM unnest($1::uuid[], $2::integer[]) AS p(ticket_id, partition) "
        "WHERE t.ticket_id = p.ticket_id AND t.read_partition IS DISTINCT FROM p.partition",
        list(partitions),
        list(partitions.values()),
    )


async def claim_due(
    conn: Connection,
    now: datetime,
    read_until: dict[int, datetime],
    floor: datetime | None,
    limit: int,
) -> list[tuple[SlaClock, datetime]]:
    """Clocks whose timer is due, locked; rows another instance holds are skipped.

    A clock is due only once its ticket's events are read past its due moment (``read_until``
    by partition; a ticket of unknown partition waits for all of them): an unread response
    must fulfil it, not find it breached. Each comes with its ticket's current group and agent
    (they change without clock events), and the moment it may fire up to: its ticket's events
    read past it (a breach due after it waits, though a warning before it fires). ``floor``:
    what every partition is read past (``None`` while one is not read past anything), for a
    ticket whose partition is not known.
    """
    rows = await conn.fetch(
        "SELECT c.state, t.group_id, t.agent_id, r.until FROM clocks c "
        "LEFT JOIN tickets t USING (ticket_id) "
        "CROSS JOIN LATERAL (SELECT CASE WHEN t.read_partition IS NULL THEN $5::timestamptz "
        "ELSE (SELECT m.until FROM unnest($3::integer[], $4::timestamptz[]) "
        "AS m(partition, until) WHERE m.partition = t.read_partition) END AS until) r "
        "WHERE c.due_at <= $1 AND c.due_at <= r.until "
        "ORDER BY c.due_at LIMIT $2 FOR UPDATE OF c SKIP LOCKED",
        now,
        limit,
        list(read_until),
        list(read_until.values()),
        floor,
    )
    claimed = []
    for state, group_id, agent_id, until in rows:
        clock = SlaClock.model_validate_json(state)
        if group_id is not None and clock.follows_ticket:
            clock.group_id, clock.agent_id = group_id, agent_id
        claimed.append((clock, min(now, until)))
    return claimed


async def next_due(conn: Connection) -> datetime | None:
    found: datetime | None = await conn.fetchval("SELECT min(due_at) FROM clocks")
    return found


_CLOCK_COLUMNS = {
    "clock_id": "text",
    "ticket_id": "uuid",
    "number": "text",
    "metric": "text",
    "run": "integer",
    "status": "text",
    "group_id": "text",
    "started_at": "timestamptz",
    "deadline": "timestamptz",
    "due_at": "timestamptz",
    "warned": "float8",
    "level": "integer",
    "breached_at": "timestamptz",
    "met_at": "timestamptz",
    "elapsed_s": "float8",
    "wall_s": "float8",
    "state": "text",
    "version": "integer",
}


def _row(clock: SlaClock) -> list[Any]:
    values = {
        **{c: getattr(clock, c, None) for c in _CLOCK_COLUMNS},
        "status": clock.status,
        "deadline": clock.deadline,
        "due_at": clock.due_at,
        "warned": max(clock.warned, default=0.0),
        "state": clock.model_dump_json(),
    }
    return [values[c] for c in _CLOCK_COLUMNS]


class ClockBoard(Projection):
    """Every clock's state and its timer (``due_at``), folded from the clock streams."""

    name = "clock_board"
    tables = ("clocks", "clock_runs")

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        streams: dict[str, list[RecordedEvent]] = {}
        for recorded in events:
            if recorded.stream_id.startswith("clock-"):
                streams.setdefault(recorded.stream_id, []).append(recorded)
        if not streams:
            return
        rows = await conn.fetch(
            "SELECT state FROM clocks WHERE clock_id = ANY($1::text[])", list(streams)
        )
        clocks: dict[str, SlaClock | None] = dict.fromkeys(streams)
        for row in rows:
            clock = SlaClock.model_validate_json(row[0])
            clocks[clock.clock_id] = clock
        replaced: list[SlaClock] = []
        for stream_id, recorded_events in streams.items():
            folded = clocks[stream_id]
            for recorded in recorded_events:
                event = recorded.decode()
                if isinstance(event, ClockStarted) and folded is not None and folded.has_outcome:
                    replaced.append(folded)
                folded = fold(folded, event)
            clocks[stream_id] = folded
        if replaced:
            await _keep_runs(conn, replaced)
        touched = [c for c in clocks.values() if c is not None]
        columns = [list(column) for column in zip(*(_row(c) for c in touched), strict=True)]
        params = ", ".join(f"${n}::{t}[]" for n, t in enumerate(_CLOCK_COLUMNS.values(), 1))
        updates = ", ".join(f"{c} = excluded.{c}" for c in list(_CLOCK_COLUMNS)[1:])
        await conn.execute(
            f"INSERT INTO clocks ({', '.join(_CLOCK_COLUMNS)}) SELECT * FROM unnest({params}) "
            f"ON CONFLICT (clock_id) DO UPDATE SET {updates}",
            *columns,
        )


async def _keep_runs(conn: Connection, runs: Sequence[SlaClock]) -> None:
    """Runs a new run of their clock replaces, with their outcome (met or breached): the reports
    count every run, not only each clock's current one."""
    await conn.execute(
        "INSERT INTO clock_runs (clock_id, run, ticket_id, metric, group_id, status, "
        "breached_at, met_at, wall_s) SELECT * FROM unnest($1::text[], $2::integer[], "
        "$3::uuid[], $4::text[], $5::text[], $6::text[], $7::timestamptz[], $8::timestamptz[], "
        "$9::float8[]) ON CONFLICT (clock_id, run) DO NOTHING",
        [c.clock_id for c in runs],
        [c.run for c in runs],
        [c.ticket_id for c in runs],
        [c.metric for c in runs],
        [c.group_id for c in runs],
        [c.status for c in runs],
        [c.breached_at for c in runs],
        [c.met_at for c in runs],
        [c.wall_s for c in runs],
    )
