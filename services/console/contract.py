"""The console's HTTP contract: what its API answers, as pydantic models (the OpenAPI document,
``docs/openapi.json``, is generated from them)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TicketStatus = Literal[
    "received",
    "queued",
    "assigned",
    "accepted",
    "in_progress",
    "waiting_for_customer",
    "resolved",
    "closed",
]
SlaState = Literal["ok", "at_risk", "breached"]
Outcome = Literal["pending", "accepted", "refused"]


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class Problem(_Out):
    """Every error: a stable code and a sentence; never a stack trace."""

    code: str = Field(
        description="unauthenticated, forbidden, not_found, invalid_json, invalid_request, "
        "invalid_command, invalid_cursor, nul_character, body_too_large, command_id_taken, "
        "command_id_reused, broker_unavailable, internal_error; POST /requests adds intake's "
        "reason codes (README, requests.rejected), channel_not_served, idempotency_key_reused "
        "and too_many_requests",
        examples=["forbidden"],
    )
    message: str
    errors: list[dict[str, Any]] = Field(
        default=[], description="invalid_request: each problem with its location."
    )
    field: str | None = Field(
        default=None, description="POST /requests: the field a reason code is about."
    )


class TicketSummary(_Out):
    number: str
    ticket_id: str
    status: TicketStatus
    group_id: str | None
    agent_id: str | None
    priority: str
    complexity: str | None
    category: str | None
    complaint: bool
    channel: str | None
    language: str | None
    subject: str
    customer_name: str | None
    received_at: datetime
    queued_at: datetime | None
    first_response_at: datetime | None
    resolved_at: datetime | None
    closed_at: datetime | None
    escalation_level: int
    reopened: int
    satisfaction: int | None
    sla: SlaState
    sla_deadline: datetime | None
    updated_at: datetime


class TicketPage(_Out):
    items: list[TicketSummary]
    next: str | None = Field(description="Cursor of the next page (pass it as `after`); none.")


class Customer(_Out):
    name: str
    email: str | None
    phone: str | None
    customer_id: str | None
    tier: str | None


class ClockView(_Out):
    metric: str
    status: str
    warned: float
    deadline: datetime | None
    breached_at: datetime | None
    met_at: datetime | None
    late: bool


class TimelineEntry(_Out):
    at: datetime
    service: str
    kind: str = Field(examples=["ticket.accepted"])
    actor: str | None
    facts: dict[str, Any]
    said: str | None = Field(description="What someone wrote: a reply, message, note, comment.")


class EarlierRequest(_Out):
    """One of the customer's other tickets, as a handler sees it beside the one they hold."""

    number: str
    status: str
    group_id: str | None
    received_at: datetime
    subject: str | None


class TicketDetail(TicketSummary):
    description: str | None
    customer: Customer | None
    product_line: str | None
    problem_type: str | None
    satisfaction_comment: str | None
    follows_up: str | None = Field(
        default=None,
        description="The number of the ticket this one follows up (the customer wrote on it "
        "when it could no longer be reopened).",
    )
    follow_ups: list[str] = Field(
        default_factory=list, description="Numbers of this ticket's follow-ups, oldest first."
    )
    customer_history: list[EarlierRequest] = Field(
        default_factory=list,
        description="The customer's other tickets, newest first (at most 20), whichever group "
        "has them (sop.md: handlers expect to see a customer's earlier requests); opening one "
        "still needs sight of it.",
    )
    clocks: list[ClockView]
    timeline: list[TimelineEntry]
    timeline_omitted: int = Field(
        default=0,
        description="Older timeline entries left out: the detail holds the newest 500, and "
        "no more of them than about 1 MiB as stored (`desk ticket show` prints them all).",
    )


class QueueView(_Out):
    group_id: str
    queued: int
    oldest_queued_at: datetime | None
    open: int


class AgentView(_Out):
    agent_id: str
    name: str
    role: str
    groups: list[str]
    on_shift: bool
    capacity: int
    load: int


class CommandAccepted(_Out):
    command_id: str
    status: Literal["pending"] = "pending"
    location: str = Field(description="Where its decision can be read.")


