"""Publishing another service's events in a test, as its relay would (envelope, headers, key)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

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
    partition: int | None = None,
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
    await kafka.publish(
        topic, envelope.encode(), key=stream_id, headers=headers, partition=partition
    )
    return str(pending.id)


def escalation(ticket_id: str, number: str, level: int, metric: str = "first_response") -> Any:
    """sla's ``EscalationRaised`` for a ticket (what dispatch and notify read on sla.events)."""
    from services.sla.events import EscalationRaised

    return EscalationRaised(
        ticket_id=ticket_id,
        number=number,
        metric=metric,
        level=level,
        clock_id=f"clock-{ticket_id}-{metric}",
        breached_at=datetime(2026, 1, 1, tzinfo=UTC),
        cause_event_id=f"breach-{level}",
        policy_version="v",
    )


def assignment(ticket_id: str, number: str, agent: str, group: str = "front-line") -> Any:
    """dispatch's ``TicketAssigned`` (what sla and notify read on dispatch.events)."""
    from services.dispatch.events import TicketAssigned

    return TicketAssigned(
        ticket_id=ticket_id,
        number=number,
        group_id=group,
        agent_id=agent,
        strategy="least_loaded",
        reason="test",
        cause="classified",
        policy_version="v",
    )
