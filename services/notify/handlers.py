"""notify's consumers: ticket events become notices; replayed dead letters are sent again.

Notices are stored (with their de-duplication keys) in the same transaction that marks the event
processed; sending happens afterwards, in the delivery worker, so a slow or failing recipient
never holds back a partition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from prometheus_client import Counter
from pydantic import BaseModel, ValidationError

from services.dispatch import events as dispatch
from services.intake import events as intake
from services.notify import sealing, storage
from services.notify.events import DELIVERIES_TOPIC, NotificationFailed
from services.notify.limits import LimitWarnings, within_limits
from services.notify.messages import publish_messages
from services.notify.outcomes import record_outcome
from services.notify.rules import (
    Notice,
    NoticeFacts,
    SurveyContext,
    assignee_of,
    evolve,
    fires,
    notices,
    waits,
)
from services.notify.storage import WaitingEvent
from services.notify.survey import SurveyLinks
from services.policy import Policy
from services.sla import events as sla
from shared.consumer import Delivered, EventSubscription, Inbound, Rejected, Subscription
from shared.deadletter import Reason, Record
from shared.keys import KeyRing
from shared.keystore import KeyStore
from shared.logging import get_logger
from shared.personal import keys_for
from shared.policyfile import PolicySchedule
from shared.provenance import sealed_by
from shared.unit_of_work import UnitOfWork

log = get_logger(__name__)
UNSENDABLE = Counter(
    "desk_notify_unsendable_total", "Notices that could not even be tried, by reason.", ["reason"]
)
EARLY = Counter(
    "desk_notify_waiting_for_receipt_total",
    "Events owing someone a notice that arrived before the ticket's receipt.",
)
UNROUTED = Counter(
    "desk_notify_waiting_for_routing_total",
    "Events owing the ticket's assignee or supervisors a notice that arrived before dispatch's "
    "routing of the ticket.",
)
HEARD = (
    intake.TicketReceived,
    intake.TicketTriaged,
    intake.CustomerReplied,
    dispatch.TicketAssigned,
    dispatch.TicketQueued,
    dispatch.TicketReassigned,
    dispatch.TicketEscalated,
    dispatch.TicketResponded,
    dispatch.NoteAdded,
    dispatch.WaitingForCustomer,
    dispatch.CustomerReminded,
    dispatch.LeftUnanswered,
    dispatch.TicketResolved,
    dispatch.TicketReopened,
    dispatch.TicketClosed,
    dispatch.SatisfactionRecorded,
    dispatch.CustomerFlagged,
    dispatch.SpecialistRequested,
    dispatch.FindingsProvided,
    sla.ClockWarned,
    sla.ClockBreached,
    sla.EscalationRaised,
)
"""What tells notify who a ticket's customer is and who has it, or may owe someone a notice."""


