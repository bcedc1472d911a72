"""The console's consumers: the public topics into its journal and read models, and the
dead-letter topics into its count of dead letters per service.

After each batch the console announces which tickets changed (``NOTIFY`` on commit), and where
a ticket moved from (the group and agent an event names it left), and its stream
(:mod:`services.console.stream`) sends them to the people watching.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from services.console.journal import Journal
from services.dispatch import events as dispatch
from services.intake import events as intake
from services.notify import events as notify
from services.sla import events as sla
from shared.consumer import Delivered, EventSubscription, Inbound, Subscription
from shared.database import Connection
from shared.deadletter import Record, dead_letter_topics
from shared.events import EARLIEST, plausible
from shared.keys import KeyRing
from shared.projection import Projection, checkpoint_all
from shared.provenance import dead_letter_writer
from shared.text import tidy_line
from shared.unit_of_work import UnitOfWork

CHANGES = "console_changes"
"""The ``NOTIFY`` channel of changed tickets (payload: JSON ``{"tickets": [...], "left":
{ticket: [[group, agent], ...]}, "board": bool}``)."""
_NOTICE_BYTES = 7000
"""Most bytes of one notification's payload (PostgreSQL's limit is 8,000)."""

Whereabouts = tuple[str, str | None]
"""A group a ticket was in, and the agent it was assigned to there (if any)."""

PUBLIC_TOPICS = (
    intake.EVENTS_TOPIC,
    intake.REJECTIONS_TOPIC,
    dispatch.EVENTS_TOPIC,
    dispatch.TICKET_REJECTIONS,
    dispatch.AGENT_REJECTIONS,
    sla.EVENTS_TOPIC,
    notify.EVENTS_TOPIC,
)
CONSUMED_TOPICS = (
    intake.INCOMING_TOPIC,
    intake.EVENTS_TOPIC,
    dispatch.EVENTS_TOPIC,
    dispatch.TICKET_COMMANDS,
    dispatch.AGENT_COMMANDS,
    sla.EVENTS_TOPIC,
    notify.DELIVERIES_TOPIC,
    notify.MESSAGES_TOPIC,
)
"""Every topic another service consumes: with the console's own, their dead letters are counted."""


class PublicEvents(EventSubscription):
    """Every public event of intake, dispatch, sla and notify, rejections included."""

    name = "events"
    topics = PUBLIC_TOPICS
    description = "The public topics, journaled and folded into the console's read models."

    def __init__(self, journal: Journal, read_models: Sequence[Projection]) -> None:
        self.journal = journal
        self.read_models = read_models

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[Delivered]]) -> None:
        journaled = await self.journal.record(uow.conn, messages)
        if journaled:
            for projection in self.read_models:
                await projection.apply(uow.conn, journaled)
            await checkpoint_all(uow.conn, self.read_models, journaled[-1].position)
        changed: set[str] = set()
        left: dict[str, set[Whereabouts]] = {}
        for entry in journaled:
            event = entry.decode()
            ticket = str(getattr(event, "ticket_id", "") or "")
            changed.add(ticket)
            if ticket and (was := _moved_from(event)) is not None:
                left.setdefault(ticket, set()).add(was)
        await announce(uow.conn, changed - {""}, left=left)


def _moved_from(event: object) -> Whereabouts | None:
    """Where an event says its ticket was before it moved (a transfer, an escalation to
    another group, a specialist group's answer): whoever saw it there may see it no more."""
    group = getattr(event, "from_group", None)
    if not isinstance(group, str):
        return None
    agent = getattr(event, "from_agent", None)
    return group, agent if isinstance(agent, str) else None


async def announce(
    conn: Connection,
    ticket_ids: Iterable[str],
    board: bool = True,
    *,
    left: dict[str, set[Whereabouts]] | None = None,
) -> None:
    """Tell the stream, when the transaction commits, which tickets changed and where from
    (``left``), and (``board``) that the dashboard's figures may have."""
    ids = sorted(ticket_ids)
    if not ids and not board:
        return
    for payload in _payloads(ids, left or {}, board):
        await conn.execute("SELECT pg_notify($1, $2)", CHANGES, json.dumps(payload))


def _payloads(
    ids: list[str], left: dict[str, set[Whereabouts]], board: bool
) -> Iterable[dict[str, Any]]:
    """The notifications saying it, each under :data:`_NOTICE_BYTES` (at least one)."""

    def empty() -> dict[str, Any]:
        return {"tickets": [], "left": {}, "board": board}

    payload, size = empty(), 60
    for ticket in ids:
        was = sorted(left.get(ticket, ()), key=lambda w: (w[0], w[1] or ""))
        cost = len(ticket) + 4 + (len(json.dumps(was)) + len(ticket) + 6 if was else 0)
        if payload["tickets"] and size + cost > _NOTICE_BYTES:
            yield payload
            payload, size = empty(), 60
        payload["tickets"].append(ticket)
        if was:
            payload["left"][ticket] = was
        size += cost
    yield payload


