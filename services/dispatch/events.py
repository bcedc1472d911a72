"""Events dispatch records (and publishes): the public contract of ``dispatch.events`` and of the
command rejection topics. Other services import this module to read them; nothing else of
dispatch."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from services.intake.events import AttachmentRef
from services.vocabulary import (
    Category,
    Channel,
    ComplaintSeverity,
    Complexity,
    Priority,
    RouteCause,
)
from shared.events import EventData, Moment, event
from shared.personal import OptionalPersonalText, PersonalText
from shared.privacy import outside_error

EVENTS_TOPIC = "dispatch.events"
MARKS_TOPIC = "dispatch.marks"
"""How far dispatch's relay has published, in time (``shared.relay``): sla's timers wait for it."""
TICKET_COMMANDS = "tickets.commands"
AGENT_COMMANDS = "agents.commands"
TICKET_REJECTIONS = "tickets.commands.rejected"
AGENT_REJECTIONS = "agents.commands.rejected"

Status = Literal[
    "queued", "assigned", "accepted", "in_progress", "waiting_for_customer", "resolved", "closed"
]


def agent_stream(agent_id: str) -> str:
    return f"agent-{agent_id}"


class TicketEvent(EventData):
    ticket_id: str
    number: str


@event("servicedesk.ticket.classified", version=1)
class TicketClassified(TicketEvent):
    """The responsible group was chosen: complexity, complaint rule or the matrix, and why."""

    group_id: str
    route: str
    reason: str
    complexity: Complexity
    category: Category
    complaint: bool
    complaint_severity: ComplaintSeverity
    channel: Channel
    priority: Priority
    language: str
    product_line: str | None = None
    problem_type: str | None = None
    customer_tier: str | None = None
    subject: PersonalText
    received_at: Moment
    policy_version: str
    customer_key: str | None = None
    customer_flag: OptionalPersonalText = None
    """Why the customer was flagged on an earlier ticket (flag_customer), if they were."""


@event("servicedesk.ticket.assigned", version=1)
class TicketAssigned(TicketEvent):
    """An agent of the group now owns the ticket."""

    group_id: str
    agent_id: str
    strategy: str
    reason: str
    cause: RouteCause
    policy_version: str


@event("servicedesk.ticket.queued", version=1)
class TicketQueued(TicketEvent):
    """Nobody in the group is on shift with room: the ticket waits, by priority then age."""

    group_id: str
    priority: Priority
    reason: str
    cause: RouteCause | None = None
    """Why it was routed, as ``ticket.assigned`` says (none in events recorded before it was)."""


@event("servicedesk.ticket.accepted", version=1)
class TicketAccepted(TicketEvent):
    agent_id: str


@event("servicedesk.ticket.responded", version=1)
class TicketResponded(TicketEvent):
    """A public reply to the customer; the first one is the first response for the SLA.
    ``template``: the policy's standard reply it was rendered from, in ``language``."""

    agent_id: str
    message: PersonalText
    first_response: bool
    template: str | None = None
    language: str | None = None


@event("servicedesk.ticket.work_started", version=1)
class WorkStarted(TicketEvent):
    agent_id: str


@event("servicedesk.ticket.note_added", version=1)
class NoteAdded(TicketEvent):
    """An internal note: never shown to the customer."""

    agent_id: str
    note: PersonalText


@event("servicedesk.ticket.waiting_for_customer", version=1)
class WaitingForCustomer(TicketEvent):
    agent_id: str
    question: PersonalText


@event("servicedesk.ticket.customer_reminded", version=1)
class CustomerReminded(TicketEvent):
    """The ticket has waited ``waited`` for the customer's reply (``routing.
    remind_unanswered_after``): they are reminded once per question. ``resolves_in``: how long
    after this the system resolves it if they stay silent (none: it waits for a person)."""

    waited: str
    resolves_in: str | None = None
    silent: bool = False
    """Later than ``routing.silent_if_late_by`` (a backlog): no rule tells anyone."""