class NoticeTriggers(EventSubscription):
    """Events of intake, dispatch and sla that notify someone (and keep the ticket's facts)."""

    name = "tickets"
    topics = (intake.EVENTS_TOPIC, dispatch.EVENTS_TOPIC, sla.EVENTS_TOPIC)
    description = "Ticket events from intake, dispatch and sla: each may notify someone."
    accepts = tuple(kind.event_name for kind in HEARD)

    def __init__(
        self,
        policy: PolicySchedule[Policy],
        survey: SurveyLinks,
        keys: KeyStore,
        notices_due: Callable[[], None],
    ) -> None:
        self.policy = policy
        self.survey = survey
        self.keys = keys
        self.notices_due = notices_due
        self.limited = LimitWarnings()

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[Delivered]]) -> None:
        current, _ = await self.policy.adopt(uow.conn, uow.now)
        policy, version = current.policy, current.version

        def survey(number: str) -> dict[str, str]:
            return self.survey.context(number, uow.now)

        ids = [str(getattr(m.message.data, "ticket_id", "")) for m in messages]
        facts = await storage.lock_tickets(uow.conn, [i for i in ids if i])
        # Facts stay sealed as kept; notices are made from the clear text (erased: "erased").
        keys = await keys_for(
            self.keys, uow.conn, [*facts.values(), *(m.message.data for m in messages)]
        )
        before = {i: _readiness(f) for i, f in facts.items()}
        changed: set[str] = set()
        pending: list[Notice] = []
        early: list[WaitingEvent] = []
        for inbound in messages:
            delivered = inbound.message
            ticket = evolve(
                facts,
                delivered.data,
                at=delivered.envelope.time,
                reopen_window=policy.routing.reopen_window,
            )
            if ticket is None:
                continue  # an event about no ticket
            changed.add(ticket.ticket_id)
            trigger = delivered.envelope.type.removeprefix("servicedesk.").rsplit(".v", 1)[0]
            data, event_id = delivered.envelope.data, str(delivered.envelope.id)
            if waits(policy, ticket, trigger, data):
                early.append(WaitingEvent(ticket.ticket_id, event_id, trigger, data))
            # Opening the ticket costs; most events notify none.
            elif fires(policy, trigger, data, holder=assignee_of(ticket)):
                clear = keys.reveal(ticket)
                pending += notices(
                    policy,
                    clear,
                    trigger,
                    keys.reveal_json(data),
                    event_id,
                    survey=survey,
                    erased=partial(sealing.as_if_erased, ticket, data, keys),
                )
                ticket.thread = clear.thread  # the mails it threads, kept (the rest stays sealed)
        readier = [i for i in changed if _readiness(facts[i]) != before.get(i, (False, False))]
        released = await _release(uow, self.keys, policy, facts, readier, early, survey)
        await storage.save_tickets(uow.conn, [facts[i] for i in changed])
        # A batch's notices in the order their events were recorded (event ids are UUIDv7),
        # whichever topic was read first — the assignment before the reply that waited for it,
        # in the batch that read it: the order they are counted against limits and sent.
        made = sorted(released + pending, key=lambda notice: notice.cause_event_id)
        made = sealing.withheld(made, facts, keys)
        pending = await within_limits(uow.conn, made, facts, uow.now)
        kept = sealing.kept(pending, facts, keys)
        new = await storage.enqueue(uow.conn, kept, version, uow.now)
        if new:
            uow.on_commit(self.notices_due)
        publish_messages(uow, pending, new, facts, version)
        for notice in pending:
            if notice.failure and notice.notice_key in new:
                # Expected, not an operator's problem: a limited notice past the first of its
                # window, and every notice withheld from an erased customer.
                loud = notice.failure != sealing.ERASED_REASON and (
                    notice.failure != "limited" or self.limited.first(notice, uow.now)
                )
                _unsendable(uow, notice, version, loud=loud)


def _readiness(facts: NoticeFacts) -> tuple[bool, bool]:
    """What a waiting event can wait for (:func:`waits`): the receipt, dispatch's routing."""
    return facts.received, facts.group_id is not None


async def _release(  # noqa: PLR0917 - private; one call site names them
    uow: UnitOfWork,
    store: KeyStore,
    policy: Policy,
    facts: dict[str, NoticeFacts],
    readier: list[str],
    early: list[WaitingEvent],
    survey: SurveyContext,
) -> list[Notice]:
    """Return the notices of waiting events (kept before, or early in this batch) whose ticket
    now has what they waited for; keep the rest waiting, in their order."""
    due: list[WaitingEvent] = []
    still: list[WaitingEvent] = []
    for waiting in [*await storage.stop_waiting(uow.conn, readier), *early]:
        ticket = facts[waiting.ticket_id]
        (still if waits(policy, ticket, waiting.trigger, waiting.data) else due).append(waiting)
    keys = await keys_for(
        store, uow.conn, [*(facts[w.ticket_id] for w in due), *(w.data for w in due)]
    )
    released: list[Notice] = []
    for waiting in due:
        kept = facts[waiting.ticket_id]
        ticket = keys.reveal(kept)
        released += notices(
            policy,
            ticket,
            waiting.trigger,
            keys.reveal_json(waiting.data),
            waiting.event_id,
            survey=survey,
            erased=partial(sealing.as_if_erased, kept, waiting.data, keys),
        )
        facts[waiting.ticket_id].thread = ticket.thread  # the mails it threads, kept
    await storage.keep_waiting(uow.conn, still, uow.now)
    for waiting in (w for w in still if w.since is None):  # new: this batch's
        ticket = facts[waiting.ticket_id]
        (EARLY if not ticket.received else UNROUTED).inc()
        log.info(
            "notices wait for the ticket's " + ("routing" if ticket.received else "receipt"),
            ticket_id=waiting.ticket_id,
            ticket_number=ticket.number,
            event_id=waiting.event_id,
            trigger=waiting.trigger,
        )
    return released


