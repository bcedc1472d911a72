"""Events notify records (and publishes): the public contract of ``notify.events``.

One stream per notice (its de-duplication key). Recipients are masked: the events go to every
downstream system, addresses do not.
"""

from __future__ import annotations

from shared.events import EventData, event

EVENTS_TOPIC = "notify.events"
DELIVERIES_TOPIC = "notify.deliveries"
"""Failed notices are dead-lettered to ``notify.deliveries.dlq``; ``desk dlq replay`` sends them
back here, and notify tries them again from the first attempt."""


class NoticeEvent(EventData):
    notice_key: str
    ticket_id: str
    number: str
    cause_event_id: str
    recipient: str
    channel: str | None
    address: str | None
    template: str
    language: str
    attempts: int
    policy_version: str


@event("servicedesk.notification.sent", version=1)
class NotificationSent(NoticeEvent):
    """The channel accepted the notice (SMTP server, webhook receiver, SMS provider)."""


@event("servicedesk.notification.failed", version=1)
class NotificationFailed(NoticeEvent):
    """The notice could not be delivered and will not be tried again by itself."""

    reason: str
    error: str


PUBLISHES: dict[str, tuple[type[EventData], ...]] = {
    EVENTS_TOPIC: (NotificationSent, NotificationFailed)
}
"""What notify publishes, by topic (its service declares it; the registry's catalogue of owners)."""