@event("servicedesk.ticket.left_unanswered", version=1)
class LeftUnanswered(TicketEvent):
    """The ticket has waited ``waited`` for the customer's reply (``routing.
    resolve_unanswered_after``), but its category's resolution must state what only a person
    can (``routing.resolution_requires``: complaints), so the system does not resolve it: its
    assignee and supervisors are told instead, once per question."""

    waited: str
    silent: bool = False
    """Later than ``routing.silent_if_late_by`` (a backlog): no rule tells anyone."""


@event("servicedesk.ticket.resumed", version=1)
class TicketResumed(TicketEvent):
    """A ticket that waited for the customer is in progress again (the customer replied)."""

    cause: str
    cause_event_id: str


@event("servicedesk.ticket.resolved", version=1)
class TicketResolved(TicketEvent):
    """``cause``, ``actions`` and ``compensation``: what the policy requires a resolution of the
    ticket's category to state (``routing.resolution_requires``: complaints)."""

    agent_id: str
    """Who resolved it: ``system`` when the customer left the question unanswered."""
    resolution: PersonalText
    cause: OptionalPersonalText = None
    actions: OptionalPersonalText = None
    compensation: OptionalPersonalText = None
    reason: str | None = None
    """Why the system resolved it (``routing.resolve_unanswered_after`` passed); none when a
    person did."""
    silent: bool = False
    """Resolved by the system ``routing.silent_if_late_by`` or more after it was due (a backlog):
    no rule tells anyone."""


@event("servicedesk.ticket.reopened", version=1)
class TicketReopened(TicketEvent):
    """The customer rejected the solution: by replying (``by_reply``; the reply is intake's
    ``ticket.customer_replied``), or by a command (the survey link's, a supervisor's)."""

    actor: str
    reason: PersonalText
    by_reply: bool = False


@event("servicedesk.ticket.follow_up_requested", version=1)
class FollowUpRequested(TicketEvent):
    """The customer wrote on a ticket that can no longer be reopened (closed, or resolved longer
    ago than the policy's ``routing.reopen_window``): intake opens a new ticket from the reply,
    linked to this one (``servicedesk.ticket.follow_up_opened``)."""

    reason: Literal["closed", "reopen_window_passed"]
    reply_event_id: str
    channel: Channel
    channel_message_id: str
    received_at: Moment
    subject: PersonalText
    body: PersonalText
    attachments: list[AttachmentRef] = Field(default_factory=list)


@event("servicedesk.ticket.closed", version=1)
class TicketClosed(TicketEvent):
    actor: str
    reason: str | None = None
    """Why the system closed it (``routing.close_after`` passed); none when a person did."""
    silent: bool = False
    """Closed by the system ``routing.silent_if_late_by`` or more after it was due — a backlog,
    as on the first round after an upgrade or after dispatch was down: no rule tells anyone of
    it (notify), so no customer hears about a ticket resolved months ago."""


@event("servicedesk.ticket.reassigned", version=1)
class TicketReassigned(TicketEvent):
    """Taken from its group or agent; an assignment or a queueing follows."""

    actor: str
    from_group: str
    from_agent: str | None
    to_group: str
    reason: str


@event("servicedesk.ticket.escalated", version=1)
class TicketEscalated(TicketEvent):
    """One step up the escalation ladder, with its cause (an SLA breach or a person)."""

    level: int
    cause: str
    cause_event_id: str | None = None
    actor: str
    from_group: str
    to_group: str | None
    supervisors: list[str] = Field(default_factory=list)
    to_agent: str | None = None
    """A person's escalation hands the ticket to this supervisor of its group."""


@event("servicedesk.ticket.reclassified", version=1)
class TicketReclassified(TicketEvent):
    """An agent corrected triage: the complexity and category the ticket really has. A change of
    group follows (reassigned, then assigned or queued) when routing sends it elsewhere."""

    actor: str
    reason: str
    from_complexity: Complexity
    to_complexity: Complexity
    from_category: Category
    to_category: Category
    complaint_severity: ComplaintSeverity
    from_group: str
    to_group: str
    policy_version: str


@event("servicedesk.ticket.customer_flagged", version=1)
class CustomerFlagged(TicketEvent):
    """The assignee or a supervisor judged the customer abusive or unreasonable: the ticket
    goes to the group's supervisor, and the customer's later tickets carry the flag."""

    actor: str
    reason: PersonalText
    customer_key: str | None
    """Who the customer is across tickets (``servicedesk.ticket.triaged``); None: unknown."""


