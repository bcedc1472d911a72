"""notify's tables: ticket facts and the deliveries (the notices, one row per key)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from services.notify.rules import TOPIC_CHANNELS, Notice, NoticeFacts
from shared.database import Connection


async def lock(conn: Connection, space: str, keys: Sequence[str]) -> None:
    """Transaction-level advisory locks on ``keys`` in a key space of their own (the two-key
    form), taken in one order so that two holders never wait for each other in a cycle."""
    await conn.execute(
        "SELECT pg_advisory_xact_lock(hashtext($1), k) "
        "FROM (SELECT DISTINCT hashtext(t) AS k FROM unnest($2::text[]) AS t ORDER BY k) AS keys",
        space,
        list(keys),
    )


async def lock_tickets(conn: Connection, ids: Iterable[str]) -> dict[str, NoticeFacts]:
    """The tickets' facts, each ticket locked until the transaction ends.

    One ticket's events reach notify on three topics, so two consumers (of this process or
    another) can hold the same ticket at once; each rewrites the whole facts row and decides
    whether an event's notices wait (for the receipt or the routing), so without the lock the
    later commit would undo the earlier (a receipt forgotten, a waiting event never released).
    Transaction-level advisory locks (two-key form, a key space of their own), because a ticket's
    row may not exist yet; taken in one order, so two batches never wait for each other in a
    cycle. The facts are read after the lock, in a new statement, so they include what the
    previous holder committed.
    """
    wanted = sorted(set(ids))
    await lock(conn, "notify.tickets", wanted)
    rows = await conn.fetch("SELECT facts FROM tickets WHERE ticket_id = ANY($1::uuid[])", wanted)
    found = [NoticeFacts.model_validate_json(row[0]) for row in rows]
    return {f.ticket_id: f for f in found}


async def save_tickets(conn: Connection, facts: Sequence[NoticeFacts]) -> None:
    if not facts:
        return
    await conn.execute(
        "INSERT INTO tickets (ticket_id, facts) SELECT * FROM unnest($1::uuid[], $2::text[]) "
        "ON CONFLICT (ticket_id) DO UPDATE SET facts = excluded.facts",
        [f.ticket_id for f in facts],
        [f.model_dump_json() for f in facts],
    )


@dataclass(frozen=True)
class WaitingEvent:
    """An event owing someone a notice, kept until the ticket's receipt (and, for a notice to
    whoever has the ticket, its routing) is read."""

    ticket_id: str
    event_id: str
    trigger: str
    data: dict[str, Any]
    since: datetime | None = None
    """When it was first kept (None: not yet); kept again, it keeps its place."""


async def keep_waiting(conn: Connection, events: Sequence[WaitingEvent], now: datetime) -> None:
    if not events:
        return
    rows = [
        (e.ticket_id, e.event_id, e.trigger, json.dumps(e.data), e.since or now) for e in events
    ]
    await conn.execute(
        "INSERT INTO waiting_events (ticket_id, event_id, trigger, data, since) "
        "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[]) "
        "ON CONFLICT DO NOTHING",
        *[list(column) for column in zip(*rows, strict=True)],
    )


async def stop_waiting(conn: Connection, ticket_ids: Sequence[str]) -> list[WaitingEvent]:
    """Take the waiting events of tickets whose receipt or routing has just been read, oldest first
    (by when they were kept, then by event id: UUIDv7, so by when they were recorded)."""
    if not ticket_ids:
        return []
    rows = await conn.fetch(
        "DELETE FROM waiting_events WHERE ticket_id = ANY($1::uuid[]) "
        "RETURNING ticket_id::text, event_id, trigger, data, since",
        list(ticket_ids),
    )
    ordered = sorted(rows, key=lambda r: (r[4], r[1]))
    return [WaitingEvent(r[0], r[1], r[2], json.loads(r[3]), r[4]) for r in ordered]


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
    "thread",
    "customer_ref",
    "erased_subject",
    "erased_body",
)
_TYPES = (
    "text",
    "uuid",
    *["text"] * 11,
    "timestamptz",
    "text",
    "timestamptz",
    *["text"] * 4,
)


AT_ONCE = datetime(1970, 1, 1, tzinfo=UTC)
"""The due time of a notice never tried: long past, whatever the clock says. Stamped with "now"
instead, it would wait out any step the clock takes back after it was stored (an NTP correction,
a restored host) — an hour's step, an hour's silence."""


async def enqueue(
    conn: Connection, notices: Sequence[Notice], policy_version: str, now: datetime
) -> set[str]:
    """Store notices (pending and due :data:`AT_ONCE`; failed when they cannot be sent; sent
    when their channel is a topic — the caller records them, the relay publishes them); return
    the keys that are new.

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
            _status(n),
            AT_ONCE if _status(n) == "pending" else None,
            n.error or None,
            now,
            " ".join(n.thread) or None,
            n.customer_ref,
            *(n.if_erased or (None, None)),
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


def _status(notice: Notice) -> str:
    if notice.failure:
        return "failed"
    return "sent" if notice.channel in TOPIC_CHANNELS else "pending"


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
    thread: str | None = None
    """An email's ``References``: the Message-IDs it follows, space separated."""
    erased_subject: str | None = None
    erased_body: str | None = None
    """A notice to the desk's people: what it says if its customer is erased before it goes
    out (:attr:`~services.notify.rules.Notice.if_erased`)."""
    destination: str = ""
    """Where it goes, as far as one receiver can hold sends up: the SMTP relay (``email``),
    the SMS provider (``sms``), or a webhook's host."""
    customer_ref: str | None = None
    """The pseudonym of the ticket's customer, once opened to send: an error a receiver
    answers may quote what the notice said, so it is sealed for them too."""


