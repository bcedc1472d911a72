"""What operators' tools read of dispatch's tables and events (``desk sla what-if``,
``desk policy diff``, ``desk triage review``), and how dispatch would read a command a tool is
about to send (``desk ticket flag`` ...)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from services.dispatch.commands import Unreadable, read_ticket_command
from services.dispatch.events import TICKET_COMMANDS, TicketReclassified
from services.dispatch.ticket import OPEN
from shared.database import Connection
from shared.eventstore import EventStore

STORE = EventStore("dispatch", "servicedesk/dispatch")
COMMANDS_TOPIC = TICKET_COMMANDS


def command_problem(value: bytes) -> str | None:
    """Why dispatch would refuse these bytes as a ticket command (``invalid_command``), or
    None: a tool says so before sending anything."""
    command = read_ticket_command(value)
    return command.detail if isinstance(command, Unreadable) else None


async def ticket_stories(
    conn: Connection, ticket_ids: Sequence[str], types: Sequence[str]
) -> dict[str, list[tuple[str, datetime, str, str]]]:
    """Each ticket's lifecycle events of ``types`` as dispatch recorded them, in order, in one
    round trip: type, time, id and data (JSON text) each — what a what-if replays."""
    return await STORE.read_subjects_data(conn, ticket_ids, types)


async def tickets_per_group(conn: Connection) -> dict[str, Counter[str]]:
    """Open tickets per group, by status (``queued``, ``assigned``, ...); empty before dispatch
    created its tables."""
    if await conn.fetchval("SELECT to_regclass('dispatch.tickets')") is None:
        return {}
    rows = await conn.fetch(
        "SELECT group_id, status, count(*) FROM dispatch.tickets "
        "WHERE status = ANY($1::text[]) GROUP BY 1, 2",
        sorted(OPEN),
    )
    found: dict[str, Counter[str]] = {}
    for group_id, status, count in rows:
        found.setdefault(group_id, Counter())[status] = count
    return found


async def reclassifications(conn: Connection, since: datetime) -> list[TicketReclassified]:
    """Agents' corrections of triage since ``since``, oldest first."""
    if await conn.fetchval("SELECT to_regclass('dispatch.events')") is None:
        return []
    rows = await conn.fetch(
        "SELECT envelope->>'data' FROM dispatch.events WHERE type = $1 AND occurred_at >= $2 "
        "ORDER BY position",
        TicketReclassified.event_type(),
        since,
    )
    return [TicketReclassified.model_validate_json(row[0]) for row in rows]
