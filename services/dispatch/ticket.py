"""A ticket's lifecycle as dispatch keeps it: its state, how each event changes it, and which
commands are allowed, from which state, by whom. Pure.

States: queued, assigned, accepted, in_progress, waiting_for_customer, resolved, closed. The
table :data:`ALLOWED_FROM` is the state machine; :data:`WHO` the permissions. Both are checked
before any event is produced, so a refused command changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from services.dispatch.events import (
    CustomerFlagged,
    CustomerReminded,
    FindingsProvided,
    LeftUnanswered,
    SatisfactionRecorded,
    SpecialistRequested,
    Status,
    TicketAccepted,
    TicketAssigned,
    TicketClassified,
    TicketClosed,
    TicketEscalated,
    TicketQueued,
    TicketReassigned,
    TicketReclassified,
    TicketReopened,
    TicketResolved,
    TicketResponded,
    TicketResumed,
    WaitingForCustomer,
    WorkStarted,
)
from services.vocabulary import PRIORITY_RANK, Priority
from shared.events import EventData

OPEN: frozenset[Status] = frozenset(
    {"queued", "assigned", "accepted", "in_progress", "waiting_for_customer"}
)
LOADED: frozenset[Status] = frozenset(
    {"assigned", "accepted", "in_progress", "waiting_for_customer"}
)
"""States in which a ticket counts against its agent's capacity."""

TicketCommandType = Literal[
    "accept",
    "respond",
    "start_work",
    "add_note",
    "request_customer_info",
    "resolve",
    "reopen",
    "close",
    "reassign",
    "escalate",
    "reclassify",
    "flag_customer",
    "request_specialist",
    "provide_findings",
    "record_satisfaction",
]
ActorKind = Literal["assignee", "agent", "supervisor", "specialist", "customer", "system"]
"""``specialist``: a member (or supervisor) of the group the ticket's specialist request asks."""
WORKING: frozenset[Status] = frozenset({"accepted", "in_progress", "waiting_for_customer"})

ALLOWED_FROM: dict[TicketCommandType, frozenset[Status]] = {
    "accept": frozenset({"assigned"}),
    "respond": frozenset({"accepted", "in_progress", "waiting_for_customer"}),
    "start_work": frozenset({"accepted"}),
    "add_note": OPEN | {"resolved"},
    "request_customer_info": frozenset({"accepted", "in_progress"}),
    "resolve": frozenset({"accepted", "in_progress", "waiting_for_customer"}),
    "reopen": frozenset({"resolved"}),
    "close": frozenset({"resolved"}),
    "reassign": OPEN,
    "escalate": OPEN,
    "reclassify": OPEN,
    "flag_customer": OPEN,
    "request_specialist": WORKING,
    "provide_findings": OPEN,
    "record_satisfaction": frozenset({"resolved", "closed"}),
}
WHO: dict[TicketCommandType, frozenset[ActorKind]] = {
    "accept": frozenset({"assignee"}),
    "respond": frozenset({"assignee", "supervisor"}),
    "start_work": frozenset({"assignee"}),
    "add_note": frozenset({"assignee", "agent", "supervisor"}),
    "request_customer_info": frozenset({"assignee"}),
    "resolve": frozenset({"assignee", "supervisor"}),
    "reopen": frozenset({"customer", "supervisor"}),
    "close": frozenset({"assignee", "supervisor", "customer", "system"}),
    "reassign": frozenset({"assignee", "supervisor"}),
    "escalate": frozenset({"assignee", "supervisor"}),
    "reclassify": frozenset({"assignee", "supervisor"}),
    "flag_customer": frozenset({"assignee", "supervisor"}),
    "request_specialist": frozenset({"assignee", "supervisor"}),
    "provide_findings": frozenset({"specialist"}),
    "record_satisfaction": frozenset({"customer", "system"}),
}
"""Who may give each command. Reassigning to another group is for supervisors only;
reclassifying moves a ticket only where routing sends its corrected class."""


