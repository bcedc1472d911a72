"""Wiring of the dispatch service: what it consumes, produces and projects."""

from __future__ import annotations

from services.dispatch.events import (
    AGENT_REJECTIONS,
    EVENTS_TOPIC,
    TICKET_REJECTIONS,
    AgentCommandRejected,
    AgentRegistered,
    CapacityChanged,
    NoteAdded,
    SatisfactionRecorded,
    ShiftEnded,
    ShiftStarted,
    TicketAccepted,
    TicketAssigned,
    TicketClassified,
    TicketClosed,
    TicketCommandRejected,
    TicketEscalated,
    TicketQueued,
    TicketReassigned,
    TicketReopened,
    TicketResolved,
    TicketResponded,
    TicketResumed,
    WaitingForCustomer,
    WorkStarted,
)
from services.dispatch.handlers import Commands, DeskSession, Events
from services.dispatch.settings import DispatchSettings
from services.dispatch.storage import AgentRoster, TicketBoard
from services.policy import watch_policy
from shared.events import EventData
from shared.migrations import load
from shared.service import Service
from shared.settings import Settings

MIGRATIONS = load("dispatch", "services.dispatch")
TICKET_EVENTS: list[type[EventData]] = [
    TicketClassified,
    TicketAssigned,
    TicketQueued,
    TicketAccepted,
    TicketResponded,
    WorkStarted,
    NoteAdded,
    WaitingForCustomer,
    TicketResumed,
    TicketResolved,
    TicketReopened,
    TicketClosed,
    TicketReassigned,
    TicketEscalated,
    SatisfactionRecorded,
]
AGENT_EVENTS: list[type[EventData]] = [AgentRegistered, ShiftStarted, ShiftEnded, CapacityChanged]


def build(settings: Settings) -> Service:
    own = DispatchSettings.of(settings)
    session = DeskSession(watch_policy(own))
    return Service(
        "dispatch",
        own,
        port=own.dispatch_port,
        description="Classification matrix, routing to groups and agents, the ticket lifecycle.",
        publishes={
            EVENTS_TOPIC: [*TICKET_EVENTS, *AGENT_EVENTS],
            TICKET_REJECTIONS: [TicketCommandRejected],
            AGENT_REJECTIONS: [AgentCommandRejected],
        },
        subscriptions=[Events(session), Commands(session)],
        projections=[TicketBoard(), AgentRoster()],
        migrations=MIGRATIONS,
    )