def _unsendable(uow: UnitOfWork, notice: Notice, version: str, *, loud: bool) -> None:
    """Record a notice that cannot even be tried; a warning unless it is one more limited
    notice of a window already warned of (:class:`LimitWarnings`): those are at debug, each
    still recorded (``notification.failed``) and counted (``desk_notify_unsendable_total``)."""
    UNSENDABLE.labels(notice.failure or "").inc()
    say = log.warning if loud else log.debug
    whom = {"customer_ref": notice.customer_ref} if notice.customer_ref else {}
    say(
        "notice cannot be sent",
        notice=notice.notice_key,
        reason=notice.failure,
        error=notice.error,
        ticket_number=notice.number,
        **whom,
    )
    record_outcome(
        uow,
        NotificationFailed,
        notice,
        attempts=0,
        policy_version=version,
        reason=notice.failure or "",
        error=notice.error,
    )


class ReplayedNotice(BaseModel):
    """What notify dead-letters for a failed notice, and an operator's replay sends back."""

    notice_key: str


NOTIFY = "notify"


class Replays(Subscription[str]):
    """Dead-lettered notices an operator replayed (``desk dlq replay``): send them again.

    A record that is not such a notice (its value names no notice, or another one than its key)
    is dead-lettered with its reason, never read past in silence; a notice replayed that is no
    longer failed is left as it is (a second replay changes nothing).
    """

    name = "replays"
    topics = (DELIVERIES_TOPIC,)
    description = "Failed notices sent back by `desk dlq replay`; each is tried again."
    written_by = "operator"
    payload: Any = ReplayedNotice

    def __init__(self, keys: KeyRing, notices_due: Callable[[], None]) -> None:
        self.keys = keys
        self.notices_due = notices_due

    def decode(self, record: Record) -> str:
        try:
            replayed = ReplayedNotice.model_validate_json(record.value)
        except ValidationError as error:
            undecodable = any(e["type"] == "json_invalid" for e in error.errors())
            reason = Reason.UNDECODABLE if undecodable else Reason.SCHEMA_INVALID
            message = "not a replayed notice: " + str(error.errors()[0]["msg"])
            raise Rejected(reason, message) from None
        if record.key is None or record.key.decode("utf-8", "replace") != replayed.notice_key:
            raise Rejected(
                Reason.SCHEMA_INVALID, "a replayed notice needs its notice key as record key"
            )
        if sealed_by(self.keys, record) != NOTIFY:
            raise Rejected(
                Reason.UNAUTHENTICATED,
                "a replayed notice is one notify dead-lettered, with its seal (desk dlq replay "
                "keeps it); this one has none that holds",
            )
        return replayed.notice_key

    def message_id(self, message: str, record: Record) -> str:
        return f"replay:{record.coordinates}"

    async def handle(self, uow: UnitOfWork, messages: Sequence[Inbound[str]]) -> None:
        for inbound in messages:
            if await storage.send_again(uow.conn, inbound.message, uow.now):
                log.info("dead-lettered notice replayed", notice=inbound.message)
                uow.on_commit(self.notices_due)
