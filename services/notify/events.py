"""Events notify records (and publishes): the public contract of ``notify.events``.

One stream per notice (its de-duplication key). Recipients are masked: the events go to every
downstream system, addresses do not.
"""

from __future__ import annotations

import hashlib
import re

from shared.events import EventData, event
from shared.personal import OptionalPersonalText, PersonalText

EVENTS_TOPIC = "notify.events"
MESSAGES_TOPIC = "customer.messages"
"""Messages to customers of chat, web, api and phone (agents' replies): the adapter of each
channel delivers them (key: the ticket id)."""
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
    error: PersonalText
    """What the channel said, sealed for the ticket's customer: a receiver's answer may quote
    the notice it refused (the customer's name, what they wrote, their number)."""


@event("servicedesk.customer.message", version=1)
class CustomerMessage(EventData):
    """A message for the customer of a ticket that came in by chat, web, api or phone, for that
    channel's adapter to deliver (an agent's reply, or any notice whose rule names the
    ``messages`` channel). Published once per notice; ``notice_key`` lets an adapter drop a
    repeat."""

    notice_key: str
    ticket_id: str
    number: str
    channel: str
    """Where the ticket came in: the adapter that delivers it."""
    conversation: str
    """The channel message id that opened the ticket (the chat session, the call, the form)."""
    customer_id: OptionalPersonalText = None
    customer_name: PersonalText
    language: str
    template: str
    subject: PersonalText
    text: PersonalText
    cause_event_id: str


PUBLISHES: dict[str, tuple[type[EventData], ...]] = {
    EVENTS_TOPIC: (NotificationSent, NotificationFailed),
    MESSAGES_TOPIC: (CustomerMessage,),
}
"""What notify publishes, by topic (its service declares it; the registry's catalogue of owners)."""


MAIL_DOMAIN = "servicedesk"
_MAIL_TICKET = re.compile(r"^<?[0-9a-f]{24}\.([A-Za-z0-9-]{1,40})@" + MAIL_DOMAIN + r">?$")


NOTICE_HEADER = "X-Desk-Notice"
"""The header every notice's email carries (its notice key): a mail holding it is one of ours."""


def mail_message_id(notice_key: str, number: str) -> str:
    """The ``Message-ID`` of a notice's email: stable for the notice (a resend carries the same
    id, so receivers drop the repeat) and naming its ticket, so that a reply's ``In-Reply-To`` /
    ``References`` lead back to it (:func:`ticket_of_mail`)."""
    digest = hashlib.sha256(notice_key.encode()).hexdigest()[:24]
    return f"<{digest}.{number}@{MAIL_DOMAIN}>"


def ticket_of_mail(message_id: str) -> str | None:
    """The ticket number of one of notify's Message-IDs (None for anybody else's)."""
    found = _MAIL_TICKET.match(message_id.strip())
    return found.group(1).upper() if found else None