@event("servicedesk.ticket.specialist_requested", version=1)
class SpecialistRequested(TicketEvent):
    """The ticket's owner asks another group for findings; the ticket stays with them, and the
    group's answer is timed (sla metric ``specialist_findings``)."""

    actor: str
    agent_id: str | None
    """Who owns the ticket (and gets the findings)."""
    to_group: str
    question: PersonalText


@event("servicedesk.ticket.findings_provided", version=1)
class FindingsProvided(TicketEvent):
    """The group asked answered the specialist request: its clock stops."""

    actor: str
    from_group: str
    findings: PersonalText


@event("servicedesk.ticket.satisfaction_recorded", version=1)
class SatisfactionRecorded(TicketEvent):
    score: int = Field(ge=1, le=5)
    comment: PersonalText
    actor: str


@event("servicedesk.agent.registered", version=1)
class AgentRegistered(EventData):
    """An agent of the policy's directory, as dispatch first saw it (or after a change)."""

    agent_id: str
    name: str
    role: str
    groups: list[str]
    skills: list[str]
    languages: list[str]
    capacity: int
    on_shift: bool
    policy_version: str


@event("servicedesk.agent.shift_started", version=1)
class ShiftStarted(EventData):
    agent_id: str
    actor: str


@event("servicedesk.agent.shift_ended", version=1)
class ShiftEnded(EventData):
    agent_id: str
    actor: str


@event("servicedesk.agent.capacity_changed", version=1)
class CapacityChanged(EventData):
    agent_id: str
    capacity: int
    actor: str


TICKET_EVENTS: tuple[type[TicketEvent], ...] = (
    TicketClassified,
    TicketAssigned,
    TicketQueued,
    TicketAccepted,
    TicketResponded,
    WorkStarted,
    NoteAdded,
    WaitingForCustomer,
    CustomerReminded,
    LeftUnanswered,
    TicketResumed,
    TicketResolved,
    TicketReopened,
    FollowUpRequested,
    TicketClosed,
    TicketReassigned,
    TicketEscalated,
    TicketReclassified,
    CustomerFlagged,
    SpecialistRequested,
    FindingsProvided,
    SatisfactionRecorded,
)
"""Every event of a ticket's lifecycle dispatch publishes on ``dispatch.events``."""
AGENT_EVENTS: tuple[type[EventData], ...] = (
    AgentRegistered,
    ShiftStarted,
    ShiftEnded,
    CapacityChanged,
)
"""Every event of the agent directory dispatch publishes on ``dispatch.events``."""


class CommandRejected(EventData):
    """A command that changed nothing, and why."""

    command_id: str | None
    command: str | None
    target: str | None
    """Ticket number or agent id the command named."""
    actor: str | None
    reason: str
    detail: Annotated[str, AfterValidator(outside_error)]
    """Why, for people: one line, bounded, no control character or contact data — it may
    quote what the record said (an unknown ``type`` echoed by the parser), and the console
    keeps it in a ``text`` column, which refuses NUL (a NUL here stalled its projection).
    Cleaned when read too, so one recorded before is harmless."""
    status: str | None = None
    """The ticket's status when the command was refused."""
    original: OptionalPersonalText = None
    """The record's first bytes, when it could not be read as a command but names a ticket:
    sealed under its customer, for what an agent writes about a ticket is the customer's data
    (naming none, they are left out: the record stays on the input topic)."""


@event("servicedesk.ticket_command.rejected", version=1)
class TicketCommandRejected(CommandRejected):
    """A ticket command that changed nothing, and why (on ``tickets.commands.rejected``)."""


@event("servicedesk.agent_command.rejected", version=1)
class AgentCommandRejected(CommandRejected):
    """An agent command that changed nothing, and why (on ``agents.commands.rejected``)."""


PUBLISHES: dict[str, tuple[type[EventData], ...]] = {
    EVENTS_TOPIC: (*TICKET_EVENTS, *AGENT_EVENTS),
    TICKET_REJECTIONS: (TicketCommandRejected,),
    AGENT_REJECTIONS: (AgentCommandRejected,),
}
"""What dispatch publishes, by topic (its service declares it; the registry's catalogue of
owners)."""
