"""dispatch's tables: loading a batch's state, and the projections that keep the read models.

``ticket_board`` folds ticket events with the same :meth:`Ticket.apply` the desk uses, so the
read model and the desk cannot disagree; ``agent_roster`` folds agent events. Both are
rebuildable from the log (``shared.projection.rebuild``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from services.dispatch.events import (
    AgentRegistered,
    CapacityChanged,
    CustomerFlagged,
    ShiftEnded,
    ShiftStarted,
    TicketAssigned,
    TicketClassified,
    TicketEvent,
)
from services.dispatch.ticket import LOADED, OPEN, Ticket
from services.vocabulary import PRIORITY_RANK
from shared.database import Connection
from shared.eventstore import RecordedEvent
from shared.personal import from_column, to_column
from shared.projection import Projection

_TICKET_COLUMNS = {  # column -> PostgreSQL type, in Ticket's field order
    "ticket_id": "uuid",
    "number": "text",
    "status": "text",
    "group_id": "text",
    "agent_id": "text",
    "priority": "text",
    "language": "text",
    "product_line": "text",
    "problem_type": "text",
    "complexity": "text",
    "category": "text",
    "complaint_severity": "text",
    "channel": "text",
    "subject": "text",
    "received_at": "timestamptz",
    "queued_at": "timestamptz",
    "escalation_level": "integer",
    "responded": "boolean",
    "satisfaction": "smallint",
    "version": "integer",
    "updated_at": "timestamptz",
    "resolved_at": "timestamptz",
    "customer_key": "text",
    "customer_flag": "text",
    "specialist_group": "text",
    "waiting_since": "timestamptz",
    "reminded": "boolean",
    "left_unanswered": "boolean",
    "resolved_by_system": "boolean",
}
_SELECT = f"SELECT {', '.join(c + ('::text' if c == 'ticket_id' else '') for c in _TICKET_COLUMNS)}"
_LOADED = sorted(LOADED)


def _ticket(row: Any) -> Ticket:
    return Ticket(**{c: row[i] for i, c in enumerate(_TICKET_COLUMNS)})


async def tickets_by_id(conn: Connection, ids: Iterable[str]) -> dict[str, Ticket]:
    wanted = list(set(ids))
    if not wanted:
        return {}
    rows = await conn.fetch(f"{_SELECT} FROM tickets WHERE ticket_id = ANY($1::uuid[])", wanted)
    return {row[0]: _ticket(row) for row in rows}


async def tickets_by_number(conn: Connection, numbers: Iterable[str]) -> dict[str, Ticket]:
    wanted = list(set(numbers))
    if not wanted:
        return {}
    rows = await conn.fetch(f"{_SELECT} FROM tickets WHERE number = ANY($1::text[])", wanted)
    return {row[0]: _ticket(row) for row in rows}


QUEUE_WINDOW = 500
"""Heads read of a queue when a batch can add any amount of room (an agent's shift or
capacity, a policy switch)."""


async def queued(
    conn: Connection, depths: Mapping[str, int] | None, per_group: int = QUEUE_WINDOW
) -> dict[str, Ticket]:
    """The heads of the groups' queues, by priority then age: ``depths`` says how many of each
    group's (None: ``per_group`` of every group's).

    One index range per group (``tickets_queue``), so the cost does not grow with the queues:
    with 100,000 tickets queued a window over all of them took every batch longer."""
    if depths is None:
        groups = await conn.fetchval(
            "SELECT coalesce(array_agg(DISTINCT group_id), '{}') FROM tickets "
            "WHERE status = 'queued'"
        )
        depths = dict.fromkeys(groups, per_group)
    wanted = sorted((g, d) for g, d in depths.items() if d > 0)
    if not wanted:
        return {}
    rows = await conn.fetch(
        f"{_SELECT} FROM unnest($1::text[], $2::int[]) AS g(id, depth) CROSS JOIN LATERAL "
        "(SELECT * FROM tickets WHERE status = 'queued' AND group_id = g.id "
        "ORDER BY priority_rank, queued_at, number LIMIT g.depth) q",
        [g for g, _ in wanted],
        [d for _, d in wanted],
    )
    return {row[0]: _ticket(row) for row in rows}


async def open_outside(conn: Connection, groups: Iterable[str]) -> dict[str, Ticket]:
    """Open tickets of groups other than ``groups``: what a policy version retired or dropped."""
    rows = await conn.fetch(
        f"{_SELECT} FROM tickets WHERE status = ANY($1::text[]) AND group_id <> ALL($2::text[])",
        sorted(OPEN),
        list(groups),
    )
    return {row[0]: _ticket(row) for row in rows}


async def resolved_before(conn: Connection, cutoff: datetime, limit: int) -> list[str]:
    """Resolved tickets whose resolution is ``cutoff`` or older, oldest first: the ones due to
    close (``tickets_resolved``)."""
    rows = await conn.fetch(
        "SELECT ticket_id::text FROM tickets WHERE status = 'resolved' AND resolved_at <= $1 "
        "ORDER BY resolved_at LIMIT $2",
        cutoff,
        limit,
    )
    return [row[0] for row in rows]


async def waiting_before(
    conn: Connection,
    cutoff: datetime,
    limit: int,
    *,
    exempt: Sequence[str] = (),
    only: Sequence[str] | None = None,
    unreminded: bool = False,
    untold: bool = False,
) -> list[str]:
    """Tickets waiting for the customer since ``cutoff`` or earlier, oldest first, but those of
    the ``exempt`` categories, and given ``only``, of those categories alone (``unreminded``:
    not reminded yet; ``untold``: their people not told yet): the ones due to be resolved
    unanswered, reminded, or left to a person (``tickets_waiting``)."""
    rows = await conn.fetch(
        "SELECT ticket_id::text FROM tickets WHERE status = 'waiting_for_customer' "
        "AND waiting_since <= $1 AND category <> ALL($2::text[]) "
        "AND ($3::text[] IS NULL OR category = ANY($3::text[])) "
        "AND NOT (reminded AND $4) AND NOT (left_unanswered AND $5) "
        "ORDER BY waiting_since LIMIT $6",
        cutoff,
        list(exempt),
        None if only is None else list(only),
        unreminded,
        untold,
        limit,
    )
    return [row[0] for row in rows]


async def agent_states(conn: Connection) -> dict[str, tuple[AgentRegistered, int]]:
    """Every agent as the roster knows it (profile, shift, capacity), and its stream version."""
    rows = await conn.fetch(
        "SELECT agent_id, name, role, groups, skills, languages, capacity, on_shift, version "
        "FROM agents"
    )
    return {
        r["agent_id"]: (
            AgentRegistered(
                agent_id=r["agent_id"],
                name=r["name"],
                role=r["role"],
                groups=list(r["groups"]),
                skills=list(r["skills"]),
                languages=list(r["languages"]),
                capacity=r["capacity"],
                on_shift=r["on_shift"],
                policy_version="",
            ),
            r["version"],
        )
        for r in rows
    }


async def loads(conn: Connection) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT agent_id, count(*) FROM tickets "
        "WHERE status = ANY($1::text[]) AND agent_id IS NOT NULL GROUP BY agent_id",
        _LOADED,
    )
    return {r[0]: r[1] for r in rows}


async def cursors(conn: Connection) -> dict[str, str]:
    return {r[0]: r[1] for r in await conn.fetch("SELECT group_id, agent_id FROM group_cursors")}


async def replies_read(conn: Connection, ticket_ids: Iterable[str]) -> dict[str, int]:
    """Ticket id -> the intake stream position of the newest reply dispatch has acted on."""
    wanted = sorted(set(ticket_ids))
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT ticket_id::text, position FROM replies_read WHERE ticket_id = ANY($1::uuid[])",
        wanted,
    )
    return {r[0]: r[1] for r in rows}


async def mark_replies_read(conn: Connection, read: Mapping[str, int]) -> None:
    """Remember the newest reply acted on per ticket (never moving a mark back)."""
    if read:
        await conn.execute(
            "INSERT INTO replies_read (ticket_id, position) "
            "SELECT * FROM unnest($1::uuid[], $2::integer[]) ON CONFLICT (ticket_id) "
            "DO UPDATE SET position = greatest(replies_read.position, excluded.position)",
            list(read),
            list(read.values()),
        )


async def customer_flags(conn: Connection, keys: Iterable[str | None]) -> dict[str, str]:
    """Customer key -> why that customer was flagged (the latest flag), for those flagged."""
    wanted = sorted({k for k in keys if k})
    if not wanted:
        return {}
    rows = await conn.fetch(
        "SELECT customer_key, reason FROM customer_flags WHERE customer_key = ANY($1::text[])",
        wanted,
    )
    return {r[0]: from_column(r[1]) for r in rows}


class TicketBoard(Projection):
    """Current state of every ticket, each group's round-robin cursor, flagged customers."""

    name = "ticket_board"
    tables = ("tickets", "group_cursors", "customer_flags")

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        mine = [e for e in events if isinstance(e.decode(), TicketEvent)]
        if not mine:
            return
        ids = {e.decode().ticket_id for e in mine}  # type: ignore[attr-defined]
        tickets = await tickets_by_id(conn, ids)
        cursor: dict[str, str] = {}
        for recorded in mine:
            data = recorded.decode()
            if isinstance(data, TicketClassified):
                tickets[data.ticket_id] = Ticket.classified(data, recorded.time)
                continue
            ticket = tickets[data.ticket_id]  # type: ignore[attr-defined]
            ticket.apply(data, recorded.time)
            if isinstance(data, TicketAssigned):
                cursor[data.group_id] = data.agent_id
            elif isinstance(data, CustomerFlagged) and data.customer_key:
                await _flag(conn, data, recorded.time)
        touched = [tickets[i] for i in ids]
        columns: list[list[Any]] = [[] for _ in _TICKET_COLUMNS]
        for ticket in touched:
            for column, name in zip(columns, _TICKET_COLUMNS, strict=True):
                column.append(getattr(ticket, name))
        ranks = [PRIORITY_RANK[t.priority] for t in touched]
        types = [*_TICKET_COLUMNS.values(), "smallint"]
        params = ", ".join(f"${n}::{t}[]" for n, t in enumerate(types, start=1))
        changing = [*list(_TICKET_COLUMNS)[2:], "priority_rank"]
        updates = ", ".join(f"{c} = excluded.{c}" for c in changing)
        await conn.execute(
            f"INSERT INTO tickets ({', '.join(_TICKET_COLUMNS)}, priority_rank) "
            f"SELECT * FROM unnest({params}) "
            f"ON CONFLICT (ticket_id) DO UPDATE SET {updates}",
            *columns,
            ranks,
        )
        if cursor:
            await conn.execute(
                "INSERT INTO group_cursors (group_id, agent_id) "
                "SELECT * FROM unnest($1::text[], $2::text[]) "
                "ON CONFLICT (group_id) DO UPDATE SET agent_id = excluded.agent_id",
                list(cursor),
                list(cursor.values()),
            )


