"""intake's tables: the request-number counters and the ticket index (a projection)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from services.intake.events import CustomerReplied, FollowUpOpened, TicketReceived, TicketTriaged
from shared.database import Connection
from shared.eventstore import RecordedEvent
from shared.projection import Projection


async def allocate_numbers(conn: Connection, years: Iterable[int]) -> dict[int, list[int]]:
    """Take the next counter values of each year's sequence (one statement per year)."""
    wanted = Counter(years)
    taken: dict[int, list[int]] = {}
    for year, count in sorted(wanted.items()):
        rows = await conn.fetch("SELECT next_request_numbers($1, $2)", year, count)
        taken[year] = [r[0] for r in rows]
    return taken


async def known_messages(conn: Connection, keys: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which (channel, channel message id) pairs already made a ticket or a reply."""
    if not keys:
        return set()
    channels = [k[0] for k in keys]
    ids = [k[1] for k in keys]
    rows = await conn.fetch(
        "SELECT channel, channel_message_id FROM tickets "
        "WHERE (channel, channel_message_id) IN (SELECT * FROM unnest($1::text[], $2::text[])) "
        "UNION ALL SELECT channel, channel_message_id FROM replies "
        "WHERE (channel, channel_message_id) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        channels,
        ids,
    )
    return {(r[0], r[1]) for r in rows}


async def tickets_by_number(conn: Connection, numbers: Sequence[str]) -> dict[str, str]:
    """Ticket id for each known number."""
    if not numbers:
        return {}
    rows = await conn.fetch(
        "SELECT number, ticket_id::text FROM tickets WHERE number = ANY($1::text[])",
        list(numbers),
    )
    return {r[0]: r[1] for r in rows}


FOLLOW_UP_CHAIN = 50
"""Follow-ups of follow-ups followed at most (each one a reply to a closed ticket)."""


async def newest_follow_ups(conn: Connection, numbers: Sequence[str]) -> dict[str, str]:
    """For each number that has been followed up, the newest ticket of its chain of follow-ups
    (the follow-up's own, if it was followed up in turn)."""
    if not numbers:
        return {}
    rows = await conn.fetch(
        "WITH RECURSIVE chain (start, number, depth) AS ("
        " SELECT n, n, 0 FROM unnest($1::text[]) AS n"
        " UNION ALL"
        " SELECT c.start, t.followed_up_by, c.depth + 1 FROM chain c"
        " JOIN tickets t ON t.number = c.number"
        " WHERE t.followed_up_by IS NOT NULL AND c.depth < $2"
        ") SELECT DISTINCT ON (start) start, number FROM chain WHERE depth > 0"
        " ORDER BY start, depth DESC",
        list(set(numbers)),
        FOLLOW_UP_CHAIN,
    )
    return {r[0]: r[1] for r in rows}


async def tickets_by_message(
    conn: Connection, keys: Sequence[tuple[str, str]]
) -> dict[tuple[str, str], str]:
    """The ticket number each (channel, channel message id) made or replied to; a message that
    made a ticket wins over a reply (a follow-up ticket is made from a reply's message)."""
    if not keys:
        return {}
    rows = await conn.fetch(
        "WITH wanted AS (SELECT * FROM unnest($1::text[], $2::text[]) AS w(channel, id)) "
        "SELECT t.channel, t.channel_message_id, t.number, 0 FROM tickets t JOIN wanted w "
        "ON (t.channel, t.channel_message_id) = (w.channel, w.id) "
        "UNION ALL SELECT r.channel, r.channel_message_id, t.number, 1 FROM replies r "
        "JOIN wanted w ON (r.channel, r.channel_message_id) = (w.channel, w.id) "
        "JOIN tickets t USING (ticket_id) ORDER BY 4 DESC",
        [k[0] for k in keys],
        [k[1] for k in keys],
    )
    return {(r[0], r[1]): r[2] for r in rows}


class TicketIndex(Projection):
    """Tickets by number and channel message, with their triage, reply count and newest
    follow-up.

    Set-based: a batch of events becomes at most three statements, whatever its size.
    """

    name = "ticket_index"
    tables = ("tickets", "replies")

    async def apply(self, conn: Connection, events: Sequence[RecordedEvent]) -> None:
        received: dict[str, tuple[TicketReceived, RecordedEvent]] = {}
        triaged: dict[str, TicketTriaged] = {}
        replies: list[CustomerReplied] = []
        followed: dict[str, str] = {}  # ticket id -> its newest follow-up's number
        for recorded in events:
            data = recorded.decode()
            if isinstance(data, TicketReceived):
                received[data.ticket_id] = (data, recorded)
            elif isinstance(data, TicketTriaged):
                triaged[data.ticket_id] = data
            elif isinstance(data, CustomerReplied):
                replies.append(data)
            elif isinstance(data, FollowUpOpened):
                followed[data.ticket_id] = data.follow_up_number
        if received:
            await self._insert(conn, received, triaged)
        if later := [t for ticket_id, t in triaged.items() if ticket_id not in received]:
            await self._triage(conn, later)
        if replies:
            await self._replies(conn, replies)
        if followed:
            await conn.execute(
                "UPDATE tickets t SET followed_up_by = u.number "
                "FROM unnest($1::uuid[], $2::text[]) AS u(ticket_id, number) "
                "WHERE t.ticket_id = u.ticket_id",
                list(followed),
                list(followed.values()),
            )

    async def _insert(
        self,
        conn: Connection,
        received: dict[str, tuple[TicketReceived, RecordedEvent]],
        triaged: dict[str, TicketTriaged],
    ) -> None:
        columns: list[list[Any]] = [[] for _ in range(14)]
        for ticket_id, (ticket, recorded) in received.items():
            triage = triaged.get(ticket_id)
            row = (
                ticket_id,
                ticket.number,
                ticket.channel,
                ticket.channel_message_id,
                ticket.received_at,
                recorded.time,
                ticket.customer.name,
                ticket.language,
                ticket.subject,
                triage.complexity if triage else None,
                triage.category if triage else None,
                triage.complaint if triage else None,
                triage.policy_version if triage else None,
                ticket.customer.ref,
            )
            for column, value in zip(columns, row, strict=True):
                column.append(value)
        await conn.execute(
            "INSERT INTO tickets (ticket_id, number, channel, channel_message_id, received_at, "
            "recorded_at, customer_name, language, subject, complexity, category, complaint, "
            "policy_version, customer_ref) "
            "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], "
            "$5::timestamptz[], $6::timestamptz[], $7::text[], $8::text[], $9::text[], "
            "$10::text[], $11::text[], $12::boolean[], $13::text[], $14::text[])",
            *columns,
        )

    async def _triage(self, conn: Connection, rows: list[TicketTriaged]) -> None:
        await conn.execute(
            "UPDATE tickets t SET complexity = u.complexity, category = u.category, "
            "complaint = u.complaint, policy_version = u.version "
            "FROM unnest($1::uuid[], $2::text[], $3::text[], $4::boolean[], $5::text[]) "
            "AS u(ticket_id, complexity, category, complaint, version) "
            "WHERE t.ticket_id = u.ticket_id",
            [r.ticket_id for r in rows],
            [r.complexity for r in rows],
            [r.category for r in rows],
            [r.complaint for r in rows],
            [r.policy_version for r in rows],
        )

    async def _replies(self, conn: Connection, rows: list[CustomerReplied]) -> None:
        await conn.execute(
            "WITH replied AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], "
            "$4::timestamptz[]) AS r(ticket_id, channel, channel_message_id, received_at)), "
            "new AS (INSERT INTO replies (ticket_id, channel, channel_message_id) "
            "SELECT ticket_id, channel, channel_message_id FROM replied ON CONFLICT DO NOTHING "
            "RETURNING ticket_id, channel, channel_message_id) "
            "UPDATE tickets t SET replies = t.replies + n.count, "
            "last_reply_at = greatest(t.last_reply_at, n.latest) "
            "FROM (SELECT r.ticket_id, count(*) AS count, max(r.received_at) AS latest "
            "FROM new JOIN replied r USING (ticket_id, channel, channel_message_id) "
            "GROUP BY r.ticket_id) n WHERE t.ticket_id = n.ticket_id",
            [r.ticket_id for r in rows],
            [r.channel for r in rows],
            [r.channel_message_id for r in rows],
            [r.received_at for r in rows],
        )
