"""notify's tables: ticket facts and the deliveries (the notices, one row per key)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from services.notify.rules import Notice, TicketFacts
from shared.database import Connection


async def tickets(conn: Connection, ids: Iterable[str]) -> dict[str, TicketFacts]:
    rows = await conn.fetch(
        "SELECT facts FROM tickets WHERE ticket_id = ANY($1::uuid[])", list(set(ids))
    )
    found = [TicketFacts.model_validate_json(row[0]) for row in rows]
    return {f.ticket_id: f for f in found}


async def save_tickets(conn: Connection, facts: Sequence[TicketFacts]) -> None:
    if not facts:
        return
    await conn.execute(
        "INSERT INTO tickets (ticket_id, facts) SELECT * FROM unnest($1::uuid[], $2::text[]) "
        "ON CONFLICT (ticket_id) DO UPDATE SET facts = excluded.facts",
        [f.ticket_id for f in facts],
        [f.model_dump_json() for f in facts],
    )


_COLUMNS = (
    "notice_key",
    "ticket_id",
    "number",
    "cause_event_id",
    "recipient",
    "channel",
    "address",
    "template",
    "language",
    "subject",
    "body",
    "policy_version",
    "status",
    "due_at",
    "last_error",
    "created_at",
)
_TYPES = ("text", "uuid", *["text"] * 11, "timestamptz", "text", "timestamptz")


async def enqueue(
    conn: Connection, notices: Sequence[Notice], policy_version: str, now: datetime
) -> set[str]:
    """Store notices (pending, or failed when they cannot be sent); return the keys that are new.

    A key already stored is left alone: that notice is somebody else's to send.
    """
    if not notices:
        return set()
    rows = [
        (
            n.notice_key,
            n.ticket_id,
            n.number,
            n.cause_event_id,
            n.recipient,
            n.channel,
            n.address,
            n.template,
            n.language,
            n.subject,
            n.body,
            policy_version,
            "failed" if n.failure else "pending",
            None if n.failure else now,
            n.error or None,
            now,
        )
        for n in notices
    ]
    params = ", ".join(f"${i}::{t}[]" for i, t in enumerate(_TYPES, start=1))
    inserted = await conn.fetch(
        f"INSERT INTO deliveries ({', '.join(_COLUMNS)}) SELECT * FROM unnest({params}) "
        "ON CONFLICT (notice_key) DO NOTHING RETURNING notice_key",
        *[list(column) for column in zip(*rows, strict=True)],
    )
    return {row[0] for row in inserted}


@dataclass(frozen=True)
class Delivery:
    id: int
    notice_key: str
    ticket_id: str
    number: str
    cause_event_id: str
    recipient: str
    channel: str
    address: str
    template: str
    language: str
    subject: str
    body: str
    policy_version: str
    attempts: int


_CLAIMED = (
    "id, notice_key, ticket_id::text, number, cause_event_id, recipient, channel, address, "
    "template, language, subject, body, policy_version, attempts"
)


async def claim(
    conn: Connection, now: datetime, lease_until: datetime, limit: int
) -> list[Delivery]:
    """Due notices, leased to this sender until ``lease_until`` (committed by the caller)."""
    rows = await conn.fetch(
        "UPDATE deliveries SET status = 'sending', attempts = attempts + 1, due_at = $2 "
        "WHERE id IN (SELECT id FROM deliveries WHERE status IN ('pending', 'sending') "
        "AND due_at <= $1 ORDER BY due_at LIMIT $3 FOR UPDATE SKIP LOCKED) "
        f"RETURNING {_CLAIMED}",
        now,
        lease_until,
        limit,
    )
    return [Delivery(*row) for row in rows]


async def finish(
    conn: Connection, delivery: Delivery, status: str, now: datetime, error: str | None
) -> bool:
    """Settle a claimed notice; False if the lease was lost (another sender reclaimed it)."""
    done = await conn.fetchval(
        "UPDATE deliveries SET status = $3, finished_at = $4, due_at = NULL, last_error = $5 "
        "WHERE id = $1 AND status = 'sending' AND attempts = $2 RETURNING true",
        delivery.id,
        delivery.attempts,
        status,
        now,
        error,
    )
    return bool(done)


async def retry_later(conn: Connection, delivery: Delivery, due: datetime, error: str) -> bool:
    done = await conn.fetchval(
        "UPDATE deliveries SET status = 'pending', due_at = $3, last_error = $4 "
        "WHERE id = $1 AND status = 'sending' AND attempts = $2 RETURNING true",
        delivery.id,
        delivery.attempts,
        due,
        error,
    )
    return bool(done)


async def next_due(conn: Connection) -> datetime | None:
    found: datetime | None = await conn.fetchval(
        "SELECT min(due_at) FROM deliveries WHERE status IN ('pending', 'sending')"
    )
    return found


async def send_again(conn: Connection, notice_key: str, now: datetime) -> bool:
    """A dead-lettered notice, replayed by an operator: from the first attempt again."""
    done = await conn.fetchval(
        "UPDATE deliveries SET status = 'pending', attempts = 0, due_at = $2, finished_at = NULL "
        "WHERE notice_key = $1 AND status = 'failed' AND channel IS NOT NULL RETURNING true",
        notice_key,
        now,
    )
    return bool(done)