class AgentRoster(Projection):
    """Every agent's profile, shift and capacity."""

    name = "agent_roster"
    tables = ("agents",)

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        for recorded in events:
            data = recorded.decode()
            if isinstance(data, AgentRegistered):
                await conn.execute(
                    "INSERT INTO agents (agent_id, name, role, groups, skills, languages, "
                    "capacity, on_shift, version, updated_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 1, $9) ON CONFLICT (agent_id) DO "
                    "UPDATE SET name = $2, role = $3, groups = $4, skills = $5, languages = $6, "
                    "capacity = $7, on_shift = $8, version = agents.version + 1, updated_at = $9",
                    data.agent_id,
                    data.name,
                    data.role,
                    data.groups,
                    data.skills,
                    data.languages,
                    data.capacity,
                    data.on_shift,
                    recorded.time,
                )
            elif isinstance(data, ShiftStarted | ShiftEnded | CapacityChanged):
                await _agent_change(conn, data, recorded.time)


async def _flag(conn: Connection, flagged: CustomerFlagged, time: datetime) -> None:
    await conn.execute(
        "INSERT INTO customer_flags (customer_key, reason, number, actor, flagged_at) "
        "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (customer_key) DO UPDATE SET "
        "reason = $2, number = $3, actor = $4, flagged_at = $5",
        flagged.customer_key,
        to_column(flagged.reason),  # sealed under the customer's key, as in the event
        flagged.number,
        flagged.actor,
        time,
    )


async def _agent_change(conn: Connection, data: Any, time: datetime) -> None:
    if isinstance(data, CapacityChanged):
        change, value = "capacity = $2", data.capacity
    else:
        change, value = "on_shift = $2", isinstance(data, ShiftStarted)
    await conn.execute(
        f"UPDATE agents SET {change}, version = version + 1, updated_at = $3 WHERE agent_id = $1",
        data.agent_id,
        value,
        time,
    )