@dataclass
class Ticket:
    """Dispatch's view of one ticket (folded from its events)."""

    ticket_id: str
    number: str
    status: Status
    group_id: str
    agent_id: str | None
    priority: Priority
    language: str
    product_line: str | None
    problem_type: str | None
    complexity: str
    category: str
    complaint_severity: str
    channel: str
    subject: str
    received_at: datetime
    queued_at: datetime | None = None
    escalation_level: int = 0
    responded: bool = False
    satisfaction: int | None = None
    version: int = 0
    updated_at: datetime | None = None
    resolved_at: datetime | None = None
    """When it was last resolved: a customer's reply within the reopen window reopens it."""
    customer_key: str | None = None
    customer_flag: str | None = None
    """Why the customer was flagged (on this ticket or an earlier one)."""
    specialist_group: str | None = None
    """The group a specialist request waits on (None: no request open)."""
    waiting_since: datetime | None = None
    """When it began to wait for the customer's reply (None: it does not wait)."""
    reminded: bool = False
    """Whether the customer was reminded of the question it waits on."""
    left_unanswered: bool = False
    """Whether its people were told the question went unanswered (a complaint's)."""
    resolved_by_system: bool = False
    """Whether its last resolution was the system's (the customer left a question unanswered)."""

    @classmethod
    def classified(cls, event: TicketClassified, time: datetime) -> Ticket:
        return cls(
            ticket_id=event.ticket_id,
            number=event.number,
            status="queued",
            group_id=event.group_id,
            agent_id=None,
            priority=event.priority,
            language=event.language,
            product_line=event.product_line,
            problem_type=event.problem_type,
            complexity=event.complexity,
            category=event.category,
            complaint_severity=event.complaint_severity,
            channel=event.channel,
            subject=event.subject,
            received_at=event.received_at,
            version=1,
            updated_at=time,
            customer_key=event.customer_key,
            customer_flag=event.customer_flag,
        )

    @property
    def tags(self) -> set[str]:
        """What skills would help: the product line and problem type."""
        return {t for t in (self.product_line, self.problem_type) if t}

    @property
    def holds_capacity(self) -> bool:
        return self.status in LOADED and self.agent_id is not None

    @property
    def queue_key(self) -> tuple[int, datetime, str]:
        """Queues are served by priority, then age, then number (the order intake received
        tickets queued at one moment); ``tickets_queue`` is the same order."""
        return PRIORITY_RANK[self.priority], self.queued_at or self.received_at, self.number

    def apply(self, event: EventData, time: datetime) -> None:  # noqa: PLR0912, PLR0915 - a case per event
        """Evolve by one event (the handler and the projection share this)."""
        self.version += 1
        self.updated_at = time
        match event:
            case TicketAssigned():
                self.status, self.group_id, self.agent_id = (
                    "assigned",
                    event.group_id,
                    event.agent_id,
                )
                self.queued_at = None
            case TicketQueued():
                self.status, self.group_id, self.agent_id = "queued", event.group_id, None
                self.queued_at = time
            case TicketAccepted():
                self.status = "accepted"
            case TicketResponded():
                self.responded = True
            case WorkStarted() | TicketResumed():
                self.status = "in_progress"
            case WaitingForCustomer():
                self.status, self.waiting_since = "waiting_for_customer", time
                self.reminded = self.left_unanswered = False
            case CustomerReminded():
                self.reminded = True
            case LeftUnanswered():
                self.left_unanswered = True
            case TicketResolved():
                self.status, self.resolved_at = "resolved", time
                self.resolved_by_system = event.agent_id == "system"
            case TicketReopened():
                self.status, self.resolved_at = "in_progress", None
                self.resolved_by_system = False
            case TicketClosed():
                self.status = "closed"
            case TicketReassigned():
                self.group_id, self.agent_id = event.to_group, None
            case TicketEscalated():
                self.escalation_level = max(self.escalation_level, event.level)
                if event.to_group is not None:
                    self.group_id, self.agent_id = event.to_group, None
            case TicketReclassified():
                self.complexity, self.category = event.to_complexity, event.to_category
                self.complaint_severity = event.complaint_severity
            case SatisfactionRecorded():
                self.satisfaction = event.score
            case CustomerFlagged():
                self.customer_flag = event.reason
            case SpecialistRequested():
                self.specialist_group = event.to_group
            case FindingsProvided():
                self.specialist_group = None
            case _:
                pass
        if self.status != "waiting_for_customer":
            self.waiting_since, self.reminded, self.left_unanswered = None, False, False


def reply_outcome(
    ticket: Ticket, now: datetime, window: timedelta, written: datetime | None = None
) -> Literal["resume", "reopen", "closed", "reopen_window_passed", "none"]:
    """What a customer's reply does to the ticket: resumes one that waited for it, reopens one
    resolved within the policy's window; one closed, or resolved longer ago, is followed up by
    a new ticket (the reason); any other state only tells the assignee (notify).

    A reply ``written`` (received) before a person's resolution and read after it — dispatch
    reads intake's events and the agents' commands from different topics — answers what came
    before the resolution: it does not reopen the ticket (its agent is told of it all the same).
    Before the system's resolution it does: the system resolved for want of that very reply."""
    if ticket.status == "waiting_for_customer":
        return "resume"
    if ticket.status == "closed":
        return "closed"
    if ticket.status == "resolved":
        resolved = ticket.resolved_at or ticket.updated_at or now
        if written is not None and written < resolved and not ticket.resolved_by_system:
            return "none"
        return "reopen" if now - resolved <= window else "reopen_window_passed"
    return "none"


class Refused(Exception):
    """A command that must not change anything; ``reason`` is its reason code."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def check(command: TicketCommandType, ticket: Ticket, kinds: set[ActorKind]) -> None:
    """Raise :class:`Refused` unless ``command`` may run now, by an actor of these kinds.

    Who first: an actor who may not act on the ticket learns nothing of its state."""
    allowed = WHO[command]
    if not kinds & allowed:
        who = " or ".join(sorted(allowed))
        raise Refused("not_permitted", f"only the {who} may {command.replace('_', ' ')}")
    if ticket.status not in ALLOWED_FROM[command]:
        raise Refused(
            "illegal_transition",
            f"cannot {command.replace('_', ' ')} a ticket that is {ticket.status}",
        )
