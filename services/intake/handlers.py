"""intake's consumer: a batch of ``requests.incoming`` records in, tickets and rejections out.

For each record of a poll, in one transaction (the kernel's consumer plumbing): refused records
become ``RequestRejected`` (published on ``requests.rejected``); new requests get a number and a
triage and become ``TicketReceived`` + ``TicketTriaged``; replies to a known ticket become
``CustomerReplied`` — named by ``reply_to_ticket``, or found by ``in_reply_to`` (a message that
made a ticket or a reply, also earlier in the same batch) — and replies to an unknown number are
refused. A reply to a ticket that has been followed up goes to its newest follow-up. A reply
whose sender is not the ticket's customer (:func:`same_customer`) neither reopens nor wakes that
ticket, nor tells its assignee anything: it becomes a ticket of its own,
unlinked (the safer of the two ways: nothing the sender wrote is lost, nothing of the other
ticket is shown to them, and a guessed ticket number or a forged thread changes no one else's
ticket). A request whose channel message was recorded before is absorbed: one channel message,
one ticket. A new request or reply whose ``received_at`` lies outside the policy's bounds around
intake's clock is refused (``received_at_out_of_range``): the clocks it would start cannot be
trusted. A refused request does not claim its (channel, message id): sent again, corrected, it is
evaluated anew.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import cast

from prometheus_client import Counter

from services.intake import storage
from services.intake.contract import (
    INCOMING_TOPIC,
    MAX_MESSAGE_BYTES,
    Customer,
    Reason,
    Refusal,
    Request,
    read_request,
)
from services.intake.customers import Customers, SealedTexts, rejected_subject, seal_for
from services.intake.events import (
    AttachmentRef,
    CustomerDetails,
    CustomerReplied,
    RejectedSource,
    RequestRejected,
    TicketReceived,
    TicketTriaged,
    ticket_stream,
)
from services.intake.triage import Triage, triage
from services.policy import Policy
from shared.consumer import Inbound, Subscription
from shared.database import Connection
from shared.deadletter import Reason as Unread
from shared.deadletter import Record
from shared.durations import format_duration
from shared.events import format_time, new_event_id
from shared.eventstore import ANY_VERSION, NO_STREAM
from shared.keystore import KeyStore
from shared.logging import get_logger
from shared.personal import keys_for
from shared.policyfile import PolicySchedule
from shared.privacy import scrub
from shared.unit_of_work import Cause, UnitOfWork

log = get_logger(__name__)

PREVIEW_BYTES = 4096

OUTCOMES = Counter(
    "desk_intake_requests_total",
    "Requests by outcome (ticket, reply, duplicate, rejected) and reason code.",
    ["outcome", "reason"],
)
TICKETS, REPLIES, DUPLICATES = (OUTCOMES.labels(o, "") for o in ("ticket", "reply", "duplicate"))

Incoming = Request | Refusal


class Requests(Subscription[Incoming]):
    """Requests from channel adapters, validated, de-duplicated, numbered and triaged."""

    name = "requests"
    topics = (INCOMING_TOPIC,)
    description = (
        "Requests from channel adapters (phone, chat, email, web, api). Key: channel and "
        "channel message id. Invalid ones are answered on requests.rejected with a reason code."
    )
    payload = Request

    def __init__(self, policy: PolicySchedule[Policy], keys: KeyStore) -> None:
        self.policy = policy
        self.keys = keys

    def decode(self, record: Record) -> Incoming:
        return read_request(record.value)

    def unreadable(self, record: Record, reason: str, detail: str) -> Incoming | None:
        """A record over the kernel's size bound is refused like any too large a request.
        (:func:`read_request` never raises; if it ever did, the record would be a dead letter
        to replay once that is fixed.)"""
        if reason == Unread.TOO_LARGE:
            limit = f"{len(record.value)} bytes; at most {MAX_MESSAGE_BYTES}"
            return Refusal(Reason.MESSAGE_TOO_LARGE, "", limit)
        return None

    def message_id(self, message: Incoming, record: Record) -> str:
        if isinstance(message, Request):
            return message.key
        return f"refused:{record.coordinates}"

    async def owner(self, conn: Connection, record: Record) -> str | None:
        """A request is its customer's data through and through: a dead letter of one is
        sealed under the customer it names (made if new), else under a subject of its own."""
        return (await rejected_subject(self.keys, conn, record.value)).ref

    def log_context(self, message: Incoming) -> dict[str, object]:
        if isinstance(message, Request) and message.reply_to_ticket:
            return {"ticket_number": message.reply_to_ticket}
        return {}

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[Incoming]]) -> None:
        current, _ = await self.policy.adopt(uow.conn, uow.now)
        policy, version = current.policy, current.version
        requests = cast(
            "list[Inbound[Request]]", [m for m in messages if isinstance(m.message, Request)]
        )
        keys = [(m.message.channel, m.message.channel_message_id) for m in requests]
        known = await storage.known_messages(uow.conn, keys)
        threads = await storage.tickets_by_message(
            uow.conn, [(m.message.channel, i) for m in requests for i in m.message.in_reply_to]
        )
        new: list[Request] = []
        replies: list[tuple[Inbound[Request], str | int]] = []
        refused: list[tuple[Record, Refusal]] = []
        opened: dict[tuple[str, str], int] = {}  # this batch's new tickets, by channel message
        bounds = policy.intake.received_at
        for inbound in requests:
            request = inbound.message
            if (request.channel, request.channel_message_id) in known:
                DUPLICATES.inc()
                continue
            if not bounds.allows(request.received_at, uow.now):
                refused.append((inbound.record, _out_of_range(request, uow.now, policy)))
                inbound.release()  # sent again (its date fixed), it is evaluated anew
                continue
            target = request.reply_to_ticket or _thread(request, threads, opened)
            if target is None:
                opened[(request.channel, request.channel_message_id)] = len(new)
                new.append(request)
            else:
                replies.append((inbound, target))
        replies = await _to_newest_follow_ups(uow, replies)
        tickets = await self._senders_checked(uow, new, replies)
        customers = await Customers.of(
            self.keys,
            uow.conn,
            [r.customer for r in new] + [i.message.customer for i, _ in replies],
        )
        numbers = await record_tickets(uow, new, policy, version, customers)
        await self._record_replies(
            uow, replies, tickets, numbers, customers=customers, refused=refused
        )
        for message in messages:
            if isinstance(message.message, Refusal):
                refused.append((message.record, message.message))
        for record, refusal in refused:
            await self._reject(uow, record, refusal)

    async def _senders_checked(
        self,
        uow: UnitOfWork,
        new: list[Request],
        replies: list[tuple[Inbound[Request], str | int]],
    ) -> dict[str, str]:
        """Move the replies whose sender is not their ticket's customer to ``new`` (in place);
        return the ticket id of each number replied to."""
        tickets = await storage.tickets_by_number(
            uow.conn, [t for _, t in replies if isinstance(t, str)]
        )
        customers = await self._customers(uow, tickets.values())
        for inbound, target in list(replies):
            request = inbound.message
            if isinstance(target, int):
                theirs: Customer | CustomerDetails | None = new[target].customer
            else:
                theirs = customers.get(tickets.get(target, ""))
            if theirs is not None and not same_customer(theirs, request.customer):
                replies.remove((inbound, target))
                new.append(request)
                log.info(
                    "a reply from another sender than the ticket's customer: a ticket of its own",
                    ticket_number=target if isinstance(target, str) else None,
                    channel=request.channel,
                    channel_message_id=request.channel_message_id,
                )
        return tickets

    async def _customers(
        self, uow: UnitOfWork, ticket_ids: Iterable[str]
    ) -> dict[str, CustomerDetails]:
        """The customer of each ticket intake recorded, by ticket id (its receipt's)."""
        wanted = list(ticket_ids)
        if not wanted:
            return {}
        received = await uow.store.read_subjects(uow.conn, wanted, [TicketReceived.event_type()])
        receipts = {
            ticket_id: receipt
            for ticket_id, events in received.items()
            if events and isinstance(receipt := events[0].decode(), TicketReceived)
        }
        # Sealed in the store: compared in clear (an erased customer matches no one).
        opening = await keys_for(self.keys, uow.conn, list(receipts.values()))
        return {t: opening.reveal(receipt).customer for t, receipt in receipts.items()}

    async def _record_replies(
        self,
        uow: UnitOfWork,
        replies: list[tuple[Inbound[Request], str | int]],
        known: dict[str, str],
        in_batch: list[tuple[str, str]],
        *,
        customers: Customers,
        refused: list[tuple[Record, Refusal]],
    ) -> None:
        """Record replies: to a ticket number, or (an int) to the n-th new ticket of the batch."""
        tickets = {**known, **dict(in_batch)}
        for inbound, target in replies:
            request = inbound.message
            number = in_batch[target][0] if isinstance(target, int) else target
            ticket_id = tickets.get(number)
            if ticket_id is None:
                refusal = Refusal(
                    Reason.UNKNOWN_REPLY_TICKET,
                    "reply_to_ticket",
                    f"no ticket numbered {number}",
                    channel=request.channel,
                    channel_message_id=request.channel_message_id,
                )
                refused.append((inbound.record, refusal))
                inbound.release()
                continue
            reply = customers.seal(
                request.customer,
                CustomerReplied(
                    ticket_id=ticket_id,
                    number=number,
                    channel=request.channel,
                    channel_message_id=request.channel_message_id,
                    received_at=request.received_at,
                    subject=request.subject,
                    body=request.description,
                    attachments=_attachments(request),
                ),
            )
            uow.caused_by(Cause(ticket_id))(
                ticket_stream(ticket_id), [reply], expected_version=ANY_VERSION, subject=ticket_id
            )
            REPLIES.inc()

    async def _reject(self, uow: UnitOfWork, record: Record, refusal: Refusal) -> None:
        preview = record.value[:PREVIEW_BYTES]
        subject = await rejected_subject(self.keys, uow.conn, record.value)
        rejected = RequestRejected(
            reason=refusal.reason,
            # Bounded and with contact data masked: they are for operators and logs. The
            # original bytes below go back to the adapter as they came.
            field=scrub(refusal.field[:200]),
            message=scrub(refusal.message[:500]),
            problems=[scrub(p[:300]) for p in refusal.problems[:20]],
            channel=refusal.channel,
            channel_message_id=refusal.channel_message_id,
            source=RejectedSource(
                topic=record.topic, partition=record.partition, offset=record.offset
            ),
            original_size=len(record.value),
            original_preview=preview.decode("utf-8", "replace").replace("\x00", "\ufffd"),
            original_base64=base64.b64encode(preview).decode(),
            truncated=len(record.value) > PREVIEW_BYTES,
            customer_ref=subject.ref,
        )
        uow.caused_by(Cause(str(new_event_id())))(
            f"rejection-{record.topic}-{record.partition}-{record.offset}",
            [seal_for(subject, rejected)],
            expected_version=ANY_VERSION,
        )
        OUTCOMES.labels("rejected", refusal.reason).inc()
        log.warning(
            "request rejected",
            reason=refusal.reason,
            field=rejected.field,
            detail=rejected.message[:200],
            channel=refusal.channel,
            channel_message_id=refusal.channel_message_id,
            record=record.coordinates,
        )


def _out_of_range(request: Request, now: datetime, policy: Policy) -> Refusal:
    bounds = policy.intake.received_at
    return Refusal(
        Reason.RECEIVED_AT_OUT_OF_RANGE,
        "received_at",
        f"{request.received_at.isoformat()} is more than {format_duration(bounds.max_past)} "
        f"before or {format_duration(bounds.max_future)} after intake's clock "
        f"({format_time(now)})",
        channel=request.channel,
        channel_message_id=request.channel_message_id,
    )


async def _to_newest_follow_ups(
    uow: UnitOfWork, replies: list[tuple[Inbound[Request], str | int]]
) -> list[tuple[Inbound[Request], str | int]]:
    """Replies to a ticket that has been followed up go to its newest follow-up: the customer
    answering the old ticket's mail again is talking about the same problem, which that ticket
    now holds — not opening yet another ticket beside it. The follow-up then takes the reply as
    any ticket does (a reply to it closed in turn follows it up)."""
    newest = await storage.newest_follow_ups(
        uow.conn, [t for _, t in replies if isinstance(t, str)]
    )
    if not newest:
        return replies
    for inbound, target in replies:
        if isinstance(target, str) and target in newest:
            log.info(
                "a reply to a ticket that was followed up goes to its newest follow-up",
                ticket_number=target,
                follow_up=newest[target],
                channel_message_id=inbound.message.channel_message_id,
            )
    return [(i, newest.get(t, t) if isinstance(t, str) else t) for i, t in replies]


def same_customer(ticket: Customer | CustomerDetails, sender: Customer) -> bool:
    """Whether a reply comes from the ticket's customer: the same e-mail address or phone
    number — what the channel vouches for (the mail server's verdict on the sender, the channel
    client's token); a name or customer id in the body proves nothing."""
    return bool(
        (sender.email and sender.email == ticket.email)
        or (sender.phone and sender.phone == ticket.phone)
    )


def _thread(
    request: Request, threads: dict[tuple[str, str], str], opened: dict[tuple[str, str], int]
) -> str | int | None:
    """The ticket a request answers by its thread (``in_reply_to``): a known number, or the
    index of a new ticket earlier in this batch; None for a new ticket."""
    for message_id in request.in_reply_to:
        key = (request.channel, message_id)
        if key in threads:
            return threads[key]
        if key in opened:
            return opened[key]
    return None


async def record_tickets(
    uow: UnitOfWork,
    new: Sequence[Request],
    policy: Policy,
    version: str,
    customers: Customers,
    *,
    follows_up: Sequence[str | None] = (),
) -> list[tuple[str, str]]:
    """Number, triage and record new tickets, their personal fields sealed under each one's
    customer (``follows_up``: for each, the number of the ticket it follows up, if any); return
    (number, ticket id) of each, in order."""
    zone = policy.numbering.zone
    years = [request.received_at.astimezone(zone).year for request in new]
    counters = await storage.allocate_numbers(uow.conn, years)
    numbered: list[tuple[str, str]] = []
    # Sealed in a loop of their own, not between each ticket's triage and events: the same
    # work costs less run back to back (bench.sealing: +26-30 % against +21-26 %, alternated).
    sealed = [customers.sealed(request) for request in new]
    for index, (request, year, texts) in enumerate(zip(new, years, sealed, strict=True)):
        number = format_number(policy, year, counters[year].pop(0))
        ticket_id = str(new_event_id())
        result = triage(request, policy.triage, version)
        numbered.append((number, ticket_id))
        receipt = received(ticket_id, number, request, texts, result.language)
        follow = follows_up[index] if index < len(follows_up) else None
        if follow:
            receipt = receipt.model_copy(update={"follows_up": follow})
        events = [receipt, triaged(ticket_id, number, request, texts, result, follows_up=follow)]
        # A new ticket starts a story: every event it causes carries its id as correlation.
        uow.caused_by(Cause(ticket_id))(
            ticket_stream(ticket_id),
            events,
            expected_version=NO_STREAM,
            subject=ticket_id,
        )
        log.info(
            "ticket recorded",
            ticket_id=ticket_id,
            ticket_number=number,
            channel=request.channel,
            complexity=result.complexity,
            category=result.category,
            reason=result.reason,
            follows_up=receipt.follows_up,
        )
    TICKETS.inc(len(new))
    return numbered


def format_number(policy: Policy, year: int, counter: int) -> str:
    """``REQ-2026-000123``: readable, and unique because each year's counter is a PostgreSQL
    sequence."""
    numbering = policy.numbering
    return f"{numbering.prefix}-{year}-{counter:0{numbering.digits}d}"


def received(
    ticket_id: str, number: str, request: Request, texts: SealedTexts, language: str
) -> TicketReceived:
    """The receipt: ``request``'s personal fields as ``texts`` holds them (sealed)."""
    customer = request.customer
    return TicketReceived(
        ticket_id=ticket_id,
        number=number,
        channel=request.channel,
        channel_message_id=request.channel_message_id,
        received_at=request.received_at,
        customer=CustomerDetails(
            name=texts.name,
            email=texts.email,
            phone=texts.phone,
            customer_id=texts.customer_id,
            language=customer.language,
            tier=customer.tier,
            ref=texts.ref,
        ),
        subject=texts.subject,
        description=texts.description,
        product_line=request.product_line,
        problem_type=request.problem_type,
        priority=request.priority,
        language=language,
        attachments=texts.attachments,
    )


def triaged(
    ticket_id: str,
    number: str,
    request: Request,
    texts: SealedTexts,
    result: Triage,
    *,
    follows_up: str | None = None,
) -> TicketTriaged:
    """The triage, public: ``customer_key`` is the customer's pseudonym (their data subject's
    reference), so services that only need to recognise a customer across tickets (dispatch's
    flags) hold nothing that names them, and nothing that does once they are erased."""
    return TicketTriaged(
        ticket_id=ticket_id,
        number=number,
        complexity=result.complexity,
        category=result.category,
        complaint=result.complaint,
        complaint_severity=result.complaint_severity,
        rule=result.rule,
        matched=list(result.matched),
        reason=result.reason,
        policy_version=result.policy_version,
        channel=request.channel,
        priority=request.priority,
        language=result.language,
        product_line=request.product_line,
        problem_type=request.problem_type,
        customer_tier=request.customer.tier,
        subject=texts.subject,
        received_at=request.received_at,
        customer_key=texts.ref,
        follows_up=follows_up or None,
    )


def _attachments(request: Request) -> list[AttachmentRef]:
    return [
        AttachmentRef(name=a.name, size=a.size, content_type=a.content_type, url=a.url)
        for a in request.attachments
    ]
