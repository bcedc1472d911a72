"""Publishing another service's events in a test, as its relay would (envelope, headers, key)."""

from __future__ import annotations

from datetime import UTC, datetime

from services.sla.events import EscalationRaised
from shared.events import EventData, new_event_id
from shared.eventstore import EventStore, PendingEvent, with_version
from tests.support.kafka import KafkaProbe


async def publish_event(
    kafka: KafkaProbe,
    topic: str,
    data: EventData,
    *,
    stream_id: str,
    version: int = 1,
    subject: str | None = None,
    source: str = "servicedesk/test",
    correlation_id: str | None = None,
    time: datetime | None = None,
) -> str:
    """Publish one event; return its id."""
    pending = PendingEvent(
        data,
        time or datetime.now(UTC),
        correlation_id=correlation_id or subject or stream_id,
        subject=subject,
        id=new_event_id(),
    )
    stored = EventStore("test", source)._envelope_json(stream_id, pending, data.event_type())
    envelope = with_version(stored, version)
    headers = [("ce_id", str(pending.id).encode()), ("ce_type", data.event_type().encode())]
    await kafka.publish(topic, envelope.encode(), key=stream_id, headers=headers)
    return str(pending.id)


def escalation(ticket_id: str, number: str, level: int) -> EscalationRaised:
    """An SLA escalation of a ticket's first response, as sla records it."""
    return EscalationRaised(
        ticket_id=ticket_id,
        number=number,
        metric="first_response",
        level=level,
        clock_id=f"clock-{ticket_id}-first_response",
        breached_at=datetime(2026, 1, 1, tzinfo=UTC),
        cause_event_id=f"breach-{number}-{level}",
        policy_version="test",
    )
