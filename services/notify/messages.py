"""Notices on the ``messages`` channel: published on ``customer.messages`` for the adapter of the
ticket's channel (chat, web, api, phone) to deliver.

Such a notice is sent the moment it is stored: the consumer that makes it records the
:class:`CustomerMessage` and its ``notification.sent`` in the same transaction, and the relay
publishes them — the outbox gives the topic exactly what it gives every event (once, or again
with the same event id after a crash; ``notice_key`` names the repeat). No delivery worker,
lease or retry is involved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from services.notify.events import CustomerMessage, NotificationSent
from services.notify.outcomes import record_outcome
from services.notify.rules import TOPIC_CHANNELS, Notice, NoticeFacts
from shared.eventstore import ANY_VERSION
from shared.personal import for_subject, ref_in
from shared.unit_of_work import Cause, UnitOfWork


def publish_messages(
    uow: UnitOfWork,
    notices: Sequence[Notice],
    new: set[str],
    facts: Mapping[str, NoticeFacts],
    policy_version: str,
) -> None:
    """Record the message of every new notice on a topic channel, and that it was sent."""
    for notice in notices:
        if notice.channel not in TOPIC_CHANNELS or notice.failure or notice.notice_key not in new:
            continue
        ticket = facts[notice.ticket_id]
        message: CustomerMessage = CustomerMessage(
            notice_key=notice.notice_key,
            ticket_id=notice.ticket_id,
            number=notice.number,
            channel=ticket.channel,
            conversation=notice.address or "",
            customer_id=ticket.customer_id,
            customer_name=ticket.customer_name,
            language=notice.language,
            template=notice.template,
            subject=notice.subject,
            text=notice.body,
            cause_event_id=notice.cause_event_id,
        )
        if (ref := ref_in(ticket.customer_name)) is not None:  # sealed as it is recorded
            message = for_subject(message, ref)
        # One stream per ticket: the key keeps a ticket's messages in order for its adapter.
        uow.caused_by(Cause(notice.ticket_id, notice.cause_event_id))(
            f"messages-{notice.ticket_id}",
            [message],
            expected_version=ANY_VERSION,
            subject=notice.ticket_id,
        )
        record_outcome(uow, NotificationSent, notice, attempts=1, policy_version=policy_version)