@dataclass(frozen=True)
class DeadLetter:
    service: str
    consumer: str
    reason: str
    at: datetime
    origin: tuple[str, int, int] | None = None
    """The dead-lettered record (topic, partition, offset) of one the console says it wrote
    itself: unsealed (the console holds no key), so checked against its own table."""


_PARTITIONS, _OFFSETS = 2**31, 2**63
"""What the console's table can hold of a partition (integer) and an offset (bigint)."""
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
"""A name Kafka allows a topic (a NUL in one failed the look-up, and the batch with it)."""


def _origin(record: Record) -> tuple[str, int, int] | None:
    """The record a dead letter says it came from, if its headers name one that can be."""
    try:
        partition = int(record.header("dlq_partition") or "")
        offset = int(record.header("dlq_offset") or "")
    except ValueError:
        return None
    topic = record.header("dlq_topic") or ""
    if not (0 <= partition < _PARTITIONS and 0 <= offset < _OFFSETS and _TOPIC.fullmatch(topic)):
        return None
    return topic, partition, offset


async def _written_here(
    conn: Connection, claims: Sequence[DeadLetter]
) -> set[tuple[str, tuple[str, int, int]]]:
    """Which of these dead letters the console's own table holds."""
    named = [(c.consumer, *c.origin) for c in claims if c.origin is not None]
    rows = await conn.fetch(
        'SELECT consumer, topic, partition, "offset" FROM dead_letters '
        'WHERE (consumer, topic, partition, "offset") IN (SELECT * FROM unnest($1::text[], '
        "$2::text[], $3::int[], $4::bigint[]))",
        *(list(column) for column in zip(*named, strict=True)),
    )
    return {(r[0], (r[1], r[2], r[3])) for r in rows}


def _moment(value: str | int | None) -> datetime | None:
    """A dead letter's time (ISO text, or Kafka's milliseconds) if it is a plausible one."""
    try:
        if isinstance(value, str):
            return plausible(datetime.fromisoformat(value))
        if value is not None:
            return plausible(datetime.fromtimestamp(value / 1000, UTC))
    except (ValueError, OverflowError, OSError):
        pass
    return None


CONSOLE = "console"


class DeadLetterFeed(Subscription[DeadLetter]):
    """Every ``<topic>.dlq`` of a consumed topic: who dead-lettered what, and why. A record is
    taken as it is (never refused: a dead letter's dead letter would go nowhere)."""

    name = "dead-letters"
    topics = tuple(dead_letter_topics(sorted({*CONSUMED_TOPICS, *PUBLIC_TOPICS})))
    description = "Dead letters of every consumer, counted per service and reason."
    payload: Any = bytes
    # A dead letter counted half a second later changes nothing for anyone; polling its 11
    # topics as often as the tickets' cost the embedded broker a third of its idle CPU.
    patience_ms = 500

    def __init__(self, keys: KeyRing) -> None:
        self.keys = keys

    def decode(self, record: Record) -> DeadLetter:
        """Whatever the headers hold: text the database can keep (no NUL), the service that
        sealed it (:func:`~shared.provenance.dead_letter_writer`; else ``?``: anyone can write to
        a topic of the embedded broker), and a time a calendar can hold — the header's, else the
        record's."""
        # Cut, then tidied: cut after, a closed isolate could lose its closer to the cut.
        consumer = tidy_line((record.header("dlq_consumer") or "?")[:120])
        claimed = consumer.split(".", 1)[0]
        writer = dead_letter_writer(self.keys, record)
        origin = _origin(record) if claimed == CONSOLE and writer is None else None
        return DeadLetter(
            service=claimed if claimed == writer or origin is not None else "?",
            consumer=consumer,
            reason=tidy_line((record.header("dlq_reason") or "?")[:60]),
            at=_moment(record.header("dlq_time")) or _moment(record.timestamp_ms) or EARLIEST,
            origin=origin,
        )

    def message_id(self, message: DeadLetter, record: Record) -> str:
        return f"dead-letter:{record.coordinates}"

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[DeadLetter]]) -> None:
        claims = [m.message for m in messages if m.message.origin is not None]
        if claims:  # the console's own: a row of its dead_letters, or not the console's
            mine = await _written_here(uow.conn, claims)
            messages = [
                m
                if m.message.origin is None or (m.message.consumer, m.message.origin) in mine
                else replace(m, message=replace(m.message, service="?"))
                for m in messages
            ]
        await uow.conn.executemany(
            'INSERT INTO dead_letters_seen (service, consumer, topic, partition, "offset", reason, '
            "recorded_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING",
            [
                (
                    m.message.service,
                    m.message.consumer,
                    m.record.topic,
                    m.record.partition,
                    m.record.offset,
                    m.message.reason,
                    m.message.at,
                )
                for m in messages
            ],
        )
        await announce(uow.conn, ())
