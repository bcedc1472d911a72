"""Publishing another service's events in a test, as its relay would (envelope, headers, key,
seal)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import UUID

from services.dispatch.events import TicketAssigned
from services.sla.events import EscalationRaised
from shared.events import EventData, new_event_id
from shared.eventstore import EventStore, PendingEvent, with_version
from shared.keys import Key, KeyRing
from shared.provenance import SOURCE_PREFIX, catalogue, seal
from shared.relay import mark_record
from tests.support.kafka import KafkaProbe


def earlier_event_id(by: timedelta = timedelta(seconds=1)) -> UUID:
    """An event id (UUIDv7) as if made ``by`` ago: the id of an event recorded before any made
    now, without waiting for the clock (ids are ordered by their millisecond)."""
    fresh = new_event_id().int
    at = (fresh >> 80) - int(by / timedelta(milliseconds=1))
    return UUID(int=(fresh & ((1 << 80) - 1)) | (at << 80))


async def publish_event(
    kafka: KafkaProbe,
    topic: str,
    data: EventData,
    *,
    stream_id: str,
    version: int = 1,
    subject: str | None = None,
    source: str | None = None,
    correlation_id: str | None = None,
    time: datetime | None = None,
    sealed_by: Key | None = None,
    unsealed: bool = False,
    partition: int | None = None,
    event_id: UUID | None = None,
) -> str:
    """Publish one event, sealed by its source's key (``sealed_by``, or none: ``unsealed``);
    return its id (``event_id``, else a new one: UUIDv7, so one made earlier says the event was
    recorded earlier). The source is by default the event type's owner, as the catalogue
    says."""
    source = source or SOURCE_PREFIX + catalogue()[data.event_type()]
    pending = PendingEvent(
        data,
        time or datetime.now(UTC),
        correlation_id=correlation_id or subject or stream_id,
        subject=subject,
        id=event_id or new_event_id(),
    )
    stored = EventStore("test", source)._envelope_json(stream_id, pending, data.event_type())
    envelope = with_version(stored, version).encode()
    headers = [("ce_id", str(pending.id).encode()), ("ce_type", data.event_type().encode())]
    key = sealed_by or KeyRing.from_settings(kafka.settings).signing_key(
        source.removeprefix(SOURCE_PREFIX)
    )
    if key is not None and not unsealed:
        headers.extend(seal(key, envelope))
    await kafka.publish(topic, envelope, key=stream_id, headers=headers, partition=partition)
    return str(pending.id)


async def publish_mark(kafka: KafkaProbe, through: datetime, service: str = "dispatch") -> None:
    """What ``service``'s relay says once every event it stamped before ``through`` is on its
    topic (``shared.relay``): a test standing in for dispatch says it too, or sla's timers wait
    for it."""
    key = KeyRing.from_settings(kafka.settings).signing_key(service)
    value, headers = mark_record(service, key, through)
    topic = f"{service}.marks"
    await kafka.create(topic)
    await kafka.publish(topic, value, key=service, headers=headers, partition=0)


def escalation(
    ticket_id: str, number: str, level: int, metric: str = "first_response"
) -> EscalationRaised:
    """An SLA escalation of a ticket's clock (its first response by default), as sla records
    it (what dispatch and notify read on sla.events)."""
    return EscalationRaised(
        ticket_id=ticket_id,
        number=number,
        metric=metric,
        level=level,
        clock_id=f"clock-{ticket_id}-{metric}",
        breached_at=datetime(2026, 1, 1, tzinfo=UTC),
        cause_event_id=f"breach-{number}-{level}",
        policy_version="test",
    )


def assignment(
    ticket_id: str, number: str, agent: str, group: str = "front-line"
) -> TicketAssigned:
    """dispatch's ``TicketAssigned`` (what sla and notify read on dispatch.events)."""
    return TicketAssigned(
        ticket_id=ticket_id,
        number=number,
        group_id=group,
        agent_id=agent,
        strategy="least_loaded",
        reason="test",
        cause="classified",
        policy_version="test",
    )
