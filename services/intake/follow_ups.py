"""Follow-up tickets: a customer's reply that can no longer reopen its ticket opens a new one.

dispatch decides (it knows the ticket's state and the policy's reopen window) and asks with
``servicedesk.ticket.follow_up_requested``; intake, which numbers and triages tickets, opens the
new ticket from the reply — the old ticket's customer, the reply's subject (or the old
ticket's), text and attachments — with ``follows_up`` naming the old number, and records on the
old ticket ``servicedesk.ticket.follow_up_opened`` naming the new one: both timelines show the
link; dispatch gives the new ticket back to the old one's agent when it can.

One old ticket gets one follow-up at a time: a request for a ticket already followed up — the
customer wrote twice before the first follow-up was opened, so dispatch asked twice — becomes a
reply on its newest follow-up (opened earlier or in the same batch), as intake does for a reply
that arrives after it (``handlers``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pydantic import ValidationError

from services.dispatch.events import EVENTS_TOPIC as DISPATCH_EVENTS
from services.dispatch.events import FollowUpRequested, TicketClosed
from services.intake import storage
from services.intake.contract import Request
from services.intake.customers import Customers
from services.intake.events import CustomerReplied, FollowUpOpened, TicketReceived, ticket_stream
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
from shared.unit_of_work import Cause, UnitOfWork

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
        # The new ticket is made from clear text (and sealed again, under its customer's key):
        # no erasure may come between the opening and the sealing, or the erased customer's
        # data would be sealed anew under a new subject.
        await self.keys.hold_for_meeting(uow.conn)
        keys = await keys_for(self.keys, uow.conn, [*receipts.values(), *(d for _, d in asked)])
        made: list[Asked] = []
        for envelope, data in asked:
            receipt = receipts[data.ticket_id]
            clear = keys.reveal(data)
            request = None if receipt is None else _request(clear, keys.reveal(receipt))
            if request is not None:
                made.append(Asked(envelope, clear, request))
        followed = await storage.newest_follow_ups(uow.conn, [a.data.number for a in made])
        to_open, onward = _one_follow_up_each(made, followed)
        customers = await Customers.of(self.keys, uow.conn, [a.request.customer for a in made])
        opened = await record_tickets(
            uow,
            [a.request for a in to_open],
            current.policy,
            current.version,
            customers,
            follows_up=[a.data.number for a in to_open],
        )
        for ask, (number, ticket_id) in zip(to_open, opened, strict=True):
            link = FollowUpOpened(
                ticket_id=ask.data.ticket_id,
                number=ask.data.number,
                follow_up_ticket_id=ticket_id,
                follow_up_number=number,
                request_event_id=str(ask.envelope.id),
            )
            uow.caused_by(ask.envelope)(
                ticket_stream(ask.data.ticket_id),
                [link],
                expected_version=ANY_VERSION,
                subject=ask.data.ticket_id,
            )
        await _reply_onward(uow, customers, onward, opened)


@dataclass(slots=True)
class Asked:
    """A follow-up request (its personal fields in clear) and the ticket request it makes."""

    envelope: Envelope
    data: FollowUpRequested
    request: Request


def _one_follow_up_each(
    made: list[Asked], followed: dict[str, str]
) -> tuple[list[Asked], list[tuple[Asked, str | int]]]:
    """The requests that open a follow-up, and those whose ticket has one already — its newest
    (``followed``: by old number), or one opened earlier in this batch (by its index in the
    first list) — each with the follow-up its reply goes to."""
    to_open: list[Asked] = []
    onward: list[tuple[Asked, str | int]] = []
    opening: dict[str, int] = {}
    for ask in made:
        number = ask.data.number
        target = followed.get(number, opening.get(number))
        if target is None:
            opening[number] = len(to_open)
            to_open.append(ask)
        else:
            onward.append((ask, target))
    return to_open, onward


async def _reply_onward(
    uow: UnitOfWork,
    customers: Customers,
    onward: list[tuple[Asked, str | int]],
    opened: list[tuple[str, str]],
) -> None:
    """Record each reply of ``onward`` (clear) on the follow-up it goes to — a number, or the
    index of one opened in this batch — unless that follow-up holds it already (the request
    replayed after intake's claims were purged)."""
    if not onward:
        return
    numbers = {target: _number(target, opened) for _, target in onward}
    tickets = await storage.tickets_by_number(uow.conn, list(numbers.values()))
    held = await uow.store.read_streams(
        uow.conn, [ticket_stream(tickets[n]) for n in numbers.values() if n in tickets]
    )
    for ask, target in onward:
        data, number = ask.data, numbers[target]
        # One opened in this batch is not in the index until the batch commits.
        ticket_id = tickets.get(number) or dict(opened).get(number)
        if ticket_id is None:  # the index lost it: the reply stays on the old ticket alone
            log.warning("follow-up not found", ticket_number=data.number, follow_up=number)
            continue
        stream = ticket_stream(ticket_id)
        if any(_same_message(e.decode(), data) for e in held.get(stream, [])):
            continue
        log.info(
            "a second follow-up asked of one ticket: the reply goes to its follow-up",
            ticket_number=data.number,
            follow_up=number,
            channel_message_id=data.channel_message_id,
        )
        said = data.model_dump(include=_THE_REPLY)
        reply = CustomerReplied.model_validate({**said, "ticket_id": ticket_id, "number": number})
        # Part of the follow-up's story (its correlation), caused by dispatch's request.
        uow.caused_by(Cause(ticket_id, str(ask.envelope.id)))(
            stream,
            [customers.seal(ask.request.customer, reply)],
            expected_version=ANY_VERSION,
            subject=ticket_id,
        )


_THE_REPLY = {"channel", "channel_message_id", "received_at", "subject", "body", "attachments"}
"""What dispatch's request repeats of the customer's reply."""


def _number(target: str | int, opened: list[tuple[str, str]]) -> str:
    return opened[target][0] if isinstance(target, int) else target


def _same_message(event: object, asked: FollowUpRequested) -> bool:
    return isinstance(event, CustomerReplied) and (event.channel, event.channel_message_id) == (
        asked.channel,
        asked.channel_message_id,
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
