"""Events sla records (and publishes): the public contract of ``sla.events``. Other services
import this module to read them; nothing else of sla.

One stream per (ticket, metric) clock. Every clock event carries the id of the event that caused
it (for timer events: the event that last set the clock running), the policy version and the
calendar version, so a ticket's timeline explains every warning and breach.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from shared.events import EventData, event

EVENTS_TOPIC = "sla.events"


class LadderLevel(BaseModel):
    level: int
    after_s: float


class ClockEvent(EventData):
    ticket_id: str
    number: str
    metric: str
    clock_id: str
    run: int
    cause_event_id: str
    policy_version: str
    calendar_version: str


@event("servicedesk.sla.clock_started", version=1)
class ClockStarted(ClockEvent):
    """A clock started (or, after a reopen, started again): its terms are fixed here."""

    started_at: datetime
    deadline: datetime
    target_s: float
    rule: str
    calendar: str
    calendar_definition: dict[str, object]
    warnings: list[float]
    ladder: list[LadderLevel]
    pauses_when_waiting: bool
    fulfilled_by: list[str]
    restarts_on_reopen: bool
    group_id: str
    agent_id: str | None = None
    repeats: bool = False
    """Starts again at its breach (the policy's ``repeats``: a progress update each quiet
    period, not one)."""


@event("servicedesk.sla.clock_paused", version=1)
class ClockPaused(ClockEvent):
    """Waiting for the customer: business time stops counting against the target."""

    at: datetime
    elapsed_s: float


@event("servicedesk.sla.clock_resumed", version=1)
class ClockResumed(ClockEvent):
    at: datetime
    elapsed_s: float
    deadline: datetime


class AnsweredClockEvent(ClockEvent):
    """A clock event somebody answers for: the ticket's group and agent when it happened."""

    group_id: str
    agent_id: str | None = None
    specialists: bool = False
    """The clock of a specialist request: ``group_id`` is the group asked, which answers for
    it — not whoever has the ticket."""


@event("servicedesk.sla.clock_warned", version=1)
class ClockWarned(AnsweredClockEvent):
    """The clock used ``fraction`` of its target."""

    fraction: float
    due_at: datetime
    deadline: datetime


@event("servicedesk.sla.clock_breached", version=1)
class ClockBreached(AnsweredClockEvent):
    """The target passed without the fulfilling event."""

    due_at: datetime
    target_s: float


@event("servicedesk.sla.clock_met", version=1)
class ClockMet(AnsweredClockEvent):
    """The fulfilling event arrived. ``late``: after the breach, which stands."""

    at: datetime
    elapsed_s: float
    wall_s: float
    late: bool
    fulfilled_by: str


@event("servicedesk.sla.clock_stopped", version=1)
class ClockStopped(ClockEvent):
    """The ticket was resolved or closed while the clock still ran (the metric's event never
    came: nothing is left to time); or the clock starts again: the ticket was reopened, the
    customer heard from the desk, or a clock that repeats breached."""

    at: datetime
    reason: Literal["ticket_resolved", "ticket_closed", "reopened", "updated", "repeated"]
    in_time: bool | None = None
    """For ``updated`` (the customer heard from the desk): whether the quiet period ended within
    its target — it counts as met, or else as breached at its deadline (an update the timer's
    breach had not yet caught up with: no notice follows, the customer has just heard).
    Absent on stops recorded before it was added, which read as met."""
    agent_id: str | None = None
    """For ``updated``: the agent who had the ticket (whom the period counts for; none for a
    specialist request's clock)."""


@event("servicedesk.sla.escalated", version=1)
class EscalationRaised(EventData):
    """A clock breached and stayed breached long enough: the ticket goes one level up."""

    ticket_id: str
    number: str
    metric: str
    level: int
    clock_id: str
    breached_at: datetime
    cause_event_id: str
    policy_version: str
    calendar_version: str = ""
    due_at: datetime | None = None
    group_id: str = ""
    agent_id: str | None = None
    specialists: bool = False
    """A specialist request's clock: the group asked (``group_id``) is late, and its
    supervisors are told; the ticket stays where it is (dispatch moves it for no such level)."""


PUBLISHES: dict[str, tuple[type[EventData], ...]] = {
    EVENTS_TOPIC: (
        ClockStarted,
        ClockPaused,
        ClockResumed,
        ClockWarned,
        ClockBreached,
        ClockMet,
        ClockStopped,
        EscalationRaised,
    )
}
"""What sla publishes, by topic (its service declares it; the registry's catalogue of owners)."""