class CommandStatus(_Out):
    command_id: str
    kind: Literal["ticket", "agent"]
    target: str
    type: str
    status: Outcome
    reason: str | None = Field(description="refused: dispatch's reason code.")
    detail: str | None
    submitted_at: datetime
    decided_at: datetime | None


class Me(_Out):
    subject: str
    name: str
    role: str
    groups: list[str] | None = Field(description="The groups seen; none: every group.")


class GroupLoad(_Out):
    group_id: str
    statuses: dict[str, int] = Field(description="Open tickets per status.")
    total: int


class QueueFigure(_Out):
    group_id: str
    queued: int
    oldest_waiting_s: float | None


class AgentFigure(_Out):
    agent_id: str
    name: str
    on_shift: bool
    load: int
    capacity: int


class Compliance(_Out):
    metric: str
    met: int
    breached: int
    ratio: float | None


class SlaFigures(_Out):
    at_risk: int
    breached: int
    compliance: list[Compliance] = Field(description="Clocks finished today, per metric.")


class MinuteFigure(_Out):
    minute: datetime
    requests: int
    rejected: int
    refused: int


class ReasonCount(_Out):
    kind: str
    reason: str
    count: int


class TrafficFigures(_Out):
    minutes: list[MinuteFigure] = Field(description="The last 15 minutes, oldest first.")
    requests_per_minute: float = Field(description="In the last whole minute.")
    rejections: list[ReasonCount] = Field(description="The last hour, by reason.")


class DeadLetterFigure(_Out):
    service: str
    last_day: int
    total: int


class CsatFigure(_Out):
    group_id: str
    satisfied: int
    rated: int
    ratio: float | None


class CsatFigures(_Out):
    target: float
    today: CsatFigure = Field(description="group_id 'all': the part of the desk seen.")
    by_group: list[CsatFigure]
    below_target: bool


class AgentReview(_Out):
    """The review's figures of one agent, over the policy's ``sla.review_period`` (sop.md:
    monthly; 30 days as shipped)."""

    agent_id: str
    name: str
    handled: int = Field(description="Tickets they resolved.")
    mean_first_response_s: float | None
    csat: float | None
    reopen_rate: float | None
    clocks: int = Field(
        default=0,
        description="SLA clock runs they answered for that were met or breached in the period "
        "(each quiet period of a progress clock counts).",
    )
    in_time: float | None = Field(
        default=None,
        description="The share of those met in time (sop.md: steps done correctly; the "
        "policy's `sla.review_target`, 95 % as shipped, is what it is held to).",
    )


class Dashboard(_Out):
    generated_at: datetime
    day_started_at: datetime = Field(description="Midnight in the desk's time zone: 'today'.")
    open_tickets: list[GroupLoad]
    queues: list[QueueFigure]
    agents: list[AgentFigure]
    sla: SlaFigures
    traffic: TrafficFigures
    dead_letters: list[DeadLetterFigure]
    csat: CsatFigures
    reviews: list[AgentReview] | None = Field(description="Supervisors and above only.")
    review_target: float | None = Field(
        default=None,
        description="The policy's `sla.review_target`: the share of an agent's clocks expected "
        "met in time (supervisors and above only).",
    )
    reviews_since: datetime | None = Field(
        default=None,
        description="Where the reviews' figures start: now less the policy's "
        "`sla.review_period` (supervisors and above only).",
    )


class ChannelMessage(_Out):
    """A message the desk sent the customer of a request this client posted."""

    position: int = Field(description="Its place among the conversation's messages: `after`.")
    number: str = Field(description="The ticket it is about.")
    template: str = Field(
        examples=["acknowledgement", "agent_reply", "resolution"],
        description="What kind of message it is (the policy's template).",
    )
    language: str
    subject: str
    text: str
    sent_at: datetime


class ChannelMessagePage(_Out):
    items: list[ChannelMessage]
    next: int | None = Field(description="Pass as `after` for the messages that follow.")


class RequestAccepted(_Out):
    """A customer's request taken by the HTTP channel: on its way to intake."""

    channel: str
    channel_message_id: str = Field(
        description="The channel's id of this request (intake's key with the channel): the same "
        "Idempotency-Key answers the same id."
    )
