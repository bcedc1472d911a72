"""Follow-up tickets: a customer's reply that can no longer reopen its ticket opens a new one.

dispatch decides (it knows the ticket's state and the policy's reopen window) and asks with
``servicedesk.ticket.follow_up_requested``; intake, which numbers and triages tickets, opens the
new ticket from the reply — the old ticket's customer, the reply's subject (or the old
ticket's), text and attachments — with ``follows_up`` naming the old number, and records on the
old ticket ``servicedesk.ticket.follow_up_opened`` naming the new one: both timelines show the
link; dispatch gives the new ticket back to the old one's agent when it can.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from services.dispatch.events import EVENTS_TOPIC as DISPATCH_EVENTS
from services.dispatch.events import FollowUpRequested, TicketClosed
from services.intake import storage
from services.intake.contract import Request
from services.intake.customers import Customers
from services.intake.events import FollowUpOpened, TicketReceived, ticket_stream
from services.intake.handlers import record_tickets
from services.intake.retention import record_closures
from services.policy import Policy
from shared.consumer import Delivered, EventSubscription, Inbound
from shared.events import Envelope
from shared.eventstore import ANY_VERSION, RecordedEvent
from shared.keystore import KeyStore
from shared.logging import get_logger
from shared.personal import keys_for
from shared.policyfile import PolicySchedule
from shared.unit_of_work import UnitOfWork

log = get_logger(__name__)


class FollowUps(EventSubscription):
    """dispatch's requests for a follow-up ticket (a reply to a closed or long-resolved one)."""

    name = "follow_ups"
    topics = (DISPATCH_EVENTS,)
    description = "Follow-up tickets dispatch asks for (each a new ticket, linked); closed tickets."
    accepts = (FollowUpRequested.event_name, TicketClosed.event_name)

    def __init__(self, policy: PolicySchedule[Policy], keys: KeyStore) -> None:
        self.policy = policy
        self.keys = keys

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[Delivered]]) -> None:
        await record_closures(uow, messages)  # for the retention of customers' data
        asked = await _not_opened_yet(
            uow,
            [
                (m.message.envelope, m.message.data)
                for m in messages
                if isinstance(m.message.data, FollowUpRequested)
            ],
        )
        if not asked:
            return
        current, _ = await self.policy.adopt(uow.conn, uow.now)
        streams = await uow.store.read_streams(
            uow.conn, [ticket_stream(data.ticket_id) for _, data in asked]
        )
        receipts = {
            data.ticket_id: _receipt(data, streams.get(ticket_stream(data.ticket_id), []))
            for _, data in asked
        }
        # The new ticket is made from clear text (and sealed again, under its customer's key).
        keys = await keys_for(self.keys, uow.conn, [*receipts.values(), *(d for _, d in asked)])
        requests: list[Request] = []
        links: list[tuple[Envelope, FollowUpRequested]] = []
        for envelope, data in asked:
            receipt = receipts[data.ticket_id]
            if receipt is None:
                continue
            request = _request(keys.reveal(data), keys.reveal(receipt))
            if request is not None:
                requests.append(request)
                links.append((envelope, data))
        customers = await Customers.of(self.keys, uow.conn, [r.customer for r in requests])
        opened = await record_tickets(
            uow,
            requests,
            current.policy,
            current.version,
            customers,
            follows_up=[d.number for _, d in links],
        )
        for (envelope, data), (number, ticket_id) in zip(links, opened, strict=True):
            link = FollowUpOpened(
                ticket_id=data.ticket_id,
                number=data.number,
                follow_up_ticket_id=ticket_id,
                follow_up_number=number,
                request_event_id=str(envelope.id),
            )
            uow.caused_by(envelope)(
                ticket_stream(data.ticket_id),
                [link],
                expected_version=ANY_VERSION,
                subject=data.ticket_id,
            )


async def _not_opened_yet(
    uow: UnitOfWork, asked: list[tuple[Envelope, FollowUpRequested]]
) -> list[tuple[Envelope, FollowUpRequested]]:
    """The requests whose reply has made no ticket yet: one asked again — dispatch's events
    replayed after their claims were purged, the same reply judged twice — is answered by the
    follow-up it already has (a second ticket of one message would be refused by the index,
    and the batch retried into a dead letter)."""
    keys = [(data.channel, data.channel_message_id) for _, data in asked]
    made = await storage.tickets_by_message(uow.conn, keys)
    fresh: list[tuple[Envelope, FollowUpRequested]] = []
    seen: set[tuple[str, str]] = set()
    for envelope, data in asked:
        key = (data.channel, data.channel_message_id)
        if made.get(key, data.number) != data.number or key in seen:
            log.info("follow-up already opened", ticket_number=data.number, follow_up=made.get(key))
            continue
        seen.add(key)
        fresh.append((envelope, data))
    return fresh


def _receipt(asked: FollowUpRequested, history: Sequence[RecordedEvent]) -> TicketReceived | None:
    """The old ticket's receipt; None (logged) when intake holds none."""
    receipt = next((d for e in history if isinstance(d := e.decode(), TicketReceived)), None)
    if receipt is None:
        log.warning("follow-up of a ticket intake never recorded", ticket_number=asked.number)
    return receipt


def _request(asked: FollowUpRequested, receipt: TicketReceived) -> Request | None:
    """The new ticket's request: the old ticket's customer, the reply's content (both in clear).
    None (logged) when the reply does not make a request (or its customer was erased)."""
    try:
        return Request.model_validate(
            {
                "channel": asked.channel,
                "channel_message_id": asked.channel_message_id,
                "received_at": asked.received_at,
                "customer": receipt.customer.model_dump(exclude_none=True, exclude={"ref"}),
                "subject": _subject(asked, receipt),
                "description": asked.body,
                "product_line": receipt.product_line,
                "problem_type": receipt.problem_type,
                "priority": receipt.priority,
                "attachments": [a.model_dump() for a in asked.attachments],
            }
        )
    except ValidationError as error:
        log.warning("follow-up not opened", ticket_number=asked.number, error=str(error)[:300])
        return None


def _subject(asked: FollowUpRequested, receipt: TicketReceived) -> str:
    """The reply's subject, unless it names the old ticket's number: then it is the subject of
    one of the desk's own notices ("Re: [REQ-…] is closed"), which says nothing of the problem,
    and the follow-up takes the old ticket's subject."""
    return receipt.subject if asked.number in asked.subject else asked.subject