_CLAIMED = (
    "id, notice_key, ticket_id::text, number, cause_event_id, recipient, channel, address, "
    "template, language, subject, body, policy_version, attempts, thread, erased_subject, "
    "erased_body"
)


async def claim(
    conn: Connection,
    now: datetime,
    lease_until: datetime,
    limit: int,
    *,
    room: Mapping[str, int] | None = None,
    room_else: int | None = None,
    full: Sequence[str] = (),
) -> list[Delivery]:
    """Due notices, leased to this sender until ``lease_until`` (committed by the caller): up
    to ``limit``, at most ``room[destination]`` for a destination named there (``room_else``
    for others), none for ``full`` ones — so one receiver that holds its sends up never fills
    the sender's hands. One statement: the destinations with notices owed walked by the index
    (a loose index scan), each one's first due rows locked from its own range, the earliest of
    them leased. Numbering the first ``limit`` due rows by destination instead, a backlog for
    one receiver filled them all, and every other destination waited for it to drain."""
    room = room or {}
    rows = await conn.fetch(
        "WITH RECURSIVE owed(destination) AS ("
        "   SELECT min(destination) FROM deliveries WHERE status IN ('pending', 'sending') "
        "   UNION ALL "
        "   SELECT (SELECT min(e.destination) FROM deliveries e "
        "           WHERE e.status IN ('pending', 'sending') AND e.destination > o.destination) "
        "   FROM owed o WHERE o.destination IS NOT NULL), "
        "share AS (SELECT o.destination, coalesce(u.room, $7) AS room FROM owed o "
        "   LEFT JOIN unnest($5::text[], $6::integer[]) AS u(destination, room) "
        "   ON u.destination = o.destination "
        "   WHERE o.destination IS NOT NULL AND o.destination <> ALL($4::text[])), "
        "due AS (SELECT l.id, l.destination FROM share s CROSS JOIN LATERAL ("
        "   SELECT d.id, d.due_at, d.destination FROM deliveries d "
        "   WHERE d.destination = s.destination AND d.status IN ('pending', 'sending') "
        "   AND d.due_at <= $1 ORDER BY d.due_at, d.id LIMIT least(s.room, $3) "
        "   FOR UPDATE SKIP LOCKED) l ORDER BY l.due_at, l.id LIMIT $3) "
        "UPDATE deliveries d SET status = 'sending', attempts = attempts + 1, due_at = $2 "
        "FROM due r WHERE d.id = r.id "
        f"RETURNING {', '.join(f'd.{c}' for c in _CLAIMED.split(', '))}, r.destination",
        now,
        lease_until,
        limit,
        list(full),
        list(room),
        list(room.values()),
        room_else if room_else is not None else limit,
    )
    return sorted((Delivery(*row) for row in rows), key=lambda d: d.id)


@dataclass(frozen=True)
class Settlement:
    """What becomes of a claimed notice: ``sent``, ``failed``, or ``pending`` again at ``due``."""

    delivery: Delivery
    status: str
    due: datetime | None = None
    error: str | None = None
    reason: str | None = None
    """Why a failed notice failed: ``refused`` or ``attempts_exhausted``."""
    answer: str = ""
    """What the receiver said (:attr:`~services.notify.channels.Transient.answer`): never
    kept here, only in the notice's sealed ``notification.failed``."""


async def settle(conn: Connection, settlements: Sequence[Settlement], now: datetime) -> set[int]:
    """Settle claimed notices in one statement; return the ids settled. A notice whose lease
    was lost (another sender reclaimed it: attempts moved on) is left to that sender."""
    rows = await conn.fetch(
        "UPDATE deliveries d SET status = u.status, due_at = u.due, last_error = u.error, "
        "finished_at = CASE WHEN u.status = 'pending' THEN NULL ELSE $6::timestamptz END "
        "FROM unnest($1::bigint[], $2::int[], $3::text[], $4::timestamptz[], $5::text[]) "
        "AS u(id, attempts, status, due, error) "
        "WHERE d.id = u.id AND d.status = 'sending' AND d.attempts = u.attempts RETURNING d.id",
        [s.delivery.id for s in settlements],
        [s.delivery.attempts for s in settlements],
        [s.status for s in settlements],
        [s.due for s in settlements],
        [s.error for s in settlements],
        now,
    )
    return {row[0] for row in rows}


async def next_due(conn: Connection) -> datetime | None:
    found: datetime | None = await conn.fetchval(
        "SELECT min(due_at) FROM deliveries WHERE status IN ('pending', 'sending')"
    )
    return found


async def send_again(conn: Connection, notice_key: str, now: datetime) -> bool:
    """A dead-lettered notice, replayed by an operator: from the first attempt again, at once."""
    done = await conn.fetchval(
        "UPDATE deliveries SET status = 'pending', attempts = 0, due_at = $2, finished_at = NULL "
        "WHERE notice_key = $1 AND status = 'failed' AND channel IS NOT NULL RETURNING true",
        notice_key,
        AT_ONCE,
    )
    return bool(done)
