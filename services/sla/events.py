"""Events sla records (and publishes): the public contract of ``sla.events``. Other services
import this module to read them; nothing else of sla."""

from __future__ import annotations

from datetime import datetime

from shared.events import EventData, event

EVENTS_TOPIC = "sla.events"


@event("servicedesk.sla.escalated", version=1)
class EscalationRaised(EventData):
    """A clock breached and stayed breached long enough: the ticket goes one level up."""

    ticket_id: str
    number: str
    metric: str
    level: int
    clock_id: str
    breached_at: datetime
    cause_event_id: str
    policy_version: str
